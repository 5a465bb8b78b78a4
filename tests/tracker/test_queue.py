"""The annotation queue: strategies, exclusive expiring claims, and claimers in parallel processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.utils import timezone

import tracker
from tracker.exceptions import InvalidValue

WORKER = r"""
import json, sys, time
import tracker
tracker.configure(quiet=True)
project, task, me, start_at, n = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
while time.time() < start_at:
    time.sleep(0.005)
claimed, errors = [], []
while True:
    try:
        got = tracker.next_samples(project, task, n, me)
    except Exception as exc:  # reported to the test, which fails on any
        errors.append(f"{type(exc).__name__}: {exc}")
        break
    if not got:
        break
    claimed += [s.external_id for s in got]
    for s in got:
        tracker.annotate(s, task, "x", me)
print(json.dumps({"claimed": claimed, "errors": errors}))
"""


def ids(samples):
    return [s.external_id for s in samples]


@pytest.fixture
def queue_project(db):
    tracker.add_samples("q", [{"id": f"s{i:02d}", "text": str(i)} for i in range(10)])
    tracker.define_task("q", "t", "classification", ["x", "y"], annotators_per_sample=3)
    from tracker.models import Sample

    return {s.external_id: s for s in Sample.objects.filter(project__name="q")}


def test_unlabeled_claims_are_exclusive_and_come_back_to_their_owner(queue_project):
    a = tracker.next_samples("q", "t", 3, "ann")
    b = tracker.next_samples("q", "t", 3, "bob")
    assert ids(a) == ["s00", "s01", "s02"] and ids(b) == ["s03", "s04", "s05"]
    # Re-running the cell returns the same claims (renewed), not three more.
    from tracker.models import Claim

    before = Claim.objects.get(sample__external_id="s00").expires_at
    assert ids(tracker.next_samples("q", "t", 3, "ann")) == ["s00", "s01", "s02"]
    assert Claim.objects.get(sample__external_id="s00").expires_at > before
    # Asking for more adds new samples after the held ones.
    assert ids(tracker.next_samples("q", "t", 4, "ann")) == ["s00", "s01", "s02", "s06"]
    # Annotating releases the claim and the sample leaves the unlabeled queue for everyone.
    tracker.annotate(a[0], "t", "x", "ann")
    assert not Claim.objects.filter(sample=a[0]).exists()
    assert ids(tracker.next_samples("q", "t", 4, "ann")) == ["s01", "s02", "s06", "s07"]
    frame = tracker.claims("q", "t")
    assert sorted(frame["external_id"]) == ["s01", "s02", "s03", "s04", "s05", "s06", "s07"]
    assert set(frame["annotator"]) == {"ann", "bob"}


def test_release_gives_samples_back(queue_project):
    tracker.next_samples("q", "t", 3, "ann")
    assert tracker.release("q", "t", ["s01"], "ann") == 1
    assert tracker.release("q", "t", ["s01"], "bob") == 0  # not bob's
    assert ids(tracker.next_samples("q", "t", 1, "bob")) == ["s01"]
    assert tracker.release("q", "t", None, "ann") == 2
    assert ids(tracker.next_samples("q", "t", 2, "cat")) == ["s00", "s02"]
    with pytest.raises(InvalidValue, match="not a Sample"):
        tracker.release("q", "t", [1.5], "ann")


def test_claims_expire_and_others_take_them_over(queue_project, settings):
    from tracker.models import Claim

    got = tracker.next_samples("q", "t", 2, "ann", ttl=30)
    claim = Claim.objects.get(sample=got[0])
    assert timedelta(seconds=29) < claim.expires_at - claim.claimed_at <= timedelta(seconds=30)
    Claim.objects.filter(annotator__username="ann").update(expires_at=timezone.now() - timedelta(seconds=1))
    assert ids(tracker.next_samples("q", "t", 2, "bob")) == ["s00", "s01"]
    assert set(Claim.objects.values_list("annotator__username", flat=True)) == {"bob"}
    # The default lifetime is the CLAIM_TTL setting.
    settings.TRACKER = {**settings.TRACKER, "CLAIM_TTL": 5}
    c = tracker.next_samples("q", "t", 1, "cat")[0]
    claim = Claim.objects.get(sample=c)
    assert claim.expires_at - claim.claimed_at == timedelta(seconds=5)


def test_least_confident_orders_by_the_best_prediction_score(queue_project):
    tracker.add_predictions("q", "t", [
        {"external_id": "s05", "value": "x", "score": 0.95},
        {"external_id": "s03", "value": "y", "score": 0.51},
        {"external_id": "s07", "value": "x", "score": 0.7},
    ], model_version="a")
    # A second model's higher score is what counts for s03.
    tracker.add_predictions("q", "t", [{"external_id": "s03", "value": "x", "score": 0.99}], model_version="b")
    tracker.annotate(queue_project["s07"], "t", "x", "someone")
    got = tracker.next_samples("q", "t", 4, "ann", "least_confident")
    assert ids(got) == ["s05", "s03", "s00", "s01"]  # unpredicted samples after predicted ones


def test_random_hands_out_each_unlabeled_sample_once(queue_project):
    tracker.annotate(queue_project["s04"], "t", "x", "someone")
    first = tracker.next_samples("q", "t", 5, "ann", "random")
    second = tracker.next_samples("q", "t", 5, "bob", "random")
    assert len(first) == 5 and len(second) == 4
    assert sorted(ids(first) + ids(second)) == sorted(set(queue_project) - {"s04"})


def test_agreement_strategy_fills_samples_up_to_the_wanted_annotators(queue_project):
    s = queue_project
    tracker.annotate(s["s01"], "t", "x", "u1")
    tracker.annotate(s["s02"], "t", "x", "u1")
    tracker.annotate(s["s02"], "t", "y", "u2")
    tracker.annotate(s["s03"], "t", "x", "u1")
    tracker.annotate(s["s03"], "t", "x", "u2")
    tracker.annotate(s["s03"], "t", "x", "u3")  # complete: 3 of 3
    rejected = tracker.annotate(s["s04"], "t", "x", "u1")
    tracker.review(rejected, "reject", comment="no")  # rejected ones do not count
    tracker.annotate(s["s05"], "t", "x", "ann")  # ann already did it
    got = tracker.next_samples("q", "t", 5, "ann", "agreement")
    assert ids(got) == ["s02", "s01"]  # closest to complete first
    assert tracker.next_samples("q", "t", 5, "bob", "agreement") == [s["s05"]]
    # With the default of one annotator per sample the target is still two.
    tracker.define_task("q", "t", "classification", annotators_per_sample=1)
    tracker.release("q", "t", None, "ann")
    assert ids(tracker.next_samples("q", "t", 5, "u3", "agreement")) == ["s01"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n": 0}, "n must be a whole number from 1 to 1000"),
        ({"n": 1001}, "from 1 to 1000"),
        ({"strategy": "smart"}, "strategy must be one of unlabeled, least_confident, random, agreement"),
        ({"ttl": -5}, "ttl must be a positive number"),
    ],
)
def test_bad_queue_arguments(queue_project, kwargs, message):
    with pytest.raises(InvalidValue, match=message):
        tracker.next_samples("q", "t", **{"annotator": "ann", **kwargs})
    from tracker.models import Claim

    assert not Claim.objects.exists()


def test_own_claims_follow_the_strategy(queue_project):
    tracker.next_samples("q", "t", 2, "ann")  # unlabeled claims s00, s01
    tracker.annotate(queue_project["s05"], "t", "x", "u1")
    # Asking for agreement work does not hand back the unlabeled claims.
    assert ids(tracker.next_samples("q", "t", 2, "ann", "agreement")) == ["s05"]


def _run_claimers(env, project, task, workers, n):
    start_at = time.time() + 2.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, project, task, f"w{i}", str(start_at), str(n)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(workers)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        assert "database is locked" not in err
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_eight_processes_never_claim_the_same_sample(subprocess_env):
    """Eight annotator processes drain one queue: every sample claimed and labelled exactly once."""
    tracker.add_samples("par", [{"id": f"p{i:03d}"} for i in range(240)])
    tracker.define_task("par", "t", "classification", ["x"])
    results = _run_claimers(subprocess_env, "par", "t", workers=8, n=3)
    assert [r["errors"] for r in results] == [[]] * 8
    claimed = [c for r in results for c in r["claimed"]]
    assert len(claimed) == len(set(claimed)) == 240
    # Work was really shared, not done by one process while the others waited.
    assert sum(1 for r in results if r["claimed"]) >= 4
    from django.db.models import Count

    from tracker.models import Annotation, Claim

    per_sample = Annotation.objects.values("sample").annotate(c=Count("id")).values_list("c", flat=True)
    assert sorted(set(per_sample)) == [1] and len(per_sample) == 240
    assert not Claim.objects.exists()


@pytest.mark.postgres_only  # SQLite runs one writer at a time: the interleaving cannot happen
def test_a_claim_on_a_sample_labelled_meanwhile_is_given_back(queue_project):
    """The PostgreSQL race, replayed in order: B reads its candidates, A claims, labels and
    releases the first of them, then B's claim insert succeeds (no claim is in the way) and
    must be caught by the re-check."""
    from django.utils import timezone

    from tracker.models import Claim
    from tracker.services import labeling, queue

    task = labeling.get_task("q", "t")
    bob = labeling.get_user("bob")
    now = timezone.now()
    query = queue._Query(task, bob, "unlabeled", now)
    stale = queue._ids(*query.candidates(2, []))
    assert ids(tracker.next_samples("q", "t", 1, "ann")) == ["s00"]
    tracker.annotate(queue_project["s00"], "t", "x", "ann")
    taken = queue._take(task, bob, stale, now, now + timedelta(seconds=60))
    assert sorted(taken) == sorted(stale)  # the insert alone would hand out s00 again
    kept = queue._still_eligible(query, taken)
    assert list(kept) == [queue_project["s01"].pk]
    assert list(Claim.objects.filter(annotator=bob).values_list("sample__external_id", flat=True)) == ["s01"]
