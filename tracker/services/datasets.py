"""Versioned datasets: immutable versions frozen from samples, splits, reading, diffs, lineage.

A version is built in three steps so that SQLite's write lock is never held for long and a
crash leaves nothing visible: (1) read the samples and freeze them, with their splits and
labels, into a Parquet snapshot stored as a content-addressed blob; (2) create the version in
state ``building`` and write its membership rows chunk by chunk; (3) mark it ``ready``. Every
reader only sees ``ready`` versions; ``building`` ones left by a crash are removed later.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, connection, transaction
from django.db.models import Count, Max, Q
from django.db.models.functions import Collate
from django.db.models.query import QuerySet
from django.utils import timezone

from tracker.exceptions import DatasetNotFound, InvalidValue, RunNotFound
from tracker.models import Dataset, DatasetItem, DatasetVersion, Project, Run, RunInput, Sample
from tracker.services import dataset_build as build
from tracker.services import dataset_files as files
from tracker.services.imports import ANALYZE_AFTER_ROWS, analyze, no_gc, sqlite_bulk
from tracker.services.projects import get_project

logger = logging.getLogger(__name__)

CHUNK = 50_000
MAX_NAME = 200
MAX_SPLIT_NAME = 64
# A version still "building" after this long was left by a crashed process.
STALE_BUILDING = _dt.timedelta(hours=1)


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
            raise InvalidValue(
                f"The fraction of split {name!r} must be a number in (0, 1], not {frac!r}."
            )
        out[name] = float(frac)
    total = sum(out.values())
    if abs(total - 1) > 1e-6:
        raise InvalidValue(
            f"The split fractions add up to {total:g}, not 1 ({out}); adjust them so they sum to 1."
        )
    return out


# --------------------------------------------------------------------------- sample sources


def _as_sample_source(samples: Any) -> QuerySet[Sample] | list[int]:
    """A queryset of Sample as it is, or the sorted primary keys of a list of samples."""
    if isinstance(samples, QuerySet):
        if not issubclass(samples.model, Sample):
            raise InvalidValue(
                f"create_dataset() needs samples: a queryset of Sample, not of "
                f"{samples.model.__name__}. Use Sample.objects.filter(...)."
            )
        return samples
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
    return sorted(set(pks))


def _write_items(version: DatasetVersion, frozen: build.Frozen) -> None:
    """Membership rows, one short transaction per chunk so other writers are not held up."""
    table = DatasetItem._meta.db_table
    cols = "version_id, sample_id, external_id, split, row_hash"
    vid = version.pk
    total = len(frozen.ids)
    with sqlite_bulk():
        for start in range(0, total, CHUNK):
            stop = min(start + CHUNK, total)
            rows = zip(
                [vid] * (stop - start),
                frozen.pks[start:stop],
                frozen.ids[start:stop],
                frozen.splits[start:stop],
                frozen.row_hashes[start:stop],
            )
            with transaction.atomic(), connection.cursor() as cur:
                if connection.vendor == "postgresql":
                    with cur.cursor.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
                else:
                    sql = f"INSERT INTO {table} ({cols}) VALUES (%s, %s, %s, %s, %s)"
                    cur.executemany(sql, list(rows))


def cleanup_stale_versions(
    dataset: Dataset | None = None, older_than: _dt.timedelta = STALE_BUILDING
) -> int:
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


def _progress(source: QuerySet[Sample] | list[int], name: str, enabled: bool | None) -> Any:
    from tqdm.auto import tqdm

    from tracker import conf

    if enabled is False or (enabled is None and not conf.get("PROGRESS")):
        return tqdm(disable=True)
    total = len(source) if isinstance(source, list) else source.count()
    if enabled is None:
        enabled = total >= 100_000
    return tqdm(
        total=total, desc=f"freeze {name}", unit=" samples", disable=not enabled, leave=False
    )


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
    source = _as_sample_source(samples)
    wanted = get_project(project) if project is not None else None
    found: dict[str, Any] = {}

    def previous_for(owner: Project) -> DatasetVersion | None:
        """The latest version of this dataset (once the samples' project is known)."""
        dataset = Dataset.objects.filter(project=owner, name=name).first()
        if dataset is not None:
            cleanup_stale_versions(dataset)
            found["latest"] = _ready_versions().filter(dataset=dataset).order_by("-version").first()
        latest = found.get("latest")
        same = latest is not None and (
            latest.splits == split_spec
            and latest.seed == seed
            and latest.stratify_by == (stratify_by or "")
        )
        return latest if same else None

    bar = _progress(source, name, progress)
    try:
        with no_gc():
            frozen = build.freeze(source, wanted, split_spec, seed, stratify_by, previous_for, bar)
    finally:
        bar.close()
    owner = frozen.project
    if "latest" not in found:
        previous_for(owner)
    latest = found.get("latest")
    if latest is not None and latest.content_hash == frozen.content_hash:
        return version_info(latest)
    path = files.write_parquet(frozen.table)
    try:
        blob = files.store_blob(path)
    finally:
        path.unlink(missing_ok=True)
    version = _allocate(owner, name, frozen, split_spec, seed, stratify_by, description, blob)
    dataset = version.dataset
    try:
        with no_gc():
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
    if len(frozen.ids) >= ANALYZE_AFTER_ROWS:
        analyze(DatasetItem._meta.db_table)
    return get_version(version.pk)


def _allocate(
    project: Project,
    name: str,
    frozen: build.Frozen,
    splits: dict[str, float],
    seed: int,
    stratify_by: str | None,
    description: str,
    blob: Any,
) -> DatasetVersion:
    with transaction.atomic():
        dataset, _ = Dataset.objects.get_or_create(
            project=project, name=name, defaults={"description": description}
        )
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
    """Remove a version that will not be finished; if that fails too, the stale-version
    cleanup removes it later (it is invisible meanwhile)."""
    try:
        with transaction.atomic():
            DatasetItem.objects.filter(version_id=version.pk).delete()
            DatasetVersion.objects.filter(
                pk=version.pk, state=DatasetVersion.State.BUILDING
            ).delete()
            # A dataset whose first version failed is not left behind empty.
            Dataset.objects.filter(pk=version.dataset_id, versions__isnull=True).delete()
    except DatabaseError:
        logger.warning("Could not remove unfinished dataset version %s", version.pk, exc_info=True)


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


def get_dataset(
    name: str, version: int | None = None, project: str | Project | None = None
) -> VersionInfo:
    """Version ``version`` (default: the latest) of dataset ``name``."""
    dataset = _find_dataset(name, project)
    qs = _ready_versions().filter(dataset=dataset)
    if version is None:
        found = qs.order_by("-version").first()
        if found is None:
            raise DatasetNotFound(f"Dataset {name!r} has no finished version yet.")
        return version_info(found)
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidValue(
            f"version must be an integer like 3, or None for the latest, not {version!r}."
        )
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
    columns = [
        "project",
        "name",
        "latest_version",
        "versions",
        "samples",
        "splits",
        "content_hash",
        "created_at",
        "description",
    ]
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
    return pd.DataFrame(
        rows,
        columns=[
            "version",
            "samples",
            "splits",
            "content_hash",
            "runs",
            "created_at",
            "description",
        ],
    )


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

        rows = [
            (i, kind)
            for kind in ("added", "removed", "changed", "moved")
            for i in getattr(self, kind)
        ]
        return pd.DataFrame(rows, columns=["id", "change"])

    def __repr__(self) -> str:
        return (
            f"<DatasetDiff {self.old} -> {self.new}: {len(self.added):,} added, "
            f"{len(self.removed):,} removed, {len(self.changed):,} changed, "
            f"{len(self.moved):,} moved to another split, {self.unchanged:,} unchanged>"
        )


def _items_by_id(version_id: int) -> Iterator[tuple[str, str, str]]:
    """(external_id, row_hash, split) of a version's members in code-point order of the id,
    streamed (the order Python compares strings in; PostgreSQL's "C" collation gives it)."""
    key: Any = "external_id"
    if connection.vendor == "postgresql":
        key = Collate("external_id", "C").asc()
    rows = (
        DatasetItem.objects.filter(version_id=version_id)
        .order_by(key)
        .values_list("external_id", "row_hash", "split")
    )
    return rows.iterator(chunk_size=10_000)


def diff_versions(old_id: int, new_id: int) -> DatasetDiff:
    """Compare two ready versions' membership and row contents (by their stored row hashes).

    Both member lists are streamed in id order and merged, so memory holds the differences,
    not the versions.
    """
    old, new = get_version(old_id), get_version(new_id)
    added: list[str] = []
    removed: list[str] = []
    changed: list[str] = []
    moved: list[str] = []
    same = 0
    a_rows, b_rows = _items_by_id(old.id), _items_by_id(new.id)
    a, b = next(a_rows, None), next(b_rows, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            removed.append(a[0])  # type: ignore[index]
            a = next(a_rows, None)
        elif a is None or b[0] < a[0]:
            added.append(b[0])
            b = next(b_rows, None)
        else:
            if a[1] != b[1]:
                changed.append(a[0])
            if a[2] != b[2]:
                moved.append(a[0])
            if a[1] == b[1] and a[2] == b[2]:
                same += 1
            a, b = next(a_rows, None), next(b_rows, None)
    return DatasetDiff(
        f"{old.name} v{old.version}",
        f"{new.name} v{new.version}",
        added,
        removed,
        changed,
        moved,
        same,
    )


def version_sample_ids(version_id: int) -> Any:
    """A queryset of the samples that are members of a version and still exist."""
    return Sample.objects.filter(dataset_items__version_id=version_id)


# -------------------------------------------------------------------------------- lineage


def _run_model(run: Any) -> Run:
    """The saved Run row for a run handle, a Run, or a run id.

    A run started in this process may not be written yet (its row is written with its first
    metrics); the runs service writes it now, so lineage can point at it.
    """
    from tracker.services import runs

    if isinstance(run, Run) and run.pk is None:
        run = run.uid
    found = runs.resolve(run)
    if found.pk is None:  # pragma: no cover - resolve() writes open runs first
        raise RunNotFound(f"Run {found.uid} is not stored yet; log to it or finish it first.")
    return found


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
        raise InvalidValue(
            f"context must be a short non-empty string like 'train', not {context!r}."
        )
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


def version_runs(version: Any, *, projects: Any = None) -> list[RunInput]:
    """Lineage records (run, context, created_at) of the runs that used a version, oldest
    first; with ``projects`` (ids, or a queryset of them) only runs of those projects."""
    pk = _version_pk(version)
    uses = RunInput.objects.filter(version_id=pk).select_related("run").order_by("created_at", "id")
    if projects is not None:
        uses = uses.filter(run__project__in=projects)
    return list(uses)
