"""Remote mode: ``tracker.configure(server_url=..., token=...)`` sends runs to a tracker server.

The run API is the local one: ``start_run`` (with ``resume=``, ``durable=``,
``system_metrics=``, the notebook re-run rule), ``log_metric``/``log_metrics`` with the same
buffering, params, tags, notes, artifacts written and read back, dataset lineage, ``history``,
``plot``, ``finish`` and the context manager; ``get_run``, ``runs``, ``runs_frame``, ``compare``,
``plot_metrics`` and ``flush`` read and write through the server (:mod:`tracker_api.remote_reads`).

``log_metric`` only appends to memory (the local buffer class, so steps and validation are the
same); one background thread per process sends each run's points in batches at least every
``FLUSH_INTERVAL`` seconds (sooner once ``FLUSH_MAX_POINTS`` are waiting), the heartbeats of
the runs this process started, and their system metrics. When the server cannot be reached the
points are kept and retried with a growing pause, and a warning says so once: training never
stops because the server hiccuped. HTTP is the standard library's ``http.client``.
"""

from __future__ import annotations

import atexit
import datetime as dt
import math
import os
import sys
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tracker import exceptions as te
from tracker.services.metrics import MetricBuffer

# The HTTP layer, re-exported: callers use tracker_api.remote.client(), .ServerUnavailable, ...
from tracker_api.remote_http import (  # noqa: F401
    NotAvailableRemotely, ServerUnavailable, close_all, client, enabled, forget_client, not_remote,
    parse_time, query, upload,
)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from tracker_api.remote_reads import RemoteArtifactFile

Point = tuple[str, int, float, float]
BATCH_POINTS = 5_000  # points per request: ~250 KB of JSON
RETRY_MAX_SECONDS = 30.0
EXIT_FLUSH_SECONDS = 30.0
CHUNK = 1 << 20
UID_PREFIX_MIN = 4


# -- values -------------------------------------------------------------------------------------
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
    """Sends every remote run's points, heartbeats and system metrics; retries while the server
    is away."""

    def __init__(self) -> None:
        super().__init__(name="tracker-remote", daemon=True)
        self.runs: dict[str, RemoteRun] = {}
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.failing_since: float | None = None
        self.warned = False

    def add(self, run: RemoteRun) -> None:
        with self.lock:
            self.runs[run.id] = run
        if run._buf.system_interval:
            self.wake.set()  # its first system metrics are due now
        if not self.is_alive():
            try:
                self.start()
            except RuntimeError:  # pragma: no cover - started by another thread just now
                pass

    def run(self) -> None:  # noqa: D401 - Thread.run
        from tracker import conf

        backoff = 0.0
        while True:
            self.wake.wait(backoff or self._next_wait(float(conf.get("FLUSH_INTERVAL"))))
            self.wake.clear()
            self.cycle()
            backoff = 0.0 if self.failing_since is None else min(RETRY_MAX_SECONDS, max(0.5, backoff * 2))

    def _next_wait(self, interval: float) -> float:
        """The flush interval, or less when a run's system metrics are due sooner."""
        with self.lock:
            due = [r._sys_due for r in self.runs.values() if r._buf.system_interval and not r._finished]
        if not due:
            return interval
        return max(0.05, min(interval, min(due) - time.monotonic()))

    def cycle(self) -> None:
        with self.lock:
            runs = list(self.runs.values())
        ok = True
        now = time.monotonic()
        for run in runs:
            try:
                run._sample_system(now)
                run._send_pending()
                run._maybe_heartbeat()
            except ServerUnavailable as exc:
                ok = False
                self._failed(run, exc)
                continue
            except te.TrackerError as exc:
                # A rejected batch (the server's validation disagrees, the run was deleted):
                # drop it and say so once, so one bad batch cannot block the rest forever.
                run._drop_rejected(exc)
            self._retire(run)
        if ok:
            if self.failing_since is not None and self.warned:
                warnings.warn("tracker: the tracker server is reachable again; buffered points were sent.", RuntimeWarning, stacklevel=1)
            self.failing_since, self.warned = None, False

    def _retire(self, run: RemoteRun) -> None:
        """Forget a run with nothing left to send (and no heartbeat to keep); its next point
        registers it again."""
        if not run._idle():
            return
        with self.lock:
            self.runs.pop(run.id, None)
        run._buf.kick_at = 0
        if run._buf.rows:  # a point logged meanwhile
            self.add(run)

    def _failed(self, run: RemoteRun, exc: Exception) -> None:
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        if not self.warned:
            self.warned = True
            warnings.warn(
                f"tracker: {exc} Run {run.id}'s {len(run._buf.rows)} buffered points are kept and "
                f"retried in the background; training goes on.",
                RuntimeWarning,
                stacklevel=1,
            )

    def pending(self) -> list[RemoteRun]:
        with self.lock:
            return [r for r in self.runs.values() if r._buf.rows or (r._final is not None and not r._final_sent)]

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.pending():
                return True
            self.wake.set()
            time.sleep(0.05)
        return False


