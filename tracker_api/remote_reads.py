"""Remote mode, reading back: artifacts, dataset versions, run lookups and collections.

What ``tracker.get_run``, ``tracker.runs(...)``, ``runs_frame``, ``compare``, ``plot_metrics``
and a remote run's ``artifacts()``/``inputs()`` return when ``configure(server_url=...)`` is
set. Frames are built on the server by the same core functions and sent typed
(:mod:`tracker_api.frames`); artifact bytes and dataset snapshots are streamed and checked
against the sha256 the server sends.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import os
import posixpath
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from tracker import exceptions as te
from tracker._async.datasets import AsyncDatasetVersion
from tracker._async.runs import AsyncRuns
from tracker._sync.datasets import DatasetVersion, _VersionData
from tracker._sync.runs import Runs, _ArtifactData, _run_labels, _single_or_list
from tracker_api.remote import CHUNK, UID_PREFIX_MIN, AsyncRemoteRun, RemoteRun, _to_thread, attach, flush_all
from tracker_api.remote_http import ServerUnavailable, client, not_remote, parse_time, query, upload

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from tracker.services.artifacts import ArtifactInfo
    from tracker.services.datasets import VersionInfo

PAGE = 1000


# -- streamed, checked downloads ----------------------------------------------------------------
class _Download(io.RawIOBase):
    """The body of a GET, read as it arrives; at its end the size and sha256 are checked against
    what the server announced (a mismatch raises StorageError instead of returning bad bytes)."""

    def __init__(self, path: str, what: str, not_found: type[te.NotFound], sha256: str | None = None) -> None:
        self._resp, self._conn = client().stream(path, what=what, not_found=not_found)
        self._what = what
        self._expected = (self._resp.getheader("X-Content-SHA256") or sha256 or "").lower()
        length = self._resp.getheader("Content-Length")
        self._length = int(length) if length is not None else None
        self._sha = hashlib.sha256()
        self._size = 0
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        try:
            n = self._resp.readinto(b)
        except OSError as exc:
            raise ServerUnavailable(f"{self._what}: the download broke off ({exc}); try again.") from None
        if n:
            self._sha.update(memoryview(b)[:n])
            self._size += n
        elif not self._checked:
            self._checked = True
            if (self._length is not None and self._size != self._length) or (
                self._expected and self._sha.hexdigest() != self._expected
            ):
                raise te.StorageError(
                    f"{self._what} arrived damaged ({self._size} bytes, sha256 {self._sha.hexdigest()[:12]}; "
                    f"the server announced {self._length} bytes, sha256 {self._expected[:12]}); download it again."
                )
        return n

    def close(self) -> None:
        if not self.closed:
            self._resp.close()
            self._conn.close()
        super().close()


def _save(download: _Download, target: Path) -> Path:
    """Write a download next to ``target`` and move it there once complete and checked."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, download as src:
            while chunk := src.read(CHUNK):
                out.write(chunk)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


# -- artifacts ----------------------------------------------------------------------------------
def _artifact_info(data: Mapping[str, Any]) -> ArtifactInfo:
    from tracker.services.artifacts import ArtifactInfo

    return ArtifactInfo(
        run_id=data["run"], name=data["name"], kind=data["kind"], size=data["size"], sha256=data["sha256"],
        storage_name="", created_at=parse_time(data.get("created_at")), metadata=dict(data.get("metadata") or {}),
    )


def _artifact_path(info: ArtifactInfo) -> str:
    from urllib.parse import quote

    return f"/api/runs/{info.run_id}/artifacts/{quote(info.name, safe='/')}"


class RemoteArtifactFile(_ArtifactData):
    """An artifact of a run on the server: :class:`tracker.ArtifactFile`'s attributes and
    methods, reading over HTTP (streamed, sha256 checked)."""

    def open(self) -> BinaryIO:
        """A binary file object streaming the artifact's bytes; reading to the end checks their
        sha256 (StorageError on a mismatch). Close it (or use ``with``)."""
        raw = _Download(_artifact_path(self._info), f"artifact {self.name!r}", te.ArtifactNotFound, self.sha256)
        return io.BufferedReader(raw, CHUNK)  # type: ignore[return-value]

    def read_bytes(self) -> bytes:
        """All bytes of the artifact (checked)."""
        with self.open() as fh:
            return fh.read()

    def download(self, path: str | Path | None = None) -> Path:
        """Copy to ``path`` (a file, or an existing directory; default ``./<name>``), checking
        the sha256; the file appears only once complete. Returns the path written."""
        if path is None:
            target = Path.cwd() / self.name
        else:
            target = Path(path).expanduser()
            if target.is_dir():
                target = target / posixpath.basename(self.name)
        raw = _Download(_artifact_path(self._info), f"artifact {self.name!r}", te.ArtifactNotFound, self.sha256)
        return _save(raw, target)

    def load(self) -> Any:
        """A DataFrame for a logged DataFrame (Parquet), bytes for anything else."""
        data = self.read_bytes()
        if self.kind == "dataframe":
            import pandas as pd

            return pd.read_parquet(io.BytesIO(data))
        return data


