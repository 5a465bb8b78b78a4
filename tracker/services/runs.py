"""Runs: start, resume, finish, params, tags, notes, the killed-by-lost-heartbeat rule, queries.

A run started in this process is an :class:`ActiveRun`: the ``Run`` row plus the metric buffer
that the background flusher drains. Re-executing a notebook cell that starts a run never fails:
a run that an *earlier execution* of the same cell (same project, name and parent; for unnamed
runs, the same line of the same cell) left running is finished first, then a new run starts.
Runs started in one cell execution (a loop over trials) never replace each other.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
import threading
import traceback
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, QuerySet
from django.db.models.fields.json import KeyTransform
from django.db.models.functions import Coalesce
from django.utils import timezone

from tracker import conf
from tracker._dispatch import in_kernel
from tracker.exceptions import InvalidValue, ParamConflict, RunNotFound
from tracker.models import MetricSummary, Project, Run
from tracker.models.runs import new_run_uid
from tracker.services import metrics as metrics_core
from tracker.services._runs_env import capture
from tracker.services._runs_sql import project_id, update_row
from tracker.services._runs_values import (
    check_name,
    flatten,
    json_value,
    same_json,
)
from tracker.services.projects import get_or_create_project

STATUSES = tuple(Run.Status.values)
ERROR_CHARS = 8000
UID_PREFIX_MIN = 4


class ActiveRun:
    """A run this process writes to: the row as last read or written, and its metric buffer.

    A new run's row is written by its first flush (within ``FLUSH_INTERVAL``, or at once when
    an operation needs it), together with its first points: starting and finishing a short
    run is then one transaction, and ``start_run`` never waits for the database. Its Django
    model instance is built only when something asks for it.
    """

    __slots__ = (
        "_run",
        "_values",
        "_project",
        "_parent",
        "buffer",
        "durable",
        "site",
        "execution",
        "finished",
        "lock",
        "pid",
    )

    def __init__(
        self,
        run: Run | None,
        buffer: metrics_core.MetricBuffer,
        *,
        values: dict[str, Any] | None = None,
        project: Project | None = None,
        parent: Run | None = None,
        durable: bool = False,
        site: tuple | None = None,
        execution: int | None = None,
        finished: bool = False,
    ) -> None:
        self._run = run
        self._values = values
        self._project = project
        self._parent = parent
        self.buffer = buffer
        self.durable = durable
        self.site = site
        self.execution = execution
        self.finished = finished
        self.lock = threading.Lock()
        self.pid = os.getpid()  # the process that owns the run's end

    @property
    def run(self) -> Run:
        if self._run is None:
            run = Run(**self._values)
            run.project = self._project
            run.parent = self._parent
            self._run = run
            _adopt(self)
        return self._run

    @run.setter
    def run(self, value: Run) -> None:
        self._run = value

    @property
    def pk(self) -> int | None:
        return self.buffer.run_pk

    @property
    def uid(self) -> str:
        return self._run.uid if self._run is not None else self._values["uid"]

    def set_fields(self, fields: Mapping[str, Any]) -> None:
        """Record fields just written (or about to be) on the in-memory row."""
        if self._run is None:
            self._values.update(fields)
            return
        for k, v in fields.items():
            setattr(self._run, k, v)


# Runs started (or resumed) by this process and not finished yet, by uid.
_open: dict[str, ActiveRun] = {}
_open_lock = threading.Lock()


def _forget_after_fork() -> None:
    # A forked worker may log into its parent's runs, but they are not its own to end.
    global _open_lock
    _open_lock = threading.Lock()
    _open.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def open_runs() -> list[ActiveRun]:
    with _open_lock:
        return list(_open.values())


def ensure_created(active: ActiveRun) -> Run:
    """Write a new run's row now if the flusher has not yet; returns the (saved) row."""
    if active.buffer.run_pk is None:
        metrics_core.flush_buffer(active.buffer)
    _adopt(active)
    return active.run


def _adopt(active: ActiveRun) -> None:
    """Give the in-memory row the primary keys its creation assigned."""
    run = active._run
    if run is None:
        return  # built later, from the buffer's keys
    pk = active.buffer.run_pk
    if run.pk is None and pk is not None:
        run.pk = pk
        run._state.adding = False
        run._state.db = connection.alias
        project_pk = active.buffer.created.get("project_id") if active.buffer.created else None
        if project_pk is not None and run.project.pk is None:
            run.project.pk = project_pk
            run.project._state.adding = False
        run.project_id = run.project.pk


