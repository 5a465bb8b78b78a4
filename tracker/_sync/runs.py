"""Experiment runs (sync): start, log, read back as DataFrames, compare, plot.

    with tracker.start_run(project="mnist", name="baseline", params={"lr": 1e-3}) as run:
        for step in range(1000):
            run.log_metric("loss", loss, step=step)     # memory only; flushed in the background
        run.log_artifact(fig, name="loss.png")
    tracker.runs_frame(project="mnist")             # one row per run: params.*, metrics.*, tags.*

Re-executing a notebook cell that starts a run never fails: the run an earlier execution of the
same cell left running is finished, and a new one starts (``resume=run_id`` continues a run).
``tracker.aio`` has the same functions, returning :class:`~tracker._async.runs.AsyncRun`.
"""

from __future__ import annotations

import datetime as dt
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from tracker._dispatch import call, entry

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from tracker.models import Project
    from tracker.models import Run as RunModel
    from tracker.services.artifacts import ArtifactInfo
    from tracker.services.runs import ActiveRun

__all__ = ["compare", "flush", "get_run", "plot_metrics", "runs", "runs_frame", "start_run"]


def no_io(fn: Any) -> Any:
    """Mark a method that only touches memory, so it may stay sync on the async twin too."""
    fn.__tracker_no_io__ = True
    return fn


# -- shared by Run and AsyncRun --------------------------------------------------------------
class _RunData:
    """Attributes of a run as last read or written by this handle (no database access)."""

    def __init__(self, active: ActiveRun) -> None:
        self._active = active
        self._buf = active.buffer

    @property
    def model(self) -> RunModel:
        """The ``tracker.models.Run`` row behind this handle (for raw ORM work)."""
        return self._active.run

    @property
    def id(self) -> str:
        """The run's public id (``uid``), accepted by ``get_run``, ``resume=`` and filters."""
        return self._active.run.uid

    @property
    def pk(self) -> int:
        return self._active.run.pk

    @property
    def name(self) -> str:
        return self._active.run.name

    @property
    def project(self) -> str:
        return self._active.run.project.name

    @property
    def status(self) -> str:
        """Status as last known here; ``refresh()`` re-reads it."""
        return self._active.run.status

    @property
    def params(self) -> dict[str, Any]:
        return dict(self._active.run.params or {})

    @property
    def tags(self) -> dict[str, Any]:
        return dict(self._active.run.tags or {})

    @property
    def notes(self) -> str:
        return self._active.run.notes

    @property
    def error(self) -> str:
        return self._active.run.error

    @property
    def started_at(self) -> dt.datetime:
        return self._active.run.started_at

    @property
    def ended_at(self) -> dt.datetime | None:
        return self._active.run.ended_at

    @property
    def parent_id(self) -> str | None:
        parent = self._active.run.parent if self._active.run.parent_id else None
        return parent.uid if parent is not None else None

    @property
    def git_commit(self) -> str:
        return self._active.run.git_commit

    def __repr__(self) -> str:
        r = self._active.run
        label = f" {r.name!r}" if r.name else ""
        return f"<{type(self).__name__} {r.uid}{label} {r.status} project={r.project.name!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _RunData) and other.pk == self.pk

    def __hash__(self) -> int:
        return hash(("run", self.pk))


def _error_text(error: Any) -> str:
    if isinstance(error, BaseException):
        from tracker.services.runs import error_summary

        return error_summary(error)
    return "" if error is None else str(error)


def _single_or_list(infos: list[ArtifactInfo], wrap: Any) -> Any:
    from tracker.models import Artifact

    files = [wrap(i) for i in infos]
    if len(files) == 1 and files[0].kind != Artifact.Kind.DIRECTORY_FILE:
        return files[0]
    return files


# Core bodies the sync methods run through call() and the async ones through acall().
def _saved(active: ActiveRun) -> RunModel:
    """The run's row, written first if the flusher has not written it yet."""
    from tracker.services import runs as core

    return core.ensure_created(active)