class AsyncRemoteArtifactFile(_ArtifactData):
    """The async twin of :class:`RemoteArtifactFile` (network I/O in a worker thread)."""

    def _sync(self) -> RemoteArtifactFile:
        return RemoteArtifactFile(self._info)

    async def open(self) -> BinaryIO:
        """Awaitable :meth:`RemoteArtifactFile.open` (the file object itself is synchronous)."""
        return await _to_thread(self._sync().open)

    async def read_bytes(self) -> bytes:
        """Awaitable :meth:`RemoteArtifactFile.read_bytes`."""
        return await _to_thread(self._sync().read_bytes)

    async def download(self, path: str | Path | None = None) -> Path:
        """Awaitable :meth:`RemoteArtifactFile.download`."""
        return await _to_thread(self._sync().download, path)

    async def load(self) -> Any:
        """Awaitable :meth:`RemoteArtifactFile.load`."""
        return await _to_thread(self._sync().load)


def artifacts(run: RemoteRun) -> list[RemoteArtifactFile]:
    _, data = client().request("GET", f"/api/runs/{run.id}/artifacts/", what=f"run {run.id}")
    return [RemoteArtifactFile(_artifact_info(a)) for a in data]


def artifact(run: RemoteRun, name: str) -> RemoteArtifactFile:
    known = artifacts(run)
    for f in known:
        if f.name == name:
            return f
    names = [f.name for f in known[:10]]
    raise te.ArtifactNotFound(
        f"Run {run.id} has no artifact {name!r}. Its artifacts: {', '.join(names) if names else 'none'}."
    )


def log_artifact(run: RemoteRun, obj: Any, name: str | None, overwrite: bool,
                 metadata: Mapping[str, Any] | None) -> RemoteArtifactFile | list[RemoteArtifactFile]:
    """Upload ``obj`` the way the local ``log_artifact`` stores it (same names, kinds and checks)."""
    from tracker.services._runs_values import json_value
    from tracker.services.artifacts import _hash, _sources

    extra = json_value(dict(metadata or {}), "metadata") if metadata is not None else {}
    sources = _sources(obj, name)
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise te.InvalidValue("Two files map to the same artifact name; rename one of them.")
    spooled: list[Any] = []
    try:
        hashed = []
        for src in sources:
            if not src.seekable:
                # Spool a one-pass file object to disk to learn its size and hash (not memory).
                tmp = tempfile.NamedTemporaryFile(prefix="tracker-remote-")
                spooled.append(tmp)
                with src.opener() as fh:
                    while chunk := fh.read(CHUNK):
                        tmp.write(chunk)
                tmp.flush()
                src.opener = lambda path=tmp.name: open(path, "rb")
                src.seekable = True
            hashed.append((src, *_hash(src)))
        if not overwrite:
            # Refuse before uploading anything, as the local API checks every name first.
            have = {f.name: f.sha256 for f in artifacts(run)}
            for src, sha, _size in hashed:
                if src.name in have and have[src.name] != sha:
                    raise te.Conflict(
                        f"Run {run.id} already has an artifact {src.name!r} with other content. Use "
                        f"another name, or pass overwrite=True to replace it."
                    )
        infos = []
        for src, sha, size in hashed:
            meta = {k: v for k, v in src.metadata.items() if k != "source"}
            meta.update(extra)

            def chunks(src: Any = src) -> Iterator[bytes]:
                with src.opener() as fh:
                    while chunk := fh.read(CHUNK):
                        yield chunk

            source = src.metadata.get("source", src.kind)
            data = upload(run, chunks(), size, sha, src.name, src.kind, overwrite, meta, source)
            infos.append(_artifact_info(data))
    finally:
        for tmp in spooled:
            tmp.close()
    return _single_or_list(infos, RemoteArtifactFile)


