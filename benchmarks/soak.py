"""Soak (issue 8): many processes log metrics and artifacts for a while; nothing is lost.

    .venv/bin/python benchmarks/soak.py --pg-url postgres://postgres@127.0.0.1:5432/tracker_soak
    .venv/bin/python benchmarks/soak.py --seconds 600 --pg-url ...      # the 10-minute soak
    .venv/bin/python benchmarks/soak.py --seconds 60 --no-postgres     # SQLite only

8 processes log to PostgreSQL and 4 to an embedded SQLite file (a fresh tracker home), all at
once. Each logs two metric keys at a steady rate (``--rate`` points per second per key, like a
training loop that does work between logs) and a random artifact every ``--artifact-every``
seconds, samples its own RSS every second, then finishes its run and reports what it logged.
A verifier process per database then checks that every point is stored exactly once (steps
0..n-1 per key, the values that were logged), every artifact is there with its hash, every run
is ``finished``, no worker wrote to stderr, and RSS is flat (last samples vs. the samples after
warm-up). The PostgreSQL database must exist and is used as it is (the runs are new ones).
Exit status 0 when every check holds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WARMUP_SECONDS = 10.0


# -- worker: one training process ---------------------------------------------------------------
def worker(seconds: float, rate: float, artifact_every: float, seed: int) -> dict:
    import psutil

    import tracker

    tracker.configure(quiet=True)
    proc = psutil.Process()
    rng = random.Random(seed)
    run = tracker.start_run("soak", f"worker-{seed}", params={"seed": seed})
    start = time.monotonic()
    next_rss = start
    next_artifact = start + artifact_every
    rss: list[tuple[float, int]] = []
    artifacts: dict[str, str] = {}
    step = 0
    period = 1.0 / rate
    while (now := time.monotonic()) - start < seconds:
        # Values are a function of the step, so the verifier can check every one of them.
        run.log_metrics({"loss": 1.0 / (step + 1), "acc": step * 0.5}, step=step)
        step += 1
        if now >= next_artifact:
            data = rng.randbytes(rng.randint(1_000, 64_000))
            name = f"ckpt/{len(artifacts):05d}.bin"
            run.log_artifact(data, name=name)
            artifacts[name] = hashlib.sha256(data).hexdigest()
            next_artifact += artifact_every
        if now >= next_rss:
            rss.append((now - start, proc.memory_info().rss))
            next_rss += 1.0
        # A steady rate: sleep until this step's slot, never catching up in a burst.
        delay = start + step * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    run.finish()
    return {"run": run.id, "points": step, "artifacts": artifacts, "rss": rss}


# -- verifier: what the database holds ------------------------------------------------------------
def verify(reports: list[dict]) -> list[str]:
    """Problems found in the database for these worker reports (empty: all accounted for)."""
    from django.core.files.storage import default_storage
    from django.db.models import Count, Max, Min

    from tracker.models import Artifact, Metric, Run

    problems = []
    for rep in reports:
        uid, n = rep["run"], rep["points"]
        row = Run.objects.filter(uid=uid).first()
        if row is None:
            problems.append(f"run {uid}: not stored")
            continue
        if row.status != "finished":
            problems.append(f"run {uid}: status {row.status!r}, not 'finished'")
        per_key = {
            r["key"]: r
            for r in Metric.objects.filter(run=row)
            .values("key")
            .annotate(
                n=Count("id"), lo=Min("step"), hi=Max("step"), steps=Count("step", distinct=True)
            )
        }
        for key in ("loss", "acc"):
            got = per_key.get(key, {"n": 0, "lo": None, "hi": None, "steps": 0})
            want = {"n": n, "lo": 0, "hi": n - 1, "steps": n} if n else got
            if {k: got[k] for k in ("n", "lo", "hi", "steps")} != want:
                problems.append(
                    f"run {uid} {key}: stored {got}, logged {n} points (steps 0..{n - 1})"
                )
        wrong = sum(
            1
            for step, value in Metric.objects.filter(run=row, key="acc").values_list(
                "step", "value"
            )
            if value != step * 0.5
        )
        if wrong:
            problems.append(f"run {uid}: {wrong} 'acc' values differ from what was logged")
        stored = {a.name: a for a in Artifact.objects.filter(run=row).select_related("blob")}
        if set(stored) != set(rep["artifacts"]):
            problems.append(
                f"run {uid}: artifacts {len(stored)} stored, {len(rep['artifacts'])} logged"
            )
        for name, sha in rep["artifacts"].items():
            a = stored.get(name)
            if a is None:
                continue
            with default_storage.open(a.blob.storage_name, "rb") as fh:
                if a.sha256 != sha or hashlib.sha256(fh.read()).hexdigest() != sha:
                    problems.append(f"run {uid}: artifact {name} does not hold the logged bytes")
    return problems


def rss_growth(report: dict) -> float:
    """MB of RSS growth: the median of the last 5 samples minus the median of the 5 samples
    after warm-up (imports, first connections, first flushes)."""
    samples = [r for t, r in report["rss"] if t >= WARMUP_SECONDS]
    if len(samples) < 10:
        samples = [r for _, r in report["rss"]]
    if len(samples) < 2:
        return 0.0
    k = max(1, min(5, len(samples) // 3))
    return (statistics.median(samples[-k:]) - statistics.median(samples[:k])) / 2**20


# -- driver ---------------------------------------------------------------------------------
def child_env(db_url: str, home: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in (
        "DJANGO_SETTINGS_MODULE",
        "DJANGO_ALLOW_ASYNC_UNSAFE",
        "TRACKER_TEST_DATABASE_URL",
    ):
        env.pop(name, None)
    env["TRACKER_DATABASE_URL"] = db_url
    env["TRACKER_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def start_workers(
    env: dict[str, str], n: int, seconds: float, rate: float, artifact_every: float, seed0: int
) -> list[subprocess.Popen[str]]:
    """Start ``n`` worker processes; each prints its report as one JSON line at the end."""
    cmd = [sys.executable, __file__, "--worker", "--seconds", str(seconds), "--rate", str(rate)]
    cmd += ["--artifact-every", str(artifact_every)]
    return [
        subprocess.Popen(
            [*cmd, "--seed", str(seed0 + i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]


def collect(procs: list[subprocess.Popen[str]], timeout: float) -> tuple[list[dict], list[str]]:
    """Reports of the workers, and problems (a non-zero exit, anything on stderr)."""
    reports, problems = [], []
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            problems.append(f"worker {p.pid} did not finish in time")
        if p.returncode != 0 or err.strip():
            problems.append(f"worker {p.pid} exited {p.returncode}: {err.strip()[-2000:]}")
        lines = out.strip().splitlines()
        if lines:
            reports.append(json.loads(lines[-1]))
    return reports, problems


def summary(label: str, reports: list[dict], problems: list[str], seconds: float) -> dict:
    points = sum(2 * r["points"] for r in reports)
    growth = [rss_growth(r) for r in reports]
    return {
        "database": label,
        "processes": len(reports),
        "seconds": seconds,
        "points": points,
        "points_per_second": round(points / seconds),
        "artifacts": sum(len(r["artifacts"]) for r in reports),
        "rss_mb_first": round(
            max((r["rss"][0][1] for r in reports if r["rss"]), default=0) / 2**20, 1
        ),
        "rss_growth_mb_max": round(max(growth, default=0.0), 1),
        "problems": problems,
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=200.0, help="steps per second per worker")
    ap.add_argument("--artifact-every", type=float, default=2.0)
    ap.add_argument("--pg-url", default=os.environ.get("TRACKER_SOAK_DATABASE_URL"))
    ap.add_argument("--pg-processes", type=int, default=8)
    ap.add_argument("--sqlite-processes", type=int, default=4)
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--max-rss-growth-mb", type=float, default=20.0)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--verify", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.seconds, args.rate, args.artifact_every, args.seed)))
        return 0
    if args.verify:
        import tracker

        tracker.configure(quiet=True)
        print(json.dumps(verify(json.load(sys.stdin))))
        return 0
    if not args.no_postgres and not args.pg_url:
        ap.error("pass --pg-url postgres://... (an existing database) or --no-postgres")

    home = Path(tempfile.mkdtemp(prefix="tracker-soak-"))
    try:
        return _soak(args, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _soak(args: argparse.Namespace, home: Path) -> int:
    sqlite_env = child_env(f"sqlite:///{home / 'soak.sqlite3'}", home)
    pg_env = child_env(args.pg_url, home) if not args.no_postgres else None
    # Migrate first, so the workers do not all race to do it at start-up.
    for env in filter(None, [sqlite_env, pg_env]):
        subprocess.run(
            [sys.executable, "-c", "import tracker; tracker.configure(quiet=True)"],
            env=env,
            check=True,
        )
    groups = [("sqlite", sqlite_env, args.sqlite_processes, 0)]
    if pg_env is not None:
        groups.append(("postgresql", pg_env, args.pg_processes, 100))
    started = {
        label: start_workers(env, n, args.seconds, args.rate, args.artifact_every, seed0)
        for label, env, n, seed0 in groups
    }
    ok = True
    for label, env, _, _ in groups:
        reports, problems = collect(started[label], timeout=args.seconds + 300)
        check = subprocess.run(
            [sys.executable, __file__, "--verify"],
            check=False,
            input=json.dumps(reports),
            env=env,
            capture_output=True,
            text=True,
        )
        problems += json.loads(check.stdout) if check.returncode == 0 else [check.stderr[-2000:]]
        result = summary(label, reports, problems, args.seconds)
        if result["rss_growth_mb_max"] > args.max_rss_growth_mb:
            problems.append(f"RSS grew by {result['rss_growth_mb_max']} MB in one worker")
        ok = ok and not problems
        print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