# -- errors ----------------------------------------------------------------------------------
def error_summary(exc: BaseException) -> str:
    """The exception line plus the innermost frames, short enough to read in a table."""
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    text = "".join(lines).rstrip()
    if len(text) <= ERROR_CHARS:
        return text
    head = "".join(traceback.format_exception_only(type(exc), exc)).rstrip()
    tail = text[-(ERROR_CHARS - len(head) - 40) :]
    return f"{head}\n... (traceback shortened) ...\n{tail}"


def status_for_exit(exc: BaseException | None) -> tuple[str, str]:
    """(status, error) of a run whose ``with`` block ended with ``exc`` (None: normally)."""
    if exc is None:
        return Run.Status.FINISHED, ""
    if isinstance(exc, KeyboardInterrupt):
        return Run.Status.KILLED, "KeyboardInterrupt: interrupted (Ctrl-C or a kernel interrupt)."
    if isinstance(exc, SystemExit) and exc.code in (None, 0):
        return Run.Status.FINISHED, ""
    return Run.Status.FAILED, error_summary(exc)


# -- resolving -------------------------------------------------------------------------------
def lookup_uid(qs: QuerySet, uid: str) -> Run | None:
    """The run of ``qs`` whose id is ``uid``, else the one whose id starts with it (given
    UID_PREFIX_MIN characters or more), else None.

    Raises:
        RunNotFound: the prefix matches several runs of ``qs``.
    """
    qs = qs.select_related("project", "parent")
    found = qs.filter(uid=uid).first()
    if found is None and len(uid) >= UID_PREFIX_MIN:
        matches = list(qs.filter(uid__startswith=uid)[:2])
        if len(matches) > 1:
            raise RunNotFound(f"The run id prefix {uid!r} matches several runs; give more characters of the id.")
        found = matches[0] if matches else None
    return found


def resolve(ref: Any) -> Run:
    """The Run for a uid (or unique prefix of 4+ characters), a handle, a Run or a pk."""
    if isinstance(ref, Run):
        return ref
    if isinstance(ref, ActiveRun):
        return ensure_created(ref)
    active = getattr(ref, "_active", None)
    if isinstance(active, ActiveRun):  # a Run / AsyncRun handle
        return ensure_created(active)
    if isinstance(ref, int) and not isinstance(ref, bool):
        return get_by_pk(ref)
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidValue(
            f"A run is given by its id (a string such as 'a1b2c3d4e5f6a7b8'), a run object or "
            f"a Run model, not {type(ref).__name__} ({ref!r:.40})."
        )
    uid = ref.strip()
    with _open_lock:
        mine = _open.get(uid)
    if mine is not None:
        return ensure_created(mine)
    found = Run.objects.filter(uid=uid).select_related("project", "parent").first()
    if found is None:
        # Perhaps a run of this process whose row the flusher has not written yet.
        metrics_core.flush_pending()
        found = lookup_uid(Run.objects.all(), uid)
    if found is not None:
        return found
    raise RunNotFound(
        f"There is no run with id {uid!r}. List runs with tracker.runs_frame(project=...) to "
        f"find its id."
    )


def get_by_pk(pk: int) -> Run:
    try:
        return Run.objects.select_related("project", "parent").get(pk=pk)
    except Run.DoesNotExist:
        raise RunNotFound(f"Run #{pk} does not exist (it may have been deleted).") from None


def get_run(ref: Any) -> Run:
    """A run by id, with its status brought up to date (a lost heartbeat reads as killed)."""
    reap_stale()
    if isinstance(ref, Run):
        ref = ref.pk
    return resolve(ref)


# -- starting --------------------------------------------------------------------------------
def _project(project: str | Project) -> Project:
    """The project (created if new) by name; a ``Project`` is returned as is."""
    if isinstance(project, Project):
        return project
    name = check_name(project, "project name")
    pk = project_id(name) if name else None
    if pk is None:
        return get_or_create_project(name)
    proj = Project(pk=pk, name=name)
    proj._state.adding = False
    proj._state.db = connection.alias
    return proj


