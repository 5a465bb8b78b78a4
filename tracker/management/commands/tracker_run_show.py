"""`tracker run show RUN`: one run in full: status, params, metrics, tags, artifacts, inputs."""

from __future__ import annotations

from typing import Any

from tracker.management.base import (
    Result,
    TrackerCommand,
    format_duration,
    format_size,
    render_record,
    render_table,
    section,
)


class Command(TrackerCommand):
    cli_verb = "run show"
    help = "Show one run: status, times, environment, params, metric summaries, tags, artifacts, datasets."
    examples = (
        "tracker run show 3f2a9c1d            # an id or a unique prefix of 4+ characters",
        "tracker run show 3f2a9c1d --json | jq .params",
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("run", help="the run id (or a unique prefix of it)")

    def run(self, *, run: str, **options: Any) -> Result:
        from tracker.services import ops

        d = ops.run_details(run)
        head = render_record(
            {
                "id": d["id"],
                "name": d["name"],
                "project": d["project"],
                "status": d["status"],
                "parent": d["parent"],
                "children": ", ".join(d["children"]) if d["children"] else None,
                "started": d["started_at"],
                "ended": d["ended_at"],
                "duration": format_duration(d["duration_seconds"]),
                "host": f"{d['host']} (pid {d['pid']})" if d["pid"] else d["host"],
                "git": f"{d['git_commit'][:12]}{' (dirty)' if d['git_dirty'] else ''}" if d["git_commit"] else None,
                "python": d["python_version"],
            }
        )
        parts = [head]
        if d["error"]:
            parts.append(section("error", d["error"]))
        if d["notes"]:
            parts.append(section("notes", d["notes"]))
        if d["params"]:
            parts.append(section("params", render_record(d["params"])))
        if d["metrics"]:
            parts.append(section("metrics", render_table(d["metrics"], ["key", "last", "step", "min", "max", "count"])))
        if d["tags"]:
            parts.append(section("tags", render_record(d["tags"])))
        if d["artifacts"]:
            arts = [{**a, "size": format_size(a["size"]), "sha256": a["sha256"][:12]} for a in d["artifacts"]]
            parts.append(section("artifacts", render_table(arts, ["name", "kind", "size", "sha256", "created_at"])))
        if d["inputs"]:
            parts.append(section("datasets", render_table(d["inputs"], ["dataset", "version", "context", "samples"])))
        return Result(d, "\n\n".join(parts))
