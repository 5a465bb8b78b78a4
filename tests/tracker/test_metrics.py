"""Metric buffering for real: the background flusher, outages, durability, many processes,
SIGKILL, interpreter exit and fork."""

from __future__ import annotations

import math
import os
import random
import signal
import threading
import time
import warnings

import pytest
from django.db import OperationalError, connection, connections
from processes import run_python, start_python
from test_runs_support import _runs_isolated, metric_count, wait_for  # noqa: F401

import tracker
from tracker.models import Metric, MetricSummary, Run
from tracker.services import metrics as mc


@pytest.fixture
def fast_flush(settings):
    settings.TRACKER = {**settings.TRACKER, "FLUSH_INTERVAL": 0.2}
    return settings


def _count_elsewhere(run_id: str) -> int:
    """Count points through another connection (what another process would see)."""
    out: list[int] = []

    def work() -> None:
        try:
            out.append(metric_count(run_id))
        finally:
            connections.close_all()

    t = threading.Thread(target=work)
    t.start()
    t.join()
    return out[0]


# -- pure: summaries -------------------------------------------------------------------------
def test_summaries_agree_on_every_path():
    rng = random.Random(7)
    special = [float("nan"), float("inf"), -float("inf")]
    for n_keys, n in [(1, 10), (1, 6000), (3, 9000), (40, 5000), (2, 5000)]:
        keys = [f"k{i}" for i in range(n_keys)]
        points = []
        for _ in range(n):
            v = rng.choice(special) if rng.random() < 0.01 else rng.uniform(-5, 5)
            points.append((rng.choice(keys), rng.randrange(0, n // 2), v, 0.0))
        got = mc.summarize(points)
        want = mc._summarize_loop(points)
        assert got.keys() == want.keys()
        for key in want:
            for a, b in zip(got[key], want[key]):
                assert (a is None and b is None) or a == b or (math.isnan(a) and math.isnan(b)), (
                    key,
                    got[key],
                    want[key],
                )
    all_nan = [("x", 0, float("nan"), 0.0)] * 5000
    assert mc.summarize(all_nan)["x"][2:] == (None, None, 5000)


# -- the background flusher ------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_points_reach_the_database_in_the_background(fast_flush):
    run = tracker.start_run("bg")
    for i in range(1000):
        run.log_metric("loss", 1 / (i + 1))
    # No flush() and no finish(): the flusher writes the run's row and its points.
    wait_for(lambda: _count_elsewhere(run.id) == 1000, timeout=10)
    assert Run.objects.get(uid=run.id).status == "running"
    run.finish()
    assert tracker.get_run(run.id).status == "finished"  # a read here sees this process's writes
    assert MetricSummary.objects.get(run__uid=run.id, key="loss").count == 1000


@pytest.mark.django_db(transaction=True)
def test_a_full_buffer_is_flushed_before_the_interval(settings):
    settings.TRACKER = {**settings.TRACKER, "FLUSH_INTERVAL": 60.0, "FLUSH_MAX_POINTS": 1000}
    run = tracker.start_run("bg-full")
    for i in range(2500):
        run.log_metric("x", float(i))
    wait_for(lambda: _count_elsewhere(run.id) >= 2000, timeout=10)
    run.finish()
    run.flush()
    assert metric_count(run.id) == 2500


@pytest.mark.django_db(transaction=True)
def test_memory_stays_bounded_when_logging_outpaces_writing(settings):
    settings.TRACKER = {**settings.TRACKER, "FLUSH_INTERVAL": 0.5, "FLUSH_MAX_POINTS": 500}
    run = tracker.start_run("bg-bounded")
    cap = run._buf.cap
    most = 0
    for i in range(60_000):
        run.log_metric("x", float(i))
        if i % 97 == 0:
            most = max(most, len(run._buf.rows))
    run.finish()
    run.flush()
    assert most <= cap + 1, (most, cap)
    assert metric_count(run.id) == 60_000


class FlakySink(mc.DatabaseSink):
    """The database sink, failing its first ``failures`` writes like an unreachable server."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0

    def write_many(self, batches):
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise OperationalError("could not connect to server: Connection refused")
        return super().write_many(batches)


@pytest.mark.django_db(transaction=True)
def test_points_are_kept_and_retried_while_the_database_is_unavailable(fast_flush, recwarn):
    sink = FlakySink(failures=2)
    mc.set_sink(sink)
    run = tracker.start_run("outage")
    for i in range(500):
        run.log_metric("x", float(i), step=i)  # the training loop never notices
    wait_for(lambda: _count_elsewhere(run.id) == 500, timeout=20)
    assert sink.attempts >= 3
    run.finish()
    run.flush()
    assert metric_count(run.id) == 500  # every point exactly once
    messages = [str(w.message) for w in recwarn.list]
    assert any("kept in memory and retried" in m for m in messages), messages
    assert any("reachable again" in m for m in messages), messages


@pytest.mark.django_db(transaction=True)
def test_finish_during_an_outage_completes_in_the_background(fast_flush, recwarn):
    run = tracker.start_run("outage-finish")
    run.log_metric("x", 1.0)
    mc.set_sink(FlakySink(failures=2))
    run.finish()  # returns at once: the end is written by the flusher, which retries
    assert run.status == "finished"
    wait_for(lambda: Run.objects.filter(uid=run.id, status="finished").exists(), timeout=20)
    assert metric_count(run.id) == 1
    assert any("retried" in str(w.message) for w in recwarn.list)


@pytest.mark.django_db(transaction=True)
def test_durable_and_explicit_flushes_report_an_outage_and_keep_the_points(fast_flush):
    run = tracker.start_run("outage-durable", durable=True)
    mc.set_sink(FlakySink(failures=1))
    with pytest.warns(RuntimeWarning, match="kept and retried in the background"):
        run.log_metric("x", 1.0)  # the training loop goes on
    wait_for(lambda: _count_elsewhere(run.id) == 1, timeout=20)
    run.finish()
    assert Run.objects.get(uid=run.id).status == "finished"


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_flusher_reconnects_after_postgres_drops_its_connection(fast_flush):
    run = tracker.start_run("pg-drop")
    run.log_metric("x", 0.0, step=0)
    wait_for(lambda: _count_elsewhere(run.id) == 1, timeout=10)
    with connection.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for i in range(1, 300):
            run.log_metric("x", float(i), step=i)
        wait_for(lambda: _count_elsewhere(run.id) == 300, timeout=30)
        run.finish()
    steps = sorted(Metric.objects.filter(run__uid=run.id).values_list("step", flat=True))
    assert steps == list(range(300))
    # The termination also hit the worker threads' connections; later tests must not inherit them.
    from support import close_thread_connections

    close_thread_connections()


@pytest.mark.django_db(transaction=True)
def test_durable_mode_commits_every_call():
    run = tracker.start_run("durable", durable=True)
    assert Run.objects.filter(uid=run.id).exists()  # written at start, not at first flush
    for i in range(5):
        run.log_metric("x", float(i))
        assert _count_elsewhere(run.id) == i + 1
    run.log_metrics({"a": 1.0, "b": 2.0})
    assert _count_elsewhere(run.id) == 7
    assert MetricSummary.objects.get(run__uid=run.id, key="x").last == 4.0
    run.finish()
    assert _count_elsewhere(run.id) == 7 and Run.objects.get(uid=run.id).status == "finished"


@pytest.mark.django_db(transaction=True)
def test_logging_after_finish_and_to_a_run_read_back_still_lands(fast_flush):
    with tracker.start_run("late") as run:
        run.log_metric("x", 1.0)
    run.log_metric("x", 2.0)  # after finish: written by the flusher
    again = tracker.get_run(run.id)
    again.log_metric("y", 3.0)  # a run read back: its buffer joins the flusher on first point
    wait_for(lambda: _count_elsewhere(run.id) == 3, timeout=10)
    assert Run.objects.get(uid=run.id).status == "finished"


# -- processes -------------------------------------------------------------------------------
WRITER = """
    import os, tracker
    tracker.configure(quiet=True)
    n = int(os.environ["POINTS"])
    with tracker.start_run("many", os.environ["WRITER"]) as run:
        for i in range(n):
            run.log_metric("loss", i * 1e-6, step=i)
            if i % 7 == 0:
                run.log_metric("acc", i * 1e-6, step=i)
    print(run.id)
"""


def _many_writers(subprocess_env, writers: int, points: int) -> None:
    env = dict(subprocess_env, POINTS=str(points))
    procs = [start_python(WRITER, dict(env, WRITER=f"w{n}")) for n in range(writers)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0] * writers, outs
    assert all("locked" not in err and "Error" not in err for _, err in outs), outs
    ids = [out.strip() for out, _ in outs]
    acc = len(range(0, points, 7))
    for run_id in ids:
        r = Run.objects.get(uid=run_id)
        assert r.status == "finished"
        assert Metric.objects.filter(run=r, key="loss").count() == points
        assert Metric.objects.filter(run=r, key="acc").count() == acc
        s = MetricSummary.objects.get(run=r, key="loss")
        assert (s.count, s.last_step, s.min) == (points, points - 1, 0.0)


@pytest.mark.sqlite_only
def test_four_processes_write_100k_points_each_into_one_sqlite_file(subprocess_env):
    _many_writers(subprocess_env, 4, 100_000)


@pytest.mark.postgres_only
def test_eight_processes_write_100k_points_each_into_postgres(subprocess_env):
    _many_writers(subprocess_env, 8, 100_000)


VICTIM = """
    import sys, time, tracker
    tracker.configure(quiet=True, flush_interval=0.2, heartbeat_interval=0.2, heartbeat_timeout=2.0)
    run = tracker.start_run("crash", "victim")
    print(run.id, flush=True)
    i = 0
    while True:
        run.log_metric("x", float(i), step=i)
        i += 1
        if i % 50 == 0:
            time.sleep(0.005)
"""


def test_sigkill_loses_at_most_the_last_flush_interval_and_reads_as_killed(subprocess_env):
    proc = start_python(VICTIM, subprocess_env)
    try:
        run_id = proc.stdout.readline().strip()
        assert run_id, proc.stderr.read()
        wait_for(lambda: metric_count(run_id) > 1000, timeout=60)
        time.sleep(1.0)
        killed_at = time.time()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()
    points = Metric.objects.filter(run__uid=run_id)
    steps = list(points.order_by("step").values_list("step", flat=True))
    assert steps == list(range(len(steps)))  # a complete prefix: nothing lost in the middle
    newest = max(points.values_list("timestamp", flat=True))
    # At most the last flush interval (0.2 s) is lost; 1 s of slack for a busy machine.
    assert killed_at - newest < 0.2 + 1.0, killed_at - newest
    row = Run.objects.get(uid=run_id)
    assert row.status == "running"  # in the database, until somebody reads it...
    run = wait_for(lambda: (r := tracker.get_run(run_id)).status == "killed" and r, timeout=30)
    assert run.status == "killed"
    stored = Run.objects.get(uid=run_id)
    assert stored.status == "killed" and "Heartbeat lost" in stored.error
    assert stored.ended_at == stored.heartbeat_at


EXITS = {
    "normal": ("pass", 0, "finished", ""),
    "exception": ("raise ValueError('bad batch')", 1, "failed", "ValueError: bad batch"),
    "interrupt": ("raise KeyboardInterrupt", 1, "killed", "KeyboardInterrupt"),
}


@pytest.mark.parametrize("how", sorted(EXITS))
def test_runs_left_open_are_flushed_and_closed_at_interpreter_exit(subprocess_env, how):
    ending, code, status, error = EXITS[how]
    proc = run_python(
        f"""
        import tracker
        tracker.configure(quiet=True, flush_interval=60)
        run = tracker.start_run("exit", {how!r})
        print(run.id, flush=True)
        for i in range(10_000):
            run.log_metric("x", float(i))
        {ending}
        """,
        subprocess_env,
        check=False,
    )
    assert proc.returncode != 0 if code else proc.returncode == 0, proc.stderr
    run_id = proc.stdout.strip()
    row = Run.objects.get(uid=run_id)
    assert row.status == status and error in row.error
    assert metric_count(run_id) == 10_000


def test_a_forked_worker_logs_into_the_same_run(subprocess_env):
    proc = run_python(
        """
        import os, tracker
        tracker.configure(quiet=True, flush_interval=0.2)
        with tracker.start_run("fork") as run:
            run.log_metric("parent", 1.0)
            run.flush()
            pid = os.fork()
            if pid == 0:  # a DataLoader-style worker: logs, then exits normally
                for i in range(100):
                    run.log_metric("worker", float(i), step=i)
                raise SystemExit(0)
            os.waitpid(pid, 0)
            print(tracker.get_run(run.id).status)  # the worker's exit did not end the run
            run.log_metric("parent", 2.0)
        print(run.id)
        """,
        subprocess_env,
    )
    status_meanwhile, run_id = proc.stdout.strip().splitlines()[-2:]
    assert status_meanwhile == "running"
    assert Metric.objects.filter(run__uid=run_id, key="worker").count() == 100
    assert Metric.objects.filter(run__uid=run_id, key="parent").count() == 2  # not duplicated
    assert Run.objects.get(uid=run_id).status == "finished"


def test_system_metrics_are_sampled_in_the_background(subprocess_env):
    proc = run_python(
        """
        import time, tracker
        tracker.configure(quiet=True, flush_interval=0.1, system_metrics_interval=0.1)
        with tracker.start_run("system", system_metrics=True) as run:
            time.sleep(1.0)
        print(run.id)
        """,
        subprocess_env,
    )
    run_id = proc.stdout.strip()
    keys = set(Metric.objects.filter(run__uid=run_id).values_list("key", flat=True))
    assert {"system/cpu_percent", "system/memory_percent", "system/process_rss_mb"} <= keys
    assert Metric.objects.filter(run__uid=run_id, key="system/process_rss_mb").count() >= 3
    rss = Metric.objects.filter(run__uid=run_id, key="system/process_rss_mb").first().value
    assert 10 < rss < 4000


@pytest.mark.django_db(transaction=True)
def test_a_new_run_is_written_as_soon_as_an_operation_needs_its_row(settings):
    from tracker.models import Dataset, DatasetVersion, Project

    settings.TRACKER = {**settings.TRACKER, "FLUSH_INTERVAL": 60.0}
    proj = Project.objects.create(name="deferred")
    version = DatasetVersion.objects.create(
        dataset=Dataset.objects.create(project=proj, name="d"), version=1, state="ready"
    )
    parent = tracker.start_run("deferred", "parent")
    assert not Run.objects.filter(uid=parent.id).exists()  # not written yet: no round trip
    child = tracker.start_run("deferred", "child", parent=parent)
    assert Run.objects.filter(uid=parent.id).exists()  # the child needed its parent's row
    art = child.log_artifact(b"x", name="x.bin")
    assert art.run_id == child.id and Run.objects.filter(uid=child.id).exists()
    other = tracker.start_run("deferred", "lineage")
    other.use_dataset(version.pk)
    assert [(v.version, ctx) for v, ctx in other.inputs()] == [(1, "train")]
    late = tracker.start_run("deferred", "tags")
    late.set_tag("k", "v")
    assert Run.objects.get(uid=late.id).tags == {"k": "v"}
    assert tracker.get_run(tracker.start_run("deferred", "read").id).name == "read"
    for run in (parent, child, other, late):
        run.finish()


@pytest.mark.django_db(transaction=True)
def test_a_sweep_of_short_runs_is_written_in_one_batch_with_correct_summaries(settings):
    settings.TRACKER = {**settings.TRACKER, "FLUSH_INTERVAL": 60.0}
    runs = []
    for i in range(30):
        with tracker.start_run("sweep", f"trial-{i}", params={"i": i}) as run:
            run.log_metrics({"loss": 10.0 - i, "acc": i / 100}, step=0)
            run.log_metrics({"loss": 5.0 - i, "acc": float("nan")}, step=1)
        runs.append(run)
    frame = tracker.runs_frame("sweep")  # a read writes this process's pending work first
    assert len(frame) == 30 and set(frame["status"]) == {"finished"}
    for i, run in enumerate(runs):
        loss = MetricSummary.objects.get(run__uid=run.id, key="loss")
        assert (loss.last, loss.min, loss.max, loss.count) == (5.0 - i, 5.0 - i, 10.0 - i, 2)
        acc = MetricSummary.objects.get(run__uid=run.id, key="acc")
        assert (acc.min, acc.max, acc.count) == (i / 100, i / 100, 2)
        assert frame.loc[run.id, "metrics.loss"] == 5.0 - i
    assert Metric.objects.filter(run__project__name="sweep").count() == 120


@pytest.mark.django_db(transaction=True)
def test_tracker_flush_writes_everything_pending_and_reports_an_outage(settings):
    import asyncio

    from tracker.exceptions import DatabaseUnavailable

    settings.TRACKER = {**settings.TRACKER, "FLUSH_INTERVAL": 60.0}
    run = tracker.start_run("flush-all")
    for i in range(100):
        run.log_metric("x", float(i))
    mc.set_sink(FlakySink(failures=1))
    with pytest.raises(DatabaseUnavailable, match="100 metric points stay buffered"):
        tracker.flush()
    tracker.flush()  # (the woken background flusher may have written them already)
    assert _count_elsewhere(run.id) == 100  # nothing was lost by the failed attempt
    run.log_metric("x", 100.0)
    run.finish()
    assert asyncio.run(tracker.aio.flush()) in (0, 1)  # 0 if the flusher was quicker
    assert Run.objects.get(uid=run.id).status == "finished"
    assert _count_elsewhere(run.id) == 101


@pytest.mark.django_db(transaction=True)
def test_shutdown_writes_everything_ends_open_runs_and_stops_the_flusher(settings):
    settings.TRACKER = {**settings.TRACKER, "FLUSH_INTERVAL": 60.0}
    left_open = tracker.start_run("shutdown")
    for i in range(50):
        left_open.log_metric("x", float(i))
    mc.shutdown(stall_seconds=10)
    assert mc.get_flusher()._thread is None
    row = Run.objects.get(uid=left_open.id)
    assert row.status == "finished" and row.ended_at is not None
    assert metric_count(left_open.id) == 50


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("points", [1, 200])  # on PostgreSQL: one round trip; COPY
def test_points_of_a_run_deleted_meanwhile_are_dropped_with_a_warning(fast_flush, recwarn, points):
    # tracker_metric has no foreign-key constraint (a check per point); the summary rows written
    # in the same transaction still refuse a missing run, and nothing of the batch is kept.
    run = tracker.start_run("gone")
    run.log_metric("x", 0.0, step=0)
    run.flush()
    pk = Run.objects.get(uid=run.id).pk
    Run.objects.filter(pk=pk).delete()
    for i in range(points):
        run.log_metric("x", float(i), step=i + 1)
    wait_for(lambda: any("no longer exists" in str(w.message) for w in recwarn.list), timeout=20)
    assert not Metric.objects.filter(run_id=pk).exists() and not MetricSummary.objects.filter(run_id=pk).exists()
    assert not any("kept in memory and retried" in str(w.message) for w in recwarn.list)
