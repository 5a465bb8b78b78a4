"""Metric points: the in-memory buffer behind ``log_metric``, the sink that writes batches, the
background flusher (also the heartbeat and the system-metrics sampler), summaries and history reads.

The write path, end to end::

    run.log_metric(k, v)  ->  MetricBuffer.rows (a list append, no I/O)
    Flusher thread         ->  flush_buffers(all)  ->  sink.write_many(batches), one transaction

``sink`` is :class:`DatabaseSink` (multi-row INSERT on SQLite, COPY on PostgreSQL, per-key
summaries upserted in the same transaction). A remote sink (issue 6) implements the same three
methods and sends the same batches over HTTP.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from operator import itemgetter
from typing import Any, Protocol

from tracker.services._runs_values import check_key, metric_step, metric_value

log = logging.getLogger("tracker.metrics")

# (key, step, value, unix timestamp); value NaN/±inf allowed.
Point = tuple[str, int, float, float]

# Rows written per transaction when a large backlog is flushed: bounds how long one flush
# holds SQLite's write lock and how much is redone if it fails.
CHUNK_POINTS = 100_000
# A buffer this many times FLUSH_MAX_POINTS makes log_metric wait for the flusher (while the
# database is healthy), so memory stays bounded when logging outpaces writing.
CAP_FACTOR = 4
RETRY_MAX_SECONDS = 30.0

_time = time.time


class MetricBuffer:
    """Points of one run waiting to be written, plus what the flusher needs to know about it."""

    __slots__ = (
        "run_pk",
        "rows",
        "next_step",
        "limit",
        "kick_at",
        "cap",
        "lock",
        "drained",
        "final",
        "inline",
        "owned",
        "done",
        "system_interval",
        "system_step",
        "registered",
        "create",
        "created",
        "__weakref__",
    )

    def __init__(
        self,
        run_pk: int | None,
        *,
        next_steps: Mapping[str, int] | None = None,
        owned: bool = False,
        inline: bool = False,
        system_interval: float | None = None,
        limit: int | None = None,
        registered: bool = True,
        create: dict[str, Any] | None = None,
    ) -> None:
        from tracker import conf

        self.run_pk = run_pk
        self.rows: list[Point] = []
        self.next_step: dict[str, int] = dict(next_steps or {})
        self.limit = int(limit or conf.get("FLUSH_MAX_POINTS"))
        self.kick_at = self.limit
        self.cap = self.limit * CAP_FACTOR
        self.lock = threading.Lock()  # one flush of this buffer at a time
        self.drained = threading.Event()
        self.final: dict[str, Any] | None = None  # run fields to write with the last points
        # Created inside the caller's transaction.atomic(): the run row is not visible to the
        # flusher's connection yet, so this buffer is flushed by its own thread only.
        self.inline = inline
        self.owned = owned  # started in this process: heartbeat, final status at exit
        self.done = False
        self.system_interval = system_interval
        self.system_step = int(self.next_step.get("system/cpu_percent", 0))
        # An unregistered buffer (a run read back, not started here) joins the flusher with
        # its first point: kick_at 0 sends that point through _overflow, off the hot path.
        self.registered = registered
        if not registered:
            self.kick_at = 0
        # A run not written yet: its row is inserted by the first flush (see runs.start_run).
        self.create = create
        self.created: dict[str, Any] | None = None

    # -- the hot path --------------------------------------------------------------------
    def log_metric(self, key: str, value: object, step: object = None) -> None:
        """Append one point; validates ``value``/``step`` now, writes later."""
        if value.__class__ is not float:
            value = metric_value(key, value)
        nxt = self.next_step
        if step is None:
            step = nxt.get(key)
            if step is None:
                key = check_key(key, "metric")
                step = 0
            nxt[key] = step + 1
        else:
            if step.__class__ is not int or key not in nxt:
                key = check_key(key, "metric")
                step = metric_step(key, step)
            if step >= nxt.get(key, 0):
                nxt[key] = step + 1
        rows = self.rows
        rows.append((key, step, value, _time()))
        if len(rows) >= self.kick_at:
            self._overflow()

    def log_metrics(self, mapping: Mapping[str, object], step: object = None) -> None:
        """Append one point per key, all at one step; nothing is appended if any value is bad."""
        if not isinstance(mapping, Mapping):
            raise _invalid(
                f"log_metrics() takes a dict of metric values, not {type(mapping).__name__}; "
                f"for example run.log_metrics({{'loss': 0.3, 'acc': 0.9}})."
            )
        checked = [(check_key(k, "metric"), metric_value(k, v)) for k, v in mapping.items()]
        nxt = self.next_step
        if step is None:
            step = max((nxt.get(k, 0) for k, _ in checked), default=0)
        else:
            step = metric_step(next(iter(mapping), "?"), step)
        now = _time()
        self.rows.extend((k, step, v, now) for k, v in checked)
        for k, _ in checked:
            if step >= nxt.get(k, 0):
                nxt[k] = step + 1
        if len(self.rows) >= self.kick_at:
            self._overflow()

    def _overflow(self) -> None:
        n = len(self.rows)
        if self.inline:
            flush_buffer(self)
            return
        flusher = get_flusher()
        if not self.registered:
            self.registered = True
            flusher.register(self)
        flusher.wake()
        if n >= self.cap and flusher.healthy and not flusher.is_current_thread():
            # Backpressure: logging is outpacing the writer; wait for it instead of growing
            # without bound. Never waits while the database is unavailable.
            deadline = time.monotonic() + 30.0
            while len(self.rows) >= self.cap and flusher.healthy and time.monotonic() < deadline:
                self.drained.clear()
                flusher.wake()
                self.drained.wait(0.25)
            n = len(self.rows)
        # The next check: after another FLUSH_MAX_POINTS, and at the cap at the latest (while
        # the writer keeps up), so the buffer never runs past it.
        limit = n + self.limit
        self.kick_at = min(limit, self.cap) if n < self.cap and flusher.healthy else limit

    def pending(self) -> int:
        return len(self.rows)


def _invalid(message: str) -> Exception:
    from tracker.exceptions import InvalidValue

    return InvalidValue(message)


# -- summaries -------------------------------------------------------------------------------
Summary = tuple[int, float, float | None, float | None, int]  # last_step, last, min, max, count


def summarize(points: Sequence[Point]) -> dict[str, Summary]:
    """Per key: (last_step, last value, min, max, count). NaN counts but is never a min or max;
    ``last`` is the value at the highest step (the latest logged among equal steps)."""
    if not points:
        return {}
    if len(points) < 4096:
        return _summarize_loop(points)  # NumPy's set-up costs more than a short loop
    keys = list(map(_get0, points))
    distinct = set(keys)
    if len(distinct) == 1:
        return {keys[0]: _summarize_one(points)}
    if len(distinct) > 16:
        return _summarize_loop(points)
    import numpy as np

    steps = list(map(_get1, points))
    values = list(map(_get2, points))
    v = np.array(values, dtype=float)
    s = np.array(steps, dtype=np.int64)
    karr = np.array(keys, dtype=object)
    groups: Iterable[tuple[str, Any]] = [(k, karr == k) for k in distinct]
    out: dict[str, Summary] = {}
    for key, mask in groups:  # several keys: one boolean mask per key
        vv = v[mask]
        ss = s[mask]
        top = ss.max()
        last_i = len(ss) - 1 - int(np.argmax(ss[::-1] == top))
        finite = vv[~np.isnan(vv)]
        lo = float(finite.min()) if finite.size else None
        hi = float(finite.max()) if finite.size else None
        out[key] = (int(top), float(vv[last_i]), lo, hi, int(len(vv)))
    return out


_get0, _get1, _get2 = itemgetter(0), itemgetter(1), itemgetter(2)


def _summarize_one(points: Sequence[Point]) -> Summary:
    """Summary of points that all share one key, with C-speed builtins (the common batch)."""
    steps = list(map(_get1, points))
    values = list(map(_get2, points))
    top = max(steps)
    n = len(steps)
    last_i = n - 1 if steps[-1] == top else n - 1 - steps[::-1].index(top)
    total = sum(values)
    if total == total:  # no NaN (and no inf - inf): min/max are safe
        lo, hi = min(values), max(values)
    else:
        finite = [v for v in values if v == v]
        lo = min(finite) if finite else None
        hi = max(finite) if finite else None
    return (top, values[last_i], lo, hi, n)


def _summarize_loop(points: Sequence[Point]) -> dict[str, Summary]:
    acc: dict[str, list] = {}
    for key, step, value, _ in points:
        a = acc.get(key)
        finite = value == value
        if a is None:
            acc[key] = [step, value, value if finite else None, value if finite else None, 1]
            continue
        a[4] += 1
        if step >= a[0]:
            a[0], a[1] = step, value
        if finite:
            if a[2] is None:
                a[2] = a[3] = value
            elif value < a[2]:
                a[2] = value
            elif value > a[3]:
                a[3] = value
    return {k: tuple(a) for k, a in acc.items()}  # type: ignore[misc]


# -- sinks -----------------------------------------------------------------------------------
# One unit of work for one run: (the run's pk, or its creation spec if it is not written yet;
# its points; run fields to set, or None).
Batch = tuple[Any, Sequence[Point], Mapping[str, Any] | None]


class Sink(Protocol):
    """Where buffered batches go. The database now; a tracker server over HTTP in remote mode."""

    def write_many(self, batches: Sequence[Batch]) -> list[int]:
        """Store every batch in one unit (all or nothing); returns each batch's run pk.

        A batch's run is its primary key, or for a run not written yet its creation spec
        (``{"values": {...Run fields}, "project": name or pk}``), inserted in the same unit;
        the spec then gets ``"project_id"``. Points are (key, step, value, timestamp); fields
        (status, ended_at, error) are applied to the run.
        """

    def heartbeat(self, run_pks: Sequence[int]) -> None:
        """Mark these runs alive now."""

    def close(self) -> None:
        """Release this thread's resources (database connection, HTTP session)."""


