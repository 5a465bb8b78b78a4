"""Bulk import and versioned datasets (async twins of tracker._sync.datasets).

Database work makes one hop through :func:`tracker._dispatch.acall`; reading a snapshot file
(``to_pandas``, ``export`` ...) touches no database and runs in a worker thread instead, so a
large read does not hold up the database thread.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracker._dispatch import acall
from tracker._sync import datasets as sync
from tracker._sync.datasets import _no_io, _VersionData

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from django.db.models import QuerySet

    from tracker._sync.datasets import DatasetVersion
    from tracker.models import Project, RunInput, Sample
    from tracker.services.datasets import DatasetDiff
    from tracker.services.imports import ImportReport

__all__ = ["create_dataset", "dataset_versions", "datasets", "get_dataset", "import_samples"]

_DONE = object()


class AsyncDatasetVersion(_VersionData):
    """The async twin of :class:`tracker._sync.datasets.DatasetVersion`: the same attributes,
    and the same methods, awaitable (``iter_batches`` is an async iterator)."""

    async def snapshot_path(self) -> str:
        """Awaitable :meth:`DatasetVersion.snapshot_path`."""
        return await asyncio.to_thread(self._snapshot_path)

    async def to_pandas(
        self, split: str | None = None, columns: list[str] | None = None
    ) -> pd.DataFrame:
        """Awaitable :meth:`DatasetVersion.to_pandas`."""
        return await asyncio.to_thread(self._to_pandas, split, columns)

    async def to_arrow(
        self, split: str | None = None, columns: list[str] | None = None
    ) -> pa.Table:
        """Awaitable :meth:`DatasetVersion.to_arrow`."""
        return await asyncio.to_thread(self._to_arrow, split, columns)

    async def iter_batches(
        self, batch_size: int = 10_000, split: str | None = None, columns: list[str] | None = None
    ) -> AsyncIterator[pd.DataFrame]:
        """``async for`` over :meth:`DatasetVersion.iter_batches`; each batch is read in a
        worker thread."""
        batches = await asyncio.to_thread(self._iter_batches, batch_size, split, columns)
        while True:
            batch = await asyncio.to_thread(next, batches, _DONE)
            if batch is _DONE:
                return
            yield batch

    async def export(
        self,
        path: str | os.PathLike[str],
        format: str | None = None,
        split: str | None = None,
        *,
        progress: bool | None = None,
    ) -> Path:
        """Awaitable :meth:`DatasetVersion.export`."""
        return await asyncio.to_thread(self._export, path, format, split, progress)

    async def diff(self, other: DatasetVersion | AsyncDatasetVersion) -> DatasetDiff:
        """Awaitable :meth:`DatasetVersion.diff`."""
        return await acall("DatasetVersion.diff", sync._diff, self, other)

    async def runs(self) -> list[RunInput]:
        """Awaitable :meth:`DatasetVersion.runs`."""
        return await acall("DatasetVersion.runs", sync._runs, self)

    @_no_io
    def samples(self) -> QuerySet[Sample]:
        """The same lazy queryset as :meth:`DatasetVersion.samples`; iterate it with
        ``async for`` or use ``acount()`` and friends."""
        from tracker.services import datasets as core

        return core.version_sample_ids(self.id)


def _wrap(version: DatasetVersion) -> AsyncDatasetVersion:
    return AsyncDatasetVersion(version.info)


async def import_samples(
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
    """Awaitable :func:`tracker.import_samples`."""
    return await acall(
        "import_samples",
        sync.import_samples.__wrapped__,
        project,
        source,
        id_field,
        on_error,
        media_field=media_field,
        store_media=store_media,
        format=format,
        progress=progress,
    )


async def create_dataset(
    name: str,
    samples: QuerySet[Sample] | list[Sample],
    project: str | Project | None = None,
    splits: Mapping[str, float] | None = None,
    seed: int = 0,
    stratify_by: str | None = None,
    description: str = "",
    *,
    progress: bool | None = None,
) -> AsyncDatasetVersion:
    """Awaitable :func:`tracker.create_dataset`."""
    version = await acall(
        "create_dataset",
        sync.create_dataset.__wrapped__,
        name,
        samples,
        project,
        splits,
        seed,
        stratify_by,
        description,
        progress=progress,
    )
    return _wrap(version)


async def get_dataset(
    name: str, version: int | None = None, project: str | Project | None = None
) -> AsyncDatasetVersion:
    """Awaitable :func:`tracker.get_dataset`."""
    from tracker_api import remote

    if remote.enabled():
        from tracker_api import remote_reads

        return await remote_reads.aget_dataset(name, version, getattr(project, "name", project))
    return _wrap(await acall("get_dataset", sync.get_dataset.__wrapped__, name, version, project))


async def datasets(project: str | Project | None = None) -> pd.DataFrame:
    """Awaitable :func:`tracker.datasets`."""
    return await acall("datasets", sync.datasets.__wrapped__, project)


async def dataset_versions(name: str, project: str | Project | None = None) -> pd.DataFrame:
    """Awaitable :func:`tracker.dataset_versions`."""
    return await acall("dataset_versions", sync.dataset_versions.__wrapped__, name, project)