def project_pk(project: str | Project | int) -> int:
    if isinstance(project, int):
        return project
    if isinstance(project, str):
        pk = project_id(project)
        if pk is not None:
            return pk
    return _project(project).pk


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
    site: tuple | None = None,
    execution: int | None = None,
) -> ActiveRun:
    """Start (or resume) a run and hand its buffer to the flusher; see :func:`tracker.start_run`.

    A new run's row is written at once when ``durable`` or inside the caller's
    ``transaction.atomic()`` (so it commits or rolls back with the caller's work); otherwise
    by its first flush.
    """
    flat_params = flatten(params or {}, "param")
    flat_tags = flatten(tags or {}, "tag")
    name = check_name(name)
    if not isinstance(notes, str):
        raise InvalidValue(f"notes must be a string, not {type(notes).__name__}.")
    if isinstance(project, Project):
        proj = project
    else:
        proj_name = check_name(project, "project name")
        if not proj_name:
            raise InvalidValue("A project name must be a non-empty string, such as 'mnist'.")
    durable = bool(conf.get("DURABLE_METRICS")) if durable is None else bool(durable)
    sysm = bool(conf.get("SYSTEM_METRICS")) if system_metrics is None else bool(system_metrics)
    if resume is not None:
        return _resume(resume, flat_params, flat_tags, notes, durable, sysm)
    parent_run = resolve(parent) if parent is not None else None
    env = capture()
    now = timezone.now()
    values = dict(
        uid=new_run_uid(),
        name=name,
        parent_id=parent_run.pk if parent_run is not None else None,
        status=Run.Status.RUNNING,
        params=flat_params,
        tags={k: v for k, v in flat_tags.items() if v is not None},
        notes=notes,
        error="",
        started_at=now,
        heartbeat_at=now,
        heartbeat_timeout=float(conf.get("HEARTBEAT_TIMEOUT")),
        host=env.host,
        pid=env.pid,
        git_commit=env.git_commit,
        git_dirty=env.git_dirty,
        python_version=env.python_version,
        packages=env.packages,
    )
    if not isinstance(project, Project):
        proj = Project(name=proj_name)
    key = (proj.name, name or ("site", site), values["parent_id"])
    _supersede(key, execution)
    interval = float(conf.get("SYSTEM_METRICS_INTERVAL")) if sysm else None
    inline = connection.in_atomic_block
    spec = {"values": values, "project": proj.pk if proj.pk is not None else proj.name}
    buf = metrics_core.MetricBuffer(
        None, owned=True, inline=inline, system_interval=interval, create=spec
    )
    active = ActiveRun(
        None,
        buf,
        values=dict(values),
        project=proj,
        parent=parent_run,
        durable=durable,
        site=key,
        execution=execution,
    )
    if durable or inline:
        ensure_created(active)
    with _open_lock:
        _open[values["uid"]] = active
    metrics_core.register(buf)
    return active


def _supersede(key: tuple, execution: int | None) -> None:
    """Finish runs an earlier execution of the same notebook cell left running."""
    if execution is None:
        return
    for active in open_runs():
        if active.site == key and active.execution is not None and active.execution < execution:
            finish_run(active, Run.Status.FINISHED, "")
            label = f"{active.run.name!r} " if active.run.name else ""
            print(
                f"tracker: run {label}{active.run.uid} was still running from an earlier "
                f"execution of this cell; it is finished now and a new run starts "
                f"(pass resume=... to continue a run instead).",
                file=sys.stderr,
            )


def _resume(
    ref: Any,
    params: dict[str, Any],
    tags: dict[str, Any],
    notes: str,
    durable: bool,
    system_metrics: bool,
) -> ActiveRun:
    run = resolve(ref)
    with _open_lock:
        existing = _open.get(run.uid)
    if existing is not None and not existing.finished:
        # Already open in this process (a cell re-run with resume=): keep the one buffer.
        if params:
            log_params(existing, params)
        if tags:
            set_tags(existing, tags)
        if notes:
            set_notes(existing, notes, append=True)
        return existing
    env = capture()
    inline = connection.in_atomic_block  # the caller's own atomic block is open
    run, steps = reopen(
        run, params, tags, notes, host=env.host, pid=env.pid,
        heartbeat_timeout=float(conf.get("HEARTBEAT_TIMEOUT")),
    )
    interval = float(conf.get("SYSTEM_METRICS_INTERVAL")) if system_metrics else None
    buf = metrics_core.MetricBuffer(
        run.pk, next_steps=steps, owned=True, inline=inline, system_interval=interval
    )
    active = ActiveRun(run, buf, durable=durable)
    with _open_lock:
        _open[run.uid] = active
    metrics_core.register(buf)
    return active


def reopen(
    run: Run,
    params: Mapping[str, Any],
    tags: Mapping[str, Any],
    notes: str,
    *,
    host: str,
    pid: int | None,
    heartbeat_timeout: float | None,
) -> tuple[Run, dict[str, int]]:
    """The database half of resuming: in one transaction, merge params (a changed value raises
    ParamConflict and changes nothing) and tags, append notes, set the run running again on
    ``host``/``pid`` with a fresh heartbeat. Returns the row and each key's next metric step.

    The local ``start_run(resume=...)`` and the REST API's resume endpoint both call this."""
    now = timezone.now()
    with transaction.atomic():
        run = (
            Run.objects.select_for_update(of=("self",))
            .select_related("project", "parent")
            .get(pk=run.pk)
        )
        run.params = _merge_params(run, params)
        run.tags = _merge_tags(run.tags, tags)
        if notes:
            run.notes = f"{run.notes}\n\n{notes}" if run.notes else notes
        run.status = Run.Status.RUNNING
        run.ended_at = None
        run.error = ""
        run.heartbeat_at = now
        run.heartbeat_timeout = heartbeat_timeout
        run.host, run.pid = host, pid
        run.save(
            update_fields=[
                "params",
                "tags",
                "notes",
                "status",
                "ended_at",
                "error",
                "heartbeat_at",
                "heartbeat_timeout",
                "host",
                "pid",
            ]
        )
        steps = next_steps(run)
    return run, steps


