"""Remote logging: ``tracker.configure(server_url=..., token=...)`` sends runs to a tracker server.

The run-logging API is the local one (``start_run``, ``log_metric``/``log_metrics`` with the same
buffering, params, tags, ``log_artifact``, ``finish``, the context manager). ``log_metric`` only
appends to memory; one background thread per process sends each run's points in batches at
least every ``FLUSH_INTERVAL`` seconds (sooner once ``FLUSH_MAX_POINTS`` are waiting) and the
run's heartbeat every ``HEARTBEAT_INTERVAL``. When the server cannot be reached the points are
kept and retried with a growing pause, and a warning says so once: training never stops
because the server hiccuped. Only the standard library is used (``http.client``).
"""

from __future__ import annotations

import atexit
import hashlib
import http.client
import json
import math
import os
import ssl
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from tracker import exceptions as te

Point = tuple[str, int, float, float]
BATCH_POINTS = 5_000  # points per request: ~250 KB of JSON
CAP_FACTOR = 4
RETRY_MAX_SECONDS = 30.0
EXIT_FLUSH_SECONDS = 30.0
CHUNK = 1 << 20


# -- HTTP -------------------------------------------------------------------------------------
class ServerUnavailable(te.DatabaseUnavailable):
    """The tracker server could not be reached (or answered 5xx); the call may be retried."""


def _error_for(status: int, body: bytes, what: str) -> te.TrackerError:
    try:
        data = json.loads(body)
        detail = data.get("detail") or str(data)
        code = data.get("code", "")
    except ValueError:
        detail, code = body[:300].decode("utf-8", "replace") or f"HTTP {status}", ""
    message = f"{what}: {detail}"
    if status == 400 or status == 413:
        return te.InvalidValue(message)
    if status == 401:
        return te.PermissionDenied(f"{what}: the server rejected the token ({detail}). Create one with `tracker token` on the server and pass it to tracker.configure(token=...).")
    if status == 403:
        return te.PermissionDenied(message)
    if status == 404:
        if "project" in detail.lower():
            return te.ProjectNotFound(message)
        return te.RunNotFound(message) if what.startswith("run ") else te.NotFound(message)
    if status == 409:
        return te.ParamConflict(message) if code == "param_conflict" else te.Conflict(message)
    return ServerUnavailable(f"{what}: the server answered {status} ({detail}); try again later.")


class Client:
    """One keep-alive connection per thread to a tracker server, with bearer-token auth."""

    def __init__(self, url: str, token: str | None, timeout: float = 60.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise te.ConfigurationError(
                f"server_url {url!r} is not an http(s) URL; use a form like https://tracker.example.org."
            )
        self.url = url.rstrip("/")
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, parts.port
        self.prefix = parts.path.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.scheme == "https":
                conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=ssl.create_default_context())
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def request(
        self, method: str, path: str, *, json_body: Any = None, body: Any = None,
        headers: Mapping[str, str] | None = None, what: str = "tracker server", stream: bool = False,
    ) -> tuple[int, Any]:
        """Send one request; returns (status, parsed JSON or the response). Raises TrackerError."""
        hdrs = {"Accept": "application/json", **(headers or {})}
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        if json_body is not None:
            body = json.dumps(json_body, allow_nan=False).encode()
            hdrs["Content-Type"] = "application/json"
        # A kept-alive connection the server closed in between fails once: retry on a new one,
        # but only when the body can be sent again.
        attempts = 2 if body is None or isinstance(body, bytes) else 1
        for attempt in range(attempts):
            conn = self._conn()
            try:
                conn.request(method, self.prefix + path, body=body, headers=hdrs)
                resp = conn.getresponse()
                if stream and resp.status < 300:
                    return resp.status, resp
                data = resp.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt + 1 < attempts and isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)):
                    continue
                raise ServerUnavailable(
                    f"{what}: cannot reach the tracker server at {self.url} ({type(exc).__name__}: {exc})."
                ) from None
        if resp.status >= 300:
            raise _error_for(resp.status, data, what)
        return resp.status, (json.loads(data) if data else None)


# -- values ---------------------------------------------------------------------------------
def _json_value(v: float) -> Any:
    if math.isnan(v):
        return None
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return v


def _points_json(points: Sequence[Point]) -> list[dict[str, Any]]:
    return [
        {"key": k, "step": s, "value": v if math.isfinite(v) else _json_value(v), "timestamp": t}
        for k, s, v, t in points
    ]


