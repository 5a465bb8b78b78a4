"""Versioned datasets: immutable versions frozen from samples, splits, reading, diffs, lineage.

A version is built in three steps so that SQLite's write lock is never held for long and a
crash leaves nothing visible: (1) read the samples and freeze them, with their splits and
labels, into a Parquet snapshot stored as a content-addressed blob; (2) create the version in
state ``building`` and write its membership rows chunk by chunk; (3) mark it ``ready``. Every
reader only sees ``ready`` versions; ``building`` ones left by a crash are removed later.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, Max, Q, TextField
from django.db.models.functions import Cast
from django.db.models.query import QuerySet
from django.utils import timezone

from tracker.exceptions import DatasetNotFound, InvalidValue, RunNotFound
from tracker.models import Dataset, DatasetItem, DatasetVersion, Project, Run, RunInput, Sample
from tracker.services import dataset_files as files
from tracker.services.projects import get_project

CHUNK = 50_000
MAX_NAME = 200
MAX_SPLIT_NAME = 64
# A version still "building" after this long was left by a crashed process.
STALE_BUILDING = _dt.timedelta(hours=1)
RESERVED_COLUMNS = ("id", "split", "metadata", "media", "media_uri")
LABEL_PREFIX = "label."


@dataclass(frozen=True)
class VersionInfo:
    """Everything known about a ready version; plain data, no database access."""

    id: int
    project: str
    name: str
    version: int
    content_hash: str
    description: str
    splits: dict[str, float]
    seed: int
    stratify_by: str
    sample_count: int
    counts: dict[str, int]
    schema: dict[str, Any]
    created_at: _dt.datetime
    snapshot_name: str
    snapshot_sha256: str
    snapshot_size: int

    @property
    def label(self) -> str:
        return f"dataset {self.name!r} v{self.version}"


def version_info(v: DatasetVersion) -> VersionInfo:
    """The plain-data view of a (ready) version; ``v.dataset.project`` should be selected."""
    snap = v.snapshot
    return VersionInfo(
        id=v.pk,
        project=v.dataset.project.name,
        name=v.dataset.name,
        version=v.version,
        content_hash=v.content_hash,
        description=v.description,
        splits=dict(v.splits or {}),
        seed=v.seed,
        stratify_by=v.stratify_by,
        sample_count=v.sample_count,
        counts=dict(v.split_counts or {}),
        schema=dict(v.schema or {}),
        created_at=v.created_at,
        snapshot_name=snap.storage_name if snap else "",
        snapshot_sha256=snap.sha256 if snap else "",
        snapshot_size=snap.size if snap else 0,
    )


def _ready_versions() -> QuerySet[DatasetVersion]:
    return DatasetVersion.objects.filter(state=DatasetVersion.State.READY).select_related(
        "dataset__project", "snapshot"
    )


# ------------------------------------------------------------------------------- validation


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidValue(f"A dataset name must be a non-empty string, not {name!r}.")
    if len(name.strip()) > MAX_NAME:
        raise InvalidValue(f"A dataset name has at most {MAX_NAME} characters; got {len(name)}.")
    return name.strip()


def _check_splits(splits: Any) -> dict[str, float]:
    if splits is None:
        return {}
    if not isinstance(splits, Mapping) or not splits:
        raise InvalidValue(
            f"splits must be a dict of names to fractions like {{'train': 0.8, 'val': 0.1, "
            f"'test': 0.1}}, not {splits!r}."
        )
    out: dict[str, float] = {}
    for name, frac in splits.items():
        if not isinstance(name, str) or not name or len(name) > MAX_SPLIT_NAME:
            raise InvalidValue(
                f"A split name must be a non-empty string of at most {MAX_SPLIT_NAME} "
                f"characters, not {name!r}."
            )
        if (
            isinstance(frac, bool)
            or not isinstance(frac, (int, float))
            or not math.isfinite(frac)
            or not 0 < frac <= 1
        ):
            raise InvalidValue(f"The fraction of split {name!r} must be a number in (0, 1], not {frac!r}.")
        out[name] = float(frac)
    total = sum(out.values())
    if abs(total - 1) > 1e-6:
        raise InvalidValue(
            f"The split fractions add up to {total:g}, not 1 ({out}); adjust them so they sum to 1."
        )
    return out


# ------------------------------------------------------------------------------ split rules


def unit_hash(seed: int, external_id: str) -> float:
    """A number in [0, 1) fixed by (seed, sample id): the sample's place in the split ranges."""
    digest = hashlib.blake2b(f"{seed}\x00{external_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


class _Splitter:
    """Assigns splits from a hash of (seed, sample id), so a sample keeps its split whatever
    else is added or removed. Ranges are laid out in sorted name order, so the order of the
    ``splits`` dict does not matter."""

    def __init__(self, splits: Mapping[str, float], seed: int) -> None:
        self.names = sorted(splits)
        self.fractions = [splits[n] for n in self.names]
        self.seed = seed
        edges, acc = [], 0.0
        for f in self.fractions[:-1]:
            acc += f
            edges.append(acc)
        self.edges = edges

    def plain(self, ids: list[str]) -> list[str]:
        names, edges, seed = self.names, self.edges, self.seed
        return [names[bisect.bisect_right(edges, unit_hash(seed, eid))] for eid in ids]

    def stratified(self, ids: list[str], strata: list[Any], previous: Mapping[str, str]) -> list[str]:
        """Per stratum, samples already in the previous version keep their split; new ones go,
        in hash order, to the split furthest below its share of that stratum."""
        out: list[str | None] = [None] * len(ids)
        groups: dict[Any, list[int]] = {}
        for i, key in enumerate(strata):
            groups.setdefault(key, []).append(i)
        names, fractions, seed = self.names, self.fractions, self.seed
        for members in groups.values():
            counts = Counter()
            fresh = []
            for i in members:
                old = previous.get(ids[i])
                if old in names:
                    out[i] = old
                    counts[old] += 1
                else:
                    fresh.append(i)
            fresh.sort(key=lambda i: unit_hash(seed, ids[i]))
            assigned = sum(counts.values())
            for i in fresh:
                assigned += 1
                best = max(
                    range(len(names)), key=lambda k: (fractions[k] * assigned - counts[names[k]], -k)
                )
                out[i] = names[best]
                counts[names[best]] += 1
        return out  # type: ignore[return-value]


# --------------------------------------------------------------------------- sample sources


def _sample_chunks(samples: Any) -> Iterator[list[tuple]]:
    """Rows (pk, external_id, data text, metadata text, media, media_uri) in chunks.

    A queryset is read with one statement (one consistent snapshot of the rows); a list of
    samples is read by primary key in batches.
    """
    fields = ("pk", "external_id", "data_text", "meta_text", "media", "media_uri")
    # Read JSON as its text: no json.loads per row, and the text is what the row hash covers.
    base = Sample.objects.annotate(
        data_text=Cast("data", TextField()), meta_text=Cast("metadata", TextField())
    ).order_by()
    if isinstance(samples, QuerySet):
        if samples.query.combinator:
            pks = list(samples.values_list("pk", flat=True))
        else:
            qs = base.filter(pk__in=samples.values("pk")).values_list(*fields)
            chunk: list[tuple] = []
            for row in qs.iterator(chunk_size=5000):
                chunk.append(row)
                if len(chunk) >= CHUNK:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk
            return
    else:
        pks = samples
    step = 900 if connection.vendor == "sqlite" else 10_000
    chunk = []
    for start in range(0, len(pks), step):
        chunk.extend(base.filter(pk__in=pks[start : start + step]).values_list(*fields))
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _as_sample_source(samples: Any) -> tuple[Any, Any]:
    """(what _sample_chunks reads, a queryset of the samples for project checks)."""
    if isinstance(samples, QuerySet):
        if not issubclass(samples.model, Sample):
            raise InvalidValue(
                f"create_dataset() needs samples: a queryset of Sample, not of "
                f"{samples.model.__name__}. Use Sample.objects.filter(...)."
            )
        return samples, samples
    if isinstance(samples, Sample):
        samples = [samples]
    if isinstance(samples, (str, bytes, Mapping)) or not isinstance(samples, Iterable):
        raise InvalidValue(
            f"create_dataset() takes a queryset of Sample or a list of Sample objects, not "
            f"{type(samples).__name__}. For rows that are not samples yet, import them first "
            f"with tracker.import_samples()."
        )
    pks = []
    for i, s in enumerate(samples):
        if not isinstance(s, Sample):
            raise InvalidValue(
                f"Item {i} of samples is a {type(s).__name__}, not a Sample; pass Sample "
                f"objects (for example from Sample.objects.filter(...))."
            )
        if s.pk is None:
            raise InvalidValue(f"Sample {s.external_id!r} (item {i}) is not saved; save it first.")
        pks.append(s.pk)
    return sorted(set(pks)), None


def _project_of(samples: Any, qs: Any, project: Any) -> Project:
    if isinstance(samples, list):
        step = 900
        ids: set[int] = set()
        for start in range(0, len(samples), step):
            ids.update(
                Sample.objects.filter(pk__in=samples[start : start + step])
                .values_list("project_id", flat=True)
                .distinct()
            )
    else:
        ids = set(
            Sample.objects.filter(pk__in=qs.values("pk")).order_by().values_list("project_id", flat=True).distinct()
        )
    if not ids:
        raise InvalidValue(
            "The samples given are empty (the queryset matched nothing), so there is nothing "
            "to version. Check the filter, or import samples first with tracker.import_samples()."
        )
    if len(ids) > 1:
        names = sorted(Project.objects.filter(pk__in=ids).values_list("name", flat=True))
        raise InvalidValue(
            f"The samples come from {len(ids)} projects ({', '.join(names)}); a dataset holds "
            f"samples of one project. Filter the queryset to one project."
        )
    owner = Project.objects.get(pk=ids.pop())
    if project is not None:
        wanted = get_project(project)
        if wanted.pk != owner.pk:
            raise InvalidValue(
                f"The samples belong to project {owner.name!r}, not {wanted.name!r}; pass "
                f"project={owner.name!r} or leave project out."
            )
    return owner


# -------------------------------------------------------------------------------- labels


def _labels_for(project: Project, pks: list[int]) -> dict[int, dict[str, Any]] | None:
    """Final labels per sample from the annotation module, or None when it is not available."""
    try:
        from tracker.services.labeling import resolved_labels
    except ImportError as exc:
        if exc.name not in ("tracker.services.labeling", None):
            raise  # a real error inside the labeling module must not be hidden
        return None
    return resolved_labels(project, pks) or {}


# ------------------------------------------------------------------------------ the build


@dataclass
class _Frozen:
    table: Any  # Arrow table: id, split?, data fields..., sorted by id
    pks: list[int]
    ids: list[str]
    splits: list[str]
    row_hashes: list[str]
    content_hash: str
    schema: dict[str, Any]
    counts: dict[str, int] = field(default_factory=dict)


def _build(
    samples: Any,
    project: Project,
    splits: dict[str, float],
    seed: int,
    stratify_by: str | None,
    previous: DatasetVersion | None,
    progress: Any,
) -> _Frozen:
    import pyarrow as pa

    pks: list[int] = []
    ids: list[str] = []
    hashes: list[str] = []
    data_tables = []
    meta: list[Any] = []
    media: list[str | None] = []
    uris: list[str | None] = []
    labels: list[dict[str, Any]] = []
    labels_known = True
    for chunk in _sample_chunks(samples):
        chunk_pks = [r[0] for r in chunk]
        found = _labels_for(project, chunk_pks)
        if found is None:
            labels_known = False
            found = {}
        for pk, eid, data, mtext, mfile, muri in chunk:
            lab = found.get(pk) or {}
            ltext = json.dumps(lab, sort_keys=True, default=str) if lab else ""
            h = hashlib.blake2b(digest_size=16)
            h.update("\x1e".join((data, mtext, mfile, muri, ltext)).encode())
            hashes.append(h.hexdigest())
            pks.append(pk)
            ids.append(eid)
            meta.append(mtext if mtext not in ("{}", "") else None)
            media.append(mfile or None)
            uris.append(muri or None)
            labels.append(lab)
        data_tables.append(files.json_texts_table([r[2] for r in chunk]))
        progress.update(len(chunk))
    data = files.concat(data_tables)
    del data_tables
    n = len(ids)

    columns: dict[str, Any] = {"id": pa.array(ids, pa.string())}
    renamed = {}
    label_table = None
    if any(labels):
        label_table = files.records_table(labels, prefix=LABEL_PREFIX)
    taken = set(RESERVED_COLUMNS) | set(label_table.column_names if label_table is not None else ())
    data_cols = {}
    for name, col in zip(data.column_names, data.columns):
        out = name
        if name in taken or name.startswith(LABEL_PREFIX):
            out = f"data.{name}"
            renamed[name] = out
        data_cols[out] = col
    strata = None
    if stratify_by:
        strata = _strata(stratify_by, data, label_table, n)
    split_names: list[str] = [""] * n
    if splits:
        splitter = _Splitter(splits, seed)
        if strata is None:
            split_names = splitter.plain(ids)
        else:
            split_names = splitter.stratified(ids, strata, _previous_splits(previous))
        columns["split"] = pa.array(split_names, pa.string())
    columns.update(data_cols)
    if any(m is not None for m in meta):
        columns["metadata"] = files.values_array([None if m is None else json.loads(m) for m in meta])
    if any(media):
        columns["media"] = pa.array(media, pa.string())
    if any(uris):
        columns["media_uri"] = pa.array(uris, pa.string())
    if label_table is not None:
        for name, col in zip(label_table.column_names, label_table.columns):
            columns[name] = col
    table = pa.table(columns) if n else pa.table({"id": pa.array([], pa.string())})
    order = _sort_order(table)
    table = table.take(order)
    order_list = order.to_pylist()
    pks = [pks[i] for i in order_list]
    ids = [ids[i] for i in order_list]
    split_names = [split_names[i] for i in order_list]
    hashes = [hashes[i] for i in order_list]

    digest = hashlib.sha256()
    digest.update(json.dumps({"splits": splits, "seed": seed, "stratify_by": stratify_by or ""}, sort_keys=True).encode())
    for start in range(0, n, CHUNK):
        digest.update(
            "".join(
                f"{eid}\t{sp}\t{rh}\n"
                for eid, sp, rh in zip(ids[start : start + CHUNK], split_names[start : start + CHUNK], hashes[start : start + CHUNK])
            ).encode()
        )
    schema = {
        "columns": [{"name": f.name, "type": str(f.type)} for f in table.schema],
        "renamed": renamed,
        "labels": sorted(c[len(LABEL_PREFIX):] for c in table.column_names if c.startswith(LABEL_PREFIX)),
        "labels_frozen": labels_known,
    }
    counts = dict(sorted(Counter(split_names).items())) if splits else {}
    return _Frozen(table, pks, ids, split_names, hashes, digest.hexdigest(), schema, counts)


def _sort_order(table: Any) -> Any:
    import pyarrow.compute as pc

    return pc.sort_indices(table.column("id"))


def _strata(stratify_by: str, data: Any, labels: Any, n: int) -> list[Any]:
    col = None
    names = [stratify_by]
    if not stratify_by.startswith(LABEL_PREFIX):
        names.append(LABEL_PREFIX + stratify_by)
    if labels is not None:
        for name in names:
            if name in labels.column_names:
                col = labels.column(name)
                break
    if col is None and stratify_by in data.column_names:
        col = data.column(stratify_by)
    if col is None:
        fields = ", ".join(map(repr, data.column_names[:20])) or "none"
        tasks = ", ".join(c[len(LABEL_PREFIX):] for c in (labels.column_names if labels is not None else [])) or "none"
        raise InvalidValue(
            f"stratify_by={stratify_by!r} is neither a data field nor a labelled task of these "
            f"samples (data fields: {fields}; tasks with labels: {tasks})."
        )
    values = col.to_pylist()
    return [v if isinstance(v, (str, int, float, bool, type(None))) else json.dumps(v, sort_keys=True) for v in values]


def _previous_splits(previous: DatasetVersion | None) -> dict[str, str]:
    if previous is None:
        return {}
    return dict(DatasetItem.objects.filter(version=previous).values_list("external_id", "split").iterator(chunk_size=CHUNK))


def _write_items(version: DatasetVersion, frozen: _Frozen) -> None:
    """Membership rows, one short transaction per chunk so other writers are not held up."""
    table = DatasetItem._meta.db_table
    cols = ("version_id", "sample_id", "external_id", "split", "row_hash")
    vid = version.pk
    for start in range(0, len(frozen.ids), CHUNK):
        stop = start + CHUNK
        rows = zip(
            [vid] * (min(stop, len(frozen.ids)) - start),
            frozen.pks[start:stop],
            frozen.ids[start:stop],
            frozen.splits[start:stop],
            frozen.row_hashes[start:stop],
        )
        with transaction.atomic(), connection.cursor() as cur:
            if connection.vendor == "postgresql":
                with cur.cursor.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                marks = ", ".join(["%s"] * len(cols))
                cur.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})", list(rows))