HEARTBEAT_LOST = "Heartbeat lost"


class DatabaseSink:
    """Writes through Django's connection of the calling thread."""

    def write_many(self, batches: Sequence[Batch], *, synchronous: bool = True) -> list[int]:
        """See :meth:`Sink.write_many`.

        ``synchronous=False`` (the API's metric ingest): on PostgreSQL the transaction commits
        with ``synchronous_commit`` off, acknowledged before its log record reaches the disk
        (see the ``API_METRICS_SYNCHRONOUS_COMMIT`` setting); elsewhere it changes nothing.
        """
        from tracker.models import Run
        from tracker.services._runs_sql import db, insert_row, raw_cursor, update_row, write_transaction
        from tracker.services.runs import project_pk

        pks = []
        projects: dict[Any, int] = {}
        with_points: list[tuple[int, Sequence[Point]]] = []
        summaries: list[tuple] = []
        now = _time()
        # A new run may need its project created through the ORM (its own atomic block).
        creates = any(isinstance(run, Mapping) for run, _, _ in batches)
        conn = db()
        if (
            conn.vendor == "postgresql"
            and not creates
            and not conn.in_atomic_block
            and not any(fields for _, _, fields in batches)
            and sum(len(points) for _, points, _ in batches) <= ONE_TRIP_POINTS
        ):
            return _write_one_trip(conn, batches, now, synchronous)
        with write_transaction(raw_ok=not creates) as connection:
            if not synchronous and connection.vendor == "postgresql":
                cur = raw_cursor(connection)
                cur.execute("SET LOCAL synchronous_commit TO off")
                cur.close()
            for run, points, fields in batches:
                if isinstance(run, Mapping):
                    values = dict(run["values"])
                    ref = run["project"]
                    if ref not in projects:
                        projects[ref] = project_pk(ref)
                    values["project_id"] = projects[ref]
                    if fields:
                        values.update(fields)
                    run_pk = insert_row(Run, values)
                    run["project_id"] = values["project_id"]  # type: ignore[index]
                else:
                    run_pk = int(run)
                    if fields:
                        update_row(Run, run_pk, fields)
                if points:
                    with_points.append((run_pk, points))
                    summaries.extend(_summary_rows(run_pk, summarize(points), now))
                pks.append(run_pk)
            # Points and summaries of all runs at once: a sweep of short runs is a handful of
            # statements, not three per run.
            if len(with_points) == 1:
                _insert_points(connection, *with_points[0])
            elif with_points:
                _insert_points_many(connection, with_points)
            _upsert_summaries(connection, summaries)
        return pks

    def heartbeat(self, run_pks: Sequence[int]) -> None:
        from django.db import transaction
        from django.utils import timezone

        from tracker.models import Run

        now = timezone.now()
        with transaction.atomic():
            Run.objects.filter(pk__in=run_pks, status=Run.Status.RUNNING).update(heartbeat_at=now)
            # A process that was only paused (a laptop asleep, a stopped job) comes back: its
            # run was reported killed by a reader, and is running again.
            Run.objects.filter(
                pk__in=run_pks, status=Run.Status.KILLED, error__startswith=HEARTBEAT_LOST
            ).update(status=Run.Status.RUNNING, ended_at=None, error="", heartbeat_at=now)

    def close(self) -> None:
        from django.db import connections

        for conn in connections.all(initialized_only=True):
            try:
                conn.close()
            except Exception:  # a broken connection may fail to close; it is dropped anyway
                pass