def _log_params(active: ActiveRun, params: Mapping[str, Any]) -> dict[str, Any]:
    from tracker.services import runs as core

    return core.log_params(active, params)


def _set_tags(active: ActiveRun, tags: Mapping[str, Any]) -> dict[str, Any]:
    from tracker.services import runs as core

    return core.set_tags(active, tags)


def _set_notes(active: ActiveRun, text: str, append: bool) -> str:
    from tracker.services import runs as core

    return core.set_notes(active, text, append=append)


def _durable(active: ActiveRun) -> None:
    from tracker.services import runs as core

    core.log_metric_durable(active)


def _flush(active: ActiveRun) -> int:
    from tracker.services import runs as core

    return core.flush(active)


def _finish(active: ActiveRun, status: str, error: str) -> None:
    from tracker.services import runs as core

    core.finish_run(active, status, error)


def _refresh(active: ActiveRun) -> None:
    from tracker.services import runs as core

    core.refresh(active)


def _history(active: ActiveRun, keys: Any, wide: bool) -> pd.DataFrame:
    from tracker.services import runs as core

    core.flush(active)
    return core.history([active.pk], keys, wide=wide, with_run=False)


def _plot_run(active: ActiveRun, keys: Any) -> dict[str, Any]:
    from tracker.services import runs as core

    core.flush(active)
    return _plot_points([active.pk], keys)


def _log_artifact(
    active: ActiveRun, obj: Any, name: str | None, overwrite: bool, metadata: Any
) -> list[ArtifactInfo]:
    from tracker.services import artifacts

    run = _saved(active)
    return artifacts.log_artifact(run, obj, name, overwrite=overwrite, metadata=metadata)


def _artifacts(active: ActiveRun) -> list[ArtifactInfo]:
    from tracker.services import artifacts

    return artifacts.list_artifacts(_saved(active))


def _artifact(active: ActiveRun, name: str) -> ArtifactInfo:
    from tracker.services import artifacts

    return artifacts.get_artifact(_saved(active), name)


def _use_dataset(active: ActiveRun, version: Any, context: str) -> None:
    from tracker.services import datasets

    datasets.use_dataset(_saved(active), version, context)


def _inputs(active: ActiveRun) -> list[tuple[Any, str]]:
    from tracker.services import datasets

    return datasets.run_inputs(_saved(active))


def _plot_points(pks: Sequence[int], keys: Any) -> dict[str, Any]:
    """Long histories per run label, for tracker.plots."""
    from tracker.models import Run as RunModel
    from tracker.services import runs as core

    frame = core.history(pks, keys, wide=False, with_run=True)
    known = {
        pk: (name, uid)
        for pk, name, uid in RunModel.objects.filter(pk__in=pks).values_list("pk", "name", "uid")
    }
    labels = _run_labels(known, pks)
    return {labels[pk]: frame[frame["run_id"] == pk] for pk in labels}


def _run_labels(known: Mapping[Any, tuple[str, str]], order: Sequence[Any]) -> dict[Any, str]:
    """A plot label per run (its name, or id when unnamed; name and id when names repeat), from
    ``{key: (name, uid)}`` in ``order``. Shared with the remote mode."""
    labels = {k: known[k][0] or known[k][1] for k in order if k in known}
    if len(set(labels.values())) < len(labels):
        labels = {k: f"{labels[k]} ({known[k][1]})" for k in labels}
    return labels


