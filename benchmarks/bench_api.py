"""REST API throughput and latency against a real server process (issue 6's Measure list).

    .venv/bin/python benchmarks/bench_api.py [--db sqlite|postgres] [--server granian|gunicorn|uvicorn]
        [--workers 2] [--only import,list,export,annotate,metrics,metrics1]

Starts ``python -m tracker_api.server`` (2 workers by default) on a fresh database: a new
embedded SQLite home, or with ``--db postgres`` a fresh database ``tracker_api_bench`` on
$TRACKER_BENCH_PG (default postgres://postgres@127.0.0.1:5432). Clients are separate processes
on the same machine (loopback). Prints one JSON line per figure, with the load average before
and after it and the client's CPU time per request.

The client is kept out of the figure: one keep-alive ``http.client`` connection per client
process (about 0.1 ms of client CPU per small request; ``requests`` costs several times that),
and request bodies are JSON-encoded before the clock starts, so a figure is the rate at which
the server answers, not the rate at which Python builds JSON.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

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


class CpuMeter:
    """CPU seconds the server's process tree and (PostgreSQL) the database's backends on the
    bench database spent between start() and ms_per(n): where a request's time goes."""

    def __init__(self, server_pid: int, pg_url: str | None) -> None:
        self.server_pid, self.pg_url = server_pid, pg_url

    def _pids(self) -> tuple[list[int], list[int]]:
        import psutil

        try:
            p = psutil.Process(self.server_pid)
            server = [p.pid, *(c.pid for c in p.children(recursive=True))]
        except psutil.Error:
            server = []
        backends = []
        if self.pg_url:
            import psycopg

            with psycopg.connect(self.pg_url, autocommit=True) as conn:
                backends = [r[0] for r in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")]
        return server, backends

    @staticmethod
    def _cpu(pids: list[int]) -> dict[int, float]:
        import psutil

        out = {}
        for pid in pids:
            try:
                t = psutil.Process(pid).cpu_times()
                out[pid] = t.user + t.system
            except psutil.Error:
                pass
        return out

    def start(self) -> None:
        self.before = [self._cpu(pids) for pids in self._pids()]

    def ms_per(self, n: int) -> dict[str, float]:
        out = {}
        for name, pids, before in zip(("server", "db_backends"), self._pids(), self.before):
            if name == "db_backends" and not self.pg_url:
                continue
            after = self._cpu(pids)
            # A backend that started meanwhile counts from zero.
            spent = sum(t - before.get(pid, 0.0) for pid, t in after.items())
            out[f"{name}_cpu_ms_per_request"] = round(spent * 1000 / n, 3)
        return out


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


def load() -> float:
    return round(os.getloadavg()[0], 2)


class _Connection(http.client.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        # As urllib3 (requests) does: http.client sends the headers and the body in two writes,
        # and with Nagle's algorithm on, the body can wait for the server's delayed ACK (40 ms).
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Client:
    """One keep-alive HTTP/1.1 connection; bodies are bytes encoded before timing starts.
    Each figure opens its own, so no figure inherits one the server closed while it idled."""

    def __init__(self, url: str, key: str) -> None:
        parts = urlsplit(url)
        self.conn = _Connection(parts.hostname, parts.port)
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def send(self, method: str, path: str, body: bytes | None = None) -> http.client.HTTPResponse:
        self.conn.request(method, path, body, self.headers)
        return self.conn.getresponse()

    def call(self, method: str, path: str, body: bytes | None = None, expect: int = 200) -> bytes:
        resp = self.send(method, path, body)
        data = resp.read()
        if resp.status != expect:
            raise RuntimeError(f"{method} {path}: {resp.status} {data[:500]!r}")
        return data

    def json(self, method: str, path: str, payload: object = None, expect: int = 200) -> object:
        body = None if payload is None else json.dumps(payload).encode()
        return json.loads(self.call(method, path, body, expect))


def encode(payload: object) -> bytes:
    return json.dumps(payload).encode()


# -- client workers (separate processes) -------------------------------------------------------


def _metric_client(args: tuple) -> tuple[int, float, float, float]:
    url, key, run_id, batches, batch, offset, start_at = args
    c = Client(url, key)
    path = f"/api/runs/{run_id}/metrics/"
    bodies = []
    for b in range(batches):
        base = offset + b * batch
        bodies.append(encode({"points": [{"key": "loss", "step": base + i, "value": 1.0 / (base + i + 1)} for i in range(batch)]}))
    c.call("GET", "/api/users/me/")  # connect before the clock starts
    while time.time() < start_at:  # every client starts at once
        time.sleep(0.001)
    t, cpu = time.perf_counter(), time.process_time()
    for body in bodies:
        c.call("POST", path, body, expect=201)
    return batches * batch, t, time.perf_counter(), time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--server", choices=["granian", "uvicorn", "gunicorn"], default="granian")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--only", default="import,list,export,annotate,metrics,metrics1")
    args = ap.parse_args()
    only = set(args.only.split(","))
    from api_support import start_server, stop_server

    env = _env(args.db)
    key = subprocess.run([sys.executable, "-c", SEED], env=env, capture_output=True, text=True, check=True).stdout.strip()
    server = start_server(env, server=args.server, workers=args.workers)
    common = {"db": args.db, "server": args.server, "workers": args.workers}
    meter = CpuMeter(server.proc.pid, env.get("TRACKER_DATABASE_URL"))
    try:
        c = Client(server.url, key)
        if only & {"import", "list", "export", "annotate"}:
            per = 10_000
            bodies = [
                encode({"project": "bench", "records": [
                    {"id": f"s{i:07}", "text": f"sample number {i}", "label": "ab"[i % 2], "n": i}
                    for i in range(start, min(start + per, args.samples))
                ]})
                for start in range(0, args.samples, per)
            ]
            times = []
            load0, cpu = load(), time.process_time()
            for body in bodies:
                t = time.perf_counter()
                c.call("POST", "/api/samples/", body, expect=201)
                times.append(time.perf_counter() - t)
            if args.db == "postgres":
                # What autovacuum does minutes after a bulk load; without statistics the
                # planner reads the fresh table as tiny and sorts all of it for every page.
                import psycopg

                with psycopg.connect(env["TRACKER_DATABASE_URL"], autocommit=True) as conn:
                    conn.execute("ANALYZE")
            report(figure="sample import, 10,000 per request (JSON)", samples_per_s=round(args.samples / sum(times)),
                   p50_request_s=round(statistics.median(times), 3),
                   client_cpu_ms_per_request=round((time.process_time() - cpu) * 1000 / len(bodies), 2),
                   load=[load0, load()], **common)
        if "list" in only:
            c = Client(server.url, key)
            lat = []
            nxt = "/api/samples/?project=bench&page_size=100"
            pages = 0
            load0, cpu = load(), time.process_time()
            while nxt:
                t = time.perf_counter()
                data = c.call("GET", nxt)
                lat.append((time.perf_counter() - t) * 1000)
                nxt = json.loads(data)["next"]
                if nxt:
                    nxt = nxt[nxt.index("/api/"):]
                pages += 1
            tenth = max(1, len(lat) // 10)
            report(figure="list samples page by page (100/page, cursor)", pages=pages,
                   p50_ms=round(pct(lat, 0.5), 1), p95_ms=round(pct(lat, 0.95), 1),
                   first_10pct_p50_ms=round(statistics.median(lat[:tenth]), 1),
                   last_10pct_p50_ms=round(statistics.median(lat[-tenth:]), 1),
                   client_cpu_ms_per_request=round((time.process_time() - cpu) * 1000 / pages, 3),
                   load=[load0, load()], **common)
        if "export" in only:
            c = Client(server.url, key)
            vid = c.json("POST", "/api/dataset-versions/", {"project": "bench", "name": "all", "splits": {"train": 0.8, "test": 0.2}}, expect=201)["id"]
            base_rss = _rss_tree(server.proc.pid)
            watch = RssWatcher(server.proc.pid)
            watch.start()
            load0 = load()
            t = time.perf_counter()
            first = None
            size = 0
            resp = c.send("GET", f"/api/dataset-versions/{vid}/export/?export_format=json")
            if resp.status != 200:
                raise RuntimeError(f"export: {resp.status} {resp.read()[:500]!r}")
            while chunk := resp.read1(1 << 16):
                if first is None:
                    first = time.perf_counter() - t
                size += len(chunk)
            total = time.perf_counter() - t
            watch.stop = True
            watch.join()
            rows = len(json.loads(c.call("GET", f"/api/dataset-versions/{vid}/export/?export_format=json")))
            report(figure=f"export {rows:,} samples as JSON (streamed)", first_byte_s=round(first, 3), total_s=round(total, 2),
                   mb=round(size / 1e6, 1), server_rss_growth_mb=round((watch.peak - base_rss) / 1e6, 1),
                   load=[load0, load()], **common)
        if "annotate" in only:
            c = Client(server.url, key)
            task = c.json("POST", "/api/tasks/", {"project": "bench", "name": "sentiment", "kind": "classification", "labels": ["pos", "neg"]}, expect=201)["id"]
            n = 1000
            bodies = [encode({"task": task, "sample": f"s{i:07}", "value": "pos" if i % 3 else "neg"}) for i in range(n)]
            lat = []
            meter.start()
            load0, cpu = load(), time.process_time()
            t0 = time.perf_counter()
            for body in bodies:
                t = time.perf_counter()
                c.call("POST", "/api/annotations/", body, expect=201)
                lat.append((time.perf_counter() - t) * 1000)
            wall = time.perf_counter() - t0
            report(figure="annotations, one per request, one client", per_s=round(n / wall), p50_ms=round(pct(lat, 0.5), 2),
                   p95_ms=round(pct(lat, 0.95), 2),
                   client_cpu_ms_per_request=round((time.process_time() - cpu) * 1000 / n, 3),
                   **meter.ms_per(n), load=[load0, load()], **common)
        if only & {"metrics", "metrics1"}:
            c = Client(server.url, key)
            run = c.json("POST", "/api/runs/", {"project": "bench", "name": "ingest"}, expect=201)["id"]
        if "metrics" in only:
            clients, batches, batch = 4, 50, 1000
            load0 = load()
            with mp.get_context("spawn").Pool(clients) as pool:
                # The clients encode their bodies first, then start together.
                start_at = time.time() + 3
                pending = pool.map_async(_metric_client, [(server.url, key, run, batches, batch, i * batches * batch, start_at) for i in range(clients)])
                time.sleep(max(0.0, start_at - time.time() - 0.5))
                meter.start()
                res = pending.get()
            total = sum(r[0] for r in res)
            wall = max(r[2] for r in res) - min(r[1] for r in res)
            report(figure="metric batch ingest, 1000 points/request, 4 client processes", points=total,
                   points_per_s=round(total / wall),
                   client_cpu_ms_per_request=round(sum(r[3] for r in res) * 1000 / (clients * batches), 3),
                   **meter.ms_per(clients * batches), load=[load0, load()], **common)
        if "metrics1" in only:
            c = Client(server.url, key)
            n = 2000
            path = f"/api/runs/{run}/metrics/"
            bodies = [encode({"points": [{"key": "acc", "step": i, "value": i / n}]}) for i in range(n)]
            lat = []
            meter.start()
            load0, cpu = load(), time.process_time()
            t0 = time.perf_counter()
            for body in bodies:
                t = time.perf_counter()
                c.call("POST", path, body, expect=201)
                lat.append((time.perf_counter() - t) * 1000)
            wall = time.perf_counter() - t0
            report(figure="metric ingest, 1 point/request, one client", per_s=round(n / wall), p50_ms=round(pct(lat, 0.5), 2),
                   p95_ms=round(pct(lat, 0.95), 2),
                   client_cpu_ms_per_request=round((time.process_time() - cpu) * 1000 / n, 3),
                   **meter.ms_per(n), load=[load0, load()], **common)
    finally:
        stop_server(server)


if __name__ == "__main__":
    main()
