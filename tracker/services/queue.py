"""The annotation queue: exclusive, expiring claims on samples, handed out by strategy.

Exclusivity rests on the unique (task, sample) claim row, written with one conditional upsert
that only takes over an expired claim.

On PostgreSQL a claim is one round trip: one message holding two statements, which the server
runs as one transaction (or inside the caller's). The first finds the task and the annotator by
name, renews the annotator's open claims that fit the strategy, reads candidates with
``FOR NO KEY UPDATE SKIP LOCKED`` (concurrent annotators pass each other's candidates by instead
of queueing on them; NO KEY keeps inserts of annotations referencing those samples unblocked)
and inserts the claims. The second statement starts from a fresh snapshot: it re-checks the
claims and fetches their samples. The re-check is needed because the first statement sees the
database as it was when it started, so a sample another annotator claimed, labelled and released
meanwhile looks free to it, and no constraint catches that (the other claim is gone).

On SQLite tracker opens every transaction with ``BEGIN IMMEDIATE`` (see
``tracker.configuration.sqlite_database``): claimers take turns, never see "database is locked"
within the busy timeout, and nothing changes under a claim while it is made.

Nothing is cached between calls: the task and the annotator are found by name in the claim's own
statements, so a renamed or deleted task or user is seen at once.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db import DEFAULT_DB_ALIAS, connections, transaction
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
    "postgresql": "GREATEST(2, COALESCE(FLOOR((k.config->>'annotators_per_sample')::numeric)::int, 1))",
    "sqlite": "MAX(2, COALESCE(CAST(json_extract(k.config, '$.annotators_per_sample') AS INTEGER), 1))",
}
# Column references into the CTEs t (task) and u (annotator) of a PostgreSQL claim.
_PG_REFS = {
    "task": "(SELECT id FROM t)",
    "project": "(SELECT project_id FROM t)",
    "user": "(SELECT id FROM u)",
    "target": "(SELECT target FROM t)",
}
# ... and to the values an SQLite claim looked up first.
_LITERAL_REFS = {"task": "%(tid)s", "project": "%(pid)s", "user": "%(uid)s", "target": "%(target)s"}


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


def _who(project: Any, task: Any, annotator: Any, vendor: str) -> tuple[str, dict[str, Any]]:
    """The CTEs ``t`` (id, project_id, target of the task) and ``u`` (id of the annotator), and
    their params. Inputs are checked as get_task and get_user check them, without a query."""
    params: dict[str, Any] = {}
    if isinstance(task, AnnotationTask):
        task = get_task(project, task)  # checks that the task belongs to the project
        match = "k.id = %(task_id)s"
        params["task_id"] = task.pk
    elif isinstance(task, str) and task.strip() and isinstance(project, (str, Project)):
        params["task"] = task.strip()
        if isinstance(project, Project):
            match = "k.project_id = %(project_id)s AND k.name = %(task)s"
            params["project_id"] = project.pk
        else:
            match = f"k.project_id = (SELECT id FROM {_PROJECT} WHERE name = %(project)s) AND k.name = %(task)s"
            params["project"] = check_project_name(project)
    else:
        get_task(project, task)  # raises the error that fits these arguments
        raise AssertionError("get_task accepted a task the queue cannot look up")  # pragma: no cover
    User = get_user_model()
    if isinstance(annotator, User):
        who = "id = %(user_id)s"
        params["user_id"] = annotator.pk
    else:
        who = f'"{User._meta.get_field("username").column}" = %(username)s'
        params["username"] = check_username(default_username() if annotator is None else annotator)
    sql = (
        f"t AS (SELECT k.id, k.project_id, {_TARGET[vendor]} AS target FROM {_TASK} k WHERE {match}), "
        f"u AS (SELECT id FROM {User._meta.db_table} WHERE {who})"
    )
    return sql, params


def _missing(project: Any, task: Any, annotator: Any, task_id: Any, user_id: Any) -> None:
    """The task or the annotator was not found: raise, or create the annotator (first use)."""
    if task_id is None:
        if isinstance(task, AnnotationTask):
            raise TaskNotFound(
                f"The annotation task {task.name!r}{f' (id {task.pk})' if task.pk else ''} no longer exists; define it "
                f"again with tracker.define_task, or pass another task."
            )
        get_task(project, task)  # raises TaskNotFound or ProjectNotFound naming the known ones
    if user_id is None:
        if isinstance(annotator, get_user_model()):
            raise NotFound(
                f"The annotator {annotator.get_username()!r}{f' (user id {annotator.pk})' if annotator.pk else ''} no longer "
                f"exists; pass a username to have the annotator created again, or another user."
            )
        get_user(annotator)  # created on first use


class _Sql:
    """The queue's SQL, built directly: it runs on every claim, and compiling the equivalent
    ORM querysets cost as much as running them. Valid on PostgreSQL and SQLite alike.

    ``refs`` gives the SQL for the task's id, its project's id, the annotator's id and the
    agreement target: subqueries on the CTEs of :func:`_who`, or params.
    """

    def __init__(self, strategy: str, refs: dict[str, str], exclude: list[str]) -> None:
        self.strategy, self.exclude = strategy, exclude
        self.T, self.Pr, self.U, self.N = refs["task"], refs["project"], refs["user"], refs["target"]

    def _done(self) -> str:
        return (
            f"(SELECT COUNT(*) FROM {_A} d WHERE d.task_id = {self.T} AND d.sample_id = s.id "
            f"AND d.status <> 'rejected')"
        )

    def eligible(self, *, free: bool, exclude: bool = True) -> str:
        """WHERE condition on sample ``s``: the strategy would give it to this annotator
        (``free``: and nobody holds an active claim on it)."""
        T = self.T
        where = [f"s.project_id = {self.Pr}"]
        if free:
            where.append(
                f"NOT EXISTS (SELECT 1 FROM {_C} c WHERE c.task_id = {T} AND c.sample_id = s.id "
                f"AND c.expires_at > %(now)s)"
            )
        if self.strategy == "agreement":
            where.append(
                f"NOT EXISTS (SELECT 1 FROM {_A} a WHERE a.task_id = {T} AND a.sample_id = s.id "
                f"AND a.annotator_id = {self.U})"
            )
            where.append(f"{self._done()} BETWEEN 1 AND {self.N} - 1")
        else:
            # No annotation at all, so none of this annotator's either.
            where.append(f"NOT EXISTS (SELECT 1 FROM {_A} a WHERE a.task_id = {T} AND a.sample_id = s.id)")
        if exclude and self.exclude:
            where.append(f"s.id NOT IN ({', '.join(f'%({x})s' for x in self.exclude)})")
        return " AND ".join(where)

    def order(self) -> str:
        if self.strategy == "agreement":
            # Samples closest to their target first: they complete an agreement item soonest.
            return f"{self._done()} DESC, s.id"
        if self.strategy == "least_confident":
            # Samples without a prediction come after every predicted one.
            return (
                f"(SELECT MAX(p.score) FROM {_P} p WHERE p.task_id = {self.T} AND p.sample_id = s.id) "
                f"ASC NULLS LAST, s.id"
            )
        if self.strategy == "random":
            return "RANDOM()"
        return "s.id"

    def renew(self) -> str:
        """UPDATE renewing up to ``n`` of the annotator's active claims that fit the strategy:
        they come back first (a re-run cell gets the same samples) and do not expire while
        being worked on."""
        own = (
            f"SELECT m.id FROM {_C} m JOIN {_S} s ON s.id = m.sample_id WHERE m.task_id = {self.T} "
            f"AND m.annotator_id = {self.U} AND m.expires_at > %(now)s AND {self.eligible(free=False)} "
            f"ORDER BY {self.order()} LIMIT %(n)s"
        )
        return f"UPDATE {_C} SET expires_at = %(expires)s WHERE id IN ({own})"

    def candidates(self, limit: str, lock: bool) -> str:
        sql = (
            f"SELECT s.id FROM {_S} s WHERE {self.eligible(free=True)} AND {self.U} IS NOT NULL "
            f"ORDER BY {self.order()} LIMIT {limit}"
        )
        return sql + (" FOR NO KEY UPDATE OF s SKIP LOCKED" if lock else "")

    def insert(self, source: str) -> str:
        """INSERT claims on the ids in ``source`` (a FROM item with an ``id`` column), taking
        over only expired claims."""
        return (
            f"INSERT INTO {_C} (task_id, sample_id, annotator_id, claimed_at, expires_at) "
            f"SELECT {self.T}, c.id, {self.U}, %(now)s, %(expires)s FROM {source} WHERE true ORDER BY c.id "
            f"ON CONFLICT (task_id, sample_id) DO UPDATE SET annotator_id = excluded.annotator_id, "
            f"claimed_at = excluded.claimed_at, expires_at = excluded.expires_at "
            f"WHERE {_C}.expires_at <= excluded.claimed_at"
        )

    def fetch(self, ctes: str, give_back: bool) -> str:
        """SELECT of the samples of this call's claims (renewed or new: ``expires_at`` is this
        call's) that still fit the strategy, held ones first, each part in the strategy's
        order; with ``give_back`` the claims that no longer fit are deleted."""
        mine = (
            f"SELECT m.id AS claim_id, m.sample_id, m.claimed_at < %(now)s AS held, "
            f"({self.eligible(free=False, exclude=False)}) AS ok FROM {_C} m JOIN {_S} s ON s.id = m.sample_id "
            f"WHERE m.task_id = {self.T} AND m.annotator_id = {self.U} AND m.expires_at = %(expires)s"
        )
        gone = f", gone AS (DELETE FROM {_C} WHERE id IN (SELECT claim_id FROM mine WHERE NOT ok))" if give_back else ""
        return (
            f"WITH {ctes}mine AS ({mine}){gone} SELECT {_COLUMNS} FROM mine m JOIN {_S} s ON s.id = m.sample_id "
            f"WHERE m.ok ORDER BY m.held DESC, {self.order()}"
        )


_converters: weakref.WeakKeyDictionary[Any, list[tuple[int, list[Any], Any]]] = weakref.WeakKeyDictionary()


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


def _claim_pg(conn: Any, sql: _Sql, ctes: str, params: dict[str, Any]) -> tuple[list[Any], list[Sample], int]:
    """One claim attempt on PostgreSQL in one round trip.

    Returns (task id, user id), the samples, and how many claims were lost to concurrent
    claimers or given back as stale.
    """
    # A claim is worth no disk flush: one lost in a server crash is simply claimed again. Only
    # when the claim is its own transaction (the setting would last for the caller's).
    sync = "" if conn.in_atomic_block else ", set_config('synchronous_commit', 'off', true)"
    claim = (
        f"WITH {ctes}, own AS ({sql.renew()} RETURNING sample_id), "
        f"cand AS ({sql.candidates('%(n)s', lock=True)}), "
        f"pick AS (SELECT id FROM (SELECT id, row_number() OVER () AS ord FROM cand) c "
        f"WHERE ord <= %(n)s - (SELECT COUNT(*) FROM own)), "
        f"ins AS ({sql.insert('pick c')} RETURNING sample_id) "
        f"SELECT (SELECT id FROM t), (SELECT id FROM u), (SELECT COUNT(*) FROM own), "
        f"(SELECT COUNT(*) FROM pick), (SELECT COUNT(*) FROM ins){sync}"
    )
    with conn.cursor() as cur:
        cur.execute(f"{claim}; {sql.fetch(ctes + ', ', give_back=True)}", params)
        task_id, user_id, own, picked, won = cur.fetchone()[:5]
        cur.nextset()
        samples = _samples(conn, cur.fetchall())
    return [task_id, user_id], samples, (picked - won) + (own + won - len(samples))


def _claim_sqlite(conn: Any, sql: _Sql, ctes: str, params: dict[str, Any]) -> tuple[list[Any], list[Sample], int]:
    """One claim attempt on SQLite: one writer at a time, so nothing is lost or goes stale."""
    with transaction.atomic(using=conn.alias), conn.cursor() as cur:
        cur.execute(
            f"WITH {ctes} SELECT (SELECT id FROM t), (SELECT project_id FROM t), (SELECT target FROM t), "
            f"(SELECT id FROM u)",
            params,
        )
        task_id, project_id, target, user_id = cur.fetchone()
        if task_id is None or user_id is None:
            return [task_id, user_id], [], 0
        params.update(tid=task_id, pid=project_id, uid=user_id, target=target)
        cur.execute(sql.renew(), params)
        left = params["n"] - cur.rowcount
        if left > 0:
            params["left"] = left
            cur.execute(sql.insert(f"({sql.candidates('%(left)s', lock=False)}) c"), params)
        cur.execute(sql.fetch("", give_back=False), params)
        return [task_id, user_id], _samples(conn, cur.fetchall()), 0


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
    skip = {f"x{i}": int(x) for i, x in enumerate(exclude)}
    conn = connections[DEFAULT_DB_ALIAS]
    pg = conn.vendor == "postgresql"
    ctes, who = _who(project, task, annotator, "postgresql" if pg else "sqlite")
    sql = _Sql(strategy, _PG_REFS if pg else _LITERAL_REFS, list(skip))
    attempt = _claim_pg if pg else _claim_sqlite
    tries = 0
    for _ in range(_ATTEMPTS + 2):  # + the task and the annotator appearing meanwhile
        now = timezone.now()
        params = {
            **who, **skip, "n": n,
            "now": conn.ops.adapt_datetimefield_value(now),
            "expires": conn.ops.adapt_datetimefield_value(now + timedelta(seconds=ttl_s)),
        }
        found, samples, lost = attempt(conn, sql, ctes, params)
        if None in found:
            _missing(project, task, annotator, *found)  # raises, or creates the annotator
            continue
        tries += 1
        # A sample lost to a concurrent claimer or gone stale is made up for by another try;
        # the claims kept so far come back in it as held ones.
        if len(samples) >= n or not lost or tries == _ATTEMPTS:
            return samples
    raise NotFound(
        f"The annotation task {task!r} or the annotator {annotator!r} was found and then not "
        f"found again; check that neither is being deleted while annotators claim samples."
    )


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
