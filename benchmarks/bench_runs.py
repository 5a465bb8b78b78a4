"""Runs and metrics: every Measure item of issue 3, on a fresh embedded SQLite home.

    .venv/bin/python benchmarks/bench_runs.py                  # everything (about 2 minutes)
    .venv/bin/python benchmarks/bench_runs.py --quick          # skip the 10M-point memory run
    .venv/bin/python benchmarks/bench_runs.py --mlflow /tmp/mlflow-venv/bin/python

Each workload prints its figure, the target from the issue, and (where one exists) a baseline
measured in the same run on the same machine, because the machine is shared and noisy:

  1. run.log_metric in a Python loop, 1M points, end to end including the final flush
     (baseline: plain sqlite3 executemany of the same rows into the same table and index);
  2. RSS added by logging 10M points (in a child process: peak RSS sampled every 20 ms
     while logging, minus RSS before, after a warm-up run);
  3. 1000 runs with 20 params + 5 metrics created through the API, then as a DataFrame;
  4. 10,000 runs as a DataFrame;
  5. a 100k-point history as a DataFrame (baseline: pandas.read_sql of the same rows);
  6. durable mode (every log_metric committed before it returns).

With ``--mlflow PYTHON`` (an interpreter with mlflow installed, never this venv) the same
workloads also run through MLflow's SQLite store and the ratios are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def best(fn, rounds: int = 5) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def setup(home: str) -> None:
    import tracker

    tracker.configure(home=home, quiet=True)


def bench_log_loop(points: int) -> dict[str, float]:
    import tracker

    t = time.perf_counter()
    c = time.process_time()
    with tracker.start_run("bench-loop") as run:
        log = run.log_metric
        for i in range(points):
            log("loss", i * 1e-6, i)
        logged = time.perf_counter()
    tracker.flush()  # end to end: every point committed
    total = time.perf_counter() - t
    cpu = time.process_time() - c
    return {
        "loop_s": logged - t,
        "total_s": total,
        "rate": points / total,
        "cpu_rate": points / cpu,
    }


def baseline_executemany(points: int) -> float:
    """Plain sqlite3: one executemany of the same rows into a copy of the metric table."""
    import sqlite3

    from django.db import connection

    path = Path(connection.settings_dict["NAME"]).with_name("baseline.sqlite3")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
        "CREATE TABLE m (id integer NOT NULL PRIMARY KEY AUTOINCREMENT, run_id bigint NOT NULL,"
        " key varchar(250) NOT NULL, step bigint NOT NULL, value real NULL,"
        " timestamp real NOT NULL);"
        "CREATE INDEX mi ON m (run_id, key, step);"
    )
    now = time.time()
    rows = [(1, "loss", i, i * 1e-6, now) for i in range(points)]
    t = time.perf_counter()
    db.execute("BEGIN")
    db.executemany("INSERT INTO m (run_id, key, step, value, timestamp) VALUES (?,?,?,?,?)", rows)
    db.execute("COMMIT")
    elapsed = time.perf_counter() - t
    db.close()
    return points / elapsed


MEMORY_CHILD = """
import gc, sys, threading, time, psutil, tracker
tracker.configure(home=sys.argv[1], quiet=True)
n = int(sys.argv[2])
proc = psutil.Process()
warm = tracker.start_run("bench-mem-warm")
for i in range(200_000):
    warm.log_metric("x", float(i), i)
warm.finish()
warm.flush()
gc.collect()
before = proc.memory_info().rss
peak = [before]
done = threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], proc.memory_info().rss)
        time.sleep(0.02)
threading.Thread(target=sample, daemon=True).start()
t = time.perf_counter()
with tracker.start_run("bench-mem") as run:
    log = run.log_metric
    for i in range(n):
        log("loss", i * 1e-7, i)