# A batch of at most this many points goes to PostgreSQL as one multi-statement string (one
# round trip); larger ones go through COPY, whose per-row cost is lower.
ONE_TRIP_POINTS = 64


def _write_one_trip(connection: Any, batches: Sequence[Batch], now: float, synchronous: bool) -> list[int]:
    """Points of existing runs written to PostgreSQL in one round trip: BEGIN, the inserts,
    the summary upserts and COMMIT sent as one string. A transaction through the driver costs
    five round trips (BEGIN, COPY, upsert, COMMIT and their replies), several times the work
    of a few rows. Parameters are bound on the client, as Django's own cursor binds them."""
    statements = []
    params: list[Any] = []
    pks = []
    for run, points, _ in batches:
        run_pk = int(run)
        pks.append(run_pk)
        if not points:
            continue
        statements.append(_INSERT + ",".join(["(%s,%s,%s,%s,%s)"] * len(points)))
        for p in points:
            params.append(run_pk)
            params.extend(p)
        for row in _summary_rows(run_pk, summarize(points), now):
            statements.append(_summary_sql("postgresql"))
            params.extend(row)
    one_trip(connection, statements, params, synchronous=synchronous)
    return pks


def guarded_write_ctes(runs: str, points: Sequence[Point], now: float) -> tuple[list[str], list[Any]]:
    """PostgreSQL ``WITH`` items that store ``points`` for the run in the CTE named ``runs``
    (one row, column ``id``), and store nothing when it has no row.

    For a statement that decides in itself whether the write is allowed: the API's one-point
    ingest puts the token, run and role check in ``runs`` (see
    :func:`tracker_api.authentication.caller`), so check and write are one statement, one
    plan, one round trip. The casts type the VALUES columns (a column of NULLs is text).
    """
    values = ",".join(["(%s,%s,%s,%s)"] * len(points))
    params: list[Any] = [x for p in points for x in p]
    rows = _summary_rows(0, summarize(points), now)
    head, _, tail = _summary_sql("postgresql").partition(" VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ")
    for row in rows:
        params.extend(row[1:])
    return [
        "tracker_points AS (INSERT INTO tracker_metric (run_id, key, step, value, timestamp) "
        "SELECT r.id, v.k::text, v.s::bigint, v.v::float8, v.t::float8 "
        f"FROM {runs} r, (VALUES {values}) v(k, s, v, t))",
        f"tracker_summaries AS ({head} SELECT r.id, v.k::text, v.l::float8, v.ls::bigint, "
        "v.lo::float8, v.hi::float8, v.n::integer, v.u::float8 "
        f"FROM {runs} r, (VALUES {','.join(['(%s,%s,%s,%s,%s,%s,%s)'] * len(rows))}) "
        f"v(k, l, ls, lo, hi, n, u) {tail})",
    ], params


