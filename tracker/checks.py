"""System checks for settings that only make sense together."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks


@checks.register(checks.Tags.database)
def check_sqlite_options(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Warn when an SQLite database lacks the options that make concurrent writers wait."""
    out: list[checks.CheckMessage] = []
    for alias, db in settings.DATABASES.items():
        if not db.get("ENGINE", "").endswith("sqlite3"):
            continue
        options = db.get("OPTIONS", {})
        if str(options.get("transaction_mode", "")).upper() != "IMMEDIATE":
            out.append(
                checks.Warning(
                    f"DATABASES[{alias!r}] is SQLite without transaction_mode IMMEDIATE: two "
                    f"writers at once fail with 'database is locked'.",
                    hint="Use tracker.configuration.sqlite_database(path) to build the entry.",
                    id="tracker.W001",
                )
            )
    return out


@checks.register()
def check_tracker_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from tracker.conf import DEFAULTS

    user = getattr(settings, "TRACKER", {}) or {}
    unknown = sorted(set(user) - set(DEFAULTS))
    if unknown:
        return [
            checks.Error(
                f"Unknown TRACKER settings: {', '.join(unknown)}.",
                hint=f"Known settings: {', '.join(DEFAULTS)}.",
                id="tracker.E001",
            )
        ]
    return []