run.flush()
elapsed = time.perf_counter() - t
done.set()
time.sleep(0.05)
print((peak[0] - before) / 2**20, n / elapsed)
"""


def bench_memory(home: str, points: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, home, str(points)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    added, rate = map(float, out.stdout.split())
    return {"added_mb": added, "rate": rate}


def bench_runs(n: int) -> dict[str, float]:
    import tracker

    params = {f"param_{j}": (j * 0.1 if j % 2 else f"value-{j}") for j in range(20)}
    t = time.perf_counter()
    c = time.process_time()
    for i in range(n):
        with tracker.start_run("bench-runs", f"run-{i}", params=params) as run:
            run.log_metrics({f"metric_{j}": i * 0.001 + j for j in range(5)})
    tracker.flush()  # every run committed
    created = time.perf_counter() - t
    created_cpu = time.process_time() - c
    frame_s = best(lambda: tracker.runs_frame("bench-runs"))
    frame = tracker.runs_frame("bench-runs")
    assert len(frame) == n and frame.filter(like="params.").shape[1] == 20
    assert frame.filter(like="metrics.").shape[1] == 5
    return {"create_s": created, "create_cpu_s": created_cpu, "frame_s": frame_s}


def make_many_runs(n: int) -> None:
    """Setup for the 10,000-run table: rows written in bulk (creation speed is measured above)."""
    from django.db import transaction
    from django.utils import timezone

    from tracker.models import MetricSummary, Project, Run

    proj, _ = Project.objects.get_or_create(name="bench-10k")
    now = timezone.now()
    params = {f"param_{j}": j * 0.5 for j in range(20)}
    with transaction.atomic():
        runs = Run.objects.bulk_create(
            [
                Run(
                    project=proj,
                    uid=f"b10k{i:012d}",
                    name=f"r{i}",
                    status="finished",
                    params=params,
                    tags={"batch": i % 7},
                    started_at=now,
                    ended_at=now,
                )
                for i in range(n)
            ],
            batch_size=2000,
        )
        MetricSummary.objects.bulk_create(
            [
                MetricSummary(
                    run=r,
                    key=f"metric_{j}",
                    last=j + 0.5,
                    last_step=10,
                    min=0.0,
                    max=j + 1.0,
                    count=11,
                    updated_at=time.time(),
                )
                for r in runs
                for j in range(5)
            ],
            batch_size=5000,
        )


def bench_history(points: int) -> dict[str, float]:
    import pandas as pd
    from django.db import connection

    import tracker

    with tracker.start_run("bench-history") as run:
        for i in range(points):
            run.log_metric("loss", 1.0 / (i + 1), i)
    frame = run.history()
    assert frame.shape == (points, 1)
    ours = best(run.history)
    sql = (
        f"SELECT step, value FROM tracker_metric WHERE run_id = {run.pk} AND key = 'loss' "
        f"ORDER BY step"
    )
    base = best(lambda: pd.read_sql(sql, connection.connection))
    return {"history_s": ours, "read_sql_s": base}


def bench_durable(points: int) -> dict[str, float]:
    import tracker

    run = tracker.start_run("bench-durable", durable=True)
    t = time.perf_counter()
    for i in range(points):
        run.log_metric("loss", float(i), i)
    elapsed = time.perf_counter() - t
    run.finish()
    return {"rate": points / elapsed}


MLFLOW_CHILD = r"""
import json, os, sys, time, logging
logging.disable(logging.WARNING)
import mlflow
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
home = sys.argv[1]
mlflow.set_tracking_uri(f"sqlite:///{home}/mlflow.db")
client = MlflowClient()
out = {}
exp = mlflow.set_experiment("bench")
# one log_metric call per point
with mlflow.start_run() as r:
    n = 500
    t = time.perf_counter()
    for i in range(n):
        mlflow.log_metric("loss", i * 1e-6, step=i)
    out["log_metric_rate"] = n / (time.perf_counter() - t)
# log_batch, 1000 metrics per call (MLflow's limit)
with mlflow.start_run() as r:
    n = 100_000
    now = int(time.time() * 1000)
    t = time.perf_counter()
    for start in range(0, n, 1000):
        batch = [Metric("loss", i * 1e-6, now, i) for i in range(start, start + 1000)]
        client.log_batch(r.info.run_id, metrics=batch)
    out["log_batch_rate"] = n / (time.perf_counter() - t)
    hist_run = r.info.run_id
t = time.perf_counter()
h = client.get_metric_history(hist_run, "loss")
out["history_s"] = time.perf_counter() - t
out["history_points"] = len(h)
# 1000 runs with 20 params + 5 metrics
exp2 = mlflow.set_experiment("bench-runs")
params = {f"param_{j}": (j * 0.1 if j % 2 else f"value-{j}") for j in range(20)}
n_runs = int(sys.argv[2])
t = time.perf_counter()
for i in range(n_runs):
    with mlflow.start_run(run_name=f"run-{i}"):
        mlflow.log_params(params)
        mlflow.log_metrics({f"metric_{j}": i * 0.001 + j for j in range(5)})