# -- the sync handle -------------------------------------------------------------------------
class Run(_RunData):
    """A run you log to: params, metrics (buffered), tags, notes, artifacts, lineage.

    ``log_metric``/``log_metrics`` only append to memory; a background thread writes the points
    at least every ``FLUSH_INTERVAL`` seconds and at ``finish()``/exit. As a context manager
    the run ends ``finished``, ``failed`` (an exception; its traceback summary is kept in
    ``error``) or ``killed`` (KeyboardInterrupt / kernel interrupt); exceptions propagate.
    """

    def __init__(self, active: ActiveRun) -> None:
        super().__init__(active)
        if not active.durable:
            # The hot path: a non-durable run's log_metric *is* the buffer's append, which
            # saves a Python call per point (a fifth of the cost of logging one).
            self.log_metric = self._buf.log_metric  # type: ignore[method-assign]

    def __enter__(self) -> Run:
        return self

    def __exit__(self, tp: Any, exc: BaseException | None, tb: Any) -> bool:
        from tracker.services.runs import status_for_exit

        status, error = status_for_exit(exc)
        try:
            self.finish(status, error)
        except Exception as failure:
            if exc is None:
                raise
            warnings.warn(
                f"tracker: could not record the end of run {self.id}: {failure}",
                RuntimeWarning,
                stacklevel=2,
            )
        return False

    # params, tags, notes
    def log_param(self, key: str, value: Any) -> None:
        """Log one param (a JSON value; dicts are flattened with dots).

        Raises:
            InvalidValue: a bad key or a value JSON cannot hold.
            ParamConflict: the param already has a different value.
        """
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Log several params in one transaction; returns all params of the run.

        Nested dicts are flattened (``{"opt": {"lr": 1}}`` is ``opt.lr``). Logging a param
        again with the same value is fine; another value raises :class:`ParamConflict` and
        nothing of the call is stored.
        """
        return call("Run.log_params", _log_params, self._active, params)

    def set_tag(self, key: str, value: Any) -> None:
        """Set one tag (any JSON value; None removes it). Allowed after the run ended."""
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> dict[str, Any]:
        """Set several tags at once (None removes a tag); returns all tags of the run."""
        return call("Run.set_tags", _set_tags, self._active, tags)

    def set_notes(self, text: str, append: bool = False) -> str:
        """Replace the run's notes (Markdown welcome), or append a paragraph; returns them."""
        return call("Run.set_notes", _set_notes, self._active, text, append)

    # metrics
    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        """Record ``value`` for ``key`` at ``step`` (default: the key's previous step + 1).

        Costs a list append: no I/O unless the run is durable. NaN and ±inf are kept.

        Raises:
            InvalidValue: the value is not a number (a string, None, a bool, an array) or the
                step is not an integer; nothing is recorded.
        """
        self._buf.log_metric(key, value, step)
        if self._active.durable:
            call("Run.log_metric", _durable, self._active)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Record several metrics at one step (default: the next step of the most advanced
        key). Validates every value first: one bad value records nothing."""
        self._buf.log_metrics(metrics, step)
        if self._active.durable:
            call("Run.log_metrics", _durable, self._active)

    def flush(self) -> int:
        """Write buffered points now; returns how many were written."""
        return call("Run.flush", _flush, self._active)

    def history(self, keys: str | Sequence[str] | None = None, wide: bool = True) -> pd.DataFrame:
        """Logged metric points as a DataFrame (after writing what is buffered).

        Args:
            keys: one key or several (default: all).
            wide: one row per step and one column per key (a step logged twice keeps its
                last value); ``False`` for long rows of key, step, value, timestamp.
        """
        return call("Run.history", _history, self._active, keys, wide)

    def plot(self, keys: str | Sequence[str] | None = None, x: str = "step") -> Figure:
        """A matplotlib figure of this run's metric histories (one panel per key)."""
        from tracker.plots import plot_histories

        return plot_histories(call("Run.plot", _plot_run, self._active, keys), keys, x=x)

    # artifacts
    def log_artifact(
        self,
        obj: Any,
        name: str | None = None,
        *,
        overwrite: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> ArtifactFile | list[ArtifactFile]:
        """Store a file path, a directory (one artifact per file), bytes, a binary file object,
        a pandas DataFrame (Parquet) or a matplotlib figure (PNG), content-addressed.

        Args:
            obj: what to store.
            name: the artifact's name, a relative path ("plots/loss.png"); required for bytes,
                DataFrames and figures, defaults to the file or directory name otherwise.
            overwrite: replace an artifact of the same name holding other bytes.
            metadata: JSON data stored with the artifact.

        Returns:
            An :class:`ArtifactFile` (a list of them for a directory).

        Raises:
            InvalidValue: an unsupported object, an absolute name or one with "..".
            Conflict: the name holds other bytes (and not ``overwrite``).
            StorageError: the storage failed; nothing partial becomes visible.
        """
        infos = call(
            "Run.log_artifact", _log_artifact, self._active, obj, name, overwrite, metadata
        )
        return _single_or_list(infos, ArtifactFile)

    def artifacts(self) -> list[ArtifactFile]:
        """The run's artifacts, by name."""
        return [ArtifactFile(i) for i in call("Run.artifacts", _artifacts, self._active)]

    def artifact(self, name: str) -> ArtifactFile:
        """One artifact by name; raises ``ArtifactNotFound`` listing the run's artifacts."""
        return ArtifactFile(call("Run.artifact", _artifact, self._active, name))

    # lineage
    def use_dataset(self, version: Any, context: str = "train") -> None:
        """Record that this run used a dataset version (from ``tracker.get_dataset``) in
        ``context`` ("train", "eval", ...). Idempotent."""
        call("Run.use_dataset", _use_dataset, self._active, version, context)

    def inputs(self) -> list[tuple[Any, str]]:
        """The dataset versions this run used: ``[(DatasetVersion, context), ...]``."""
        from tracker._sync.datasets import DatasetVersion

        return [
            (DatasetVersion(info), ctx) for info, ctx in call("Run.inputs", _inputs, self._active)
        ]

    # lifecycle
    def finish(self, status: str = "finished", error: Any = "") -> None:
        """End the run: its buffered points, status and end time are written together.

        In a script the background flusher writes them at once (batched with other runs, so a
        sweep of short runs costs no round trip each); reads in this process see the end
        immediately, other processes within ``FLUSH_INTERVAL``, and everything pending is
        written at exit. Durable runs, runs inside ``transaction.atomic()`` and runs in a
        Jupyter kernel are written before this returns.

        Args:
            status: "finished", "failed" or "killed".
            error: a message or an exception (stored as a traceback summary).

        Raises:
            InvalidValue: an unknown status. Never raises for an unavailable database: the
                points and the status are kept and retried in the background (a warning
                says so).
        """
        call("Run.finish", _finish, self._active, status, _error_text(error))

    def refresh(self) -> Run:
        """Re-read the run from the database (status, params, tags, notes); returns self."""
        call("Run.refresh", _refresh, self._active)
        return self


# -- artifacts -------------------------------------------------------------------------------
class _ArtifactData:
    """Attributes of a stored artifact (no I/O)."""

    def __init__(self, info: ArtifactInfo) -> None:
        self._info = info

    @property
    def info(self) -> ArtifactInfo:
        return self._info

    @property
    def name(self) -> str:
        return self._info.name

    @property
    def kind(self) -> str:
        return self._info.kind

    @property
    def size(self) -> int:
        return self._info.size

    @property
    def sha256(self) -> str:
        return self._info.sha256

    @property
    def run_id(self) -> str:
        return self._info.run_id

    @property
    def created_at(self) -> dt.datetime:
        return self._info.created_at

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._info.metadata)

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name!r} {self.kind} {self.size} bytes "
            f"sha256={self.sha256[:12]}>"
        )