def cleanup_stale_versions(dataset: Dataset | None = None, older_than: _dt.timedelta = STALE_BUILDING) -> int:
    """Delete versions left in state ``building`` by a crashed process; returns how many."""
    qs = DatasetVersion.objects.filter(
        state=DatasetVersion.State.BUILDING, created_at__lt=timezone.now() - older_than
    )
    if dataset is not None:
        qs = qs.filter(dataset=dataset)
    n = 0
    for v in qs:
        with transaction.atomic():
            DatasetItem.objects.filter(version=v).delete()
            v.delete()
        n += 1
    return n


def _progress(total: int | None, name: str, enabled: bool | None) -> Any:
    from tqdm.auto import tqdm

    from tracker import conf

    if enabled is None:
        enabled = bool(conf.get("PROGRESS")) and (total is None or total >= 100_000)
    return tqdm(total=total, desc=f"freeze {name}", unit=" samples", disable=not enabled, leave=False)


def create_dataset(
    name: str,
    samples: Any,
    project: str | Project | None = None,
    splits: Mapping[str, float] | None = None,
    seed: int = 0,
    stratify_by: str | None = None,
    description: str = "",
    *,
    progress: bool | None = None,
) -> VersionInfo:
    """Freeze ``samples`` as the next version of dataset ``name``; see :func:`tracker.create_dataset`."""
    name = _check_name(name)
    split_spec = _check_splits(splits)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidValue(f"seed must be an integer, not {seed!r}.")
    if stratify_by is not None:
        if not isinstance(stratify_by, str) or not stratify_by:
            raise InvalidValue(f"stratify_by must be a field or task name, not {stratify_by!r}.")
        if not split_spec:
            raise InvalidValue("stratify_by needs splits: pass splits={'train': 0.8, ...} as well.")
    if not isinstance(description, str):
        raise InvalidValue(f"description must be a string, not {type(description).__name__}.")
    source, qs = _as_sample_source(samples)
    owner = _project_of(source, qs, project)
    dataset, _ = Dataset.objects.get_or_create(project=owner, name=name)
    cleanup_stale_versions(dataset)
    latest = _ready_versions().filter(dataset=dataset).order_by("-version").first()
    config_same = latest is not None and (
        latest.splits == split_spec and latest.seed == seed and latest.stratify_by == (stratify_by or "")
    )
    total = len(source) if isinstance(source, list) else source.count()
    bar = _progress(total, name, progress)
    try:
        frozen = _build(
            source, owner, split_spec, seed, stratify_by, latest if config_same else None, bar
        )
    finally:
        bar.close()
    if latest is not None and latest.content_hash == frozen.content_hash:
        return version_info(latest)
    path = files.write_parquet(frozen.table)
    try:
        blob = files.store_blob(path)
    finally:
        path.unlink(missing_ok=True)
    version = _allocate(dataset, frozen, split_spec, seed, stratify_by, description, blob)
    try:
        _write_items(version, frozen)
        with transaction.atomic():
            newest = (
                DatasetVersion.objects.select_for_update()
                .filter(dataset=dataset, state=DatasetVersion.State.READY)
                .order_by("-version")
                .first()
            )
            if newest is not None and newest.content_hash == frozen.content_hash:
                # An identical version was finished by someone else meanwhile: use theirs.
                _discard(version)
                return get_version(newest.pk)
            DatasetVersion.objects.filter(pk=version.pk).update(state=DatasetVersion.State.READY)
    except BaseException:
        _discard(version)
        raise
    return get_version(version.pk)


