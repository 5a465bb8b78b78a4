"""The annotation queue: exclusive, expiring claims on samples, handed out by strategy.

Exclusivity rests on the unique (task, sample) claim row, written with one conditional upsert
that only takes over an expired claim.

On PostgreSQL a claim is one round trip: one message holding two statements, which the server
runs as one transaction (or inside the caller's). The first renews the annotator's open claims
that fit the strategy, reads candidates with ``FOR NO KEY UPDATE SKIP LOCKED`` (concurrent
annotators pass each other's candidates by instead of queueing on them; NO KEY keeps inserts of
annotations referencing those samples unblocked) and inserts the claims. The second starts from
a fresh snapshot: it re-checks the claims and fetches their samples. The re-check is needed
because the first statement sees the database as it was when it started, so a sample another
annotator claimed, labelled and released meanwhile looks free to it, and no constraint catches
that (the other claim is gone). Outside a caller's transaction the second is a prepared
statement, planned once per database session.

The ids of the task, its project and the annotator are remembered per process after the first
claim, so the statements take them as plain values (which the planner sees) instead of looking
them up by name everywhere. They are only a hint: the claim statement checks that they still
carry the names the caller used, and they are found again when they do not (a renamed, deleted
or re-created task, project or user).

On SQLite tracker opens every transaction with ``BEGIN IMMEDIATE`` (see
``tracker.configuration.sqlite_database``): claimers take turns, never see "database is locked"
within the busy timeout, and nothing changes under a claim while it is made. There a claim
finds the ids, renews, claims and fetches in four statements of one transaction.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import weakref
from collections.abc import Iterable
from datetime import timedelta
from typing import Any, NoReturn

from django.contrib.auth import get_user_model
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction
from django.db.models import Q
from django.utils import timezone

from tracker import conf
from tracker.exceptions import InvalidValue, NotFound, TaskNotFound
from tracker.models import Annotation, AnnotationTask, Claim, Prediction, Project, Sample
from tracker.services.labeling import check_username, default_username, get_task, get_user
from tracker.services.projects import check_project_name

STRATEGIES = ("unlabeled", "least_confident", "random", "agreement")
MAX_BATCH = 1000
_ATTEMPTS = 3

_S, _A = Sample._meta.db_table, Annotation._meta.db_table
_C, _P = Claim._meta.db_table, Prediction._meta.db_table
_TASK, _PROJECT = AnnotationTask._meta.db_table, Project._meta.db_table
_FIELDS = Sample._meta.concrete_fields
_COLUMNS = ", ".join(f's."{f.column}"' for f in _FIELDS)
_ATTNAMES = [f.attname for f in _FIELDS]

# The agreement strategy's target, read from the task row: max(2, annotators_per_sample or 1).
_TARGET = {
    "postgresql": (
        "GREATEST(2, COALESCE(FLOOR((k.config->>'annotators_per_sample')::numeric)::int, 1))"
    ),
    "sqlite": (
        "MAX(2, COALESCE(CAST(json_extract(k.config, '$.annotators_per_sample') AS INTEGER), 1))"
    ),
}

# (database alias, how the call named its task and annotator) -> (task id, project id, user id).
# Only a hint: every claim checks in its own statement that the ids still carry those names.
_IDS: dict[tuple[Any, ...], tuple[int, int, int]] = {}
_IDS_MAX = 1024


def _check(n: Any, strategy: Any, ttl: Any) -> float:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_BATCH:
        raise InvalidValue(f"n must be a whole number from 1 to {MAX_BATCH}, not {n!r}.")
    if strategy not in STRATEGIES:
        raise InvalidValue(f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}.")
    if ttl is None:
        ttl = conf.get("CLAIM_TTL")
    if isinstance(ttl, timedelta):
        ttl = ttl.total_seconds()
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
        raise InvalidValue(f"ttl must be a positive number of seconds, not {ttl!r}.")
    return float(ttl)


class _Who:
    """The task and the annotator as the caller named them (objects or names), checked as
    get_task and get_user check them, without a query.

    ``ctes(checked)`` are the CTEs ``t`` (id, project_id, agreement target of the task) and
    ``u`` (id of the annotator) that find them by those names; ``checked`` adds that they must
    also have the ids in the params ``tid``, ``pid`` and ``uid``.
    """

    def __init__(self, project: Any, task: Any, annotator: Any, vendor: str) -> None:
        self.project, self.task, self.annotator = project, task, annotator
        params: dict[str, Any] = {}
        if isinstance(task, AnnotationTask):
            get_task(project, task)  # checks that the task belongs to the project
            match = "k.id = %(task_id)s"
            params["task_id"] = task.pk
        elif isinstance(task, str) and task.strip() and isinstance(project, (str, Project)):
            params["task"] = task.strip()
            if isinstance(project, Project):
                match = "k.project_id = %(project_id)s AND k.name = %(task)s"
                params["project_id"] = project.pk
            else:
                match = (
                    f"k.name = %(task)s AND k.project_id = "
                    f"(SELECT id FROM {_PROJECT} WHERE name = %(project)s)"
                )
                params["project"] = check_project_name(project)
        else:
            get_task(project, task)  # raises the error that fits these arguments
            raise AssertionError("get_task took a task the queue cannot find")  # pragma: no cover
        User = get_user_model()
        if isinstance(annotator, User):
            who = "id = %(user_id)s"
            params["user_id"] = annotator.pk
        else:
            who = f'"{User._meta.get_field("username").column}" = %(username)s'
            name = default_username() if annotator is None else annotator
            params["username"] = check_username(name)
        self.params = params
        self.key = (vendor, *sorted(params.items()))
        self._t = (
            f"SELECT k.id, k.project_id, {_TARGET[vendor]} AS target FROM {_TASK} k WHERE {match}"
        )
        self._u = f"SELECT id FROM {User._meta.db_table} WHERE {who}"

    def ctes(self, checked: bool) -> str:
        if checked:
            return (
                f"t AS ({self._t} AND k.id = %(tid)s AND k.project_id = %(pid)s), "
                f"u AS ({self._u} AND id = %(uid)s)"
            )
        return f"t AS ({self._t}), u AS ({self._u})"

    def find(self, conn: Any) -> tuple[int, int, int, int]:
        """(task id, project id, user id, agreement target) by name; raises TaskNotFound (or
        ProjectNotFound) for a missing task, and creates a missing annotator (first use)."""
        sql = (
            f"WITH {self.ctes(checked=False)} SELECT (SELECT id FROM t), "
            f"(SELECT project_id FROM t), (SELECT id FROM u), (SELECT target FROM t)"
        )
        for _ in range(3):
            with conn.cursor() as cur:
                cur.execute(sql, self.params)
                found = cur.fetchone()
            if None not in found:
                if len(_IDS) >= _IDS_MAX:
                    _IDS.clear()
                _IDS[(conn.alias, *self.key)] = found[:3]
                return found
            self._missing(found[0] is None, found[2] is None)
        return self.gone()

    def gone(self) -> NoReturn:  # pragma: no cover - only if deleted as fast as found again
        raise NotFound(
            f"The annotation task {self.task!r} or the annotator {self.annotator!r} kept "
            f"disappearing; check that neither is being deleted while annotators claim samples."
        )

    def _missing(self, task: bool, user: bool) -> None:
        """Raise for a missing task or annotator object; create a missing annotator by name."""
        if task:
            if isinstance(self.task, AnnotationTask):
                pk = f" (id {self.task.pk})" if self.task.pk else ""
                raise TaskNotFound(
                    f"The annotation task {self.task.name!r}{pk} no longer exists; define it "
                    f"again with tracker.define_task, or pass another task."
                )
            get_task(self.project, self.task)  # TaskNotFound or ProjectNotFound, naming the known
        if user:
            if isinstance(self.annotator, get_user_model()):
                pk = f" (user id {self.annotator.pk})" if self.annotator.pk else ""
                raise NotFound(
                    f"The annotator {self.annotator.get_username()!r}{pk} no longer exists; pass "
                    f"a username to have the annotator created again, or another user."
                )
            get_user(self.annotator)


class _Sql:
    """The queue's SQL, built directly: it runs on every claim, and compiling the equivalent
    ORM querysets cost as much as running them. Valid on PostgreSQL and SQLite alike.

    The task, project and annotator ids are params (``tid``, ``pid``, ``uid``), so the planner
    sees their values; the agreement target is ``target``, a param or SQL. ``guard`` is a
    condition that must hold for anything to be claimed (on PostgreSQL: the ids still carry
    the names the caller used). ``n`` is written into the SQL: the planner plans for it.
    """

    def __init__(
        self, strategy: str, n: int, exclude: bool, vendor: str, target: str, guard: str
    ) -> None:
        self.strategy, self.n, self.exclude = strategy, n, exclude
        self.target, self.guard = target, guard
        # One param whatever the number of excluded samples: one statement to prepare.
        self.excluded = (
            "s.id <> ALL(%(exclude)s)" if vendor == "postgresql"
            else "s.id NOT IN (SELECT value FROM json_each(%(exclude)s))"
        )

    def _done(self) -> str:
        return (
            f"(SELECT COUNT(*) FROM {_A} d WHERE d.task_id = %(tid)s AND d.sample_id = s.id "
            f"AND d.status <> 'rejected')"
        )

    def eligible(self, *, free: bool, exclude: bool = True) -> str:
        """WHERE condition on sample ``s``: the strategy would give it to this annotator
        (``free``: and nobody holds an active claim on it)."""
        where = ["s.project_id = %(pid)s"]
        if free:
            where.append(
                f"NOT EXISTS (SELECT 1 FROM {_C} c WHERE c.task_id = %(tid)s "
                f"AND c.sample_id = s.id AND c.expires_at > %(now)s)"
            )
        if self.strategy == "agreement":
            where.append(
                f"NOT EXISTS (SELECT 1 FROM {_A} a WHERE a.task_id = %(tid)s "
                f"AND a.sample_id = s.id AND a.annotator_id = %(uid)s)"
            )
            where.append(f"{self._done()} BETWEEN 1 AND {self.target} - 1")
        else:
            # No annotation at all, so none of this annotator's either.
            where.append(
                f"NOT EXISTS (SELECT 1 FROM {_A} a WHERE a.task_id = %(tid)s "
                f"AND a.sample_id = s.id)"
            )
        if exclude and self.exclude:
            where.append(self.excluded)
        return " AND ".join(where)

    def order(self) -> str:
        if self.strategy == "agreement":
            # Samples closest to their target first: they complete an agreement item soonest.
            return f"{self._done()} DESC, s.id"
        if self.strategy == "least_confident":
            # Samples without a prediction come after every predicted one.
            return (
                f"(SELECT MAX(p.score) FROM {_P} p WHERE p.task_id = %(tid)s "
                f"AND p.sample_id = s.id) ASC NULLS LAST, s.id"
            )
        if self.strategy == "random":
            return "RANDOM()"
        return "s.id"

    def renew(self) -> str:
        """UPDATE renewing up to ``n`` of the annotator's active claims that fit the strategy:
        they come back first (a re-run cell gets the same samples) and do not expire while
        being worked on."""
        own = (
            f"SELECT m.id FROM {_C} m JOIN {_S} s ON s.id = m.sample_id WHERE m.task_id = %(tid)s "
            f"AND m.annotator_id = %(uid)s AND m.expires_at > %(now)s "
            f"AND {self.eligible(free=False)} AND {self.guard} "
            f"ORDER BY {self.order()} LIMIT {self.n}"
        )
        return f"UPDATE {_C} SET expires_at = %(expires)s WHERE id IN ({own})"

    def candidates(self, limit: str, lock: bool) -> str:
        sql = (
            f"SELECT s.id FROM {_S} s WHERE {self.eligible(free=True)} AND {self.guard} "
            f"ORDER BY {self.order()} LIMIT {limit}"
        )
        return sql + (" FOR NO KEY UPDATE OF s SKIP LOCKED" if lock else "")

    def insert(self, source: str) -> str:
        """INSERT claims on the ids in ``source`` (a FROM item ``c`` with an ``id`` column),
        taking over only expired claims."""
        return (
            f"INSERT INTO {_C} (task_id, sample_id, annotator_id, claimed_at, expires_at) "
            f"SELECT %(tid)s, c.id, %(uid)s, %(now)s, %(expires)s FROM {source} WHERE true "
            f"ORDER BY c.id ON CONFLICT (task_id, sample_id) DO UPDATE SET "
            f"annotator_id = excluded.annotator_id, claimed_at = excluded.claimed_at, "
            f"expires_at = excluded.expires_at WHERE {_C}.expires_at <= excluded.claimed_at"
        )

    def fetch(self, ctes: str, give_back: bool) -> str:
        """SELECT of the samples of this call's claims (renewed or new: ``expires_at`` is this
        call's) that still fit the strategy, held ones first, each part in the strategy's
        order; with ``give_back`` the claims that no longer fit are deleted."""
        mine = (
            f"SELECT m.id AS claim_id, m.sample_id, m.claimed_at < %(now)s AS held, "
            f"({self.eligible(free=False, exclude=False)}) AS ok "
            f"FROM {_C} m JOIN {_S} s ON s.id = m.sample_id WHERE m.task_id = %(tid)s "
            f"AND m.annotator_id = %(uid)s AND m.expires_at = %(expires)s"
        )
        gone = (
            f", gone AS (DELETE FROM {_C} WHERE id IN (SELECT claim_id FROM mine WHERE NOT ok))"
            if give_back else ""
        )
        return (
            f"WITH {ctes}mine AS ({mine}){gone} SELECT {_COLUMNS} FROM mine m "
            f"JOIN {_S} s ON s.id = m.sample_id WHERE m.ok ORDER BY m.held DESC, {self.order()}"
        )


_converters: weakref.WeakKeyDictionary[Any, list[tuple[int, list[Any], Any]]] = (
    weakref.WeakKeyDictionary()
)


def _samples(conn: Any, rows: list[tuple[Any, ...]]) -> list[Sample]:
    """Sample instances from rows of ``_COLUMNS``, converted as a queryset would convert them."""
    conv = _converters.get(conn)
    if conv is None:
        conv = []
        for i, field in enumerate(_FIELDS):
            col = field.get_col(_S)
            funcs = conn.ops.get_db_converters(col) + col.get_db_converters(conn)
            if funcs:
                conv.append((i, funcs, col))
        _converters[conn] = conv
    out = []
    for row in rows:
        values = list(row)
        for i, funcs, col in conv:
            for func in funcs:
                values[i] = func(values[i], col, conn)
        out.append(Sample.from_db(conn.alias, _ATTNAMES, values))
    return out


# The re-check and fetch statement is prepared once per database session (outside a caller's
# transaction): planned once, as a generic plan, instead of at every claim. The claim statement
# is not: a generic plan is frozen until the next ANALYZE, and one made while a new task has
# few annotations (statistics say "almost none") walks all of them for every sample it
# passes, growing with each label; a fresh plan at each claim follows the tables as they grow.
# Names already prepared, per connection:
_prepared: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
# Turned off for the process when the server sessions do not keep what was prepared on them
# (a pooler in transaction mode hands each transaction another one).
_PREPARE = True
_TYPES = {"task": "text", "project": "text", "username": "text", "now": "timestamptz",
          "expires": "timestamptz", "exclude": "bigint[]"}  # the other params are ids: bigint


@functools.lru_cache(maxsize=256)
def _statement(text: str) -> tuple[str, str, str]:
    """(name, PREPARE, EXECUTE) for one statement with ``%(name)s`` params."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    body = re.sub(r"%\((\w+)\)s", number, text)
    name = "tracker_queue_" + hashlib.sha1(text.encode()).hexdigest()[:20]
    types = ", ".join(_TYPES.get(x, "bigint") for x in names)
    args = ", ".join(f"%({x})s" for x in names)
    return name, f"PREPARE {name} ({types}) AS {body}", f"EXECUTE {name} ({args})"


