"""Annotation tasks (label schemas), validated annotations with history and review, predictions."""

from __future__ import annotations

import difflib
import getpass
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from tracker.exceptions import (
    InvalidAnnotation,
    InvalidValue,
    NotFound,
    RunNotFound,
    SampleNotFound,
    TaskNotFound,
)
from tracker.models import (
    Annotation,
    AnnotationEvent,
    AnnotationTask,
    Claim,
    Prediction,
    Project,
    Run,
    Sample,
)
from tracker.services.projects import get_or_create_project, get_project

KINDS = tuple(AnnotationTask.Kind.values)
LABELLED_KINDS = ("classification", "multilabel", "spans", "boxes")
STATUSES = tuple(Annotation.Status.values)
CHUNK = 2000
# Boxes converted from Label Studio's percentages can overshoot the image edge by rounding.
_EDGE_TOLERANCE = 1e-6

# Options every task has, then the ones that make sense for one kind only; None = not set.
_COMMON_OPTIONS: dict[str, Any] = {"instructions": "", "annotators_per_sample": 1}
_KIND_OPTIONS: dict[str, dict[str, Any]] = {
    "classification": {"text_field": None, "image_field": None},
    "multilabel": {"text_field": None, "image_field": None},
    "spans": {"text_field": "text"},
    "boxes": {"image_field": "image", "width_field": "width", "height_field": "height"},
    "text": {"text_field": None, "image_field": None, "max_length": None},
    "rating": {"text_field": None, "image_field": None, "scale": [1, 5], "step": 1},
}


# --------------------------------------------------------------------------- users


def default_username() -> str:
    """The OS account name: the annotator when none is given (a notebook's local user)."""
    try:
        return getpass.getuser() or "annotator"
    except Exception:  # no passwd entry in some containers
        return "annotator"