class ArtifactFile(_ArtifactData):
    """A stored artifact of a run. Reading goes to the storage, never to the database."""

    def open(self) -> BinaryIO:
        """A binary file object over the artifact's bytes; close it (or use ``with``)."""
        from tracker.services import artifacts

        return artifacts.open_artifact(self._info)

    def read_bytes(self) -> bytes:
        """All bytes of the artifact."""
        from tracker.services import artifacts

        return artifacts.read_artifact(self._info)

    def download(self, path: str | Path | None = None) -> Path:
        """Copy to ``path`` (a file, or an existing directory; default ``./<name>``), checking
        the sha256; the file appears only once complete. Returns the path written."""
        from tracker.services import artifacts

        return artifacts.download_artifact(self._info, path)

    def load(self) -> Any:
        """A DataFrame for a logged DataFrame (Parquet), bytes for anything else."""
        from tracker.services import artifacts

        return artifacts.load_artifact(self._info)


# -- collections -----------------------------------------------------------------------------
_FILTERS = (
    "status",
    "name",
    "tags",
    "params",
    "metrics",
    "parent",
    "ids",
    "since",
    "order_by",
    "limit",
)


class _RunsQuery:
    """The filters of a runs collection (no database access until a method reads)."""

    def __init__(self, project: Any = None, **filters: Any) -> None:
        self._project = project
        self._filters = {k: v for k, v in filters.items() if v is not None}

    def _with(self, **changes: Any) -> Any:
        filters = {**self._filters, **changes}
        return type(self)(filters.pop("project", self._project), **filters)

    @no_io
    def filter(
        self,
        project: str | None = None,
        *,
        status: str | Sequence[str] | None = None,
        name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        parent: Any = None,
        ids: Sequence[str] | None = None,
        since: dt.datetime | None = None,
    ) -> Any:
        """A narrower collection (the same filters as :func:`tracker.runs`); lazy."""
        changes: dict[str, Any] = {}
        for key, value in (
            ("status", status),
            ("name", name),
            ("parent", parent),
            ("ids", ids),
            ("since", since),
        ):
            if value is not None:
                changes[key] = value
        for key, value in (("tags", tags), ("params", params), ("metrics", metrics)):
            if value is not None:
                changes[key] = {**self._filters.get(key, {}), **value}
        if project is not None:
            changes["project"] = project
        return self._with(**changes)

    @no_io
    def order_by(self, *fields: str) -> Any:
        """Order by run fields ("-started_at" is the default, "name", "status", ...)."""
        return self._with(order_by=list(fields))

    @no_io
    def limit(self, n: int) -> Any:
        """At most ``n`` runs (the most recent first unless ordered otherwise)."""
        return self._with(limit=n)

    def _queryset(self) -> Any:
        from tracker.services import runs as core

        return core.filter_runs(self._project, **self._filters)

    def __repr__(self) -> str:
        parts = [f"project={self._project!r}"] if self._project is not None else []
        parts += [f"{k}={v!r}" for k, v in self._filters.items()]
        return f"<{type(self).__name__} {' '.join(parts) or 'all'}>"


