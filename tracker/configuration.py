"""`configure()`: Django settings built in code, the embedded SQLite default, auto-migration."""

from __future__ import annotations

import copy
import os
import secrets
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from tracker import conf
from tracker.exceptions import ConfigurationError

# The apps every tracker process installs; a host project lists at least "tracker".
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.admin",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "tracker",
    "tracker_api",
]

_lock = threading.RLock()
_resolved: dict[str, Any] | None = None  # what configure() applied, for the same-values check
_ready = False
_unsafe_enabled_by_us = False

SQLITE_BUSY_TIMEOUT_S = 30


def default_home() -> Path:
    return Path(os.environ.get("TRACKER_HOME") or Path.home() / ".tracker").expanduser()


def sqlite_database(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Django DATABASES entry for the embedded default: WAL, IMMEDIATE transactions, busy timeout.

    IMMEDIATE makes a transaction take SQLite's write lock when it begins, so a second writer
    waits (up to the busy timeout) instead of failing with "database is locked" on upgrade.
    """
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": SQLITE_BUSY_TIMEOUT_S,
            "init_command": (
                f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000};"
                "PRAGMA journal_mode=WAL;"
                "PRAGMA synchronous=NORMAL"
            ),
        },
        "TEST": {"NAME": str(Path(path).with_name("test_" + Path(path).name))},
    }


def database_from_url(url: str) -> dict[str, Any]:
    """Django DATABASES entry for a URL (``postgres://``, ``sqlite:///path``)."""
    import dj_database_url

    try:
        db = dj_database_url.parse(url)
    except Exception as exc:
        raise ConfigurationError(
            f"Cannot read the database URL {url!r} ({exc}). Use a form like "
            f"postgres://user:password@host:5432/name or sqlite:////absolute/path.sqlite3."
        ) from None
    engine = db.get("ENGINE", "")
    if engine.endswith("sqlite3"):
        if not db.get("NAME") or db["NAME"] == ":memory:":
            raise ConfigurationError(
                "An in-memory SQLite database cannot be shared between tracker's threads and "
                "processes; give a file path (sqlite:////absolute/path.sqlite3)."
            )
        return sqlite_database(db["NAME"])
    if "postgresql" in engine:
        db.setdefault("OPTIONS", {}).setdefault("application_name", "tracker")
        # A connection dropped by a server restart is replaced instead of failing forever.
        db["CONN_HEALTH_CHECKS"] = True
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise ConfigurationError(
                "PostgreSQL needs the psycopg driver: pip install 'tracker[postgres]'."
            ) from None
    return db


def _secret_key(home: Path) -> str:
    if key := os.environ.get("TRACKER_SECRET_KEY"):
        return key
    path = home / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    # Written to a private temp file and linked into place, so a process starting at the same
    # moment either wins or reads the complete key of the one that did.
    tmp = home / f".secret_key.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(50))
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()


def _tracker_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in overrides.items():
        upper = key.upper()
        if upper not in conf.DEFAULTS:
            raise ConfigurationError(
                f"configure() got an unknown setting {key!r}. Known settings: "
                f"{', '.join(k.lower() for k in conf.DEFAULTS)}, plus home, database_url, "
                f"storage, allow_async_unsafe, django_settings."
            )
        out[upper] = value
    return out


def build_settings(
    *,
    home: str | os.PathLike[str] | None = None,
    database_url: str | None = None,
    storage: dict[str, Any] | None = None,
    django_settings: dict[str, Any] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """The full Django settings dict that :func:`configure` applies (no side effects but mkdir)."""
    home_path = Path(home).expanduser() if home else default_home()
    home_path = home_path.resolve()
    try:
        home_path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"Cannot create the tracker home {home_path} ({exc.strerror}). Set TRACKER_HOME or "
            f"configure(home=...) to a writable directory."
        ) from None
    url = database_url or os.environ.get("TRACKER_DATABASE_URL")
    database = database_from_url(url) if url else sqlite_database(home_path / "tracker.sqlite3")
    tracker_settings = {"HOME": str(home_path), **_tracker_overrides(overrides)}
    if "SERVER_URL" not in tracker_settings and os.environ.get("TRACKER_SERVER_URL"):
        tracker_settings["SERVER_URL"] = os.environ["TRACKER_SERVER_URL"]
    if "TOKEN" not in tracker_settings and os.environ.get("TRACKER_TOKEN"):
        tracker_settings["TOKEN"] = os.environ["TRACKER_TOKEN"]
    settings: dict[str, Any] = {
        "DEBUG": False,
        "SECRET_KEY": _secret_key(home_path),
        "ALLOWED_HOSTS": ["*"],
        "INSTALLED_APPS": list(INSTALLED_APPS),
        "MIDDLEWARE": [
            "django.middleware.security.SecurityMiddleware",
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
        ],
        "ROOT_URLCONF": "tracker_api.urls",
        "TEMPLATES": [
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True,
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                        "django.contrib.messages.context_processors.messages",
                    ]
                },
            }
        ],
        "DATABASES": {"default": database},
        "DEFAULT_AUTO_FIELD": "django.db.models.BigAutoField",
        "USE_TZ": True,
        "TIME_ZONE": "UTC",
        "STATIC_URL": "static/",
        "STORAGES": {
            "default": storage
            or {
                "BACKEND": "django.core.files.storage.FileSystemStorage",
                "OPTIONS": {"location": str(home_path / "files")},
            },
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        },
        "TRACKER": tracker_settings,
    }
    # The REST API's settings (DRF, OpenAPI, the 413 body limit); see tracker_api/defaults.py.
    from tracker_api.defaults import HOT_MIDDLEWARE, MIDDLEWARE as API_MIDDLEWARE, api_settings

    settings.update(api_settings())
    settings["MIDDLEWARE"].insert(1, API_MIDDLEWARE)
    settings["MIDDLEWARE"].insert(0, HOT_MIDDLEWARE)
    settings.update(django_settings or {})
    return settings