out["create_s"] = time.perf_counter() - t
out["create_runs"] = n_runs
t = time.perf_counter()
df = mlflow.search_runs(experiment_ids=[exp2.experiment_id], max_results=50000)
out["frame_s"] = time.perf_counter() - t
out["frame_rows"] = len(df)
print(json.dumps(out))
"""


def bench_mlflow(python: str, runs: int) -> dict[str, float]:
    home = tempfile.mkdtemp(prefix="bench-mlflow-")
    out = subprocess.run(
        [python, "-c", MLFLOW_CHILD, home, str(runs)], capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(f"the MLflow benchmark failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def row(name: str, value: str, target: str, ok: bool | None, baseline: str = "") -> None:
    mark = "" if ok is None else ("ok" if ok else "MISSED")
    print(f"{name:52} {value:>16} {target:>14} {mark:>7}  {baseline}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--memory-points", type=int, default=10_000_000)
    parser.add_argument("--quick", action="store_true", help="skip the 10M-point memory run")
    parser.add_argument("--mlflow", metavar="PYTHON", help="an interpreter with mlflow installed")
    parser.add_argument("--mlflow-runs", type=int, default=1000)
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="bench-runs-")
    setup(home)
    print(
        f"tracker home {home}; Python {sys.version.split()[0]}; {os.cpu_count()} CPUs; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(f"{'workload':52} {'measured':>16} {'target':>14} {'':>7}  baseline (same run)")

    loops = [bench_log_loop(args.points) for _ in range(3)]
    rates = sorted(r["rate"] for r in loops)
    base = baseline_executemany(args.points)
    cpu_rates = sorted(r["cpu_rate"] for r in loops)
    row(
        f"log_metric loop, {args.points:,} points, end to end",
        f"{statistics.median(rates):,.0f}/s",
        ">= 250,000/s",
        statistics.median(rates) >= 250_000,
        f"best {rates[-1]:,.0f}/s; per CPU-second {statistics.median(cpu_rates):,.0f}; "
        f"plain sqlite3 executemany {base:,.0f} rows/s",
    )
    if not args.quick:
        mem = bench_memory(home, args.memory_points)
        row(
            f"RSS added by {args.memory_points:,} points",
            f"{mem['added_mb']:.1f} MB",
            "<= 100 MB",
            mem["added_mb"] <= 100,
            f"at {mem['rate']:,.0f} points/s",
        )

    r = bench_runs(1000)
    row(
        "1000 runs x (20 params + 5 metrics), created",
        f"{r['create_s']:.3f} s",
        "<= 0.5 s",
        r["create_s"] <= 0.5,
        f"{r['create_s']:.2f} ms per run; {r['create_cpu_s']:.3f} CPU-s",
    )
    row(
        "1000 runs as a DataFrame (runs_frame)",
        f"{r['frame_s']:.3f} s",
        "<= 0.05 s",
        r["frame_s"] <= 0.05,
    )

    import tracker

    make_many_runs(10_000)
    big = best(lambda: tracker.runs_frame("bench-10k"), rounds=3)
    row("10,000 runs as a DataFrame (runs_frame)", f"{big:.3f} s", "<= 0.5 s", big <= 0.5)

    h = bench_history(100_000)
    row(
        "100k-point history as a DataFrame",
        f"{h['history_s']:.3f} s",
        "<= 0.15 s",
        h["history_s"] <= 0.15,
        f"pandas.read_sql of the same rows {h['read_sql_s']:.3f} s",
    )

    d = bench_durable(5000)
    row(
        "durable mode (commit per log_metric)",
        f"{d['rate']:,.0f}/s",
        ">= 5,000/s",
        d["rate"] >= 5000,
    )

    if args.mlflow:
        m = bench_mlflow(args.mlflow, args.mlflow_runs)
        print()
        print(f"{'MLflow ' + m.get('version', ''):52} {'MLflow':>16} {'tracker':>14} {'ratio':>7}")
        ours_rate = statistics.median(rates)
        pairs = [
            ("points/s, one call per point", m["log_metric_rate"], ours_rate, True),
            ("points/s, MLflow log_batch vs our loop", m["log_batch_rate"], ours_rate, True),
            (
                f"{m['create_runs']} runs x (20 params + 5 metrics), s",
                m["create_s"],
                r["create_s"] * m["create_runs"] / 1000,
                False,
            ),
            (f"{m['frame_rows']} runs as a DataFrame, s", m["frame_s"], r["frame_s"], False),
            (f"{m['history_points']:,}-point history, s", m["history_s"], h["history_s"], False),
        ]
        for name, theirs, ours, higher_better in pairs:
            ratio = ours / theirs if higher_better else theirs / ours
            print(f"{name:52} {theirs:>16,.3f} {ours:>14,.3f} {ratio:>6.0f}x")


if __name__ == "__main__":
    main()