def attach(run: Run) -> ActiveRun:
    """An ActiveRun for a run read back (get_run): logging works, no heartbeat, no final status.

    If this process started the run, its own ActiveRun is returned, so both handles share one
    buffer and step counters.
    """
    with _open_lock:
        existing = _open.get(run.uid)
    if existing is not None:
        return existing
    buf = metrics_core.MetricBuffer(run.pk, owned=False, registered=False)
    return ActiveRun(run, buf, finished=True)


def next_steps(run: Run) -> dict[str, int]:
    return {
        key: step + 1
        for key, step in MetricSummary.objects.filter(run=run).values_list("key", "last_step")
    }


# -- finishing -------------------------------------------------------------------------------
def finish_run(active: ActiveRun, status: str = Run.Status.FINISHED, error: str = "") -> ActiveRun:
    """End a run: its remaining points and final status are written by the background flusher
    at once (in one transaction with other runs' pending writes), so finishing costs no
    database round trip. Durable runs, runs inside the caller's ``transaction.atomic()`` and
    runs in a Jupyter kernel are written before this returns. Reads in this process always see
    the end (they write what is pending first); other processes within ``FLUSH_INTERVAL``.

    Never raises for a database outage: the flusher keeps retrying (a warning says so).
    """
    if status not in STATUSES or status == Run.Status.RUNNING:
        raise InvalidValue(f"A run finishes as 'finished', 'failed' or 'killed', not {status!r}.")
    if not isinstance(error, str):
        error = str(error)
    if active.pid != os.getpid():
        # A forked worker ending its copy of the parent's run: its points go in, the run's
        # status stays the parent's to set.
        metrics_core.submit(active.buffer)
        return active
    with active.lock:
        now = timezone.now()
        fields = {"status": str(status), "ended_at": now, "error": error[: ERROR_CHARS * 2]}
        buf = active.buffer
        if buf.final is not None and buf.done:
            # Finishing again (an ended run read back, or twice): just update the row.
            ensure_created(active)
            update_row(Run, active.pk, fields)
        else:
            buf.final = fields
            buf.system_interval = None
            if active.durable or buf.inline or in_kernel():
                # In a notebook the end is written before the cell ends: a kernel can die (or
                # be restarted by force) right after, and a cell is not a tight loop anyway.
                _flush_now(active)
            else:
                metrics_core.submit(buf)
        active.finished = True
        with _open_lock:
            _open.pop(active.uid, None)
        _adopt(active)
        active.set_fields(fields)
    return active


def _flush_now(active: ActiveRun) -> None:
    buf = active.buffer
    try:
        metrics_core.flush_buffer(buf)
    except metrics_core._unavailable_errors() as exc:
        buf.inline = False
        metrics_core.get_sink().close()
        metrics_core.submit(buf)
        warnings.warn(
            f"tracker: could not write run {active.uid} now ({type(exc).__name__}: {exc}); "
            f"its {len(buf.rows)} pending points and changes are kept and retried in the "
            f"background.",
            RuntimeWarning,
            stacklevel=3,
        )


def flush(active: ActiveRun) -> int:
    """Write buffered points now (this thread); returns how many."""
    n = metrics_core.flush_buffer(active.buffer)
    _adopt(active)
    return n


def log_metric_durable(active: ActiveRun) -> None:
    """Durable mode: commit what was just appended, or leave it to the flusher on an outage."""
    _flush_now(active)