def _execute(conn: Any, cur: Any, plain: str, prepared: str, params: dict[str, Any]) -> None:
    """Run ``plain`` then ``prepared`` in one message, the second as a prepared statement when
    that is safe; the cursor is left on the first one's result."""
    global _PREPARE
    if conn.in_atomic_block or not _PREPARE:
        # Inside the caller's transaction an error would abort it, and recovering from a
        # session that lost its prepared statements takes an error.
        cur.execute(f"{plain}; {prepared}", params)
        return
    known = _prepared.setdefault(conn.connection, set())
    name, prepare, run = _statement(prepared)
    for attempt in range(2):
        todo = name not in known
        try:
            cur.execute(f"{prepare}; {plain}; {run}" if todo else f"{plain}; {run}", params)
        except DatabaseError as exc:
            # 26000: not prepared after all; 42P05: prepared already (a PREPARE outlives the
            # failed transaction it was sent in). The session is not what we thought.
            if getattr(exc.__cause__, "sqlstate", None) not in ("26000", "42P05"):
                raise
            if attempt:  # not even after asking it: sessions are being swapped under us
                _PREPARE = False
                cur.execute(f"{plain}; {prepared}", params)
                return
            known.clear()
            known.update(_prepared_names(conn))
            continue
        known.add(name)
        if todo:
            cur.nextset()
        return


