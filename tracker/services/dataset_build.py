"""Freezing samples into a version's table: reading them in bulk, their final labels, split
assignment by hash, row hashes and the content hash."""

from __future__ import annotations

import bisect
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.db import connection
from django.db.models import TextField
from django.db.models.functions import Cast
from django.db.models.query import QuerySet

from tracker.exceptions import InvalidValue
from tracker.models import AnnotationTask, DatasetItem, DatasetVersion, Project, Sample
from tracker.services import dataset_files as files

CHUNK = 50_000
RESERVED_COLUMNS = ("id", "split", "metadata", "media", "media_uri")
LABEL_PREFIX = "label."


# ------------------------------------------------------------------------------ split rules


def unit_hash(seed: int, external_id: str) -> float:
    """A number in [0, 1) fixed by (seed, sample id): the sample's place in the split ranges."""
    digest = hashlib.blake2b(f"{seed}\x00{external_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


class Splitter:
    """Assigns splits from a hash of (seed, sample id), so a sample keeps its split whatever
    else is added or removed. The ranges are laid out in sorted name order, so the order of
    the ``splits`` dict does not matter."""

    def __init__(self, splits: Mapping[str, float], seed: int) -> None:
        self.names = sorted(splits)
        self.fractions = [splits[n] for n in self.names]
        self.seed = seed
        edges, acc = [], 0.0
        for f in self.fractions[:-1]:
            acc += f
            edges.append(acc)
        # The same edges as 8-byte big-endian numbers: comparing digests as bytes then orders
        # them exactly as unit_hash() would, without a float per sample.
        self._edges = [min(int(e * 2**64), 2**64 - 1).to_bytes(8, "big") for e in edges]

    def plain(self, ids: list[str]) -> list[str]:
        names, edges = self.names, self._edges
        prefix = f"{self.seed}\x00".encode()
        blake, right = hashlib.blake2b, bisect.bisect_right
        return [
            names[right(edges, blake(prefix + eid.encode(), digest_size=8).digest())] for eid in ids
        ]

    def stratified(
        self, ids: list[str], strata: list[Any], previous: Mapping[str, str]
    ) -> list[str]:
        """Per stratum, samples of the previous version keep their split; new ones go, in hash
        order, to the split furthest below its share of that stratum."""
        out: list[str] = [""] * len(ids)
        groups: dict[Any, list[int]] = {}
        for i, key in enumerate(strata):
            groups.setdefault(key, []).append(i)
        names, fractions, seed = self.names, self.fractions, self.seed
        for members in groups.values():
            counts: Counter[str] = Counter()
            fresh = []
            for i in members:
                old = previous.get(ids[i])
                if old in names:
                    out[i] = old  # type: ignore[assignment]
                    counts[old] += 1  # type: ignore[index]
                else:
                    fresh.append(i)
            fresh.sort(key=lambda i: unit_hash(seed, ids[i]))
            assigned = sum(counts.values())
            for i in fresh:
                assigned += 1
                best = max(
                    range(len(names)),
                    key=lambda k: (fractions[k] * assigned - counts[names[k]], -k),
                )
                out[i] = names[best]
                counts[names[best]] += 1
        return out


# --------------------------------------------------------------------------- reading samples


FIELDS = ("pk", "external_id", "data_text", "meta_text", "media", "media_uri", "project_id")


def _rows_query(qs: QuerySet) -> QuerySet:
    # JSON is read as its text: no json.loads per row, and the text is what the row hash covers.
    return (
        qs.annotate(data_text=Cast("data", TextField()), meta_text=Cast("metadata", TextField()))
        .order_by()
        .values_list(*FIELDS)
    )


def _plain(qs: QuerySet) -> bool:
    """A filter-only queryset can be read as it is (a subquery makes PostgreSQL's planner
    guess badly right after a bulk import: 3-4x slower)."""
    q = qs.query
    return not (q.is_sliced or q.distinct or q.combinator or q.annotations or q.extra)


def sample_chunks(samples: QuerySet | list[int]) -> Iterator[list[tuple]]:
    """Rows (pk, external_id, data text, metadata text, media, media_uri, project_id) in
    chunks. A queryset that filters across a many-valued relation can repeat a sample; the
    caller drops repeats.

    A queryset is read with one statement, so the rows come from one consistent state of the
    database; a list of primary keys is read in batches.
    """
    if isinstance(samples, QuerySet):
        if samples.query.combinator:  # union() & co cannot be used as a subquery
            samples = list(samples.values_list("pk", flat=True))
        else:
            if not _plain(samples):
                samples = Sample.objects.filter(pk__in=samples.values("pk"))
            sql, params = _rows_query(samples).query.sql_with_params()
            # chunked_cursor: a server-side cursor on PostgreSQL, so 1M rows are not held at once.
            with connection.chunked_cursor() as cur:
                cur.execute(sql, params)
                while rows := cur.fetchmany(CHUNK):
                    yield rows
            return
    step = 900 if connection.vendor == "sqlite" else 10_000
    chunk: list[tuple] = []
    for start in range(0, len(samples), step):
        chunk.extend(_rows_query(Sample.objects.filter(pk__in=samples[start : start + step])))
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def owner_of(project_ids: set[int], wanted: Project | None) -> Project:
    """The one project of the samples read so far (and the one asked for, if given)."""
    if len(project_ids) > 1:
        names = sorted(Project.objects.filter(pk__in=project_ids).values_list("name", flat=True))
        raise InvalidValue(
            f"The samples come from {len(names)} projects ({', '.join(names)}); a dataset holds "
            f"samples of one project. Filter the queryset to one project."
        )
    owner = Project.objects.get(pk=next(iter(project_ids)))
    if wanted is not None and wanted.pk != owner.pk:
        raise InvalidValue(
            f"The samples belong to project {owner.name!r}, not {wanted.name!r}; pass "
            f"project={owner.name!r} or leave project out."
        )
    return owner


def labels_for(project: Project, pks: list[int]) -> dict[int, dict[str, Any]] | None:
    """Final labels per sample from the annotation module, or None when it is not installed."""
    try:
        from tracker.services.labeling import resolved_labels
    except ImportError as exc:
        if exc.name not in ("tracker.services.labeling", None):
            raise  # a real error inside the labeling module must not be hidden
        return None
    return resolved_labels(project, pks) or {}


def has_tasks(project: Project) -> bool:
    """Whether the project has annotation tasks at all (no tasks: no labels to look up)."""
    return AnnotationTask.objects.filter(project=project).exists()


# ---------------------------------------------------------------------------------- freezing


@dataclass
class Frozen:
    """A version's content before it is stored: the table and the membership rows."""

    table: Any  # Arrow: id, split (with splits), data fields, metadata, media, label.<task>
    project: Project
    pks: list[int]
    ids: list[str]
    splits: list[str]
    row_hashes: list[str]
    content_hash: str
    schema: dict[str, Any]
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class _Part:
    pks: list[int]
    ids: list[str]
    hashes: list[str]
    meta: list[str | None]
    media: list[str | None]
    uris: list[str | None]
    labels: list[dict[str, Any]]
    table: Any


def _convert(chunk: list[tuple], found: dict[int, dict[str, Any]]) -> _Part:
    """One chunk of sample rows as columns, row hashes and an Arrow table (no database)."""
    pks, ids, data, meta, media, uris, _ = (list(c) for c in zip(*chunk))
    if found:
        labels = [found.get(pk) or {} for pk in pks]
        texts = [json.dumps(lab, sort_keys=True, default=str) if lab else "" for lab in labels]
    else:
        labels = [{}] * len(pks)
        texts = [""] * len(pks)
    blake = hashlib.blake2b
    hashes = [
        blake("\x1e".join(row).encode(), digest_size=16).hexdigest()
        for row in zip(data, meta, media, uris, texts)
    ]
    return _Part(
        pks,
        ids,
        hashes,
        [None if m in ("{}", "") else m for m in meta],
        [m or None for m in media],
        [u or None for u in uris],
        labels,
        files.json_texts_table(data),
    )


def freeze(
    samples: QuerySet | list[int],
    wanted: Project | None,
    splits: dict[str, float],
    seed: int,
    stratify_by: str | None,
    previous_for: Callable[[Project], DatasetVersion | None],
    progress: Any,
) -> Frozen:
    """Read the samples once and build everything a version stores, sorted by sample id.

    The samples' project is found while reading them (they must share one: ``wanted`` if
    given). ``previous_for(project)`` gives the latest version made with the same splits,
    seed and stratify_by: with stratify_by, its samples keep their split.

    Raises:
        InvalidValue: no samples, samples of several projects, or not of ``wanted``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    pks: list[int] = []
    ids: list[str] = []
    hashes: list[str] = []
    tables = []
    meta: list[str | None] = []
    media: list[str | None] = []
    uris: list[str | None] = []
    labels: list[dict[str, Any]] = []
    labels_known = True

    def collect(part: _Part) -> None:
        pks.extend(part.pks)
        ids.extend(part.ids)
        hashes.extend(part.hashes)
        meta.extend(part.meta)
        media.extend(part.media)
        uris.extend(part.uris)
        labels.extend(part.labels)
        tables.append(part.table)
        progress.update(len(part.pks))

    project: Project | None = None
    tasks = False
    seen: set[int] = set()
    # The database is read here, in the caller's thread (its connection and transaction);
    # a helper thread converts chunk k while chunk k+1 is fetched.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tracker-freeze") as pool:
        pending = None
        for chunk in sample_chunks(samples):
            owners = {r[6] for r in chunk}
            if project is None or owners != {project.pk}:
                project = owner_of(owners | ({project.pk} if project else set()), wanted)
                tasks = has_tasks(project)
            keys = [r[0] for r in chunk]
            if seen.isdisjoint(keys) and len(set(keys)) == len(keys):
                seen.update(keys)
            else:  # a sample repeated by a join over a many-valued relation: keep one
                chunk = _unique(chunk, seen)
            found = labels_for(project, [r[0] for r in chunk]) if tasks else {}
            if found is None:
                labels_known = False
                found = {}
            job = pool.submit(_convert, chunk, found)
            if pending is not None:
                collect(pending.result())
            pending = job
        if pending is not None:
            collect(pending.result())
    if project is None:
        raise InvalidValue(
            "The samples given are empty (the queryset matched nothing), so there is nothing "
            "to version. Check the filter, or import samples first with tracker.import_samples()."
        )
    previous = previous_for(project) if stratify_by else None
    data = files.concat(tables)
    tables.clear()
    n = len(ids)

    label_table = files.records_table(labels, prefix=LABEL_PREFIX) if any(labels) else None
    label_names = sorted(label_table.column_names) if label_table is not None else []
    taken = set(RESERVED_COLUMNS) | set(label_names)
    renamed: dict[str, str] = {}
    columns: dict[str, Any] = {"id": pa.array(ids, pa.string())}
    split_names = [""] * n
    if splits:
        splitter = Splitter(splits, seed)
        if stratify_by:
            strata = _strata(stratify_by, data, label_table)
            split_names = splitter.stratified(ids, strata, _previous_splits(previous))
        else:
            split_names = splitter.plain(ids)
        columns["split"] = pa.array(split_names, pa.string())
    # Fields in name order: PostgreSQL's jsonb does not keep the order keys were written in,
    # and a version must look the same on every database.
    for name in sorted(data.column_names):
        col = data.column(name)
        out = name
        if name in taken or name.startswith(LABEL_PREFIX):
            out = renamed[name] = f"data.{name}"
        columns[out] = col
    if any(m is not None for m in meta):
        columns["metadata"] = files.values_array(
            [None if m is None else json.loads(m) for m in meta]
        )
    if any(media):
        columns["media"] = pa.array(media, pa.string())
    if any(uris):
        columns["media_uri"] = pa.array(uris, pa.string())
    for name in label_names:
        columns[name] = label_table.column(name)  # type: ignore[union-attr]
    table = pa.table(columns)
    order = pc.sort_indices(table.column("id"))
    table = table.take(order)
    order_list = order.to_pylist()
    pks = [pks[i] for i in order_list]
    ids = [ids[i] for i in order_list]
    split_names = [split_names[i] for i in order_list]
    hashes = [hashes[i] for i in order_list]

    digest = hashlib.sha256()
    spec = {"splits": splits, "seed": seed, "stratify_by": stratify_by or ""}
    digest.update(json.dumps(spec, sort_keys=True).encode())
    for start in range(0, n, CHUNK):
        stop = start + CHUNK
        rows = zip(ids[start:stop], split_names[start:stop], hashes[start:stop])
        digest.update("".join(f"{e}\t{s}\t{h}\n" for e, s, h in rows).encode())
    schema = {
        "columns": [{"name": f.name, "type": str(f.type)} for f in table.schema],
        "renamed": renamed,
        "labels": [c[len(LABEL_PREFIX) :] for c in label_names],
        # False when the annotation module was not available: labels could not be frozen.
        "labels_frozen": labels_known,
    }
    counts = dict(sorted(Counter(split_names).items())) if splits else {}
    return Frozen(table, project, pks, ids, split_names, hashes, digest.hexdigest(), schema, counts)


def _unique(chunk: list[tuple], seen: set[int]) -> list[tuple]:
    """The rows of ``chunk`` whose sample is not in ``seen`` (adding them to it), once each."""
    out = []
    for row in chunk:
        if row[0] not in seen:
            seen.add(row[0])
            out.append(row)
    return out


def _strata(stratify_by: str, data: Any, labels: Any) -> list[Any]:
    """The stratum of each row: a label (``label.<task>`` or the task's name) or a data field."""
    col = None
    if labels is not None:
        for name in (stratify_by, LABEL_PREFIX + stratify_by):
            if name in labels.column_names:
                col = labels.column(name)
                break
    if col is None and stratify_by in data.column_names:
        col = data.column(stratify_by)
    if col is None:
        fields = ", ".join(map(repr, data.column_names[:20])) or "none"
        names = labels.column_names if labels is not None else []
        tasks = ", ".join(repr(c[len(LABEL_PREFIX) :]) for c in names) or "none"
        raise InvalidValue(
            f"stratify_by={stratify_by!r} is neither a data field nor a labelled annotation "
            f"task of these samples (data fields: {fields}; tasks with labels: {tasks})."
        )
    scalar = (str, int, float, bool, type(None))
    return [v if isinstance(v, scalar) else json.dumps(v, sort_keys=True) for v in col.to_pylist()]


def _previous_splits(previous: DatasetVersion | None) -> dict[str, str]:
    if previous is None:
        return {}
    rows = DatasetItem.objects.filter(version=previous).values_list("external_id", "split")
    return dict(rows.iterator(chunk_size=CHUNK))