def _allocate(
    dataset: Dataset,
    frozen: _Frozen,
    splits: dict[str, float],
    seed: int,
    stratify_by: str | None,
    description: str,
    blob: Any,
) -> DatasetVersion:
    with transaction.atomic():
        # Serialises concurrent creators of the same dataset (SQLite serialises all writers).
        Dataset.objects.select_for_update().filter(pk=dataset.pk).first()
        top = DatasetVersion.objects.filter(dataset=dataset).aggregate(m=Max("version"))["m"] or 0
        return DatasetVersion.objects.create(
            dataset=dataset,
            version=top + 1,
            state=DatasetVersion.State.BUILDING,
            content_hash=frozen.content_hash,
            description=description,
            splits=splits,
            seed=seed,
            stratify_by=stratify_by or "",
            sample_count=len(frozen.ids),
            split_counts=frozen.counts,
            schema=frozen.schema,
            snapshot=blob,
        )


def _discard(version: DatasetVersion) -> None:
    try:
        with transaction.atomic():
            DatasetItem.objects.filter(version_id=version.pk).delete()
            DatasetVersion.objects.filter(pk=version.pk, state=DatasetVersion.State.BUILDING).delete()
    except Exception:  # pragma: no cover - cleanup_stale_versions removes it later
        pass


