"""`tracker backup` / `tracker restore`: a consistent copy while writers are busy, restored and checked.

Backups are taken through the console script, as operators run them, from the test's own
database; restores go into a separate, fresh target (another SQLite home, or another PostgreSQL
database) so the copy is checked independently of the source.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from tracker.management.base import EXIT_FAILED, EXIT_USAGE

TRACKER = str(Path(sys.executable).with_name("tracker"))


def cli(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TRACKER, *args], env=env, capture_output=True, text=True, check=False, timeout=timeout)


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    return proc


@pytest.fixture
def restore_env(subprocess_env, tmp_path):
    """Environment for a process that uses a fresh, empty target: new home (and PG database)."""
    from django.db import connection

    env = dict(subprocess_env)
    env["TRACKER_HOME"] = str(tmp_path / "restored-home")
    if connection.vendor == "sqlite":
        env.pop("TRACKER_DATABASE_URL", None)
        yield env
        return
    import psycopg

    s = connection.settings_dict
    name = f"{s['NAME']}_restore"
    admin = {"dbname": "postgres", "host": s.get("HOST") or "127.0.0.1", "port": s.get("PORT") or 5432,
             "user": s.get("USER") or None, "password": s.get("PASSWORD") or None, "autocommit": True}
    admin = {k: v for k, v in admin.items() if v is not None}
    with psycopg.connect(**admin) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    env["TRACKER_DATABASE_URL"] = subprocess_env["TRACKER_DATABASE_URL"].rsplit("/", 1)[0] + "/" + name
    yield env
    with psycopg.connect(**admin) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# What a restored database is checked with, in its own process: per run, the committed points
# must form the prefix 0..n-1 of what the writer logged, and agree with the summary row.
INSPECT = """
    import json, tracker
    tracker.configure(quiet=True, migrate=False)
    from django.db import connection
    from tracker.models import Metric, MetricSummary, Run
    out = {"runs": {}, "vendor": connection.vendor}
    for run in Run.objects.filter(project__name="backup"):
        steps = sorted(Metric.objects.filter(run=run, key="x").values_list("step", flat=True))
        summary = MetricSummary.objects.filter(run=run, key="x").first()
        out["runs"][run.uid] = {
            "count": len(steps), "distinct": len(set(steps)),
            "min": steps[0] if steps else None, "max": steps[-1] if steps else None,
            "summary_count": summary.count if summary else 0,
            "summary_last_step": summary.last_step if summary else None,
        }
    with connection.cursor() as cur:
        if connection.vendor == "sqlite":
            cur.execute("PRAGMA integrity_check"); out["integrity"] = cur.fetchone()[0]
            cur.execute("PRAGMA foreign_key_check"); out["fk_violations"] = len(cur.fetchall())
        else:
            cur.execute("SELECT count(*) FROM tracker_metric m LEFT JOIN tracker_run r ON r.id = m.run_id "
                        "WHERE r.id IS NULL")
            out["fk_violations"] = cur.fetchone()[0]
            out["integrity"] = "ok"
    print(json.dumps(out))
"""

WRITER = """
    import os, sys, time, tracker
    tracker.configure(quiet=True, flush_interval=0.2)
    with tracker.start_run(project="backup", name=os.environ["WRITER"]) as run:
        print(run.id, flush=True)
        step = 0
        # Logs until the test says stop (after its backup), so a slow machine cannot end the
        # writes before the backup runs; the deadline only bounds a test that died.
        deadline = time.monotonic() + 600
        while not os.path.exists(os.environ["STOP"]) and time.monotonic() < deadline:
            for _ in range(500):
                run.log_metric("x", float(step), step=step)
                step += 1
            time.sleep(0.05)
    print(step, flush=True)
