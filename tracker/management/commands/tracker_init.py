"""`tracker init`: create the tracker home and database, and say where they are."""

from __future__ import annotations

from typing import Any

from tracker.management.base import Result, TrackerCommand, render_record


class Command(TrackerCommand):
    help = "Create the tracker home and database (applying migrations), and print where they are."
    examples = (
        "tracker init",
        "tracker --home ~/projects/churn/.tracker init",
        "TRACKER_DATABASE_URL=postgres://tracker@db:5432/tracker tracker init --json",
    )
    requires_migrations = False  # init applies them and reports which

    def run(self, **options: Any) -> Result:
        from tracker.services import ops

        info = ops.initialize()
        db = info["database"]
        applied = info["migrations_applied"]
        state = "created" if info["created"] else ("migrated" if applied else "already up to date")
        text = render_record(
            {
                "home": info["home"] or "(host Django project)",
                "database": f"{db.get('path') or db.get('url')} ({db['vendor']}, {state})",
                "storage": info["storage"].get("location") or info["storage"]["backend"],
                "migrations": f"{len(applied)} applied now" if applied else "none pending",
            },
            title="tracker is ready.",
        )
        text += (
            "\n\nNext: `tracker doctor` checks the setup; in a notebook, `import tracker; "
            "tracker.configure()` uses this home."
        )
        return Result(info, text)
