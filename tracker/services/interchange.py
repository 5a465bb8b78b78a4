"""Moving labels in and out: bulk annotation import, Label Studio JSON, JSONL and CSV exports."""

from __future__ import annotations

import json
import math
import os
import tempfile
from datetime import timezone as dt_timezone
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from tracker.exceptions import Conflict, ImportRejected, InvalidAnnotation, InvalidValue
from tracker.models import Annotation, AnnotationEvent, AnnotationTask, Prediction, Project, Sample
from tracker.services.labeling import (
    CHUNK,
    STATUSES,
    as_columns,
    check_username,
    check_value,
    column_sample_keys,
    default_username,
    define_task,
    get_task,
    get_user,
    get_users,
    needs_sample_data,
    parse_time,
    resolve_row_samples,
    samples_by_external_id,
    value_key,
)
from tracker.services.imports import no_gc, sqlite_bulk
from tracker.services.projects import get_or_create_project, get_project

# --------------------------------------------------------------------------- bulk annotations


def _default_name(annotator: Any) -> str:
    if annotator is None:
        return default_username()
    if isinstance(annotator, str):
        return check_username(annotator)
    return get_user(annotator).get_username()


def _names(raw: list[Any] | None, n: int, default_name: str) -> list[str]:
    """The annotator column as checked usernames (each distinct value checked once)."""
    if raw is None:
        return [default_name] * n
    checked: dict[Any, str] = {}
    out = []
    for v in raw:
        key = v if isinstance(v, (str, type(None))) else id(v)
        name = checked.get(key)
        if name is None:
            if v is None or (isinstance(v, float) and math.isnan(v)):
                name = default_name
            else:
                name = check_username(v if isinstance(v, str) else getattr(v, "username", v))
            checked[key] = name
        out.append(name)
    return out


def _parse_rows(
    task: AnnotationTask, n: int, cols: dict[str, list[Any]], samples: list[Any], default_name: str, what: str
) -> list[tuple]:
    """Check every row (value, status, people, times) before anything is written.

    Column by column: a 100,000-row import spends its time in the database, not here.
    """
    values = cols.get("value")
    if values is None:
        raise InvalidValue(f"{what}: row 0 has no 'value'; nothing was stored.")
    names = _names(cols.get("annotator"), n, default_name)
    none = [None] * n
    statuses = [v or Annotation.Status.SUBMITTED for v in cols.get("status", none)]
    if not set(statuses) <= set(STATUSES):
        i = next(i for i, v in enumerate(statuses) if v not in STATUSES)
        raise InvalidValue(f"{what}: row {i} has status {statuses[i]!r}; use one of {', '.join(STATUSES)}.")
    comments = [v or "" for v in cols.get("review_comment", none)]
    for i, c in enumerate(comments):
        if type(c) is not str:
            raise InvalidValue(f"{what}: row {i}: review_comment must be a string.")
    reviewers = [
        v if v is None or isinstance(v, str) else getattr(v, "username", None)
        for v in (r or None for r in cols.get("reviewed_by", none))
    ]
    created = [parse_time(v, i, what) if v is not None else None for i, v in enumerate(cols.get("created_at", none))]
    updated = [parse_time(v, i, what) if v is not None else None for i, v in enumerate(cols.get("updated_at", none))]
    labels = set(task.labels) if task.kind == "classification" else None
    checked = []
    for i, v in enumerate(values):
        if labels is not None and type(v) is str and v in labels:
            checked.append(v)  # the common case, already valid and normal
            continue
        try:
            checked.append(check_value(task, v, samples[i]))
        except InvalidAnnotation as exc:
            raise InvalidAnnotation(f"{what}: row {i}: {exc} Nothing was stored.") from None
    pks = [s.pk for s in samples]
    pairs = list(zip(pks, names))
    if len(set(pairs)) != n:
        seen: dict[tuple[int, str], int] = {}
        for i, pair in enumerate(pairs):
            if pair in seen:
                raise InvalidValue(
                    f"{what}: rows {seen[pair]} and {i} both annotate sample "
                    f"{samples[i].external_id!r} by {pair[1]!r}; one annotator has one value per sample."
                )
            seen[pair] = i
    return list(zip(pks, names, checked, statuses, comments, reviewers, created, updated))


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
    n, cols = as_columns(rows, what)
    if not n:
        return {"created": 0, "updated": 0, "unchanged": 0}
    default_name = _default_name(annotator)
    keys = column_sample_keys(n, cols, what)
    samples = resolve_row_samples(task_obj.project, keys, what, full=needs_sample_data(task_obj))
    with no_gc():
        parsed = _parse_rows(task_obj, n, cols, samples, default_name, what)
        with transaction.atomic(), sqlite_bulk():
            return write_annotations(task_obj, parsed)


