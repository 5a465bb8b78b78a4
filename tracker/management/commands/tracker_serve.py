"""`tracker serve`: run the REST API (and the admin) on this machine."""

from __future__ import annotations

import sys
from typing import Any

from tracker.management.base import EXIT_FAILED, EXIT_OK, Result, TrackerCommand


class Command(TrackerCommand):
    help = "Serve the REST API, its OpenAPI schema and the admin (granian, else gunicorn, else uvicorn) until Ctrl-C."
    examples = (
        "tracker serve                     # granian where installed, else gunicorn (Linux/macOS), else uvicorn",
        "tracker serve --host 0.0.0.0 --port 8000 --workers 2",
        "tracker serve --server uvicorn --workers 4",
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
        parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
        parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
        parser.add_argument(
            "--server", choices=("granian", "gunicorn", "uvicorn"), default=None,
            help="granian or gunicorn (WSGI, threaded workers) or uvicorn (ASGI); default: granian "
            "when installed, else gunicorn on a POSIX system, else uvicorn (with httptools when installed)",
        )
        parser.add_argument("--log-level", default="info", help="the server's log level (default info)")

    def run(self, *, host: str, port: int, workers: int, server: str | None, log_level: str, **options: Any) -> Result:
        from tracker.exceptions import InvalidValue
        from tracker_api.server import choose_server, serve

        if not 0 < port < 65536:
            raise InvalidValue(f"--port must be between 1 and 65535, not {port}.")
        if workers < 1:
            raise InvalidValue(f"--workers must be at least 1, not {workers}.")
        choice = choose_server(server)
        shown = f"[{host}]" if ":" in host else host
        if not options.get("quiet"):
            self.stderr.write(
                f"Serving tracker at http://{shown}:{port}/api/ (schema /api/schema/, docs /api/docs/, "
                f"admin /admin/) with {choice.why}; Ctrl-C stops it."
            )
            sys.stderr.flush()
        code = serve(host, port, workers=workers, server=choice.name, log_level=log_level)
        # The servers exit 0 on Ctrl-C/SIGTERM; anything else is the server failing.
        if code not in (0, -2, -15):
            return Result(
                {"server": choice.name, "exit_code": code}, "", EXIT_FAILED,
                error=f"The {choice.name} server stopped with exit code {code}; see its log above.",
            )
        return Result({"server": choice.name, "exit_code": 0}, "", EXIT_OK)
