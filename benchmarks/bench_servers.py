"""The floor each HTTP server puts under a small request: a WSGI app that does nothing, served
by granian and by gunicorn (gthread) as `tracker serve` runs them, one keep-alive client.

    .venv/bin/python benchmarks/bench_servers.py [--requests 3000]

Why `tracker serve` prefers granian (docs/API.md): with tracker's one-point ingest at about
1 ms per request, the server's own share decides whether 1,000 requests/s fit. Prints one
JSON line per server with requests/s and microseconds per request (client included: about
0.1 ms of `http.client`).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "tracker_api"))

APP = '''
def application(environ, start_response):
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    body = b'{"points":1}'
    start_response("201 Created", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
'''

COMMANDS = {
    "granian": ["-m", "granian", "hello:application", "--interface", "wsgi", "--workers", "2",
                "--blocking-threads", "4", "--no-ws", "--log-level", "error", "--host", "127.0.0.1", "--port"],
    "gunicorn": ["-m", "gunicorn", "hello:application", "--workers", "2", "--worker-class", "gthread",
                 "--threads", "4", "--keep-alive", "30", "--log-level", "error", "--bind"],
}


def measure(port: int, n: int) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Content-Type": "application/json"}
    body = json.dumps({"points": [{"key": "acc", "step": 1, "value": 0.5}]})

    def go(count: int) -> None:
        for _ in range(count):
            conn.request("POST", "/api/runs/x/metrics/", body, headers)
            r = conn.getresponse()
            r.read()
            assert r.status == 201, r.status

    go(300)
    t = time.perf_counter()
    go(n)
    return time.perf_counter() - t


def main() -> None:
    from api_support import free_port

    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tracker-bench-servers-"))
    (work / "hello.py").write_text(APP)
    for name, cmd in COMMANDS.items():
        port = free_port()
        address = str(port) if name == "granian" else f"127.0.0.1:{port}"
        proc = subprocess.Popen([sys.executable, *cmd, address], cwd=work, start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    measure(port, 1)
                    break
                except OSError:
                    assert time.monotonic() < deadline, f"{name} did not start"
                    time.sleep(0.2)
            wall = measure(port, args.requests)
            print(json.dumps({
                "figure": "do-nothing WSGI app, 1 keep-alive client", "server": name,
                "per_s": round(args.requests / wall), "us_per_request": round(wall / args.requests * 1e6),
                "load": [round(x, 2) for x in os.getloadavg()],
            }), flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