_sender: _Sender | None = None
_sender_lock = threading.Lock()
# Runs started (or resumed) by this process and not finished, by id.
_open: dict[str, RemoteRun] = {}
_open_lock = threading.Lock()


def _forget_after_fork() -> None:
    # A forked worker (a DataLoader's, say) may log into its parent's runs: it sends its points
    # with its own thread and connections, and leaves heartbeats and the runs' ends to the parent.
    global _sender, _sender_lock, _open_lock
    forget_client()
    _sender = None
    _sender_lock, _open_lock = threading.Lock(), threading.Lock()
    _open.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def sender() -> _Sender:
    global _sender
    with _sender_lock:
        if _sender is None:
            from tracker.services.metrics import _install_exit_hooks

            _install_exit_hooks()  # records an uncaught exception for the runs' final status
            _sender = _Sender()
            atexit.register(_at_exit)
        return _sender


def _at_exit() -> None:
    """End the runs this process left open and send what is buffered; bounded, never raises."""
    try:
        from tracker.services.metrics import exit_status

        status, error = exit_status()
        with _open_lock:
            mine = list(_open.values())
        for run in mine:
            run._end(status, error)
        s = _sender
        if s is None:
            return
        if not s.wait_idle(EXIT_FLUSH_SECONDS):
            left = sum(len(r._buf.rows) for r in s.pending())
            print(f"tracker: {left} metric points could not be sent to the tracker server before exit.", file=sys.stderr)
        close_all()
    except Exception as exc:  # pragma: no cover - last resort at interpreter exit
        print(f"tracker: sending to the tracker server at exit failed: {exc}", file=sys.stderr)


def flush_all() -> int:
    """Send every remote run's buffered points (and pending ends) now; returns the points sent."""
    s = _sender
    if s is None:
        return 0
    with s.lock:
        runs = list(s.runs.values())
    return sum(r.flush() for r in runs)


# -- the buffer -------------------------------------------------------------------------------
class _RemoteBuffer(MetricBuffer):
    """The local run's metric buffer (same steps, validation and cost per point); when full it
    wakes the remote sender instead of the database flusher."""

    __slots__ = ("remote",)

    def _overflow(self) -> None:
        s = sender()
        run = self.remote
        with s.lock:
            known = run.id in s.runs
        if not known:
            s.add(run)
        s.wake.set()
        n = len(self.rows)
        if n >= self.cap and s.failing_since is None and threading.current_thread() is not s:
            # Backpressure: logging outpaces sending; wait for the sender so memory stays
            # bounded. Never waits while the server is unreachable.
            deadline = time.monotonic() + RETRY_MAX_SECONDS
            while len(self.rows) >= self.cap and s.failing_since is None and time.monotonic() < deadline:
                self.drained.clear()
                s.wake.set()
                self.drained.wait(0.25)
            n = len(self.rows)
        self.kick_at = min(n + self.limit, self.cap) if n < self.cap else n + self.limit


