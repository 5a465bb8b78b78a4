"""Run a tracker server: :func:`serve` (what ``tracker serve`` calls) and the entry points' setup.

    python -m tracker_api.server --host 127.0.0.1 --port 8000 [--workers 2] [--server granian|gunicorn|uvicorn]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from tracker.exceptions import ConfigurationError

SERVERS = ("granian", "gunicorn", "uvicorn")


@dataclass(frozen=True)
class ServerChoice:
    """The server :func:`serve` runs: ``name``, uvicorn's ``http`` parser, and ``why`` (a
    clause for the start-up line: "gunicorn, the default where it is installed ...")."""

    name: str
    http: str | None
    why: str


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def choose_server(
    requested: str | None = None,
    *,
    installed: Callable[[str], bool] = _installed,
    posix: bool | None = None,
) -> ServerChoice:
    """The server to run: ``requested`` if given, else the first installed of granian (WSGI),
    gunicorn (WSGI, POSIX only) and uvicorn (ASGI, with httptools when that is installed).

    granian comes first: its WSGI server (Rust, hyper) answered a small request in about half
    of gunicorn's time here (136 us against 250 us for a do-nothing app, including the client;
    benchmarks/bench_servers.py), streams request and response bodies, and runs on Windows
    too. Both WSGI servers keep their database connections between requests (Django advises
    against that under ASGI). uvicorn's own h11 parser answers keep-alive requests ~40 ms
    late, hence httptools.

    Args:
        requested: "granian", "gunicorn" or "uvicorn" (``--server``), or None to choose.
        installed: whether a module can be imported (tests pass their own).
        posix: whether this is a POSIX system (default: ``os.name == "posix"``).

    Raises:
        ConfigurationError: an unknown server, the one asked for cannot run here, or none is
            installed (``pip install 'tracker[serve]'``).
    """
    posix = os.name == "posix" if posix is None else posix
    if requested is not None and requested not in SERVERS:
        raise ConfigurationError(f"Unknown server {requested!r}; choose one of {', '.join(SERVERS)}.")
    if requested is not None and not installed(requested):
        raise ConfigurationError(
            f"{requested} is not installed: pip install 'tracker[serve]' (or leave out --server "
            f"to use whichever server is installed)."
        )
    if requested == "gunicorn" and not posix:
        raise ConfigurationError(
            "gunicorn runs on POSIX systems (Linux, macOS) only; use --server granian or uvicorn here."
        )
    if requested in ("granian", "gunicorn"):
        return ServerChoice(requested, None, f"{requested}, as --server asked")
    if requested is None and installed("granian"):
        return ServerChoice(
            "granian", None,
            "granian, the default where it is installed (WSGI: threaded workers that keep their "
            "database connections; the fastest here)",
        )
    if requested is None and posix and installed("gunicorn"):
        return ServerChoice(
            "gunicorn", None,
            "gunicorn, since granian is not installed (WSGI: threaded workers that keep their "
            "database connections)",
        )
    if requested is None and not installed("uvicorn"):
        if installed("gunicorn"):  # but this is not a POSIX system
            raise ConfigurationError(
                "gunicorn does not run on Windows and neither granian nor uvicorn is installed: "
                "pip install 'tracker[serve]'."
            )
        raise ConfigurationError(
            "No server is installed (granian, gunicorn or uvicorn), so there is nothing to run "
            "the API: pip install 'tracker[serve]'."
        )
    if requested is not None:
        because = "as --server asked"
    elif posix:
        because = "since neither granian nor gunicorn is installed"
    else:
        because = "since granian is not installed and gunicorn does not run on Windows"
    if installed("httptools"):
        return ServerChoice("uvicorn", "httptools", f"uvicorn with httptools, {because}")
    return ServerChoice(
        "uvicorn", None,
        f"uvicorn with its slower h11 parser (pip install httptools), {because}",
    )


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
    server: str | None = None,
    log_level: str = "info",
) -> int:
    """Serve the API (and the admin) until interrupted; returns the server's exit code.

    Args:
        host: address to listen on; 127.0.0.1 keeps it on this machine.
        port: TCP port.
        workers: worker processes (each holds its own database connection).
        server: ``"granian"`` or ``"gunicorn"`` (WSGI, threaded workers) or ``"uvicorn"``
            (ASGI); None picks one as :func:`choose_server` does.
        log_level: the server's log level.

    Raises:
        ConfigurationError: see :func:`choose_server`; workers is not a positive integer.
    """
    import tracker

    choice = choose_server(server)
    if not isinstance(workers, int) or workers < 1:
        raise ConfigurationError(f"workers must be a positive integer, not {workers!r}.")
    from django.conf import settings

    if not settings.configured:
        tracker.configure(quiet=True)  # also applies pending migrations, once, before workers
    env = _child_env()
    if choice.name == "uvicorn":
        cmd = [
            sys.executable, "-m", "uvicorn", "tracker_api.asgi:application",
            "--host", host, "--port", str(port), "--workers", str(workers),
            "--log-level", log_level, "--no-server-header",
        ]
        if choice.http:
            cmd += ["--http", choice.http]
    elif choice.name == "granian":
        cmd = [
            sys.executable, "-m", "granian", "tracker_api.wsgi:application", "--interface", "wsgi",
            "--host", host, "--port", str(port), "--workers", str(workers),
            # As gunicorn's gthread workers: 4 threads each, each keeping its database
            # connection; an idle thread (and with it its connection) goes after 10 minutes.
            "--blocking-threads", "4", "--blocking-threads-idle-timeout", "600",
            "--no-ws", "--log-level", log_level, "--workers-kill-timeout", "30",
        ]
    else:
        cmd = [
            sys.executable, "-m", "gunicorn", "tracker_api.wsgi:application",
            "--bind", f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            "--workers", str(workers),
            "--worker-class", "gthread", "--threads", "4", "--log-level", log_level,
            "--timeout", "300", "--keep-alive", "30", *_gunicorn_extra_options(),
        ]
    # The server's whole log goes to stderr (uvicorn writes its access lines to stdout): stdout
    # is for the command's result, which scripts read (`tracker serve --json`).
    proc = subprocess.Popen(cmd, env=env, stdout=2)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        return proc.wait()


def _gunicorn_extra_options() -> list[str]:
    """gunicorn 25.1+ opens a control socket at one path per user ($HOME/.gunicorn/gunicorn.ctl),
    which a second server on the machine takes over; tracker does not use it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = tuple(int(p) for p in re.findall(r"\d+", version("gunicorn"))[:2])
    except PackageNotFoundError:
        return []
    return ["--no-control-socket"] if release >= (25, 1) else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tracker_api.server", description=serve.__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--server", choices=SERVERS, default=None, help="default: granian where installed, else gunicorn on POSIX, else uvicorn")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    print(f"Serving with {choose_server(args.server).why}.", file=sys.stderr, flush=True)
    return serve(args.host, args.port, workers=args.workers, server=args.server, log_level=args.log_level)


if __name__ == "__main__":
    sys.exit(main())
