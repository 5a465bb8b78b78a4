"""Remote logging: a notebook configured with server_url logs runs to a live server process."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from api_support import start_server, stop_server
from notebooks import run_cells


def _client_env(subprocess_env: dict[str, str], url: str, key: str) -> dict[str, str]:
    env = dict(subprocess_env)
    # The client has no database of its own to reach: a fresh home, no database URL.
    env.pop("TRACKER_DATABASE_URL", None)
    env["TRACKER_HOME"] = tempfile.mkdtemp(prefix="tracker-remote-client-")
    env["TRACKER_SERVER_URL"] = url
    env["TRACKER_TOKEN"] = key
    return env


def _editor_key(project: str = "remote") -> str:
    from tracker.models import Project
    from tracker.services import access

    user = access.create_user("trainer")
    access.set_role(Project.objects.create(name=project), user, "editor")
    return access.create_token(user, name="notebook")[1]


@pytest.mark.notebook
def test_notebook_logs_a_run_to_a_live_server(subprocess_env, tmp_path: Path):
    from tracker.models import Artifact, Metric, MetricSummary, Run

    key = _editor_key()
    server = start_server(subprocess_env)
    weights = tmp_path / "weights.bin"
    weights.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    try:
        env = _client_env(subprocess_env, server.url, key)
        cells = run_cells(
            [
                "import tracker\ntracker.configure(flush_interval=0.2)",
                "run = tracker.start_run('remote', 'resnet', params={'opt': {'lr': 0.1}}, tags={'team': 'vision'})\n"
                "print(type(run).__name__, run.id)",
                "for step in range(20000):\n"
                "    run.log_metric('loss', 1.0 / (step + 1))\n"
                "run.log_metrics({'acc': 0.5, 'nan': float('nan'), 'inf': float('inf')}, step=3)\n"
                "run.log_param('batch', 32)\n"
                "run.set_tag('stage', 'warmup')",
                "try:\n    run.log_param('batch', 64)\nexcept tracker.TrackerError as e:\n    print(type(e).__name__)",
                f"info = run.log_artifact({str(weights)!r}, 'model/weights.bin')\nprint(info['sha256'], info['size'])",
                "run.finish()\nprint(run.status)",
                "with tracker.start_run('remote', 'crashes') as r2:\n"
                "    r2.log_metric('x', 1.0)\n"
                "    raise ValueError('diverged')",
                "await tracker.aio.start_run('remote', 'async-one')",
            ],
            env,
        )
    finally:
        stop_server(server)
    errors = [c.error for c in cells[:6] if c.error]
    assert not errors, errors
    assert cells[1].stdout.split()[0] == "RemoteRun"
    uid = cells[1].stdout.split()[1]
    assert cells[3].stdout.strip() == "ParamConflict"
    sha, size = cells[4].stdout.split()
    assert sha == hashlib.sha256(weights.read_bytes()).hexdigest() and int(size) == weights.stat().st_size
    assert cells[5].stdout.strip() == "finished"
    assert cells[6].error["ename"] == "ValueError"

    run = Run.objects.get(uid=uid)
    assert run.status == "finished" and run.ended_at is not None
    assert run.params == {"opt.lr": 0.1, "batch": 32}
    assert run.tags == {"team": "vision", "stage": "warmup"}
    assert run.host and run.python_version  # the client's environment, sent by the client
    assert Metric.objects.filter(run=run, key="loss").count() == 20000
    assert list(Metric.objects.filter(run=run, key="loss").order_by("step").values_list("step", flat=True)[:3]) == [0, 1, 2]
    nan = Metric.objects.get(run=run, key="nan").value
    assert nan is None or nan != nan  # NULL on SQLite, NaN on PostgreSQL
    assert Metric.objects.get(run=run, key="inf").value == float("inf")
    assert MetricSummary.objects.get(run=run, key="loss").count == 20000
    art = Artifact.objects.get(run=run, name="model/weights.bin")
    assert art.sha256 == sha and art.size == weights.stat().st_size
    crashed = Run.objects.get(name="crashes")
    assert crashed.status == "failed" and "diverged" in crashed.error
    assert Metric.objects.filter(run=crashed).count() == 1
    assert Run.objects.filter(name="async-one").exists()


CLIENT = textwrap.dedent(
    """
    import sys, time, warnings, tracker
    warnings.simplefilter("always")
    tracker.configure(flush_interval=0.2)
    run = tracker.start_run("remote", "outage")
    print(run.id, flush=True)
    for step in range(3000):
        run.log_metric("loss", float(step))
        if step % 1000 == 999:
            time.sleep(1.0)
            print("logged", step + 1, flush=True)
            sys.stdin.readline()   # the test restarts the server here
    run.finish()
    print("finished", run.status, flush=True)
    """
)


def test_points_logged_while_the_server_is_down_are_sent_after_it_returns(subprocess_env):
    from tracker.models import Metric, Run

    key = _editor_key()
    server = start_server(subprocess_env)
    port = int(server.url.rsplit(":", 1)[1])
    env = _client_env(subprocess_env, server.url, key)
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        uid = client.stdout.readline().strip()
        line = client.stdout.readline().strip()
        if line != "logged 1000":
            client.kill()
            raise AssertionError(f"client: {uid!r} {line!r} {client.stderr.read()[-3000:]}")
        stop_server(server)  # the server goes away mid-run
        client.stdin.write("\n")
        client.stdin.flush()
        assert client.stdout.readline().strip() == "logged 2000"  # training went on
        server = start_server(subprocess_env, port=port)  # and comes back
        client.stdin.write("\n\n")
        client.stdin.flush()
        out, err = client.communicate(timeout=120)
    finally:
        if client.poll() is None:
            client.kill()
        stop_server(server)
    assert "finished finished" in out, (out, err)
    assert "cannot reach the tracker server" in err  # the user was told, once
    run = Run.objects.get(uid=uid)
    assert run.status == "finished"
    steps = list(Metric.objects.filter(run=run, key="loss").order_by("step").values_list("step", flat=True))
    assert steps == list(range(3000)), f"{len(steps)} points; missing {sorted(set(range(3000)) - set(steps))[:10]}"


def test_remote_errors_are_tracker_errors(subprocess_env):
    key = _editor_key()
    server = start_server(subprocess_env)
    script = textwrap.dedent(
        f"""
        import tracker
        tracker.configure()
        for project in ["remote", "not-mine-" + "x" * 3]:
            try:
                run = tracker.start_run(project, "r")
                print("ok", project)
            except tracker.TrackerError as e:
                print(type(e).__name__, str(e)[:80])
        """
    )
    try:
        env = _client_env(subprocess_env, server.url, key)
        from tracker.models import Project

        Project.objects.create(name="not-mine-xxx")
        ok = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
        env["TRACKER_TOKEN"] = "trk_wrong"
        bad = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    finally:
        stop_server(server)
    lines = ok.stdout.splitlines()
    assert lines[0] == "ok remote", ok.stderr
    assert lines[1].startswith("ProjectNotFound") or lines[1].startswith("NotFound"), lines
    assert bad.stdout.splitlines()[0].startswith("PermissionDenied"), bad.stdout + bad.stderr
    assert "rejected the token" in bad.stdout
