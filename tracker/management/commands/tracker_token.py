"""`tracker token`: create, list and revoke API tokens."""

from __future__ import annotations

import re
from typing import Any

from tracker.management.base import (
    EXIT_USAGE,
    CommandFailed,
    Result,
    TrackerCommand,
    render_record,
    render_table,
)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_lifetime(text: str) -> float:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"3600"`` -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text or "")
    if not m or float(m.group(1)) <= 0:
        raise CommandFailed(
            f"--expires-in takes a positive duration like 3600, 90m, 12h, 30d or 2w, not {text!r}.", EXIT_USAGE
        )
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


class Command(TrackerCommand):
    help = "Create an API token for a user (the key is printed once), or list or revoke tokens."
    examples = (
        "tracker token alice --name laptop --expires-in 90d",
        "tracker token --list alice",
        "tracker token --revoke trk_AbCdEfGh",
        "export TRACKER_TOKEN=$(tracker token ci --json | jq -r .key)",
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("user", nargs="?", help="the user (username) the token is for; with --list, whose tokens")
        parser.add_argument("--name", default="", help="a label to recognise the token by")
        parser.add_argument("--expires-in", metavar="DURATION", help="lifetime: 3600, 90m, 12h, 30d, 2w (default: never expires)")
        action = parser.add_mutually_exclusive_group()
        action.add_argument("--list", dest="list_tokens", action="store_true", help="list tokens (of USER, or of everyone)")
        action.add_argument("--revoke", metavar="TOKEN", help="revoke a token by id, key or 12-character prefix")

    def run(self, *, user: str | None, name: str, expires_in: str | None, list_tokens: bool, revoke: str | None, **options: Any) -> Result:
        from tracker.services import access

        if list_tokens:
            return self._list(user)
        if revoke is not None:
            ref: Any = int(revoke) if revoke.isdigit() else revoke
            access.revoke_token(ref, user=user)
            return Result({"revoked": revoke}, f"Revoked token {revoke!r}; its key no longer works.")
        if not user:
            raise CommandFailed("Name the user the token is for: tracker token USER (or use --list / --revoke).", EXIT_USAGE)
        lifetime = parse_lifetime(expires_in) if expires_in else None
        token, key = access.create_token(user, name=name, expires_in=lifetime)
        data = {
            "id": token.pk,
            "user": token.user.get_username(),
            "name": token.name,
            "prefix": token.prefix,
            "key": key,
            "expires_at": token.expires_at,
        }
        text = render_record(
            {"user": data["user"], "name": token.name or "", "expires": token.expires_at or "never", "key": key},
            title="Created a token. The key is shown this once:",
        )
        return Result(data, text)

    def _list(self, user: str | None) -> Result:
        from tracker.models import ApiToken
        from tracker.services import access

        qs = access.list_tokens(user) if user else ApiToken.objects.order_by("-created_at", "-id")
        rows = [
            {
                "id": t.pk,
                "user": t.user.get_username(),
                "name": t.name,
                "prefix": t.prefix,
                "created_at": t.created_at,
                "last_used_at": t.last_used_at,
                "expires_at": t.expires_at,
                "expired": access.token_expired(t),
            }
            for t in qs.select_related("user")
        ]
        text = render_table(
            rows,
            ["id", "user", "name", "prefix", "created_at", "last_used_at", "expires_at", "expired"],
            empty="No tokens." if not user else f"{user!r} has no tokens.",
        )
        return Result(rows, text)
