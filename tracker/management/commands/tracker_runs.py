"""`tracker runs`: list runs with filters on project, status, name, params, tags and metrics."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from tracker.management.base import (
    EXIT_USAGE,
    CommandFailed,
    Result,
    TrackerCommand,
    format_duration,
    frame_records,
    parse_key_values,
    render_table,
    seconds_of,
)

_BASE_COLUMNS = ["id", "name", "project", "status", "started_at", "duration"]


def parse_since(text: str) -> dt.datetime:
    """``"2h"``, ``"3d"``, ``"90m"`` ago, or an ISO date/time."""
    from django.utils import timezone

    m = re.fullmatch(r"\s*(\d+)\s*([mhdw])\s*", text)
    if m:
        seconds = int(m.group(1)) * {"m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
        return timezone.now() - dt.timedelta(seconds=seconds)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise CommandFailed(
            f"--since takes an age like 90m, 12h, 7d, 2w or a date like 2026-01-31, not {text!r}.", EXIT_USAGE
        ) from None
    return when if timezone.is_aware(when) else timezone.make_aware(when, dt.UTC)


class Command(TrackerCommand):
    help = "List runs, newest first, filtered by project, status, name, params, tags and metrics."
    examples = (
        "tracker runs --project churn",
        "tracker runs --status finished --metric 'val_loss<0.3' --param 'lr>=0.001' --tag stage=prod",
        "tracker runs --name 'sweep-*' --since 2d --columns metrics.val_loss params.lr",
        "tracker runs --project churn --json | jq -r '.[] | .id'",
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--project", help="only this project")
        parser.add_argument("--status", action="append", choices=("running", "finished", "failed", "killed"), help="only runs in this status (repeatable)")
        parser.add_argument("--name", help="run name; * matches anything ('sweep-*')")
        parser.add_argument("--param", action="append", metavar="FILTER", help="KEY=VALUE, KEY!=VALUE, KEY<N, KEY>=N ... on params (repeatable)")
        parser.add_argument("--tag", action="append", metavar="FILTER", help="the same on tags (repeatable)")
        parser.add_argument("--metric", action="append", metavar="FILTER", help="the same on the last value of a metric (repeatable)")
        parser.add_argument("--parent", help="only children of this run")
        parser.add_argument("--since", help="started within (90m, 12h, 7d) or after a date (2026-01-31)")
        parser.add_argument("--limit", type=int, default=50, help="at most this many runs (default 50; 0 for all)")
        parser.add_argument("--columns", nargs="+", metavar="COLUMN", help="extra columns to show: params.lr metrics.val_loss tags.stage ...")
        parser.add_argument("--all-columns", action="store_true", help="show every params.*, metrics.* and tags.* column")

    def run(self, *, project: str | None, status: list[str] | None, name: str | None, param: list[str] | None,
            tag: list[str] | None, metric: list[str] | None, parent: str | None, since: str | None, limit: int,
            columns: list[str] | None, all_columns: bool, **options: Any) -> Result:
        from tracker.services import runs as core

        if limit < 0:
            raise CommandFailed(f"--limit must be 0 (all) or more, not {limit}.", EXIT_USAGE)
        if project is not None:
            from tracker.services.projects import get_project

            get_project(project)  # a misspelt project is an error (as `tracker datasets`), not "No runs match."
        qs = core.filter_runs(
            project,
            status=status,
            name=name,
            params=parse_key_values(param, "param") or None,
            tags=parse_key_values(tag, "tag") or None,
            metrics=parse_key_values(metric, "metric") or None,
            parent=parent,
            since=parse_since(since) if since else None,
            limit=limit or None,
        )
        frame = core.runs_frame(qs)
        rows = frame_records(frame, index="id")
        for r in rows:
            r["duration"] = seconds_of(r.get("duration"))
        shown = list(_BASE_COLUMNS)
        if all_columns:
            shown += [c for c in frame.columns if c.split(".", 1)[0] in ("params", "metrics", "tags")]
        elif columns:
            unknown = [c for c in columns if c not in frame.columns and c not in _BASE_COLUMNS]
            if unknown and rows:
                raise CommandFailed(
                    f"No run here has the column {unknown[0]!r}; columns are "
                    f"{', '.join(c for c in frame.columns if '.' in c) or 'params.*, metrics.*, tags.*'}.",
                    EXIT_USAGE,
                )
            shown += [c for c in columns if c not in shown]
        else:
            shown += [c for c in frame.columns if c.startswith("metrics.")][:4]
        table_rows = [{**r, "duration": format_duration(r["duration"])} for r in rows]
        headers = [(c, c.removeprefix("metrics.") if c.startswith("metrics.") else c) for c in shown]
        text = render_table(table_rows, headers, empty="No runs match.")
        if rows and limit and len(rows) == limit:
            text += f"\n(showing the newest {limit}; --limit 0 shows all)"
        return Result(rows, text)
