"""Operations: environment checks (doctor), setup (init), artifact blob gc, run overviews.

Backup and restore live in :mod:`tracker.services.backups`.

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
import os
import shutil
import sqlite3
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import connection, connections, transaction
from django.utils import timezone

from tracker import conf
from tracker.exceptions import InvalidValue, StorageError

DEFAULT_GC_GRACE = 3600.0
GC_CHUNK = 500

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
    if db.status != "fail" and connection.vendor == "postgresql":
        checks.append(_check_backup_tools())
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
    except Exception as exc:  # noqa: BLE001 - any failure is the check's finding
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
    except Exception as exc:  # noqa: BLE001 - any failure is the check's finding
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


def _check_backup_tools() -> Check:
    from tracker.services.backups import pg_dump_usable

    with connection.cursor() as cur:
        cur.execute("SHOW server_version_num")
        server = int(cur.fetchone()[0]) // 10000
    usable, why = pg_dump_usable(server)
    if usable:
        return Check("backup", "ok", f"`tracker backup` uses {why}")
    return Check(
        "backup",
        "ok",
        f"`tracker backup` uses binary COPY ({why}); restores need the same tracker version or newer",
    )


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
    except Exception as exc:  # noqa: BLE001 - any failure is the check's finding
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
    except Exception as exc:  # noqa: BLE001 - a broken jupyter installation
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
    except Exception:  # noqa: BLE001 - an unreadable spec is not ours
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
    except Exception as exc:  # noqa: BLE001 - any failure is the check's finding
        return Check(
            "server",
            "fail",
            f"cannot reach the tracker server {url}: {exc}",
            "Start it (`tracker serve`) or correct TRACKER_SERVER_URL.",
        )
    if code >= 500:
        return Check("server", "fail", f"{url} answered HTTP {code}", "Look at the server's log.")
    return Check("server", "ok", f"{url} answers (HTTP {code})")


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
    from tracker.services.backups import maintenance_lock

    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not grace >= 0:
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