# -- dataset versions ---------------------------------------------------------------------------
def _version_info(data: Mapping[str, Any]) -> VersionInfo:
    from tracker.services.datasets import VersionInfo

    return VersionInfo(
        id=data["id"], project=data["project"], name=data["name"], version=data["version"],
        content_hash=data["content_hash"], description=data.get("description", ""),
        splits=dict(data.get("splits") or {}), seed=data.get("seed", 0), stratify_by=data.get("stratify_by") or "",
        sample_count=data["sample_count"], counts=dict(data.get("counts") or {}), schema=dict(data.get("schema") or {}),
        created_at=parse_time(data.get("created_at")), snapshot_name="",
        snapshot_sha256=data.get("snapshot_sha256") or "", snapshot_size=data.get("snapshot_size") or 0,
    )


def fetch_snapshot(info: VersionInfo) -> str:
    """A local copy of a version's Parquet snapshot, downloaded once per content (checked) into
    ``<TRACKER home>/remote-snapshots``."""
    from tracker import conf

    target = Path(conf.get("HOME")) / "remote-snapshots" / f"{info.snapshot_sha256 or info.id}.parquet"
    if target.exists() and target.stat().st_size == info.snapshot_size:
        return str(target)
    what = f"the snapshot of dataset {info.name!r} v{info.version}"
    path = f"/api/dataset-versions/{info.id}/export/?export_format=parquet"
    return str(_save(_Download(path, what, te.DatasetNotFound, info.snapshot_sha256), target))


class _RemoteSnapshot:
    def _snapshot_path(self: Any) -> str:
        return fetch_snapshot(self._info)


class RemoteDatasetVersion(_RemoteSnapshot, DatasetVersion):
    """A dataset version on the server: :class:`tracker.DatasetVersion`'s attributes, and its
    reads (``to_pandas``, ``to_arrow``, ``iter_batches``, ``export``) from the version's
    snapshot, downloaded once and checked."""

    def diff(self, other: Any) -> Any:
        """What changed from this version to ``other``, computed by the server (see
        :meth:`tracker.DatasetVersion.diff`)."""
        return _diff(self.id, other)

    def runs(self) -> list[RemoteRunInput]:
        """The runs that used this version (those in projects you can read), oldest use first:
        records with ``.run`` (a remote run handle), ``.version``, ``.context``, ``.created_at``."""
        return _version_runs(self)

    def samples(self) -> Any:
        raise not_remote("DatasetVersion.samples() (a queryset)", "Read the version's rows with to_pandas().")


@dataclass(frozen=True)
class RemoteRunInput:
    """Lineage read from the server, as :class:`tracker.models.RunInput` reads locally."""

    run: Any
    version: Any
    context: str
    created_at: dt.datetime


def _version_runs(version: Any) -> list[RemoteRunInput]:
    _, uses = client().request("GET", f"/api/dataset-versions/{version.id}/runs/", what="dataset version runs")
    uids = list(dict.fromkeys(u["run"] for u in uses))
    found: dict[str, Any] = {}
    for start in range(0, len(uids), 500):
        part = uids[start:start + 500]
        for data in _search({"ids": part, "page_size": len(part)})["results"]:
            found[data["id"]] = data
    handle = AsyncRemoteRun if isinstance(version, AsyncRemoteDatasetVersion) else None
    out = []
    for u in uses:
        if u["run"] not in found:  # deleted between the two reads
            continue
        run = attach(found[u["run"]])
        out.append(RemoteRunInput(handle(run) if handle else run, version, u["context"], parse_time(u["created_at"])))
    return out


def _diff(version_id: int, other: Any) -> Any:
    from tracker.services.datasets import DatasetDiff

    if not isinstance(other, (RemoteDatasetVersion, AsyncRemoteDatasetVersion)):
        raise te.InvalidValue(
            f"diff() compares two dataset versions on the server; got a {type(other).__name__}. Use "
            f"tracker.get_dataset(name, version=N) to get the other one."
        )
    _, found = client().request(
        "GET", f"/api/dataset-versions/{version_id}/diff/{query({'other': other.id})}", what="dataset version diff"
    )
    return DatasetDiff(**{f.name: found[f.name] for f in dataclasses.fields(DatasetDiff)})