# -------------------------------------------------------------------------------- reading


def get_version(pk: int) -> VersionInfo:
    try:
        return version_info(_ready_versions().get(pk=pk))
    except DatasetVersion.DoesNotExist:
        raise DatasetNotFound(f"There is no ready dataset version with id {pk}.") from None


def _find_dataset(name: str, project: str | Project | None) -> Dataset:
    name = _check_name(name)
    qs = Dataset.objects.select_related("project").filter(name=name)
    if project is not None:
        proj = get_project(project)
        qs = qs.filter(project=proj)
    found = list(qs[:2])
    if not found:
        others = Dataset.objects.order_by("name")
        if project is not None:
            others = others.filter(project=proj)
        known = list(others.values_list("name", flat=True).distinct()[:10])
        where = f" in project {proj.name!r}" if project is not None else ""
        raise DatasetNotFound(
            f"There is no dataset named {name!r}{where}. Known datasets: "
            f"{', '.join(known) if known else 'none yet'}; create one with "
            f"tracker.create_dataset({name!r}, Sample.objects.filter(...))."
        )
    if len(found) > 1:
        projects = sorted(Dataset.objects.filter(name=name).values_list("project__name", flat=True))
        raise InvalidValue(
            f"Datasets named {name!r} exist in several projects ({', '.join(projects)}); pass "
            f"project= to choose one."
        )
    return found[0]


