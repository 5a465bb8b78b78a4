"""Faults for real (issue 8): a PostgreSQL server restarted under a run, a SQLite directory that
refuses writes, SIGKILL mid-upload and mid-dataset-version, a full disk, numbers too big.

The servers, mounts and kills are real: the test starts its own PostgreSQL with initdb/pg_ctl,
makes files immutable with chattr (the tests run as root, which ignores permission bits), and
mounts a small tmpfs as the artifact storage. docs/FAULTS.md maps each test to issue 8.
"""

from __future__ import annotations

import glob
import io
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from support import ROOT
from processes import start_python
from test_runs_support import _runs_isolated, wait_for  # noqa: F401

import tracker
from tracker.exceptions import InvalidValue, StorageError

# -- a writer that logs until told to stop ------------------------------------------------------
# It prints its run id, logs one point per step until the file <FAULT_CTL>/stop exists, then
# finishes the run and prints how many points it logged. Warnings go to stderr as users see them.
WRITER = """
import os, time, warnings
warnings.simplefilter("default")
import tracker
tracker.configure(quiet=True, flush_interval=0.2)
stop = os.path.join(os.environ["FAULT_CTL"], "stop")
run = tracker.start_run("faults", "writer")
print(run.id, flush=True)
i = 0
while not os.path.exists(stop):
    run.log_metric("x", float(i), step=i)
    i += 1
    time.sleep(0.002)
run.finish()
print(i, flush=True)
"""


