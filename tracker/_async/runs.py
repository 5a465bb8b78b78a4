"""Experiment runs (async twins of tracker._sync.runs): the same names, awaitable.

async with await tracker.aio.start_run(project="mnist") as run:
    await run.log_metric("loss", 0.3)        # memory only, like the sync API
frame = await tracker.aio.runs_frame(project="mnist")
"""

from __future__ import annotations

import asyncio
import datetime as dt
import warnings
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from tracker._dispatch import acall
from tracker._sync import runs as sync
from tracker._sync.runs import _ArtifactData, _RunData, _RunsQuery

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from tracker.models import Project

__all__ = ["compare", "flush", "get_run", "plot_metrics", "runs", "runs_frame", "start_run"]


class AsyncRun(_RunData):
    """The async twin of :class:`tracker._sync.runs.Run`: the same attributes and methods,
    awaitable; ``async with`` ends it like ``with`` does."""

    async def __aenter__(self) -> AsyncRun:
        return self

    async def __aexit__(self, tp: Any, exc: BaseException | None, tb: Any) -> bool:
        from tracker.services.runs import status_for_exit

        status, error = status_for_exit(exc)
        try:
            await self.finish(status, error)
        except Exception as failure:
            if exc is None:
                raise
            warnings.warn(
                f"tracker: could not record the end of run {self.id}: {failure}",
                RuntimeWarning,
                stacklevel=2,
            )
        return False

    async def log_param(self, key: str, value: Any) -> None:
        """Awaitable :meth:`Run.log_param`."""
        await self.log_params({key: value})

    async def log_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Awaitable :meth:`Run.log_params`."""
        return await acall("Run.log_params", sync._log_params, self._active, params)

    async def set_tag(self, key: str, value: Any) -> None:
        """Awaitable :meth:`Run.set_tag`."""
        await self.set_tags({key: value})

    async def set_tags(self, tags: Mapping[str, Any]) -> dict[str, Any]:
        """Awaitable :meth:`Run.set_tags`."""
        return await acall("Run.set_tags", sync._set_tags, self._active, tags)

    async def set_notes(self, text: str, append: bool = False) -> str:
        """Awaitable :meth:`Run.set_notes`."""
        return await acall("Run.set_notes", sync._set_notes, self._active, text, append)

    async def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        """:meth:`Run.log_metric`: a memory append (awaiting a commit only when durable)."""
        self._buf.log_metric(key, value, step)
        if self._active.durable:
            await acall("Run.log_metric", sync._durable, self._active)

    async def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """:meth:`Run.log_metrics`: memory appends (awaiting a commit only when durable)."""
        self._buf.log_metrics(metrics, step)
        if self._active.durable:
            await acall("Run.log_metrics", sync._durable, self._active)

    async def flush(self) -> int:
        """Awaitable :meth:`Run.flush`."""
        return await acall("Run.flush", sync._flush, self._active)

    async def history(
        self, keys: str | Sequence[str] | None = None, wide: bool = True
    ) -> pd.DataFrame:
        """Awaitable :meth:`Run.history`."""
        return await acall("Run.history", sync._history, self._active, keys, wide)

    async def plot(self, keys: str | Sequence[str] | None = None, x: str = "step") -> Figure:
        """Awaitable :meth:`Run.plot`."""
        from tracker.plots import plot_histories

        series = await acall("Run.plot", sync._plot_run, self._active, keys)
        return plot_histories(series, keys, x=x)

    async def log_artifact(
        self,
        obj: Any,
        name: str | None = None,
        *,
        overwrite: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> AsyncArtifactFile | list[AsyncArtifactFile]:
        """Awaitable :meth:`Run.log_artifact`."""
        infos = await acall(
            "Run.log_artifact", sync._log_artifact, self._active, obj, name, overwrite, metadata
        )
        return sync._single_or_list(infos, AsyncArtifactFile)

    async def artifacts(self) -> list[AsyncArtifactFile]:
        """Awaitable :meth:`Run.artifacts`."""
        return [
            AsyncArtifactFile(i)
            for i in await acall("Run.artifacts", sync._artifacts, self._active)
        ]

    async def artifact(self, name: str) -> AsyncArtifactFile:
        """Awaitable :meth:`Run.artifact`."""
        return AsyncArtifactFile(await acall("Run.artifact", sync._artifact, self._active, name))

    async def use_dataset(self, version: Any, context: str = "train") -> None:
        """Awaitable :meth:`Run.use_dataset`."""
        await acall("Run.use_dataset", sync._use_dataset, self._active, version, context)

    async def inputs(self) -> list[tuple[Any, str]]:
        """Awaitable :meth:`Run.inputs` (with ``AsyncDatasetVersion`` handles)."""
        from tracker._async.datasets import AsyncDatasetVersion

        used = await acall("Run.inputs", sync._inputs, self._active)
        return [(AsyncDatasetVersion(info), ctx) for info, ctx in used]

    async def finish(self, status: str = "finished", error: Any = "") -> None:
        """Awaitable :meth:`Run.finish`."""
        await acall("Run.finish", sync._finish, self._active, status, sync._error_text(error))

    async def refresh(self) -> AsyncRun:
        """Awaitable :meth:`Run.refresh`."""
        await acall("Run.refresh", sync._refresh, self._active)
        return self


class AsyncArtifactFile(_ArtifactData):
    """The async twin of :class:`tracker._sync.runs.ArtifactFile` (storage I/O in a thread)."""

    async def open(self) -> BinaryIO:
        """Awaitable :meth:`ArtifactFile.open` (the file object itself is synchronous)."""
        from tracker.services import artifacts

        return await asyncio.to_thread(artifacts.open_artifact, self._info)

    async def read_bytes(self) -> bytes:
        """Awaitable :meth:`ArtifactFile.read_bytes`."""
        from tracker.services import artifacts

        return await asyncio.to_thread(artifacts.read_artifact, self._info)

    async def download(self, path: str | Path | None = None) -> Path:
        """Awaitable :meth:`ArtifactFile.download`."""
        from tracker.services import artifacts

        return await asyncio.to_thread(artifacts.download_artifact, self._info, path)

    async def load(self) -> Any:
        """Awaitable :meth:`ArtifactFile.load`."""
        from tracker.services import artifacts

        return await asyncio.to_thread(artifacts.load_artifact, self._info)


class AsyncRuns(_RunsQuery):
    """The async twin of :class:`tracker._sync.runs.Runs`: ``async for run in runs``, and
    ``await runs.frame()``, ``.list()``, ``.count()``, ... ."""

    async def list(self) -> list[AsyncRun]:
        """Awaitable :meth:`Runs.list`."""
        return [AsyncRun(a) for a in await acall("Runs.list", sync._q_list, self)]

    async def count(self) -> int:
        """Awaitable :meth:`Runs.count`."""
        return await acall("Runs.count", sync._q_count, self)

    async def first(self) -> AsyncRun | None:
        """Awaitable :meth:`Runs.first`."""
        active = await acall("Runs.first", sync._q_first, self)
        return AsyncRun(active) if active is not None else None

    async def frame(self) -> pd.DataFrame:
        """Awaitable :meth:`Runs.frame`."""
        return await acall("Runs.frame", sync._q_frame, self)

    async def history(
        self, keys: str | Sequence[str] | None = None, wide: bool = True
    ) -> pd.DataFrame:
        """Awaitable :meth:`Runs.history`."""
        return await acall("Runs.history", sync._q_history, self, keys, wide)

    async def compare(self, only_differences: bool = False) -> pd.DataFrame:
        """Awaitable :meth:`Runs.compare`."""
        return await acall("Runs.compare", sync._q_compare, self, only_differences)

    async def plot(self, keys: str | Sequence[str] | None = None, x: str = "step") -> Figure:
        """Awaitable :meth:`Runs.plot`."""
        from tracker.plots import plot_histories

        return plot_histories(await acall("Runs.plot", sync._q_plot_points, self, keys), keys, x=x)

    async def __aiter__(self) -> AsyncIterator[AsyncRun]:
        for run in await self.list():
            yield run


async def start_run(
    project: str | Project = "default",
    name: str | None = "",
    *,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    notes: str = "",
    parent: Any = None,
    resume: Any = None,
    durable: bool | None = None,
    system_metrics: bool | None = None,
) -> AsyncRun:
    """Awaitable :func:`tracker.start_run`; returns an :class:`AsyncRun`."""
    from tracker_api import remote  # remote mode (issue 6): configure(server_url=...)

    site, execution = sync._call_site()
    if remote.enabled():
        return await remote.astart_run(  # type: ignore[return-value]
            project,
            name,
            params=params,
            tags=tags,
            notes=notes,
            parent=parent,
            resume=resume,
            durable=durable,
            system_metrics=system_metrics,
            site=site,
            execution=execution,
        )
    active = await acall(
        "start_run",
        sync._start,
        project,
        name,
        params,
        tags,
        notes,
        parent,
        resume,
        durable,
        system_metrics,
        site,
        execution,
    )
    return AsyncRun(active)


async def flush() -> int:
    """Awaitable :func:`tracker.flush`."""
    from tracker_api import remote

    if remote.enabled():
        return await asyncio.to_thread(remote.flush_all)
    return await acall("flush", sync._flush_all)


async def get_run(run_id: str) -> AsyncRun:
    """Awaitable :func:`tracker.get_run`; returns an :class:`AsyncRun`."""
    from tracker_api import remote

    if remote.enabled():
        from tracker_api import remote_reads

        return await remote_reads.aget_run(run_id)  # type: ignore[return-value]
    return AsyncRun(await acall("get_run", sync._get, run_id))


async def runs(
    project: str | Project | None = None,
    *,
    status: str | Sequence[str] | None = None,
    name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    parent: Any = None,
    ids: Sequence[str] | None = None,
    since: dt.datetime | None = None,
    order_by: Sequence[str] | None = None,
    limit: int | None = None,
) -> AsyncRuns:
    """:func:`tracker.runs` for async code: returns a lazy :class:`AsyncRuns` (no query runs
    until it is used with ``async for`` or an awaited method)."""
    from tracker_api import remote

    cls: Any = AsyncRuns
    if remote.enabled():
        from tracker_api.remote_reads import AsyncRemoteRuns as cls
    return cls(
        project,
        status=status,
        name=name,
        tags=tags,
        params=params,
        metrics=metrics,
        parent=parent,
        ids=ids,
        since=since,
        order_by=order_by,
        limit=limit,
    )


async def runs_frame(
    project: str | Project | None = None,
    *,
    status: str | Sequence[str] | None = None,
    name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    parent: Any = None,
    ids: Sequence[str] | None = None,
    since: dt.datetime | None = None,
    order_by: Sequence[str] | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """Awaitable :func:`tracker.runs_frame`."""
    from tracker_api import remote

    if remote.enabled():
        from tracker_api import remote_reads

        filters = dict(status=status, name=name, tags=tags, params=params, metrics=metrics, parent=parent,
                       ids=ids, since=since, order_by=order_by, limit=limit)
        return await asyncio.to_thread(remote_reads.runs_frame, project, **filters)
    return await acall(
        "runs_frame",
        sync.runs_frame.__wrapped__,
        project,
        status=status,
        name=name,
        tags=tags,
        params=params,
        metrics=metrics,
        parent=parent,
        ids=ids,
        since=since,
        order_by=order_by,
        limit=limit,
    )


async def compare(runs: Any, *, only_differences: bool = False) -> pd.DataFrame:
    """Awaitable :func:`tracker.compare`."""
    from tracker_api import remote

    if remote.enabled():
        from tracker_api import remote_reads

        return await asyncio.to_thread(remote_reads.compare, runs, only_differences=only_differences)
    return await acall("compare", sync._compare, runs, only_differences)


async def plot_metrics(
    runs: Any,
    keys: str | Sequence[str] | None = None,
    *,
    x: str = "step",
    max_points: int = 2000,
    ax: Any = None,
    title: str | None = None,
) -> Figure:
    """Awaitable :func:`tracker.plot_metrics`."""
    from tracker.plots import plot_histories
    from tracker_api import remote

    if remote.enabled():
        from tracker_api import remote_reads

        return await asyncio.to_thread(
            remote_reads.plot_metrics, runs, keys, x=x, max_points=max_points, ax=ax, title=title
        )
    series = await acall("plot_metrics", sync._plot_refs, runs, keys)
    return plot_histories(series, keys, x=x, max_points=max_points, ax=ax, title=title)