def get_dataset(name: str, version: int | None = None, project: str | Project | None = None) -> VersionInfo:
    """Version ``version`` (default: the latest) of dataset ``name``."""
    dataset = _find_dataset(name, project)
    qs = _ready_versions().filter(dataset=dataset)
    if version is None:
        found = qs.order_by("-version").first()
        if found is None:
            raise DatasetNotFound(f"Dataset {name!r} has no finished version yet.")
        return version_info(found)
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidValue(f"version must be an integer like 3, or None for the latest, not {version!r}.")
    found = qs.filter(version=version).first()
    if found is None:
        have = list(qs.order_by("version").values_list("version", flat=True))
        shown = ", ".join(f"v{v}" for v in have) or "none"
        raise DatasetNotFound(f"Dataset {name!r} has no version {version}; it has {shown}.")
    return version_info(found)


def list_datasets(project: str | Project | None = None) -> Any:
    """One row per dataset with its latest ready version, as a DataFrame."""
    import pandas as pd

    qs = Dataset.objects.select_related("project").annotate(
        n_versions=Count("versions", filter=Q(versions__state=DatasetVersion.State.READY)),
        latest=Max("versions__version", filter=Q(versions__state=DatasetVersion.State.READY)),
    )
    if project is not None:
        qs = qs.filter(project=get_project(project))
    rows = []
    datasets = list(qs.order_by("project__name", "name"))
    latest = {
        (v.dataset_id, v.version): v
        for v in DatasetVersion.objects.filter(
            state=DatasetVersion.State.READY,
            dataset__in=[d.pk for d in datasets],
            version__in={d.latest for d in datasets if d.latest},
        )
    }
    for d in datasets:
        v = latest.get((d.pk, d.latest))
        rows.append(
            {
                "project": d.project.name,
                "name": d.name,
                "latest_version": d.latest,
                "versions": d.n_versions,
                "samples": v.sample_count if v else 0,
                "splits": dict(v.split_counts) if v else {},
                "content_hash": v.content_hash if v else "",
                "created_at": v.created_at if v else d.created_at,
                "description": (v.description if v and v.description else d.description),
            }
        )
    columns = ["project", "name", "latest_version", "versions", "samples", "splits", "content_hash", "created_at", "description"]
    return pd.DataFrame(rows, columns=columns)