def _time_adapter() -> Any:
    """Aware datetime -> the database's parameter; on SQLite the text Django itself writes
    (UTC, no offset), without Django's per-value settings lookups."""
    if connection.vendor != "sqlite":
        return connection.ops.adapt_datetimefield_value
    utc = dt_timezone.utc
    return lambda v: str(v.astimezone(utc).replace(tzinfo=None) if v.tzinfo else v)


def write_annotations(task: AnnotationTask, parsed: list[tuple]) -> dict[str, int]:
    """Bulk insert/update checked rows and their history (call inside a transaction).

    executemany, not bulk_create: Django batches SQLite inserts at 999 parameters, which is
    most of the time of a 100,000-row import. The history of new rows is written by one
    INSERT ... SELECT from the rows themselves.
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
    dt = _time_adapter()
    now_db = dt(now)

    def js(v: Any) -> Any:
        return ops.adapt_json_value(v, None)

    inserts, updates, events = [], [], []
    unchanged = 0
    for sample_id, name, value, status, comment, reviewer, created, updated in parsed:
        user_pk = users[name].pk
        rev = users[reviewer].pk if reviewer else None
        created_db = dt(created) if created is not None else now_db
        updated_db = dt(updated) if updated is not None else created_db
        reviewed_at = updated_db if status != Annotation.Status.SUBMITTED else None
        old = existing.get((sample_id, user_pk))
        if old is None:
            inserts.append(
                (task.pk, sample_id, user_pk, js(value), status, comment, rev, reviewed_at, created_db, updated_db)
            )
            continue
        pk, old_value, old_status, old_comment = old
        if value_key(old_value) == value_key(value) and old_status == status and old_comment == comment:
            unchanged += 1
            continue
        updates.append((js(value), status, comment, rev, reviewed_at, updated_db if updated else now_db, pk))
        events.append((pk, user_pk, now_db, "imported", js(old_value), js(value), old_status, status, comment))
    ann = Annotation._meta.db_table
    ev = AnnotationEvent._meta.db_table
    with connection.cursor() as cur:
        cur.execute(f"SELECT MAX(id) FROM {ann}")
        before = cur.fetchone()[0] or 0
        if inserts:
            # In sample order, the foreign-key lookups and index inserts walk the B-trees
            # sequentially instead of jumping around (a third faster on SQLite).
            inserts.sort(key=lambda r: (r[1], r[2]))
            columns = (
                "task_id, sample_id, annotator_id, value, status, review_comment, reviewed_by_id, "
                "reviewed_at, created_at, updated_at"
            )
            try:
                with transaction.atomic():
                    if connection.vendor == "postgresql":
                        # COPY: psycopg's executemany still makes one round trip per row.
                        with connection.wrap_database_errors, cur.cursor.copy(
                            f"COPY {ann} ({columns}) FROM STDIN"
                        ) as copy:
                            for row in inserts:
                                copy.write_row(row)
                    else:
                        cur.executemany(
                            f"INSERT INTO {ann} ({columns}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                            inserts,
                        )
            except IntegrityError:
                raise Conflict(
                    f"Annotations of task {task.name!r} were added by someone else while this import "
                    f"ran; nothing was stored. Run the import again (it updates what exists)."
                ) from None
            # Rows other writers committed meanwhile are skipped: they came with their own
            # history. SQLite with IMMEDIATE transactions runs one writer at a time, so there
            # every new row is ours and the check is left out.
            serial = (
                connection.vendor == "sqlite"
                and str(connection.settings_dict.get("OPTIONS", {}).get("transaction_mode", "")).upper() == "IMMEDIATE"
            )
            others = "" if serial else f" AND NOT EXISTS (SELECT 1 FROM {ev} e WHERE e.annotation_id = a.id)"
            cur.execute(
                f"INSERT INTO {ev} (annotation_id, actor_id, at, action, old_value, new_value, "
                f"old_status, new_status, comment) "
                f"SELECT a.id, a.annotator_id, a.updated_at, 'imported', NULL, a.value, '', a.status, '' "
                f"FROM {ann} a WHERE a.task_id = %s AND a.id > %s{others}",
                [task.pk, before],
            )
        if updates:
            cur.executemany(
                f"UPDATE {ann} SET value = %s, status = %s, review_comment = %s, "
                f"reviewed_by_id = %s, reviewed_at = %s, updated_at = %s WHERE id = %s",
                updates,
            )
        if events:
            cur.executemany(
                f"INSERT INTO {ev} (annotation_id, actor_id, at, action, old_value, new_value, "
                f"old_status, new_status, comment) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
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


class _SampleData:
    """The fields an export reads from a sample, without building a model instance."""

    __slots__ = ("pk", "external_id", "data", "metadata", "media_uri", "media")

    def __init__(self, pk: int, external_id: str, data: dict, metadata: dict, media_uri: str) -> None:
        self.pk, self.external_id, self.data, self.metadata = pk, external_id, data, metadata
        self.media_uri, self.media = media_uri, None


def _results(task: AnnotationTask, sample: Any, value: Any, score: float | None = None) -> list[dict[str, Any]]:
    """A tracker value as Label Studio result items (ids are stable: task and position)."""
    from tracker.services.labeling import image_size, sample_text

    base = {"from_name": task.name, "to_name": _to_name(task), "type": _LS_TYPE[task.kind], "origin": "manual"}
    if score is not None:
        base["score"] = score
    rid = f"t{task.pk}r"
    if task.kind in ("classification", "multilabel"):
        choices = [value] if task.kind == "classification" else list(value)
        return [{**base, "id": rid + "0", "value": {"choices": choices}}]
    if task.kind == "text":
        return [{**base, "id": rid + "0", "value": {"text": [value]}}]
    if task.kind == "rating":
        return [{**base, "id": rid + "0", "value": {"rating": value}}]
    if task.kind == "spans":
        text = sample_text(task, sample)
        return [
            {**base, "id": f"{rid}{i}",
             "value": {"start": s["start"], "end": s["end"], "text": text[s["start"] : s["end"]], "labels": [s["label"]]}}
            for i, s in enumerate(value)
        ]
    w, h = image_size(task, sample)
    return [
        {**base, "id": f"{rid}{i}", "original_width": w, "original_height": h, "image_rotation": 0,
         "value": {"x": _pct(b["x"], w), "y": _pct(b["y"], h), "width": _pct(b["width"], w),
                   "height": _pct(b["height"], h), "rotation": 0, "rectanglelabels": [b["label"]]}}
        for i, b in enumerate(value)
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
    out = list(iter_label_studio(project, task, samples=samples))
    if path is not None:
        _atomic_write(Path(path), lambda fh: json.dump(out, fh, ensure_ascii=False))
    return out


def iter_label_studio(
    project: str | Project,
    task: str | AnnotationTask | Iterable[str | AnnotationTask] | None = None,
    *,
    samples: Iterable[Any] | None = None,
    page: int = 2000,
) -> Iterator[dict[str, Any]]:
    """:func:`export_label_studio`'s tasks one at a time, reading ``page`` samples (and their
    annotations and predictions) per round of queries: memory is bounded by a page, not the
    project (the API streams this). Not a snapshot: a label saved during a long export may be
    in it or not. Unknown project or task names raise before the first task is produced."""
    from django.contrib.auth import get_user_model

    proj = get_project(project)
    if task is None:
        tasks = list(AnnotationTask.objects.filter(project=proj).order_by("name"))
    elif isinstance(task, (str, AnnotationTask)):
        tasks = [get_task(proj, task)]
    else:
        tasks = [get_task(proj, t) for t in task]
    return _label_studio_pages(proj, tasks, samples, page, get_user_model())


def _label_studio_pages(proj: Project, tasks: list[AnnotationTask], samples: Iterable[Any] | None, page: int, User: Any) -> Iterator[dict[str, Any]]:
    by_pk = {t.pk: t for t in tasks}
    qs = Sample.objects.filter(project=proj).order_by("pk")
    wanted: set[int] | None = None
    if samples is not None:
        wanted = {s.pk if isinstance(s, Sample) else s for s in samples}
    # Image sizes may come from stored media files, which need real model instances.
    instances = any(t.kind == "boxes" for t in tasks)
    # Annotators and reviewers as Label Studio's completed_by, fetched once each: one query per
    # page for the people that page brings in first.
    users: dict[int, dict[str, Any]] = {}

    last = 0
    while True:
        chunk = qs.filter(pk__gt=last)
        if instances:
            sample_list = list(chunk[:page])
        else:
            sample_list = [
                _SampleData(*row)
                for row in chunk.values_list("pk", "external_id", "data", "metadata", "media_uri")[:page]
            ]
        if not sample_list:
            return
        last = sample_list[-1].pk
        if wanted is not None:
            sample_list = [s for s in sample_list if s.pk in wanted]
        pks = [s.pk for s in sample_list]
        anns: dict[int, dict[int, list[tuple]]] = {}
        for row in Annotation.objects.filter(task__in=tasks, sample_id__in=pks).order_by("pk").values_list(
            "pk", "sample_id", "task_id", "annotator_id", "value", "status", "review_comment",
            "reviewed_by_id", "created_at", "updated_at",
        ):
            anns.setdefault(row[1], {}).setdefault(row[3], []).append(row)
        preds: dict[int, dict[str, list[tuple]]] = {}
        for row in Prediction.objects.filter(task__in=tasks, sample_id__in=pks).order_by("pk").values_list(
            "pk", "sample_id", "task_id", "model_version", "value", "score", "created_at"
        ):
            preds.setdefault(row[1], {}).setdefault(row[3], []).append(row)
        people = {pk for per_user in anns.values() for rows in per_user.values() for row in rows for pk in (row[3], row[7])}
        new = people - users.keys() - {None}
        if new:
            for u in User.objects.filter(pk__in=new).values_list("pk", "username", "email", "first_name", "last_name"):
                users[u[0]] = {"id": u[0], "username": u[1], "email": u[2], "first_name": u[3], "last_name": u[4]}
        for s in sample_list:
            yield _label_studio_task(s, anns.get(s.pk, {}), preds.get(s.pk, {}), by_pk, users)


def _label_studio_task(s: Any, anns: dict[int, list[tuple]], preds: dict[str, list[tuple]], by_pk: dict[int, AnnotationTask],
                       users: dict[int, dict[str, Any]]) -> dict[str, Any]:
    data = dict(s.data)
    if s.media_uri and "image" not in data:
        data["image"] = s.media_uri
    ls_anns = []
    for user_pk, items in anns.items():
        results, ext = [], {}
        for pk, _, task_id, _, value, status, comment, reviewed_by, created, updated in items:
            t = by_pk[task_id]
            results += _results(t, s, value)
            ext[t.name] = {
                "status": status, "review_comment": comment,
                "reviewed_by": users[reviewed_by]["username"] if reviewed_by is not None else None,
                "created_at": _iso(created), "updated_at": _iso(updated),
            }
        ls_anns.append({
            "id": items[0][0],
            "completed_by": users[user_pk],
            "result": results,
            "was_cancelled": False,
            "ground_truth": any(it[5] == Annotation.Status.ACCEPTED for it in items),
            "created_at": _iso(min(it[8] for it in items)),
            "updated_at": _iso(max(it[9] for it in items)),
            _EXT: {"tasks": ext},
        })
    ls_preds = []
    for version, items in preds.items():
        results = []
        for _, _, task_id, _, value, score, _ in items:
            results += _results(by_pk[task_id], s, value, score)
        scores = [it[5] for it in items if it[5] is not None]
        ls_preds.append({
            "id": items[0][0], "model_version": version, "score": min(scores) if scores else None,
            "result": results, "created_at": _iso(min(it[6] for it in items)),
        })
    return {
        "id": s.pk, "data": data, "annotations": ls_anns, "predictions": ls_preds,
        "meta": {"external_id": s.external_id, "metadata": s.metadata},
    }


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
    if isinstance(source, list):
        source = [dict(t) if isinstance(t, Mapping) and not isinstance(t, dict) else t for t in source]
    if not isinstance(source, list) or not all(isinstance(t, dict) for t in source):
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
    authorize: Callable[[set[str]], None] | None = None,
) -> dict[str, Any]:
    """Samples, annotations and predictions from a Label Studio JSON export; see the facade.

    ``authorize(usernames)``, if given, is called with the names the annotations would be
    stored under, before anything is written, and raises to refuse (the API: only a project
    admin may attribute annotations to other people).
    """
    from tracker.services import imports

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
                if not isinstance(r, dict) or "from_name" not in r or "type" not in r:
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
            if not isinstance(a, dict):
                raise ImportRejected(f"{what}: task {ext_id!r}, annotation {k} is not a JSON object.")
            if a.get("was_cancelled"):
                continue  # a skipped task in Label Studio holds no label
            where = f"{what}: task {ext_id!r}, annotation {k}"
            name = _user_name(a.get("completed_by")) or default_name
            ext = a.get(_EXT, {}).get("tasks", {}) if isinstance(a.get(_EXT), dict) else {}
            by_name = group(a.get("result") or [], where)
            for tname in set(by_name) | set(ext):
                ann_rows.append((tname, ext_id, name, by_name.get(tname, []), ext.get(tname, {}), a, where))
        for k, p in enumerate(item.get("predictions") or []):
            if not isinstance(p, dict):
                raise ImportRejected(f"{what}: task {ext_id!r}, prediction {k} is not a JSON object.")
            where = f"{what}: task {ext_id!r}, prediction {k}"
            by_name = group(p.get("result") or [], where)
            for tname, results in by_name.items():
                score = next((r["score"] for r in results if r.get("score") is not None), p.get("score"))
                pred_rows.append((tname, ext_id, str(p.get("model_version") or ""), score, results, where))
    # Label Studio lets one person make several annotations of a task; the latest one counts.
    latest: dict[tuple[str, str, str], tuple[Any, int]] = {}
    for i, (tname, ext_id, name, _results, ext, a, where) in enumerate(ann_rows):
        try:
            when = parse_time(ext.get("updated_at") or a.get("updated_at"), i, what)
        except InvalidValue:
            raise ImportRejected(f"{where}: updated_at {a.get('updated_at')!r} is not an ISO 8601 time.") from None
        key = (tname, ext_id, name)
        if key not in latest or when is None or latest[key][0] is None or when >= latest[key][0]:
            latest[key] = (when, i)
    superseded = len(ann_rows) - len(latest)
    ann_rows = [ann_rows[i] for _, i in sorted(latest.values(), key=lambda x: x[1])]
    if authorize is not None:
        authorize({row[2] for row in ann_rows})
    with no_gc(), transaction.atomic(), sqlite_bulk():
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
        # The bulk sample importer: one statement per chunk instead of an ORM upsert.
        imports.import_samples(proj, records, id_field="__external_id__", progress=False)
        full = any(needs_sample_data(t) for t in existing.values())
        by_ext = samples_by_external_id(proj, [r["__external_id__"] for r in records], full=full)
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
        counts = {"samples": len(records), "annotations": 0, "predictions": 0, "superseded": superseded,
                  "tasks": sorted(kinds)}
        for tname, (recs, smp) in per_task.items():
            n, cols = as_columns(recs, what)
            parsed = _parse_rows(existing[tname], n, cols, smp, default_name, what)
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
            preds.append(Prediction(task=t, sample_id=s.pk, value=value, score=score, model_version=version, created_at=now))
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