def check_username(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidValue(
            f"An annotator must be a Django user or a non-empty username, not {name!r}."
        )
    name = name.strip()
    if len(name) > 150:
        raise InvalidValue(f"The username {name[:40]!r}... is longer than Django's 150 characters.")
    return name


def get_user(annotator: Any = None) -> Any:
    """The Django user for ``annotator`` (a user, a username created on first use, or None)."""
    User = get_user_model()
    if isinstance(annotator, User):
        return annotator
    name = check_username(default_username() if annotator is None else annotator)
    user = User.objects.filter(username=name).first()
    if user is None:
        # get_or_create, not create: another process may add the same annotator right now.
        user, created = User.objects.get_or_create(username=name)
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
    return user


def get_users(names: Iterable[str]) -> dict[str, Any]:
    """username -> user for many names at once, creating the missing ones in bulk."""
    User = get_user_model()
    wanted = {check_username(n) for n in names}
    found = {u.username: u for u in User.objects.filter(username__in=wanted)}
    missing = wanted - set(found)
    if missing:
        new = []
        for name in sorted(missing):
            u = User(username=name)
            u.set_unusable_password()
            new.append(u)
        User.objects.bulk_create(new, ignore_conflicts=True)
        found.update({u.username: u for u in User.objects.filter(username__in=missing)})
    return found


# --------------------------------------------------------------------------- tasks


def get_task(project: str | Project | None, task: str | AnnotationTask) -> AnnotationTask:
    """The task ``task`` of ``project``; raises :class:`TaskNotFound` naming the known ones."""
    if isinstance(task, AnnotationTask):
        if project is not None and not isinstance(project, (str, Project)):
            raise InvalidValue(f"project must be a name or a Project, not {type(project).__name__}.")
        if isinstance(project, Project) and project.pk != task.project_id:
            raise InvalidValue(f"Task {task.name!r} belongs to another project than {project.name!r}.")
        if isinstance(project, str) and task.project.name != project.strip():
            raise InvalidValue(f"Task {task.name!r} belongs to project {task.project.name!r}, not {project!r}.")
        return task
    if not isinstance(task, str) or not task.strip():
        raise InvalidValue(f"A task must be an AnnotationTask or its name, not {task!r}.")
    if project is None:
        raise InvalidValue(
            f"Task {task!r} is given by name, so its project is needed too: pass a Sample of the "
            f"project, or the AnnotationTask itself (tracker.get_task(project, {task!r}))."
        )
    proj = get_project(project)
    obj = AnnotationTask.objects.filter(project=proj, name=task.strip()).first()
    if obj is None:
        known = list(AnnotationTask.objects.filter(project=proj).values_list("name", flat=True)[:20])
        raise TaskNotFound(
            f"Project {proj.name!r} has no annotation task {task!r}. Known tasks: "
            f"{', '.join(known) if known else 'none yet'}; create one with "
            f"tracker.define_task({proj.name!r}, {task!r}, kind=...)."
        )
    return obj


def list_tasks(project: str | Project) -> list[AnnotationTask]:
    return list(AnnotationTask.objects.filter(project=get_project(project)).order_by("name"))


def _check_labels(kind: str, labels: Any) -> list[str]:
    if labels is None:
        labels = []
    if isinstance(labels, str) or not isinstance(labels, Iterable):
        raise InvalidValue(f"labels must be a list of strings, not {type(labels).__name__}.")
    out: list[str] = []
    for label in labels:
        if not isinstance(label, str) or not label.strip():
            raise InvalidValue(f"Every label must be a non-empty string; got {label!r}.")
        if label in out:
            raise InvalidValue(f"The label {label!r} is listed twice; labels must be unique.")
        out.append(label)
    if kind in LABELLED_KINDS and not out:
        raise InvalidValue(f"A {kind} task needs labels, for example labels=['cat', 'dog'].")
    if kind not in LABELLED_KINDS and out:
        raise InvalidValue(f"A {kind} task takes no labels; remove labels={out!r}.")
    return out


def _check_options(kind: str, given: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """The task's config: given options over the stored ones over the defaults for ``kind``."""
    allowed = {**_COMMON_OPTIONS, **_KIND_OPTIONS[kind]}
    for key, value in given.items():
        if value is not None and key not in allowed:
            used_by = sorted(k for k, opts in _KIND_OPTIONS.items() if key in opts)
            raise InvalidValue(
                f"{key}= applies to {' and '.join(used_by)} tasks, not to a {kind} task; remove it."
            )
    config = {k: old.get(k, v) for k, v in allowed.items()}
    config.update({k: v for k, v in given.items() if v is not None})
    for key in ("text_field", "image_field", "width_field", "height_field"):
        value = config.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise InvalidValue(f"{key} must be the name of a field of the samples' data, not {value!r}.")
    if not isinstance(config["instructions"], str):
        raise InvalidValue("instructions must be a string.")
    aps = config["annotators_per_sample"]
    if isinstance(aps, bool) or not isinstance(aps, int) or aps < 1:
        raise InvalidValue(f"annotators_per_sample must be a whole number >= 1, not {aps!r}.")
    if kind == "rating":
        scale = config["scale"]
        if (
            not isinstance(scale, (list, tuple))
            or len(scale) != 2
            or not all(_is_number(v) for v in scale)
            or not scale[0] < scale[1]
        ):
            raise InvalidValue(f"scale must be (lowest, highest) with lowest < highest, not {scale!r}.")
        config["scale"] = list(scale)
        step = config["step"]
        if not _is_number(step) or step < 0:
            raise InvalidValue(f"step must be a positive number (0 for any value), not {step!r}.")
    if kind == "text" and config["max_length"] is not None:
        ml = config["max_length"]
        if isinstance(ml, bool) or not isinstance(ml, int) or ml < 1:
            raise InvalidValue(f"max_length must be a whole number >= 1, not {ml!r}.")
    return config


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
    """Create or change a task; see :func:`tracker.define_task`."""
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise InvalidValue(f"A task name must be a non-empty string of at most 200 characters, not {name!r}.")
    name = name.strip()
    if kind not in KINDS:
        close = _suggest(str(kind), KINDS)
        hint = f" Did you mean {close!r}?" if close else ""
        raise InvalidValue(f"Unknown task kind {kind!r}; use one of {', '.join(KINDS)}.{hint}")
    given = {
        "instructions": instructions,
        "annotators_per_sample": annotators_per_sample,
        "text_field": text_field,
        "image_field": image_field,
        "width_field": width_field,
        "height_field": height_field,
        "scale": list(scale) if isinstance(scale, tuple) else scale,
        "step": step,
        "max_length": max_length,
    }
    renames = _check_renames(rename_labels)
    with transaction.atomic():
        proj = get_or_create_project(project)
        task = AnnotationTask.objects.select_for_update().filter(project=proj, name=name).first()
        if task is None:
            if renames:
                raise InvalidValue(f"rename_labels applies to an existing task; {name!r} is new.")
            task = AnnotationTask(project=proj, name=name, kind=kind)
            task.labels = _check_labels(kind, labels)
            task.config = _check_options(kind, given, {})
            task.save()
            return task
        old_labels = list(task.labels)
        new_labels = (
            _check_labels(kind, labels)
            if labels is not None
            else _check_labels(kind, _dedupe([renames.get(lb, lb) for lb in old_labels]) if kind in LABELLED_KINDS else [])
        )
        old_config = task.config if task.kind == kind else {k: v for k, v in task.config.items() if k in _COMMON_OPTIONS}
        new_config = _check_options(kind, given, old_config)
        if kind == task.kind and new_labels == old_labels and new_config == task.config and not renames:
            return task
        task.kind, task.labels, task.config = kind, new_labels, new_config
        if renames:
            _apply_renames(task, renames)
        bad, converted = _revalidate(task)
        if bad and not allow_invalid:
            raise _schema_rejected(task, bad)
        _store_converted(converted)
        task.schema_version += 1
        task.updated_at = timezone.now()
        task.save()
    return task


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _check_renames(renames: Any) -> dict[str, str]:
    if renames is None:
        return {}
    if not isinstance(renames, Mapping):
        raise InvalidValue("rename_labels must be a dict {old label: new label}.")
    for old, new in renames.items():
        if not isinstance(old, str) or not isinstance(new, str) or not new.strip():
            raise InvalidValue(f"rename_labels maps label names to label names; got {old!r}: {new!r}.")
    return dict(renames)


def _rename_value(kind: str, value: Any, renames: dict[str, str]) -> Any:
    if kind == "classification" and isinstance(value, str):
        return renames.get(value, value)
    if kind == "multilabel" and isinstance(value, list):
        return _dedupe([renames.get(v, v) if isinstance(v, str) else v for v in value])
    if kind in ("spans", "boxes") and isinstance(value, list):
        return [
            {**v, "label": renames.get(v.get("label"), v.get("label"))} if isinstance(v, dict) else v
            for v in value
        ]
    return value


def _apply_renames(task: AnnotationTask, renames: dict[str, str]) -> None:
    """Rewrite stored values for renamed labels, with one history event per changed annotation."""
    now = timezone.now()
    changed, events = [], []
    for ann in Annotation.objects.filter(task=task).only("id", "value", "status"):
        new = _rename_value(task.kind, ann.value, renames)
        if new != ann.value:
            events.append(
                AnnotationEvent(
                    annotation_id=ann.pk, actor=None, at=now, action="relabeled",
                    old_value=ann.value, new_value=new, old_status=ann.status,
                    new_status=ann.status, comment=f"labels renamed: {renames}",
                )
            )
            ann.value, ann.updated_at = new, now
            changed.append(ann)
    Annotation.objects.bulk_update(changed, ["value", "updated_at"], batch_size=500)
    AnnotationEvent.objects.bulk_create(events, batch_size=CHUNK)
    preds = []
    for pred in Prediction.objects.filter(task=task).only("id", "value"):
        new = _rename_value(task.kind, pred.value, renames)
        if new != pred.value:
            pred.value = new
            preds.append(pred)
    Prediction.objects.bulk_update(preds, ["value"], batch_size=500)


def _revalidate(task: AnnotationTask) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]]]:
    """Check every stored annotation against the task's schema.

    Returns the invalid ones with reasons, and (id, old, new, status) for valid values whose
    normal form changed (a kind change: "cat" becomes ["cat"] for multilabel).
    """
    rows = list(
        Annotation.objects.filter(task=task)
        .order_by("id")
        .values_list("id", "sample_id", "sample__external_id", "annotator__username", "value", "status")
    )
    samples: dict[int, Sample] = {}
    if task.kind in ("spans", "boxes"):
        samples = _samples_by_pk({r[1] for r in rows})
    bad, converted = [], []
    for ann_id, sample_id, external_id, username, value, status in rows:
        try:
            new = check_value(task, value, samples.get(sample_id))
        except InvalidAnnotation as exc:
            bad.append(
                {"annotation_id": ann_id, "external_id": external_id, "annotator": username,
                 "value": value, "reason": str(exc)}
            )
            continue
        if value_key(new) != value_key(value):
            converted.append((ann_id, value, new, status))
    return bad, converted