# -- params, tags, notes ---------------------------------------------------------------------
def _merge_params(run: Run, new: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(run.params or {})
    for key, value in new.items():
        if key in merged and not same_json(merged[key], value):
            raise ParamConflict(
                f"Param {key!r} of run {run.uid} is already {merged[key]!r}; it cannot change to "
                f"{value!r}. Params describe a run's configuration: start a new run for a new "
                f"value, or record values that change as metrics or tags."
            )
        merged[key] = value
    return merged


def _merge_tags(current: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(current or {})
    for key, value in new.items():
        if value is None:
            merged.pop(key, None)  # set_tag(key, None) removes the tag
        else:
            merged[key] = value
    return merged


def _target(ref: Any) -> tuple[int, ActiveRun | None]:
    if isinstance(ref, ActiveRun):
        return ensure_created(ref).pk, ref
    return resolve(ref).pk, None


def log_params(ref: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    """Add params (nested dicts flattened with dots); returns all params of the run.

    Raises:
        InvalidValue: a bad key or a value JSON cannot hold; nothing is stored.
        ParamConflict: a key already has another value; nothing is stored.
    """
    flat = flatten(params, "param")
    pk, active = _target(ref)
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=pk)
        merged = _merge_params(run, flat)
        if merged != run.params:
            Run.objects.filter(pk=pk).update(params=merged)
    if active is not None:
        active.set_fields({"params": merged})
    return merged


def set_tags(ref: Any, tags: Mapping[str, Any]) -> dict[str, Any]:
    """Set tags (a value of None removes the tag); allowed after the run ended."""
    flat = flatten(tags, "tag")
    pk, active = _target(ref)
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=pk)
        merged = _merge_tags(run.tags, flat)
        Run.objects.filter(pk=pk).update(tags=merged)
    if active is not None:
        active.set_fields({"tags": merged})
    return merged


def set_notes(ref: Any, text: str, *, append: bool = False) -> str:
    """Replace (or append a paragraph to) the run's notes; returns the notes."""
    if not isinstance(text, str):
        raise InvalidValue(f"Notes must be a string, not {type(text).__name__}.")
    pk, active = _target(ref)
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=pk)
        notes = f"{run.notes}\n\n{text}" if append and run.notes else text
        Run.objects.filter(pk=pk).update(notes=notes)
    if active is not None:
        active.set_fields({"notes": notes})
    return notes


def refresh(active: ActiveRun) -> Run:
    """Re-read the row (status may have changed elsewhere, e.g. reported killed)."""
    ensure_created(active)
    reap_stale()
    fresh = get_by_pk(active.pk)
    active.run = fresh
    return fresh


# -- lost heartbeats -------------------------------------------------------------------------
def reap_stale(now: dt.datetime | None = None) -> list[int]:
    """Mark running runs whose heartbeat is older than their timeout as killed; returns pks.

    Read-only (one small SELECT) unless something is stale. Runs open in this process are alive
    by definition and never reaped here.
    """
    metrics_core.flush_pending()  # read this process's own writes
    now = now or timezone.now()
    default = float(conf.get("HEARTBEAT_TIMEOUT"))
    mine = {a.pk for a in open_runs()}
    stale = []
    rows = Run.objects.filter(status=Run.Status.RUNNING).values_list(
        "pk", "heartbeat_at", "started_at", "heartbeat_timeout"
    )
    for pk, beat, started, timeout in rows:
        if pk in mine:
            continue
        last = beat or started
        if last + dt.timedelta(seconds=timeout or default) < now:
            stale.append(pk)
    if stale:
        with transaction.atomic():
            Run.objects.filter(pk__in=stale, status=Run.Status.RUNNING).update(
                status=Run.Status.KILLED,
                ended_at=Coalesce(F("heartbeat_at"), F("started_at")),
                error=(
                    f"{metrics_core.HEARTBEAT_LOST}: the process stopped sending heartbeats "
                    f"(killed, crashed, or its machine went away)."
                ),
            )
    return stale


# -- querying --------------------------------------------------------------------------------
_LOOKUPS = {
    "exact",
    "iexact",
    "gt",
    "gte",
    "lt",
    "lte",
    "in",
    "contains",
    "icontains",
    "startswith",
    "istartswith",
    "endswith",
    "iendswith",
    "isnull",
    "ne",
}


def _split_lookup(key: str) -> tuple[str, str]:
    base, sep, lookup = key.rpartition("__")
    if sep and lookup in _LOOKUPS and base:
        return base, lookup
    return key, "exact"


_TEXT_LOOKUPS = {"iexact", "icontains", "startswith", "istartswith", "endswith", "iendswith"}
_ORDER_LOOKUPS = {"gt", "gte", "lt", "lte"}


def _check_lookup_value(raw_key: Any, lookup: str, value: Any, what: str) -> None:
    """Refuse a value its lookup cannot compare with, before the database does (as an error
    that is not the caller's to read)."""
    if lookup in _TEXT_LOOKUPS and not isinstance(value, str):
        raise InvalidValue(f"The {what} filter {raw_key!r} compares text; give a string, not {value!r:.60}.")
    if lookup in _ORDER_LOOKUPS and (isinstance(value, bool) or not isinstance(value, (int, float, str))):
        raise InvalidValue(
            f"The {what} filter {raw_key!r} orders values; give a number or a string, not {value!r:.60}."
        )
    if lookup == "contains":
        if value is None:
            raise InvalidValue(f"The {what} filter {raw_key!r} needs a value; use __isnull to find missing keys.")
        if connection.vendor == "sqlite":
            raise InvalidValue(
                f"The {what} filter {raw_key!r} (JSON containment) needs PostgreSQL; on SQLite use "
                f"__icontains for text or an exact value."
            )


