"""Annotation figures from issue 5's Measure list.

    .venv/bin/python benchmarks/bench_labeling.py [--db sqlite|postgres] [--only import,agreement,queue]
        [--annotations 100000] [--workers 8] [--queue-samples 4000] [--seconds 30] [--think-ms 0]
        [--strategy unlabeled|least_confident|random|agreement] [--other-samples 0]

- import: 100,000 annotations (50,000 samples x 2 annotators) through tracker.import_annotations,
  and the same annotations as a Label Studio export through tracker.import_label_studio.
- agreement: tracker.agreement (and resolve_labels) over 100,000 annotations
  (25,000 samples x 4 annotators, 5 labels), database read included.
- queue: N annotator processes working one queue with next_samples(n=1) + annotate for
  --seconds (or until it is empty), back to back or with --think-ms between claim and label;
  claim latency percentiles, duplicate claims, errors ("database is locked" included), the
  client's CPU time per claim and, on PostgreSQL, the CPU time its server backend spent on the
  claim (from /proc/<pid>/schedstat: the server must run on this machine). --strategy picks
  the queue's strategy, --other-samples puts another project's samples before the queue's.
  The load average is printed with each figure (at the start of the run and at its end).

Each run uses a fresh database: a new embedded SQLite home, or with --db postgres a fresh
database ``tracker_labeling_bench`` on $TRACKER_BENCH_PG (default postgres://postgres@127.0.0.1:5432).
Prints one JSON line per figure.
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

WORKER = r"""
import json, sys, time
import tracker
tracker.configure(quiet=True)
project, task, me, start_at, stop_at = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
think, strategy = float(sys.argv[6]) / 1000, sys.argv[7]
tracker.next_samples(project, task, 1, me + "-warmup", strategy, ttl=0.001)  # connection + user, not timed
tracker.release(project, task, None, me + "-warmup")
tracker.release(project, task, None, me)
from django.db import connection
with connection.cursor() as cur:
    cur.execute("SELECT pg_backend_pid()" if connection.vendor == "postgresql" else "SELECT NULL")
    backend = cur.fetchone()[0]


def server_ns():
    # CPU time of this worker's PostgreSQL backend (same machine), in nanoseconds.
    try:
        with open(f"/proc/{backend}/schedstat") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


while time.time() < start_at:
    time.sleep(0.002)
lat, cpu, server, claimed, errors = [], [], [], [], []
while time.time() < stop_at:
    s0 = server_ns() if backend else None
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        got = tracker.next_samples(project, task, 1, me, strategy)
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
        break
    lat.append((time.perf_counter() - t0) * 1000)
    cpu.append((time.process_time() - c0) * 1000)
    if s0 is not None:
        s1 = server_ns()
        if s1 is not None:
            server.append((s1 - s0) / 1e6)
    if not got:
        break
    claimed.append(got[0].external_id)
    if think:
        time.sleep(think)  # the annotator looking at the sample
    tracker.annotate(got[0], task, "x", me)
