"""Moving labels in and out: bulk annotation import, Label Studio JSON, JSONL and CSV exports."""

from __future__ import annotations

import json
import math
import os
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from tracker.exceptions import ImportRejected, InvalidAnnotation, InvalidValue
from tracker.models import Annotation, AnnotationEvent, AnnotationTask, Prediction, Project, Sample
from tracker.services.labeling import (
    CHUNK,
    STATUSES,
    as_records,
    check_username,
    check_value,
    default_username,
    define_task,
    get_task,
    get_user,
    get_users,
    parse_time,
    resolve_row_samples,
    row_sample_key,
    value_key,
)
from tracker.services.projects import get_or_create_project, get_project

# --------------------------------------------------------------------------- bulk annotations


def _default_name(annotator: Any) -> str:
    if annotator is None:
        return default_username()
    if isinstance(annotator, str):
        return check_username(annotator)
    return get_user(annotator).get_username()


def _parse_rows(
    task: AnnotationTask, records: list[Mapping[str, Any]], samples: list[Sample], default_name: str, what: str
) -> list[tuple]:
    """Check every row (value, status, people, times) before anything is written."""
    parsed: list[tuple] = []
    seen: dict[tuple[int, str], int] = {}
    for i, r in enumerate(records):
        name = r.get("annotator")
        if name is None or (isinstance(name, float) and math.isnan(name)):
            name = default_name
        elif not isinstance(name, str):
            name = getattr(name, "username", name)
        name = check_username(name)
        if "value" not in r:
            raise InvalidValue(f"{what}: row {i} has no 'value'; nothing was stored.")
        try:
            value = check_value(task, r["value"], samples[i])
        except InvalidAnnotation as exc:
            raise InvalidAnnotation(f"{what}: row {i}: {exc} Nothing was stored.") from None
        status = r.get("status") or Annotation.Status.SUBMITTED
        if status not in STATUSES:
            raise InvalidValue(f"{what}: row {i} has status {status!r}; use one of {', '.join(STATUSES)}.")
        comment = r.get("review_comment") or ""
        if not isinstance(comment, str):
            raise InvalidValue(f"{what}: row {i}: review_comment must be a string.")
        reviewer = r.get("reviewed_by") or None
        if reviewer is not None and not isinstance(reviewer, str):
            reviewer = getattr(reviewer, "username", None)
        pair = (samples[i].pk, name)
        if pair in seen:
            raise InvalidValue(
                f"{what}: rows {seen[pair]} and {i} both annotate sample "
                f"{samples[i].external_id!r} by {name!r}; one annotator has one value per sample."
            )
        seen[pair] = i
        parsed.append(
            (samples[i].pk, name, value, status, comment, reviewer,
             parse_time(r.get("created_at"), i, what), parse_time(r.get("updated_at"), i, what))
        )
    return parsed


def import_annotations(
    project: str | Project,
    task: str | AnnotationTask,
    rows: Any,
    *,
    annotator: Any = None,
) -> dict[str, int]:
    """Validate and store many annotations in one transaction; see :func:`tracker.import_annotations`."""
    what = "import_annotations"
    task_obj = get_task(project, task)
    records = as_records(rows, what)
    if not records:
        return {"created": 0, "updated": 0, "unchanged": 0}
    default_name = _default_name(annotator)
    keys = [row_sample_key(r, i, what) for i, r in enumerate(records)]
    samples = resolve_row_samples(task_obj.project, keys, what)
    parsed = _parse_rows(task_obj, records, samples, default_name, what)
    with transaction.atomic():
        return write_annotations(task_obj, parsed)


