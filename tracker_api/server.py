"""Run a tracker server: :func:`serve` (what ``tracker serve`` calls) and the entry points' setup.

    python -m tracker_api.server --host 127.0.0.1 --port 8000 [--workers 2] [--server gunicorn]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
from typing import Any
from urllib.parse import quote

from tracker.exceptions import ConfigurationError

SERVERS = ("uvicorn", "gunicorn")


def configure_from_environment(*, persistent_connections: bool = False) -> None:
    """Configure tracker from TRACKER_* variables, unless Django is configured already (a host
    project, or a process that called :func:`tracker.configure` itself).

    ``persistent_connections`` (the WSGI entry point) keeps each worker thread's database
    connection open between requests: opening one per request cost more than the request
    itself on PostgreSQL (p50 195 ms against 20 ms for a page of samples). Django advises
    against it under ASGI, so the ASGI entry point leaves it off.
    """
    from django.conf import settings

    import tracker

    if settings.configured or os.environ.get("DJANGO_SETTINGS_MODULE"):
        import django

        django.setup()
        return
    # uvicorn imports the app inside its event loop, where Django refuses database work, so
    # the (locked, once-only) migration check runs on a plain thread.
    tracker.configure(quiet=True, migrate=False)
    if persistent_connections:
        # Read when each thread first connects, so setting it before any request is enough.
        db = settings.DATABASES["default"]
        db["CONN_MAX_AGE"] = db.get("CONN_MAX_AGE") or 600
    from tracker.configuration import ensure_migrated

    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            ensure_migrated()
        except BaseException as exc:  # re-raised below, in the importing thread
            errors.append(exc)
        finally:
            from django.db import connections

            connections.close_all()

    worker = threading.Thread(target=migrate, name="tracker-migrate")
    worker.start()
    worker.join()
    if errors:
        raise errors[0]


def database_url(db: dict[str, Any]) -> str:
    """A URL for a Django DATABASES entry, so worker processes reach the same database."""
    engine = db.get("ENGINE", "")
    if engine.endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    if "postgresql" in engine:
        user = quote(db.get("USER") or "", safe="")
        password = quote(db.get("PASSWORD") or "", safe="")
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"
    raise ConfigurationError(f"tracker serve supports SQLite and PostgreSQL, not {engine}.")


def _child_env() -> dict[str, str]:
    from django.conf import settings

    env = dict(os.environ)
    if not env.get("DJANGO_SETTINGS_MODULE"):
        env["TRACKER_HOME"] = str(settings.TRACKER["HOME"])
        env["TRACKER_DATABASE_URL"] = database_url(settings.DATABASES["default"])
    return env


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    workers: int = 1,
    server: str = "uvicorn",
    log_level: str = "info",
) -> int:
    """Serve the API (and the admin) until interrupted; returns the server's exit code.

    Args:
        host: address to listen on; 127.0.0.1 keeps it on this machine.
        port: TCP port.
        workers: worker processes (each holds its own database connection).
        server: ``"uvicorn"`` (ASGI) or ``"gunicorn"`` (WSGI, threaded workers).
        log_level: the server's log level.

    Raises:
        ConfigurationError: an unknown server, or it is not installed
            (``pip install 'tracker[serve]'``).
    """
    import tracker

    if server not in SERVERS:
        raise ConfigurationError(f"Unknown server {server!r}; choose one of {', '.join(SERVERS)}.")
    if not isinstance(workers, int) or workers < 1:
        raise ConfigurationError(f"workers must be a positive integer, not {workers!r}.")
    try:
        __import__(server)
    except ImportError:
        raise ConfigurationError(f"{server} is not installed: pip install 'tracker[serve]'.") from None
    from django.conf import settings

    if not settings.configured:
        tracker.configure(quiet=True)  # also applies pending migrations, once, before workers
    env = _child_env()
    if server == "uvicorn":
        cmd = [
            sys.executable, "-m", "uvicorn", "tracker_api.asgi:application",
            "--host", host, "--port", str(port), "--workers", str(workers),
            "--log-level", log_level, "--no-server-header",
        ]
        try:
            import httptools  # noqa: F401
        except ImportError:
            pass
        else:
            # uvicorn's pure-Python h11 parser answers small keep-alive requests ~40 ms late
            # (measured: 56 ms vs 17 ms p50 per request); httptools does not.
            cmd += ["--http", "httptools"]
    else:
        cmd = [
            sys.executable, "-m", "gunicorn", "tracker_api.wsgi:application",
            "--bind", f"{host}:{port}", "--workers", str(workers),
            "--worker-class", "gthread", "--threads", "4", "--log-level", log_level,
            "--timeout", "300", "--keep-alive", "30",
        ]
    proc = subprocess.Popen(cmd, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        return proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tracker_api.server", description=serve.__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--server", choices=SERVERS, default="uvicorn")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    return serve(args.host, args.port, workers=args.workers, server=args.server, log_level=args.log_level)


if __name__ == "__main__":
    sys.exit(main())