def _child_env(db_url: str, home: Path, ctl: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in (
        "DJANGO_SETTINGS_MODULE",
        "DJANGO_ALLOW_ASYNC_UNSAFE",
        "TRACKER_TEST_DATABASE_URL",
    ):
        env.pop(name, None)
    env["TRACKER_DATABASE_URL"] = db_url
    env["TRACKER_HOME"] = str(home)
    env["FAULT_CTL"] = str(ctl)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def _finish_writer(proc: subprocess.Popen[str], ctl: Path) -> tuple[int, str]:
    (ctl / "stop").touch()
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, f"writer exited {proc.returncode}\n{out}\n{err}"
    return int(out.split()[-1]), err


# -- PostgreSQL restarted in the middle of a run --------------------------------------------------
def _pg_bin() -> Path:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4])
    )
    found = found or list(filter(None, [shutil.which("pg_ctl")]))
    assert found, "PostgreSQL server binaries (initdb, pg_ctl) are needed for this test"
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnPostgres:
    """A throwaway PostgreSQL cluster on a free port, run as the postgres OS user when root."""

    def __init__(self) -> None:
        self.bin = _pg_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="tracker-faults-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self.prefix: list[str] = []
        if os.geteuid() == 0:  # postgres refuses to run as root
            shutil.chown(self.dir, "postgres", "postgres")
            self.prefix = ["runuser", "-u", "postgres", "--"]
        self._pg("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()
        self.psql("CREATE DATABASE tracker")
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/tracker"

    def _pg(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self.prefix, str(self.bin / tool), *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg(
            "pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def psql(self, sql: str, db: str = "postgres") -> list[tuple]:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname=db, autocommit=True
        ) as conn:
            cur = conn.execute(sql)
            return cur.fetchall() if cur.description else []

    def close(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # already down
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def own_postgres():
    server = OwnPostgres()
    yield server
    server.close()


POINTS_SQL = (
    "SELECT count(*), count(DISTINCT m.step), min(m.step), max(m.step), max(r.status) "
    "FROM tracker_run r LEFT JOIN tracker_metric m ON m.run_id = r.id WHERE r.uid = '{uid}'"
)


@pytest.mark.slow
def test_postgres_restarted_mid_run_buffered_points_land_and_the_run_goes_on(
    own_postgres, tmp_path
):
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    env = _child_env(own_postgres.url, tmp_path / "home", ctl)
    proc = start_python(WRITER, env)
    try:
        run_id = proc.stdout.readline().strip()
        assert run_id, proc.stderr.read()

        def stored() -> int:
            return own_postgres.psql(POINTS_SQL.format(uid=run_id), db="tracker")[0][0]

        wait_for(lambda: stored() > 200, timeout=60)
        own_postgres.stop()
        time.sleep(2.0)  # the loop keeps logging against a server that is gone
        assert proc.poll() is None, proc.communicate()
        own_postgres.start()
        before_end = stored()
        wait_for(lambda: stored() > before_end + 200, timeout=60)  # writing resumed
        logged, err = _finish_writer(proc, ctl)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    count, distinct, low, high, status = own_postgres.psql(
        POINTS_SQL.format(uid=run_id), db="tracker"
    )[0]
    assert (count, distinct, low, high) == (logged, logged, 0, logged - 1)  # each point once
    assert status == "finished"
    assert "kept in memory and retried" in err, err
    assert "reachable again" in err, err
    assert "Traceback" not in err, err


# -- the SQLite file's directory refuses writes ----------------------------------------------------
def _chattr(flag: str, paths: list[Path]) -> None:
    subprocess.run(["chattr", flag, *map(str, paths)], check=True, capture_output=True)


@pytest.mark.slow
def test_sqlite_directory_made_read_only_keeps_points_for_retry(tmp_path):
    home, ctl = tmp_path / "home", tmp_path / "ctl"
    home.mkdir()
    ctl.mkdir()
    db = home / "tracker.sqlite3"
    proc = start_python(WRITER, _child_env(f"sqlite:///{db}", home, ctl))
    frozen: list[Path] = []
    try:
        run_id = proc.stdout.readline().strip()
        assert run_id, proc.stderr.read()
        wait_for(lambda: db.exists() and _sqlite_points(db, run_id)[0] > 200, timeout=60)
        # The directory and the database files become immutable: root cannot write them
        # either. The WAL index (-shm) stays writable: it is memory-mapped, and an immutable
        # mapping kills the process with SIGBUS rather than refusing a write.
        frozen = [home, *(p for p in home.iterdir() if not p.name.endswith("-shm"))]
        _chattr("+i", frozen)
        refused = _sqlite_write_refused(db)
        time.sleep(2.0)
        assert proc.poll() is None, proc.communicate()
        _chattr("-i", frozen)
        frozen = []
        before_end = _sqlite_points(db, run_id)[0]
        wait_for(lambda: _sqlite_points(db, run_id)[0] > before_end + 200, timeout=60)
        logged, err = _finish_writer(proc, ctl)
    finally:
        if frozen:
            _chattr("-i", frozen)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert refused, "chattr +i did not stop writes; the test proves nothing on this file system"
    count, distinct, low, high, status = _sqlite_points(db, run_id)
    assert (count, distinct, low, high) == (logged, logged, 0, logged - 1)
    assert status == "finished"
    # What the user saw while the directory refused writes: SQLite's reason and what happens.
    assert "metric points are kept in memory and retried" in err, err
    assert "readonly database" in err or "disk I/O error" in err, err
    assert "reachable again" in err, err


def _sqlite_points(db: Path, run_id: str) -> tuple:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute(POINTS_SQL.format(uid=run_id)).fetchone()
    except sqlite3.OperationalError:
        return (0, 0, None, None, None)  # tables not created yet
    finally:
        conn.close()


def _sqlite_write_refused(db: Path) -> bool:
    conn = sqlite3.connect(db, timeout=1)
    try:
        conn.execute("CREATE TABLE fault_probe (x)")
        conn.execute("DROP TABLE fault_probe")
        conn.commit()
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        conn.close()


# -- SIGKILL in the middle of an artifact upload -------------------------------------------------
UPLOADER = """
import io, time
import tracker
tracker.configure(quiet=True)

class Slow(io.RawIOBase):
    # A stream (not seekable, so it is stored while it is read) that trickles 50 MB.
    left = 50_000_000
    def readable(self):
        return True
    def readinto(self, b):
        n = min(len(b), self.left, 64 * 1024)
        b[:n] = b"y" * n
        self.left -= n
        time.sleep(0.01)
        return n

run = tracker.start_run("faults", "upload")
run.log_artifact(b"kept", name="before.txt")
print(run.id, flush=True)
run.log_artifact(Slow(), name="big.bin")
print("finished the upload: the test was too slow to kill it", flush=True)
"""


def _files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_sigkill_during_an_artifact_upload_leaves_no_partial_artifact(subprocess_env, tracker_home):
    from django.core.files.storage import default_storage

    from tracker import conf
    from tracker.models import Artifact, Blob

    root = Path(default_storage.path(""))
    tmp_dir = root / str(conf.get("BLOB_PREFIX")).strip("/") / "tmp"
    blobs_before = set(Blob.objects.values_list("sha256", flat=True))
    proc = start_python(UPLOADER, subprocess_env)
    try:
        run_id = proc.stdout.readline().strip()
        assert run_id, proc.stderr.read()
        files_before = _files_under(root)
        # Kill once a few MB of the upload are on disk.
        wait_for(
            lambda: (
                tmp_dir.is_dir()
                and any(p.stat().st_size > 2_000_000 for p in tmp_dir.iterdir() if p.is_file())
            ),
            timeout=60,
        )
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        out, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, (out, err)
    run = tracker.get_run(run_id)
    assert [a.name for a in run.artifacts()] == ["before.txt"]
    assert run.artifact("before.txt").read_bytes() == b"kept"
    assert not Artifact.objects.filter(run__uid=run_id, name="big.bin").exists()
    new_blobs = set(Blob.objects.values_list("sha256", flat=True)) - blobs_before
    assert len(new_blobs) <= 1  # before.txt's blob at most (it may have existed already)
    # The only new file is the killed upload's temporary file: never a blob at a content
    # address, so nothing can point at it, and `tracker gc` removes it once it is old.
    leftovers = _files_under(root) - files_before
    assert all(name.startswith(str(tmp_dir.relative_to(root))) for name in leftovers), leftovers
    for name in leftovers:
        (root / name).unlink()


# -- SIGKILL in the middle of a dataset version ------------------------------------------------------
VERSIONER = """
import time
import tracker
tracker.configure(quiet=True)
from tracker.services import datasets as core
tracker.import_samples("faultds", [{"id": f"s{i:04d}", "n": i} for i in range(400)])
samples = tracker.get_project("faultds").samples
tracker.create_dataset("killed", samples.filter(data__n__lt=100))
real = core._write_items

def half_then_hang(version, frozen):
    frozen.ids = frozen.ids[: len(frozen.ids) // 2]
    real(version, frozen)  # half the membership rows are committed...
    print("half", flush=True)
    time.sleep(300)  # ...and the process is killed here

core._write_items = half_then_hang
tracker.create_dataset("killed", samples.all())
"""


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_sigkill_during_dataset_version_creation_leaves_no_half_made_version(subprocess_env):
    import datetime as dt

    from django.utils import timezone

    from tracker.exceptions import DatasetNotFound
    from tracker.models import DatasetItem, DatasetVersion

    proc = start_python(VERSIONER, subprocess_env)
    try:
        line = proc.stdout.readline().strip()
        assert line == "half", proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    building = DatasetVersion.objects.get(dataset__name="killed", version=2)
    assert building.state == DatasetVersion.State.BUILDING  # what the kill left behind
    assert DatasetItem.objects.filter(version=building).count() == 200
    # It is never returned: the latest version is still 1, everywhere a user looks.
    assert tracker.get_dataset("killed").version == 1
    assert tracker.dataset_versions("killed")["version"].tolist() == [1]
    assert tracker.datasets().set_index("name").loc["killed", "latest_version"] == 1
    with pytest.raises(DatasetNotFound):
        tracker.get_dataset("killed", version=2)
    # Once it is old enough to be surely dead, the next creation removes it and reuses its number.
    DatasetVersion.objects.filter(pk=building.pk).update(
        created_at=timezone.now() - dt.timedelta(hours=2)
    )
    samples = tracker.get_project("faultds").samples.all()
    again = tracker.create_dataset("killed", samples)
    assert again.version == 2 and len(again.to_pandas()) == 400
    assert not DatasetVersion.objects.filter(pk=building.pk).exists()
    assert not DatasetItem.objects.filter(version_id=building.pk).exists()


# -- disk full while an artifact is written ---------------------------------------------------
@pytest.fixture
def small_disk(tmp_path, settings):
    """A 2 MB tmpfs as the artifact storage (the tests run as root, so mount works)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    try:
        settings.STORAGES = {
            **settings.STORAGES,
            "default": {
                "BACKEND": "django.core.files.storage.FileSystemStorage",
                "OPTIONS": {"location": str(mnt)},
            },
        }
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.django_db
def test_disk_full_while_writing_an_artifact_is_a_clear_error_and_the_run_goes_on(small_disk):
    from tracker.models import Artifact

    run = tracker.start_run("faults", "disk-full")
    run.log_metric("x", 0.0, step=0)
    run.log_artifact(b"small before", name="before.txt")
    before = _files_under(small_disk)
    with pytest.raises(StorageError) as err:
        run.log_artifact(io.BytesIO(os.urandom(5_000_000)), name="weights.bin")
    message = str(err.value)
    assert "Could not store artifact 'weights.bin'" in message
    assert "No space left on device" in message and "has space" in message
    assert not Artifact.objects.filter(run__uid=run.id, name="weights.bin").exists()
    assert _files_under(small_disk) == before  # no partial blob, no temporary file
    # The run goes on: more metrics, a small artifact, a normal finish.
    run.log_metric("x", 1.0, step=1)
    assert run.log_artifact(b"small after", name="after.txt").read_bytes() == b"small after"
    run.finish()
    assert sorted(a.name for a in run.artifacts()) == ["after.txt", "before.txt"]
    assert run.history()["x"].tolist() == [0.0, 1.0]
    assert tracker.get_run(run.id).status == "finished"


# -- numbers too large for a float -------------------------------------------------------------
@pytest.mark.django_db
def test_a_metric_too_large_for_a_float_is_refused_clearly():
    from fractions import Fraction

    run = tracker.start_run("faults", "huge")
    run.log_metric("x", 1.0, step=0)
    for value in (10**400, Fraction(10**400, 3)):
        with pytest.raises(InvalidValue, match="too large for a float"):
            run.log_metric("x", value)
        with pytest.raises(InvalidValue, match="too large for a float"):
            run.log_metrics({"ok": 1.0, "x": value})
    run.log_metric("x", 10**300, step=1)  # big, but a float
    run.finish()
    assert run.history()["x"].tolist() == [1.0, 1e300]
