"""Backup and restore: one tar archive with a consistent snapshot of the database and its files.

The archive holds the database and the storage files that snapshot references (artifact and
dataset blobs, sample media)::

    tracker-backup/manifest.json      what is inside: vendor, table counts, files with sha256
    tracker-backup/database.sqlite3   (SQLite) made with SQLite's online backup API
    tracker-backup/database.pgdump    (PostgreSQL) pg_dump custom format
    tracker-backup/files/<name>       storage files, under their storage names

The snapshot is consistent while writers are active: SQLite's backup API copies the database
in one step inside one read transaction (WAL lets writers go on); on PostgreSQL a REPEATABLE
READ transaction exports its snapshot, ``pg_dump --snapshot`` dumps exactly that state and the
file list is read in the same transaction. Files are content-addressed and never rewritten, so
copying them after the snapshot is safe, and ``tracker gc`` cannot remove them meanwhile: backup
and gc exclude each other through :func:`maintenance_lock`.
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
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from django.db import connection, connections
from django.utils import timezone

from tracker.exceptions import ConfigurationError, Conflict, InvalidValue, StorageError
from tracker.services.ops import database_summary

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
_ADVISORY_KEY = 0x7472_6F70  # "trop": tracker operations
PG_TOOLS_TIMEOUT = 24 * 3600

Progress = Callable[..., Any]


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
    # "sqlite", "pg_dump" (custom format) or "pg_copy" (one binary COPY file per table)
    database_format: str = ""
    # pg_copy only: each table's columns in COPY order, and the applied migrations
    tables: list[dict[str, Any]] = field(default_factory=list)
    migrations: list[list[str]] = field(default_factory=list)
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


METHODS = ("auto", "pg_dump", "copy")


def backup(
    dest: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
    method: str = "auto",
) -> BackupReport:
    """Write a consistent backup of the database and its storage files to one tar archive.

    Safe while other processes write (see the module docstring). The archive appears whole
    or not at all.

    Args:
        dest: the archive to write, ``.tar`` or ``.tar.gz``.
        overwrite: replace an existing file.
        progress: ``progress(total, desc, unit)`` returning a tqdm-like bar, or None.
        method: PostgreSQL only: ``"pg_dump"``, ``"copy"`` (binary COPY of every table, no
            client tools needed), or ``"auto"``: pg_dump when it is on PATH and at least the
            server's major version, else copy.

    Returns:
        A :class:`BackupReport`: table counts and every file copied.

    Raises:
        InvalidValue: the name is not .tar/.tar.gz, or the file exists and ``overwrite`` is off.
        StorageError: a storage file is missing or does not match its checksum, or pg_dump failed.
        ConfigurationError: the database is neither SQLite nor PostgreSQL, or pg_dump was asked
            for and is missing.
    """
    started = time.perf_counter()
    if method not in METHODS:
        raise InvalidValue(f"method must be one of {', '.join(METHODS)}, not {method!r}.")
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
            extra: dict[str, Any] = {}
            if vendor == "sqlite":
                db_file, counts, files = _snapshot_sqlite(tmp_dir)
                extra["database_format"] = "sqlite"
            else:
                db_file, counts, files, extra = _snapshot_postgres(tmp_dir, method)
            report = BackupReport(
                path=str(out),
                vendor=vendor,
                created_at=timezone.now().isoformat(),
                tracker_version=tracker.__version__,
                database_file=db_file.name,
                database_bytes=_size(db_file),
                counts=counts,
                **extra,
            )
            # gzip level 3: most of level 9's size at a fraction of its time (database pages
            # compress well; artifacts are often compressed already).
            level = {"compresslevel": 3} if mode == "w:gz" else {}
            with tarfile.open(part, mode, **level) as tar:
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


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.iterdir())
    return path.stat().st_size


def _major(version_text: str) -> int | None:
    import re

    m = re.search(r"(\d+)(?:\.\d+)?", version_text)
    return int(m.group(1)) if m else None


def pg_dump_usable(server_major: int | None) -> tuple[bool, str]:
    """Whether pg_dump can dump this server: on PATH and at least its major version."""
    path = shutil.which("pg_dump")
    if path is None:
        return False, "pg_dump is not on PATH"
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False, timeout=30).stdout
    except OSError as exc:
        return False, f"pg_dump cannot run ({exc})"
    mine = _major(out)
    if server_major is not None and (mine is None or mine < server_major):
        return False, f"pg_dump {mine} is older than the server ({server_major})"
    return True, f"pg_dump {mine}"


def _snapshot_postgres(tmp_dir: Path, method: str) -> tuple[Path, dict[str, int], list[dict[str, Any]], dict[str, Any]]:
    db = connection.settings_dict
    env, args = _pg_env_args(db)
    with _pg_connect(db) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        server_major = int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000
        if method == "auto":
            method = "pg_dump" if pg_dump_usable(server_major)[0] else "copy"

        def query(sql: str) -> list[tuple]:
            return list(conn.execute(sql).fetchall())

        present = {r[0] for r in query("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
        extra: dict[str, Any]
        if method == "pg_dump":
            pg_dump = _pg_tool("pg_dump")
            out = tmp_dir / "database.pgdump"
            snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
            cmd = [
                pg_dump, *args, "--format=custom", "--no-owner", "--no-privileges",
                f"--snapshot={snapshot}", f"--file={out}", db["NAME"],
            ]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=PG_TOOLS_TIMEOUT)
            if proc.returncode != 0:
                raise StorageError(
                    f"pg_dump failed: {' '.join(proc.stderr.split())[:500]} (`tracker backup "
                    f"--method copy` needs no client tools)."
                )
            extra = {"database_format": "pg_dump"}
        else:
            out = tmp_dir / "database.copy"
            out.mkdir()
            tables = _copy_out(conn, sorted(present), out)
            migrations = [list(r) for r in query("SELECT app, name FROM django_migrations ORDER BY id")]
            extra = {"database_format": "pg_copy", "tables": tables, "migrations": migrations}
        counts = _counts(query, present)
        files = _referenced_files(query)
        conn.execute("COMMIT")
    return out, counts, files, extra


def _columns(conn: Any, table: str) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = %s ORDER BY ordinal_position",
            [table],
        ).fetchall()
    ]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _copy_out(conn: Any, tables: list[str], directory: Path) -> list[dict[str, Any]]:
    """Every table as a binary COPY file, all read in the caller's one snapshot."""
    out = []
    for table in tables:
        columns = _columns(conn, table)
        cols = ", ".join(_quote(c) for c in columns)
        sql = f"COPY {_quote(table)} ({cols}) TO STDOUT (FORMAT binary)"
        with conn.cursor() as cur, open(directory / f"{table}.copy", "wb") as fh, cur.copy(sql) as copy:
            fh.writelines(copy)
        out.append({"name": table, "columns": columns})
    return out


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
            db_copy = _extract_database(tar, manifest["database_file"], tmp_dir)
        connections.close_all()
        kind = manifest.get("database_format") or ("sqlite" if vendor == "sqlite" else "pg_dump")
        if kind == "sqlite":
            _restore_sqlite(db_copy)
        elif kind == "pg_dump":
            _restore_postgres(db_copy)
        else:
            _restore_pg_copy(db_copy, manifest)
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