def _q_list(query: _RunsQuery) -> list[ActiveRun]:
    from tracker.services import runs as core

    return [core.attach(r) for r in core.list_runs(query._queryset())]


def _q_count(query: _RunsQuery) -> int:
    from tracker.services import runs as core

    return core.count_runs(query._queryset())


def _q_first(query: _RunsQuery) -> ActiveRun | None:
    from tracker.services import runs as core

    found = core.list_runs(query._queryset()[:1])
    return core.attach(found[0]) if found else None


def _q_frame(query: _RunsQuery) -> pd.DataFrame:
    from tracker.services import runs as core

    return core.runs_frame(query._queryset())


def _q_pks(query: _RunsQuery) -> list[int]:
    return list(query._queryset().values_list("pk", flat=True))


def _q_history(query: _RunsQuery, keys: Any, wide: bool) -> pd.DataFrame:
    from tracker.services import runs as core

    qs = query._queryset()
    pks = list(qs.values_list("pk", flat=True))
    frame = core.history(pks, keys, wide=wide, with_run=True)
    uids = dict(qs.model.objects.filter(pk__in=pks).values_list("pk", "uid"))
    return _pk_level_to_uid(frame, uids, wide)


def _pk_level_to_uid(frame: pd.DataFrame, uids: Mapping[int, str], wide: bool) -> pd.DataFrame:
    if wide:
        frame = frame.rename(index=uids, level=0)
        frame.index = frame.index.set_names(["run", "step"])
        return frame
    frame.insert(0, "run", frame.pop("run_id").map(uids))
    return frame