def write_annotations(task: AnnotationTask, parsed: list[tuple]) -> dict[str, int]:
    """Bulk insert/update checked rows and their history (call inside a transaction).

    executemany, not bulk_create: Django batches SQLite inserts at 999 parameters, which is
    most of the time of a 100,000-row import.
    """
    users = get_users({p[1] for p in parsed} | {p[5] for p in parsed if p[5]})
    now = timezone.now()
    existing = {
        (s, a): (pk, v, st, c)
        for pk, s, a, v, st, c in Annotation.objects.filter(task=task).values_list(
            "pk", "sample_id", "annotator_id", "value", "status", "review_comment"
        )
    }
    ops = connection.ops
    dt = ops.adapt_datetimefield_value

    def js(v: Any) -> Any:
        return ops.adapt_json_value(v, None)

    inserts, updates, new_events, events = [], [], [], []
    unchanged = 0
    for sample_id, name, value, status, comment, reviewer, created, updated in parsed:
        user = users[name]
        rev = users[reviewer].pk if reviewer else None
        reviewed_at = dt(updated or now) if status != Annotation.Status.SUBMITTED else None
        old = existing.get((sample_id, user.pk))
        if old is None:
            inserts.append(
                (task.pk, sample_id, user.pk, js(value), status, comment, rev, reviewed_at,
                 dt(created or now), dt(updated or created or now))
            )
            new_events.append((sample_id, user.pk, value, status, dt(updated or created or now)))
            continue
        pk, old_value, old_status, old_comment = old
        if value_key(old_value) == value_key(value) and old_status == status and old_comment == comment:
            unchanged += 1
            continue
        updates.append((js(value), status, comment, rev, reviewed_at, dt(updated or now), pk))
        events.append(
            (pk, user.pk, dt(now), "imported", js(old_value), js(value), old_status, status, comment)
        )
    ann = Annotation._meta.db_table
    with connection.cursor() as cur:
        if inserts:
            cur.executemany(
                f"INSERT INTO {ann} (task_id, sample_id, annotator_id, value, status, "
                f"review_comment, reviewed_by_id, reviewed_at, created_at, updated_at) "
                f"VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                inserts,
            )
        if updates:
            cur.executemany(
                f"UPDATE {ann} SET value = %s, status = %s, review_comment = %s, "
                f"reviewed_by_id = %s, reviewed_at = %s, updated_at = %s WHERE id = %s",
                updates,
            )
    if new_events:
        ids = {
            (s, a): pk
            for pk, s, a in Annotation.objects.filter(task=task).values_list("pk", "sample_id", "annotator_id")
        }
        for sample_id, user_id, value, status, at in new_events:
            events.append((ids[(sample_id, user_id)], user_id, at, "imported", None, js(value), "", status, ""))
    if events:
        with connection.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {AnnotationEvent._meta.db_table} (annotation_id, actor_id, at, action, "
                f"old_value, new_value, old_status, new_status, comment) "
                f"VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                events,
            )
    return {"created": len(inserts), "updated": len(updates), "unchanged": unchanged}


# --------------------------------------------------------------------------- Label Studio

# Label Studio control tag type <-> tracker task kind.
_LS_TYPE = {
    "classification": "choices",
    "multilabel": "choices",
    "spans": "labels",
    "boxes": "rectanglelabels",
    "text": "textarea",
    "rating": "rating",
}
_KIND_OF_TYPE = {"labels": "spans", "rectanglelabels": "boxes", "textarea": "text", "rating": "rating"}
_EXT = "tracker"  # our key inside a Label Studio annotation; Label Studio ignores it


def _to_name(task: AnnotationTask) -> str:
    cfg = task.config
    if task.kind == "boxes":
        return cfg.get("image_field") or "image"
    if task.kind == "spans":
        return cfg.get("text_field") or "text"
    return cfg.get("text_field") or cfg.get("image_field") or "text"


def _pct(v: float, size: float) -> float:
    return v / size * 100.0


def _px(v: float, size: float) -> float | int:
    out = round(v * size / 100.0, 6)
    return int(out) if float(out).is_integer() else out


def _results(task: AnnotationTask, sample: Sample, value: Any, score: float | None = None) -> list[dict[str, Any]]:
    """A tracker value as Label Studio result items."""
    from tracker.services.labeling import image_size, sample_text

    base = {"from_name": task.name, "to_name": _to_name(task), "type": _LS_TYPE[task.kind], "origin": "manual"}
    if score is not None:
        base["score"] = score
    if task.kind in ("classification", "multilabel"):
        choices = [value] if task.kind == "classification" else list(value)
        return [{**base, "id": uuid.uuid4().hex[:10], "value": {"choices": choices}}]
    if task.kind == "text":
        return [{**base, "id": uuid.uuid4().hex[:10], "value": {"text": [value]}}]
    if task.kind == "rating":
        return [{**base, "id": uuid.uuid4().hex[:10], "value": {"rating": value}}]
    if task.kind == "spans":
        text = sample_text(task, sample)
        return [
            {**base, "id": uuid.uuid4().hex[:10],
             "value": {"start": s["start"], "end": s["end"], "text": text[s["start"] : s["end"]], "labels": [s["label"]]}}
            for s in value
        ]
    w, h = image_size(task, sample)
    return [
        {**base, "id": uuid.uuid4().hex[:10], "original_width": w, "original_height": h, "image_rotation": 0,
         "value": {"x": _pct(b["x"], w), "y": _pct(b["y"], h), "width": _pct(b["width"], w),
                   "height": _pct(b["height"], h), "rotation": 0, "rectanglelabels": [b["label"]]}}
        for b in value
    ]


