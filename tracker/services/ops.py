"""Operations: environment checks (doctor), setup (init), backup and restore, artifact blob gc.

Backups are one tar archive holding a consistent snapshot of the database and the storage
files that snapshot references (artifact and dataset blobs, sample media)::

    tracker-backup/manifest.json      what is inside: vendor, table counts, files with sha256
    tracker-backup/database.sqlite3   (SQLite) made with SQLite's online backup API
    tracker-backup/database.pgdump    (PostgreSQL) pg_dump custom format
    tracker-backup/files/<name>       storage files, under their storage names

The snapshot is consistent while writers are active: SQLite's backup API copies the database
in one step inside one read transaction (WAL lets writers go on); on PostgreSQL a REPEATABLE
READ transaction exports its snapshot, ``pg_dump --snapshot`` dumps exactly that state and the
file list is read in the same transaction. Files are content-addressed and never rewritten, so
copying them after the snapshot is safe, and ``gc`` cannot remove them meanwhile: backup and gc
exclude each other through a maintenance lock.

``gc`` removes blobs that no run artifact and no dataset version references. It never deletes a
referenced blob, even against a concurrent upload: blobs younger than the grace period are
left alone (an upload stores its blob before the row that references it); each deletion runs
in a transaction that locks the blob rows and checks the references again; and because the
database's foreign keys are checked at commit, an upload that picked a blob just before gc
removed it fails with an integrity error instead of committing a dangling reference.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from django.db import connection, connections, transaction
from django.utils import timezone

from tracker import conf
from tracker.exceptions import ConfigurationError, Conflict, InvalidValue, StorageError

BACKUP_FORMAT = 1
ARCHIVE_ROOT = "tracker-backup"
# Tables whose rows a backup counts and a restore compares; the rest come along unchecked.
COUNTED_TABLES = (
    "auth_user",
    "tracker_project",
    "tracker_sample",
    "tracker_run",
    "tracker_metric",
    "tracker_metric_summary",
    "tracker_blob",
    "tracker_artifact",
    "tracker_dataset",
    "tracker_dataset_version",
    "tracker_dataset_item",
    "tracker_annotation_task",
    "tracker_annotation",
    "tracker_annotation_event",
    "tracker_prediction",
    "tracker_api_token",
)
# Tables that make a database "not empty" for restore (auto-migration alone creates none).
CONTENT_TABLES = ("tracker_project", "tracker_run", "tracker_sample", "tracker_blob", "auth_user")
DEFAULT_GC_GRACE = 3600.0
GC_CHUNK = 500
_ADVISORY_KEY = 0x7472_6F70  # "trop": tracker operations
PG_TOOLS_TIMEOUT = 24 * 3600

Progress = Callable[..., Any]


# ================================================================================ database info


def database_summary(using: str = "default") -> dict[str, Any]:
    """Where the database is, without secrets: vendor, name or path, host."""
    db = connections[using].settings_dict
    engine = db.get("ENGINE", "")
    if engine.endswith("sqlite3"):
        return {"vendor": "sqlite", "path": str(db["NAME"]), "url": f"sqlite:///{db['NAME']}"}
    if "postgresql" in engine:
        host = db.get("HOST") or "localhost"
        port = db.get("PORT") or 5432
        user = db.get("USER") or ""
        auth = f"{user}:***@" if db.get("PASSWORD") else (f"{user}@" if user else "")
        return {
            "vendor": "postgresql",
            "name": db["NAME"],
            "host": f"{host}:{port}",
            "url": f"postgres://{auth}{host}:{port}/{db['NAME']}",
        }
    return {"vendor": engine.rsplit(".", 1)[-1], "name": str(db.get("NAME")), "url": ""}


def storage_summary() -> dict[str, Any]:
    from django.core.files.storage import storages

    storage = storages["default"]
    out: dict[str, Any] = {"backend": f"{type(storage).__module__}.{type(storage).__name__}"}
    location = getattr(storage, "location", None)
    if location:
        out["location"] = str(location)
    return out


# ===================================================================================== init


def initialize() -> dict[str, Any]:
    """Create what a tracker home needs (database schema, storage directory) and say where.

    Returns:
        ``home``, ``database`` (vendor, path or URL without password), ``storage``,
        ``migrations_applied`` (names applied now) and ``created`` (True when the database
        had no tracker tables before).

    Raises:
        StorageError: the storage directory cannot be created.
        django.db.OperationalError: the database cannot be reached.
    """
    from django.core.files.storage import default_storage

    from tracker.configuration import ensure_migrated, pending_migrations

    home = conf.get("HOME")
    pending = pending_migrations()
    created = "tracker.0001_initial" in pending
    ensure_migrated()
    location = getattr(default_storage, "location", None)
    if location:
        try:
            Path(location).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"Cannot create the storage directory {location} ({exc.strerror}); make its parent "
                f"writable or configure another storage."
            ) from None
    return {
        "home": str(home) if home else None,
        "database": database_summary(),
        "storage": storage_summary(),
        "migrations_applied": pending,
        "created": created,
    }


# =================================================================================== doctor


@dataclass
class Check:
    """One doctor check: ``status`` is ok, warn (works, could be better), fail or skip."""

    name: str
    status: str
    detail: str
    fix: str = ""


def doctor(*, kernel: bool = True) -> list[Check]:
    """Check settings, database, migrations, storage, disk space and Jupyter kernels.

    Every failing check names a fix. Nothing is changed, except a probe file written to and
    removed from the storage.
    """
    checks = [_check_settings()]
    db = _check_database()
    checks.append(db)
    if db.status == "fail":
        checks.append(Check("migrations", "skip", "not checked: the database cannot be reached"))
    else:
        checks.append(_check_migrations())
    checks.append(_check_storage())
    checks.append(_check_disk())
    if kernel:
        checks.append(_check_kernel())
    if conf.get("SERVER_URL"):
        checks.append(_check_server(str(conf.get("SERVER_URL"))))
    return checks


def _check_settings() -> Check:
    from django.core import checks as django_checks

    home = conf.get("HOME")
    problems = []
    for msg in django_checks.run_checks(include_deployment_checks=False):
        if msg.level >= django_checks.WARNING and not msg.is_silenced():
            hint = f" ({msg.hint})" if msg.hint else ""
            problems.append((msg.level >= django_checks.ERROR, f"{msg.id}: {msg.msg}{hint}"))
    if home and not os.access(home, os.W_OK):
        problems.append((True, f"the tracker home {home} is not writable"))
    detail = f"home {home}" if home else "settings from the host Django project"
    if any(err for err, _ in problems):
        return Check(
            "settings",
            "fail",
            "; ".join(text for _, text in problems),
            "Correct the TRACKER settings named above (or configure(...) arguments); make the "
            "home writable or set TRACKER_HOME to a writable directory.",
        )
    if problems:
        return Check("settings", "warn", "; ".join(t for _, t in problems), "See the hints above.")
    return Check("settings", "ok", detail)


def _check_database() -> Check:
    info = database_summary()
    where = info.get("path") or info.get("url")
    try:
        connection.ensure_connection()
        with connection.cursor() as cur:
            if connection.vendor == "sqlite":
                cur.execute("PRAGMA journal_mode")
                mode = cur.fetchone()[0]
                version = sqlite3.sqlite_version
                extra = f", journal {mode}"
            else:
                cur.execute("SHOW server_version")
                version = cur.fetchone()[0]
                extra = ""
    except Exception as exc:
        first = " ".join(str(exc).split())[:300]
        if info["vendor"] == "sqlite":
            fix = (
                f"Make the directory of {info['path']} writable, or point TRACKER_HOME at a "
                f"writable directory; run `tracker init` to create the database."
            )
        else:
            fix = (
                "Check that the server is running and that TRACKER_DATABASE_URL has the right "
                "host, port, user, password and database name (create it with `createdb NAME`)."
            )
        return Check("database", "fail", f"cannot connect to {where}: {first}", fix)
    detail = f"{info['vendor']} {version} at {where}{extra}"
    if connection.vendor == "sqlite" and str(mode).lower() != "wal":
        return Check(
            "database",
            "warn",
            detail,
            "Use tracker.configuration.sqlite_database(path) for the DATABASES entry so SQLite "
            "runs in WAL mode (readers do not block writers).",
        )
    return Check("database", "ok", detail)


def _check_migrations() -> Check:
    from django.db.migrations.loader import MigrationLoader

    from tracker.configuration import pending_migrations

    try:
        loader = MigrationLoader(connection, ignore_no_migrations=True)
        conflicts = loader.detect_conflicts()
        pending = pending_migrations()
    except Exception as exc:
        return Check("migrations", "fail", f"cannot read the migration state: {exc}", "Run `tracker init`.")
    if conflicts:
        names = "; ".join(f"{app}: {', '.join(sorted(m))}" for app, m in conflicts.items())
        return Check(
            "migrations",
            "fail",
            f"conflicting migrations ({names})",
            "Merge them: python manage.py makemigrations tracker --merge.",
        )
    if pending:
        shown = ", ".join(pending[:5]) + (f" and {len(pending) - 5} more" if len(pending) > 5 else "")
        return Check(
            "migrations",
            "fail",
            f"{len(pending)} not applied: {shown}",
            "Run `tracker init` (or `python manage.py migrate`); tracker also applies them "
            "when a program calls tracker.configure().",
        )
    return Check("migrations", "ok", "all applied")


def _check_storage() -> Check:
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    info = storage_summary()
    where = info.get("location") or info["backend"]
    payload = os.urandom(16).hex().encode()
    name = f"tracker-doctor/probe-{os.getpid()}-{payload[:8].decode()}"
    try:
        saved = default_storage.save(name, ContentFile(payload))
        try:
            with default_storage.open(saved, "rb") as fh:
                back = fh.read()
        finally:
            default_storage.delete(saved)
        with contextlib.suppress(OSError):
            if info.get("location"):
                Path(info["location"], "tracker-doctor").rmdir()
    except Exception as exc:
        return Check(
            "storage",
            "fail",
            f"cannot write to {where}: {' '.join(str(exc).split())[:300]}",
            "Make the storage location writable (or fix STORAGES['default'] / "
            "configure(storage=...)); artifacts and dataset snapshots are stored there.",
        )
    if back != payload:
        return Check("storage", "fail", f"{where} returned other bytes than were written", "Check the storage backend.")
    return Check("storage", "ok", f"{where} is writable")


def _check_disk() -> Check:
    from django.core.files.storage import default_storage

    candidates = [getattr(default_storage, "location", None)]
    if connection.vendor == "sqlite":
        candidates.append(os.path.dirname(str(connection.settings_dict["NAME"])))
    paths = []
    for c in candidates:
        p = Path(c) if c else None
        while p is not None and not p.exists() and p != p.parent:
            p = p.parent
        if p is not None and str(p) not in paths:
            paths.append(str(p))
    if not paths:
        return Check("disk", "skip", "remote storage and database: no local disk to check")
    low = []
    parts = []
    for p in paths:
        free = shutil.disk_usage(p).free
        parts.append(f"{free / 1024**3:.1f} GB free at {p}")
        if free < 1024**3:
            low.append(p)
    if low:
        return Check("disk", "warn", "; ".join(parts), f"Free space under {', '.join(low)} (less than 1 GB left).")
    return Check("disk", "ok", "; ".join(parts))


def _same_interpreter(exe: str) -> bool:
    try:
        return os.path.samefile(exe, sys.executable)
    except OSError:
        return False


def _check_kernel() -> Check:
    try:
        import ipykernel
    except ImportError:
        return Check(
            "kernel",
            "fail",
            f"ipykernel is not importable by {sys.executable}",
            f"{sys.executable} -m pip install ipykernel",
        )
    fix = (
        f"Register this interpreter as a kernel: {sys.executable} -m ipykernel install --user "
        f"--name tracker --display-name 'Python (tracker)', then pick that kernel in Jupyter."
    )
    try:
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

        manager = KernelSpecManager()
        try:
            spec = manager.get_kernel_spec("python3")
        except NoSuchKernel:
            return Check("kernel", "warn", f"ipykernel {ipykernel.__version__}; no python3 kernelspec found", fix)
        specs = manager.find_kernel_specs()
    except Exception as exc:  # a broken jupyter installation
        return Check("kernel", "warn", f"cannot read kernelspecs: {exc}", fix)
    exe = spec.argv[0] if spec.argv else ""
    ours = [
        name for name, d in specs.items()
        if name != "python3" and _spec_is_this_interpreter(manager, name)
    ]
    also = f"; kernels using this interpreter: {', '.join(sorted(ours))}" if ours else ""
    if exe in ("python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"):
        # Jupyter runs "python" as its own interpreter: this one only when the kernelspec
        # belongs to this environment (Jupyter launched from it).
        if Path(spec.resource_dir).resolve().is_relative_to(Path(sys.prefix).resolve()):
            return Check("kernel", "ok", f"ipykernel {ipykernel.__version__}; python3 kernel is this environment's ({sys.prefix}){also}")
        return Check(
            "kernel",
            "ok" if ours else "warn",
            f"ipykernel {ipykernel.__version__}; the python3 kernel ({spec.resource_dir}) runs "
            f"whichever Python starts Jupyter, which may not be {sys.executable}{also}",
            "" if ours else fix,
        )
    if _same_interpreter(exe):
        return Check("kernel", "ok", f"ipykernel {ipykernel.__version__}; python3 kernel runs {exe}{also}")
    if ours:
        return Check("kernel", "ok", f"ipykernel {ipykernel.__version__}; python3 kernel runs {exe}{also}")
    return Check(
        "kernel",
        "warn",
        f"ipykernel {ipykernel.__version__}; the python3 kernel runs {exe}, not {sys.executable}, "
        f"so notebooks on it may not import tracker",
        fix,
    )


def _spec_is_this_interpreter(manager: Any, name: str) -> bool:
    try:
        argv = manager.get_kernel_spec(name).argv
    except Exception:
        return False
    return bool(argv) and _same_interpreter(argv[0])


def _check_server(url: str) -> Check:
    import urllib.error
    import urllib.request

    target = url.rstrip("/") + "/api/schema/"
    try:
        with urllib.request.urlopen(target, timeout=5) as resp:
            code = resp.status
    except urllib.error.HTTPError as exc:
        code = exc.code
    except Exception as exc:
        return Check(
            "server",
            "fail",
            f"cannot reach the tracker server {url}: {exc}",
            "Start it (`tracker serve`) or correct TRACKER_SERVER_URL.",
        )
    if code >= 500:
        return Check("server", "fail", f"{url} answered HTTP {code}", "Look at the server's log.")
    return Check("server", "ok", f"{url} answers (HTTP {code})")


# ========================================================================= maintenance lock


@contextlib.contextmanager
def maintenance_lock(*, exclusive: bool, wait: bool) -> Iterator[None]:
    """Backups hold it shared, gc exclusive, so gc never deletes a file a backup still copies.

    On SQLite a file lock next to the database; on PostgreSQL a session advisory lock.

    Raises:
        Conflict: ``wait`` is False and the lock is held by the other kind of operation.
    """
    busy = Conflict(
        "A backup is running against this database; run gc again when it has finished."
        if exclusive
        else "gc is running against this database; try again when it has finished."
    )
    if connection.vendor == "postgresql":
        fn = ("pg_advisory_lock" if wait else "pg_try_advisory_lock") + ("" if exclusive else "_shared")
        unlock = "pg_advisory_unlock" + ("" if exclusive else "_shared")
        with connection.cursor() as cur:
            cur.execute(f"SELECT {fn}(%s)", [_ADVISORY_KEY])
            got = cur.fetchone()[0]
        if got is False:
            raise busy
        try:
            yield
        finally:
            with connection.cursor() as cur:
                cur.execute(f"SELECT {unlock}(%s)", [_ADVISORY_KEY])
        return
    if connection.vendor == "sqlite":
        import fcntl

        path = str(connection.settings_dict["NAME"]) + ".maintenance-lock"
        with open(path, "a+") as fh:
            flags = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB)
            try:
                fcntl.flock(fh, flags)
            except BlockingIOError:
                raise busy from None
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return
    yield


# =================================================================================== backup


@dataclass
class BackupReport:
    """What a backup holds (also written as the archive's manifest)."""

    path: str
    vendor: str
    created_at: str
    tracker_version: str
    database_file: str
    database_bytes: int
    counts: dict[str, int]
    files: list[dict[str, Any]] = field(default_factory=list)
    files_bytes: int = 0
    archive_bytes: int = 0
    seconds: float = 0.0
    format: int = BACKUP_FORMAT

    def manifest(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("path", "archive_bytes", "seconds"):
            out.pop(key)
        return out


def _archive_mode(path: Path, writing: bool) -> str:
    name = path.name.lower()
    compressed = name.endswith((".tar.gz", ".tgz"))
    if writing:
        if not (compressed or name.endswith(".tar")):
            raise InvalidValue(
                f"Name the backup file .tar or .tar.gz (got {path.name!r}), e.g. "
                f"tracker-{_dt.date.today():%Y%m%d}.tar.gz."
            )
        return "w:gz" if compressed else "w"
    return "r:*"


def backup(dest: str | os.PathLike[str], *, overwrite: bool = False, progress: Progress | None = None) -> BackupReport:
    """Write a consistent backup of the database and its storage files to one tar archive.

    Safe while other processes write (see the module docstring). The archive appears whole
    or not at all.

    Args:
        dest: the archive to write, ``.tar`` or ``.tar.gz``.
        overwrite: replace an existing file.
        progress: ``progress(total, desc, unit)`` returning a tqdm-like bar, or None.

    Returns:
        A :class:`BackupReport`: table counts and every file copied.

    Raises:
        InvalidValue: the name is not .tar/.tar.gz, or the file exists and ``overwrite`` is off.
        StorageError: a storage file is missing or does not match its checksum, or pg_dump failed.
        ConfigurationError: the database is neither SQLite nor PostgreSQL, or pg_dump is missing.
    """
    started = time.perf_counter()
    out = Path(dest).expanduser().resolve()
    mode = _archive_mode(out, writing=True)
    if out.exists() and not overwrite:
        raise InvalidValue(f"{str(out)!r} exists already; choose another name or pass --force to replace it.")
    if not out.parent.is_dir():
        raise InvalidValue(f"The directory {str(out.parent)!r} does not exist; create it first.")
    vendor = connection.vendor
    if vendor not in ("sqlite", "postgresql"):
        raise ConfigurationError(f"tracker backup supports SQLite and PostgreSQL, not {vendor}.")
    import tracker

    tmp_dir = Path(tempfile.mkdtemp(prefix="tracker-backup-", dir=out.parent))
    part = out.with_name(f".{out.name}.{os.getpid()}.part")
    try:
        with maintenance_lock(exclusive=False, wait=True):
            if vendor == "sqlite":
                db_file, counts, files = _snapshot_sqlite(tmp_dir)
            else:
                db_file, counts, files = _snapshot_postgres(tmp_dir)
            report = BackupReport(
                path=str(out),
                vendor=vendor,
                created_at=timezone.now().isoformat(),
                tracker_version=tracker.__version__,
                database_file=db_file.name,
                database_bytes=db_file.stat().st_size,
                counts=counts,
            )
            with tarfile.open(part, mode) as tar:
                tar.add(db_file, arcname=f"{ARCHIVE_ROOT}/{db_file.name}")
                _archive_files(tar, files, report, progress)
                manifest = json.dumps(report.manifest(), indent=2).encode()
                info = tarfile.TarInfo(f"{ARCHIVE_ROOT}/manifest.json")
                info.size = len(manifest)
                info.mtime = int(time.time())
                tar.addfile(info, io.BytesIO(manifest))
        os.replace(part, out)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    report.archive_bytes = out.stat().st_size
    report.seconds = time.perf_counter() - started
    return report


def _snapshot_sqlite(tmp_dir: Path) -> tuple[Path, dict[str, int], list[dict[str, Any]]]:
    src_path = str(connection.settings_dict["NAME"])
    dst_path = tmp_dir / "database.sqlite3"
    src = sqlite3.connect(src_path, timeout=60)
    dst = sqlite3.connect(dst_path)
    try:
        # pages=-1: the whole database in one step, inside one read transaction, so the copy
        # is one consistent state; WAL lets writers continue meanwhile.
        src.backup(dst, pages=-1)
    finally:
        src.close()
    try:
        dst.execute("PRAGMA journal_mode=DELETE")
        status = dst.execute("PRAGMA integrity_check").fetchone()[0]
        if status != "ok":
            raise StorageError(f"The database copy failed SQLite's integrity check ({status}); the source may be damaged.")
        def query(sql: str) -> list[tuple]:
            return dst.execute(sql).fetchall()

        tables = {r[0] for r in query("SELECT name FROM sqlite_master WHERE type = 'table'")}
        counts = _counts(query, tables)
        files = _referenced_files(query)
    finally:
        dst.close()
    return dst_path, counts, files


def _counts(query: Callable[[str], list[tuple]], tables: set[str]) -> dict[str, int]:
    return {t: int(query(f'SELECT COUNT(*) FROM "{t}"')[0][0]) for t in COUNTED_TABLES if t in tables}


def _referenced_files(query: Callable[[str], list[tuple]]) -> list[dict[str, Any]]:
    files = [
        {"name": name, "sha256": sha, "size": int(size), "kind": "blob"}
        for sha, size, name in query("SELECT sha256, size, storage_name FROM tracker_blob ORDER BY sha256")
    ]
    seen = {f["name"] for f in files}
    for (name,) in query("SELECT DISTINCT media FROM tracker_sample WHERE media <> '' ORDER BY media"):
        if name not in seen:
            files.append({"name": name, "sha256": None, "size": None, "kind": "media"})
            seen.add(name)
    return files


def _pg_env_args(db: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    env = dict(os.environ)
    args = []
    if db.get("HOST"):
        args += ["--host", str(db["HOST"])]
    if db.get("PORT"):
        args += ["--port", str(db["PORT"])]
    if db.get("USER"):
        args += ["--username", str(db["USER"])]
    if db.get("PASSWORD"):
        env["PGPASSWORD"] = str(db["PASSWORD"])
    env.setdefault("PGCONNECT_TIMEOUT", "10")
    return env, args


def _pg_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ConfigurationError(
            f"{name} is not on PATH; PostgreSQL backups use it. Install the PostgreSQL client "
            f"tools (Debian/Ubuntu: apt-get install postgresql-client) in the server's major "
            f"version or newer."
        )
    return path


def _pg_connect(db: dict[str, Any]) -> Any:
    import psycopg

    kwargs = {
        "dbname": db["NAME"],
        "host": db.get("HOST") or None,
        "port": db.get("PORT") or None,
        "user": db.get("USER") or None,
        "password": db.get("PASSWORD") or None,
        "connect_timeout": 10,
    }
    return psycopg.connect(**{k: v for k, v in kwargs.items() if v is not None})


def _snapshot_postgres(tmp_dir: Path) -> tuple[Path, dict[str, int], list[dict[str, Any]]]:
    db = connection.settings_dict
    pg_dump = _pg_tool("pg_dump")
    dump = tmp_dir / "database.pgdump"
    env, args = _pg_env_args(db)
    with _pg_connect(db) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        cmd = [
            pg_dump, *args, "--format=custom", "--no-owner", "--no-privileges",
            f"--snapshot={snapshot}", f"--file={dump}", db["NAME"],
        ]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=PG_TOOLS_TIMEOUT)
        if proc.returncode != 0:
            raise StorageError(f"pg_dump failed: {' '.join(proc.stderr.split())[:500]}")

        def query(sql: str) -> list[tuple]:
            return list(conn.execute(sql).fetchall())

        present = {r[0] for r in query("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
        counts = _counts(query, present)
        files = _referenced_files(query)
        conn.execute("COMMIT")
    return dump, counts, files


class _HashingReader(io.RawIOBase):
    """Reads through a file object, hashing and counting what passes."""

    def __init__(self, fh: Any, bar: Any = None) -> None:
        self.fh = fh
        self.sha = hashlib.sha256()
        self.size = 0
        self.bar = bar

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.sha.update(data)
        self.size += len(data)
        if self.bar is not None:
            self.bar.update(len(data))
        return data

    def readinto(self, b: Any) -> int:  # pragma: no cover - tarfile calls read()
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def _archive_files(tar: tarfile.TarFile, files: list[dict[str, Any]], report: BackupReport, progress: Progress | None) -> None:
    from django.core.files.storage import default_storage

    total = sum(f["size"] or 0 for f in files)
    bar = progress(total, "backup files", "B") if progress else None
    try:
        for f in files:
            name = f["name"]
            try:
                size = default_storage.size(name)
                fh = default_storage.open(name, "rb")
            except (OSError, FileNotFoundError):
                what = "blob" if f["kind"] == "blob" else "media file"
                raise StorageError(
                    f"The {what} {name} that the database references is missing from storage, so "
                    f"the backup would be incomplete. Restore the file from an older backup, or "
                    f"run `tracker doctor`."
                ) from None
            with fh:
                reader = _HashingReader(fh, bar)
                info = tarfile.TarInfo(f"{ARCHIVE_ROOT}/files/{name}")
                info.size = size
                info.mtime = int(time.time())
                tar.addfile(info, reader)
            if f["sha256"] is not None and reader.sha.hexdigest() != f["sha256"]:
                raise StorageError(
                    f"The blob {name} does not match its sha256 (changed outside tracker); the "
                    f"backup stops here rather than save damaged data."
                )
            if f["sha256"] is None:
                f["sha256"] = reader.sha.hexdigest()
                f["size"] = reader.size
            report.files.append(dict(f))
            report.files_bytes += reader.size
    finally:
        if bar is not None:
            bar.close()


# ================================================================================== restore


@dataclass
class RestoreReport:
    path: str
    vendor: str
    backup_created_at: str
    counts: dict[str, int]
    files_written: int = 0
    files_present: int = 0
    migrations_applied: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    seconds: float = 0.0


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a backup archive.

    Raises:
        InvalidValue: the file is missing or not a tracker backup.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise InvalidValue(f"The backup {str(path)!r} does not exist; check the path.")
    try:
        with tarfile.open(p, "r:*") as tar:
            member = tar.extractfile(f"{ARCHIVE_ROOT}/manifest.json")
            manifest = json.loads(member.read()) if member else None
    except (tarfile.TarError, KeyError, ValueError, OSError, EOFError):
        manifest = None
    if not isinstance(manifest, dict) or "vendor" not in manifest:
        raise InvalidValue(f"{str(path)!r} is not a tracker backup (no readable manifest); give a file made by `tracker backup`.")
    if manifest.get("format", 0) > BACKUP_FORMAT:
        raise InvalidValue(f"{str(path)!r} was made by a newer tracker (format {manifest['format']}); upgrade tracker to restore it.")
    return manifest


def _database_has_content() -> bool:
    tables = set(connection.introspection.table_names())
    with connection.cursor() as cur:
        for table in CONTENT_TABLES:
            if table in tables:
                cur.execute(f"SELECT 1 FROM {connection.ops.quote_name(table)} LIMIT 1")
                if cur.fetchone():
                    return True
    return False


def restore(src: str | os.PathLike[str], *, force: bool = False, progress: Progress | None = None) -> RestoreReport:
    """Restore a backup archive into the configured database and storage.

    Storage files are written first (content-addressed, so extra files are harmless), then the
    database is replaced in one step, migrated forward if the backup is older, and checked:
    SQLite's integrity and foreign-key checks, table counts against the manifest, every blob
    present in storage.

    Args:
        src: an archive made by :func:`backup`.
        force: replace a database that already holds data.
        progress: as for :func:`backup`.

    Raises:
        InvalidValue: not a backup, or its database vendor differs from the configured one.
        Conflict: the database holds data and ``force`` is off.
        StorageError: the archive is damaged, a check failed, or pg_restore failed.
    """
    started = time.perf_counter()
    manifest = read_manifest(src)
    vendor = connection.vendor
    if manifest["vendor"] != vendor:
        hint = (
            "point TRACKER_DATABASE_URL at a PostgreSQL database"
            if manifest["vendor"] == "postgresql"
            else "unset TRACKER_DATABASE_URL (or use sqlite:////path/file.sqlite3)"
        )
        raise InvalidValue(f"This backup holds a {manifest['vendor']} database but tracker is configured for {vendor}; {hint} to restore it.")
    if not force and _database_has_content():
        where = database_summary().get("path") or database_summary().get("url")
        raise Conflict(
            f"The database {where} already holds data; restoring replaces all of it. Pass --force "
            f"to replace it, or restore into an empty database or a new tracker home."
        )
    report = RestoreReport(
        path=str(Path(src).expanduser().resolve()),
        vendor=vendor,
        backup_created_at=manifest.get("created_at", ""),
        counts={},
    )
    tmp_dir = Path(tempfile.mkdtemp(prefix="tracker-restore-"))
    try:
        with tarfile.open(Path(src).expanduser(), "r:*") as tar:
            _restore_files(tar, manifest["files"], report, progress)
            member = tar.getmember(f"{ARCHIVE_ROOT}/{manifest['database_file']}")
            db_copy = tmp_dir / manifest["database_file"]
            with tar.extractfile(member) as fh, open(db_copy, "wb") as out:
                shutil.copyfileobj(fh, out, 1 << 20)
        connections.close_all()
        if vendor == "sqlite":
            _restore_sqlite(db_copy)
        else:
            _restore_postgres(db_copy)
    except tarfile.TarError as exc:
        raise StorageError(f"The backup archive is damaged ({exc}); nothing of the database was replaced.") from None
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    from tracker.configuration import ensure_migrated, pending_migrations

    report.migrations_applied = pending_migrations()
    ensure_migrated()
    _verify_restored(manifest, report)
    report.seconds = time.perf_counter() - started
    return report


def _restore_files(tar: tarfile.TarFile, files: list[dict[str, Any]], report: RestoreReport, progress: Progress | None) -> None:
    from django.core.files import File
    from django.core.files.storage import default_storage

    bar = progress(sum(f["size"] or 0 for f in files), "restore files", "B") if progress else None
    try:
        for f in files:
            name = f["name"]
            if default_storage.exists(name) and default_storage.size(name) == f["size"]:
                report.files_present += 1
                if bar is not None:
                    bar.update(f["size"] or 0)
                continue
            try:
                member = tar.getmember(f"{ARCHIVE_ROOT}/files/{name}")
            except KeyError:
                raise StorageError(f"The backup lacks the file {name} its manifest lists; the archive is damaged.") from None
            with tar.extractfile(member) as fh:
                reader = _HashingReader(fh, bar)
                with contextlib.suppress(FileNotFoundError):
                    if default_storage.exists(name):
                        default_storage.delete(name)  # a damaged or partial copy
                saved = default_storage.save(name, File(reader, name=os.path.basename(name)))
            if reader.sha.hexdigest() != f["sha256"]:
                default_storage.delete(saved)
                raise StorageError(f"The file {name} in the backup does not match its sha256; the archive is damaged.")
            if saved != name:  # pragma: no cover - only if another writer raced us to the name
                default_storage.delete(saved)
            report.files_written += 1
    finally:
        if bar is not None:
            bar.close()


def _restore_sqlite(db_copy: Path) -> None:
    target = str(connection.settings_dict["NAME"])
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(db_copy)
    dst = sqlite3.connect(target, timeout=60)
    try:
        status = src.execute("PRAGMA integrity_check").fetchone()[0]
        if status != "ok":
            raise StorageError(f"The database in the backup fails SQLite's integrity check ({status}); it was not restored.")
        # The backup API replaces the target page by page under its write lock, so a reader
        # never sees a half-restored file (unlike copying the file over it).
        src.backup(dst, pages=-1)
        dst.execute("PRAGMA journal_mode=WAL")
    finally:
        src.close()
        dst.close()


def _restore_postgres(dump: Path) -> None:
    db = connection.settings_dict
    pg_restore = _pg_tool("pg_restore")
    env, args = _pg_env_args(db)
    cmd = [
        pg_restore, *args, "--clean", "--if-exists", "--no-owner", "--no-privileges",
        "--single-transaction", "--exit-on-error", f"--dbname={db['NAME']}", str(dump),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=PG_TOOLS_TIMEOUT)
    if proc.returncode != 0:
        raise StorageError(
            f"pg_restore failed, so the database was left as it was: {' '.join(proc.stderr.split())[:500]}"
        )


def _verify_restored(manifest: dict[str, Any], report: RestoreReport) -> None:
    from django.core.files.storage import default_storage

    problems = []
    with connection.cursor() as cur:
        if connection.vendor == "sqlite":
            cur.execute("PRAGMA integrity_check")
            status = cur.fetchone()[0]
            if status != "ok":
                problems.append(f"integrity check: {status}")
            else:
                report.checks.append("sqlite integrity_check ok")
            cur.execute("PRAGMA foreign_key_check")
            bad = cur.fetchall()
            if bad:
                problems.append(f"{len(bad)} rows break foreign keys (first: {bad[0]})")
            else:
                report.checks.append("sqlite foreign_key_check ok")
        tables = set(connection.introspection.table_names())
        for table, want in manifest.get("counts", {}).items():
            if table not in tables:
                problems.append(f"table {table} is missing")
                continue
            cur.execute(f"SELECT COUNT(*) FROM {connection.ops.quote_name(table)}")
            have = int(cur.fetchone()[0])
            report.counts[table] = have
            if have != want:
                problems.append(f"{table} has {have} rows, the backup {want}")
        report.checks.append("table counts match the backup")
        cur.execute("SELECT storage_name FROM tracker_blob")
        missing = [n for (n,) in cur.fetchall() if not default_storage.exists(n)]
    if missing:
        problems.append(f"{len(missing)} blobs are missing from storage (first: {missing[0]})")
    else:
        report.checks.append("every blob is in storage")
    if problems:
        raise StorageError("The restored database failed its checks: " + "; ".join(problems) + ".")


# ======================================================================================= gc


@dataclass
class GcReport:
    """Blobs no run artifact or dataset version references (deleted when ``deleted``)."""

    deleted: bool
    grace_seconds: float
    blobs: list[dict[str, Any]] = field(default_factory=list)
    blob_bytes: int = 0
    orphan_files: list[dict[str, Any]] = field(default_factory=list)
    orphan_bytes: int = 0
    stale_versions: int = 0
    kept_recent: int = 0
    kept_referenced_meanwhile: int = 0


# Called by gc between finding candidates and deleting them; tests use it to make a
# reference appear at the worst moment.
_after_scan: Callable[[list[str]], None] | None = None


def _unreferenced(qs: Any) -> Any:
    from django.db.models import Exists, OuterRef

    from tracker.models import Artifact, DatasetVersion

    return qs.exclude(Exists(Artifact.objects.filter(blob=OuterRef("pk")))).exclude(
        Exists(DatasetVersion.objects.filter(snapshot=OuterRef("pk")))
    )


def gc(*, delete: bool = False, grace: float = DEFAULT_GC_GRACE, progress: Progress | None = None) -> GcReport:
    """Find (and with ``delete``, remove) artifact blobs nothing references any more.

    A blob is garbage when no run artifact and no dataset version (ready or building) points
    at it and it is older than ``grace`` seconds. Files under the blob prefix with no blob row,
    older than ``grace`` (left by an interrupted upload), are listed and removed too. With
    ``delete``, dataset versions left half-built by a crashed process first are cleaned up.

    Args:
        delete: remove what was found; without it nothing changes (a dry run).
        grace: leave blobs and files younger than this many seconds alone, so an upload that
            has stored its blob but not yet the row pointing at it is never touched.
        progress: as for :func:`backup`.

    Returns:
        A :class:`GcReport`.

    Raises:
        InvalidValue: ``grace`` is negative.
        Conflict: a backup is running.
    """
    from tracker.models import Blob, DatasetVersion

    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or grace < 0 or grace != grace:
        raise InvalidValue(f"grace must be a number of seconds >= 0, not {grace!r}.")
    report = GcReport(deleted=delete, grace_seconds=float(grace))
    cutoff = timezone.now() - _dt.timedelta(seconds=grace)
    with maintenance_lock(exclusive=True, wait=False):
        from tracker.services.datasets import STALE_BUILDING, cleanup_stale_versions

        stale = DatasetVersion.objects.filter(
            state=DatasetVersion.State.BUILDING, created_at__lt=timezone.now() - STALE_BUILDING
        )
        report.stale_versions = stale.count()
        if delete and report.stale_versions:
            cleanup_stale_versions()
        unreferenced = _unreferenced(Blob.objects.all())
        report.kept_recent = unreferenced.filter(created_at__gte=cutoff).count()
        candidates = list(
            unreferenced.filter(created_at__lt=cutoff)
            .order_by("created_at", "sha256")
            .values("sha256", "size", "storage_name", "created_at")
        )
        orphans = _orphan_files(cutoff)
        if _after_scan is not None:
            _after_scan([c["sha256"] for c in candidates])
        if not delete:
            report.blobs = candidates
        else:
            report.blobs = _delete_blobs(candidates, cutoff, report, progress)
            orphans = _delete_orphans(orphans)
        report.orphan_files = orphans
    report.blob_bytes = sum(b["size"] for b in report.blobs)
    report.orphan_bytes = sum(f["size"] or 0 for f in report.orphan_files)
    return report


def _delete_blobs(candidates: list[dict[str, Any]], cutoff: Any, report: GcReport, progress: Progress | None) -> list[dict[str, Any]]:
    from django.core.files.storage import default_storage

    from tracker.models import Blob

    done: list[dict[str, Any]] = []
    bar = progress(len(candidates), "gc blobs", " blobs") if progress else None
    try:
        for start in range(0, len(candidates), GC_CHUNK):
            chunk = {c["sha256"]: c for c in candidates[start : start + GC_CHUNK]}
            with transaction.atomic():
                # Lock the rows (PostgreSQL; SQLite's IMMEDIATE transaction holds the write
                # lock already), then check the references again: a reference committed since
                # the scan keeps its blob.
                locked = list(
                    Blob.objects.select_for_update().filter(pk__in=list(chunk)).values_list("pk", flat=True)
                )
                still = set(
                    _unreferenced(Blob.objects.filter(pk__in=locked, created_at__lt=cutoff)).values_list("pk", flat=True)
                )
                report.kept_referenced_meanwhile += len(chunk) - len(still)
                for sha in sorted(still):
                    try:
                        default_storage.delete(chunk[sha]["storage_name"])
                    except FileNotFoundError:
                        pass
                    except OSError as exc:
                        raise StorageError(
                            f"Deleting blob file {chunk[sha]['storage_name']} failed ({exc}); "
                            f"nothing of this batch was removed from the database."
                        ) from None
                Blob.objects.filter(pk__in=still).delete()
            done += [chunk[sha] for sha in sorted(still)]
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return done


def _walk_storage(prefix: str) -> Iterator[str]:
    from django.core.files.storage import default_storage

    try:
        dirs, files = default_storage.listdir(prefix)
    except (FileNotFoundError, NotImplementedError):
        return
    for f in files:
        yield f"{prefix}/{f}"
    for d in dirs:
        yield from _walk_storage(f"{prefix}/{d}")


def _orphan_files(cutoff: Any) -> list[dict[str, Any]]:
    """Files under the blob prefix with no blob row, last modified before ``cutoff``."""
    from django.core.files.storage import default_storage

    from tracker.models import Blob

    prefix = str(conf.get("BLOB_PREFIX")).strip("/")
    names = list(_walk_storage(prefix))
    if not names:
        return []
    known = set()
    for start in range(0, len(names), GC_CHUNK):
        known.update(Blob.objects.filter(storage_name__in=names[start : start + GC_CHUNK]).values_list("storage_name", flat=True))
    out = []
    for name in names:
        if name in known:
            continue
        try:
            modified = default_storage.get_modified_time(name)
            size = default_storage.size(name)
        except (OSError, NotImplementedError):
            continue
        if timezone.is_naive(modified):
            modified = timezone.make_aware(modified, _dt.UTC)
        if modified < cutoff:
            out.append({"storage_name": name, "size": size, "modified_at": modified})
    return out


def _delete_orphans(orphans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from django.core.files.storage import default_storage

    from tracker.models import Blob

    done = []
    for f in orphans:
        # A blob row may have appeared since the scan (a slow upload finishing): keep it then.
        if Blob.objects.filter(storage_name=f["storage_name"]).exists():
            continue
        with contextlib.suppress(FileNotFoundError):
            default_storage.delete(f["storage_name"])
        done.append(f)
    return done


# ============================================================================ run overview


def run_details(ref: Any) -> dict[str, Any]:
    """Everything ``tracker run show`` prints about one run, as plain data.

    Raises:
        RunNotFound: no run has that id (or unique id prefix).
    """
    from tracker.models import Artifact, MetricSummary
    from tracker.services import runs as runs_core
    from tracker.services.datasets import run_inputs

    run = runs_core.get_run(ref)
    end = run.ended_at or timezone.now()
    metrics = [
        {"key": key, "last": last, "step": step, "min": lo, "max": hi, "count": n}
        for key, last, step, lo, hi, n in MetricSummary.objects.filter(run=run)
        .order_by("key")
        .values_list("key", "last", "last_step", "min", "max", "count")
    ]
    artifacts = [
        {"name": name, "kind": kind, "size": size, "sha256": sha, "created_at": at}
        for name, kind, size, sha, at in Artifact.objects.filter(run=run)
        .order_by("name")
        .values_list("name", "kind", "size", "sha256", "created_at")
    ]
    inputs = [
        {"dataset": info.name, "version": info.version, "context": context, "samples": info.sample_count}
        for info, context in run_inputs(run)
    ]
    children = list(run.children.order_by("started_at").values_list("uid", flat=True))
    return {
        "id": run.uid,
        "name": run.name,
        "project": run.project.name,
        "status": run.status,
        "parent": run.parent.uid if run.parent_id else None,
        "children": children,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "duration_seconds": (end - run.started_at).total_seconds(),
        "host": run.host,
        "pid": run.pid,
        "git_commit": run.git_commit,
        "git_dirty": run.git_dirty,
        "python_version": run.python_version,
        "packages": run.packages,
        "params": run.params,
        "tags": run.tags,
        "notes": run.notes,
        "error": run.error,
        "metrics": metrics,
        "artifacts": artifacts,
        "inputs": inputs,
    }
