"""`tracker import-labels PROJECT PATH`: samples, annotations and predictions from Label Studio JSON."""

from __future__ import annotations

from typing import Any

from tracker.management.base import EXIT_USAGE, CommandFailed, Result, TrackerCommand, render_record


class Command(TrackerCommand):
    help = "Import a Label Studio JSON export: samples, annotations and predictions (all or nothing)."
    examples = (
        "tracker import-labels reviews export.json",
        "tracker import-labels reviews export.json --task sentiment=review_sentiment --annotator alice",
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("project", help="the project (created on first use)")
        parser.add_argument("path", help="a Label Studio JSON export (a list of tasks)")
        parser.add_argument("--task", action="append", metavar="FROM_NAME=TASK", help="store Label Studio's from_name under this task name (repeatable)")
        parser.add_argument("--annotator", help="the annotator for annotations without completed_by (default: your OS account)")

    def run(self, *, project: str, path: str, task: list[str] | None, annotator: str | None, **options: Any) -> Result:
        from tracker.services import interchange

        source = self.input_path(path, "Label Studio export")
        mapping = {}
        for item in task or ():
            src, sep, dst = item.partition("=")
            if not sep or not src.strip() or not dst.strip():
                raise CommandFailed(f"--task takes FROM_NAME=TASK, not {item!r}.", EXIT_USAGE)
            mapping[src.strip()] = dst.strip()
        result = interchange.import_label_studio(project, source, tasks=mapping or None, annotator=annotator)
        data = {"project": project, "path": str(source.resolve()), **result}
        text = render_record(
            {k: (", ".join(map(str, v)) if isinstance(v, (list, tuple)) else v) for k, v in result.items()},
            title=f"Imported {source.name} into {project!r}:",
        )
        return Result(data, text)