def _q_compare(query: _RunsQuery, only_differences: bool) -> pd.DataFrame:
    from tracker.services import runs as core

    return core.compare(list(query._queryset()), only_differences=only_differences)


def _q_plot_points(query: _RunsQuery, keys: Any) -> dict[str, Any]:
    return _plot_points(_q_pks(query), keys)


class Runs(_RunsQuery):
    """A lazy, filterable collection of runs: ``tracker.runs(project="mnist", status="finished")``.

    Nothing is read until you iterate, index, take ``len()``, or call ``frame()``, ``list()``,
    ``count()``, ``first()``, ``history()``, ``compare()`` or ``plot()``.
    """

    def list(self) -> list[Run]:
        """The runs, most recent first (or as ordered)."""
        return [Run(a) for a in call("Runs.list", _q_list, self)]

    def count(self) -> int:
        """How many runs match (one COUNT query)."""
        return call("Runs.count", _q_count, self)

    def first(self) -> Run | None:
        """The first run (most recent unless ordered otherwise), or None."""
        active = call("Runs.first", _q_first, self)
        return Run(active) if active is not None else None

    def frame(self) -> pd.DataFrame:
        """One row per run, as :func:`tracker.runs_frame`."""
        return call("Runs.frame", _q_frame, self)

    def history(self, keys: str | Sequence[str] | None = None, wide: bool = True) -> pd.DataFrame:
        """Metric histories of all these runs: index (run, step), one column per key (or long
        rows with a run column when ``wide=False``)."""
        return call("Runs.history", _q_history, self, keys, wide)

    def compare(self, only_differences: bool = False) -> pd.DataFrame:
        """These runs side by side, as :func:`tracker.compare`."""
        return call("Runs.compare", _q_compare, self, only_differences)

    def plot(self, keys: str | Sequence[str] | None = None, x: str = "step") -> Figure:
        """Metric histories of these runs in one matplotlib figure (a panel per key)."""
        from tracker.plots import plot_histories

        return plot_histories(call("Runs.plot", _q_plot_points, self, keys), keys, x=x)

    def __iter__(self) -> Iterator[Run]:
        return iter(self.list())

    def __len__(self) -> int:
        return self.count()

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            if index.step not in (None, 1) or (index.start or 0) < 0 or (index.stop or 0) < 0:
                return self.list()[index]
            start = index.start or 0
            runs = self
            if index.stop is not None:
                current = self._filters.get("limit")
                runs = self._with(limit=index.stop if current is None else min(current, index.stop))
            return runs.list()[start:]
        if not isinstance(index, int):
            raise TypeError(f"Runs indices are integers or slices, not {type(index).__name__}")
        if index < 0:
            return self.list()[index]
        current = self._filters.get("limit")
        found = self._with(limit=index + 1 if current is None else min(current, index + 1)).list()
        if len(found) <= index:
            raise IndexError(f"only {len(found)} runs match")
        return found[index]


# -- functions -------------------------------------------------------------------------------
def _call_site(depth: int = 2) -> tuple[tuple[str, int] | None, int | None]:
    """(file, line) of the user's call and the IPython execution count (None outside IPython)."""
    try:
        frame = sys._getframe(depth)
        site = (frame.f_code.co_filename, frame.f_lineno)
    except ValueError:
        site = None
    execution = None
    ipython = sys.modules.get("IPython")
    if ipython is not None:
        shell = ipython.get_ipython()
        if shell is not None:
            execution = getattr(shell, "execution_count", None)
    return site, execution