class AsyncRemoteDatasetVersion(_RemoteSnapshot, AsyncDatasetVersion):
    """The async twin of :class:`RemoteDatasetVersion`."""

    async def diff(self, other: Any) -> Any:
        """Awaitable :meth:`RemoteDatasetVersion.diff`."""
        return await _to_thread(_diff, self.id, other)

    async def runs(self) -> list[Any]:
        """Awaitable :meth:`RemoteDatasetVersion.runs` (``.run`` is an async handle)."""
        return await _to_thread(_version_runs, self)

    def samples(self) -> Any:
        raise not_remote("DatasetVersion.samples() (a queryset)", "Read the version's rows with to_pandas().")


def get_dataset(name: str, version: int | None = None, project: str | None = None) -> RemoteDatasetVersion:
    """A dataset version on the server: version N, or the latest when ``version`` is None.

    Raises:
        DatasetNotFound: no such dataset or version in a project you are a member of.
        InvalidValue: the name exists in several projects and ``project`` was not given.
    """
    params = {"dataset": name, "version": version, "project": project, "ordering": "-version", "page_size": 100}
    _, page = client().request("GET", f"/api/dataset-versions/{query(params)}", what=f"dataset {name!r}")
    found = page["results"]
    if not found:
        which = f"version {version} of dataset {name!r}" if version is not None else f"dataset {name!r}"
        raise te.DatasetNotFound(f"There is no {which} on the server in a project you are a member of.")
    projects = sorted({v["project"] for v in found})
    if len(projects) > 1:
        raise te.InvalidValue(
            f"Dataset {name!r} exists in projects {', '.join(map(repr, projects))}; pass project=... to pick one."
        )
    return RemoteDatasetVersion(_version_info(found[0]))


async def aget_dataset(name: str, version: int | None = None, project: str | None = None) -> AsyncRemoteDatasetVersion:
    """Awaitable :func:`get_dataset`."""
    return AsyncRemoteDatasetVersion((await _to_thread(get_dataset, name, version, project)).info)


def use_dataset(run: RemoteRun, version: Any, context: str) -> None:
    if not isinstance(context, str) or not context.strip() or len(context) > 64:
        raise te.InvalidValue(f"context must be a short non-empty string like 'train', not {context!r}.")
    if isinstance(version, (RemoteDatasetVersion, AsyncRemoteDatasetVersion)):
        pk = version.id
    elif isinstance(version, int) and not isinstance(version, bool):
        pk = version
    elif isinstance(version, _VersionData):
        raise te.InvalidValue(
            "This dataset version comes from this process's own database, not from the server. In "
            "remote mode pass a version of the server: tracker_api.remote_reads.get_dataset(name, "
            "version), one from run.inputs(), or its id."
        )
    else:
        raise te.InvalidValue(
            f"Expected a dataset version of the server (tracker_api.remote_reads.get_dataset) or its "
            f"id, not {type(version).__name__}."
        )
    client().request("POST", f"/api/runs/{run.id}/inputs/", json_body={"version": pk, "context": context.strip()},
                     what=f"run {run.id}", not_found=te.DatasetNotFound)


def inputs(run: RemoteRun) -> list[tuple[RemoteDatasetVersion, str]]:
    _, data = client().request("GET", f"/api/runs/{run.id}/inputs/", what=f"run {run.id}")
    return [(RemoteDatasetVersion(_version_info(u["version"])), u["context"]) for u in data]


# -- finding runs -------------------------------------------------------------------------------
def _search(body: Mapping[str, Any]) -> dict[str, Any]:
    return client().request("POST", "/api/runs/search/", json_body=dict(body), what="runs")[1]


def _flush_quietly() -> None:
    """Send this process's buffered points first, so reads see them (as local reads do)."""
    try:
        flush_all()
    except te.TrackerError:
        pass  # the sender keeps them and says why; the read goes on