def _extract_database(tar: tarfile.TarFile, name: str, tmp_dir: Path) -> Path:
    """The database file (or, for pg_copy, directory of table files) from the archive."""
    prefix = f"{ARCHIVE_ROOT}/{name}"
    members = [m for m in tar.getmembers() if m.isfile() and (m.name == prefix or m.name.startswith(prefix + "/"))]
    if not members:
        raise StorageError(f"The backup lacks its database ({name}); the archive is damaged.")
    for m in members:
        target = tmp_dir / m.name.removeprefix(f"{ARCHIVE_ROOT}/")
        if not target.resolve().is_relative_to(tmp_dir.resolve()):  # a crafted member name
            raise StorageError(f"The backup has a bad member name {m.name!r}; it was not made by tracker.")
        target.parent.mkdir(parents=True, exist_ok=True)
        with tar.extractfile(m) as fh, open(target, "wb") as out:
            shutil.copyfileobj(fh, out, 1 << 20)
    return tmp_dir / name


def _migration_targets(applied: list[list[str]]) -> list[tuple[str, str]]:
    """The latest applied migration of each app: what `migrate` must reach for the data."""
    from django.db.migrations.loader import MigrationLoader

    graph = MigrationLoader(None, ignore_no_migrations=True).graph
    nodes = {(app, name) for app, name in applied}
    unknown = sorted(n for n in nodes if n not in graph.nodes)
    if unknown:
        raise InvalidValue(
            f"The backup's schema has migrations this tracker does not know ({unknown[0][0]}."
            f"{unknown[0][1]}); it was made by a newer tracker, so upgrade tracker to restore it."
        )
    ancestors = set()
    for node in nodes:
        ancestors.update(n for n in graph.forwards_plan(node) if n != node)
    return sorted(n for n in nodes if n not in ancestors)


