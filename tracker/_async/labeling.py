"""Annotation (async twins of tracker._sync.labeling)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracker._dispatch import acall
from tracker._sync import labeling as sync

if TYPE_CHECKING:
    import pandas as pd

    from tracker.models import Annotation, AnnotationTask, Prediction, Project, Sample
    from tracker.widgets import Labeler

__all__ = list(sync.__all__)


async def define_task(
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
    """Awaitable :func:`tracker.define_task`."""
    return await acall(
        "define_task", sync.define_task.__wrapped__, project, name, kind, labels,
        instructions=instructions, annotators_per_sample=annotators_per_sample,
        text_field=text_field, image_field=image_field, width_field=width_field,
        height_field=height_field, scale=scale, step=step, max_length=max_length,
        rename_labels=rename_labels, allow_invalid=allow_invalid,
    )


async def get_task(project: str | Project, name: str) -> AnnotationTask:
    """Awaitable :func:`tracker.get_task`."""
    return await acall("get_task", sync.get_task.__wrapped__, project, name)


async def annotation_tasks(project: str | Project) -> list[AnnotationTask]:
    """Awaitable :func:`tracker.annotation_tasks`."""
    return await acall("annotation_tasks", sync.annotation_tasks.__wrapped__, project)


async def annotate(
    sample: Sample | int | str, task: str | AnnotationTask, value: Any, annotator: Any = None
) -> Annotation:
    """Awaitable :func:`tracker.annotate`."""
    return await acall("annotate", sync.annotate.__wrapped__, sample, task, value, annotator)


async def import_annotations(
    project: str | Project, task: str | AnnotationTask, rows: Any, *, annotator: Any = None
) -> dict[str, int]:
    """Awaitable :func:`tracker.import_annotations`."""
    return await acall(
        "import_annotations", sync.import_annotations.__wrapped__, project, task, rows, annotator=annotator
    )


async def review(
    annotations: Any, decision: str, *, comment: str = "", reviewer: Any = None
) -> list[Annotation]:
    """Awaitable :func:`tracker.review`."""
    return await acall(
        "review", sync.review.__wrapped__, annotations, decision, comment=comment, reviewer=reviewer
    )


async def add_predictions(
    project: str | Project,
    task: str | AnnotationTask,
    predictions: Any,
    *,
    model_version: str = "",
    run: Any = None,
    replace: bool = True,
) -> list[Prediction]:
    """Awaitable :func:`tracker.add_predictions`."""
    return await acall(
        "add_predictions", sync.add_predictions.__wrapped__, project, task, predictions,
        model_version=model_version, run=run, replace=replace,
    )


async def accept_prediction(prediction: Prediction | int, annotator: Any = None) -> Annotation:
    """Awaitable :func:`tracker.accept_prediction`."""
    return await acall("accept_prediction", sync.accept_prediction.__wrapped__, prediction, annotator)


async def annotation_table(
    project: str | Project,
    task: str | AnnotationTask | None = None,
    *,
    status: str | None = None,
    annotator: Any = None,
) -> pd.DataFrame:
    """Awaitable :func:`tracker.annotation_table`."""
    return await acall(
        "annotation_table", sync.annotation_table.__wrapped__, project, task, status=status, annotator=annotator
    )


async def annotation_history(
    project: str | Project,
    task: str | AnnotationTask | None = None,
    *,
    sample: Any = None,
    annotator: Any = None,
) -> pd.DataFrame:
    """Awaitable :func:`tracker.annotation_history`."""
    return await acall(
        "annotation_history", sync.annotation_history.__wrapped__, project, task,
        sample=sample, annotator=annotator,
    )


async def invalid_annotations(project: str | Project, task: str | AnnotationTask) -> pd.DataFrame:
    """Awaitable :func:`tracker.invalid_annotations`."""
    return await acall("invalid_annotations", sync.invalid_annotations.__wrapped__, project, task)


async def next_samples(
    project: str | Project,
    task: str | AnnotationTask,
    n: int = 1,
    annotator: Any = None,
    strategy: str = "unlabeled",
    *,
    ttl: float | None = None,
) -> list[Sample]:
    """Awaitable :func:`tracker.next_samples`."""
    return await acall(
        "next_samples", sync.next_samples.__wrapped__, project, task, n, annotator, strategy, ttl=ttl
    )


async def release(
    project: str | Project,
    task: str | AnnotationTask,
    samples: Iterable[Any] | None = None,
    annotator: Any = None,
) -> int:
    """Awaitable :func:`tracker.release`."""
    return await acall("release", sync.release.__wrapped__, project, task, samples, annotator)


async def claims(project: str | Project, task: str | AnnotationTask, *, active: bool = True) -> pd.DataFrame:
    """Awaitable :func:`tracker.claims`."""
    return await acall("claims", sync.claims.__wrapped__, project, task, active=active)


async def agreement(
    project: str | Project,
    task: str | AnnotationTask,
    *,
    metric: str = "nominal",
    annotators: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Awaitable :func:`tracker.agreement`."""
    return await acall(
        "agreement", sync.agreement.__wrapped__, project, task, metric=metric, annotators=annotators
    )


async def resolve_labels(
    project: str | Project,
    task: str | AnnotationTask,
    strategy: str | Sequence[str] = "majority",
    *,
    samples: Iterable[Any] | None = None,
) -> pd.DataFrame:
    """Awaitable :func:`tracker.resolve_labels`."""
    return await acall(
        "resolve_labels", sync.resolve_labels.__wrapped__, project, task, strategy, samples=samples
    )


async def import_label_studio(
    project: str | Project,
    source: str | os.PathLike[str] | list[dict[str, Any]],
    *,
    tasks: Mapping[str, str] | None = None,
    annotator: Any = None,
) -> dict[str, Any]:
    """Awaitable :func:`tracker.import_label_studio`."""
    return await acall(
        "import_label_studio", sync.import_label_studio.__wrapped__, project, source,
        tasks=tasks, annotator=annotator,
    )


async def export_label_studio(
    project: str | Project,
    task: str | AnnotationTask | Iterable[str | AnnotationTask] | None = None,
    path: str | os.PathLike[str] | None = None,
    *,
    samples: Iterable[Any] | None = None,
) -> list[dict[str, Any]]:
    """Awaitable :func:`tracker.export_label_studio`."""
    return await acall(
        "export_label_studio", sync.export_label_studio.__wrapped__, project, task, path, samples=samples
    )


async def export_labels(
    project: str | Project,
    task: str | AnnotationTask,
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    strategy: str | Sequence[str] | None = None,
    include_data: bool = False,
) -> Path:
    """Awaitable :func:`tracker.export_labels`."""
    return await acall(
        "export_labels", sync.export_labels.__wrapped__, project, task, path,
        format=format, strategy=strategy, include_data=include_data,
    )


async def label(
    samples: Any,
    task: str | AnnotationTask,
    annotator: Any = None,
    *,
    strategy: str = "unlabeled",
    batch: int = 10,
    shortcuts: Mapping[str, str] | None = None,
    auto_advance: bool = True,
) -> Labeler:
    """Awaitable :func:`tracker.label`: loads the samples in one hop, then builds the widget.

    The widget is the same object as the sync one: its buttons run in the kernel's comm
    handler, which is synchronous, so they save through the sync dispatch (the database
    thread inside a kernel).
    """
    from tracker.widgets import Labeler, load_state

    state = await acall("label", load_state, samples, task, annotator, strategy=strategy, batch=batch)
    return Labeler(state, shortcuts=shortcuts, auto_advance=auto_advance)