def find_run(ref: Any) -> dict[str, Any]:
    """The server's description of the run with this id (or unique prefix of 4+ characters)."""
    if isinstance(ref, (RemoteRun, AsyncRemoteRun)):
        ref = ref.id
    if not isinstance(ref, str) or not ref.strip():
        raise te.InvalidValue(
            f"A run is given by its id (a string such as 'a1b2c3d4e5f6a7b8') or a run object, not "
            f"{type(ref).__name__} ({ref!r:.40})."
        )
    uid = ref.strip()
    missing = te.RunNotFound(
        f"There is no run with id {uid!r} on the server in a project you are a member of. List runs "
        f"with tracker.runs_frame(project=...) to find its id."
    )
    if len(uid) > 32 or not uid.isalnum():
        raise missing
    found = _search({"id_prefix": uid, "page_size": 2})["results"]
    exact = [r for r in found if r["id"] == uid]
    if not exact and len(found) > 1:
        exact = _search({"ids": [uid], "page_size": 1})["results"]
    if exact:
        return exact[0]
    if len(uid) < UID_PREFIX_MIN or not found:
        raise missing
    if len(found) > 1:
        raise te.RunNotFound(f"The run id prefix {uid!r} matches several runs; give more characters of the id.")
    return found[0]


def get_run(run_id: str) -> RemoteRun:
    """See :func:`tracker.get_run`."""
    _flush_quietly()
    return attach(find_run(run_id))


async def aget_run(run_id: str) -> AsyncRemoteRun:
    """Awaitable :func:`get_run`."""
    return AsyncRemoteRun(await _to_thread(get_run, run_id))


def _body(project: Any, filters: Mapping[str, Any]) -> dict[str, Any]:
    """The search body of ``tracker.runs(project, **filters)``."""
    body: dict[str, Any] = {}
    if project is not None:
        body["project"] = project if isinstance(project, str) else getattr(project, "name", project)
    for key, value in filters.items():
        if value is None:
            continue
        if key == "status" and isinstance(value, str):
            value = [value]
        elif key == "parent":
            value = value.id if isinstance(value, (RemoteRun, AsyncRemoteRun)) else value
        elif key == "since" and isinstance(value, dt.datetime):
            value = value.isoformat()
        elif key in ("ids", "order_by"):
            value = [value] if isinstance(value, str) else list(value)
        body[key] = value
    return body