def _comparable(settings: dict[str, Any]) -> dict[str, Any]:
    out = dict(settings)
    out.pop("SECRET_KEY", None)
    return out


def configure(
    *,
    home: str | os.PathLike[str] | None = None,
    database_url: str | None = None,
    storage: dict[str, Any] | None = None,
    allow_async_unsafe: bool | None = None,
    migrate: bool = True,
    django_settings: dict[str, Any] | None = None,
    quiet: bool = False,
    **overrides: Any,
) -> None:
    """Set tracker up for this process; no Django settings module is needed.

    Args:
        home: directory for the embedded SQLite file, artifacts and the secret key
            (default ``$TRACKER_HOME`` or ``~/.tracker``).
        database_url: a database to use instead of the embedded SQLite file, for example
            ``postgres://user@host:5432/tracker`` (default ``$TRACKER_DATABASE_URL``).
        storage: a Django ``STORAGES["default"]`` entry for artifacts and media
            (default: files under ``home``).
        allow_async_unsafe: inside a Jupyter kernel, raw ORM calls in cells
            (``Sample.objects.filter(...)``) need Django's ``DJANGO_ALLOW_ASYNC_UNSAFE``
            opt-out; tracker enables it for the kernel process unless this is ``False``.
            It is never enabled outside a kernel. tracker's own API works either way.
        migrate: apply tracker's migrations if the database is behind (safe when several
            processes start at once).
        django_settings: extra Django settings to apply on top.
        quiet: do not print the one-line notice about the kernel opt-out.
        **overrides: tracker settings, for example ``flush_interval=0.5``
            (see :data:`tracker.conf.DEFAULTS`).

    Calling it again with the same values does nothing; with different values it raises
    :class:`ConfigurationError` (restart the process or kernel to change them).

    Raises:
        ConfigurationError: unknown setting, unusable home or database URL, Django configured
            differently, or a second call with different values.
    """
    global _resolved
    from django.conf import settings as django_conf

    with _lock:
        wanted = build_settings(
            home=home,
            database_url=database_url,
            storage=storage,
            django_settings=django_settings,
            **overrides,
        )
        if _resolved is not None:
            if _comparable(wanted) != _comparable(_resolved):
                diff = sorted(
                    k for k in set(wanted) | set(_resolved) if wanted.get(k) != _resolved.get(k)
                )
                diff = [k for k in diff if k != "SECRET_KEY"]
                raise ConfigurationError(
                    f"tracker is already configured in this process with different values "
                    f"({', '.join(diff)}). Settings cannot change after Django has started: "
                    f"restart the Python process (or the notebook kernel) to use new values."
                )
        elif django_conf.configured:
            raise ConfigurationError(
                "Django settings are already configured in this process (a Django project, or "
                "DJANGO_SETTINGS_MODULE). Inside a Django project, add 'tracker' to "
                "INSTALLED_APPS and use tracker without calling configure()."
            )
        else:
            import django

            _resolved = copy.deepcopy(wanted)
            django_conf.configure(**wanted)
            django.setup()

        _apply_async_policy(allow_async_unsafe, quiet=quiet)
        # Ready before migrating: the migration may run on the database thread, which must not
        # wait for this lock.
        _mark_ready()
        if migrate:
            from tracker._dispatch import call

            call("configure", ensure_migrated)


