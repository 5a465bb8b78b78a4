"""`tracker export-labels PROJECT PATH`: annotations as JSONL, CSV or Label Studio JSON."""

from __future__ import annotations

from typing import Any

from tracker.management.base import EXIT_USAGE, CommandFailed, Result, TrackerCommand, format_size

_FORMATS = ("jsonl", "csv", "label-studio")


class Command(TrackerCommand):
    help = "Export a task's labels as JSONL or CSV, or samples with annotations as Label Studio JSON."
    examples = (
        "tracker export-labels reviews labels.jsonl --task sentiment",
        "tracker export-labels reviews final.csv --task sentiment --strategy majority --include-data",
        "tracker export-labels reviews tasks.json --format label-studio     # every task",
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("project", help="the project")
        parser.add_argument("path", help="the file to write (.jsonl, .csv, or .json for Label Studio)")
        parser.add_argument("--task", action="append", help="the annotation task (repeatable for Label Studio; JSONL/CSV need one)")
        parser.add_argument("--format", choices=_FORMATS, help="jsonl, csv or label-studio (default: from the extension; .json is Label Studio)")
        parser.add_argument("--strategy", choices=("majority", "accepted", "latest"), help="one resolved label per sample instead of every annotation (JSONL/CSV)")
        parser.add_argument("--include-data", action="store_true", help="add each sample's data (JSONL/CSV)")
        parser.add_argument("--force", action="store_true", help="overwrite PATH if it exists")

    def run(self, *, project: str, path: str, task: list[str] | None, format: str | None, strategy: str | None,
            include_data: bool, force: bool, **options: Any) -> Result:
        from tracker.services import interchange

        dest = self.output_path(path, force=force)
        fmt = format or {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".json": "label-studio"}.get(dest.suffix.lower())
        if fmt is None:
            raise CommandFailed(
                f"Cannot tell the format of {dest.name!r}; name it .jsonl, .csv or .json (Label Studio), or pass --format.",
                EXIT_USAGE,
            )
        if fmt == "label-studio":
            if strategy or include_data:
                raise CommandFailed("--strategy and --include-data apply to JSONL and CSV, not Label Studio JSON.", EXIT_USAGE)
            tasks_arg: Any = task[0] if task and len(task) == 1 else task
            items = interchange.export_label_studio(project, tasks_arg, dest)
            annotations = sum(len(i.get("annotations") or ()) for i in items)
            predictions = sum(len(i.get("predictions") or ()) for i in items)
            data = {"path": str(dest.resolve()), "format": fmt, "tasks": len(items), "annotations": annotations,
                    "predictions": predictions, "bytes": dest.stat().st_size}
            text = (f"Wrote {len(items):,} Label Studio tasks ({annotations:,} annotations, {predictions:,} "
                    f"predictions) to {dest} ({format_size(data['bytes'])}).")
            return Result(data, text)
        if not task or len(task) != 1:
            raise CommandFailed(f"{fmt.upper()} export needs exactly one --task NAME.", EXIT_USAGE)
        written = interchange.export_labels(project, task[0], dest, format=fmt, strategy=strategy, include_data=include_data)
        with open(written, "rb") as fh:
            lines = sum(1 for _ in fh)
        rows = lines - 1 if fmt == "csv" and lines else lines
        data = {"path": str(written.resolve()), "format": fmt, "task": task[0], "strategy": strategy, "rows": rows,
                "bytes": written.stat().st_size}
        what = "resolved labels" if strategy else "annotations"
        return Result(data, f"Wrote {rows:,} {what} of task {task[0]!r} to {written} ({fmt}, {format_size(data['bytes'])}).")