def _store_converted(converted: list[tuple[Any, ...]]) -> None:
    now = timezone.now()
    Annotation.objects.bulk_update(
        [Annotation(pk=pk, value=new, updated_at=now) for pk, _, new, _ in converted],
        ["value", "updated_at"], batch_size=500,
    )
    AnnotationEvent.objects.bulk_create(
        [AnnotationEvent(annotation_id=pk, at=now, action="converted", old_value=old, new_value=new,
                         old_status=status, new_status=status, comment="task schema changed")
         for pk, old, new, status in converted],
        batch_size=CHUNK,
    )


def invalid_annotation_rows(task: AnnotationTask) -> list[dict[str, Any]]:
    """Every stored annotation of ``task`` that its current schema rejects, with the reason."""
    return _revalidate(task)[0]


def _schema_rejected(task: AnnotationTask, bad: list[dict[str, Any]]) -> InvalidAnnotation:
    shown = "; ".join(f"sample {b['external_id']!r} by {b['annotator']}: {b['reason']}" for b in bad[:5])
    more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
    exc = InvalidAnnotation(
        f"The new schema of task {task.name!r} would make {len(bad)} existing annotation(s) "
        f"invalid, so nothing was changed: {shown}{more}. Map old labels with "
        f"rename_labels={{'old': 'new'}}, fix those annotations, or pass allow_invalid=True and "
        f"list them later with tracker.invalid_annotations()."
    )
    exc.invalid = bad  # type: ignore[attr-defined]
    return exc


# --------------------------------------------------------------------------- values


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _where(task: AnnotationTask, sample: Sample | None) -> str:
    sid = f"sample {sample.external_id!r}, " if sample is not None else ""
    return f"{sid}task {task.name!r} ({task.kind})"


class _Where:
    """"sample 'x', task 'y' (kind)", formatted only when an error message needs it."""

    __slots__ = ("task", "sample")

    def __init__(self, task: AnnotationTask, sample: Any) -> None:
        self.task, self.sample = task, sample

    def __str__(self) -> str:
        return _where(self.task, self.sample)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def _suggest(given: str, options: Sequence[str]) -> str | None:
    """The option ``given`` most likely meant: same letters ignoring case, a prefix, or close."""
    low = given.lower()
    for opt in options:
        if opt.lower() == low:
            return opt
    close = difflib.get_close_matches(given, options, n=1)
    if close:
        return close[0]
    prefixed = [o for o in options if low and (o.lower().startswith(low) or low.startswith(o.lower()))]
    return prefixed[0] if len(prefixed) == 1 else None


def _unknown_label(task: AnnotationTask, sample: Sample | None, label: Any) -> InvalidAnnotation:
    close = _suggest(str(label), task.labels)
    hint = f" Did you mean {close!r}?" if close else ""
    return InvalidAnnotation(
        f"{_where(task, sample)}: {label!r} is not one of the labels {', '.join(map(repr, task.labels))}."
        f"{hint} Add new labels with tracker.define_task(..., labels=[...])."
    )


def sample_text(task: AnnotationTask, sample: Sample) -> str:
    """The text a spans task annotates: ``sample.data[text_field]``."""
    field = task.config.get("text_field") or "text"
    text = (sample.data or {}).get(field)
    if not isinstance(text, str):
        raise InvalidAnnotation(
            f"{_where(task, sample)}: spans need the text in sample.data[{field!r}], but the "
            f"sample has {'no such field' if text is None else type(text).__name__}. Set "
            f"text_field= in define_task to the field that holds the text."
        )
    return text


def image_size(task: AnnotationTask, sample: Sample) -> tuple[float, float]:
    """(width, height) of a sample's image: from its data, its metadata, or the stored file."""
    wf = task.config.get("width_field") or "width"
    hf = task.config.get("height_field") or "height"
    for source in (sample.data or {}, sample.metadata or {}):
        w, h = source.get(wf), source.get(hf)
        if _is_number(w) and _is_number(h) and w > 0 and h > 0:
            return float(w), float(h)
    if sample.media:
        try:
            from PIL import Image

            with sample.media.open("rb") as fh, Image.open(fh) as img:
                return float(img.width), float(img.height)
        except Exception:  # unreadable media: reported below like a missing size
            pass
    raise InvalidAnnotation(
        f"{_where(task, sample)}: boxes are checked against the image size, but the sample has "
        f"no {wf!r}/{hf!r} in its data or metadata and no readable image file. Add the size "
        f"to the sample (tracker.add_samples with {wf!r} and {hf!r})."
    )


