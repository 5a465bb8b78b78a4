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
def test_a_claim_on_a_sample_labelled_meanwhile_is_given_back(transactional_db):
    """The PostgreSQL race, replayed with real connections: bob's claim statement reads its
    candidates (s00, s01), then waits on an uncommitted claim on s01; meanwhile ann labels s00
    and commits. bob's insert on s00 meets no claim, so only the re-check (a statement with a
    fresh snapshot) can see that s00 is labelled: it gives the claim back, and the call makes
    up for it with the next sample."""
    import threading

    import psycopg
    from django.db import connection

    from tracker.models import Claim, Sample
    from tracker.services.labeling import get_user

    tracker.add_samples("q", [{"id": f"s{i:02d}"} for i in range(5)])
    task = tracker.define_task("q", "t", "classification", ["x"])
    samples = {s.external_id: s for s in Sample.objects.filter(project__name="q")}
    blocker_user = get_user("blocker")
    get_user("bob")  # so bob's claim is one statement, not a user creation first
    s = connection.settings_dict
    blocker = psycopg.connect(
        host=s.get("HOST") or "127.0.0.1", port=s.get("PORT") or 5432, user=s.get("USER") or "postgres",
        password=s.get("PASSWORD") or None, dbname=s["NAME"],
    )
    out: dict[str, object] = {}

    def bob() -> None:
        from django.db import connection as thread_connection

        try:
            out["got"] = ids(tracker.next_samples("q", "t", 2, "bob"))
        except Exception as exc:  # handed to the test
            out["error"] = exc
        finally:
            thread_connection.close()

    try:
        blocker.execute(
            "INSERT INTO tracker_claim (task_id, sample_id, annotator_id, claimed_at, expires_at) "
            "VALUES (%s, %s, %s, now(), now() + interval '1 hour')",
            [task.pk, samples["s01"].pk, blocker_user.pk],
        )  # not committed: invisible to bob's snapshot, but his insert on s01 waits for it
        thread = threading.Thread(target=bob)
        thread.start()
        with connection.cursor() as cur:
            for _ in range(400):
                cur.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
                if cur.fetchone()[0]:
                    break
                time.sleep(0.025)
            else:
                pytest.fail(f"bob's claim never waited on the uncommitted claim: {out}")
        tracker.annotate(samples["s00"], "t", "x", "ann")  # committed while bob waits
        blocker.rollback()
        thread.join(30)
    finally:
        blocker.close()
    assert not thread.is_alive() and "error" not in out, out
    # s00 was claimed from a stale snapshot and given back; s01 kept, s02 made up for s00.
    assert out["got"] == ["s01", "s02"]
    assert sorted(Claim.objects.values_list("sample__external_id", flat=True)) == ["s01", "s02"]


