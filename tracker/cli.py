"""The ``tracker`` console script: every ``manage.py tracker_<verb>`` command, no Django project needed.

``tracker [--home DIR] [--database-url URL] <command> [options]`` configures tracker (from the
options, else ``TRACKER_HOME`` / ``TRACKER_DATABASE_URL``) and runs the management command
``tracker_<command>``. Two-word commands map to one name: ``tracker run show`` runs
``tracker_run_show``, ``tracker import-samples`` runs ``tracker_import_samples``.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
import sys
import traceback
from typing import Any

USAGE = "usage: tracker [--home DIR] [--database-url URL] <command> [options]"

GLOBAL_HELP = """\
global options (before the command):
  --home DIR           the tracker home: SQLite database, artifacts, secret key
                       (default $TRACKER_HOME, else ~/.tracker)
  --database-url URL   use this database instead of the home's SQLite file, e.g.
                       postgres://user@host:5432/tracker (default $TRACKER_DATABASE_URL)
  --version            print tracker's version
  -h, --help           this help; `tracker <command> --help` shows a command's options
                       and examples

Every command is also `python manage.py tracker_<command>` inside a Django project
(two-word commands join with underscores: tracker_run_show)."""


def _command_names() -> list[str]:
    """``tracker_*`` command module names, found without configuring Django."""
    from tracker.management import commands

    return sorted(
        m.name for m in pkgutil.iter_modules(commands.__path__) if m.name.startswith("tracker_")
    )


def command_class(name: str) -> Any:
    return importlib.import_module(f"tracker.management.commands.{name}").Command


def verb_of(name: str) -> str:
    """The words users type for a command module: ``cli_verb`` or the name with dashes."""
    cls = command_class(name)
    return getattr(cls, "cli_verb", None) or name.removeprefix("tracker_").replace("_", "-")


def verbs() -> dict[str, str]:
    """verb -> module name, e.g. ``{"run show": "tracker_run_show", "import-samples": ...}``."""
    return {verb_of(n): n for n in _command_names()}


def resolve(argv: list[str], table: dict[str, str]) -> tuple[str | None, str, list[str]]:
    """(module name or None, the verb as typed, the remaining arguments)."""
    def norm(word: str) -> str:
        return word.replace("_", "-")

    aliases = {norm(v): n for v, n in table.items()}
    aliases.update({norm(v.replace(" ", "-")): n for v, n in table.items()})
    if len(argv) >= 2 and not argv[1].startswith("-"):
        two = f"{norm(argv[0])} {norm(argv[1])}"
        if two in aliases:
            return aliases[two], two, argv[2:]
    one = norm(argv[0])
    return aliases.get(one), one, argv[1:]


def _print_help(table: dict[str, str], stream: Any = sys.stdout) -> None:
    from tracker.management.base import EXIT_CODES_HELP

    lines = [USAGE, "", "Experiment tracking, versioned datasets and annotation.", "", "commands:"]
    width = max(len(v) for v in table) if table else 0
    for verb in sorted(table):
        first = (command_class(table[verb]).help or "").strip().splitlines()
        lines.append(f"  {verb.ljust(width)}  {first[0] if first else ''}")
    lines += ["", GLOBAL_HELP, "", "examples:",
              "  tracker init",
              "  tracker import-samples reviews data/reviews.csv --id-field review_id",
              "  tracker runs --project demo --status finished --metric 'val_loss<0.3'",
              "  tracker runs compare 3f2a 9c1d",
              "  tracker --database-url postgres://tracker@db/tracker doctor",
              "", EXIT_CODES_HELP]
    print("\n".join(lines), file=stream)


def _fail(prog: str, message: str, code: int, argv: list[str]) -> int:
    """Print a failure before the command runs as its one line (JSON with --json); returns code."""
    from tracker.management.base import error_line

    if "--verbose" in argv and sys.exc_info()[1] is not None:
        traceback.print_exc(file=sys.stderr)
    print(error_line(prog, message, code, "--json" in argv), file=sys.stderr)
    return code


def _split_globals(argv: list[str]) -> tuple[dict[str, str], list[str]] | int:
    """Global options before the command; an int is an exit code (usage error printed)."""
    opts: dict[str, str] = {}
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] not in ("-h", "--help", "--version"):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name not in ("--home", "--database-url"):
            return _fail("tracker", f"unknown global option {arg!r}. See `tracker --help`.", 2, argv)
        if not eq:
            if i + 1 >= len(argv):
                return _fail("tracker", f"{name} needs a value. See `tracker --help`.", 2, argv)
            value = argv[i + 1]
            i += 1
        opts[name.lstrip("-").replace("-", "_")] = value
        i += 1
    return opts, argv[i:]


def main(argv: list[str] | None = None) -> int:
    """Run one ``tracker`` command line; returns the exit code (see ``tracker --help``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except KeyboardInterrupt:
        # Ctrl-C before the command took over (while Django loads): the command's own line.
        from tracker.management.base import EXIT_INTERRUPTED

        print("tracker: error: Interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: list[str]) -> int:
    from tracker.management.base import EXIT_ENVIRONMENT, EXIT_USAGE

    split = _split_globals(argv)
    if isinstance(split, int):
        return split
    global_opts, argv = split
    table = verbs()
    if not argv or argv[0] in ("-h", "--help"):
        _print_help(table)
        return 0
    if argv[0] == "--version":
        import tracker

        print(f"tracker {tracker.__version__}")
        return 0
    if argv[0] == "help":
        if len(argv) == 1:
            _print_help(table)
            return 0
        argv = [*argv[1:], "--help"]
    name, typed, rest = resolve(argv, table)
    if name is None:
        close = difflib.get_close_matches(typed, list(table), n=3)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return _fail(
            "tracker", f"unknown command {typed!r}.{hint} Run `tracker --help` for the list.", EXIT_USAGE, rest
        )
    verb = verb_of(name)
    if "-h" in rest or "--help" in rest:
        # Help needs no database: do not configure (and create a home) just to print it.
        cmd = command_class(name)()
        cmd.cli_name = f"tracker {verb}"
        cmd.create_parser("tracker", name).print_help()
        return 0

    import tracker

    try:
        # Migrations are applied by the command itself (most commands want them; doctor and
        # restore must look at the database as it is).
        tracker.configure(quiet=True, migrate=False, **global_opts)
    except tracker.TrackerError as exc:
        return _fail(f"tracker {verb}", str(exc), EXIT_ENVIRONMENT, rest)
    cmd = command_class(name)()
    cmd.cli_name = f"tracker {verb}"
    try:
        cmd.run_from_argv(["tracker", name, *rest])
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