def check_value(task: AnnotationTask, value: Any, sample: Sample | None = None) -> Any:
    """``value`` normalised for storage, or :class:`InvalidAnnotation` saying what is wrong.

    Spans and boxes need ``sample`` (the text and the image size come from it).
    """
    kind = task.kind
    where = _Where(task, sample)
    if value is None:
        raise InvalidAnnotation(f"{where}: the value is None; give a value of the task's kind.")
    if kind == "classification":
        if isinstance(value, (list, tuple)) and len(value) == 1:
            value = value[0]
        if not isinstance(value, str):
            raise InvalidAnnotation(
                f"{where}: a classification value is one label (a string), not "
                f"{type(value).__name__} {value!r:.60}."
            )
        if value not in task.labels:
            raise _unknown_label(task, sample, value)
        return value
    if kind == "multilabel":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple, set, frozenset)):
            raise InvalidAnnotation(f"{where}: a multilabel value is a list of labels, not {type(value).__name__}.")
        for label in value:
            if not isinstance(label, str) or label not in task.labels:
                raise _unknown_label(task, sample, label)
        order = {lb: i for i, lb in enumerate(task.labels)}
        return sorted(set(value), key=order.__getitem__)
    if kind == "spans":
        return _check_spans(task, value, sample)
    if kind == "boxes":
        return _check_boxes(task, value, sample)
    if kind == "text":
        if not isinstance(value, str):
            raise InvalidAnnotation(f"{where}: a text value is a string, not {type(value).__name__}.")
        ml = task.config.get("max_length")
        if ml is not None and len(value) > ml:
            raise InvalidAnnotation(f"{where}: the text has {len(value)} characters; at most {ml} are allowed.")
        return value
    if kind == "rating":
        if not _is_number(value):
            raise InvalidAnnotation(f"{where}: a rating is a number, not {value!r:.60}.")
        lo, hi = task.config.get("scale", [1, 5])
        if not lo <= value <= hi:
            raise InvalidAnnotation(f"{where}: the rating {value} is outside the scale {lo}..{hi}.")
        step = task.config.get("step", 1)
        if step:
            k = (value - lo) / step
            if abs(k - round(k)) > 1e-9:
                raise InvalidAnnotation(
                    f"{where}: the rating {value} is not on the scale's steps of {step} from {lo}."
                )
        if isinstance(value, float) and value.is_integer() and float(step).is_integer() and step:
            return int(value)
        return value
    raise InvalidAnnotation(f"{where}: unknown kind.")  # pragma: no cover - kinds are checked


def _items(value: Any, what: str, where: str) -> list[Any]:
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise InvalidAnnotation(f"{where}: {what} are given as a list, not {type(value).__name__}.")
    return list(value)


def _check_spans(task: AnnotationTask, value: Any, sample: Sample | None) -> list[dict[str, Any]]:
    where = _where(task, sample)
    items = _items(value, "spans", where)
    if sample is None:
        raise InvalidAnnotation(f"{where}: spans are checked against a sample's text; give the sample.")
    text = sample_text(task, sample)
    out: dict[tuple[int, int, str], dict[str, Any]] = {}
    for i, item in enumerate(items):
        if isinstance(item, (list, tuple)) and len(item) == 3:
            item = {"start": item[0], "end": item[1], "label": item[2]}
        if not isinstance(item, Mapping) or not {"start", "end", "label"} <= set(item):
            raise InvalidAnnotation(
                f"{where}: span {i} must be {{'start': int, 'end': int, 'label': str}} or "
                f"(start, end, label); got {item!r:.80}."
            )
        start, end, label = item["start"], item["end"], item["label"]
        if any(isinstance(x, bool) or not isinstance(x, int) for x in (start, end)):
            raise InvalidAnnotation(f"{where}: span {i} offsets must be whole numbers; got {start!r}..{end!r}.")
        if not 0 <= start < end <= len(text):
            raise InvalidAnnotation(
                f"{where}: span {i} ({start}..{end}) is outside the text, which has {len(text)} "
                f"characters; offsets are 0 <= start < end <= {len(text)}."
            )
        if label not in task.labels:
            raise _unknown_label(task, sample, label)
        if "text" in item and item["text"] is not None and item["text"] != text[start:end]:
            raise InvalidAnnotation(
                f"{where}: span {i} says its text is {item['text']!r}, but characters "
                f"{start}..{end} are {text[start:end]!r}; check the offsets."
            )
        out[(start, end, label)] = {"start": start, "end": end, "label": label}
    return [out[k] for k in sorted(out)]


def _check_boxes(task: AnnotationTask, value: Any, sample: Sample | None) -> list[dict[str, Any]]:
    where = _where(task, sample)
    items = _items(value, "boxes", where)
    if sample is None:
        raise InvalidAnnotation(f"{where}: boxes are checked against a sample's image; give the sample.")
    width, height = image_size(task, sample)
    out = []
    for i, item in enumerate(items):
        if isinstance(item, (list, tuple)) and len(item) == 5:
            item = dict(zip(("x", "y", "width", "height", "label"), item))
        keys = ("x", "y", "width", "height", "label")
        if not isinstance(item, Mapping) or not set(keys) <= set(item):
            raise InvalidAnnotation(
                f"{where}: box {i} must be {{'x', 'y', 'width', 'height', 'label'}} in pixels "
                f"or (x, y, width, height, label); got {item!r:.80}."
            )
        x, y, w, h, label = (item[k] for k in keys)
        if not all(_is_number(v) for v in (x, y, w, h)):
            raise InvalidAnnotation(f"{where}: box {i} needs finite numbers for x, y, width, height.")
        if w <= 0 or h <= 0:
            raise InvalidAnnotation(f"{where}: box {i} has width {w} and height {h}; both must be > 0.")
        tol = _EDGE_TOLERANCE * max(width, height)
        if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
            raise InvalidAnnotation(
                f"{where}: box {i} (x={x}, y={y}, width={w}, height={h}) is outside the "
                f"{width:g}x{height:g} image; keep 0 <= x, x + width <= {width:g}, 0 <= y, "
                f"y + height <= {height:g}."
            )
        if label not in task.labels:
            raise _unknown_label(task, sample, label)
        out.append({"x": x, "y": y, "width": w, "height": h, "label": label})
    out.sort(key=lambda b: (b["label"], b["x"], b["y"], b["width"], b["height"]))
    return out


