"""Annotation (sync): label schemas, annotations, review, predictions, queue, agreement, interchange."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracker._dispatch import entry

if TYPE_CHECKING:
    import pandas as pd

    from tracker.models import Annotation, AnnotationTask, Prediction, Project, Sample
    from tracker.widgets import Labeler

__all__ = [
    "accept_prediction",
    "add_predictions",
    "agreement",
    "annotate",
    "annotation_history",
    "annotation_table",
    "annotation_tasks",
    "claims",
    "define_task",
    "export_label_studio",
    "export_labels",
    "get_task",
    "import_annotations",
    "import_label_studio",
    "invalid_annotations",
    "label",
    "next_samples",
    "release",
    "resolve_labels",
    "review",
]


@entry
def define_task(
    project: str | Project,
    name: str,
    kind: str,
    labels: Sequence[str] | None = None,
    *,
    instructions: str | None = None,
    annotators_per_sample: int | None = None,
    text_field: str | None = None,
    image_field: str | None = None,
    width_field: str | None = None,
    height_field: str | None = None,
    scale: Sequence[float] | None = None,
    step: float | None = None,
    max_length: int | None = None,
    rename_labels: Mapping[str, str] | None = None,
    allow_invalid: bool = False,
) -> AnnotationTask:
    """Create an annotation task (a label schema) in a project, or change an existing one.

    Args:
        project: project name (created on first use) or ``Project``.
        name: the task's name, unique in the project.
        kind: ``classification`` (one label), ``multilabel``, ``spans`` (character offsets
            and a label over a text field), ``boxes`` (x, y, width, height in pixels and a
            label over an image), ``text`` (free text) or ``rating`` (a number on a scale).
        labels: the label names (classification, multilabel, spans, boxes).
        instructions: guidance shown to annotators in the widget.
        annotators_per_sample: how many annotators each sample should get (the
            ``"agreement"`` queue strategy fills samples up to this, at least 2).
        text_field: the ``sample.data`` field holding the text (spans: default ``"text"``).
        image_field: the ``sample.data`` field holding the image URL or path (boxes: default
            ``"image"``; the sample's stored media is used when the field is missing).
        width_field, height_field: the sample fields (data or metadata) with the image size
            in pixels (default ``"width"``/``"height"``); boxes must fit inside.
        scale: rating range ``(lowest, highest)``, default ``(1, 5)``.
        step: rating step from ``lowest`` (default 1; 0 allows any number in the range).
        max_length: longest allowed text (text tasks).
        rename_labels: ``{old: new}``; existing annotations and predictions are rewritten
            (with a history entry), so renaming or merging labels keeps them valid.
        allow_invalid: apply a schema change even if existing annotations no longer fit it.

    Options not given keep their stored value when the task exists. Defining the same task
    again changes nothing; a changed schema bumps ``schema_version``.

    Returns:
        The ``AnnotationTask``.

    Raises:
        InvalidValue: unknown kind, missing labels, an option that does not apply to the kind.
        InvalidAnnotation: the change would make existing annotations invalid; the message
            names them (``exc.invalid`` lists all) and nothing was changed.
    """
    from tracker.services import labeling

    return labeling.define_task(
        project, name, kind, labels, instructions=instructions,
        annotators_per_sample=annotators_per_sample, text_field=text_field,
        image_field=image_field, width_field=width_field, height_field=height_field,
        scale=scale, step=step, max_length=max_length, rename_labels=rename_labels,
        allow_invalid=allow_invalid,
    )


@entry
def get_task(project: str | Project, name: str) -> AnnotationTask:
    """The annotation task ``name`` of ``project``.

    Raises:
        ProjectNotFound, TaskNotFound: naming the known projects or tasks.
    """
    from tracker.services import labeling

    return labeling.get_task(project, name)


@entry
def annotation_tasks(project: str | Project) -> list[AnnotationTask]:
    """The project's annotation tasks, by name.

    Raises:
        ProjectNotFound: no such project.
    """
    from tracker.services import labeling

    return labeling.list_tasks(project)


@entry
def annotate(
    sample: Sample | int | str, task: str | AnnotationTask, value: Any, annotator: Any = None
) -> Annotation:
    """Store one annotator's value for a sample, keeping every change in the history.

    Args:
        sample: a ``Sample`` (then ``task`` may be a name), or its pk or external id when
            ``task`` is an ``AnnotationTask``.
        task: the task or its name.
        value: a label (classification), a list of labels (multilabel), a list of
            ``{"start", "end", "label"}`` (spans), a list of ``{"x", "y", "width",
            "height", "label"}`` in pixels (boxes), a string (text) or a number (rating).
        annotator: a Django user or a username (created on first use); default the OS
            account name.

    Returns:
        The ``Annotation``. A new value sets its status back to ``submitted``; the same value
        again changes nothing, except that it resubmits a rejected annotation. The
        annotator's claim on the sample is released.

    Raises:
        InvalidAnnotation: the value does not fit the task (unknown label, span outside the
            text, box outside the image, rating off the scale ...); nothing is stored.
        TaskNotFound, SampleNotFound: unknown task or sample.
    """
    from tracker.services import labeling

    return labeling.annotate(sample, task, value, annotator)


@entry
def import_annotations(
    project: str | Project, task: str | AnnotationTask, rows: Any, *, annotator: Any = None
) -> dict[str, int]:
    """Store many annotations at once (one transaction; every row checked first).

    Args:
        project: the project.
        task: the task or its name.
        rows: a DataFrame or dicts with ``external_id`` (or ``sample``: a Sample or pk) and
            ``value``; optional ``annotator``, ``status`` (submitted/accepted/rejected),
            ``review_comment``, ``reviewed_by``, ``created_at``, ``updated_at``.
        annotator: the annotator for rows without one (default the OS account name).

    Returns:
        ``{"created": n, "updated": n, "unchanged": n}``; changes are kept in the history.

    Raises:
        InvalidAnnotation, InvalidValue, SampleNotFound: naming the first bad row; nothing
            is stored.
    """
    from tracker.services import interchange

    return interchange.import_annotations(project, task, rows, annotator=annotator)


@entry
def review(
    annotations: Any, decision: str, *, comment: str = "", reviewer: Any = None
) -> list[Annotation]:
    """Accept or reject annotations (one, a list, or a queryset), recording who and why.

    Args:
        annotations: an ``Annotation``, its id, or a list or queryset of them.
        decision: ``"accept"`` or ``"reject"``.
        comment: why; required to reject.
        reviewer: a user or username (default the OS account name).

    Returns:
        The reviewed annotations.

    Raises:
        InvalidValue: unknown decision, or a rejection without a comment.
        NotFound: an annotation id that does not exist; nothing was reviewed.
    """
    from tracker.services import labeling

    return labeling.review(annotations, decision, comment=comment, reviewer=reviewer)


@entry
def add_predictions(
    project: str | Project,
    task: str | AnnotationTask,
    predictions: Any,
    *,
    model_version: str = "",
    run: Any = None,
    replace: bool = True,
) -> list[Prediction]:
    """Store model pre-annotations in bulk (one transaction; every value checked first).

    Args:
        project: the project.
        task: the task or its name.
        predictions: a DataFrame or dicts with ``external_id`` (or ``sample``), ``value``
            and optionally ``score`` and ``model_version``.
        model_version: the model that made them.
        run: the run that made them (a run, its handle or its uid).
        replace: drop earlier predictions of the same model version for these samples, so
            re-running inference does not duplicate them.

    Returns:
        The stored ``Prediction`` objects, in input order.

    Raises:
        InvalidAnnotation, InvalidValue, SampleNotFound, RunNotFound: nothing is stored.
    """
    from tracker.services import labeling

    return labeling.add_predictions(
        project, task, predictions, model_version=model_version, run=run, replace=replace
    )


@entry
def accept_prediction(prediction: Prediction | int, annotator: Any = None) -> Annotation:
    """Store a prediction's value as the annotator's annotation (linked to the prediction).

    Raises:
        NotFound: no such prediction.
        InvalidAnnotation: the prediction no longer fits the task's schema.
    """
    from tracker.services import labeling

    return labeling.accept_prediction(prediction, annotator)


@entry
def annotation_table(
    project: str | Project,
    task: str | AnnotationTask | None = None,
    *,
    status: str | None = None,
    annotator: Any = None,
) -> pd.DataFrame:
    """Current annotations as a DataFrame (one row per task, sample and annotator).

    Columns: id, task, external_id, sample_id, annotator, value, status, review_comment,
    reviewed_by, prediction_id, created_at, updated_at.
    """
    from tracker.services import labeling

    return labeling.annotations_frame(project, task, status=status, annotator=annotator)


@entry
def annotation_history(
    project: str | Project,
    task: str | AnnotationTask | None = None,
    *,
    sample: Any = None,
    annotator: Any = None,
) -> pd.DataFrame:
    """Every change to annotations (who, when, old and new value and status), oldest first.

    Columns: at, action (created, changed, resubmitted, accepted, rejected, imported,
    relabeled, accepted_prediction), task, external_id, annotator, actor, old_value,
    new_value, old_status, new_status, comment, annotation_id.
    """
    from tracker.services import labeling

    return labeling.history_frame(project, task, sample=sample, annotator=annotator)


@entry
def invalid_annotations(project: str | Project, task: str | AnnotationTask) -> pd.DataFrame:
    """Annotations that the task's current schema rejects, with the reason for each."""
    from tracker.services import labeling

    return labeling.invalid_annotations(project, task)


@entry
def next_samples(
    project: str | Project,
    task: str | AnnotationTask,
    n: int = 1,
    annotator: Any = None,
    strategy: str = "unlabeled",
    *,
    ttl: float | None = None,
) -> list[Sample]:
    """Claim the next samples to annotate; no concurrent annotator gets the same ones.

    Args:
        project: the project.
        task: the task or its name.
        n: how many (1 to 1000).
        annotator: a user or username (default the OS account name).
        strategy: ``"unlabeled"`` (no annotation yet, oldest first), ``"least_confident"``
            (lowest top prediction score first, unpredicted last), ``"random"``, or
            ``"agreement"`` (annotated by others, but by fewer than the task's
            ``annotators_per_sample`` (at least 2), and not by this annotator).
        ttl: seconds until the claims expire (default the ``CLAIM_TTL`` setting).

    The annotator's own open claims come back first (renewed), so re-running a cell does
    not pile up claims. Annotating a sample releases its claim.

    Returns:
        Up to ``n`` samples; fewer (or none) when the queue runs dry.

    Raises:
        InvalidValue: bad ``n``, ``strategy`` or ``ttl``.
    """
    from tracker.services import queue

    return queue.next_samples(project, task, n, annotator, strategy, ttl=ttl)


@entry
def release(
    project: str | Project,
    task: str | AnnotationTask,
    samples: Iterable[Any] | None = None,
    annotator: Any = None,
) -> int:
    """Give back an annotator's claims (on ``samples``, or all), returning how many."""
    from tracker.services import queue

    return queue.release(project, task, samples, annotator)


@entry
def claims(project: str | Project, task: str | AnnotationTask, *, active: bool = True) -> pd.DataFrame:
    """The task's claims (external_id, sample_id, annotator, claimed_at, expires_at)."""
    from tracker.services import queue

    return queue.claims_frame(project, task, active=active)


@entry
def agreement(
    project: str | Project,
    task: str | AnnotationTask,
    *,
    metric: str = "nominal",
    annotators: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Inter-annotator agreement of a task as a DataFrame.

    Rows: ``scope`` = ``overall``; one per ``label`` (that label against the rest); one per
    ``annotator`` (against everyone else); one per ``pair`` of annotators. Columns:
    annotators, items (samples with at least two annotations), annotations,
    observed_agreement, cohen_kappa (two annotators; for more, Light's mean of pairwise
    kappas), krippendorff_alpha (any number of annotators, missing data allowed).

    Spans and boxes get pairwise F1 in ``observed_agreement`` (exact span match; boxes of
    the same label with IoU >= 0.5); kappa and alpha are not defined for them.

    Args:
        project: the project.
        task: the task or its name.
        metric: Krippendorff's difference function: ``"nominal"``; for rating tasks also
            ``"ordinal"`` or ``"interval"``.
        annotators: restrict to these usernames.

    Raises:
        InvalidValue: a metric that does not fit the task.
    """
    from tracker.services import agreement as core

    return core.agreement(project, task, metric=metric, annotators=annotators)


@entry
def resolve_labels(
    project: str | Project,
    task: str | AnnotationTask,
    strategy: str | Sequence[str] = "majority",
    *,
    samples: Iterable[Any] | None = None,
) -> pd.DataFrame:
    """Final labels per sample, ignoring rejected annotations.

    Args:
        project: the project.
        task: the task or its name.
        strategy: ``"majority"`` (the value most annotators gave; ties give none; for
            multilabel and spans, the labels or spans chosen by more than half),
            ``"accepted"`` (the most recently accepted), ``"latest"`` (the most recent), or a
            sequence tried in order, e.g. ``("accepted", "majority")``.
        samples: restrict to these samples (Samples, pks or a queryset).

    Returns:
        DataFrame with external_id, sample_id, value, strategy (the rule that decided),
        votes and annotations; samples without a final label are left out.
    """
    from tracker.services import agreement as core

    return core.resolve_labels(project, task, strategy, samples=samples)


@entry
def import_label_studio(
    project: str | Project,
    source: str | os.PathLike[str] | list[dict[str, Any]],
    *,
    tasks: Mapping[str, str] | None = None,
    annotator: Any = None,
) -> dict[str, Any]:
    """Import a Label Studio JSON export: samples, annotations and predictions.

    Each result's ``from_name`` is a task name (rename with ``tasks={"from_name": "task"}``);
    missing tasks are created with the kind of the result type (choices, labels,
    rectanglelabels, textarea, rating) and the labels seen. Rectangles in percent become
    pixels from ``original_width``/``original_height``. Cancelled annotations are skipped; when
    one person annotated a task several times, the most recently updated annotation is kept.
    A Label Studio export carries no label config, so tasks created here get the labels seen
    in use: define the tasks first to keep a full schema.

    Args:
        project: the project (created on first use).
        source: the export's path, its JSON text, or the parsed list of tasks.
        tasks: from_name -> task name.
        annotator: for annotations without ``completed_by`` (default the OS account name).

    Returns:
        ``{"samples": n, "annotations": n, "predictions": n, "superseded": n, "tasks": [...]}``
        (superseded: older annotations of the same person and task that were left out).

    Raises:
        ImportRejected, InvalidAnnotation, InvalidValue: naming the task and annotation at
            fault; nothing is stored.
    """
    from tracker.services import interchange

    return interchange.import_label_studio(project, source, tasks=tasks, annotator=annotator)


@entry
def export_label_studio(
    project: str | Project,
    task: str | AnnotationTask | Iterable[str | AnnotationTask] | None = None,
    path: str | os.PathLike[str] | None = None,
    *,
    samples: Iterable[Any] | None = None,
) -> list[dict[str, Any]]:
    """Export samples with annotations and predictions as Label Studio JSON tasks.

    Args:
        project: the project.
        task: one task, several, or None for all.
        path: also write the JSON there (atomically).
        samples: restrict to these samples.

    Returns:
        The list of Label Studio tasks. Review status and comments travel in a ``tracker``
        key of each annotation, so re-importing gives identical annotations.
    """
    from tracker.services import interchange

    return interchange.export_label_studio(project, task, path, samples=samples)


@entry
def export_labels(
    project: str | Project,
    task: str | AnnotationTask,
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    strategy: str | Sequence[str] | None = None,
    include_data: bool = False,
) -> Path:
    """Write a task's labels to a JSONL or CSV file (atomically).

    Args:
        project: the project.
        task: the task or its name.
        path: the file; ``.jsonl`` or ``.csv`` picks the format.
        format: ``"jsonl"`` or ``"csv"`` when the suffix says neither.
        strategy: None writes every annotation; a :func:`resolve_labels` strategy writes
            one final label per sample.
        include_data: add each sample's data.

    Returns:
        The path written. In CSV, lists and objects are JSON-encoded.

    Raises:
        InvalidValue: unknown format or unwritable path.
    """
    from tracker.services import interchange

    return interchange.export_labels(
        project, task, path, format=format, strategy=strategy, include_data=include_data
    )


def label(
    samples: Any,
    task: str | AnnotationTask,
    annotator: Any = None,
    *,
    strategy: str = "unlabeled",
    batch: int = 10,
    shortcuts: Mapping[str, str] | None = None,
    auto_advance: bool = True,
) -> Labeler:
    """An ipywidgets labelling UI for Jupyter; every label is saved as soon as it is given.

    Args:
        samples: a list or queryset of Samples to label, or a project (name or Project) to
            work through its queue (claims ``batch`` samples at a time with ``strategy``).
        task: the task or its name.
        annotator: a user or username (default the OS account name).
        strategy: queue strategy when ``samples`` is a project.
        batch: how many samples to claim at a time from the queue.
        shortcuts: extra keys, ``{"p": "positive"}``; by default 1-9 pick labels, ``n``/``b``
            go forward/back, ``s`` skips.
        auto_advance: go to the next sample after a single-choice label.

    Returns:
        A :class:`tracker.widgets.Labeler` (display it, or let the cell show it).

    Raises:
        ImportError: ipywidgets is not installed (``pip install 'tracker[widgets]'``).
        TaskNotFound, InvalidValue: as for the other calls.
    """
    from tracker._dispatch import call
    from tracker.widgets import Labeler, load_state

    state = call("label", load_state, samples, task, annotator, strategy=strategy, batch=batch)
    return Labeler(state, shortcuts=shortcuts, auto_advance=auto_advance)