# -- the run handle ---------------------------------------------------------------------------
class RemoteRun:
    """A run on a tracker server: the attributes and methods of the local :class:`tracker.Run`.

    ``log_metric``/``log_metrics`` only append to memory; a background thread sends the points.
    A run started (or resumed) here sends heartbeats and its end; a run read back
    (``get_run``) is logged to like the local one and left to its owner to end.
    """

    def __init__(
        self, data: Mapping[str, Any], *, owned: bool = False, next_steps: Mapping[str, int] | None = None,
        durable: bool = False, system_interval: float | None = None, site: Any = None, execution: int | None = None,
    ) -> None:
        from tracker import conf

        self._data = dict(data)
        self._buf = _RemoteBuffer(None, next_steps=next_steps, owned=owned, system_interval=system_interval)
        self._buf.remote = self
        if not owned:
            self._buf.kick_at = 0  # the first point registers the run with the sender
        self._owned = owned
        self._pid = os.getpid()  # the process that sends the heartbeats and the end
        self._durable = durable
        self._finished = not owned
        self._final: dict[str, Any] | None = None
        self._final_sent = False
        self._send_lock = threading.Lock()  # one sender at a time: a batch is sent once
        self._beat_every = float(conf.get("HEARTBEAT_INTERVAL"))
        self._beat_at = time.monotonic()
        self._sys_due = 0.0
        self._rejected_warned = False
        self._site, self._execution = site, execution
        if not durable:
            # The hot path, as on the local handle: log_metric *is* the buffer's append.
            self.log_metric = self._buf.log_metric  # type: ignore[method-assign]

    # attributes, as on the local handle
    @property
    def model(self) -> Any:
        raise not_remote("run.model (the Django row)", "Use run.id, or the REST API.")

    @property
    def pk(self) -> int:
        raise not_remote("run.pk (the database key)", "Use run.id: ids are the same on every machine.")

    @property
    def id(self) -> str:
        """The run's public id, accepted by ``get_run``, ``resume=`` and filters."""
        return self._data["id"]

    @property
    def name(self) -> str:
        return self._data.get("name", "")

    @property
    def project(self) -> str:
        return self._data.get("project", "")

    @property
    def status(self) -> str:
        """Status as last known here; ``refresh()`` re-reads it."""
        return self._data.get("status", "running")

    @property
    def params(self) -> dict[str, Any]:
        return dict(self._data.get("params") or {})

    @property
    def tags(self) -> dict[str, Any]:
        return dict(self._data.get("tags") or {})

    @property
    def notes(self) -> str:
        return self._data.get("notes", "")

    @property
    def error(self) -> str:
        return self._data.get("error", "")

    @property
    def started_at(self) -> dt.datetime:
        return parse_time(self._data.get("started_at"))  # type: ignore[return-value]

    @property
    def ended_at(self) -> dt.datetime | None:
        return parse_time(self._data.get("ended_at"))

    @property
    def parent_id(self) -> str | None:
        return self._data.get("parent")

    @property
    def git_commit(self) -> str:
        return self._data.get("git_commit", "")

    @property
    def url(self) -> str:
        return f"{client().url}/api/runs/{self.id}/"

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return f"<{type(self).__name__} {self.id}{label} {self.status} project={self.project!r} on {client().url}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, (RemoteRun, AsyncRemoteRun)) and other.id == self.id

    def __hash__(self) -> int:
        return hash(("remote-run", self.id))

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

    def _post(self, action: str, body: Any) -> Any:
        path, _, query = action.partition("?")
        url = f"/api/runs/{self.id}/{path}/" + (f"?{query}" if query else "")
        return client().request("POST", url, json_body=body, what=f"run {self.id}")[1]

    # params, tags, notes
    def log_param(self, key: str, value: Any) -> None:
        """Log one param; a different value for a logged key raises ParamConflict."""
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Log params (nested dicts flattened with dots) in one request; returns all params."""
        from tracker.services._runs_values import flatten

        self._data["params"] = self._post("params", {"params": flatten(params, "param")})["values"]
        return self.params

    def set_tag(self, key: str, value: Any) -> None:
        """Set one tag (None removes it). Allowed after the run ended."""
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> dict[str, Any]:
        """Set tags (a value of None removes the tag); returns all tags of the run."""
        from tracker.services._runs_values import flatten

        self._data["tags"] = self._post("tags", {"tags": flatten(tags, "tag")})["values"]
        return self.tags

    def set_notes(self, text: str, append: bool = False) -> str:
        """Replace the run's notes, or append a paragraph; returns them."""
        if not isinstance(text, str):
            raise te.InvalidValue(f"Notes must be a string, not {type(text).__name__}.")
        self._data["notes"] = self._post("notes", {"text": text, "append": bool(append)})["notes"]
        return self.notes

    # metrics
    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        """Record ``value`` for ``key`` at ``step`` (default: the key's previous step + 1): a
        list append, sent in the background (at once when the run is durable)."""
        self._buf.log_metric(key, value, step)
        if self._durable:
            self._send_now()

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Record several metrics at one step; one bad value records nothing."""
        self._buf.log_metrics(metrics, step)
        if self._durable:
            self._send_now()

    def flush(self) -> int:
        """Send buffered points now (this thread); returns how many were sent."""
        return self._send_pending()

    def _send_now(self) -> None:
        """Durable runs: send before returning; an unreachable server leaves it to the sender."""
        try:
            self._send_pending()
        except ServerUnavailable as exc:
            sender().add(self)
            warnings.warn(
                f"tracker: could not send run {self.id}'s points now ({exc}); they are kept and "
                f"retried in the background.", RuntimeWarning, stacklevel=3,
            )

    def _send_pending(self) -> int:
        with self._send_lock:
            rows = self._buf.rows
            sent = 0
            while batch := rows[:BATCH_POINTS]:
                # A durable run asks the server to wait for its disk too (the server's metric
                # ingest otherwise commits with synchronous_commit off; see docs/API.md).
                self._post("metrics?durable=true" if self._durable else "metrics",
                           {"points": _points_json(batch)})
                del rows[: len(batch)]
                sent += len(batch)
            self._buf.drained.set()
            if self._final is not None and not self._final_sent:
                self._data.update(self._post("finish", self._final))
                self._final_sent = True
            return sent

    def _drop_rejected(self, exc: Exception) -> None:
        rows = self._buf.rows
        dropped = len(rows[:BATCH_POINTS])
        del rows[:dropped]
        if self._final is not None and not dropped:
            self._final_sent = True  # the end itself was refused (the run is gone)
        if not self._rejected_warned:
            self._rejected_warned = True
            warnings.warn(f"tracker: the server refused {dropped} points of run {self.id}: {exc}", RuntimeWarning, stacklevel=1)

    def _maybe_heartbeat(self) -> None:
        if not self._owned or self._finished or self._pid != os.getpid() or time.monotonic() - self._beat_at < self._beat_every:
            return
        self._post("heartbeat", {})
        self._beat_at = time.monotonic()

    def _sample_system(self, now: float) -> None:
        from tracker.services.metrics import system_sample

        buf = self._buf
        if not buf.system_interval or self._finished or self._pid != os.getpid() or now < self._sys_due:
            return
        sampled = system_sample()
        step = buf.system_step
        buf.system_step += 1
        ts = time.time()
        buf.rows.extend((k, step, v, ts) for k, v in sampled.items())
        self._sys_due = now + buf.system_interval

    def _idle(self) -> bool:
        return self._finished and not self._buf.rows and (self._final is None or self._final_sent)

    # reading back
    def history(self, keys: str | Sequence[str] | None = None, wide: bool = True) -> pd.DataFrame:
        """Logged metric points as a DataFrame (after sending what is buffered).

        Args:
            keys: one key or several (default: all).
            wide: one row per step and one column per key (a step logged twice keeps its
                last value); ``False`` for long rows of key, step, value, timestamp.
        """
        from tracker_api import frames

        self.flush()
        keys = [keys] if isinstance(keys, str) else (list(keys) if keys is not None else None)
        _, table = client().request(
            "GET", f"/api/runs/{self.id}/history/{query({'key': keys, 'wide': bool(wide)})}", what=f"run {self.id}"
        )
        return frames.decode(table)

    def plot(self, keys: str | Sequence[str] | None = None, x: str = "step") -> Figure:
        """A matplotlib figure of this run's metric histories (one panel per key)."""
        from tracker.plots import plot_histories

        return plot_histories({self.name or self.id: self.history(keys, wide=False)}, keys, x=x)

    # artifacts
    def log_artifact(
        self, obj: Any, name: str | None = None, *, overwrite: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> RemoteArtifactFile | list[RemoteArtifactFile]:
        """Upload a file path, a directory (one artifact per file), bytes, a binary file object,
        a pandas DataFrame (Parquet) or a matplotlib figure (PNG), streamed with its sha256,
        which the server checks.

        Returns:
            A :class:`~tracker_api.remote_reads.RemoteArtifactFile` (a list for a directory).

        Raises:
            InvalidValue: an unsupported object, an absolute name or one with "..".
            Conflict: the name holds other bytes (and not ``overwrite``).
        """
        from tracker_api import remote_reads

        return remote_reads.log_artifact(self, obj, name, overwrite, metadata)

    def artifacts(self) -> list[RemoteArtifactFile]:
        """The run's artifacts, by name."""
        from tracker_api import remote_reads

        return remote_reads.artifacts(self)

    def artifact(self, name: str) -> RemoteArtifactFile:
        """One artifact by name; raises ``ArtifactNotFound`` listing the run's artifacts."""
        from tracker_api import remote_reads

        return remote_reads.artifact(self, name)

    # lineage
    def use_dataset(self, version: Any, context: str = "train") -> None:
        """Record that this run used a dataset version of the server (from
        ``tracker_api.remote_reads.get_dataset``, ``run.inputs()``, or its id) in ``context``."""
        from tracker_api import remote_reads

        remote_reads.use_dataset(self, version, context)

    def inputs(self) -> list[tuple[Any, str]]:
        """The dataset versions this run used: ``[(RemoteDatasetVersion, context), ...]``."""
        from tracker_api import remote_reads

        return remote_reads.inputs(self)

    # the end
    def finish(self, status: str = "finished", error: Any = "") -> None:
        """End the run: its remaining points and final status are sent now. An unreachable
        server leaves both to the background sender (a warning says so) instead of raising.
        Finishing again changes the recorded status."""
        from tracker._sync.runs import _error_text

        if status not in ("finished", "failed", "killed"):
            raise te.InvalidValue(f"A run finishes as 'finished', 'failed' or 'killed', not {status!r}.")
        if self._pid != os.getpid():
            # A forked worker ending its copy of the parent's run: its points go in, the run's
            # status stays the parent's to set.
            self._send_now()
            return
        self._end(status, _error_text(error))
        try:
            self._send_pending()
        except ServerUnavailable as exc:
            warnings.warn(
                f"tracker: {exc} Run {self.id}'s end and {len(self._buf.rows)} points are kept and "
                f"sent in the background.", RuntimeWarning, stacklevel=2,
            )
            sender().add(self)
            sender().wake.set()
        except te.TrackerError as exc:
            # The server refused (the run was deleted there, say): as in the background, the
            # refused batch is dropped with a warning; the end of training is no place to raise.
            self._drop_rejected(exc)
            sender().add(self)
            sender().wake.set()

    def _end(self, status: str, error: str) -> None:
        """Record the end here (sent by the next send)."""
        with self._send_lock:
            self._final = {"status": status, "error": error}
            self._final_sent = False
            self._finished = True
            self._buf.system_interval = None
            self._data.update(status=status, error=error)
        with _open_lock:
            _open.pop(self.id, None)

    def refresh(self) -> RemoteRun:
        """Re-read the run from the server (status, params, tags, notes); returns self."""
        from tracker_api.remote_reads import find_run

        self._data.update(find_run(self.id))
        return self


def _finish_earlier_execution(key: tuple, execution: int | None) -> None:
    """Finish runs an earlier execution of the same notebook cell left running."""
    if execution is None:
        return
    with _open_lock:
        mine = list(_open.values())
    for run in mine:
        if run._site == key and run._execution is not None and run._execution < execution:
            run.finish("finished")
            label = f"{run.name!r} " if run.name else ""
            print(
                f"tracker: run {label}{run.id} was still running from an earlier execution of "
                f"this cell; it is finished now and a new run starts (pass resume=... to continue "
                f"a run instead).",
                file=sys.stderr,
            )


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
    site: Any = None,
    execution: int | None = None,
) -> RemoteRun:
    """Create (or resume) a run on the configured server; see :func:`tracker.start_run`.

    Raises:
        InvalidValue: bad params, tags, notes or name (nothing is created).
        ParamConflict: resuming with a param that has another value.
        RunNotFound: ``resume`` or ``parent`` names no run you can see.
        ServerUnavailable: the server cannot be reached.
        PermissionDenied: the token is rejected or lacks the editor role in ``project``.
    """
    from tracker import conf
    from tracker.services._runs_env import capture
    from tracker.services._runs_values import check_name, flatten

    flat_params = flatten(params or {}, "param")
    flat_tags = flatten(tags or {}, "tag")
    name = check_name(name)
    if not isinstance(notes, str):
        raise te.InvalidValue(f"notes must be a string, not {type(notes).__name__}.")
    durable = bool(conf.get("DURABLE_METRICS")) if durable is None else bool(durable)
    sysm = bool(conf.get("SYSTEM_METRICS")) if system_metrics is None else bool(system_metrics)
    interval = float(conf.get("SYSTEM_METRICS_INTERVAL")) if sysm else None
    env = capture()
    timeout = float(conf.get("HEARTBEAT_TIMEOUT"))
    if resume is not None:
        return _resume(resume, flat_params, flat_tags, notes, durable, interval, env, timeout)
    project_name = project if isinstance(project, str) else getattr(project, "name", None)
    if not isinstance(project_name, str) or not project_name.strip():
        raise te.InvalidValue(f"A project name must be a non-empty string such as 'mnist', not {project!r}.")
    parent_id = getattr(parent, "id", parent)
    key = (project_name, name or ("site", site), parent_id)
    _finish_earlier_execution(key, execution)
    body = {
        "project": project_name, "name": name, "params": flat_params, "tags": flat_tags, "notes": notes,
        "parent": parent_id, "host": env.host, "pid": env.pid, "git_commit": env.git_commit,
        "git_dirty": env.git_dirty, "python_version": env.python_version, "packages": env.packages,
        "heartbeat_timeout": timeout,
    }
    _, data = client().request("POST", "/api/runs/", json_body=body, what=f"start_run({project_name!r})")
    run = RemoteRun(data, owned=True, durable=durable, system_interval=interval, site=key, execution=execution)
    with _open_lock:
        _open[run.id] = run
    sender().add(run)
    return run


