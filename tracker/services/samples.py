"""Samples: validated, upserted by ``external_id`` in one transaction."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from django.db import transaction
from django.utils import timezone

from tracker.exceptions import InvalidValue
from tracker.models import Project, Sample
from tracker.services.projects import get_or_create_project

MAX_EXTERNAL_ID = 255
_RESERVED = ("metadata", "media_uri")


def _json_problem(value: Any, path: str) -> str | None:
    """Why ``value`` cannot be stored as JSON, or None. Names the offending key path."""
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} is {value}, which JSON cannot hold"
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"{path} has a non-string key {k!r}"
            if problem := _json_problem(v, f"{path}.{k}"):
                return problem
        return None
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            if problem := _json_problem(v, f"{path}[{i}]"):
                return problem
        return None
    return f"{path} is a {type(value).__name__} ({value!r:.60}), which is not JSON-serialisable"


def auto_external_id(data: Mapping[str, Any]) -> str:
    """A stable id from content, so re-adding the same record updates instead of duplicating."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def normalise_record(record: Any, index: int, id_field: str) -> tuple[str, dict, dict, str]:
    """(external_id, data, metadata, media_uri) of one record, or InvalidValue naming it."""
    if not isinstance(record, Mapping):
        raise InvalidValue(
            f"Record {index} is a {type(record).__name__}, not a mapping; pass dicts like "
            f"{{'{id_field}': 'a1', 'text': '...'}}."
        )
    data = {k: v for k, v in record.items() if k != id_field and k not in _RESERVED}
    metadata = record.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise InvalidValue(f"Record {index}: 'metadata' must be a dict, not {type(metadata).__name__}.")
    media_uri = record.get("media_uri") or ""
    if not isinstance(media_uri, str):
        raise InvalidValue(f"Record {index}: 'media_uri' must be a string.")
    for what, value in (("data", data), ("metadata", metadata)):
        if problem := _json_problem(value, what):
            raise InvalidValue(f"Record {index}: {problem}. Convert it to a string or number first.")
    raw_id = record.get(id_field)
    if raw_id is None or raw_id == "":
        external_id = auto_external_id(data)
    elif isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
        raise InvalidValue(
            f"Record {index}: the id field {id_field!r} must be a string or an integer, "
            f"not {type(raw_id).__name__}."
        )
    else:
        external_id = str(raw_id)
    if len(external_id) > MAX_EXTERNAL_ID:
        raise InvalidValue(
            f"Record {index}: id {external_id[:40]!r}... is longer than {MAX_EXTERNAL_ID} characters."
        )
    return external_id, dict(data), dict(metadata), media_uri


def add_samples(
    project: str | Project,
    records: Iterable[Mapping[str, Any]],
    *,
    id_field: str = "id",
) -> list[Sample]:
    """Add or update samples; see :func:`tracker.add_samples`."""
    if isinstance(records, (str, bytes)) or not isinstance(records, Iterable):
        raise InvalidValue(
            f"records must be an iterable of dicts, not {type(records).__name__}. For a file or "
            f"a DataFrame use tracker.import_samples()."
        )
    if isinstance(records, Mapping):
        records = [records]
    rows: dict[str, tuple[dict, dict, str]] = {}
    first_index: dict[str, int] = {}
    for index, record in enumerate(records):
        external_id, data, metadata, media_uri = normalise_record(record, index, id_field)
        if external_id in rows:
            if record.get(id_field) in (None, ""):
                continue  # an identical record without an id: the same sample
            raise InvalidValue(
                f"Records {first_index[external_id]} and {index} have the same id "
                f"{external_id!r}; ids must be unique within one call."
            )
        first_index[external_id] = index
        rows[external_id] = (data, metadata, media_uri)
    if not rows:
        return []
    now = timezone.now()
    with transaction.atomic():
        proj = get_or_create_project(project)
        objs = [
            Sample(
                project=proj,
                external_id=eid,
                data=data,
                metadata=metadata,
                media_uri=media_uri,
                created_at=now,
                updated_at=now,
            )
            for eid, (data, metadata, media_uri) in rows.items()
        ]
        Sample.objects.bulk_create(
            objs,
            batch_size=2000,
            update_conflicts=True,
            unique_fields=["project", "external_id"],
            update_fields=["data", "metadata", "media_uri", "updated_at"],
        )
        # bulk_create's returned pks are not reliable on every backend for upserted rows,
        # so read the rows back (one query per 2000 ids).
        ids = list(rows)
        by_id: dict[str, Sample] = {}
        for start in range(0, len(ids), 2000):
            chunk = ids[start : start + 2000]
            for s in Sample.objects.filter(project=proj, external_id__in=chunk):
                by_id[s.external_id] = s
    return [by_id[eid] for eid in ids]
