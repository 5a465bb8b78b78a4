"""`tracker createuser`: add a user who can log in to the API and the admin."""

from __future__ import annotations

import getpass
import sys
from typing import Any

from tracker.management.base import EXIT_USAGE, CommandFailed, Result, TrackerCommand, render_record


class Command(TrackerCommand):
    help = "Create a user (optionally staff or superuser, optionally with an API token)."
    examples = (
        "tracker createuser alice --token laptop",
        "tracker createuser admin --superuser            # asks for a password",
        "echo \"$PASSWORD\" | tracker createuser ci --password-stdin --json",
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("username", help="the login name")
        parser.add_argument("--email", default="", help="e-mail address")
        parser.add_argument("--staff", action="store_true", help="may manage users through the API")
        parser.add_argument("--superuser", action="store_true", help="sees and administers every project")
        pw = parser.add_mutually_exclusive_group()
        pw.add_argument("--password-stdin", action="store_true", help="read the password from standard input (scripts)")
        pw.add_argument("--no-password", action="store_true", help="token-only user (the default when not on a terminal)")
        parser.add_argument("--token", metavar="NAME", nargs="?", const="default", help="also create an API token with this name and print its key")

    def run(self, *, username: str, email: str, staff: bool, superuser: bool, password_stdin: bool,
            no_password: bool, token: str | None, **options: Any) -> Result:
        from django.db import transaction

        from tracker.services import access

        password = self._password(password_stdin, no_password)
        with transaction.atomic():
            user = access.create_user(username, password=password, email=email, is_staff=staff, is_superuser=superuser)
            key = None
            if token is not None:
                tok, key = access.create_token(user, name=token)
        data = {
            "id": user.pk,
            "username": user.get_username(),
            "email": user.email,
            "is_staff": user.is_staff,
            "is_superuser": user.is_superuser,
            "has_password": user.has_usable_password(),
        }
        fields = {
            "username": data["username"],
            "role": "superuser" if superuser else ("staff" if user.is_staff else "user"),
            "password": "set" if data["has_password"] else "none (token-only)",
        }
        if key is not None:
            data["token"] = {"id": tok.pk, "name": tok.name, "prefix": tok.prefix, "key": key}
            fields["token"] = key
        text = render_record(fields, title=f"Created user {data['username']!r}.")
        if key is not None:
            text += "\n\nThe token is shown this once; keep it (TRACKER_TOKEN or an Authorization: Bearer header)."
        return Result(data, text)

    def _password(self, from_stdin: bool, none: bool) -> str | None:
        if none:
            return None
        if from_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
            if not password:
                raise CommandFailed("--password-stdin read an empty password; pipe one in, or use --no-password.", EXIT_USAGE)
            return password
        if not (sys.stdin.isatty() and getattr(self, "_called_from_command_line", False)):
            return None
        first = getpass.getpass("Password (empty for a token-only user): ")
        if not first:
            return None
        if getpass.getpass("Password again: ") != first:
            raise CommandFailed("The two passwords differ; nothing was created.", EXIT_USAGE)
        return first