def one_trip(
    connection: Any, statements: Sequence[str], params: Sequence[Any], *, synchronous: bool = True,
    fetch: int | None = None,
) -> Any:
    """``statements`` in one transaction (BEGIN, them, COMMIT) sent to PostgreSQL as one string,
    parameters bound on the client as Django's own cursor binds them; the rows of
    ``statements[fetch]`` if given. ``synchronous=False`` commits without waiting for the disk
    (see :meth:`DatabaseSink.write_many`). An error rolls back and is raised as Django's."""
    import psycopg

    head = ["BEGIN"] if synchronous else ["BEGIN", "SET LOCAL synchronous_commit TO off"]
    connection.ensure_connection()
    raw = connection.connection
    cur = psycopg.ClientCursor(raw)
    try:
        with connection.wrap_database_errors:  # Django's IntegrityError, as through its cursor
            cur.execute(";".join([*head, *statements, "COMMIT"]), params)
            if fetch is None:
                return None
            for _ in range(len(head) + fetch):
                cur.nextset()
            return cur.fetchall()
    except BaseException:
        # The failed statement aborted the transaction and the rest of the string was skipped.
        if raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            try:
                raw.execute("ROLLBACK")
            except Exception:  # a broken connection rolls back by itself
                pass
        raise
    finally:
        cur.close()


