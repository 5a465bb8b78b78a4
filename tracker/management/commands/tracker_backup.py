"""`tracker backup PATH`: a consistent backup of the database and its storage files."""

from __future__ import annotations

from typing import Any

from tracker.management.base import Result, TrackerCommand, format_size, render_record


class Command(TrackerCommand):
    help = "Back up the database and the storage files it references into one .tar/.tar.gz, safely while others write."
    examples = (
        "tracker backup ~/backups/tracker-$(date +%Y%m%d).tar.gz",
        "tracker --database-url postgres://tracker@db/tracker backup nightly.tar --force",
    )
    requires_migrations = False  # a backup copies the database as it is

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("path", help="the archive to write: .tar or .tar.gz")
        parser.add_argument("--force", action="store_true", help="replace PATH if it exists")

    def run(self, *, path: str, force: bool, **options: Any) -> Result:
        from tracker.services import backups

        report = backups.backup(path, overwrite=force, progress=self.progress)
        data = {**report.manifest(), "path": report.path, "archive_bytes": report.archive_bytes, "seconds": report.seconds}
        data["files"] = len(report.files)
        counts = report.counts
        text = render_record(
            {
                "archive": f"{report.path} ({format_size(report.archive_bytes)})",
                "database": f"{report.vendor}, {format_size(report.database_bytes)}",
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
