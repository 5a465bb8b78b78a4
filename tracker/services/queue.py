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
from django.db.models import Count, Exists, F, Max, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
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


def _candidates(
    task: AnnotationTask, user: Any, strategy: str, now: Any, exclude: list[int], *, own: bool = False
) -> Any:
    """Samples the strategy offers this annotator, best first, as a queryset of pks.

    ``own=False``: samples nobody holds an active claim on (locked with SKIP LOCKED on
    PostgreSQL). ``own=True``: the annotator's own active claims that still fit the strategy.
    """
    qs = _eligible(task, user, strategy)
    if own:
        qs = qs.filter(Exists(Claim.objects.filter(task=task, sample=OuterRef("pk"), annotator=user, expires_at__gt=now)))
    else:
        qs = qs.filter(~Exists(Claim.objects.filter(task=task, sample=OuterRef("pk"), expires_at__gt=now)))
    if exclude:
        qs = qs.exclude(pk__in=exclude)
    if strategy == "agreement":
        qs = qs.order_by("-done", "pk")  # closest to their target first: they complete soonest
    elif strategy == "least_confident":
        top = (
            Prediction.objects.filter(task=task, sample=OuterRef("pk"))
            .order_by()
            .values("sample")
            .annotate(s=Max("score"))
            .values("s")
        )
        # Samples without a prediction come after every predicted one.
        qs = qs.annotate(top=Subquery(top)).order_by(F("top").asc(nulls_last=True), "pk")
    elif strategy == "random":
        qs = qs.order_by("?")
    else:
        qs = qs.order_by("pk")
    if not own and connection.features.has_select_for_update_skip_locked:
        qs = qs.select_for_update(skip_locked=True, no_key=True, of=("self",))
    return qs.values_list("pk", flat=True)


def _eligible(task: AnnotationTask, user: Any, strategy: str) -> Any:
    """The project's samples that the strategy would give this annotator, claims aside."""
    qs = Sample.objects.filter(project_id=task.project_id)
    qs = qs.filter(~Exists(Annotation.objects.filter(task=task, sample=OuterRef("pk"), annotator=user)))
    if strategy == "agreement":
        target = max(2, int(task.config.get("annotators_per_sample") or 1))
        done = (
            Annotation.objects.filter(task=task, sample=OuterRef("pk"))
            .exclude(status=Annotation.Status.REJECTED)
            .order_by()
            .values("sample")
            .annotate(c=Count("pk"))
            .values("c")
        )
        return qs.annotate(done=Coalesce(Subquery(done), 0)).filter(done__gte=1, done__lt=target)
    return qs.filter(~Exists(Annotation.objects.filter(task=task, sample=OuterRef("pk"))))


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
    with connection.cursor() as cur:
        cur.execute(sql, params)
        return [row[0] for row in cur.fetchall()]


def _still_eligible(task: AnnotationTask, user: Any, strategy: str, taken: list[int]) -> set[int]:
    """The claimed samples that still fit the strategy, read in a fresh statement.

    On PostgreSQL the candidate query sees the database as it was when it started: a sample
    another annotator claimed, labelled and released meanwhile looks free to it. The claim
    insert cannot catch that (the other claim is gone), so the claims are checked again here
    and the stale ones given back. (SQLite runs one writer at a time; the check costs little.)
    """
    if not taken:
        return set()
    if connection.vendor == "sqlite" and str(
        connection.settings_dict.get("OPTIONS", {}).get("transaction_mode", "")
    ).upper() == "IMMEDIATE":
        return set(taken)  # nothing can have changed since the candidates were read
    ok = set(_eligible(task, user, strategy).filter(pk__in=taken).values_list("pk", flat=True))
    stale = [pk for pk in taken if pk not in ok]
    if stale:
        Claim.objects.filter(task=task, annotator=user, sample_id__in=stale).delete()
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
    skip = list(exclude)
    task_obj = get_task(project, task)
    with transaction.atomic():
        user = get_user(annotator)
        now = timezone.now()
        expires = now + timedelta(seconds=ttl_s)
        # The annotator's own open claims that fit the strategy come back first (a re-run cell
        # gets the same samples), renewed so they do not expire while being worked on.
        if connection.vendor == "postgresql":
            # A claim is worth no disk flush: one lost in a server crash is simply claimed again.
            with connection.cursor() as cur:
                cur.execute("SET LOCAL synchronous_commit TO OFF")
        held = Claim.objects.filter(task=task_obj, annotator=user, expires_at__gt=now).exists()
        own = list(_candidates(task_obj, user, strategy, now, skip, own=True)[:n]) if held else []
        if own:
            Claim.objects.filter(task=task_obj, annotator=user, sample_id__in=own).update(expires_at=expires)
        got = list(own)
        for _ in range(_ATTEMPTS):
            if len(got) >= n:
                break
            want = n - len(got)
            ids = list(_candidates(task_obj, user, strategy, now, got + skip)[:want])
            if not ids:
                break
            taken = _still_eligible(task_obj, user, strategy, _take(task_obj, user, ids, now, expires))
            # Keep the strategy's order; a sample lost to a concurrent claimer is just skipped.
            got.extend(i for i in ids if i in taken)
            if len(taken) == len(ids):
                break
        by_pk = Sample.objects.in_bulk(got)
    return [by_pk[i] for i in got]


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