def _start(
    project: Any,
    name: Any,
    params: Any,
    tags: Any,
    notes: str,
    parent: Any,
    resume: Any,
    durable: Any,
    system_metrics: Any,
    site: Any,
    execution: Any,
) -> ActiveRun:
    from tracker.services import runs as core

    return core.start_run(
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


def start_run(
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
) -> Run:
    """Start a run (status ``running``); use it as a context manager to end it.

    Args:
        project: project name (created on first use).
        name: a human name; several runs may share it.
        params: the run's configuration (JSON values; nested dicts flattened with dots).
        tags: labels you may change later (JSON values).
        notes: free text (Markdown).
        parent: the parent run (a run or its id) of a nested run.
        resume: the id of an existing run to continue: status back to ``running``, metric
            steps continue after the last logged step, params may be added (not changed).
        durable: commit every ``log_metric`` before it returns (default: the
            ``DURABLE_METRICS`` setting).
        system_metrics: sample CPU, memory (and GPU) every ``SYSTEM_METRICS_INTERVAL``
            seconds as ``system/*`` metrics (default: the ``SYSTEM_METRICS`` setting).

    Returns:
        A :class:`Run` handle.

    Captured automatically: start time, host, pid, Python and key package versions, the git
    commit and whether the work tree is dirty (when run inside a repository).

    Re-running a notebook cell never fails: a run that an earlier execution of the same cell
    (same project, name and parent, or the same line for unnamed runs) left running is
    finished first, with a one-line notice. Runs started in the same cell execution (a loop)
    never replace each other.

    Raises:
        InvalidValue: bad params, tags or name (nothing is created).
        ParamConflict: resuming with a param that has another value.
        RunNotFound: ``parent`` or ``resume`` names no run.
    """
    from tracker_api import remote  # remote mode (issue 6): configure(server_url=...)

    site, execution = _call_site()
    if remote.enabled():
        return remote.start_run(  # type: ignore[return-value]
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
    active = call(
        "start_run",
        _start,
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
    return Run(active)


def _flush_all() -> int:
    from tracker.services import metrics

    return metrics.flush_all()


@entry
def flush() -> int:
    """Write everything this process has buffered (points, new runs, ends of runs) now.

    Reads through tracker in this process never need it (they write what is pending first);
    use it before another process, or raw ORM queries, must see this process's latest work.

    Returns:
        The number of metric points written.

    Raises:
        DatabaseUnavailable: the database cannot be reached; nothing is lost, the points stay
            buffered and the background flusher keeps retrying.
    """
    from tracker_api import remote

    if remote.enabled():
        return remote.flush_all()
    return _flush_all()


def _get(run_id: Any) -> ActiveRun:
    from tracker.services import runs as core

    return core.attach(core.get_run(run_id))


@entry
def get_run(run_id: str) -> Run:
    """The run with this id (or a unique prefix of at least 4 characters).

    Its status is current: a run whose process stopped sending heartbeats reads as ``killed``.
    Tags, notes, artifacts and even metrics can still be added to an ended run.

    Raises:
        RunNotFound: no run has this id (or the prefix is ambiguous).
    """
    from tracker_api import remote

    if remote.enabled():
        from tracker_api import remote_reads

        return remote_reads.get_run(run_id)  # type: ignore[return-value]
    return Run(_get(run_id))


def runs(
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
) -> Runs:
    """A lazy, filterable collection of runs (nothing is read until it is used).

    Args:
        project: project name.
        status: one status or several ("running", "finished", "failed", "killed").
        name: exact name, or a pattern with ``*`` ("resnet-*").
        tags, params: ``{"key": value}`` exact matches, or Django-style lookups on the
            value: ``{"lr__gt": 0.001}``, ``{"optimizer__in": ["adam", "sgd"]}``,
            ``{"key__ne": value}``.
        metrics: on last values, ``{"val_loss__lt": 0.3}`` (gt, gte, lt, lte, exact).
        parent: only the children of this run.
        ids: only these run ids.
        since: started at or after this time.
        order_by: run fields, default ``["-started_at"]``.
        limit: at most this many runs.

    Returns:
        A :class:`Runs` collection: iterate it, ``len()`` it, or call ``.frame()``,
        ``.history()``, ``.compare()``, ``.plot()``, ``.filter(...)``.

    Raises:
        InvalidValue: an unknown status or a malformed filter (when the collection is used).
    """
    from tracker_api import remote

    cls: Any = Runs
    if remote.enabled():
        from tracker_api.remote_reads import RemoteRuns as cls
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


def _frame(project: Any, filters: dict[str, Any]) -> pd.DataFrame:
    from tracker.services import runs as core

    return core.runs_frame(core.filter_runs(project, **filters))


@entry
def runs_frame(
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
    """Runs as a pandas DataFrame: one row per run, indexed by run id.

    Columns: name, project, status, started_at, ended_at, duration, parent, ``params.*``,
    ``metrics.*`` (last values), ``tags.*``, datasets (versions used), host, git_commit.
    Filters are those of :func:`runs`. Stale running runs are reported (and stored) as killed.

    Raises:
        InvalidValue: an unknown status or a malformed filter.
    """
    filters = dict(
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
    from tracker_api import remote

    if remote.enabled():
        from tracker_api import remote_reads

        return remote_reads.runs_frame(project, **filters)
    return _frame(project, {k: v for k, v in filters.items() if v is not None})


def _run_refs(runs: Any) -> list[Any]:
    if isinstance(runs, _RunsQuery):
        return list(runs._queryset())
    if isinstance(runs, (str, _RunData)) or hasattr(runs, "uid"):
        return [runs]
    try:
        import pandas as pd

        if isinstance(runs, pd.DataFrame):
            return list(runs.index)
    except ImportError:  # pragma: no cover - pandas is a dependency
        pass
    return list(runs)


def _compare(runs: Any, only_differences: bool) -> pd.DataFrame:
    from tracker.services import runs as core

    return core.compare(_run_refs(runs), only_differences=only_differences)


@entry
def compare(runs: Any, *, only_differences: bool = False) -> pd.DataFrame:
    """Runs side by side: a column per run (named by run name, or id when names repeat), a row
    per field: status, duration, ``params.*``, ``metrics.*`` last value with ``(min)`` and
    ``(max)``, ``tags.*``.

    Args:
        runs: runs, run ids, a :class:`Runs` collection or a ``runs_frame`` DataFrame.
        only_differences: keep only the rows whose values differ between the runs.

    Raises:
        RunNotFound: an id names no run.
        InvalidValue: no runs given.
    """
    from tracker_api import remote

    if remote.enabled():
        from tracker_api import remote_reads

        return remote_reads.compare(runs, only_differences=only_differences)
    return _compare(runs, only_differences)


def _plot_refs(runs: Any, keys: Any) -> dict[str, Any]:
    from tracker.services import runs as core

    pks = [core.resolve(r).pk for r in _run_refs(runs)]
    return _plot_points(pks, keys)


def plot_metrics(
    runs: Any,
    keys: str | Sequence[str] | None = None,
    *,
    x: str = "step",
    max_points: int = 2000,
    ax: Any = None,
    title: str | None = None,
) -> Figure:
    """Metric histories across runs in one matplotlib figure: a panel per key, a line per run.

    Args:
        runs: a run, runs, run ids, a :class:`Runs` collection or a ``runs_frame`` DataFrame.
        keys: the metrics to draw (default: all).
        x: "step", "time" (wall clock) or "relative" (seconds since the run's first point).
        max_points: thin each line to about this many points, keeping every bucket's min and
            max so spikes stay visible (0: draw all).
        ax: an existing Axes to draw one key into.
        title: a figure title.

    Returns:
        A ``matplotlib.figure.Figure`` (shown by Jupyter as a cell result).

    Raises:
        InvalidValue: none of the runs has the keys, or bad ``x``/``ax``.
        RunNotFound: an id names no run.
    """
    from tracker.plots import plot_histories
    from tracker_api import remote

    if remote.enabled():
        from tracker_api import remote_reads

        return remote_reads.plot_metrics(runs, keys, x=x, max_points=max_points, ax=ax, title=title)
    series = call("plot_metrics", _plot_refs, runs, keys)
    return plot_histories(series, keys, x=x, max_points=max_points, ax=ax, title=title)
