"""Deleting runs, samples, tasks, annotations and predictions, each in one transaction.

What a deletion keeps: a frozen dataset version keeps every row it froze (its data is in its
snapshot; its membership rows only lose the link to a deleted sample), artifact bytes stay in
the storage until ``tracker gc`` finds no artifact and no version refers to them, and media
files of deleted samples stay (a version's snapshot may refer to them).

What it refuses: a run that is still running (its process is logging to it), and a sample or
task that holds annotations unless ``force`` is given (annotations are people's work and their
history goes with them).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from tracker.exceptions import Conflict, PermissionDenied
from tracker.models import Annotation, AnnotationTask, Prediction, Run, Sample


def _counts(deleted: dict[str, int]) -> dict[str, int]:
    """Django's per-model deletion counts, keyed by model name ("Metric": 20000, ...)."""
    return {label.rsplit(".", 1)[-1]: n for label, n in deleted.items() if n}


def delete_run(run: Run) -> dict[str, int]:
    """Delete a run with its metric points and summaries, params, tags, artifact records and
    lineage records; its child runs become top-level runs and predictions it made lose the link.

    Returns:
        Rows deleted per model, e.g. ``{"Run": 1, "Metric": 20000, "Artifact": 2}``.

    Raises:
        Conflict: the run is still running (a process with a live heartbeat is logging to it).
    """
    from tracker.services.runs import reap_stale

    reap_stale()  # a run whose process died reads as killed, and may go
    with transaction.atomic():
        status = Run.objects.select_for_update().filter(pk=run.pk).values_list("status", flat=True).first()
        if status == Run.Status.RUNNING:
            raise Conflict(
                f"Run {run.uid} is still running: a process is logging to it. Finish it first "
                f"(run.finish(), or mark it killed if that process is gone), then delete it."
            )
        _, deleted = Run.objects.filter(pk=run.pk).delete()
    return _counts(deleted)


def _annotations_guard(what: str, count: int, force: bool) -> None:
    if count and not force:
        raise Conflict(
            f"{what} holds {count} annotation(s); deleting it deletes them and their history. "
            f"Export them first (export_label_studio), then delete it with force."
        )


def delete_sample(sample: Sample, *, force: bool = False) -> dict[str, int]:
    """Delete a sample with its claims and predictions (and with ``force``, its annotations).

    Dataset versions that froze the sample are unchanged: reading them returns the same rows.

    Raises:
        Conflict: the sample has annotations and ``force`` is false; nothing is deleted.
    """
    with transaction.atomic():
        _annotations_guard(
            f"Sample {sample.external_id!r}", Annotation.objects.filter(sample_id=sample.pk).count(), force
        )
        _, deleted = Sample.objects.filter(pk=sample.pk).delete()
    return _counts(deleted)


def delete_task(task: AnnotationTask, *, force: bool = False) -> dict[str, int]:
    """Delete an annotation task with its claims and predictions (and with ``force``, its
    annotations and their history).

    Raises:
        Conflict: the task has annotations and ``force`` is false; nothing is deleted.
    """
    with transaction.atomic():
        _annotations_guard(f"Task {task.name!r}", Annotation.objects.filter(task_id=task.pk).count(), force)
        _, deleted = AnnotationTask.objects.filter(pk=task.pk).delete()
    return _counts(deleted)


def delete_annotation(annotation: Annotation, *, actor: Any, may_review: bool) -> dict[str, int]:
    """Delete an annotation and its history.

    Args:
        annotation: the annotation.
        actor: the user deleting it.
        may_review: whether ``actor`` reviews in the task's project (editors): they may delete
            any annotation; others only their own that was not accepted.

    Raises:
        PermissionDenied: someone else's annotation, or an accepted one, without ``may_review``.
    """
    if not may_review:
        if annotation.annotator_id != getattr(actor, "pk", None):
            raise PermissionDenied(
                "You can delete your own annotations only; ask an editor of the project to delete "
                "someone else's."
            )
        if annotation.status == Annotation.Status.ACCEPTED:
            raise PermissionDenied(
                "This annotation was accepted in review; ask an editor of the project to delete it."
            )
    with transaction.atomic():
        _, deleted = Annotation.objects.filter(pk=annotation.pk).delete()
    return _counts(deleted)


def delete_prediction(prediction: Prediction) -> dict[str, int]:
    """Delete a prediction; annotations made by accepting it keep their value."""
    with transaction.atomic():
        _, deleted = Prediction.objects.filter(pk=prediction.pk).delete()
    return _counts(deleted)
