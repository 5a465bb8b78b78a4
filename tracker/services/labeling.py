"""Annotation tasks (label schemas), validated annotations with history and review, predictions."""

from __future__ import annotations

import getpass
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from tracker.exceptions import (
    InvalidAnnotation,
    InvalidValue,
    NotFound,
    RunNotFound,
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
from tracker.services._label_rows import (  # noqa: F401  (re-exported for the other services)
    CHUNK,
    SampleRef,
    as_columns,
    as_records,
    column_sample_keys,
    needs_sample_data,
    parse_time,
    resolve_row_samples,
    resolve_sample,
    row_sample_key,
    samples_by_external_id,
    samples_by_pk,
)
from tracker.services._label_values import (  # noqa: F401  (re-exported for the other services)
    check_value,
    image_size,
    is_number,
    sample_text,
    suggest,
    value_key,
)
from tracker.services import _prebuilt
from tracker.services.projects import get_or_create_project, get_project

KINDS = tuple(AnnotationTask.Kind.values)
LABELLED_KINDS = ("classification", "multilabel", "spans", "boxes")
STATUSES = tuple(Annotation.Status.values)

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
    if isinstance(project, str):
        # One query in the common case (the queue calls this for every claim).
        from tracker.services.projects import check_project_name

        obj = (
            AnnotationTask.objects.select_related("project")
            .filter(project__name=check_project_name(project), name=task.strip())
            .first()
        )
        if obj is not None:
            return obj
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
            or not all(is_number(v) for v in scale)
            or not scale[0] < scale[1]
        ):
            raise InvalidValue(f"scale must be (lowest, highest) with lowest < highest, not {scale!r}.")
        config["scale"] = list(scale)
        step = config["step"]
        if not is_number(step) or step < 0:
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
        close = suggest(str(kind), KINDS)
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
        samples = samples_by_pk({r[1] for r in rows})
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


# --------------------------------------------------------------------------- annotate


def _task_and_sample(task: Any, sample: Any) -> tuple[AnnotationTask, Sample]:
    if isinstance(task, AnnotationTask):
        return task, resolve_sample(sample, task)
    if isinstance(sample, Sample):
        if isinstance(task, str):
            found = AnnotationTask.objects.filter(project_id=sample.project_id, name=task.strip()).first()
            if found is not None:
                return found, sample
        return get_task(sample.project, task), sample  # the error path names the known tasks
    raise InvalidValue(
        f"Task {task!r} is given by name, so pass the sample as a Sample object (its project "
        f"says where the task is), or pass the task as tracker.get_task(project, {task!r})."
    )


def annotate(sample: Any, task: Any, value: Any, annotator: Any = None) -> Annotation:
    """Store one annotator's value for one sample; see :func:`tracker.annotate`."""
    task_obj, sample_obj = _task_and_sample(task, sample)
    value = check_value(task_obj, value, sample_obj)
    with transaction.atomic():
        user = get_user(annotator)
        return save_annotation(task_obj, sample_obj, user, value, actor=user)


def _held_annotation(task: int, sample: int, annotator: int) -> QuerySet[Annotation]:
    # One annotation per (task, sample, annotator): the unique constraint makes it the only one.
    return Annotation.objects.select_for_update().filter(task_id=task, sample_id=sample, annotator_id=annotator)


_HELD = _prebuilt.Prebuilt(_held_annotation, -7_100_000_001, -7_100_000_002, -7_100_000_003)


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
    """Create or change an annotation (value already checked) with its history; in a transaction.

    One annotation per call is the API's and the notebook's hot path, so its statements are
    compiled once (:mod:`tracker.services._prebuilt`), not per call.
    """
    now = timezone.now()
    status = Annotation.Status.SUBMITTED
    # Stored unless this annotator has one already (or a concurrent request made it first):
    # no lookup before, no savepoint around it.
    pk = _prebuilt.insert(Annotation, {
        "task": task.pk, "sample": sample.pk, "annotator": user.pk, "value": value,
        "status": status, "review_comment": "", "reviewed_by": None, "reviewed_at": None,
        "prediction": prediction.pk if prediction is not None else None,
        "created_at": now, "updated_at": now,
    }, unless_exists=("task", "sample", "annotator"))
    if pk is not None:
        ann = Annotation(
            id=pk, task=task, sample=sample, annotator=user, value=value, status=status,
            review_comment="", reviewed_by=None, reviewed_at=None, prediction=prediction,
            created_at=now, updated_at=now,
        )
        ann._state.adding, ann._state.db = False, transaction.get_connection().alias
        _prebuilt.insert(AnnotationEvent, {
            "annotation": pk, "actor": actor.pk if actor is not None else None, "at": now,
            "action": created_action, "old_value": None, "new_value": value, "old_status": "",
            "new_status": status, "comment": "",
        })
        _prebuilt.delete(Claim, task_id=task.pk, sample_id=sample.pk, annotator_id=user.pk)
        return ann
    ann = _HELD.first(task.pk, sample.pk, user.pk)
    _prebuilt.delete(Claim, task_id=task.pk, sample_id=sample.pk, annotator_id=user.pk)
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
            if not is_number(score):
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