def value_key(value: Any) -> str:
    """A canonical string of a stored value, for equality and counting."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------- samples


def _samples_by_pk(pks: Iterable[int]) -> dict[int, Sample]:
    pks = list(pks)
    out: dict[int, Sample] = {}
    for start in range(0, len(pks), CHUNK):
        for s in Sample.objects.filter(pk__in=pks[start : start + CHUNK]):
            out[s.pk] = s
    return out


def resolve_sample(sample: Any, task: AnnotationTask) -> Sample:
    """A Sample of ``task``'s project from a Sample, its pk or its external id."""
    if isinstance(sample, Sample):
        if sample.project_id != task.project_id:
            raise InvalidValue(
                f"Sample {sample.external_id!r} belongs to another project than task {task.name!r}."
            )
        return sample
    if isinstance(sample, bool) or not isinstance(sample, (int, str)):
        raise InvalidValue(f"A sample is a Sample, its id or its external id, not {type(sample).__name__}.")
    qs = Sample.objects.filter(project_id=task.project_id)
    obj = (qs.filter(external_id=sample) if isinstance(sample, str) else qs.filter(pk=sample)).first()
    if obj is None:
        raise SampleNotFound(
            f"Project {task.project.name!r} has no sample {sample!r}; add it with tracker.add_samples()."
        )
    return obj


def _task_and_sample(task: Any, sample: Any) -> tuple[AnnotationTask, Sample]:
    if isinstance(task, AnnotationTask):
        return task, resolve_sample(sample, task)
    if isinstance(sample, Sample):
        return get_task(sample.project, task), sample
    raise InvalidValue(
        f"Task {task!r} is given by name, so pass the sample as a Sample object (its project "
        f"says where the task is), or pass the task as tracker.get_task(project, {task!r})."
    )


class SampleRef:
    """A sample's identity without its data: what validating most kinds needs, cheap in bulk."""

    __slots__ = ("pk", "external_id", "project_id")

    def __init__(self, pk: int, external_id: str, project_id: int) -> None:
        self.pk, self.external_id, self.project_id = pk, external_id, project_id


def needs_sample_data(task: AnnotationTask) -> bool:
    """Whether values of this task are checked against the sample (its text or image)."""
    return task.kind in ("spans", "boxes")


def samples_by_external_id(project: Project, ids: Iterable[str], *, full: bool = True) -> dict[str, Any]:
    """external_id -> Sample (or :class:`SampleRef` when not ``full``) for the ids that exist."""
    ids = list(dict.fromkeys(ids))
    qs = Sample.objects.filter(project=project)
    out: dict[str, Any] = {}
    if not full:
        if len(ids) > 20 * CHUNK:
            # One pass over the project's ids beats thousands of IN (...) lookups.
            wanted = set(ids)
            for pk, ext in qs.values_list("pk", "external_id").iterator(chunk_size=10 * CHUNK):
                if ext in wanted:
                    out[ext] = SampleRef(pk, ext, project.pk)
            return out
        for start in range(0, len(ids), CHUNK):
            for pk, ext in qs.filter(external_id__in=ids[start : start + CHUNK]).values_list("pk", "external_id"):
                out[ext] = SampleRef(pk, ext, project.pk)
        return out
    if len(ids) > 20 * CHUNK:
        wanted = set(ids)
        for s in qs.iterator(chunk_size=CHUNK):
            if s.external_id in wanted:
                out[s.external_id] = s
        return out
    for start in range(0, len(ids), CHUNK):
        for s in qs.filter(external_id__in=ids[start : start + CHUNK]):
            out[s.external_id] = s
    return out


# --------------------------------------------------------------------------- annotate


def annotate(sample: Any, task: Any, value: Any, annotator: Any = None) -> Annotation:
    """Store one annotator's value for one sample; see :func:`tracker.annotate`."""
    task_obj, sample_obj = _task_and_sample(task, sample)
    value = check_value(task_obj, value, sample_obj)
    with transaction.atomic():
        user = get_user(annotator)
        return save_annotation(task_obj, sample_obj, user, value, actor=user)