def _resume(ref: Any, params: dict[str, Any], tags: dict[str, Any], notes: str, durable: bool,
            interval: float | None, env: Any, timeout: float) -> RemoteRun:
    from tracker_api.remote_reads import find_run

    uid = ref.id if isinstance(ref, (RemoteRun, AsyncRemoteRun)) else find_run(ref)["id"]
    with _open_lock:
        existing = _open.get(uid)
    if existing is not None:
        # Already open in this process (a cell re-run with resume=): keep the one buffer.
        if params:
            existing.log_params(params)
        if tags:
            existing.set_tags(tags)
        if notes:
            existing.set_notes(notes, append=True)
        return existing
    body = {"params": params, "tags": tags, "notes": notes, "host": env.host, "pid": env.pid, "heartbeat_timeout": timeout}
    _, data = client().request("POST", f"/api/runs/{uid}/resume/", json_body=body, what=f"run {uid}")
    run = RemoteRun(data["run"], owned=True, next_steps=data["next_steps"], durable=durable, system_interval=interval)
    with _open_lock:
        _open[run.id] = run
    sender().add(run)
    return run


def attach(data: Mapping[str, Any]) -> RemoteRun:
    """A handle for a run read back; this process's own open handle if it has one."""
    with _open_lock:
        mine = _open.get(data["id"])
    if mine is not None:
        mine._data.update(data)
        return mine
    return RemoteRun(data)


