"""`tracker doctor`: check settings, database, migrations, storage and Jupyter kernels."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from tracker.management.base import EXIT_FAILED, EXIT_OK, Result, TrackerCommand

_MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


class Command(TrackerCommand):
    help = "Check settings, database, migrations, storage and Jupyter kernels; print a fix for each problem."
    examples = (
        "tracker doctor",
        "tracker --database-url postgres://tracker@db:5432/tracker doctor",
        "tracker doctor --json | jq '.checks[] | select(.status == \"fail\")'",
    )
    requires_migrations = False  # reporting pending migrations is one of its checks

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--no-kernel", action="store_true", help="skip the Jupyter kernel check (servers without notebooks)"
        )

    def run(self, *, no_kernel: bool = False, **options: Any) -> Result:
        from tracker.services import ops

        checks = ops.doctor(kernel=not no_kernel)
        failed = [c for c in checks if c.status == "fail"]
        warned = [c for c in checks if c.status == "warn"]
        width = max(len(c.name) for c in checks)
        lines = []
        for c in checks:
            lines.append(f"{_MARK[c.status]}  {c.name.ljust(width)}  {c.detail}")
            if c.fix and c.status in ("fail", "warn"):
                lines.append(f"      {' ' * width}  fix: {c.fix}")
        if failed:
            lines.append(f"\n{len(failed)} check(s) failed: {', '.join(c.name for c in failed)}.")
        elif warned:
            lines.append(f"\nAll checks passed, {len(warned)} with a warning.")
        else:
            lines.append("\nAll checks passed.")
        data = {"ok": not failed, "checks": [asdict(c) for c in checks]}
        error = f"{len(failed)} check(s) failed: {', '.join(c.name for c in failed)}." if failed else ""
        return Result(data, "\n".join(lines), EXIT_FAILED if failed else EXIT_OK, error=error)