def save_annotation(
    task: AnnotationTask,
    sample: Sample,
    user: Any,
    value: Any,
    *,
    actor: Any,
    prediction: Prediction | None = None,
    created_action: str = "created",
) -> Annotation:
    """Create or change an annotation (value already checked) with its history; in a transaction."""
    now = timezone.now()
    ann = Annotation.objects.select_for_update().filter(task=task, sample=sample, annotator=user).first()
    if ann is None:
        try:
            with transaction.atomic():  # savepoint: another process may create it first
                ann = Annotation.objects.create(
                    task=task, sample=sample, annotator=user, value=value, prediction=prediction,
                    created_at=now, updated_at=now,
                )
        except IntegrityError:
            ann = Annotation.objects.select_for_update().get(task=task, sample=sample, annotator=user)
        else:
            AnnotationEvent.objects.create(
                annotation=ann, actor=actor, at=now, action=created_action, new_value=value,
                new_status=ann.status,
            )
            Claim.objects.filter(task=task, sample=sample, annotator=user).delete()
            return ann
    Claim.objects.filter(task=task, sample=sample, annotator=user).delete()
    same = value_key(ann.value) == value_key(value)
    if same and ann.status != Annotation.Status.REJECTED:
        return ann
    old_value, old_status = ann.value, ann.status
    action = "resubmitted" if same else ("changed" if created_action == "created" else created_action)
    ann.value, ann.status, ann.updated_at = value, Annotation.Status.SUBMITTED, now
    ann.review_comment, ann.reviewed_by, ann.reviewed_at = "", None, None
    if prediction is not None or not same:
        ann.prediction = prediction
    ann.save()
    AnnotationEvent.objects.create(
        annotation=ann, actor=actor, at=now, action=action, old_value=old_value,
        new_value=value, old_status=old_status, new_status=ann.status,
    )
    return ann


def as_records(rows: Any, what: str) -> list[Mapping[str, Any]]:
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(rows, pd.DataFrame):
        # Missing cells (NaN, NaT, pd.NA) mean "not given", like an absent key in a dict.
        rows = rows.astype(object)
        return rows.where(rows.notna(), None).to_dict("records")
    if isinstance(rows, Mapping):
        return [rows]
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Iterable):
        raise InvalidValue(f"{what} must be a list of dicts or a DataFrame, not {type(rows).__name__}.")
    rows = list(rows)
    for i, r in enumerate(rows):
        if not isinstance(r, Mapping):
            raise InvalidValue(f"{what}: row {i} is a {type(r).__name__}, not a dict.")
    return rows


def row_sample_key(row: Mapping[str, Any], i: int, what: str) -> Any:
    for key in ("sample", "sample_id", "external_id", "id"):
        if key in row and row[key] is not None and not (isinstance(row[key], float) and math.isnan(row[key])):
            v = row[key]
            if isinstance(v, Sample):
                return v
            if key in ("external_id", "id"):
                if isinstance(v, bool) or not isinstance(v, (str, int)):
                    raise InvalidValue(f"{what}: row {i} has {key}={v!r}; an external id is a string.")
                return str(v)
            if isinstance(v, bool) or not isinstance(v, (int, str)):
                raise InvalidValue(f"{what}: row {i} has sample={v!r}; give a Sample, its pk or external id.")
            return v
    raise InvalidValue(
        f"{what}: row {i} names no sample; give 'external_id' (or 'sample': a Sample or its pk)."
    )


def resolve_row_samples(project: Project, keys: list[Any], what: str, *, full: bool = True) -> list[Any]:
    """Samples for row keys (Sample / pk / external id), all of ``project``, or one error.

    With ``full=False`` the ones looked up are :class:`SampleRef` (no data loaded).
    """
    ext = [k for k in keys if isinstance(k, str)]
    pks = [k for k in keys if isinstance(k, int)]
    by_ext = samples_by_external_id(project, ext, full=full) if ext else {}
    by_pk: dict[int, Any] = {}
    if pks and full:
        by_pk = _samples_by_pk(pks)
    elif pks:
        for start in range(0, len(pks), CHUNK):
            for pk, e, proj in Sample.objects.filter(pk__in=pks[start : start + CHUNK]).values_list(
                "pk", "external_id", "project_id"
            ):
                by_pk[pk] = SampleRef(pk, e, proj)
    out, missing = [], []
    for k in keys:
        s = k if isinstance(k, Sample) else (by_ext.get(k) if isinstance(k, str) else by_pk.get(k))
        if s is None:
            missing.append(k)
        elif s.project_id != project.pk:
            raise InvalidValue(f"{what}: sample {s.external_id!r} belongs to another project.")
        out.append(s)
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5])
        raise SampleNotFound(
            f"{what}: {len(missing)} row(s) name samples that project {project.name!r} does not "
            f"have ({shown}{', ...' if len(missing) > 5 else ''}). Add them first with "
            f"tracker.add_samples(); nothing was stored."
        )
    return out


def as_columns(rows: Any, what: str) -> tuple[int, dict[str, list[Any]]]:
    """(row count, column -> values) from a DataFrame or dicts; missing cells are None."""
    import pandas as pd

    if isinstance(rows, pd.DataFrame):
        cols = {}
        for name in rows.columns:
            col = rows[name]
            values = col.tolist()
            if col.dtype == object or col.isna().any():
                mask = col.isna().tolist()
                values = [None if m else v for v, m in zip(values, mask)]
            cols[str(name)] = values
        return len(rows), cols
    records = as_records(rows, what)
    keys: dict[str, None] = {}
    for r in records:
        keys.update(dict.fromkeys(r))
    return len(records), {k: [r.get(k) for r in records] for k in keys}


def column_sample_keys(n: int, cols: dict[str, list[Any]], what: str) -> list[Any]:
    """Each row's sample key (Sample, pk or external id), from whichever id column it has."""
    present = [k for k in ("sample", "sample_id", "external_id", "id") if k in cols]
    if not present:
        raise InvalidValue(
            f"{what}: row 0 names no sample; give 'external_id' (or 'sample': a Sample or its pk)."
        )
    if present == ["external_id"] and all(type(v) is str for v in cols["external_id"]):
        return cols["external_id"]  # the common case, without a per-row dict
    keys = []
    for i in range(n):
        keys.append(row_sample_key({k: cols[k][i] for k in present}, i, what))
    return keys


