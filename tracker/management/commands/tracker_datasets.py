"""`tracker datasets [NAME]`: list datasets, or the versions of one."""

from __future__ import annotations

from typing import Any

from tracker.management.base import Result, TrackerCommand, frame_records, render_table


class Command(TrackerCommand):
    help = "List datasets with their latest version, or every version of the dataset NAME."
    examples = (
        "tracker datasets",
        "tracker datasets --project reviews",
        "tracker datasets reviews-clean          # its versions",
        "tracker datasets --json | jq '.[].name'",
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("name", nargs="?", help="a dataset: list its versions instead")
        parser.add_argument("--project", help="only this project's datasets")

    def run(self, *, name: str | None, project: str | None, **options: Any) -> Result:
        from tracker.services import datasets

        if name:
            rows = frame_records(datasets.list_versions(name, project=project))
            text = render_table(
                rows,
                ["version", "samples", "splits", ("content_hash", "content"), "runs", "created_at", "description"],
                empty=f"Dataset {name!r} has no finished version yet.",
            )
            return Result(rows, text)
        rows = frame_records(datasets.list_datasets(project))
        text = render_table(
            [{**r, "content_hash": (r.get("content_hash") or "")[:12]} for r in rows],
            ["project", "name", ("latest_version", "latest"), "versions", "samples", "splits", ("content_hash", "content"), "created_at"],
            empty="No datasets yet; create one with tracker.create_dataset(name, samples) in Python.",
        )
        return Result(rows, text)
