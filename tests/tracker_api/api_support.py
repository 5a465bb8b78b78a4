"""API test helpers: users with each role in one project, tokens, clients, a live server process.

Imported by name (``from api_support import ...``); see tests/support.py for why not conftest.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

ROLES = ("viewer", "annotator", "editor", "admin")


@dataclass
class World:
    """Project ``own`` with one user per role, project ``foreign`` none of them belongs to."""

    own: Any
    foreign: Any
    users: dict[str, Any] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)

    def client(self, who: str | None) -> Any:
        from rest_framework.test import APIClient

        c = APIClient()
        if who is not None:
            c.credentials(HTTP_AUTHORIZATION=f"Bearer {self.keys[who]}")
        return c


def make_world() -> World:
    from tracker.models import Project
    from tracker.services import access

    own = Project.objects.create(name="own")
    foreign = Project.objects.create(name="foreign")
    w = World(own=own, foreign=foreign)
    boss = access.create_user("foreign-admin")
    access.set_role(foreign, boss, "admin")
    w.users["foreign-admin"] = boss
    for role in ROLES:
        u = access.create_user(role)
        access.set_role(own, u, role)
        w.users[role] = u
    w.users["outsider"] = access.create_user("outsider")
    w.users["staff"] = access.create_user("staff", is_staff=True)
    w.users["root"] = access.create_user("root", is_superuser=True)
    for name, u in w.users.items():
        w.keys[name] = access.create_token(u, name="test")[1]
    return w


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    url: str
    proc: subprocess.Popen
    log: str


def start_server(
    env: dict[str, str], *, server: str = "granian", workers: int = 1, timeout: float = 60, port: int | None = None
) -> LiveServer:
    """Start ``python -m tracker_api.server`` in ``env`` and wait until it answers."""
    import requests

    port = port or free_port()
    log = os.path.join(env.get("TRACKER_HOME", "/tmp"), f"server-{port}.log")
    fh = open(log, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracker_api.server", "--port", str(port), "--workers", str(workers),
         "--server", server, "--log-level", "warning"],
        env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {open(log).read()[-3000:]}")
        try:
            # Any answer (401 here) means the server is up; the schema is slow to build.
            requests.get(url + "/api/users/me/", timeout=10)
            return LiveServer(url, proc, log)
        except requests.RequestException:
            time.sleep(0.2)
    stop_server(LiveServer(url, proc, log))
    raise RuntimeError(f"server did not answer within {timeout}s: {open(log).read()[-3000:]}")


def stop_server(server: LiveServer) -> None:
    import signal

    if server.proc.poll() is None:
        os.killpg(server.proc.pid, signal.SIGTERM)
        try:
            server.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait()
    # The wrapper is gone; wait until its workers have let go of the port too.
    host, port = server.url.rsplit("/", 1)[-1].rsplit(":", 1)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, int(port)), timeout=0.5).close()
        except OSError:
            return
        time.sleep(0.1)