def parse_time(v: Any, i: int, what: str) -> datetime | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if hasattr(v, "to_pydatetime"):
        v = v.to_pydatetime()
    if isinstance(v, str):
        parsed = parse_datetime(v.replace("Z", "+00:00"))
        if parsed is None:
            raise InvalidValue(f"{what}: row {i} has an unreadable time {v!r}; use ISO 8601.")
        v = parsed
    if not isinstance(v, datetime):
        raise InvalidValue(f"{what}: row {i} has a time of type {type(v).__name__}; use ISO 8601.")
    if timezone.is_naive(v):
        v = timezone.make_aware(v, timezone.get_fixed_timezone(0))
    return v


# --------------------------------------------------------------------------- review


def _annotation_ids(annotations: Any) -> list[int]:
    if isinstance(annotations, QuerySet):
        return list(annotations.values_list("pk", flat=True))
    if isinstance(annotations, (Annotation, int)) and not isinstance(annotations, bool):
        annotations = [annotations]
    if isinstance(annotations, (str, bytes)) or not isinstance(annotations, Iterable):
        raise InvalidValue(
            f"review() takes an Annotation, its id, or a list or queryset of them; not {type(annotations).__name__}."
        )
    out = []
    for a in annotations:
        if isinstance(a, Annotation):
            out.append(a.pk)
        elif isinstance(a, int) and not isinstance(a, bool):
            out.append(a)
        else:
            raise InvalidValue(f"review(): {a!r} is not an Annotation or an annotation id.")
    return out


_DECISIONS = {"accept": "accepted", "accepted": "accepted", "reject": "rejected", "rejected": "rejected"}


def review(annotations: Any, decision: str, *, comment: str = "", reviewer: Any = None) -> list[Annotation]:
    """Accept or reject annotations; see :func:`tracker.review`."""
    status = _DECISIONS.get(decision) if isinstance(decision, str) else None
    if status is None:
        raise InvalidValue(f"decision must be 'accept' or 'reject', not {decision!r}.")
    if not isinstance(comment, str):
        raise InvalidValue("comment must be a string.")
    if status == "rejected" and not comment.strip():
        raise InvalidValue(
            "Rejecting needs a comment saying what is wrong, so the annotator can fix it: "
            "review(annotation, 'reject', comment='...')."
        )
    ids = _annotation_ids(annotations)
    now = timezone.now()
    with transaction.atomic():
        user = get_user(reviewer)
        found = {a.pk: a for a in Annotation.objects.select_for_update().filter(pk__in=ids)}
        missing = [i for i in ids if i not in found]
        if missing:
            raise NotFound(f"No annotation with id {', '.join(map(str, missing[:5]))}; nothing was reviewed.")
        changed, events = [], []
        for pk in dict.fromkeys(ids):
            a = found[pk]
            if a.status == status and a.review_comment == comment:
                continue
            events.append(
                AnnotationEvent(
                    annotation=a, actor=user, at=now, action=status, old_value=a.value,
                    new_value=a.value, old_status=a.status, new_status=status, comment=comment,
                )
            )
            a.status, a.review_comment, a.reviewed_by, a.reviewed_at = status, comment, user, now
            changed.append(a)
        Annotation.objects.bulk_update(changed, ["status", "review_comment", "reviewed_by", "reviewed_at"])
        AnnotationEvent.objects.bulk_create(events)
    return [found[pk] for pk in dict.fromkeys(ids)]


# --------------------------------------------------------------------------- predictions


def _run_pk(run: Any) -> int | None:
    if run is None:
        return None
    if isinstance(run, Run):
        return run.pk
    uid = run if isinstance(run, str) else getattr(run, "uid", None)
    if not isinstance(uid, str):
        raise InvalidValue(f"run must be a Run, a run handle or a run uid, not {type(run).__name__}.")
    pk = Run.objects.filter(uid=uid).values_list("pk", flat=True).first()
    if pk is None:
        raise RunNotFound(f"There is no run with uid {uid!r}; pass the run that made the predictions.")
    return pk


def add_predictions(
    project: str | Project,
    task: str | AnnotationTask,
    predictions: Any,
    *,
    model_version: str = "",
    run: Any = None,
    replace: bool = True,
) -> list[Prediction]:
    """Store many pre-annotations at once; see :func:`tracker.add_predictions`."""
    what = "add_predictions"
    task_obj = get_task(project, task)
    records = as_records(predictions, what)
    if not isinstance(model_version, str) or len(model_version) > 200:
        raise InvalidValue("model_version must be a string of at most 200 characters.")
    run_pk = _run_pk(run)
    keys = [row_sample_key(r, i, what) for i, r in enumerate(records)]
    samples = resolve_row_samples(task_obj.project, keys, what, full=needs_sample_data(task_obj))
    objs = []
    now = timezone.now()
    for i, r in enumerate(records):
        if "value" not in r:
            raise InvalidValue(f"{what}: row {i} has no 'value'.")
        try:
            value = check_value(task_obj, r["value"], samples[i])
        except InvalidAnnotation as exc:
            raise InvalidAnnotation(f"{what}: row {i}: {exc} Nothing was stored.") from None
        score = r.get("score")
        if score is not None and not (isinstance(score, float) and math.isnan(score)):
            if not _is_number(score):
                raise InvalidValue(f"{what}: row {i} has score {score!r}; a score is a finite number.")
            score = float(score)
        else:
            score = None
        version = r.get("model_version") or model_version
        objs.append(
            Prediction(task=task_obj, sample_id=samples[i].pk, value=value, score=score,
                       model_version=str(version), run_id=run_pk, created_at=now)
        )
    with transaction.atomic():
        if replace and objs:
            # Re-running a model over the same samples replaces its earlier predictions.
            by_version: dict[str, list[int]] = {}
            for p in objs:
                by_version.setdefault(p.model_version, []).append(p.sample_id)
            for version, ids in by_version.items():
                for start in range(0, len(ids), CHUNK):
                    Prediction.objects.filter(
                        task=task_obj, model_version=version, sample_id__in=ids[start : start + CHUNK]
                    ).delete()
        Prediction.objects.bulk_create(objs, batch_size=500)
    return objs