# -- the background sender --------------------------------------------------------------------
class _Sender(threading.Thread):
    """Sends every open remote run's points and heartbeats; retries while the server is away."""

    def __init__(self) -> None:
        super().__init__(name="tracker-remote", daemon=True)
        self.runs: dict[str, RemoteRun] = {}
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.idle = threading.Event()
        self.failing_since: float | None = None
        self.warned = False

    def add(self, run: RemoteRun) -> None:
        with self.lock:
            self.runs[run.id] = run
        if not self.is_alive():
            self.start()

    def run(self) -> None:  # noqa: D401 - Thread.run
        from tracker import conf

        backoff = 0.0
        while True:
            interval = float(conf.get("FLUSH_INTERVAL"))
            self.wake.wait(backoff or interval)
            self.wake.clear()
            with self.lock:
                runs = list(self.runs.values())
            ok = True
            for run in runs:
                try:
                    run._send_pending()
                    run._maybe_heartbeat()
                    if run._final_sent:
                        with self.lock:
                            self.runs.pop(run.id, None)
                except ServerUnavailable as exc:
                    ok = False
                    self._failed(run, exc)
                except te.TrackerError as exc:
                    # A rejected batch (the server's validation disagrees): drop it, say so once.
                    run._drop_rejected(exc)
            if ok:
                if self.failing_since is not None and self.warned:
                    warnings.warn("tracker: the tracker server is reachable again; buffered points were sent.", RuntimeWarning, stacklevel=1)
                self.failing_since, self.warned, backoff = None, False, 0.0
            else:
                backoff = min(RETRY_MAX_SECONDS, max(0.5, backoff * 2))
            with self.lock:
                pending = any(r._rows or (r._final is not None and not r._final_sent) for r in self.runs.values())
            if not pending:
                self.idle.set()
            else:
                self.idle.clear()

    def _failed(self, run: RemoteRun, exc: Exception) -> None:
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        if not self.warned:
            self.warned = True
            warnings.warn(
                f"tracker: {exc} Run {run.id}'s {len(run._rows)} buffered points are kept and "
                f"retried in the background; training goes on.",
                RuntimeWarning,
                stacklevel=1,
            )

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                pending = [r for r in self.runs.values() if r._rows or (r._final is not None and not r._final_sent)]
            if not pending:
                return True
            self.wake.set()
            time.sleep(0.05)
        return False


_sender: _Sender | None = None
_sender_lock = threading.Lock()
_client: Client | None = None


def sender() -> _Sender:
    global _sender
    with _sender_lock:
        if _sender is None:
            _sender = _Sender()
            atexit.register(_at_exit)
        return _sender


def client() -> Client:
    """The process's client for ``TRACKER["SERVER_URL"]`` with ``TRACKER["TOKEN"]``."""
    global _client
    from tracker import conf

    url, token = conf.get("SERVER_URL"), conf.get("TOKEN")
    if not url:
        raise te.ConfigurationError("No server_url is configured; call tracker.configure(server_url=..., token=...).")
    if _client is None or _client.url != url.rstrip("/") or _client.token != token:
        _client = Client(url, token)
    return _client


def enabled() -> bool:
    """True when this process logs runs to a server (``configure(server_url=...)``)."""
    from django.conf import settings

    return bool(settings.configured and (getattr(settings, "TRACKER", None) or {}).get("SERVER_URL"))


def _at_exit() -> None:
    """Finish open remote runs and send what is buffered; bounded in time, never raises."""
    try:
        from tracker.services.metrics import exit_status

        status, error = exit_status()
        s = _sender
        if s is None:
            return
        with s.lock:
            runs = list(s.runs.values())
        for run in runs:
            if run._final is None:
                run._final = {"status": status, "error": error}
        if not s.wait_idle(EXIT_FLUSH_SECONDS):
            left = sum(len(r._rows) for r in runs)
            print(f"tracker: {left} metric points could not be sent to the tracker server before exit.", file=sys.stderr)
    except Exception as exc:  # pragma: no cover - last resort at interpreter exit
        print(f"tracker: sending to the tracker server at exit failed: {exc}", file=sys.stderr)


