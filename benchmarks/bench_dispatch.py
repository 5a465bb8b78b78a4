"""Per-call overhead of tracker's facades in a real Jupyter cell, against a direct ORM call.

    .venv/bin/python benchmarks/bench_dispatch.py [--calls 5000]

Runs two kernels (nbclient + ipykernel) on a fresh embedded SQLite home:
  A. default configure() (Django's opt-out on in the kernel): sync API runs inline;
  B. configure(allow_async_unsafe=False): sync API hops to tracker's database thread.
In each, the same lookup (`Project.objects.get(name=...)`) is timed directly (baseline, on the
thread that can run it) and through `tracker.get_project`, and `await tracker.aio.get_project`
is timed against Django's own `await Project.objects.aget(...)`. Figures are the median of 7
rounds, in microseconds per call.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from notebooks import run_cells  # noqa: E402

SETUP = """
import time, statistics, json, asyncio
import tracker
from tracker._dispatch import db_thread
N = {calls}
def per_call(fn, rounds=7):
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(N):
            fn()
        out.append((time.perf_counter() - t) / N * 1e6)
    return statistics.median(out)
def paired(base, fn, on_db_thread=False):
    b, c = [], []
    for _ in range(7):
        b.append(db_thread().run(per_call, base, 1) if on_db_thread else per_call(base, 1))
        c.append(per_call(fn, 1))
    return statistics.median(b), statistics.median(c)
async def aper_call(fn):
    rounds = []
    for _ in range(7):
        t = time.perf_counter()
        for _ in range(N):
            await fn()
        rounds.append((time.perf_counter() - t) / N * 1e6)
    return statistics.median(rounds)
"""

# Baseline and candidate are timed in alternating rounds so that load from other processes on
# this 2-core machine hits both alike.
KERNEL_A = [
    "tracker.configure(quiet=True)\ntracker.add_samples('bench', [{'id': 1}])\n"
    "from tracker.models import Project",
    "r = {}\n"
    "r['direct ORM (main thread)'], r['tracker.get_project (inline)'] = paired(\n"
    "    lambda: Project.objects.get(name='bench'), lambda: tracker.get_project('bench'))",
    "r['await Project.objects.aget'] = await aper_call(lambda: Project.objects.aget(name='bench'))\n"
    "r['await tracker.aio.get_project'] = await aper_call(lambda: tracker.aio.get_project('bench'))\n"
    "print(json.dumps(r))",
]

KERNEL_B = [
    "tracker.configure(quiet=True, allow_async_unsafe=False)\ntracker.add_samples('bench', [{'id': 1}])\n"
    "from tracker.models import Project",
    "r = {}\n"
    "r['direct ORM (on the db thread)'], r['tracker.get_project (db thread hop)'] = paired(\n"
    "    lambda: Project.objects.get(name='bench'), lambda: tracker.get_project('bench'), True)\n"
    "print(json.dumps(r))",
]


def run(cells: list[str], env: dict[str, str], calls: int) -> dict[str, float]:
    results = run_cells([SETUP.format(calls=calls), *cells], env, timeout=900)
    for r in results:
        if r.error:
            raise SystemExit(f"cell failed: {r.error['ename']}: {r.error['evalue']}\n{r.source}")
    return json.loads(results[-1].stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="tracker-bench-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "DJANGO_"))}
    env["TRACKER_HOME"] = home
    a = run(KERNEL_A, env, args.calls)
    b = run(KERNEL_B, env, args.calls)
    rows = [
        ("sync API, opt-out on (inline)", a["tracker.get_project (inline)"], a["direct ORM (main thread)"]),
        ("sync API, opt-out off (db thread)", b["tracker.get_project (db thread hop)"], b["direct ORM (on the db thread)"]),
        ("tracker.aio (await)", a["await tracker.aio.get_project"], a["direct ORM (main thread)"]),
        ("Django's own aget (await), for scale", a["await Project.objects.aget"], a["direct ORM (main thread)"]),
    ]
    print(f"{'path':40} {'per call':>10} {'direct':>10} {'overhead':>10}")
    for name, value, base in rows:
        print(f"{name:40} {value:8.1f}µs {base:8.1f}µs {value - base:+8.1f}µs")


if __name__ == "__main__":
    main()
