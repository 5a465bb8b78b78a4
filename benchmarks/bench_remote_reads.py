"""Remote mode reads: ``run.history()`` over HTTP (a typed frame) against the same call locally.

    .venv/bin/python benchmarks/bench_remote_reads.py [--points 200000]

Logs one run with ``--points`` loss points and a quarter as many acc points into a fresh
embedded SQLite home, times the local ``history()`` (wide and long), then starts
``python -m tracker_api.server`` on that home and times ``tracker.get_run(id).history()`` in a
client process configured with ``server_url`` (best of three). Prints one JSON line with the
load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "tracker_api"))

CLIENT = """
import json, sys, time, tracker
tracker.configure(server_url=sys.argv[1], token=sys.argv[2], home=sys.argv[3])
run = tracker.get_run(sys.argv[4])
out = {}
for wide in (True, False):
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        frame = run.history(wide=wide)
        best = min(best, time.perf_counter() - start)
    out["wide" if wide else "long"] = {"seconds": round(best, 3), "rows": len(frame)}
print(json.dumps(out))
"""


def _best(fn, times: int = 3) -> tuple[float, int]:
    best, rows = float("inf"), 0
    for _ in range(times):
        start = time.perf_counter()
        rows = len(fn())
        best = min(best, time.perf_counter() - start)
    return round(best, 3), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200_000)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="bench-remote-")
    os.environ["TRACKER_HOME"] = home
    os.environ.pop("TRACKER_DATABASE_URL", None)
    import tracker
    from api_support import start_server, stop_server

    tracker.configure(home=home, quiet=True)
    from tracker.services import access

    user = access.create_user("bench")
    access.create_project("bench", user)
    key = access.create_token(user, name="bench")[1]
    run = tracker.start_run("bench", "big")
    for i in range(args.points):
        run.log_metric("loss", 1.0 / (i + 1))
        if i % 4 == 0:
            run.log_metric("acc", i / args.points)
    run.finish()
    tracker.flush()
    local = tracker.get_run(run.id)
    load_before = os.getloadavg()
    figures = {"local": {}}
    for wide in (True, False):
        seconds, rows = _best(lambda: local.history(wide=wide))
        figures["local"]["wide" if wide else "long"] = {"seconds": seconds, "rows": rows}
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    server = start_server(env)
    try:
        done = subprocess.run(
            [sys.executable, "-c", CLIENT, server.url, key, tempfile.mkdtemp(prefix="bench-client-"), run.id],
            env=env, capture_output=True, text=True, check=True,
        )
    finally:
        stop_server(server)
    figures["remote"] = json.loads(done.stdout)
    print(json.dumps({"points": args.points, **figures, "load_before": load_before, "load_after": os.getloadavg()}))


if __name__ == "__main__":
    main()