# -- the run handle ---------------------------------------------------------------------------
class RemoteRun:
    """A run on a tracker server, with the local :class:`tracker.Run`'s logging methods."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        from tracker import conf

        self._data = dict(data)
        self._lock = threading.Lock()
        # One sender at a time (the background thread, flush(), finish()): a batch is sent once.
        self._send_lock = threading.Lock()
        self._rows: list[Point] = []
        self._next: dict[str, int] = {}
        self._final: dict[str, Any] | None = None
        self._final_sent = False
        self._limit = int(conf.get("FLUSH_MAX_POINTS"))
        self._beat_every = float(conf.get("HEARTBEAT_INTERVAL"))
        self._beat_at = time.monotonic()
        self._drained = threading.Event()
        self._rejected_warned = False

    # attributes, as on the local handle
    @property
    def id(self) -> str:
        return self._data["id"]

    @property
    def name(self) -> str:
        return self._data.get("name", "")

    @property
    def project(self) -> str:
        return self._data.get("project", "")

    @property
    def status(self) -> str:
        return self._data.get("status", "running")

    @property
    def params(self) -> dict[str, Any]:
        return dict(self._data.get("params") or {})

    @property
    def tags(self) -> dict[str, Any]:
        return dict(self._data.get("tags") or {})

    @property
    def url(self) -> str:
        return f"{client().url}/api/runs/{self.id}/"

    def __repr__(self) -> str:
        return f"<RemoteRun {self.id} {self.name!r} ({self.status}) on {client().url}>"

    def __enter__(self) -> RemoteRun:
        return self

    def __exit__(self, tp: Any, exc: BaseException | None, tb: Any) -> bool:
        from tracker.services.runs import status_for_exit

        status, error = status_for_exit(exc)
        try:
            self.finish(status, error)
        except Exception as failure:
            if exc is None:
                raise
            warnings.warn(f"tracker: could not record the end of run {self.id}: {failure}", RuntimeWarning, stacklevel=2)
        return False

    # params, tags
    def log_param(self, key: str, value: Any) -> None:
        """Log one param; a different value for a logged key raises ParamConflict."""
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Log params (nested dicts flattened with dots); returns all params of the run."""
        from tracker.services._runs_values import flatten

        flat = flatten(params, "param")
        _, out = client().request("POST", f"/api/runs/{self.id}/params/", json_body={"params": flat}, what=f"run {self.id}")
        self._data["params"] = out["values"]
        return dict(out["values"])

    def set_tag(self, key: str, value: Any) -> None:
        """Set one tag (None removes it)."""
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> dict[str, Any]:
        """Set tags (a value of None removes the tag); returns all tags of the run."""
        from tracker.services._runs_values import flatten

        flat = flatten(tags, "tag")
        _, out = client().request("POST", f"/api/runs/{self.id}/tags/", json_body={"tags": flat}, what=f"run {self.id}")
        self._data["tags"] = out["values"]
        return dict(out["values"])

    # metrics
    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        """Buffer one point (no network I/O); ``step`` defaults to the key's next step."""
        from tracker.services._runs_values import check_key, metric_step, metric_value

        if self._final is not None:
            raise te.Conflict(f"Run {self.id} is finished; start a new run (or resume this one) to log more.")
        key = check_key(key, "metric")
        value = metric_value(key, value)
        with self._lock:
            if step is None:
                step = self._next.get(key, 0)
            else:
                step = metric_step(key, step)
            self._next[key] = step + 1
            self._rows.append((key, step, value, time.time()))
            n = len(self._rows)
        if n >= self._limit:
            sender().wake.set()
            if n >= self._limit * CAP_FACTOR and sender().failing_since is None:
                # Logging outpaces sending: wait for the sender, so memory stays bounded.
                self._drained.clear()
                self._drained.wait(RETRY_MAX_SECONDS)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Buffer several metrics at one step."""
        if not isinstance(metrics, Mapping):
            raise te.InvalidValue(f"log_metrics() takes a dict of metric values, not {type(metrics).__name__}.")
        for key, value in metrics.items():
            self.log_metric(key, value, step)

    def flush(self) -> int:
        """Send buffered points now (this thread); returns how many were sent."""
        return self._send_pending()

    def _send_pending(self) -> int:
        with self._send_lock:
            return self._send_locked()

    def _send_locked(self) -> int:
        sent = 0
        while True:
            with self._lock:
                batch = self._rows[:BATCH_POINTS]
            if not batch:
                break
            client().request("POST", f"/api/runs/{self.id}/metrics/", json_body={"points": _points_json(batch)}, what=f"run {self.id}")
            with self._lock:
                del self._rows[: len(batch)]
            sent += len(batch)
        self._drained.set()
        if self._final is not None and not self._final_sent:
            _, data = client().request("POST", f"/api/runs/{self.id}/finish/", json_body=self._final, what=f"run {self.id}")
            self._data.update(data)
            self._final_sent = True
        return sent

    def _drop_rejected(self, exc: Exception) -> None:
        with self._lock:
            dropped = len(self._rows[:BATCH_POINTS])
            del self._rows[:BATCH_POINTS]
        if not self._rejected_warned:
            self._rejected_warned = True
            warnings.warn(f"tracker: the server refused {dropped} points of run {self.id}: {exc}", RuntimeWarning, stacklevel=1)

    def _maybe_heartbeat(self) -> None:
        if self._final is not None or time.monotonic() - self._beat_at < self._beat_every:
            return
        client().request("POST", f"/api/runs/{self.id}/heartbeat/", json_body={}, what=f"run {self.id}")
        self._beat_at = time.monotonic()

    # artifacts
    def log_artifact(
        self, obj: Any, name: str | None = None, *, overwrite: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> dict[str, Any] | list[dict[str, Any]]:
        """Upload a file, a directory (one artifact per file), bytes or a binary file object.

        The bytes are streamed (never read whole into memory) with their sha256, which the
        server checks. Returns the stored artifact's description (a list for a directory).
        """
        if isinstance(obj, (str, os.PathLike)):
            path = Path(obj).expanduser()
            if path.is_dir():
                base = name or path.name
                return [
                    self._upload_file(f, f"{base}/{f.relative_to(path).as_posix()}", overwrite, metadata)
                    for f in sorted(p for p in path.rglob("*") if p.is_file())
                ]
            if not path.is_file():
                raise te.InvalidValue(f"There is no file {str(path)!r} to log as an artifact.")
            return self._upload_file(path, name or path.name, overwrite, metadata)
        if isinstance(obj, (bytes, bytearray, memoryview)):
            if not name:
                raise te.InvalidValue("Bytes need a name: run.log_artifact(data, 'weights.bin').")
            data = bytes(obj)
            return self._upload(lambda: iter([data]), len(data), hashlib.sha256(data).hexdigest(), name, overwrite, metadata, "bytes")
        if hasattr(obj, "read"):
            if not name:
                raise te.InvalidValue("A file object needs a name: run.log_artifact(fh, 'data.bin').")
            import tempfile

            # Spool to disk to learn the size and hash without holding the bytes in memory.
            with tempfile.NamedTemporaryFile(prefix="tracker-remote-") as tmp:
                while chunk := obj.read(CHUNK):
                    tmp.write(chunk if isinstance(chunk, bytes) else chunk.encode())
                tmp.flush()
                return self._upload_file(Path(tmp.name), name, overwrite, metadata)
        raise te.InvalidValue(
            f"In remote mode log_artifact() sends files, directories, bytes and binary file "
            f"objects, not {type(obj).__name__}; save it to a file first (df.to_parquet(path), "
            f"fig.savefig(path))."
        )

    def _upload_file(self, path: Path, name: str, overwrite: bool, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
        size = path.stat().st_size

        def chunks() -> Iterator[bytes]:
            with open(path, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    yield chunk

        return self._upload(chunks, size, digest.hexdigest(), name, overwrite, metadata, str(path))

    def _upload(self, chunks: Any, size: int, sha256: str, name: str, overwrite: bool,
                metadata: Mapping[str, Any] | None, source: str) -> dict[str, Any]:
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
            "X-Content-SHA256": sha256,
            "X-Artifact-Source": source[:500],
        }
        if metadata:
            headers["X-Artifact-Metadata"] = json.dumps(dict(metadata), allow_nan=False)
        query = "?overwrite=true" if overwrite else ""
        path = f"/api/runs/{self.id}/artifacts/{quote(name, safe='/')}{query}"
        # http.client sends an iterable body chunk by chunk with the given Content-Length.
        _, data = client().request("PUT", path, body=_Body(chunks()), headers=headers, what=f"artifact {name!r}")
        return data

    # the end
    def finish(self, status: str = "finished", error: Any = "") -> None:
        """Send the remaining points and the final status; an unreachable server leaves both to
        the background sender (with a warning) instead of raising."""
        if status not in ("finished", "failed", "killed"):
            raise te.InvalidValue(f"A run finishes as 'finished', 'failed' or 'killed', not {status!r}.")
        if self._final is not None:
            return
        self._final = {"status": status, "error": error if isinstance(error, str) else str(error)}
        try:
            self._send_pending()
        except ServerUnavailable as exc:
            warnings.warn(
                f"tracker: {exc} Run {self.id}'s end and {len(self._rows)} points are kept and "
                f"sent in the background.", RuntimeWarning, stacklevel=2,
            )
            sender().wake.set()
        else:
            with sender().lock:
                sender().runs.pop(self.id, None)

    def refresh(self) -> RemoteRun:
        """Re-read the run from the server."""
        _, data = client().request("GET", f"/api/runs/{self.id}/", what=f"run {self.id}")
        self._data.update(data)
        return self


class _Body:
    """An iterable request body; http.client streams it chunk by chunk (no read())."""

    def __init__(self, it: Iterator[bytes]) -> None:
        self._it = it

    def __iter__(self) -> Iterator[bytes]:
        return self._it


def start_run(
    project: str = "default",
    name: str | None = "",
    *,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    notes: str = "",
    parent: Any = None,
    resume: Any = None,
    durable: bool | None = None,
    system_metrics: bool | None = None,
) -> RemoteRun:
    """Create a run on the configured server; see :func:`tracker.start_run`.

    Raises:
        InvalidValue: bad params or tags (nothing is created).
        ServerUnavailable: the server cannot be reached.
        PermissionDenied: the token is rejected or lacks the editor role in ``project``.
    """
    from tracker import conf
    from tracker.services._runs_env import capture
    from tracker.services._runs_values import flatten

    if resume is not None:
        raise te.InvalidValue("resume= is not available in remote mode yet; start a new run.")
    project_name = project if isinstance(project, str) else getattr(project, "name", None)
    if not isinstance(project_name, str) or not project_name.strip():
        raise te.InvalidValue(f"A project name must be a non-empty string, not {project!r}.")
    env = capture()
    body = {
        "project": project_name,
        "name": name or "",
        "params": flatten(params or {}, "param"),
        "tags": flatten(tags or {}, "tag"),
        "notes": notes,
        "parent": getattr(parent, "id", parent),
        "host": env.host,
        "pid": env.pid,
        "git_commit": env.git_commit,
        "git_dirty": env.git_dirty,
        "python_version": env.python_version,
        "packages": env.packages,
        "heartbeat_timeout": float(conf.get("HEARTBEAT_TIMEOUT")),
    }
    _, data = client().request("POST", "/api/runs/", json_body=body, what=f"start_run({project_name!r})")
    run = RemoteRun(data)
    sender().add(run)
    return run


class AsyncRemoteRun:
    """The async twin of :class:`RemoteRun`: the same methods, awaitable (network calls run
    on a worker thread, so the event loop never waits on the server)."""

    def __init__(self, run: RemoteRun) -> None:
        self._run = run

    def __getattr__(self, name: str) -> Any:
        return getattr(self._run, name)

    def __repr__(self) -> str:
        return repr(self._run).replace("<RemoteRun", "<AsyncRemoteRun", 1)

    async def __aenter__(self) -> AsyncRemoteRun:
        return self

    async def __aexit__(self, tp: Any, exc: BaseException | None, tb: Any) -> bool:
        import asyncio

        return await asyncio.to_thread(self._run.__exit__, tp, exc, tb)

    async def log_param(self, key: str, value: Any) -> None:
        await self._to_thread(self._run.log_param, key, value)

    async def log_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return await self._to_thread(self._run.log_params, params)

    async def set_tag(self, key: str, value: Any) -> None:
        await self._to_thread(self._run.set_tag, key, value)

    async def set_tags(self, tags: Mapping[str, Any]) -> dict[str, Any]:
        return await self._to_thread(self._run.set_tags, tags)

    async def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        self._run.log_metric(key, value, step)  # memory only

    async def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._run.log_metrics(metrics, step)

    async def flush(self) -> int:
        return await self._to_thread(self._run.flush)

    async def log_artifact(self, obj: Any, name: str | None = None, *, overwrite: bool = False,
                           metadata: Mapping[str, Any] | None = None) -> Any:
        return await self._to_thread(self._run.log_artifact, obj, name, overwrite=overwrite, metadata=metadata)

    async def finish(self, status: str = "finished", error: Any = "") -> None:
        await self._to_thread(self._run.finish, status, error)

    async def refresh(self) -> AsyncRemoteRun:
        await self._to_thread(self._run.refresh)
        return self

    @staticmethod
    async def _to_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
        import asyncio

        return await asyncio.to_thread(fn, *args, **kwargs)


async def astart_run(*args: Any, **kwargs: Any) -> AsyncRemoteRun:
    """Awaitable :func:`start_run`."""
    import asyncio

    return AsyncRemoteRun(await asyncio.to_thread(start_run, *args, **kwargs))
