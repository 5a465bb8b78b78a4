"""The `tracker` console script: every `manage.py tracker_<verb>` command, without a Django project.

`tracker <verb> ...` configures tracker from TRACKER_HOME / TRACKER_DATABASE_URL, then runs the
management command `tracker_<verb>`.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(
            "usage: tracker <command> [options]\n\n"
            "Run `tracker <command> --help` for a command's options and an example.\n"
        )
        _print_commands()
        return 0
    verb = argv[0].replace("-", "_")
    import tracker
    from django.core.management import get_commands
    from django.core.management import execute_from_command_line

    try:
        tracker.configure(quiet=True)
    except tracker.TrackerError as exc:
        print(f"tracker: {exc}", file=sys.stderr)
        return 2
    name = f"tracker_{verb}"
    if name not in get_commands():
        print(f"tracker: unknown command {argv[0]!r}.", file=sys.stderr)
        _print_commands(stream=sys.stderr)
        return 2
    try:
        execute_from_command_line(["tracker", name, *argv[1:]])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _print_commands(stream=sys.stdout) -> None:
    import tracker
    from django.core.management import get_commands

    try:
        tracker.configure(quiet=True)
    except tracker.TrackerError:
        return
    verbs = sorted(
        name.removeprefix("tracker_").replace("_", "-")
        for name, app in get_commands().items()
        if name.startswith("tracker_")
    )
    print("commands: " + ", ".join(verbs), file=stream)


if __name__ == "__main__":
    sys.exit(main())
