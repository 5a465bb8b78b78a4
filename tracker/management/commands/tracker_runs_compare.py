"""`tracker runs compare RUN RUN ...`: params and metrics of runs side by side."""

from __future__ import annotations

from typing import Any

from tracker.management.base import (
    Result,
    TrackerCommand,
    format_duration,
    render_table,
    seconds_of,
)


class Command(TrackerCommand):
    cli_verb = "runs compare"
    help = "Compare runs side by side: one column per run; status, params, metrics (last/min/max), tags."
    examples = (
        "tracker runs compare 3f2a 9c1d",
        "tracker runs compare 3f2a 9c1d 77e0 --diff        # only the rows that differ",
        "tracker runs compare 3f2a 9c1d --json",
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("runs", nargs="+", metavar="RUN", help="run ids (or unique prefixes)")
        parser.add_argument("--diff", action="store_true", help="only rows whose values differ between the runs")

    def run(self, *, runs: list[str], diff: bool, **options: Any) -> Result:
        from tracker.services import runs as core

        table = core.compare(runs, only_differences=diff)
        columns = [str(c) for c in table.columns]
        rows, shown = [], []
        for field, values in zip(table.index, table.itertuples(index=False)):
            cells = dict(zip(columns, values))
            if field == "duration":
                cells = {c: seconds_of(v) for c, v in cells.items()}
                shown.append({"field": field, **{c: format_duration(v) for c, v in cells.items()}})
            else:
                shown.append({"field": str(field), **cells})
            rows.append({"field": str(field), **cells})
        text = render_table(shown, [("field", ""), *columns], empty="The runs do not differ." if diff else "(nothing)")
        return Result({"runs": columns, "rows": rows}, text)