def _sqlite_rows_per_statement(connection: Any) -> int:
    limit = 999
    raw = getattr(connection, "connection", None)
    if raw is not None and hasattr(raw, "getlimit"):
        import sqlite3

        limit = raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    return max(1, min(500, limit // 4))


_INSERT = "INSERT INTO tracker_metric (run_id, key, step, value, timestamp) VALUES "


def _insert_points(connection: Any, run_pk: int, points: Sequence[Point]) -> None:
    from itertools import chain

    from tracker.services._runs_sql import raw_cursor

    cur = raw_cursor(connection)
    try:
        if connection.vendor == "postgresql" and hasattr(cur, "copy"):
            with _copy_points(cur) as copy:
                write_row = copy.write_row
                for key, step, value, ts in points:
                    write_row((run_pk, key, step, value, ts))
            return
        # Many rows per statement: on SQLite a statement per row costs more than the row.
        mark = "?" if connection.vendor == "sqlite" else "%s"
        k = _sqlite_rows_per_statement(connection) if connection.vendor == "sqlite" else 200
        one = f"({int(run_pk)},{mark},{mark},{mark},{mark})"
        n = len(points)
        full = n - n % k
        if full:
            flat = list(chain.from_iterable(points[:full] if full < n else points))
            width = 4 * k
            cur.executemany(
                _INSERT + ",".join([one] * k),
                [flat[i : i + width] for i in range(0, len(flat), width)],
            )
        if full < n:
            rest = points[full:]
            cur.execute(_INSERT + ",".join([one] * len(rest)), list(chain.from_iterable(rest)))
    finally:
        cur.close()


@contextmanager
def _copy_points(cur: Any) -> Iterator[Any]:
    """COPY into tracker_metric in PostgreSQL's binary format: the driver packs numbers in C,
    half the CPU of formatting text rows for a 1000-point batch."""
    with cur.copy("COPY tracker_metric (run_id, key, step, value, timestamp) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["int8", "varchar", "int8", "float8", "float8"])
        yield copy


@lru_cache(maxsize=4)
def _summary_sql(vendor: str) -> str:
    t = "tracker_metric_summary"
    if vendor == "postgresql":
        lo = f'LEAST({t}."min", excluded."min")'
        hi = f'GREATEST({t}."max", excluded."max")'
        top = f"GREATEST({t}.last_step, excluded.last_step)"
    else:
        # SQLite's two-argument min()/max() return NULL if either side is NULL.
        lo = f'min(COALESCE({t}."min", excluded."min"), COALESCE(excluded."min", {t}."min"))'
        hi = f'max(COALESCE({t}."max", excluded."max"), COALESCE(excluded."max", {t}."max"))'
        top = f"max({t}.last_step, excluded.last_step)"
    sql = (
        f'INSERT INTO {t} (run_id, key, "last", last_step, "min", "max", "count", updated_at) '
        f"VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
        f"ON CONFLICT (run_id, key) DO UPDATE SET "
        f'"last" = CASE WHEN excluded.last_step >= {t}.last_step THEN excluded."last" '
        f'ELSE {t}."last" END, '
        f"last_step = {top}, "
        f'"min" = {lo}, "max" = {hi}, '
        f'"count" = {t}."count" + excluded."count", '
        f"updated_at = excluded.updated_at"
    )
    return sql.replace("%s", "?") if vendor == "sqlite" else sql


def _summary_rows(run_pk: int, summaries: Mapping[str, Summary], now: float) -> list[tuple]:
    return [
        (run_pk, key, last, last_step, lo_v, hi_v, count, now)
        for key, (last_step, last, lo_v, hi_v, count) in summaries.items()
    ]


def _upsert_summaries(connection: Any, rows: Sequence[tuple]) -> None:
    """Merge batches' per-key summaries into the stored ones (one upsert per run and key)."""
    if not rows:
        return
    from tracker.services._runs_sql import raw_cursor

    cur = raw_cursor(connection)
    try:
        cur.executemany(_summary_sql(connection.vendor), rows)
    finally:
        cur.close()


def _insert_points_many(connection: Any, runs: Sequence[tuple[int, Sequence[Point]]]) -> None:
    """Points of several runs in one go (a sweep of short runs): run_id is a parameter."""
    from itertools import chain

    from tracker.services._runs_sql import raw_cursor

    rows = [(pk, *p) for pk, points in runs for p in points]
    cur = raw_cursor(connection)
    try:
        if connection.vendor == "postgresql" and hasattr(cur, "copy"):
            with _copy_points(cur) as copy:
                for row in rows:
                    copy.write_row(row)
            return
        mark = "?" if connection.vendor == "sqlite" else "%s"
        k = max(1, _sqlite_rows_per_statement(connection) * 4 // 5) if mark == "?" else 200
        one = f"({mark},{mark},{mark},{mark},{mark})"
        n = len(rows)
        full = n - n % k
        if full:
            flat = list(chain.from_iterable(rows[:full]))
            width = 5 * k
            cur.executemany(
                _INSERT + ",".join([one] * k),
                [flat[i : i + width] for i in range(0, len(flat), width)],
            )
        if full < n:
            rest = rows[full:]
            cur.execute(_INSERT + ",".join([one] * len(rest)), list(chain.from_iterable(rest)))
    finally:
        cur.close()


_sink: Sink | None = None


def get_sink() -> Sink:
    """The sink batches go to (the database; remote mode plugs in here)."""
    global _sink
    if _sink is None:
        _sink = DatabaseSink()
    return _sink


def set_sink(sink: Sink | None) -> None:
    """Replace the sink (remote mode, tests); None restores the database sink."""
    global _sink
    _sink = sink


# -- flushing --------------------------------------------------------------------------------
def _unavailable_errors() -> tuple[type[BaseException], ...]:
    from django.db import InterfaceError, OperationalError

    return (OperationalError, InterfaceError)


def _pending(buf: MetricBuffer) -> bool:
    return bool(buf.rows) or buf.create is not None or (buf.final is not None and not buf.done)


def flush_buffers(
    bufs: Iterable[MetricBuffer], sink: Sink | None = None, *, blocking: bool = True
) -> int:
    """Write what these buffers hold in one transaction per round (a run's row first if it is
    new, its final fields with its last points); returns the points written.

    Points leave a buffer only after their transaction committed, so a failed write keeps
    them for the next attempt. Locks are taken in one global order, so two threads flushing
    overlapping sets never deadlock; with ``blocking=False`` a buffer another thread is
    flushing right now is skipped. Raises what the sink raised.
    """
    sink = sink or get_sink()
    held = []
    for buf in sorted({id(b): b for b in bufs}.values(), key=id):
        if buf.lock.acquire(blocking):
            held.append(buf)
    written = 0
    try:
        while True:
            plan = []
            for buf in held:
                if not _pending(buf):
                    continue
                n = min(len(buf.rows), CHUNK_POINTS)
                final = buf.final if n == len(buf.rows) and not buf.done else None
                if not n and buf.create is None and final is None:
                    continue
                # Appends racing with this flush land after index n and stay for the next one.
                plan.append((buf, n, final))
            if not plan:
                break
            pks = sink.write_many(
                [
                    (b.create if b.create is not None else b.run_pk, b.rows[:n], final)
                    for b, n, final in plan
                ]
            )
            for (buf, n, final), pk in zip(plan, pks):
                if buf.create is not None:
                    buf.run_pk = pk
                    buf.created = buf.create
                    buf.create = None
                del buf.rows[:n]
                written += n
                if final is not None:
                    buf.done = True
                buf.drained.set()  # a producer waiting on a full buffer may go on
    finally:
        for buf in held:
            buf.kick_at = len(buf.rows) + buf.limit
            buf.drained.set()
            buf.lock.release()
    return written


def flush_buffer(buf: MetricBuffer, sink: Sink | None = None) -> int:
    """Write what ``buf`` holds now (see :func:`flush_buffers`); returns the points written."""
    return flush_buffers([buf], sink)


def flush_all() -> int:
    """Write every registered buffer now, in this thread; returns the points written.

    Raises:
        DatabaseUnavailable: the database cannot be reached (the points stay buffered).
    """
    flusher = _flusher
    if flusher is None:
        return 0
    bufs = [b for b in flusher.buffers() if _pending(b)]
    try:
        return flush_buffers(bufs) if bufs else 0
    except _unavailable_errors() as exc:
        from tracker.exceptions import DatabaseUnavailable

        flusher.wake()
        get_sink().close()
        pending = sum(len(b.rows) for b in bufs)
        raise DatabaseUnavailable(
            f"The database cannot be reached ({type(exc).__name__}: {exc}); {pending} metric "
            f"points stay buffered and are retried in the background. Try again later."
        ) from exc


def flush_pending() -> None:
    """Write everything this process has buffered, so a read here sees this process's own
    writes (runs just started or finished, points just logged). An outage is left to the
    background flusher's retries, with its warning, and does not fail the read."""
    flusher = _flusher
    if flusher is None:
        return
    from tracker.services._runs_sql import db

    if db().in_atomic_block:
        # Inside the caller's transaction: writing other runs' points here would undo them
        # if the caller rolls back, after they left their buffers. The flusher writes them.
        flusher.wake()
        return
    bufs = [b for b in flusher.buffers() if not b.inline and _pending(b)]
    if not bufs:
        return
    try:
        flush_buffers(bufs)
    except Exception as exc:
        flusher.wake()
        log.debug("flush before a read failed: %s", exc)


class Flusher:
    """The one background thread of a process: flushes buffers, beats hearts, samples system.

    It has no event loop, so it calls the core directly. It exits (closing its database
    connection) when no buffer is registered, and starts again on the next registration.
    """

    def __init__(self) -> None:
        self._buffers: dict[int, MetricBuffer] = {}  # id(buf) -> buf
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self.healthy = True
        self._failures = 0
        self._retry_at = 0.0
        self._last_beat = 0.0
        self._warned_down = False
        self._sys_due: dict[int, float] = {}
        self._stop_when_idle = False

    # registration
    def register(self, buf: MetricBuffer) -> None:
        with self._lock:
            self._buffers[id(buf)] = buf
            self._ensure_thread()
        _install_exit_hooks()

    def _ensure_thread(self) -> None:
        # Called with self._lock held.
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._main, name="tracker-flusher", daemon=True)
            self._thread.start()

    def is_registered(self, buf: MetricBuffer) -> bool:
        with self._lock:
            return id(buf) in self._buffers and self._thread is not None

    def buffers(self) -> list[MetricBuffer]:
        with self._lock:
            return list(self._buffers.values())

    def wake(self) -> None:
        self._wake.set()

    def is_current_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def wait_idle(self, timeout: float) -> bool:
        """Wake the thread and wait until every registered buffer is done; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while any(not b.done or b.rows or b.create for b in self._buffers.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._ensure_thread()  # e.g. in a forked child, where no thread runs yet
                self._wake.set()
                self._idle.wait(min(left, 0.2))
        return True

    # the thread
    def _main(self) -> None:
        from tracker import conf

        sink = get_sink()
        idle_since: float | None = None
        try:
            while True:
                interval = float(conf.get("FLUSH_INTERVAL"))
                self._wake.wait(self._next_wait(interval))
                self._wake.clear()
                sink = get_sink()
                self._cycle(sink)
                with self._lock:
                    for key, b in list(self._buffers.items()):
                        idle = not b.rows and b.create is None
                        if idle and (b.done or (not b.owned and b.final is None)):
                            self._release(key, b)
                    self._idle.notify_all()
                    if self._buffers:
                        idle_since = None
                        continue
                    # Nothing to do: stay one more interval (a sweep starts runs back to back,
                    # and a thread plus a connection per run would cost more than the runs),
                    # then exit and close the connection.
                    now = time.monotonic()
                    idle_since = idle_since if idle_since is not None else now
                    if self._stop_when_idle or now - idle_since >= interval:
                        self._thread = None
                        self._stop_when_idle = False
                        return
        finally:
            sink.close()

    def stop_when_idle(self, timeout: float = 10.0) -> bool:
        """Let the thread exit (closing its connection) as soon as nothing is registered;
        returns whether it has exited within ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                thread = self._thread
                if thread is None:
                    return True
                self._stop_when_idle = True
            self._wake.set()
            thread.join(0.05)
        return self._thread is None

    def _release(self, key: int, buf: MetricBuffer) -> None:
        """Let go of an idle buffer (a finished run, a run read back); a later point registers
        it again, so logging after finish() still reaches the database."""
        with buf.lock:
            buf.registered = False
            buf.kick_at = 0
            if buf.rows:  # a point arrived meanwhile: keep it registered
                buf.registered = True
                buf.kick_at = len(buf.rows) + buf.limit
                return
            del self._buffers[key]

    def _next_wait(self, interval: float) -> float:
        wait = interval
        if not self.healthy:
            wait = max(0.05, self._retry_at - time.monotonic())
        return wait

    def _cycle(self, sink: Sink) -> None:
        from tracker import conf

        now = time.monotonic()
        if not self.healthy and now < self._retry_at:
            return
        buffers = self.buffers()
        self._sample_system(buffers, now)
        ok = True
        due = [b for b in buffers if _pending(b) and (not b.inline or b.final is not None)]
        if due:
            try:
                flush_buffers(due, sink, blocking=False)
            except Exception as exc:
                ok = False
                self._failed(due, exc, sink)
        if ok:
            beat_every = float(conf.get("HEARTBEAT_INTERVAL"))
            if now - self._last_beat >= beat_every:
                owned = [
                    b.run_pk
                    for b in buffers
                    if b.owned and not b.done and not b.inline and b.run_pk is not None
                ]
                if owned:
                    try:
                        sink.heartbeat(owned)
                        self._last_beat = now
                    except Exception as exc:
                        ok = False
                        self._failed(None, exc, sink)
        if ok and not self.healthy:
            self.healthy = True
            self._failures = 0
            self._warned_down = False
            warnings.warn(
                "tracker: the database is reachable again; buffered metric points were written.",
                RuntimeWarning,
                stacklevel=1,
            )

    def _failed(self, bufs: Sequence[MetricBuffer] | None, exc: Exception, sink: Sink) -> None:
        from django.db import IntegrityError

        if bufs and isinstance(exc, IntegrityError):
            gone = [b for b in bufs if b.run_pk is not None and not _run_exists(b.run_pk)]
            for buf in gone:
                # The run was deleted while points were buffered: nothing can hold them now.
                with buf.lock:
                    dropped = len(buf.rows)
                    del buf.rows[:]
                    buf.done = True
                    buf.final = buf.final or {}
                warnings.warn(
                    f"tracker: run #{buf.run_pk} no longer exists; {dropped} buffered metric "
                    f"points were dropped.",
                    RuntimeWarning,
                    stacklevel=1,
                )
            if gone:
                return
        self.healthy = False
        self._failures += 1
        delay = min(RETRY_MAX_SECONDS, 0.5 * 2 ** min(self._failures, 8))
        self._retry_at = time.monotonic() + delay
        sink.close()  # a broken connection is replaced on the next attempt
        pending = sum(len(b.rows) for b in self.buffers())
        if not self._warned_down:
            self._warned_down = True
            kind = "unavailable" if isinstance(exc, _unavailable_errors()) else "failing"
            warnings.warn(
                f"tracker: the database is {kind} ({type(exc).__name__}: {exc}); {pending} "
                f"metric points are kept in memory and retried every few seconds. Training "
                f"goes on; nothing is dropped.",
                RuntimeWarning,
                stacklevel=1,
            )
        log.debug("flush failed (%s); retry in %.1fs", exc, delay)

    def _sample_system(self, buffers: list[MetricBuffer], now: float) -> None:
        sampled: dict[str, float] | None = None
        for buf in buffers:
            interval = buf.system_interval
            if not interval or buf.done or buf.final is not None:
                continue
            due = self._sys_due
            if now < due.get(id(buf), 0.0):
                continue
            if sampled is None:
                sampled = system_sample()
            step = buf.system_step
            buf.system_step += 1
            ts = _time()
            buf.rows.extend((k, step, v, ts) for k, v in sampled.items())
            due[id(buf)] = now + interval


def _run_exists(run_pk: int) -> bool:
    from tracker.models import Run

    try:
        return Run.objects.filter(pk=run_pk).exists()
    except Exception:
        return True  # cannot tell: keep the points


_process_cpu: Any = None


def system_sample() -> dict[str, float]:
    """CPU, memory (and GPU when NVML is present) of this machine and process, now."""
    global _process_cpu
    out: dict[str, float] = {}
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a dependency
        return out
    if _process_cpu is None:
        _process_cpu = psutil.Process()
        _process_cpu.cpu_percent(None)  # the first reading only starts the clock
        psutil.cpu_percent(None)
    out["system/cpu_percent"] = float(psutil.cpu_percent(None))
    out["system/memory_percent"] = float(psutil.virtual_memory().percent)
    out["system/process_cpu_percent"] = float(_process_cpu.cpu_percent(None))
    out["system/process_rss_mb"] = _process_cpu.memory_info().rss / 2**20
    out.update(_gpu_sample())
    return out


def _gpu_sample() -> dict[str, float]:
    try:
        import pynvml  # nvidia-ml-py, present on GPU machines only
    except ImportError:
        return {}
    out = {}
    try:
        pynvml.nvmlInit()
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            out[f"system/gpu{i}_util_percent"] = float(pynvml.nvmlDeviceGetUtilizationRates(h).gpu)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            out[f"system/gpu{i}_memory_mb"] = mem.used / 2**20
    except Exception:  # no driver, no device: no GPU metrics
        return {}
    return out


_flusher: Flusher | None = None
_flusher_lock = threading.Lock()


def get_flusher() -> Flusher:
    global _flusher
    if _flusher is None:
        with _flusher_lock:
            if _flusher is None:
                _flusher = Flusher()
    return _flusher


def register(buf: MetricBuffer) -> None:
    """Hand ``buf`` to the background flusher (not for inline buffers' regular flushes)."""
    buf.registered = True
    get_flusher().register(buf)


def submit(buf: MetricBuffer) -> None:
    """Have the flusher write ``buf`` soon (registering it if needed), without waiting."""
    flusher = get_flusher()
    if not buf.registered or not flusher.is_registered(buf):
        register(buf)
    flusher.wake()


# -- process exit ----------------------------------------------------------------------------
_hooks_installed = False
_uncaught: BaseException | None = None
EXIT_FLUSH_SECONDS = 15.0


def _install_exit_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(_at_exit)
    previous = sys.excepthook

    def excepthook(tp: type[BaseException], value: BaseException, tb: Any) -> None:
        global _uncaught
        _uncaught = value
        previous(tp, value, tb)

    sys.excepthook = excepthook
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)


def exit_status() -> tuple[str, str]:
    """(status, error) for runs still open when the process exits."""
    exc = _uncaught
    if exc is None:
        return "finished", ""
    if isinstance(exc, KeyboardInterrupt):
        return "killed", "KeyboardInterrupt: the process was interrupted."
    from tracker.services.runs import error_summary

    return "failed", error_summary(exc)


def _at_exit() -> None:
    shutdown()


def shutdown(stall_seconds: float | None = None) -> None:
    """Write everything, end the runs this process left open (``finished``, or ``failed`` /
    ``killed`` after an uncaught exception / Ctrl-C), then stop the flusher and close its
    connection. Runs at interpreter exit; call it before a database goes away (a test
    session's teardown). Waits while writing makes progress, gives up after
    ``stall_seconds`` (default ``EXIT_FLUSH_SECONDS``) without any; never raises."""
    stall = EXIT_FLUSH_SECONDS if stall_seconds is None else stall_seconds
    try:
        from django.utils import timezone

        flusher = _flusher
        if flusher is None:
            return
        status, error = exit_status()
        now = timezone.now()
        for buf in flusher.buffers():
            if buf.owned and buf.final is None:
                buf.final = {"status": status, "ended_at": now, "error": error}
            elif not buf.owned and buf.final is None:
                buf.final = {}
            buf.inline = False

        # Wait as long as the writing makes progress (a large backlog on a slow database takes
        # a while); give up only after EXIT_FLUSH_SECONDS without any.
        def backlog() -> int:
            bufs = flusher.buffers()
            return sum(len(b.rows) + (b.create is not None) + (not b.done) for b in bufs)

        last, since = backlog(), time.monotonic()
        while not flusher.wait_idle(1.0):
            now_left = backlog()
            if now_left < last:
                last, since = now_left, time.monotonic()
            elif time.monotonic() - since > stall:
                break
        left = sum(len(b.rows) for b in flusher.buffers() if not b.done or b.rows)
        if left:
            print(
                f"tracker: {left} metric points could not be written before exit "
                f"(the database did not accept them for {stall:.0f} s).",
                file=sys.stderr,
            )
            return
        flusher.stop_when_idle(stall)
    except Exception as exc:  # pragma: no cover - last resort at interpreter exit
        print(f"tracker: flushing at exit failed: {exc}", file=sys.stderr)


def _after_fork_in_child() -> None:
    """A forked child (a DataLoader worker) starts with its own, empty flusher.

    The parent's buffered points belong to the parent; the child's own points for the same
    runs are written by the child's flusher, without heartbeats or a final status.
    """
    global _flusher
    old = _flusher
    _flusher = None
    if old is None:
        return
    for buf in list(old._buffers.values()):
        buf.lock = threading.Lock()
        buf.drained = threading.Event()
        del buf.rows[:]
        if buf.done:
            continue
        buf.owned = False
        buf.system_interval = None
        get_flusher()._buffers[id(buf)] = buf


# -- reading ---------------------------------------------------------------------------------
def read_points(run_pks: Sequence[int], keys: Sequence[str] | None = None) -> Any:
    """All points of these runs (and keys) as a NumPy structured array, ordered by run, key, step.

    Fields: run_id, key (object), step, value (NaN where the database holds NULL), timestamp.
    """
    import numpy as np

    dtype = [("run_id", "i8"), ("key", "O"), ("step", "i8"), ("value", "f8"), ("timestamp", "f8")]
    if not run_pks:
        return np.empty(0, dtype=dtype)
    params: list[Any] = [int(pk) for pk in run_pks]
    where = f"run_id IN ({','.join(['%s'] * len(params))})"
    if keys is not None:
        keys = list(keys)
        if not keys:
            return np.empty(0, dtype=dtype)
        where += f" AND key IN ({','.join(['%s'] * len(keys))})"
        params.extend(keys)
    sql = (
        f"SELECT run_id, key, step, value, timestamp FROM tracker_metric WHERE {where} "
        f"ORDER BY run_id, key, step, id"
    )
    from tracker.services._runs_sql import execute

    cur = execute(sql, params)
    try:
        rows = cur.fetchall()
    finally:
        cur.close()
    return np.array(rows, dtype=dtype) if rows else np.empty(0, dtype=dtype)


def _series_points(run_pk: int, key: str) -> Any:
    """(step, value) of one run's key, ordered by step then logging order, as a NumPy array."""
    import numpy as np

    from tracker.services._runs_sql import execute

    cur = execute(
        "SELECT step, value FROM tracker_metric WHERE run_id = %s AND key = %s ORDER BY step, id",
        [int(run_pk), key],
    )
    try:
        rows = cur.fetchall()
    finally:
        cur.close()
    return (
        np.array(rows, dtype=[("step", "i8"), ("value", "f8")])
        if rows
        else np.empty(0, dtype=[("step", "i8"), ("value", "f8")])
    )


def _keys_of(run_pks: Sequence[int]) -> dict[int, list[str]]:
    from tracker.services._runs_sql import execute

    if not run_pks:
        return {}  # "IN ()" is not SQL to PostgreSQL
    marks = ",".join(["%s"] * len(run_pks))
    cur = execute(
        f"SELECT run_id, key FROM tracker_metric_summary WHERE run_id IN ({marks}) ORDER BY key",
        [int(pk) for pk in run_pks],
    )
    try:
        out: dict[int, list[str]] = {}
        for run_id, key in cur.fetchall():
            out.setdefault(run_id, []).append(key)
        return out
    finally:
        cur.close()


def history_wide(run_pks: Sequence[int], keys: Sequence[str] | None, *, with_run: bool) -> Any:
    """One row per step (index ``step``, or ``(run_id, step)`` with_run), one column per key; a
    (key, step) logged twice keeps its last value. One indexed query per (run, key)."""
    import numpy as np
    import pandas as pd

    known = _keys_of(run_pks)
    frames = []
    for pk in run_pks:
        wanted = known.get(pk, []) if keys is None else [k for k in keys if k in known.get(pk, ())]
        series = {}
        for key in wanted:
            pts = _series_points(pk, key)
            steps, values = pts["step"], pts["value"]
            if len(steps) > 1 and not np.all(steps[1:] != steps[:-1]):
                keep = np.append(steps[1:] != steps[:-1], True)  # last of each repeated step
                steps, values = steps[keep], values[keep]
            series[key] = pd.Series(
                values, index=pd.Index(steps, name="step"), name=key, copy=False
            )
        if not series:
            continue
        if len(series) == 1:
            frame = next(iter(series.values())).to_frame()
        else:
            frame = pd.concat(series, axis=1, sort=True)
            frame.index.name = "step"
        if with_run:
            frame.index = pd.MultiIndex.from_arrays(
                [np.full(len(frame), pk), frame.index.to_numpy()], names=["run_id", "step"]
            )
        frames.append(frame)
    if not frames:
        idx = (
            pd.MultiIndex.from_arrays([[], []], names=["run_id", "step"])
            if with_run
            else pd.Index([], dtype="int64", name="step")
        )
        return pd.DataFrame(index=idx)
    return frames[0] if len(frames) == 1 else pd.concat(frames, axis=0, sort=False)


def history_frame(points: Any, *, with_run: bool = False) -> Any:
    """Long rows ([run_id,] key, step, value, timestamp) from :func:`read_points` output."""
    import pandas as pd

    frame = pd.DataFrame(
        {
            "run_id": points["run_id"],
            "key": points["key"],
            "step": points["step"],
            "value": points["value"],
            # A client may have sent any finite time; one beyond pandas' range reads as NaT.
            "timestamp": pd.to_datetime(points["timestamp"], unit="s", utc=True, errors="coerce"),
        }
    )
    if not with_run:
        frame = frame.drop(columns="run_id")
    return frame