def _json_filters(qs: QuerySet, column: str, spec: Any, what: str) -> QuerySet:
    if spec is None:
        return qs
    if not isinstance(spec, Mapping):
        raise InvalidValue(
            f"{what} filters are a dict such as {{'lr': 0.01}} or {{'lr__gt': 0.001}}, not "
            f"{type(spec).__name__}."
        )
    for i, (raw_key, value) in enumerate(spec.items()):
        key, lookup = _split_lookup(str(raw_key))
        _check_lookup_value(raw_key, lookup, value, what)
        alias = f"_{column}_{i}"
        qs = qs.alias(**{alias: KeyTransform(key, column)})
        if lookup == "ne":
            qs = qs.exclude(**{alias: json_value(value, f"{what} filter {key!r}")})
        elif lookup == "isnull":
            qs = qs.filter(**{f"{alias}__isnull": bool(value)})
        else:
            if lookup == "in":
                if not isinstance(value, (list, tuple, set)):
                    raise InvalidValue(
                        f"The {what} filter {raw_key!r} takes a list of values, not {value!r:.60}."
                    )
                value = [json_value(v, f"{what} filter {key!r}") for v in value]
            else:
                value = json_value(value, f"{what} filter {key!r}")
            qs = qs.filter(**{f"{alias}__{lookup}": value})
    return qs


def _metric_filters(qs: QuerySet, spec: Any) -> QuerySet:
    if spec is None:
        return qs
    if not isinstance(spec, Mapping):
        raise InvalidValue(
            "metrics filters are a dict such as {'val_loss__lt': 0.3} (last values)."
        )
    for raw_key, value in spec.items():
        key, lookup = _split_lookup(str(raw_key))
        if lookup not in {"exact", "gt", "gte", "lt", "lte", "isnull"}:
            raise InvalidValue(
                f"Metric filters support gt, gte, lt, lte, exact and isnull, not {lookup!r}."
            )
        cond = MetricSummary.objects.filter(run=OuterRef("pk"), key=key)
        if lookup == "isnull":
            cond = cond.filter(last__isnull=bool(value))
        else:
            try:
                number = None if isinstance(value, bool) else float(value)
            except (TypeError, ValueError):
                number = None
            if number is None:
                raise InvalidValue(
                    f"The metrics filter {raw_key!r} compares last values with a number, not "
                    f"{value!r:.60}."
                )
            cond = cond.filter(**{f"last__{lookup}": number})
        qs = qs.filter(Exists(cond))
    return qs


def _name_filter(qs: QuerySet, name: str) -> QuerySet:
    if "*" not in name:
        return qs.filter(name=name)
    pattern = "^" + ".*".join(re.escape(part) for part in name.split("*")) + "$"
    return qs.filter(name__regex=pattern)


def filter_runs(
    project: Any = None,
    *,
    status: str | Sequence[str] | None = None,
    name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    parent: Any = None,
    ids: Iterable[str] | None = None,
    since: dt.datetime | None = None,
    order_by: Sequence[str] | None = None,
    limit: int | None = None,
) -> QuerySet:
    """A Run queryset for the filters of :func:`tracker.runs` (lazy; no query runs here)."""
    qs = Run.objects.all()
    if project is not None:
        if isinstance(project, Project):
            qs = qs.filter(project=project)
        else:
            qs = qs.filter(project__name=check_name(project, "project name"))
    if status is not None:
        wanted = [status] if isinstance(status, str) else list(status)
        bad = [s for s in wanted if s not in STATUSES]
        if bad:
            raise InvalidValue(f"Unknown run status {bad[0]!r}; use one of {', '.join(STATUSES)}.")
        qs = qs.filter(status__in=wanted)
    if name is not None:
        qs = _name_filter(qs, check_name(name))
    qs = _json_filters(qs, "tags", tags, "tags")
    qs = _json_filters(qs, "params", params, "params")
    qs = _metric_filters(qs, metrics)
    if parent is not None:
        qs = qs.filter(parent_id=resolve(parent).pk)
    if ids is not None:
        if isinstance(ids, str):
            ids = [ids]
        qs = qs.filter(uid__in=list(ids))
    if since is not None:
        qs = qs.filter(started_at__gte=since)
    if order_by:
        if isinstance(order_by, str):
            order_by = [order_by]
        known = {f.name for f in Run._meta.concrete_fields}
        bad = [f for f in order_by if not isinstance(f, str) or f.lstrip("-") not in known]
        if bad:
            raise InvalidValue(
                f"Cannot order runs by {bad[0]!r}; use run fields such as '-started_at', "
                f"'name', 'status' or 'ended_at'."
            )
        qs = qs.order_by(*order_by)
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise InvalidValue(f"limit must be a non-negative integer, not {limit!r}.")
        qs = qs[:limit]
    return qs