print(json.dumps({"lat": lat, "cpu": cpu, "server": server, "claimed": claimed, "errors": errors}))
"""

def emit(**fields: object) -> None:
    fields["load_avg_1m"] = round(os.getloadavg()[0], 1)
    print(json.dumps(fields), flush=True)


def _pg_url() -> str:
    base = os.environ.get("TRACKER_BENCH_PG", "postgres://postgres@127.0.0.1:5432")
    import psycopg

    with psycopg.connect(base + "/postgres", autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS tracker_labeling_bench WITH (FORCE)")
        conn.execute("CREATE DATABASE tracker_labeling_bench")
    return base + "/tracker_labeling_bench"


def setup(db: str) -> dict[str, str]:
    env = dict(os.environ)
    env["TRACKER_HOME"] = tempfile.mkdtemp(prefix="tracker-bench-labeling-")
    env.pop("DJANGO_SETTINGS_MODULE", None)
    if db == "postgres":
        env["TRACKER_DATABASE_URL"] = _pg_url()
    else:
        env.pop("TRACKER_DATABASE_URL", None)
    env["PYTHONPATH"] = str(ROOT)
    os.environ.update({k: env[k] for k in ("TRACKER_HOME", "PYTHONPATH")})
    if "TRACKER_DATABASE_URL" in env:
        os.environ["TRACKER_DATABASE_URL"] = env["TRACKER_DATABASE_URL"]
    import tracker

    tracker.configure(quiet=True, progress=False)
    return env


def bench_import(db: str, total: int) -> None:
    import pandas as pd

    import tracker

    n_samples = total // 2
    rng = np.random.default_rng(1)
    labels = ["a", "b", "c", "d", "e"]
    tracker.add_samples("imp", [{"id": f"s{i}", "text": f"text {i}"} for i in range(n_samples)])
    tracker.define_task("imp", "t", "classification", labels)
    rows = pd.DataFrame({
        "external_id": [f"s{i}" for i in range(n_samples)] * 2,
        "annotator": ["ann"] * n_samples + ["bob"] * n_samples,
        "value": rng.choice(labels, size=2 * n_samples),
    })
    t0, c0 = time.perf_counter(), time.process_time()
    counts = tracker.import_annotations("imp", "t", rows)
    took, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert counts["created"] == 2 * n_samples, counts
    emit(figure="import_annotations", db=db, annotations=2 * n_samples, seconds=round(took, 2),
         cpu_seconds=round(cpu, 2), per_second=round(2 * n_samples / took))

    export = tracker.export_label_studio("imp", "t")
    t0, c0 = time.perf_counter(), time.process_time()
    counts = tracker.import_label_studio("imp-ls", export)
    took, cpu = time.perf_counter() - t0, time.process_time() - c0
    emit(figure="import_label_studio", db=db, annotations=counts["annotations"], samples=counts["samples"],
         seconds=round(took, 2), cpu_seconds=round(cpu, 2), per_second=round(counts["annotations"] / took))


def bench_agreement(db: str, total: int) -> None:
    import pandas as pd

    import tracker

    coders = 4
    n_samples = total // coders
    rng = np.random.default_rng(2)
    labels = ["a", "b", "c", "d", "e"]
    truth = rng.integers(0, 5, size=n_samples)
    tracker.add_samples("agr", [{"id": f"s{i}"} for i in range(n_samples)])
    tracker.define_task("agr", "t", "classification", labels)
    frames = []
    for c in range(coders):
        noisy = np.where(rng.random(n_samples) < 0.75, truth, rng.integers(0, 5, size=n_samples))
        frames.append(pd.DataFrame({
            "external_id": [f"s{i}" for i in range(n_samples)],
            "annotator": f"coder{c}",
            "value": [labels[v] for v in noisy],
        }))
    tracker.import_annotations("agr", "t", pd.concat(frames, ignore_index=True))
    times, cpus = [], []
    for _ in range(3):
        t0, c0 = time.perf_counter(), time.process_time()
        frame = tracker.agreement("agr", "t")
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    overall = frame.iloc[0]
    emit(figure="agreement", db=db, annotations=int(overall["annotations"]), annotators=coders,
         seconds_best=round(min(times), 2), seconds_median=round(statistics.median(times), 2),
         cpu_seconds_best=round(min(cpus), 2),
         alpha=round(float(overall["krippendorff_alpha"]), 3), rows=len(frame))
    t0 = time.perf_counter()
    resolved = tracker.resolve_labels("agr", "t", ("accepted", "majority"))
    emit(figure="resolve_labels", db=db, annotations=n_samples * coders, resolved=len(resolved),
         seconds=round(time.perf_counter() - t0, 2))


def bench_queue(db: str, env: dict[str, str], workers: int, n_samples: int, seconds: float, think_ms: float,
                strategy: str = "unlabeled", other_samples: int = 0) -> None:
    import tracker

    if other_samples:
        # Another project's samples, added first: the queue's ids are not the lowest ones.
        tracker.add_samples("other", [{"id": f"o{i:07d}"} for i in range(other_samples)])
    tracker.add_samples("que", [{"id": f"q{i:05d}"} for i in range(n_samples)])
    tracker.define_task("que", "t", "classification", ["x"], annotators_per_sample=2)
    if strategy == "least_confident":
        rng = np.random.default_rng(3)
        tracker.add_predictions("que", "t", [
            {"external_id": f"q{i:05d}", "value": "x", "score": float(rng.random())} for i in range(n_samples)
        ], model_version="bench")
    elif strategy == "agreement":
        # Every sample labelled once: each claim hands out a sample for its second annotator.
        import pandas as pd

        tracker.import_annotations("que", "t", pd.DataFrame({
            "external_id": [f"q{i:05d}" for i in range(n_samples)], "annotator": "seed", "value": "x",
        }))
    if db == "postgres":
        from django.db import connection

        # What autovacuum does within a minute of a bulk load; without statistics the planner
        # sorts the whole project for every claim.
        with connection.cursor() as cur:
            cur.execute("ANALYZE")
    load_start = round(os.getloadavg()[0], 1)
    start_at = time.time() + 4.0 + workers * 0.5
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, "que", "t", f"w{i}", str(start_at), str(start_at + seconds),
                          str(think_ms), strategy],
                         env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(workers)
    ]
    lat, cpu, server, claimed, errors, locked = [], [], [], [], [], 0
    for p in procs:
        out, err = p.communicate(timeout=seconds + 600)
        locked += err.count("database is locked")
        if p.returncode != 0:
            errors.append(err[-500:])
            continue
        res = json.loads(out.strip().splitlines()[-1])
        lat += res["lat"]
        cpu += res["cpu"]
        server += res["server"]
        claimed += res["claimed"]
        errors += res["errors"]
    wall = min(time.time(), start_at + seconds) - start_at
    a = np.array(lat)
    fields: dict[str, object] = {}
    if server:
        # The worker's own PostgreSQL backend, from /proc/<pid>/schedstat around each claim.
        fields = {"server_cpu_ms_p50": round(float(np.percentile(np.array(server), 50)), 2),
                  "server_cpu_ms_mean": round(float(np.mean(server)), 2)}
    emit(figure="queue_claims", db=db, workers=workers, think_ms=think_ms, strategy=strategy, samples=n_samples,
         other_samples=other_samples, claims=len(claimed), duplicates=len(claimed) - len(set(claimed)),
         errors=len(errors), database_is_locked=locked,
         p50_ms=round(float(np.percentile(a, 50)), 2), p95_ms=round(float(np.percentile(a, 95)), 2),
         p99_ms=round(float(np.percentile(a, 99)), 2), max_ms=round(float(a.max()), 2),
         client_cpu_ms_p50=round(float(np.percentile(np.array(cpu), 50)), 2), **fields,
         claims_per_second=round(len(claimed) / wall, 1), load_avg_1m_start=load_start)
    if errors:
        print("\n".join(errors[:5]), file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--only", default="import,agreement,queue")
    ap.add_argument("--annotations", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--queue-samples", type=int, default=4000)
    ap.add_argument("--seconds", type=float, default=30.0, help="queue: stop claiming after this long")
    ap.add_argument("--think-ms", type=float, default=0.0,
                    help="queue: pause between claiming a sample and saving its label (0: back to back)")
    ap.add_argument("--strategy", default="unlabeled", choices=["unlabeled", "least_confident", "random", "agreement"],
                    help="queue: the strategy claimed with (least_confident: every sample gets a prediction; "
                         "agreement: every sample is labelled once first)")
    ap.add_argument("--other-samples", type=int, default=0,
                    help="queue: samples of another project, added before the queue's")
    args = ap.parse_args()
    env = setup(args.db)
    only = set(args.only.split(","))
    if "import" in only:
        bench_import(args.db, args.annotations)
    if "agreement" in only:
        bench_agreement(args.db, args.annotations)
    if "queue" in only:
        bench_queue(args.db, env, args.workers, args.queue_samples, args.seconds, args.think_ms, args.strategy,
                    args.other_samples)


if __name__ == "__main__":
    main()