def _restore_pg_copy(directory: Path, manifest: dict[str, Any]) -> None:
    """Recreate the backup's schema with migrations, then load every table with COPY.

    Dropping the old tables, migrating and loading are one transaction (PostgreSQL's DDL is
    transactional) with foreign keys checked at commit, so the database ends up exactly as
    backed up, or unchanged if anything fails.
    """
    from django.db import transaction
    from django.db.migrations.executor import MigrationExecutor

    targets = _migration_targets(manifest.get("migrations") or [])
    tables = [t for t in manifest.get("tables") or [] if t["name"] != "django_migrations"]
    with connection.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        existing = [r[0] for r in cur.fetchall()]
    with transaction.atomic():
        # The target is empty or its replacement was asked for (--force): start from no
        # tables, so the schema is exactly the backup's, whatever version the target was at.
        with connection.cursor() as cur:
            for table in existing:
                cur.execute(f"DROP TABLE IF EXISTS {_quote(table)} CASCADE")
        MigrationExecutor(connection).migrate(targets)
        _load_tables(directory, tables)


def _load_tables(directory: Path, tables: list[dict[str, Any]]) -> None:
    with connection.connection.cursor() as cur:
        cur.execute("SET CONSTRAINTS ALL DEFERRED")
        # migrations may have written rows (content types, data migrations); the backup's replace them
        names = ", ".join(_quote(t["name"]) for t in tables)
        if names:
            cur.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
        for t in tables:
            cols = ", ".join(_quote(c) for c in t["columns"])
            sql = f"COPY {_quote(t['name'])} ({cols}) FROM STDIN (FORMAT binary)"
            with open(directory / f"{t['name']}.copy", "rb") as fh, cur.copy(sql) as copy:
                while chunk := fh.read(1 << 20):
                    copy.write(chunk)
        cur.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = "
            "current_schema() AND (is_identity = 'YES' OR column_default LIKE 'nextval(%')"
        )
        for table, column in cur.fetchall():
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence(%s, %s), COALESCE(MAX({_quote(column)}), 0) + 1, false) "
                f"FROM {_quote(table)}",
                [_quote(table), column],
            )


def _restore_postgres(dump: Path) -> None:
    db = connection.settings_dict
    pg_restore = _pg_tool("pg_restore")
    env, args = _pg_env_args(db)
    cmd = [
        pg_restore, *args, "--clean", "--if-exists", "--no-owner", "--no-privileges",
        "--single-transaction", "--exit-on-error", f"--dbname={db['NAME']}", str(dump),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=PG_TOOLS_TIMEOUT)
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
