"""`tracker import-samples PROJECT PATH`: bulk import of a CSV, JSONL or Parquet file."""

from __future__ import annotations

from typing import Any

from tracker.management.base import EXIT_USAGE, CommandFailed, Result, TrackerCommand, render_table


def _report_data(report: Any) -> dict[str, Any]:
    return {
        "project": report.project,
        "source": report.source,
        "stored": report.stored,
        "rows": report.rows,
        "created": report.created,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "merged": report.merged,
        "bad": report.bad,
        "media_stored": report.media_stored,
        "seconds": report.seconds,
        "errors": [{"row": e.row, "where": e.where, "id": e.id, "reason": e.reason} for e in report.errors],
    }


class Command(TrackerCommand):
    help = "Import samples from a CSV, JSONL or Parquet file into a project (re-importing updates by id)."
    examples = (
        "tracker import-samples reviews data/reviews.csv --id-field review_id",
        "tracker import-samples photos photos.jsonl --media-field path   # stores the image files",
        "tracker import-samples reviews dump.parquet --on-error skip --json > report.json",
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("project", help="the project (created on first use)")
        parser.add_argument("path", help="a .csv, .jsonl/.ndjson or .parquet file")
        parser.add_argument("--id-field", help="the column holding each sample's id (default: 'id' if present, else ids from content)")
        parser.add_argument(
            "--on-error", choices=("raise", "skip"), default="raise",
            help="raise (default): any bad row stores nothing; skip: store the good rows, list the bad",
        )
        parser.add_argument("--media-field", help="a column naming a media file (path or URI) per row")
        parser.add_argument("--no-store-media", action="store_true", help="keep media as references instead of copying local files into storage")
        parser.add_argument("--format", choices=("csv", "jsonl", "parquet"), help="the file format, when the extension does not say")

    def run(self, *, project: str, path: str, id_field: str | None, on_error: str, media_field: str | None,
            no_store_media: bool, format: str | None, **options: Any) -> Result:
        from tracker.exceptions import ImportRejected
        from tracker.services.imports import import_samples

        source = self.input_path(path, "file to import")
        try:
            report = import_samples(
                project,
                source,
                id_field=id_field,
                on_error=on_error,
                media_field=media_field,
                store_media=not no_store_media,
                format=format,
                progress=self.progress_choice(),
            )
        except ImportRejected as exc:
            if options.get("json") and exc.report is not None:
                self.emit(Result(_report_data(exc.report)))
            message = (
                str(exc)
                .replace("pass on_error='skip'", "pass --on-error skip")
                .replace("the exception's .report lists", "--json lists")
            )
            raise CommandFailed(message, EXIT_USAGE, exc) from exc
        data = _report_data(report)
        errors = data["errors"]
        text = report.summary()
        if errors:
            shown = errors[:20]
            text += "\n\nSkipped rows:\n" + render_table(shown, ["where", "id", "reason"], max_cell=100)
            if report.bad > len(shown):
                text += f"\n... and {report.bad - len(shown):,} more (--json lists them all)."
        return Result(data, text)
