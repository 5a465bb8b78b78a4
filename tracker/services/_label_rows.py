"""Bulk input for the labeling services: rows from DataFrames or dicts, samples by id in bulk."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from datetime import timezone as dt_timezone
from typing import Any

from django.utils.dateparse import parse_datetime

from tracker.exceptions import InvalidValue, SampleNotFound
from tracker.models import AnnotationTask, Project, Sample

CHUNK = 2000


def samples_by_pk(pks: Iterable[int]) -> dict[int, Sample]:
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
        by_pk = samples_by_pk(pks)
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
        try:
            parsed = datetime.fromisoformat(v)  # fast, and reads the "Z" of Label Studio exports
        except ValueError:
            parsed = parse_datetime(v.replace("Z", "+00:00"))
        if parsed is None:
            raise InvalidValue(f"{what}: row {i} has an unreadable time {v!r}; use ISO 8601.")
        v = parsed
    if not isinstance(v, datetime):
        raise InvalidValue(f"{what}: row {i} has a time of type {type(v).__name__}; use ISO 8601.")
    if v.tzinfo is None:
        v = v.replace(tzinfo=dt_timezone.utc)
    return v