# -- async ------------------------------------------------------------------------------------
async def _to_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    import asyncio

    return await asyncio.to_thread(fn, *args, **kwargs)


class AsyncRemoteRun:
    """The async twin of :class:`RemoteRun`: the same attributes, the same methods awaitable;
    network calls run on a worker thread, so the event loop never waits on the server."""

    def __init__(self, run: RemoteRun) -> None:
        self._run = run

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._run, name)  # the attributes (id, name, status, ...), no I/O

    def __repr__(self) -> str:
        return repr(self._run).replace("<RemoteRun", "<AsyncRemoteRun", 1)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, (RemoteRun, AsyncRemoteRun)) and other.id == self._run.id

    def __hash__(self) -> int:
        return hash(self._run)

    async def __aenter__(self) -> AsyncRemoteRun:
        return self

    async def __aexit__(self, tp: Any, exc: BaseException | None, tb: Any) -> bool:
        return await _to_thread(self._run.__exit__, tp, exc, tb)

    async def log_param(self, key: str, value: Any) -> None:
        """Awaitable :meth:`RemoteRun.log_param`."""
        await _to_thread(self._run.log_param, key, value)

    async def log_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Awaitable :meth:`RemoteRun.log_params`."""
        return await _to_thread(self._run.log_params, params)

    async def set_tag(self, key: str, value: Any) -> None:
        """Awaitable :meth:`RemoteRun.set_tag`."""
        await _to_thread(self._run.set_tag, key, value)

    async def set_tags(self, tags: Mapping[str, Any]) -> dict[str, Any]:
        """Awaitable :meth:`RemoteRun.set_tags`."""
        return await _to_thread(self._run.set_tags, tags)

    async def set_notes(self, text: str, append: bool = False) -> str:
        """Awaitable :meth:`RemoteRun.set_notes`."""
        return await _to_thread(self._run.set_notes, text, append)

    async def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        """:meth:`RemoteRun.log_metric`: a memory append (a send in a thread when durable)."""
        self._run._buf.log_metric(key, value, step)
        if self._run._durable:
            await _to_thread(self._run._send_now)

    async def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """:meth:`RemoteRun.log_metrics`: memory appends (a send in a thread when durable)."""
        self._run._buf.log_metrics(metrics, step)
        if self._run._durable:
            await _to_thread(self._run._send_now)

    async def flush(self) -> int:
        """Awaitable :meth:`RemoteRun.flush`."""
        return await _to_thread(self._run.flush)

    async def history(self, keys: str | Sequence[str] | None = None, wide: bool = True) -> pd.DataFrame:
        """Awaitable :meth:`RemoteRun.history`."""
        return await _to_thread(self._run.history, keys, wide)

    async def plot(self, keys: str | Sequence[str] | None = None, x: str = "step") -> Figure:
        """Awaitable :meth:`RemoteRun.plot`."""
        return await _to_thread(self._run.plot, keys, x)

    async def log_artifact(self, obj: Any, name: str | None = None, *, overwrite: bool = False,
                           metadata: Mapping[str, Any] | None = None) -> Any:
        """Awaitable :meth:`RemoteRun.log_artifact` (with async artifact handles)."""
        from tracker_api.remote_reads import AsyncRemoteArtifactFile

        done = await _to_thread(self._run.log_artifact, obj, name, overwrite=overwrite, metadata=metadata)
        if isinstance(done, list):
            return [AsyncRemoteArtifactFile(f.info) for f in done]
        return AsyncRemoteArtifactFile(done.info)

    async def artifacts(self) -> list[Any]:
        """Awaitable :meth:`RemoteRun.artifacts`."""
        from tracker_api.remote_reads import AsyncRemoteArtifactFile

        return [AsyncRemoteArtifactFile(f.info) for f in await _to_thread(self._run.artifacts)]

    async def artifact(self, name: str) -> Any:
        """Awaitable :meth:`RemoteRun.artifact`."""
        from tracker_api.remote_reads import AsyncRemoteArtifactFile

        return AsyncRemoteArtifactFile((await _to_thread(self._run.artifact, name)).info)

    async def use_dataset(self, version: Any, context: str = "train") -> None:
        """Awaitable :meth:`RemoteRun.use_dataset`."""
        await _to_thread(self._run.use_dataset, version, context)

    async def inputs(self) -> list[tuple[Any, str]]:
        """Awaitable :meth:`RemoteRun.inputs` (with async dataset version handles)."""
        from tracker_api.remote_reads import AsyncRemoteDatasetVersion

        used = await _to_thread(self._run.inputs)
        return [(AsyncRemoteDatasetVersion(v.info), ctx) for v, ctx in used]

    async def finish(self, status: str = "finished", error: Any = "") -> None:
        """Awaitable :meth:`RemoteRun.finish`."""
        await _to_thread(self._run.finish, status, error)

    async def refresh(self) -> AsyncRemoteRun:
        """Awaitable :meth:`RemoteRun.refresh`."""
        await _to_thread(self._run.refresh)
        return self


async def astart_run(*args: Any, **kwargs: Any) -> AsyncRemoteRun:
    """Awaitable :func:`start_run`."""
    return AsyncRemoteRun(await _to_thread(start_run, *args, **kwargs))