def list_versions(name: str, project: str | Project | None = None) -> Any:
    """Every ready version of dataset ``name``, oldest first, as a DataFrame."""
    import pandas as pd

    dataset = _find_dataset(name, project)
    qs = (
        DatasetVersion.objects.filter(dataset=dataset, state=DatasetVersion.State.READY)
        .annotate(runs=Count("run_inputs__run", distinct=True))
        .order_by("version")
    )
    rows = [
        {
            "version": v.version,
            "samples": v.sample_count,
            "splits": dict(v.split_counts),
            "content_hash": v.content_hash,
            "runs": v.runs,
            "created_at": v.created_at,
            "description": v.description,
        }
        for v in qs
    ]
    return pd.DataFrame(rows, columns=["version", "samples", "splits", "content_hash", "runs", "created_at", "description"])


@dataclass(frozen=True)
class DatasetDiff:
    """What changed from version ``old`` to version ``new``, by sample id.

    ``changed`` holds samples in both whose data, metadata, media or labels differ; ``moved``
    those whose split differs (a sample can be in both lists).
    """

    old: str
    new: str
    added: list[str]
    removed: list[str]
    changed: list[str]
    moved: list[str]
    unchanged: int

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed or self.moved)

    def to_pandas(self) -> Any:
        """One row per differing sample: id and change (added, removed, changed, moved)."""
        import pandas as pd

        rows = [(i, kind) for kind in ("added", "removed", "changed", "moved") for i in getattr(self, kind)]
        return pd.DataFrame(rows, columns=["id", "change"])

    def __repr__(self) -> str:
        return (
            f"<DatasetDiff {self.old} -> {self.new}: {len(self.added):,} added, "
            f"{len(self.removed):,} removed, {len(self.changed):,} changed, "
            f"{len(self.moved):,} moved to another split, {self.unchanged:,} unchanged>"
        )


