"""`tracker restore PATH`: restore a backup into the configured database and storage."""

from __future__ import annotations

from typing import Any

from tracker.management.base import Result, TrackerCommand, render_record


class Command(TrackerCommand):
    help = "Restore a backup made by `tracker backup` into the configured (empty) database and storage, then check it."
    examples = (
        "tracker --home ~/tracker-restored restore ~/backups/tracker-20260131.tar.gz",
        "TRACKER_DATABASE_URL=postgres://tracker@db/tracker_new tracker restore nightly.tar",
        "tracker restore nightly.tar --force      # replaces a database that holds data",
    )
    requires_migrations = False  # the backup brings its schema; it is migrated forward afterwards

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("path", help="a backup archive (.tar or .tar.gz)")
        parser.add_argument("--force", action="store_true", help="replace a database that already holds data")

    def run(self, *, path: str, force: bool, **options: Any) -> Result:
        from tracker.services import backups, ops

        self.input_path(path, "backup")
        report = backups.restore(path, force=force, progress=self.progress)
        data = {
            "path": report.path,
            "vendor": report.vendor,
            "backup_created_at": report.backup_created_at,
            "counts": report.counts,
            "files_written": report.files_written,
            "files_present": report.files_present,
            "migrations_applied": report.migrations_applied,
            "checks": report.checks,
            "seconds": report.seconds,
        }
        where = ops.database_summary()
        text = render_record(
            {
                "into": where.get("path") or where.get("url"),
                "backup of": report.backup_created_at,
                "runs": report.counts.get("tracker_run", 0),
                "metric points": report.counts.get("tracker_metric", 0),
                "samples": report.counts.get("tracker_sample", 0),
                "files": f"{report.files_written:,} written, {report.files_present:,} already present",
                "migrations": f"{len(report.migrations_applied)} applied" if report.migrations_applied else "none needed",
                "checks": "; ".join(report.checks),
                "took": f"{report.seconds:.1f} s",
            },
            title="Restored.",
        )
        return Result(data, text)
