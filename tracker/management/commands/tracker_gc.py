"""`tracker gc`: find (and with --delete remove) artifact blobs nothing references."""

from __future__ import annotations

from typing import Any

from tracker.management.base import (
    EXIT_USAGE,
    CommandFailed,
    Result,
    TrackerCommand,
    format_size,
    render_table,
)


class Command(TrackerCommand):
    help = "List artifact blobs no run or dataset version references (a dry run); --delete removes them."
    examples = (
        "tracker gc                      # what would be removed",
        "tracker gc --delete",
        "tracker gc --delete --grace 0   # also blobs stored in the last hour (no uploads running!)",
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--delete", action="store_true", help="remove what is found (default: only list it)")
        parser.add_argument(
            "--grace", type=float, default=3600.0, metavar="SECONDS",
            help="leave blobs younger than this alone, so uploads in progress are safe (default 3600)",
        )
        parser.add_argument("--limit", type=int, default=20, help="list at most this many blobs (default 20; --json lists all)")

    def run(self, *, delete: bool, grace: float, limit: int, **options: Any) -> Result:
        from tracker.services import ops

        if grace < 0:
            raise CommandFailed(f"--grace must be 0 or more seconds, not {grace:g}.", EXIT_USAGE)
        report = ops.gc(delete=delete, grace=grace, progress=self.progress)
        data = {
            "deleted": report.deleted,
            "grace_seconds": report.grace_seconds,
            "blobs": report.blobs,
            "blob_bytes": report.blob_bytes,
            "orphan_files": report.orphan_files,
            "orphan_bytes": report.orphan_bytes,
            "stale_versions": report.stale_versions,
            "kept_recent": report.kept_recent,
            "kept_referenced_meanwhile": report.kept_referenced_meanwhile,
        }
        verb = "Removed" if delete else "Would remove"
        lines = [
            f"{verb} {len(report.blobs):,} unreferenced blobs ({format_size(report.blob_bytes)})"
            + (f" and {len(report.orphan_files):,} stray files ({format_size(report.orphan_bytes)})" if report.orphan_files else "")
            + "."
        ]
        if report.blobs:
            rows = [{**b, "size": format_size(b["size"])} for b in report.blobs[:limit]]
            lines.append(render_table(rows, ["sha256", "size", "created_at"]))
            if len(report.blobs) > limit:
                lines.append(f"... and {len(report.blobs) - limit:,} more (--json lists all).")
        if report.stale_versions:
            what = "removed" if delete else "would be removed"
            lines.append(f"{report.stale_versions} dataset versions left half-built by a crashed process {what}.")
        if report.kept_recent:
            lines.append(f"{report.kept_recent:,} unreferenced blobs are younger than {report.grace_seconds:g} s and were kept.")
        if report.kept_referenced_meanwhile:
            lines.append(f"{report.kept_referenced_meanwhile:,} blobs became referenced while gc ran and were kept.")
        if not delete and (report.blobs or report.orphan_files):
            lines.append("Nothing was deleted; run `tracker gc --delete` to remove them.")
        return Result(data, "\n".join(lines))