def accept_prediction(prediction: Any, annotator: Any = None) -> Annotation:
    """Store a prediction's value as an annotation; see :func:`tracker.accept_prediction`."""
    pk = prediction.pk if isinstance(prediction, Prediction) else prediction
    if isinstance(pk, bool) or not isinstance(pk, int):
        raise InvalidValue(f"accept_prediction() takes a Prediction or its id, not {prediction!r}.")
    pred = Prediction.objects.select_related("task", "sample", "task__project").filter(pk=pk).first()
    if pred is None:
        raise NotFound(f"There is no prediction with id {pk}.")
    value = check_value(pred.task, pred.value, pred.sample)
    with transaction.atomic():
        user = get_user(annotator)
        return save_annotation(
            pred.task, pred.sample, user, value, actor=user, prediction=pred,
            created_action="accepted_prediction",
        )


# --------------------------------------------------------------------------- reading


def frame(rows: list[tuple], columns: list[str], raw: Sequence[str] = ()) -> Any:
    """A DataFrame whose ``raw`` columns keep the stored Python values (None stays None).

    pandas would otherwise infer a string dtype for a column of labels and turn None into NaN.
    """
    import pandas as pd

    cols = list(zip(*rows)) if rows else [()] * len(columns)
    data = {
        name: pd.Series(list(col), dtype=object) if name in raw else pd.Series(list(col))
        for name, col in zip(columns, cols)
    }
    return pd.DataFrame(data, columns=columns)


def annotations_frame(
    project: str | Project,
    task: str | AnnotationTask | None = None,
    *,
    status: str | None = None,
    annotator: Any = None,
) -> Any:
    """Current annotations as a DataFrame; see :func:`tracker.annotation_table`."""
    import pandas as pd

    proj = get_project(project)
    qs = Annotation.objects.filter(task__project=proj)
    if task is not None:
        qs = qs.filter(task=get_task(proj, task))
    if status is not None:
        if status not in STATUSES:
            raise InvalidValue(f"status must be one of {', '.join(STATUSES)}, not {status!r}.")
        qs = qs.filter(status=status)
    if annotator is not None:
        qs = qs.filter(annotator__username=getattr(annotator, "username", annotator))
    cols = ["id", "task", "external_id", "sample_id", "annotator", "value", "status",
            "review_comment", "reviewed_by", "prediction_id", "created_at", "updated_at"]
    rows = qs.order_by("id").values_list(
        "id", "task__name", "sample__external_id", "sample_id", "annotator__username", "value",
        "status", "review_comment", "reviewed_by__username", "prediction_id", "created_at", "updated_at",
    )
    return frame(list(rows), cols, raw=("value",))


def history_frame(
    project: str | Project,
    task: str | AnnotationTask | None = None,
    *,
    sample: Any = None,
    annotator: Any = None,
) -> Any:
    """Every change as a DataFrame; see :func:`tracker.annotation_history`."""
    import pandas as pd

    proj = get_project(project)
    qs = AnnotationEvent.objects.filter(annotation__task__project=proj)
    if task is not None:
        task_obj = get_task(proj, task)
        qs = qs.filter(annotation__task=task_obj)
    if sample is not None:
        if isinstance(sample, Sample):
            qs = qs.filter(annotation__sample=sample)
        elif isinstance(sample, str):
            qs = qs.filter(annotation__sample__external_id=sample)
        else:
            qs = qs.filter(annotation__sample_id=sample)
    if annotator is not None:
        qs = qs.filter(annotation__annotator__username=getattr(annotator, "username", annotator))
    cols = ["at", "action", "task", "external_id", "annotator", "actor", "old_value", "new_value",
            "old_status", "new_status", "comment", "annotation_id"]
    rows = qs.order_by("at", "id").values_list(
        "at", "action", "annotation__task__name", "annotation__sample__external_id",
        "annotation__annotator__username", "actor__username", "old_value", "new_value",
        "old_status", "new_status", "comment", "annotation_id",
    )
    return frame(list(rows), cols, raw=("old_value", "new_value"))


def invalid_annotations(project: str | Project, task: str | AnnotationTask) -> Any:
    """Annotations the task's current schema rejects; see :func:`tracker.invalid_annotations`."""
    import pandas as pd

    task_obj = get_task(project, task)
    cols = ["annotation_id", "external_id", "annotator", "value", "reason"]
    rows = [tuple(r[c] for c in cols) for r in invalid_annotation_rows(task_obj)]
    return frame(rows, cols, raw=("value",))


# --------------------------------------------------------------------------- contract


def resolved_labels(
    project: str | Project, sample_ids: Iterable[int]
) -> dict[int, dict[str, Any]]:
    """Each task's final label per sample, for dataset versions to freeze.

    Args:
        project: the samples' project (name or ``Project``).
        sample_ids: sample primary keys.

    Returns:
        ``{sample_pk: {task_name: value}}`` for every requested sample; a task is missing from
        a sample's dict when it has no final label there. The value is an accepted annotation's
        if there is one, else the majority of the non-rejected annotations (ties give none).
    """
    from tracker.services.agreement import resolve_frame

    proj = get_project(project)
    ids = list(dict.fromkeys(int(i) for i in sample_ids))
    out: dict[int, dict[str, Any]] = {i: {} for i in ids}
    if not ids:
        return out
    for task in AnnotationTask.objects.filter(project=proj).order_by("name"):
        frame = resolve_frame(task, ("accepted", "majority"), sample_ids=ids)
        for sample_id, value in zip(frame["sample_id"].tolist(), frame["value"].tolist()):
            out[int(sample_id)][task.name] = value
    return out