def list_runs(qs: QuerySet) -> list[Run]:
    reap_stale()
    return list(qs.select_related("project", "parent"))


def count_runs(qs: QuerySet) -> int:
    reap_stale()
    return qs.count()


def _fetch(qs: QuerySet) -> list[tuple]:
    from django.core.exceptions import EmptyResultSet

    try:
        sql, params = qs.query.sql_with_params()
    except EmptyResultSet:  # limit=0, status=[]: Django knows the answer without asking
        return []
    return _fetch_sql(sql, params)


def _fetch_sql(sql: str, params: Sequence[Any]) -> list[tuple]:
    with connection.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def _loads(values: Sequence[Any]) -> list[dict]:
    """JSON texts decoded in one call (the decoder's per-call overhead dominates small dicts)."""
    if all(v.__class__ is str for v in values):
        return json.loads("[" + ",".join(values) + "]")
    return [json.loads(v) if isinstance(v, str) else (v or {}) for v in values]


def _columns(dicts: Sequence[dict], prefix: str) -> dict[str, Any]:
    """Dicts (one per run) as columns named prefix + key, keys in order of first appearance."""
    if not dicts:
        return {}
    first = dicts[0].keys()
    if all(d.keys() == first for d in dicts):
        # The usual sweep: every run has the same params. Transpose in C.
        if not first:
            return {}
        return {prefix + k: col for k, col in zip(first, zip(*(tuple(d.values()) for d in dicts)))}
    keys = dict.fromkeys(k for d in dicts for k in d)
    return {prefix + k: [d.get(k) for d in dicts] for k in keys}


def _datetimes(values: Sequence[Any]) -> Any:
    import pandas as pd

    if connection.vendor == "sqlite":
        return pd.to_datetime(pd.Series(values, dtype=object), format="ISO8601", utc=True)
    return pd.to_datetime(pd.Series(values, dtype=object), utc=True)


_FRAME_FIELDS = (
    "pk",
    "uid",
    "name",
    "project__name",
    "status",
    "started_at",
    "ended_at",
    "parent__uid",
    "params",
    "tags",
    "host",
    "git_commit",
)
_BASE_COLUMNS = ["name", "project", "status", "started_at", "ended_at", "duration", "parent"]


def runs_frame(qs: QuerySet) -> Any:
    """One row per run (index: run id) with status, times, duration, ``params.*``, ``metrics.*``
    (last values), ``tags.*`` and the dataset versions the run used.

    Built from raw rows (no model instances): three queries, JSON decoded in one call."""
    import pandas as pd

    reap_stale()
    fields = list(_FRAME_FIELDS)
    if connection.vendor == "sqlite":
        # As text: Django's sqlite3 converters would parse every value in Python, one by one.
        from django.db.models import TextField
        from django.db.models.functions import Cast

        qs = qs.annotate(
            _started=Cast("started_at", TextField()), _ended=Cast("ended_at", TextField())
        )
        fields[5:7] = ["_started", "_ended"]
    rows = _fetch(qs.values_list(*fields))
    if not rows:
        return pd.DataFrame(
            columns=[*_BASE_COLUMNS, "datasets", "host", "git_commit"],
            index=pd.Index([], name="id"),
        )
    cols = list(zip(*rows))
    pks = cols[0]
    started = _datetimes(cols[5])
    ended = _datetimes(cols[6])
    now = pd.Timestamp(timezone.now())
    data: dict[str, Any] = {
        "name": cols[2],
        "project": cols[3],
        "status": cols[4],
        "started_at": started.array,
        "ended_at": ended.array,
        "duration": (ended.fillna(now.as_unit(ended.dt.unit)) - started).array,
        "parent": cols[7],
    }
    data.update(_columns(_loads(cols[8]), "params."))
    subquery = _pk_subquery(qs)
    data.update(_last_metrics(subquery, pks))
    data.update(_columns(_loads(cols[9]), "tags."))
    data["datasets"] = _datasets(subquery, pks)
    data["host"] = cols[10]
    data["git_commit"] = cols[11]
    frame = pd.DataFrame(data, index=pd.Index(cols[1], name="id"))
    return frame