"""


def _committed(run_ids: list[str]) -> dict[str, int]:
    from tracker.models import Metric

    return {uid: Metric.objects.filter(run__uid=uid, key="x").count() for uid in run_ids}


def test_backup_while_four_processes_log_metrics_restores_every_committed_point(
    subprocess_env, restore_env, tmp_path
):
    stop = tmp_path / "stop"
    env = dict(subprocess_env, STOP=str(stop))
    writers = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER)], env=dict(env, WRITER=f"w{n}"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in range(4)
    ]
    try:
        run_ids = [w.stdout.readline().strip() for w in writers]
        assert all(len(uid) == 16 for uid in run_ids), run_ids
        deadline = time.monotonic() + 60
        while min(_committed(run_ids).values()) < 2000:
            assert time.monotonic() < deadline, "writers did not commit points"
            time.sleep(0.2)
        before = _committed(run_ids)
        archive = tmp_path / "during-writes.tar.gz"
        proc = ok(cli(["backup", str(archive), "--json"], subprocess_env))
        still_writing = [w.poll() is None for w in writers]
        time.sleep(1)  # one more flush interval or so of writes after the backup
        after_backup = _committed(run_ids)
    finally:
        stop.touch()
        outs = [w.communicate(timeout=120) for w in writers]
    assert [w.returncode for w in writers] == [0, 0, 0, 0], outs
    assert all(still_writing), "the backup must be taken while the writers are still logging"
    assert all(after_backup[u] > before[u] for u in run_ids), (before, after_backup)
    logged = {uid: int(out.split()[-1]) for uid, (out, _) in zip(run_ids, outs)}
    final = _committed(run_ids)
    assert final == logged  # the writers lost nothing either
    manifest = json.loads(proc.stdout)
    assert manifest["counts"]["tracker_run"] >= 4

    restored = ok(cli(["restore", str(archive), "--json"], restore_env))
    report = json.loads(restored.stdout)
    assert "table counts match the backup" in report["checks"]
    inspect = subprocess.run([sys.executable, "-c", textwrap.dedent(INSPECT)], env=restore_env,
                             capture_output=True, text=True, check=False, timeout=120)
    assert inspect.returncode == 0, inspect.stderr
    got = json.loads(inspect.stdout)
    assert got["integrity"] == "ok" and got["fk_violations"] == 0
    assert set(got["runs"]) == set(run_ids)
    for uid in run_ids:
        r = got["runs"][uid]
        # every point committed before the backup started is there ...
        assert before[uid] <= r["count"] <= final[uid], (uid, before[uid], r, final[uid])
        # ... as one consistent prefix: no gaps, no duplicates, summaries agree with the points
        assert (r["min"], r["max"], r["distinct"]) == (0, r["count"] - 1, r["count"]), r
        assert (r["summary_count"], r["summary_last_step"]) == (r["count"], r["count"] - 1), r
    assert sum(r["count"] for r in got["runs"].values()) == report["counts"]["tracker_metric"]


def test_backup_and_restore_carry_artifacts_and_dataset_snapshots(transactional_db, subprocess_env, restore_env, tmp_path):
    import tracker
    from tracker.models import Run, Sample
    from tracker.services import artifacts

    run = Run.objects.create(project=_project("art"), name="r")
    payload = os.urandom(300_000)
    info = artifacts.log_artifact(run, payload, "weights.bin")[0]
    tracker.add_samples("art", [{"id": str(i), "v": i} for i in range(25)])
    version = tracker.create_dataset("art-ds", Sample.objects.filter(project__name="art"), splits={"a": 0.5, "b": 0.5})
    archive = tmp_path / "full.tar"
    ok(cli(["backup", str(archive)], subprocess_env))
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert f"tracker-backup/files/{info.storage_name}" in names
    assert f"tracker-backup/files/{version._info.snapshot_name}" in names

    out = ok(cli(["restore", str(archive)], restore_env)).stdout
    assert "Restored." in out and "every blob is in storage" in out
    check = f"""
        import hashlib, tracker
        tracker.configure(quiet=True, migrate=False)
        from tracker.models import Run
        from tracker.services import artifacts
        a = artifacts.get_artifact(Run.objects.get(uid={run.uid!r}), "weights.bin")
        print(hashlib.sha256(artifacts.read_artifact(a)).hexdigest())
        v = tracker.get_dataset("art-ds", 1)
        print(len(v.to_pandas()), v.content_hash)
    """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(check)], env=restore_env,
                          capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    sha, rest = proc.stdout.strip().split("\n")
    assert sha == hashlib.sha256(payload).hexdigest()
    assert rest.split() == ["25", version.content_hash]
    # the restored home's storage holds its own copy of the files
    assert (Path(restore_env["TRACKER_HOME"]) / "files" / info.storage_name).read_bytes() == payload


def _project(name):
    from tracker.models import Project

    return Project.objects.get_or_create(name=name)[0]


def test_restore_refuses_a_database_with_data(transactional_db, subprocess_env, tmp_path):
    from tracker.models import Project

    Project.objects.create(name="precious")
    archive = tmp_path / "b.tar"
    ok(cli(["backup", str(archive)], subprocess_env))
    proc = cli(["restore", str(archive)], subprocess_env)
    assert proc.returncode == EXIT_FAILED
    assert proc.stderr.count("\n") == 1 and "--force" in proc.stderr and "Traceback" not in proc.stderr
    assert Project.objects.filter(name="precious").exists()


def test_restore_rejects_what_is_not_a_backup(db, tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all")
    for path in (junk, tmp_path / "missing.tar"):
        with pytest.raises(CommandError) as info:
            call_command("tracker_restore", str(path), stdout=io.StringIO())
        assert info.value.returncode == EXIT_USAGE


def test_restore_of_a_damaged_archive_changes_nothing(transactional_db, subprocess_env, restore_env, tmp_path):
    from tracker.models import Run
    from tracker.services import artifacts

    run = Run.objects.create(project=_project("dmg"), name="r")
    info = artifacts.log_artifact(run, b"original bytes" * 1000, "a.bin")[0]
    good = tmp_path / "good.tar"
    ok(cli(["backup", str(good)], subprocess_env))
    bad = tmp_path / "bad.tar"
    with tarfile.open(good) as src, tarfile.open(bad, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name.endswith(info.storage_name):
                data = data.replace(b"original", b"tampered")
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    proc = cli(["restore", str(bad)], restore_env)
    assert proc.returncode == EXIT_FAILED, proc.stderr
    assert "does not match its sha256" in proc.stderr and proc.stderr.count("\n") == 1
    empty = cli(["runs", "--json"], restore_env)
    assert empty.returncode == 0 and json.loads(empty.stdout) == []


def test_backup_bad_input_and_missing_files(transactional_db, subprocess_env, tmp_path):
    from django.core.files.storage import default_storage

    from tracker.models import Run
    from tracker.services import artifacts

    existing = tmp_path / "there.tar"
    existing.write_text("keep")
    proc = cli(["backup", str(existing)], subprocess_env)
    assert proc.returncode == EXIT_USAGE and "--force" in proc.stderr
    assert existing.read_text() == "keep"
    proc = cli(["backup", str(tmp_path / "backup.zip")], subprocess_env)
    assert proc.returncode == EXIT_USAGE and ".tar" in proc.stderr
    proc = cli(["backup", str(tmp_path / "no-such-dir" / "b.tar")], subprocess_env)
    assert proc.returncode == EXIT_USAGE

    run = Run.objects.create(project=_project("gone"), name="r")
    info = artifacts.log_artifact(run, b"soon lost", "lost.bin")[0]
    default_storage.delete(info.storage_name)
    proc = cli(["backup", str(tmp_path / "incomplete.tar")], subprocess_env)
    assert proc.returncode == EXIT_FAILED and "missing from storage" in proc.stderr
    assert not (tmp_path / "incomplete.tar").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".incomplete", "tracker-backup-"))]


@pytest.mark.postgres_only
def test_restore_refuses_a_backup_of_another_database_kind(db, tmp_path):
    env = dict(os.environ, TRACKER_HOME=str(tmp_path / "sqlite-home"))
    env.pop("TRACKER_DATABASE_URL", None)
    archive = tmp_path / "sqlite.tar"
    ok(cli(["init"], env))
    ok(cli(["backup", str(archive)], env))
    with pytest.raises(CommandError) as info:
        call_command("tracker_restore", str(archive), stdout=io.StringIO())
    assert info.value.returncode == EXIT_USAGE and "sqlite" in str(info.value)


RESTORED_COPY = """
    import json, tracker
    tracker.configure(quiet=True, migrate=False)
    from tracker.models import Metric, Run
    from tracker.services import access
    run = Run.objects.get(name="copied")
    points = sorted(Metric.objects.filter(run=run).values_list("step", "value"))
    user, _ = access.authenticate_token(__import__("os").environ["KEY"])
    # identity sequences continue after the copied rows: new rows get new ids
    Run.objects.create(project=run.project, name="after-restore")
    Metric.objects.create(run=run, key="m", step=0, value=1.0, timestamp=0.0)
    print(json.dumps({"params": run.params, "points": points, "user": user.username,
                      "runs": Run.objects.count()}))
