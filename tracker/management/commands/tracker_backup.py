"""`tracker backup PATH`: a consistent backup of the database and its storage files."""

from __future__ import annotations

from typing import Any

from tracker.management.base import Result, TrackerCommand, format_size, render_record


class Command(TrackerCommand):
    help = "Back up the database and the storage files it references into one .tar/.tar.gz, safely while others write."
    examples = (
        "tracker backup ~/backups/tracker-$(date +%Y%m%d).tar.gz",
        "tracker backup nightly.tar --method copy      # PostgreSQL without pg_dump installed",
        "tracker --database-url postgres://tracker@db/tracker backup nightly.tar --force",
    )
    requires_migrations = False  # a backup copies the database as it is

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("path", help="the archive to write: .tar or .tar.gz")
        parser.add_argument("--force", action="store_true", help="replace PATH if it exists")
        parser.add_argument(
            "--method", choices=("auto", "pg_dump", "copy"), default="auto",
            help="PostgreSQL: pg_dump, or copy (binary COPY of each table; needs no client tools); "
            "auto (default) uses pg_dump when it is installed in the server's version or newer",
        )

    def run(self, *, path: str, force: bool, method: str, **options: Any) -> Result:
        from tracker.services import backups

        report = backups.backup(path, overwrite=force, progress=self.progress, method=method)
        data = {**report.manifest(), "path": report.path, "archive_bytes": report.archive_bytes, "seconds": report.seconds}
        data["files"] = len(report.files)
        data.pop("tables", None)
        counts = report.counts
        text = render_record(
            {
                "archive": f"{report.path} ({format_size(report.archive_bytes)})",
                "database": f"{report.vendor} ({report.database_format}), {format_size(report.database_bytes)}",
                "runs": counts.get("tracker_run", 0),
                "metric points": counts.get("tracker_metric", 0),
                "samples": counts.get("tracker_sample", 0),
                "dataset versions": counts.get("tracker_dataset_version", 0),
                "annotations": counts.get("tracker_annotation", 0),
                "files": f"{len(report.files):,} ({format_size(report.files_bytes)})",
                "took": f"{report.seconds:.1f} s",
            },
            title="Backup written.",
        )
        return Result(data, text)
