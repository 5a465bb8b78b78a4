"""Bulk import and versioned datasets (sync).

``create_dataset`` and ``get_dataset`` return a :class:`DatasetVersion`: a frozen, read-only
handle on one version (not the Django model of the same name in ``tracker.models``, which is
the row behind it). ``tracker.aio`` returns :class:`tracker._async.datasets.AsyncDatasetVersion`,
whose methods have the same names and are awaitable.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracker._dispatch import call, entry

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from django.db.models import QuerySet

    from tracker._async.datasets import AsyncDatasetVersion
    from tracker.models import Project, RunInput, Sample
    from tracker.services.datasets import DatasetDiff, VersionInfo
    from tracker.services.imports import ImportReport

__all__ = ["create_dataset", "dataset_versions", "datasets", "get_dataset", "import_samples"]


def _no_io(fn: Any) -> Any:
    """Mark a method that does no I/O, so it stays sync on the async twin too."""
    fn.__tracker_no_io__ = True
    return fn


class _VersionData:
    """Attributes and file reads shared by the sync and async handles (no database access)."""

    def __init__(self, info: VersionInfo) -> None:
        self._info = info

    @property
    def info(self) -> VersionInfo:
        """The plain-data record behind this handle."""
        return self._info

    @property
    def id(self) -> int:
        return self._info.id

    @property
    def project(self) -> str:
        return self._info.project

    @property
    def name(self) -> str:
        return self._info.name

    @property
    def version(self) -> int:
        return self._info.version

    @property
    def content_hash(self) -> str:
        """sha256 of the frozen content (ids, splits, data, metadata, media, labels)."""
        return self._info.content_hash

    @property
    def description(self) -> str:
        return self._info.description

    @property
    def splits(self) -> dict[str, float]:
        """The split fractions, e.g. ``{"train": 0.8, "val": 0.1, "test": 0.1}``; {} if none."""
        return dict(self._info.splits)

    @property
    def counts(self) -> dict[str, int]:
        """Samples per split, e.g. ``{"test": 98, "train": 806, "val": 96}``; {} if no splits."""
        return dict(self._info.counts)

    @property
    def sample_count(self) -> int:
        return self._info.sample_count

    @property
    def seed(self) -> int:
        return self._info.seed

    @property
    def stratify_by(self) -> str:
        return self._info.stratify_by

    @property
    def created_at(self) -> _dt.datetime:
        return self._info.created_at

    @property
    def columns(self) -> list[str]:
        """Column names of the frozen table: id, split (with splits), data fields, labels."""
        return [c["name"] for c in self._info.schema.get("columns", [])]

    @property
    def schema(self) -> dict[str, Any]:
        return dict(self._info.schema)

    def __len__(self) -> int:
        return self._info.sample_count

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _VersionData) and other._info.id == self._info.id

    def __hash__(self) -> int:
        return hash(("dataset-version", self._info.id))

    def __repr__(self) -> str:
        i = self._info
        parts = ", ".join(f"{k} {v:,}" for k, v in i.counts.items())
        splits = f" ({parts})" if parts else ""
        return (
            f"<{type(self).__name__} {i.name!r} v{i.version}: {i.sample_count:,} samples{splits}, "
            f"content {i.content_hash[:12]}>"
        )

    def _snapshot_path(self) -> str:
        from tracker.services import dataset_files as files

        i = self._info
        return files.local_path(i.snapshot_name, i.snapshot_sha256, i.label)

    def _splits(self) -> list[str]:
        return sorted(self._info.splits)

    def _to_arrow(self, split: str | None = None, columns: list[str] | None = None) -> pa.Table:
        from tracker.services import dataset_files as files

        return files.read_table(self._snapshot_path(), split, self._splits(), columns)

    def _to_pandas(
        self, split: str | None = None, columns: list[str] | None = None
    ) -> pd.DataFrame:
        return self._to_arrow(split, columns).to_pandas()

    def _iter_batches(
        self, batch_size: int = 10_000, split: str | None = None, columns: list[str] | None = None
    ) -> Iterator[pd.DataFrame]:
        from tracker.services import dataset_files as files

        batches = files.iter_batches(
            self._snapshot_path(), batch_size, split, self._splits(), columns
        )
        for batch in batches:
            yield batch.to_pandas()

    def _export(
        self,
        path: str | os.PathLike[str],
        format: str | None = None,
        split: str | None = None,
        progress: bool | None = None,
    ) -> Path:
        from tracker.services import dataset_files as files

        i = self._info
        rows = i.counts.get(split, 0) if split is not None else i.sample_count
        bar = files.progress_bar(rows, f"export {i.label}", progress)
        try:
            return files.export(
                self._snapshot_path(), path, format, split, self._splits(), progress=bar.update
            )
        finally:
            bar.close()


class DatasetVersion(_VersionData):
    """One frozen version of a dataset: read it, compare it, see which runs used it.

    Reading (``to_pandas``, ``to_arrow``, ``iter_batches``, ``export``) streams the version's
    Parquet snapshot and never touches the samples table, so it returns the same rows however
    the samples were edited or deleted since.
    """

    def snapshot_path(self) -> str:
        """Path of a local Parquet file holding this version (the storage's own file, or a
        copy downloaded and checked once when the storage is remote).

        Raises:
            StorageError: the snapshot is missing or damaged in storage.
        """
        return self._snapshot_path()

    def to_pandas(self, split: str | None = None, columns: list[str] | None = None) -> pd.DataFrame:
        """The version (or one split of it) as a DataFrame: id, split, data fields, labels.

        Args:
            split: a split name ("train"); None for every row.
            columns: only these columns.

        Raises:
            InvalidValue: an unknown split, or split given for a version without splits.
            StorageError: the snapshot file is missing or damaged in storage.
        """
        return self._to_pandas(split, columns)

    def to_arrow(self, split: str | None = None, columns: list[str] | None = None) -> pa.Table:
        """The version (or one split) as a ``pyarrow.Table``; arguments as in :meth:`to_pandas`."""
        return self._to_arrow(split, columns)

    def iter_batches(
        self, batch_size: int = 10_000, split: str | None = None, columns: list[str] | None = None
    ) -> Iterator[pd.DataFrame]:
        """DataFrames of ``batch_size`` rows (the last may be shorter), read one row group at a
        time so memory stays bounded for any size of version.

        Raises:
            InvalidValue: batch_size is not a positive integer, or an unknown split.
        """
        return self._iter_batches(batch_size, split, columns)

    def export(
        self,
        path: str | os.PathLike[str],
        format: str | None = None,
        split: str | None = None,
        *,
        progress: bool | None = None,
    ) -> Path:
        """Write the version (or one split) to ``path`` as Parquet, JSONL or CSV, streaming.

        Args:
            path: the file to write; its extension picks the format unless ``format`` is given.
            format: "parquet", "jsonl" or "csv".
            split: only this split.
            progress: show a progress bar; None shows one for large exports.

        Returns:
            The path written. The file appears whole or not at all.

        Raises:
            InvalidValue: unknown format or split.
        """
        return self._export(path, format, split, progress)

    def diff(self, other: DatasetVersion | AsyncDatasetVersion) -> DatasetDiff:
        """What changed from this version to ``other``: samples added, removed, changed
        (data, metadata, media or labels) and moved to another split.

        ``v1.diff(v2).added`` are the samples v2 has and v1 has not.
        """
        return call("DatasetVersion.diff", _diff, self, other)

    def runs(self) -> list[RunInput]:
        """The runs that used this version: lineage records with ``.run``, ``.context`` and
        ``.created_at``, oldest first."""
        return call("DatasetVersion.runs", _runs, self)

    @_no_io
    def samples(self) -> QuerySet[Sample]:
        """A queryset of this version's samples as they are now in the database (edited ones
        show their new data; deleted ones are absent). Lazy: no query runs until it is used."""
        from tracker.services import datasets as core

        return core.version_sample_ids(self._info.id)


def _diff(version: _VersionData, other: Any) -> DatasetDiff:
    from tracker.exceptions import InvalidValue
    from tracker.services import datasets as core

    if not isinstance(other, _VersionData):
        raise InvalidValue(
            f"diff() compares two dataset versions; got a {type(other).__name__}. Use "
            f"tracker.get_dataset(name, version=N) to get the other one."
        )
    return core.diff_versions(version.id, other.id)


def _runs(version: _VersionData) -> list[RunInput]:
    from tracker.services import datasets as core

    return core.version_runs(version.id)


@entry
def import_samples(
    project: str | Project,
    source: Any,
    id_field: str | None = None,
    on_error: str = "raise",
    *,
    media_field: str | None = None,
    store_media: bool = True,
    format: str | None = None,
    progress: bool | None = None,
) -> ImportReport:
    """Import samples in bulk; re-importing an id updates that sample instead of adding another.

    Args:
        project: project name (created on first use) or a ``Project``.
        source: a pandas DataFrame, a pyarrow Table, a list of dicts, or the path of a
            ``.csv``, ``.jsonl`` or ``.parquet`` file.
        id_field: the column holding each sample's id. None: the ``id`` column if there is
            one (then every row needs an id), else an id derived from the row's content, so
            re-importing identical rows changes nothing.
        on_error: "raise": any bad row stops the import and nothing of it is stored;
            "skip": the good rows are stored and the report lists the bad ones.
        media_field: a column of media file paths (relative to the file being imported, or to
            the working directory) or URIs.
        store_media: True: copy local media files into Django's storage (named by their
            content); False: only keep the path or URI as ``media_uri``.
        format: "csv", "jsonl" or "parquet" when the file name does not say.
        progress: show a progress bar; None shows one for large imports.

    A ``metadata`` column (dicts, or JSON objects in CSV) becomes the sample's metadata and a
    ``media_uri`` column its media reference; every other column is data. NaN and empty CSV
    fields are stored as null, dates as ISO 8601 strings. Sample data is replaced as a whole.

    Returns:
        An :class:`~tracker.services.imports.ImportReport`: created / updated / unchanged
        counts, and every bad row with its row (or line) number and reason.

    Raises:
        ImportRejected: with on_error="raise", bad rows (malformed CSV rows, duplicate ids,
            values JSON cannot hold, missing media files); ``.report`` lists them all.
        InvalidValue: the id or media column does not exist, the file is missing or
            unreadable, or the source is of an unknown kind. Nothing is stored then.
    """
    from tracker.services import imports

    return imports.import_samples(
        project,
        source,
        id_field,
        on_error,
        media_field=media_field,
        store_media=store_media,
        format=format,
        progress=progress,
    )


@entry
def create_dataset(
    name: str,
    samples: QuerySet[Sample] | list[Sample],
    project: str | Project | None = None,
    splits: Mapping[str, float] | None = None,
    seed: int = 0,
    stratify_by: str | None = None,
    description: str = "",
    *,
    progress: bool | None = None,
) -> DatasetVersion:
    """Freeze samples as the next version of dataset ``name`` (created on first use).

    The version keeps each sample's data, metadata, media reference, final labels (once
    annotations exist) and split as they are now; later edits or deletions of the samples do
    not change it. If the result is identical to the latest version, that version is returned
    instead of a duplicate.

    Args:
        name: dataset name, unique within the project.
        samples: a queryset of ``Sample`` (``Sample.objects.filter(...)``) or a list of them.
        project: the samples' project; checked if given, otherwise taken from the samples.
        splits: fractions per split name, summing to 1, e.g. ``{"train": 0.8, "val": 0.1,
            "test": 0.1}``. A sample's split comes from a hash of (seed, sample id), so it
            keeps its split when other samples are added or removed.
        seed: changes the assignment; the same seed always gives the same splits.
        stratify_by: a data field or annotation task name: splits are balanced within each
            of its values; samples already in the previous version keep their split.
        description: free text shown in listings.
        progress: show a progress bar; None shows one for large versions.

    Returns:
        The :class:`DatasetVersion` (the existing latest one when nothing changed).

    Raises:
        InvalidValue: no samples, samples of several projects, bad splits or stratify_by.
    """
    from tracker.services import datasets as core

    info = core.create_dataset(
        name, samples, project, splits, seed, stratify_by, description, progress=progress
    )
    return DatasetVersion(info)


@entry
def get_dataset(
    name: str, version: int | None = None, project: str | Project | None = None
) -> DatasetVersion:
    """A version of dataset ``name``: version N, or the latest when ``version`` is None.

    Raises:
        DatasetNotFound: no such dataset or version (the message lists the known ones).
        InvalidValue: the name exists in several projects and ``project`` was not given.
    """
    from tracker_api import remote  # remote mode (issue 6): configure(server_url=...)

    if remote.enabled():
        from tracker_api import remote_reads

        return remote_reads.get_dataset(name, version, getattr(project, "name", project))
    from tracker.services import datasets as core

    return DatasetVersion(core.get_dataset(name, version, project))


@entry
def datasets(project: str | Project | None = None) -> pd.DataFrame:
    """Every dataset (of ``project``, or of all projects) with its latest version: columns
    project, name, latest_version, versions, samples, splits, content_hash, created_at,
    description.

    Raises:
        ProjectNotFound: ``project`` does not exist.
    """
    from tracker.services import datasets as core

    return core.list_datasets(project)


@entry
def dataset_versions(name: str, project: str | Project | None = None) -> pd.DataFrame:
    """Every version of dataset ``name``, oldest first: version, samples, splits,
    content_hash, runs (how many used it), created_at, description.

    Raises:
        DatasetNotFound: no dataset of that name.
    """
    from tracker.services import datasets as core

    return core.list_versions(name, project)