def diff_versions(old_id: int, new_id: int) -> DatasetDiff:
    """Compare two ready versions' membership and row contents (by their stored row hashes)."""
    old, new = get_version(old_id), get_version(new_id)

    def items(pk: int) -> dict[str, tuple[str, str]]:
        rows = DatasetItem.objects.filter(version_id=pk).values_list("external_id", "row_hash", "split")
        return {eid: (rh, sp) for eid, rh, sp in rows.iterator(chunk_size=CHUNK)}

    a, b = items(old.id), items(new.id)
    added = sorted(set(b) - set(a))
    removed = sorted(set(a) - set(b))
    changed, moved, same = [], [], 0
    for eid in sorted(set(a) & set(b)):
        (ha, sa), (hb, sb) = a[eid], b[eid]
        if ha != hb:
            changed.append(eid)
        if sa != sb:
            moved.append(eid)
        if ha == hb and sa == sb:
            same += 1
    label = lambda v: f"{v.name} v{v.version}"  # noqa: E731
    return DatasetDiff(label(old), label(new), added, removed, changed, moved, same)


def version_sample_ids(version_id: int) -> Any:
    """A queryset of the samples that are members of a version and still exist."""
    return Sample.objects.filter(dataset_items__version_id=version_id)


# -------------------------------------------------------------------------------- lineage