@pytest.mark.postgres_only
def test_a_claim_is_one_round_trip_on_postgresql(queue_project):
    """Task, annotator, held claims, lock, insert, re-check and the samples: one message."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    tracker.next_samples("q", "t", 1, "ann")  # creates ann: that is a few more
    for strategy in ("unlabeled", "least_confident", "random", "agreement"):
        with CaptureQueriesContext(connection) as ctx:
            tracker.next_samples("q", "t", 2, "ann", strategy)
        assert len(ctx.captured_queries) == 1, (strategy, ctx.captured_queries)


@pytest.mark.postgres_only
def test_claims_are_prepared_statements_that_survive_a_forgetful_session(transactional_db, monkeypatch):
    """Outside a caller's transaction the claim's second statement (re-check and fetch) is
    prepared once per session; when the session does not have what the queue thinks (a reset,
    a pooler swapping sessions), it asks, prepares again, or gives up preparing, and the claim
    still works."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tracker.services import queue

    monkeypatch.setattr(queue, "_PREPARE", True)
    tracker.add_samples("q", [{"id": f"s{i:02d}"} for i in range(10)])
    tracker.define_task("q", "t", "classification", ["x"])
    for name in ("ann", "bob", "cat", "dan", "eve"):
        tracker.next_samples("q", "t", 1, name)  # finds (and creates) them: s00 to s04
        tracker.release("q", "t", None, name)
    connection.close()  # a new session: nothing prepared on it

    def claim(name):
        with CaptureQueriesContext(connection) as ctx:
            got = ids(tracker.next_samples("q", "t", 1, name))
        return got, [q["sql"] for q in ctx.captured_queries]

    got, sent = claim("ann")
    assert got == ["s00"] and len(sent) == 1 and sent[0].count("PREPARE") == 1
    got, sent = claim("bob")
    assert got == ["s01"] and len(sent) == 1 and "PREPARE" not in sent[0] and "EXECUTE" in sent[0]
    # The session forgets them (DEALLOCATE ALL, as a pooler's reset does): asked and re-prepared.
    with connection.cursor() as cur:
        cur.execute("DEALLOCATE ALL")
    got, sent = claim("cat")
    assert got == ["s02"] and len(sent) == 3
    assert "pg_prepared_statements" in sent[1] and sent[2].startswith("PREPARE")
    # The queue forgets them instead (a PREPARE outlives a failed transaction): the same.
    queue._prepared[connection.connection].clear()
    got, sent = claim("dan")
    assert got == ["s03"] and len(sent) == 3 and "PREPARE" not in sent[2]
    # Sessions that lose them even after being asked: the process stops preparing.
    known = list(queue._prepared[connection.connection])
    monkeypatch.setattr(queue, "_prepared_names", lambda conn: known)
    with connection.cursor() as cur:
        cur.execute("DEALLOCATE ALL")
    got, sent = claim("eve")
    assert got == ["s04"] and queue._PREPARE is False
    assert "EXECUTE" not in sent[-1] and sent[-1].startswith("WITH t AS")
    assert ids(tracker.next_samples("q", "t", 1, "fay")) == ["s05"]
    from tracker.models import Claim

    assert Claim.objects.count() == 6  # every failed message left nothing behind


def test_samples_come_back_as_full_model_instances(queue_project):
    from tracker.models import Sample

    got = tracker.next_samples("q", "t", 2, "ann")
    expected = Sample.objects.get(pk=got[0].pk)
    assert isinstance(got[0], Sample) and not got[0]._state.adding
    assert got[0].data == expected.data == {"text": "0"} and got[0].metadata == expected.metadata
    assert got[0].created_at == expected.created_at and got[0].created_at.tzinfo is not None
    assert got[0].project_id == expected.project_id and got[0].media.name == expected.media.name
    got[0].save()  # a real instance: saving updates the row instead of inserting one
    assert Sample.objects.filter(project__name="q").count() == 10


def test_a_renamed_or_deleted_task_is_seen_at_once(queue_project):
    from tracker.exceptions import TaskNotFound
    from tracker.models import AnnotationTask, Claim

    assert ids(tracker.next_samples("q", "t", 1, "ann")) == ["s00"]
    AnnotationTask.objects.filter(name="t").update(name="t2")
    with pytest.raises(TaskNotFound, match="no annotation task 't'.*Known tasks: t2"):
        tracker.next_samples("q", "t", 1, "ann")
    # Under its new name the task still holds ann's claim.
    assert ids(tracker.next_samples("q", "t2", 1, "ann")) == ["s00"]
    old = AnnotationTask.objects.get(name="t2")
    AnnotationTask.objects.filter(pk=old.pk).delete()  # its claims go with it; old keeps its pk
    with pytest.raises(TaskNotFound, match="no annotation task 't2'"):
        tracker.next_samples("q", "t2", 1, "ann")
    with pytest.raises(TaskNotFound, match=r"'t2' \(id \d+\) no longer exists"):
        tracker.next_samples("q", old, 1, "ann")
    # A new task under the old name starts from an empty queue of claims.
    tracker.define_task("q", "t2", "classification", ["x"])
    assert ids(tracker.next_samples("q", "t2", 1, "bob")) == ["s00"]
    assert list(Claim.objects.values_list("annotator__username", flat=True)) == ["bob"]


def test_a_renamed_project_is_seen_at_once(queue_project):
    from tracker.exceptions import ProjectNotFound
    from tracker.models import Project

    assert ids(tracker.next_samples("q", "t", 1, "ann")) == ["s00"]
    Project.objects.filter(name="q").update(name="q2")
    with pytest.raises(ProjectNotFound, match="no project named 'q'"):
        tracker.next_samples("q", "t", 1, "ann")
    assert ids(tracker.next_samples("q2", "t", 1, "ann")) == ["s00"]
    assert ids(tracker.next_samples(Project.objects.get(name="q2"), "t", 2, "ann")) == ["s00", "s01"]


