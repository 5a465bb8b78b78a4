"""The annotation queue: exclusive, expiring claims on samples, handed out by strategy.

Exclusivity rests on the unique (task, sample) claim row, written with one conditional upsert
that only takes over an expired claim. On PostgreSQL the candidate samples are read with
``FOR NO KEY UPDATE SKIP LOCKED`` so concurrent annotators pass each other's candidates by
instead of queueing on them (NO KEY keeps inserts of annotations referencing those samples
unblocked). On SQLite tracker opens every transaction with ``BEGIN IMMEDIATE`` (see
``tracker.configuration.sqlite_database``), so claimers take turns and never see "database is
locked" within the busy timeout.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from tracker import conf
from tracker.exceptions import InvalidValue
from tracker.models import Annotation, AnnotationTask, Claim, Prediction, Project, Sample
from tracker.services.labeling import get_task, get_user

STRATEGIES = ("unlabeled", "least_confident", "random", "agreement")
MAX_BATCH = 1000
_ATTEMPTS = 3


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


class _Query:
    """The queue's SQL, built directly: it runs on every claim, and compiling the equivalent
    ORM querysets cost as much as running them. Valid on PostgreSQL and SQLite alike."""

    def __init__(self, task: AnnotationTask, user: Any, strategy: str, now: Any) -> None:
        self.task, self.user, self.strategy = task, user, strategy
        self.now = connection.ops.adapt_datetimefield_value(now)
        self.S, self.A = Sample._meta.db_table, Annotation._meta.db_table
        self.C, self.P = Claim._meta.db_table, Prediction._meta.db_table

    def _done(self) -> str:
        return (
            f"(SELECT COUNT(*) FROM {self.A} d WHERE d.task_id = %s AND d.sample_id = s.id "
            f"AND d.status <> 'rejected')"
        )

    def eligible(self, claims: str) -> tuple[list[str], list[Any]]:
        """WHERE terms and params: samples the strategy would give this annotator.

        ``claims``: "free" (no active claim of anyone), "mine" (an active claim of this
        annotator) or "any" (claims not considered).
        """
        t, where, params = self.task, ["s.project_id = %s"], [self.task.project_id]
        if claims == "free":
            where.append(
                f"NOT EXISTS (SELECT 1 FROM {self.C} c WHERE c.task_id = %s AND c.sample_id = s.id "
                f"AND c.expires_at > %s)"
            )
            params += [t.pk, self.now]
        elif claims == "mine":
            where.append(
                f"EXISTS (SELECT 1 FROM {self.C} c WHERE c.task_id = %s AND c.sample_id = s.id "
                f"AND c.annotator_id = %s AND c.expires_at > %s)"
            )
            params += [t.pk, self.user.pk, self.now]
        where.append(
            f"NOT EXISTS (SELECT 1 FROM {self.A} a WHERE a.task_id = %s AND a.sample_id = s.id "
            f"AND a.annotator_id = %s)"
        )
        params += [t.pk, self.user.pk]
        if self.strategy == "agreement":
            target = max(2, int(t.config.get("annotators_per_sample") or 1))
            where.append(f"{self._done()} BETWEEN 1 AND %s")
            params += [t.pk, target - 1]
        else:
            where.append(f"NOT EXISTS (SELECT 1 FROM {self.A} a WHERE a.task_id = %s AND a.sample_id = s.id)")
            params.append(t.pk)
        return where, params

    def candidates(self, n: int, exclude: list[int], *, own: bool = False) -> tuple[str, list[Any]]:
        """SELECT of up to ``n`` sample ids, best first (locked, SKIP LOCKED, on PostgreSQL)."""
        where, params = self.eligible("mine" if own else "free")
        if exclude:
            where.append(f"s.id NOT IN ({', '.join(['%s'] * len(exclude))})")
            params += exclude
        order_params: list[Any] = []
        if self.strategy == "agreement":
            # Samples closest to their target first: they complete an agreement item soonest.
            order = f"{self._done()} DESC, s.id"
            order_params.append(self.task.pk)
        elif self.strategy == "least_confident":
            # Samples without a prediction come after every predicted one.
            order = (
                f"(SELECT MAX(p.score) FROM {self.P} p WHERE p.task_id = %s AND p.sample_id = s.id) "
                f"ASC NULLS LAST, s.id"
            )
            order_params.append(self.task.pk)
        elif self.strategy == "random":
            order = "RANDOM()"
        else:
            order = "s.id"
        sql = f"SELECT s.id FROM {self.S} s WHERE {' AND '.join(where)} ORDER BY {order} LIMIT %s"
        if not own and connection.features.has_select_for_update_skip_locked:
            sql += " FOR NO KEY UPDATE OF s SKIP LOCKED"
        return sql, [*params, *order_params, n]


def _ids(sql: str, params: list[Any]) -> list[int]:
    with connection.cursor() as cur:
        cur.execute(sql, params)
        return [row[0] for row in cur.fetchall()]


def _take(task: AnnotationTask, user: Any, sample_ids: list[int], now: Any, expires: Any) -> list[int]:
    """Insert claims, taking over only expired ones; returns the sample ids actually claimed."""
    if not sample_ids:
        return []
    ops = connection.ops
    table = Claim._meta.db_table
    values = ", ".join(["(%s, %s, %s, %s, %s)"] * len(sample_ids))
    params: list[Any] = []
    for sid in sorted(sample_ids):
        params += [task.pk, sid, user.pk, ops.adapt_datetimefield_value(now), ops.adapt_datetimefield_value(expires)]
    sql = (
        f"INSERT INTO {table} (task_id, sample_id, annotator_id, claimed_at, expires_at) "
        f"VALUES {values} "
        f"ON CONFLICT (task_id, sample_id) DO UPDATE SET annotator_id = excluded.annotator_id, "
        f"claimed_at = excluded.claimed_at, expires_at = excluded.expires_at "
        f"WHERE {table}.expires_at <= excluded.claimed_at "
        f"RETURNING sample_id"
    )
    return _ids(sql, params)


def _claim_pg(task: AnnotationTask, user: Any, cand: tuple[str, list[Any]], now: Any, expires: Any) -> list[tuple[int, bool]]:
    """PostgreSQL: lock candidates, insert claims and report, in one statement.

    Returns (sample id, claimed) for every candidate in the strategy's order; a candidate
    is not claimed when a concurrent annotator got it first.
    """
    cand_sql, cand_params = cand
    table = Claim._meta.db_table
    sql = (
        f"WITH cand AS (SELECT c.id, row_number() OVER () AS ord FROM ({cand_sql}) c), "
        f"ins AS (INSERT INTO {table} (task_id, sample_id, annotator_id, claimed_at, expires_at) "
        f"SELECT %s, cand.id, %s, %s, %s FROM cand ORDER BY cand.id "
        f"ON CONFLICT (task_id, sample_id) DO UPDATE SET annotator_id = excluded.annotator_id, "
        f"claimed_at = excluded.claimed_at, expires_at = excluded.expires_at "
        f"WHERE {table}.expires_at <= excluded.claimed_at RETURNING sample_id) "
        f"SELECT cand.id, ins.sample_id IS NOT NULL FROM cand LEFT JOIN ins ON ins.sample_id = cand.id "
        f"ORDER BY cand.ord"
    )
    with connection.cursor() as cur:
        cur.execute(sql, [*cand_params, task.pk, user.pk, now, expires])
        return [(pk, bool(ok)) for pk, ok in cur.fetchall()]


def _serialised() -> bool:
    """SQLite with IMMEDIATE transactions: one writer at a time, so nothing changes under us."""
    return connection.vendor == "sqlite" and str(
        connection.settings_dict.get("OPTIONS", {}).get("transaction_mode", "")
    ).upper() == "IMMEDIATE"


def _still_eligible(query: _Query, taken: list[int]) -> dict[int, Sample]:
    """The claimed samples that still fit the strategy, read in a fresh statement.

    On PostgreSQL the candidate query sees the database as it was when it started: a sample
    another annotator claimed, labelled and released meanwhile looks free to it. The claim
    insert cannot catch that (the other claim is gone), so the claims are checked again here
    (the same query fetches the samples) and the stale ones given back.
    """
    if not taken:
        return {}
    if _serialised():
        return Sample.objects.in_bulk(taken)
    where, params = query.eligible("any")
    where.append(f"s.id IN ({', '.join(['%s'] * len(taken))})")
    ok = {x.pk: x for x in Sample.objects.raw(f"SELECT s.* FROM {query.S} s WHERE {' AND '.join(where)}", [*params, *taken])}
    stale = [pk for pk in taken if pk not in ok]
    if stale:
        Claim.objects.filter(task=query.task, annotator=query.user, sample_id__in=stale).delete()
    return ok


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
    task_obj = get_task(project, task)
    pg = connection.vendor == "postgresql"
    with transaction.atomic():
        user = get_user(annotator)
        now = timezone.now()
        expires = now + timedelta(seconds=ttl_s)
        query = _Query(task_obj, user, strategy, now)
        held_sql = (
            f"SELECT 1 FROM {query.C} c WHERE c.task_id = %s AND c.annotator_id = %s AND c.expires_at > %s"
        )
        held_params = [task_obj.pk, user.pk, query.now]
        with connection.cursor() as cur:
            if pg:
                # A claim is worth no disk flush: one lost in a server crash is simply claimed
                # again. Set in the same round trip as the check for held claims.
                cur.execute(f"SELECT set_config('synchronous_commit', 'off', true), EXISTS ({held_sql})", held_params)
                held = bool(cur.fetchone()[1])
            else:
                cur.execute(held_sql + " LIMIT 1", held_params)
                held = cur.fetchone() is not None
        # The annotator's own open claims that fit the strategy come back first (a re-run cell
        # gets the same samples), renewed so they do not expire while being worked on.
        own = _ids(*query.candidates(n, skip, own=True)) if held else []
        fetched: dict[int, Sample] = {}
        if own:
            Claim.objects.filter(task=task_obj, annotator=user, sample_id__in=own).update(expires_at=expires)
            fetched.update(Sample.objects.in_bulk(own))
        got = list(own)
        for _ in range(_ATTEMPTS):
            if len(got) >= n:
                break
            cand = query.candidates(n - len(got), got + skip)
            if pg:
                outcome = _claim_pg(task_obj, user, cand, now, expires)
                ids = [pk for pk, _ in outcome]
                taken = [pk for pk, ok in outcome if ok]
            else:
                ids = _ids(*cand)
                taken = _take(task_obj, user, ids, now, expires)
            if not ids:
                break
            kept = _still_eligible(query, taken)
            fetched.update(kept)
            # Keep the strategy's order; a sample lost to a concurrent claimer is just skipped.
            got.extend(i for i in ids if i in kept)
            if len(kept) == len(ids):
                break
    return [fetched[i] for i in got]


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