def _apply_async_policy(allow: bool | None, *, quiet: bool) -> None:
    """Enable Django's async-unsafe opt-out for a Jupyter kernel process, never elsewhere."""
    global _unsafe_enabled_by_us
    from tracker._dispatch import in_kernel

    if not in_kernel():
        return
    if allow is False:
        if _unsafe_enabled_by_us:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
            _unsafe_enabled_by_us = False
        return
    if os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE"):
        return
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    _unsafe_enabled_by_us = True
    if not quiet:
        print(
            "tracker: raw Django ORM calls are enabled in this Jupyter kernel "
            "(DJANGO_ALLOW_ASYNC_UNSAFE, this kernel only); "
            "turn off with tracker.configure(allow_async_unsafe=False).",
            file=sys.stderr,
        )


def _mark_ready() -> None:
    global _ready
    _ready = True


def ensure_ready() -> None:
    """Make sure Django is set up before core work: configure with defaults if nobody did.

    Inside a host Django project (settings configured elsewhere) it checks that tracker is
    installed and that the app registry is ready.
    """
    if _ready:
        return
    from django.apps import apps
    from django.conf import settings as django_conf

    with _lock:
        if _ready:
            return
        if _resolved is None and not django_conf.configured:
            if os.environ.get("DJANGO_SETTINGS_MODULE"):
                import django

                django.setup()
            else:
                configure()
                return
        if not apps.ready:
            import django

            django.setup()
        if not apps.is_installed("tracker"):
            raise ConfigurationError(
                "tracker is not in this Django project's INSTALLED_APPS. Add 'tracker' (and "
                "'tracker_api' to serve the REST API) to INSTALLED_APPS, then run "
                "`python manage.py migrate`."
            )
        _mark_ready()


def is_configured() -> bool:
    return _resolved is not None


@contextmanager
def _migration_lock(connection: Any) -> Iterator[None]:
    """Serialise migrations across processes: an advisory lock on PostgreSQL, a file lock on SQLite."""
    vendor = connection.vendor
    if vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", [0x7472_6163])  # "trac"
        try:
            yield
        finally:
            with connection.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", [0x7472_6163])
    elif vendor == "sqlite":
        import fcntl

        path = str(connection.settings_dict["NAME"]) + ".migrate-lock"
        with open(path, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    else:
        yield


def pending_migrations(using: str = "default") -> list[str]:
    """Names of migrations not yet applied to the database ``using``."""
    from django.db import connections
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connections[using])
    targets = executor.loader.graph.leaf_nodes()
    return [f"{m.app_label}.{m.name}" for m, _ in executor.migration_plan(targets)]


def ensure_migrated(using: str = "default") -> None:
    """Apply pending migrations, once, even when several processes start together."""
    from django.core.management import call_command
    from django.db import connections

    if not pending_migrations(using):
        return
    with _migration_lock(connections[using]):
        if pending_migrations(using):
            call_command("migrate", database=using, interactive=False, verbosity=0)
