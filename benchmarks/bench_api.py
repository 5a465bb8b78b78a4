"""REST API throughput and latency against a real server process (issue 6's Measure list).

    .venv/bin/python benchmarks/bench_api.py [--db sqlite|postgres] [--server uvicorn|gunicorn]
        [--workers 2] [--only import,list,export,annotate,metrics,metrics1]

Starts ``python -m tracker_api.server`` (2 workers by default) on a fresh database: a new
embedded SQLite home, or with ``--db postgres`` a fresh database ``tracker_api_bench`` on
$TRACKER_BENCH_PG (default postgres://postgres@127.0.0.1:5432). Clients are separate processes
on the same machine (loopback), using keep-alive connections. Prints one JSON line per figure.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "tracker_api"))


def _pg_url() -> str:
    base = os.environ.get("TRACKER_BENCH_PG", "postgres://postgres@127.0.0.1:5432")
    import psycopg

    with psycopg.connect(base + "/postgres", autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS tracker_api_bench WITH (FORCE)")
        conn.execute("CREATE DATABASE tracker_api_bench")
    return base + "/tracker_api_bench"


def _env(db: str) -> dict[str, str]:
    env = dict(os.environ)
    env["TRACKER_HOME"] = tempfile.mkdtemp(prefix="tracker-bench-api-")
    env.pop("DJANGO_SETTINGS_MODULE", None)
    if db == "postgres":
        env["TRACKER_DATABASE_URL"] = _pg_url()
    else:
        env.pop("TRACKER_DATABASE_URL", None)
    env["PYTHONPATH"] = str(ROOT)
    return env


SEED = """
import tracker
tracker.configure(quiet=True)
from tracker.services import access
u = access.create_user("bench")          # an ordinary member: every role check runs
access.create_project("bench", u)          # ... as the project's admin
print(access.create_token(u)[1])
"""


def _rss_tree(pid: int) -> int:
    import psutil

    try:
        p = psutil.Process(pid)
        return sum(c.memory_info().rss for c in [p, *p.children(recursive=True)])
    except psutil.Error:
        return 0


class RssWatcher(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, False

    def run(self) -> None:
        while not self.stop:
            self.peak = max(self.peak, _rss_tree(self.pid))
            time.sleep(0.02)


def report(**fields) -> None:
    print(json.dumps(fields), flush=True)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


# -- client workers (separate processes) -------------------------------------------------------


def _metric_client(args: tuple) -> tuple[int, float]:
    url, key, run_id, batches, batch, offset = args
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {key}"
    sent = 0
    t = time.perf_counter()
    for b in range(batches):
        base = offset + b * batch
        points = [{"key": "loss", "step": base + i, "value": 1.0 / (base + i + 1)} for i in range(batch)]
        r = s.post(f"{url}/api/runs/{run_id}/metrics/", json={"points": points})
        r.raise_for_status()
        sent += batch
    return sent, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--server", choices=["uvicorn", "gunicorn"], default="uvicorn")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--only", default="import,list,export,annotate,metrics,metrics1")
    args = ap.parse_args()
    only = set(args.only.split(","))
    from conftest import start_server, stop_server

    env = _env(args.db)
    key = subprocess.run([sys.executable, "-c", SEED], env=env, capture_output=True, text=True, check=True).stdout.strip()
    server = start_server(env, server=args.server, workers=args.workers)
    common = {"db": args.db, "server": args.server, "workers": args.workers}
    try:
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {key}"
        url = server.url
        if only & {"import", "list", "export"}:
            per = 10_000
            times = []
            for start in range(0, args.samples, per):
                recs = [{"id": f"s{i:07}", "text": f"sample number {i}", "label": "ab"[i % 2], "n": i} for i in range(start, start + per)]
                t = time.perf_counter()
                r = s.post(f"{url}/api/samples/", json={"project": "bench", "records": recs})
                times.append(time.perf_counter() - t)
                r.raise_for_status()
            if args.db == "postgres":
                # What autovacuum does minutes after a bulk load; without statistics the
                # planner reads the fresh table as tiny and sorts all of it for every page.
                import psycopg

                with psycopg.connect(env["TRACKER_DATABASE_URL"], autocommit=True) as conn:
                    conn.execute("ANALYZE")
            report(figure="sample import, 10,000 per request (JSON)", samples_per_s=round(args.samples / sum(times)),
                   p50_request_s=round(statistics.median(times), 3), **common)
        if "list" in only:
            lat = []
            nxt = f"{url}/api/samples/?project=bench&page_size=100"
            pages = 0
            while nxt:
                t = time.perf_counter()
                body = s.get(nxt).json()
                lat.append((time.perf_counter() - t) * 1000)
                nxt = body["next"]
                pages += 1
            tenth = max(1, len(lat) // 10)
            report(figure="list samples page by page (100/page, cursor)", pages=pages,
                   p50_ms=round(pct(lat, 0.5), 1), p95_ms=round(pct(lat, 0.95), 1),
                   first_10pct_p50_ms=round(statistics.median(lat[:tenth]), 1),
                   last_10pct_p50_ms=round(statistics.median(lat[-tenth:]), 1), **common)
        if "export" in only:
            r = s.post(f"{url}/api/dataset-versions/", json={"project": "bench", "name": "all", "splits": {"train": 0.8, "test": 0.2}})
            r.raise_for_status()
            vid = r.json()["id"]
            base_rss = _rss_tree(server.proc.pid)
            watch = RssWatcher(server.proc.pid)
            watch.start()
            t = time.perf_counter()
            first = None
            size = 0
            with s.get(f"{url}/api/dataset-versions/{vid}/export/?export_format=json", stream=True) as resp:
                resp.raise_for_status()
                for chunk in resp.iter_content(1 << 16):
                    if first is None:
                        first = time.perf_counter() - t
                    size += len(chunk)
            total = time.perf_counter() - t
            watch.stop = True
            watch.join()
            rows = len(json.loads(s.get(f"{url}/api/dataset-versions/{vid}/export/?export_format=json").content))
            report(figure=f"export {rows:,} samples as JSON (streamed)", first_byte_s=round(first, 3), total_s=round(total, 2),
                   mb=round(size / 1e6, 1), server_rss_growth_mb=round((watch.peak - base_rss) / 1e6, 1), **common)
        if "annotate" in only:
            r = s.post(f"{url}/api/tasks/", json={"project": "bench", "name": "sentiment", "kind": "classification", "labels": ["pos", "neg"]})
            r.raise_for_status()
            task = r.json()["id"]
            n = 1000
            lat = []
            t0 = time.perf_counter()
            for i in range(n):
                t = time.perf_counter()
                r = s.post(f"{url}/api/annotations/", json={"task": task, "sample": f"s{i:07}", "value": "pos" if i % 3 else "neg"})
                lat.append((time.perf_counter() - t) * 1000)
                r.raise_for_status()
            wall = time.perf_counter() - t0
            report(figure="annotations, one per request, one client", per_s=round(n / wall), p50_ms=round(pct(lat, 0.5), 2),
                   p95_ms=round(pct(lat, 0.95), 2), **common)
        if only & {"metrics", "metrics1"}:
            r = s.post(f"{url}/api/runs/", json={"project": "bench", "name": "ingest"})
            r.raise_for_status()
            run = r.json()["id"]
        if "metrics" in only:
            clients, batches, batch = 4, 50, 1000
            with mp.get_context("spawn").Pool(clients) as pool:
                t = time.perf_counter()
                res = pool.map(_metric_client, [(url, key, run, batches, batch, c * batches * batch) for c in range(clients)])
                wall = time.perf_counter() - t
            total = sum(r[0] for r in res)
            report(figure="metric batch ingest, 1000 points/request, 4 client processes", points=total,
                   points_per_s=round(total / wall), **common)
        if "metrics1" in only:
            n = 2000
            lat = []
            t0 = time.perf_counter()
            for i in range(n):
                t = time.perf_counter()
                r = s.post(f"{url}/api/runs/{run}/metrics/", json={"points": [{"key": "acc", "step": i, "value": i / n}]})
                lat.append((time.perf_counter() - t) * 1000)
                r.raise_for_status()
            wall = time.perf_counter() - t0
            report(figure="metric ingest, 1 point/request, one client", per_s=round(n / wall), p50_ms=round(pct(lat, 0.5), 2), **common)
    finally:
        stop_server(server)


if __name__ == "__main__":
    main()