def _prepared_names(conn: Any) -> list[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT name FROM pg_prepared_statements")
        return [row[0] for row in cur.fetchall()]


def _claim_pg(
    conn: Any, who: _Who, sql: _Sql, params: dict[str, Any]
) -> tuple[list[Sample], int] | None:
    """One claim attempt on PostgreSQL, in one round trip.

    Returns the samples and how many claims were lost to concurrent claimers or given back as
    stale; None when the ids in ``params`` no longer carry the caller's names.
    """
    ctes = who.ctes(checked=True)
    # A claim is worth no disk flush: one lost in a server crash is simply claimed again. Not
    # inside the caller's transaction: the setting would last for all of it.
    sync = "" if conn.in_atomic_block else ", set_config('synchronous_commit', 'off', true)"
    claim = (
        f"WITH {ctes}, own AS ({sql.renew()} RETURNING sample_id), "
        f"cand AS ({sql.candidates(str(sql.n), lock=True)}), "
        f"pick AS (SELECT id FROM (SELECT id, row_number() OVER () AS ord FROM cand) c "
        f"WHERE ord <= {sql.n} - (SELECT COUNT(*) FROM own)), "
        f"ins AS ({sql.insert('pick c')} RETURNING sample_id) "
        f"SELECT EXISTS (SELECT 1 FROM t) AND EXISTS (SELECT 1 FROM u), "
        f"(SELECT COUNT(*) FROM own), (SELECT COUNT(*) FROM pick), (SELECT COUNT(*) FROM ins){sync}"
    )
    with conn.cursor() as cur:
        _execute(conn, cur, claim, sql.fetch(ctes + ", ", give_back=True), params)
        valid, own, picked, won = cur.fetchone()[:4]
        cur.nextset()
        samples = _samples(conn, cur.fetchall())
    if not valid:
        return None
    return samples, (picked - won) + (own + won - len(samples))


def _claim_sqlite(
    conn: Any, who: _Who, sql: _Sql, params: dict[str, Any]
) -> tuple[list[Sample], int]:
    """One claim attempt on SQLite: one writer at a time, so nothing is lost or goes stale."""
    with transaction.atomic(using=conn.alias):
        params["tid"], params["pid"], params["uid"], params["target"] = who.find(conn)
        with conn.cursor() as cur:
            cur.execute(sql.renew(), params)
            left = params["n"] - cur.rowcount
            if left > 0:
                params["left"] = left
                cur.execute(sql.insert(f"({sql.candidates('%(left)s', lock=False)}) c"), params)
            cur.execute(sql.fetch("", give_back=False), params)
            return _samples(conn, cur.fetchall()), 0


def next_samples(
    project: str | Project,
    task: str | AnnotationTask,
    n: int = 1,
    annotator: Any = None,
    strategy: str = "unlabeled",
    *,
    ttl: float | None = None,
    exclude: Iterable[int] = (),
) -> list[Sample]:
    """Claim up to ``n`` samples for an annotator; see :func:`tracker.next_samples`.

    ``exclude`` (sample pks) is for callers that track samples themselves, like the widget's
    skipped ones; it is not part of the public API.
    """
    ttl_s = _check(n, strategy, ttl)
    skip = [int(x) for x in exclude]
    conn = connections[DEFAULT_DB_ALIAS]
    pg = conn.vendor == "postgresql"
    who = _Who(project, task, annotator, conn.vendor)
    if pg:
        guard = "EXISTS (SELECT 1 FROM t) AND EXISTS (SELECT 1 FROM u)"
        sql = _Sql(strategy, n, bool(skip), conn.vendor, "(SELECT target FROM t)", guard)
    else:
        sql = _Sql(strategy, n, bool(skip), conn.vendor, "%(target)s", "1 = 1")
    key = (conn.alias, *who.key)
    tries = 0
    for _ in range(_ATTEMPTS + 1):  # + once more when the ids found before are out of date
        now = timezone.now()
        params = {
            **who.params, "n": n, "exclude": skip if pg else json.dumps(skip),
            "now": conn.ops.adapt_datetimefield_value(now),
            "expires": conn.ops.adapt_datetimefield_value(now + timedelta(seconds=ttl_s)),
        }
        if not pg:
            samples, lost = _claim_sqlite(conn, who, sql, params)
        else:
            ids = _IDS.get(key) or who.find(conn)[:3]
            params["tid"], params["pid"], params["uid"] = ids
            outcome = _claim_pg(conn, who, sql, params)
            if outcome is None:
                # Renamed or deleted since they were found: find them again (or raise).
                _IDS.pop(key, None)
                who.find(conn)
                continue
            samples, lost = outcome
        tries += 1
        # A sample lost to a concurrent claimer or gone stale is made up for by another try;
        # the claims kept so far come back in it as held ones.
        if len(samples) >= n or not lost or tries == _ATTEMPTS:
            return samples
    return who.gone()


def release(
    project: str | Project,
    task: str | AnnotationTask,
    samples: Iterable[Any] | None = None,
    annotator: Any = None,
) -> int:
    """Give back an annotator's claims; see :func:`tracker.release`."""
    task_obj = get_task(project, task)
    with transaction.atomic():
        user = get_user(annotator)
        qs = Claim.objects.filter(task=task_obj, annotator=user)
        if samples is not None:
            if isinstance(samples, (Sample, int, str)):
                samples = [samples]
            ids, ext = [], []
            for s in samples:
                if isinstance(s, Sample):
                    ids.append(s.pk)
                elif isinstance(s, int) and not isinstance(s, bool):
                    ids.append(s)
                elif isinstance(s, str):
                    ext.append(s)
                else:
                    raise InvalidValue(f"release(): {s!r} is not a Sample, a sample id or an external id.")
            qs = qs.filter(Q(sample_id__in=ids) | Q(sample__external_id__in=ext))
        count, _ = qs.delete()
    return count


def claims_frame(project: str | Project, task: str | AnnotationTask, *, active: bool = True) -> Any:
    """The task's claims as a DataFrame; see :func:`tracker.claims`."""
    import pandas as pd

    task_obj = get_task(project, task)
    qs = Claim.objects.filter(task=task_obj)
    if active:
        qs = qs.filter(expires_at__gt=timezone.now())
    rows = qs.order_by("claimed_at", "pk").values_list(
        "sample__external_id", "sample_id", "annotator__username", "claimed_at", "expires_at"
    )
    return pd.DataFrame(list(rows), columns=["external_id", "sample_id", "annotator", "claimed_at", "expires_at"])