def _iso(t: Any) -> str | None:
    return t.isoformat() if t is not None else None


def export_label_studio(
    project: str | Project,
    task: str | AnnotationTask | Iterable[str | AnnotationTask] | None = None,
    path: str | os.PathLike[str] | None = None,
    *,
    samples: Iterable[Any] | None = None,
) -> list[dict[str, Any]]:
    """Samples with their annotations and predictions as Label Studio tasks; see the facade."""
    proj = get_project(project)
    if task is None:
        tasks = list(AnnotationTask.objects.filter(project=proj).order_by("name"))
    elif isinstance(task, (str, AnnotationTask)):
        tasks = [get_task(proj, task)]
    else:
        tasks = [get_task(proj, t) for t in task]
    by_pk = {t.pk: t for t in tasks}
    qs = Sample.objects.filter(project=proj).order_by("pk")
    if samples is not None:
        ids = [s.pk if isinstance(s, Sample) else s for s in samples]
        qs = qs.filter(pk__in=ids)
    sample_list = list(qs)
    sample_by_pk = {s.pk: s for s in sample_list}
    anns: dict[int, dict[str, list[Annotation]]] = {}
    for a in (
        Annotation.objects.filter(task__in=tasks, sample__project=proj)
        .select_related("annotator", "reviewed_by")
        .order_by("pk")
    ):
        if a.sample_id in sample_by_pk:
            anns.setdefault(a.sample_id, {}).setdefault(a.annotator.username, []).append(a)
    preds: dict[int, dict[str, list[Prediction]]] = {}
    for p in Prediction.objects.filter(task__in=tasks, sample__project=proj).order_by("pk"):
        if p.sample_id in sample_by_pk:
            preds.setdefault(p.sample_id, {}).setdefault(p.model_version, []).append(p)
    out = []
    for s in sample_list:
        data = dict(s.data)
        if s.media_uri and "image" not in data:
            data["image"] = s.media_uri
        ls_anns = []
        for username, items in anns.get(s.pk, {}).items():
            user = items[0].annotator
            results, ext = [], {}
            for a in items:
                t = by_pk[a.task_id]
                results += _results(t, s, a.value)
                ext[t.name] = {
                    "status": a.status, "review_comment": a.review_comment,
                    "reviewed_by": a.reviewed_by.username if a.reviewed_by else None,
                    "created_at": _iso(a.created_at), "updated_at": _iso(a.updated_at),
                }
            ls_anns.append({
                "id": items[0].pk,
                "completed_by": {"id": user.pk, "username": username, "email": user.email,
                                 "first_name": user.first_name, "last_name": user.last_name},
                "result": results,
                "was_cancelled": False,
                "ground_truth": any(a.status == Annotation.Status.ACCEPTED for a in items),
                "created_at": _iso(min(a.created_at for a in items)),
                "updated_at": _iso(max(a.updated_at for a in items)),
                _EXT: {"tasks": ext},
            })
        ls_preds = []
        for version, items in preds.get(s.pk, {}).items():
            results = []
            for p in items:
                results += _results(by_pk[p.task_id], s, p.value, p.score)
            scores = [p.score for p in items if p.score is not None]
            ls_preds.append({
                "id": items[0].pk, "model_version": version, "score": min(scores) if scores else None,
                "result": results, "created_at": _iso(min(p.created_at for p in items)),
            })
        out.append({
            "id": s.pk, "data": data, "annotations": ls_anns, "predictions": ls_preds,
            "meta": {"external_id": s.external_id, "metadata": s.metadata},
        })
    if path is not None:
        _atomic_write(Path(path), lambda fh: json.dump(out, fh, ensure_ascii=False))
    return out