def _run_model(run: Any) -> Run:
    if isinstance(run, Run):
        return run
    if isinstance(run, str):
        found = Run.objects.filter(uid=run).first()
        if found is None:
            raise RunNotFound(f"There is no run with id {run!r}.")
        return found
    for attr in ("model", "_model", "run"):
        inner = getattr(run, attr, None)
        if isinstance(inner, Run):
            return inner
    uid = getattr(run, "uid", None) or getattr(run, "id", None)
    if isinstance(uid, str):
        return _run_model(uid)
    raise InvalidValue(f"Expected a run (a Run or its id), not {type(run).__name__}.")


def _version_pk(version: Any) -> int:
    if isinstance(version, DatasetVersion):
        return version.pk
    if isinstance(version, VersionInfo):
        return version.id
    info = getattr(version, "info", None)
    if isinstance(info, VersionInfo):
        return info.id
    if isinstance(version, int) and not isinstance(version, bool):
        return version
    raise InvalidValue(
        f"Expected a dataset version (from tracker.get_dataset or create_dataset), not "
        f"{type(version).__name__}."
    )


def use_dataset(run: Any, version: Any, context: str = "train") -> RunInput:
    """Record that ``run`` used ``version`` in ``context`` ("train", "eval", ...); idempotent."""
    if not isinstance(context, str) or not context.strip() or len(context) > 64:
        raise InvalidValue(f"context must be a short non-empty string like 'train', not {context!r}.")
    run_obj = _run_model(run)
    pk = _version_pk(version)
    if not DatasetVersion.objects.filter(pk=pk, state=DatasetVersion.State.READY).exists():
        raise DatasetNotFound(f"There is no ready dataset version with id {pk}.")
    obj, _ = RunInput.objects.get_or_create(run=run_obj, version_id=pk, context=context.strip())
    return obj


def run_inputs(run: Any) -> list[tuple[VersionInfo, str]]:
    """The dataset versions a run used, with the context of each use, oldest use first."""
    run_obj = _run_model(run)
    uses = (
        RunInput.objects.filter(run=run_obj)
        .select_related("version__dataset__project", "version__snapshot")
        .order_by("created_at", "id")
    )
    return [(version_info(u.version), u.context) for u in uses]


def run_inputs_summary(run_ids: Iterable[int]) -> dict[int, list[str]]:
    """For a runs table: run pk -> ["name:v3 (train)", ...]."""
    out: dict[int, list[str]] = {}
    rows = (
        RunInput.objects.filter(run_id__in=list(run_ids))
        .order_by("created_at", "id")
        .values_list("run_id", "version__dataset__name", "version__version", "context")
    )
    for run_id, name, number, context in rows:
        out.setdefault(run_id, []).append(f"{name}:v{number} ({context})")
    return out


def version_runs(version: Any) -> list[RunInput]:
    """Lineage records (run, context, created_at) of the runs that used a version."""
    pk = _version_pk(version)
    return list(
        RunInput.objects.filter(version_id=pk).select_related("run").order_by("created_at", "id")
    )