def _all_rows(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        page = _search({**body, "offset": offset, "page_size": PAGE})
        rows += page["results"]
        offset = page["next_offset"]
    return rows


def _table(path: str, body: Mapping[str, Any]) -> pd.DataFrame:
    from tracker_api import frames

    return frames.decode(client().request("POST", path, json_body=dict(body), what="runs")[1])


def _keys(keys: Any) -> list[str] | None:
    return [keys] if isinstance(keys, str) else (None if keys is None else [str(k) for k in keys])


def _series(rows: Sequence[Mapping[str, Any]], keys: Any) -> dict[str, Any]:
    """Long histories per run label, for tracker.plots (as the local ``_plot_points``)."""
    uids = [r["id"] for r in rows]
    frame = _table("/api/runs/history/", {"ids": uids, "keys": _keys(keys), "wide": False})
    labels = _run_labels({r["id"]: (r["name"], r["id"]) for r in rows}, uids)
    return {labels[u]: frame[frame["run"] == u] for u in labels}


class RemoteRuns(Runs):
    """:class:`tracker.Runs` over the server: the same filters and methods, read through HTTP."""

    def _queryset(self) -> Any:
        raise not_remote("A runs collection's queryset", "Use .list(), .frame() or .history().")

    def _search_body(self) -> dict[str, Any]:
        return _body(self._project, self._filters)

    def list(self) -> list[RemoteRun]:  # type: ignore[override]
        """The runs, most recent first (or as ordered)."""
        _flush_quietly()
        return [attach(r) for r in _all_rows(self._search_body())]

    def count(self) -> int:
        """How many runs match."""
        _flush_quietly()
        return _search({**self._search_body(), "page_size": 0})["count"]

    def first(self) -> RemoteRun | None:  # type: ignore[override]
        """The first run (most recent unless ordered otherwise), or None."""
        _flush_quietly()
        found = _search({**self._search_body(), "page_size": 1})["results"]
        return attach(found[0]) if found else None

    def frame(self) -> pd.DataFrame:
        """One row per run, as :func:`tracker.runs_frame`."""
        _flush_quietly()
        return _table("/api/runs/frame/", self._search_body())

    def history(self, keys: str | Sequence[str] | None = None, wide: bool = True) -> pd.DataFrame:
        """Metric histories of all these runs: index (run, step), one column per key (or long
        rows with a run column when ``wide=False``)."""
        _flush_quietly()
        return _table("/api/runs/history/", {**self._search_body(), "keys": _keys(keys), "wide": bool(wide)})

    def compare(self, only_differences: bool = False) -> pd.DataFrame:
        """These runs side by side, as :func:`tracker.compare`."""
        return compare([r.id for r in self.list()], only_differences=only_differences)

    def plot(self, keys: str | Sequence[str] | None = None, x: str = "step") -> Figure:
        """Metric histories of these runs in one matplotlib figure (a panel per key)."""
        from tracker.plots import plot_histories

        _flush_quietly()
        return plot_histories(_series(_all_rows(self._search_body()), keys), keys, x=x)


class AsyncRemoteRuns(AsyncRuns):
    """The async twin of :class:`RemoteRuns`: ``async for run in runs`` and awaitable methods."""

    def _queryset(self) -> Any:
        raise not_remote("A runs collection's queryset", "Use .list(), .frame() or .history().")

    def _sync(self) -> RemoteRuns:
        return RemoteRuns(self._project, **self._filters)

    async def list(self) -> list[AsyncRemoteRun]:  # type: ignore[override]
        """Awaitable :meth:`RemoteRuns.list`."""
        return [AsyncRemoteRun(r) for r in await _to_thread(self._sync().list)]

    async def count(self) -> int:
        """Awaitable :meth:`RemoteRuns.count`."""
        return await _to_thread(self._sync().count)

    async def first(self) -> AsyncRemoteRun | None:  # type: ignore[override]
        """Awaitable :meth:`RemoteRuns.first`."""
        run = await _to_thread(self._sync().first)
        return AsyncRemoteRun(run) if run is not None else None

    async def frame(self) -> pd.DataFrame:
        """Awaitable :meth:`RemoteRuns.frame`."""
        return await _to_thread(self._sync().frame)

    async def history(self, keys: str | Sequence[str] | None = None, wide: bool = True) -> pd.DataFrame:
        """Awaitable :meth:`RemoteRuns.history`."""
        return await _to_thread(self._sync().history, keys, wide)

    async def compare(self, only_differences: bool = False) -> pd.DataFrame:
        """Awaitable :meth:`RemoteRuns.compare`."""
        return await _to_thread(self._sync().compare, only_differences)

    async def plot(self, keys: str | Sequence[str] | None = None, x: str = "step") -> Figure:
        """Awaitable :meth:`RemoteRuns.plot`."""
        return await _to_thread(self._sync().plot, keys, x)


def runs_frame(project: Any = None, **filters: Any) -> pd.DataFrame:
    """See :func:`tracker.runs_frame`."""
    return RemoteRuns(project, **filters).frame()


def _refs(runs: Any) -> list[str]:
    """Run ids from runs, ids, a collection or a ``runs_frame`` DataFrame."""
    if isinstance(runs, (RemoteRuns, AsyncRemoteRuns)):
        return [r.id for r in RemoteRuns(runs._project, **runs._filters).list()]
    if isinstance(runs, (str, RemoteRun, AsyncRemoteRun)):
        runs = [runs]
    else:
        try:
            import pandas as pd

            if isinstance(runs, pd.DataFrame):
                runs = list(runs.index)
        except ImportError:  # pragma: no cover - pandas is a dependency
            pass
    return [r.id if isinstance(r, (RemoteRun, AsyncRemoteRun)) else r for r in runs]


def compare(runs: Any, *, only_differences: bool = False) -> pd.DataFrame:
    """See :func:`tracker.compare`."""
    refs = _refs(runs)
    if not refs:
        raise te.InvalidValue("compare() needs at least one run.")
    bad = [r for r in refs if not isinstance(r, str)]
    if bad:
        find_run(bad[0])  # raises the local API's message for a non-id
    _flush_quietly()
    return _table("/api/runs/compare/", {"runs": refs, "only_differences": bool(only_differences)})


def plot_metrics(runs: Any, keys: str | Sequence[str] | None = None, *, x: str = "step", max_points: int = 2000,
                 ax: Any = None, title: str | None = None) -> Figure:
    """See :func:`tracker.plot_metrics`."""
    from tracker.plots import plot_histories

    _flush_quietly()
    rows = [find_run(ref) for ref in _refs(runs)]
    return plot_histories(_series(rows, keys), keys, x=x, max_points=max_points, ax=ax, title=title)