def _read_source(source: Any) -> list[dict[str, Any]]:
    if isinstance(source, (str, os.PathLike)) and not (isinstance(source, str) and source.lstrip()[:1] in "[{"):
        p = Path(source)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidValue(f"Cannot read the Label Studio export {p} ({exc.strerror}).") from None
        source = text
    if isinstance(source, (str, bytes)):
        try:
            source = json.loads(source)
        except ValueError as exc:
            raise InvalidValue(f"The Label Studio export is not valid JSON ({exc}).") from None
    if isinstance(source, Mapping):
        source = [source]
    if not isinstance(source, list) or not all(isinstance(t, Mapping) for t in source):
        raise InvalidValue(
            "A Label Studio export is a JSON list of tasks ({'data': {...}, 'annotations': [...]}); "
            "pass its path, its text, or the parsed list."
        )
    return source


def _user_name(completed_by: Any) -> str | None:
    if isinstance(completed_by, Mapping):
        for key in ("username", "email"):
            if completed_by.get(key):
                return str(completed_by[key])
        if completed_by.get("id") is not None:
            return f"label-studio-user-{completed_by['id']}"
        return None
    if isinstance(completed_by, int) and not isinstance(completed_by, bool):
        return f"label-studio-user-{completed_by}"
    if isinstance(completed_by, str) and completed_by:
        return completed_by
    return None


def _value_of(kind: str, results: list[dict[str, Any]], where: str) -> Any:
    """A tracker value from one control tag's Label Studio results."""
    vals = [r.get("value") or {} for r in results]
    if kind == "classification":
        choices = [c for v in vals for c in v.get("choices", [])]
        if len(choices) != 1:
            raise ImportRejected(f"{where}: a classification takes one choice, found {choices!r}.")
        return choices[0]
    if kind == "multilabel":
        return [c for v in vals for c in v.get("choices", [])]
    if kind == "text":
        texts = [t for v in vals for t in (v.get("text") or [])]
        return "\n".join(texts)
    if kind == "rating":
        if len(vals) != 1 or "rating" not in vals[0]:
            raise ImportRejected(f"{where}: a rating result needs one value.rating.")
        return vals[0]["rating"]
    if kind == "spans":
        out = []
        for v in vals:
            for label in v.get("labels") or []:
                out.append({"start": v.get("start"), "end": v.get("end"), "label": label, "text": v.get("text")})
        return out
    out = []
    for r, v in zip(results, vals):
        w, h = r.get("original_width"), r.get("original_height")
        if not w or not h:
            raise ImportRejected(f"{where}: a rectangle result needs original_width and original_height.")
        for label in v.get("rectanglelabels") or []:
            out.append({"x": _px(v.get("x", 0), w), "y": _px(v.get("y", 0), h), "width": _px(v.get("width", 0), w),
                        "height": _px(v.get("height", 0), h), "label": label})
    return out