def test_a_deleted_annotator_is_seen_at_once(queue_project):
    from django.contrib.auth import get_user_model

    from tracker.exceptions import NotFound
    from tracker.models import Claim

    User = get_user_model()
    assert ids(tracker.next_samples("q", "t", 2, "ann")) == ["s00", "s01"]
    first = User.objects.get(username="ann")
    User.objects.filter(pk=first.pk).delete()  # its claims go with it; first keeps its pk
    assert not Claim.objects.exists()
    # The same name makes a new user on first use, who starts from the top of the queue.
    assert ids(tracker.next_samples("q", "t", 1, "ann")) == ["s00"]
    second = User.objects.get(username="ann")
    assert second.pk != first.pk
    assert list(Claim.objects.values_list("annotator_id", flat=True)) == [second.pk]
    # A user object that no longer exists is an error, not a new user.
    with pytest.raises(NotFound, match=r"annotator 'ann' \(user id \d+\) no longer exists"):
        tracker.next_samples("q", "t", 1, first)
    # A user object works like its name.
    assert ids(tracker.next_samples("q", "t", 2, second)) == ["s00", "s01"]


def test_the_agreement_target_is_read_at_each_claim(queue_project):
    s = queue_project
    for name in ("u1", "u2"):
        tracker.annotate(s["s01"], "t", "x", name)
    tracker.annotate(s["s02"], "t", "x", "u1")
    assert ids(tracker.next_samples("q", "t", 5, "ann", "agreement")) == ["s01", "s02"]  # target 3
    tracker.release("q", "t", None, "ann")
    tracker.define_task("q", "t", "classification", annotators_per_sample=2)
    assert ids(tracker.next_samples("q", "t", 5, "ann", "agreement")) == ["s02"]  # s01 is complete


def test_excluded_samples_are_neither_claimed_nor_handed_back(queue_project):
    from tracker.services import queue

    s = queue_project
    assert ids(tracker.next_samples("q", "t", 2, "ann")) == ["s00", "s01"]
    got = queue.next_samples("q", "t", 3, "ann", exclude=[s["s00"].pk, s["s02"].pk])
    assert ids(got) == ["s01", "s03", "s04"]
    # s00 stays claimed (not renewed, not given back); s02 was never claimed.
    from tracker.models import Claim

    assert sorted(Claim.objects.values_list("sample__external_id", flat=True)) == ["s00", "s01", "s03", "s04"]


def test_bad_task_and_annotator_arguments(queue_project):
    from tracker.exceptions import ProjectNotFound

    with pytest.raises(InvalidValue, match="its project is needed too"):
        tracker.next_samples(None, "t", 1, "ann")
    with pytest.raises(InvalidValue, match="A task must be an AnnotationTask or its name"):
        tracker.next_samples("q", "  ", 1, "ann")
    with pytest.raises(InvalidValue, match="A task must be an AnnotationTask or its name"):
        tracker.next_samples("q", 7, 1, "ann")
    with pytest.raises(ProjectNotFound, match="no project named 'nope'"):
        tracker.next_samples("nope", "t", 1, "ann")
    with pytest.raises(InvalidValue, match="non-empty username"):
        tracker.next_samples("q", "t", 1, "  ")
    from tracker.models import AnnotationTask, Claim, Project

    tracker.define_task("other", "t", "classification", ["x"])
    other = AnnotationTask.objects.get(project__name="other")
    with pytest.raises(InvalidValue, match="belongs to another project"):
        tracker.next_samples(Project.objects.get(name="q"), other, 1, "ann")

    assert not Claim.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_async_facade_claims_too():
    import asyncio

    tracker.add_samples("qa", [{"id": f"a{i}"} for i in range(3)])
    tracker.define_task("qa", "t", "classification", ["x"])

    async def view():
        mine = await tracker.aio.next_samples("qa", "t", 2, "ann")
        again = await tracker.aio.next_samples("qa", "t", 2, "ann")
        theirs = await tracker.aio.next_samples("qa", "t", 2, "bob", ttl=5)
        return ids(mine), ids(again), ids(theirs)

    assert asyncio.run(view()) == (["a0", "a1"], ["a0", "a1"], ["a2"])