"""


@pytest.mark.postgres_only
def test_copy_method_needs_no_client_tools(transactional_db, subprocess_env, restore_env, tmp_path):
    from tracker.services import access

    with tracker_run("copied", {"lr": 0.5, "nested": {"a": [1, 2]}}) as r:
        for step in range(100):
            r.log_metric("loss", step / 10, step=step)
    tracker_frame()  # writes what this process's flusher holds, for the backup process to see
    key = access.create_token(access.create_user("eve"), name="t")[1]
    # no pg_dump or pg_restore on PATH: auto picks the COPY method both ways
    bare = str(Path(sys.executable).parent)
    archive = tmp_path / "copy.tar.gz"
    made = json.loads(ok(cli(["backup", str(archive), "--json"], dict(subprocess_env, PATH=bare))).stdout)
    assert made["database_format"] == "pg_copy"
    ok(cli(["restore", str(archive)], dict(restore_env, PATH=bare)))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(RESTORED_COPY)], env=dict(restore_env, KEY=key),
                          capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["params"] == {"lr": 0.5, "nested.a": [1, 2]}
    assert got["points"] == [[s, s / 10] for s in range(100)]
    assert got["user"] == "eve" and got["runs"] == 2
    # --force replaces a database holding data, in one transaction
    again = json.loads(ok(cli(["restore", str(archive), "--force", "--json"], dict(restore_env, PATH=bare))).stdout)
    assert again["counts"]["tracker_run"] == 1


def tracker_run(name, params):
    import tracker

    return tracker.start_run(project="copy", name=name, params=params)


def tracker_frame():
    import tracker

    return tracker.runs_frame(project="copy")