def import_label_studio(
    project: str | Project,
    source: Any,
    *,
    tasks: Mapping[str, str] | None = None,
    annotator: Any = None,
) -> dict[str, Any]:
    """Samples, annotations and predictions from a Label Studio JSON export; see the facade."""
    from tracker.services import samples as samples_core

    what = "import_label_studio"
    mapping = dict(tasks or {})
    items = _read_source(source)
    default_name = _default_name(annotator)
    if isinstance(project, Project):
        found: Project | None = project
    else:
        from tracker.services.projects import check_project_name

        found = Project.objects.filter(name=check_project_name(project)).first()
    existing = {t.name: t for t in AnnotationTask.objects.filter(project=found)} if found else {}
    records, seen_ids = [], set()
    # (task name, external id, annotator, results, ext) and (task name, external id, version, score, results)
    ann_rows: list[tuple] = []
    pred_rows: list[tuple] = []
    kinds: dict[str, str] = {}
    labels: dict[str, list[str]] = {}
    sizes: dict[str, dict[str, float]] = {}
    ratings: dict[str, float] = {}
    for n, item in enumerate(items):
        data = item.get("data")
        if not isinstance(data, Mapping):
            raise ImportRejected(f"{what}: task {n} has no 'data' object.", report=[{"task": n, "reason": "no data"}])
        meta = item.get("meta") if isinstance(item.get("meta"), Mapping) else {}
        ext_id = meta.get("external_id") or (str(item["id"]) if item.get("id") is not None else None)
        if ext_id is None:
            from tracker.services.samples import auto_external_id

            ext_id = auto_external_id(data)
        ext_id = str(ext_id)
        if ext_id in seen_ids:
            raise ImportRejected(f"{what}: two tasks have the id {ext_id!r}; ids must be unique.")
        seen_ids.add(ext_id)
        rec = {"__external_id__": ext_id, **{k: v for k, v in data.items() if k not in ("metadata", "media_uri")}}
        if isinstance(meta.get("metadata"), Mapping):
            rec["metadata"] = meta["metadata"]
        records.append(rec)

        def group(results: Any, where: str) -> dict[str, list[dict[str, Any]]]:
            if not isinstance(results, list):
                raise ImportRejected(f"{where}: 'result' must be a list.")
            by_name: dict[str, list[dict[str, Any]]] = {}
            for r in results:
                if not isinstance(r, Mapping) or "from_name" not in r or "type" not in r:
                    raise ImportRejected(f"{where}: a result lacks from_name or type.")
                name = mapping.get(r["from_name"], r["from_name"])
                rtype = str(r["type"]).lower()
                kind = existing[name].kind if name in existing else kinds.get(name)
                if kind is None:
                    if rtype == "choices":
                        kind = "classification"
                    elif rtype in _KIND_OF_TYPE:
                        kind = _KIND_OF_TYPE[rtype]
                    else:
                        raise ImportRejected(
                            f"{where}: result type {rtype!r} (from_name {r['from_name']!r}) has no "
                            f"tracker task kind; supported types: choices, labels, rectanglelabels, "
                            f"textarea, rating. Remove those results and import again."
                        )
                if rtype == "choices" and name not in existing and len((r.get("value") or {}).get("choices", [])) > 1:
                    kind = "multilabel"
                kinds[name] = kind if not (kinds.get(name) == "multilabel") else "multilabel"
                v = r.get("value") or {}
                if rtype == "rating" and isinstance(v.get("rating"), (int, float)):
                    ratings[name] = max(ratings.get(name, 5), v["rating"])
                for key in ("choices", "labels", "rectanglelabels"):
                    for lb in v.get(key) or []:
                        labels.setdefault(name, [])
                        if lb not in labels[name]:
                            labels[name].append(lb)
                if rtype == "rectanglelabels" and r.get("original_width") and r.get("original_height"):
                    sizes.setdefault(ext_id, {"width": r["original_width"], "height": r["original_height"]})
                by_name.setdefault(name, []).append(dict(r))
            return by_name

        for k, a in enumerate(item.get("annotations") or []):
            if not isinstance(a, Mapping) or a.get("was_cancelled"):
                continue  # a skipped task in Label Studio holds no label
            where = f"{what}: task {ext_id!r}, annotation {k}"
            name = _user_name(a.get("completed_by")) or default_name
            ext = a.get(_EXT, {}).get("tasks", {}) if isinstance(a.get(_EXT), Mapping) else {}
            by_name = group(a.get("result") or [], where)
            for tname in set(by_name) | set(ext):
                ann_rows.append((tname, ext_id, name, by_name.get(tname, []), ext.get(tname, {}), a, where))
        for k, p in enumerate(item.get("predictions") or []):
            if not isinstance(p, Mapping):
                continue
            where = f"{what}: task {ext_id!r}, prediction {k}"
            by_name = group(p.get("result") or [], where)
            for tname, results in by_name.items():
                score = next((r["score"] for r in results if r.get("score") is not None), p.get("score"))
                pred_rows.append((tname, ext_id, str(p.get("model_version") or ""), score, results, where))
    with transaction.atomic():
        proj = get_or_create_project(project)
        for name, kind in kinds.items():
            if name not in existing:
                existing[name] = define_task(
                    proj, name, kind,
                    labels.get(name) if kind in ("classification", "multilabel", "spans", "boxes") else None,
                    scale=(1, ratings.get(name, 5)) if kind == "rating" else None,
                )
        for rec in records:
            for key, v in sizes.get(rec["__external_id__"], {}).items():
                rec.setdefault(key, v)
        stored = samples_core.add_samples(proj, records, id_field="__external_id__")
        by_ext = {s.external_id: s for s in stored}
        per_task: dict[str, tuple[list[dict], list[Sample]]] = {}
        for tname, ext_id, name, results, ext, a, where in ann_rows:
            t = existing[tname]
            value = _value_of(t.kind, results, where) if results else ([] if t.kind in ("multilabel", "spans", "boxes") else None)
            if value is None:
                continue
            row = {
                "value": value, "annotator": name, "status": ext.get("status"),
                "review_comment": ext.get("review_comment"), "reviewed_by": ext.get("reviewed_by"),
                "created_at": ext.get("created_at") or a.get("created_at"),
                "updated_at": ext.get("updated_at") or a.get("updated_at"),
            }
            recs, smp = per_task.setdefault(tname, ([], []))
            recs.append(row)
            smp.append(by_ext[ext_id])
        counts = {"samples": len(stored), "annotations": 0, "predictions": 0, "tasks": sorted(kinds)}
        for tname, (recs, smp) in per_task.items():
            parsed = _parse_rows(existing[tname], recs, smp, default_name, what)
            c = write_annotations(existing[tname], parsed)
            counts["annotations"] += c["created"] + c["updated"] + c["unchanged"]
        preds = []
        now = timezone.now()
        for tname, ext_id, version, score, results, where in pred_rows:
            t = existing[tname]
            s = by_ext[ext_id]
            try:
                value = check_value(t, _value_of(t.kind, results, where), s)
            except InvalidAnnotation as exc:
                raise InvalidAnnotation(f"{where}: {exc} Nothing was stored.") from None
            if score is not None and not (isinstance(score, (int, float)) and math.isfinite(score)):
                score = None
            preds.append(Prediction(task=t, sample=s, value=value, score=score, model_version=version, created_at=now))
        # Importing the same export twice replaces its predictions instead of doubling them.
        groups: dict[tuple[int, str], list[int]] = {}
        for p in preds:
            groups.setdefault((p.task_id, p.model_version), []).append(p.sample_id)
        for (task_id, version), ids in groups.items():
            for start in range(0, len(ids), CHUNK):
                Prediction.objects.filter(
                    task_id=task_id, model_version=version, sample_id__in=ids[start : start + CHUNK]
                ).delete()
        Prediction.objects.bulk_create(preds, batch_size=500)
        counts["predictions"] = len(preds)
    return counts