def _last_metrics(subquery: tuple[str, Sequence[Any]], pks: Sequence[int]) -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    sql, params = subquery
    rows = _fetch_sql(
        f"SELECT run_id, key, {connection.ops.quote_name('last')} FROM tracker_metric_summary "
        f"WHERE run_id IN ({sql})",
        params,
    )
    if not rows:
        return {}
    found = np.array(rows, dtype=[("run", "i8"), ("key", "O"), ("last", "f8")])
    key_codes, keys = pd.factorize(found["key"], sort=True)
    row_of = pd.Index(pks).get_indexer(found["run"])
    table = np.full((len(pks), len(keys)), np.nan)
    keep = row_of >= 0
    table[row_of[keep], key_codes[keep]] = found["last"][keep]
    return {f"metrics.{k}": table[:, j] for j, k in enumerate(keys)}


def _pk_subquery(qs: QuerySet) -> tuple[str, Sequence[Any]]:
    """SQL (and params) selecting the pks of ``qs``, for ``run_id IN (...)``."""
    if qs.query.is_sliced:
        # A LIMIT inside IN (...) is not portable; the ids of a sliced queryset are few anyway.
        ids = list(qs.values_list("pk", flat=True)) or [-1]
        return ",".join(["%s"] * len(ids)), ids
    return qs.order_by().values("pk").query.sql_with_params()


def _datasets(subquery: tuple[str, Sequence[Any]], pks: Sequence[int]) -> list[str]:
    sql, params = subquery
    rows = _fetch_sql(
        "SELECT ri.run_id, d.name, v.version, ri.context FROM tracker_run_input ri "
        "JOIN tracker_dataset_version v ON v.id = ri.version_id "
        "JOIN tracker_dataset d ON d.id = v.dataset_id "
        f"WHERE ri.run_id IN ({sql}) ORDER BY ri.run_id, ri.created_at, ri.id",
        params,
    )
    used: dict[int, list[str]] = {}
    for run_id, ds, version, context in rows:
        used.setdefault(run_id, []).append(f"{ds}:v{version} ({context})")
    return [", ".join(used.get(pk, ())) for pk in pks]


def compare(refs: Sequence[Any], *, only_differences: bool = False) -> Any:
    """Runs side by side: one column per run, one row per field (status, duration, params.*,
    metrics.* last/min/max, tags.*). ``only_differences`` keeps the rows whose values differ."""
    import pandas as pd

    runs = [resolve(r) for r in refs]
    if not runs:
        raise InvalidValue("compare() needs at least one run.")
    pks = [r.pk for r in runs]
    frame = runs_frame(Run.objects.filter(pk__in=pks))
    frame = frame.loc[[r.uid for r in runs]]
    summaries = MetricSummary.objects.filter(run_id__in=pks).values_list(
        "run_id", "key", "min", "max"
    )
    uid_of = {r.pk: r.uid for r in runs}
    extra: dict[str, dict[str, float]] = {}
    for run_id, key, lo, hi in summaries:
        extra.setdefault(f"metrics.{key} (min)", {})[uid_of[run_id]] = lo
        extra.setdefault(f"metrics.{key} (max)", {})[uid_of[run_id]] = hi
    table = frame.drop(columns=["started_at", "ended_at"], errors="ignore").T
    if extra:
        table = pd.concat([table, pd.DataFrame(extra).T.reindex(columns=table.columns)])
    rank = {"params": 1, "metrics": 2, "tags": 3}
    position = {k: i for i, k in enumerate(table.index)}

    def sort_key(k: str) -> tuple:
        group = rank.get(k.split(".", 1)[0], 0)
        # Plain columns keep the frame's order; the rest sort by name, min/max after the last.
        return (group, position[k]) if group == 0 else (group, k.split(" (")[0], k)

    order = sorted(table.index, key=sort_key)
    table = table.loc[order]
    names = [r.name or r.uid for r in runs]
    table.columns = names if len(set(names)) == len(names) else [r.uid for r in runs]
    table.columns.name = "run"
    if only_differences and len(runs) > 1:
        keep = [not _all_same(table.loc[i].tolist()) for i in table.index]
        table = table.loc[keep]
    return table


def _all_same(values: list[Any]) -> bool:
    first = values[0]
    for v in values[1:]:
        both_nan = _isnan(first) and _isnan(v)
        if not both_nan and not (v == first):
            return False
    return True


def _isnan(v: Any) -> bool:
    try:
        return v != v  # NaN, NaT
    except Exception:
        return False


def history(
    run_pks: Sequence[int], keys: Sequence[str] | None, *, wide: bool, with_run: bool
) -> Any:
    """Metric histories as a DataFrame (see :func:`tracker.services.metrics.history_frame`)."""
    if keys is not None:
        if isinstance(keys, str):
            keys = [keys]
        keys = [str(k) for k in keys]
    metrics_core.flush_pending()
    if wide:
        return metrics_core.history_wide(run_pks, keys, with_run=with_run)
    return metrics_core.history_frame(metrics_core.read_points(run_pks, keys), with_run=with_run)