# --------------------------------------------------------------------------- JSONL / CSV


def _atomic_write(path: Path, write: Any, mode: str = "w") -> None:
    """Write through a temporary file in the same directory, so a failure leaves no half file."""
    path = path.expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise InvalidValue(f"Cannot write to {path.parent} ({exc.strerror}).") from None
    try:
        with os.fdopen(fd, mode, encoding="utf-8", newline="") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_labels(
    project: str | Project,
    task: str | AnnotationTask,
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    strategy: Any = None,
    include_data: bool = False,
) -> Path:
    """Write labels to JSONL or CSV; see :func:`tracker.export_labels`."""
    import pandas as pd

    from tracker.services.agreement import resolve_labels
    from tracker.services.labeling import annotations_frame

    target = Path(path)
    fmt = format or target.suffix.lstrip(".").lower()
    if fmt not in ("jsonl", "csv"):
        raise InvalidValue(
            f"Cannot tell the format of {target.name!r}; name the file .jsonl or .csv, or pass "
            f"format='jsonl' or format='csv'."
        )
    task_obj = get_task(project, task)
    if strategy is None:
        df = annotations_frame(task_obj.project, task_obj).drop(columns=["id", "prediction_id"])
        for c in ("created_at", "updated_at"):
            df[c] = df[c].map(_iso)
    else:
        df = resolve_labels(task_obj.project, task_obj, strategy)
    if include_data:
        ids = df["sample_id"].tolist()
        data: dict[int, dict] = {}
        for start in range(0, len(ids), CHUNK):
            data.update(Sample.objects.filter(pk__in=ids[start : start + CHUNK]).values_list("pk", "data"))
        df.insert(2, "data", df["sample_id"].map(data))
    df = df.drop(columns=["sample_id"])
    if fmt == "jsonl":
        def write(fh: Any) -> None:
            for rec in df.to_dict("records"):
                fh.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
    else:
        out = df.copy()
        for col in ("value", "data"):
            if col in out:
                out[col] = out[col].map(lambda v: v if isinstance(v, (str, int, float)) else json.dumps(v, ensure_ascii=False))
        out = pd.DataFrame(out)

        def write(fh: Any) -> None:
            out.to_csv(fh, index=False)
    _atomic_write(target, write)
    return target
