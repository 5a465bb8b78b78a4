"""What every ``tracker_<verb>`` command shares: output, exit codes, errors, progress, help.

A command subclasses :class:`TrackerCommand`, declares its arguments in ``add_arguments`` and
does its work in ``run(**options)``, which parses, calls ``tracker.services`` and returns a
:class:`Result` (JSON-ready data plus its human rendering). The base class prints that result
as a table (default) or as JSON (``--json``), and turns every failure into one line on stderr
and an exit code scripts can rely on (:data:`EXIT_CODES`). ``--verbose`` adds the traceback.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import decimal
import json
import math
import os
import shutil
import sys
import textwrap
import traceback
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from django.core.management.base import BaseCommand, CommandError, CommandParser

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3
EXIT_INTERRUPTED = 130

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_FAILED: "the operation failed (storage, a conflict, a failed check, an unexpected error)",
    EXIT_USAGE: "bad usage or input (unknown option, missing or malformed file, unknown name)",
    EXIT_ENVIRONMENT: "configuration or environment (settings, database unreachable, migrations)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}

EXIT_CODES_HELP = "exit codes:\n" + "\n".join(f"  {code:<4}{what}" for code, what in EXIT_CODES.items())

# Django's own options that mean nothing to the `tracker` script; still accepted, not listed.
_HIDDEN_BASE_OPTIONS = {"--verbosity", "--settings", "--pythonpath", "--traceback", "--no-color", "--force-color", "--skip-checks"}

_migrations_checked = False


# ------------------------------------------------------------------------------------ output


@dataclass
class Result:
    """What a command produced: ``data`` for ``--json``, ``text`` for people.

    ``exit_code`` lets a command report a finished operation that still failed (``doctor``
    with a failing check) without raising.
    """

    data: Any
    text: str = ""
    exit_code: int = EXIT_OK
    notes: list[str] = field(default_factory=list)
    # With a non-zero exit_code: the one line call_command raises as CommandFailed.
    error: str = ""


def to_jsonable(value: Any) -> Any:
    """``value`` with datetimes, paths, numpy/pandas scalars and NaN made JSON-friendly."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (Path, decimal.Decimal)):
        return str(value)
    # numpy and pandas scalars, without importing either
    if type(value).__module__.split(".")[0] in ("numpy", "pandas"):
        if hasattr(value, "isoformat"):  # pandas Timestamp
            try:
                return value.isoformat()
            except ValueError:  # NaT
                return None
        if hasattr(value, "total_seconds"):  # pandas Timedelta
            seconds = value.total_seconds()
            return None if math.isnan(seconds) else seconds
        if hasattr(value, "item"):
            return to_jsonable(value.item())
    return str(value)


def frame_records(frame: Any, index: str | None = None) -> list[dict[str, Any]]:
    """Rows of a pandas DataFrame as plain dicts (NaN and NaT become None)."""
    if frame is None or len(frame) == 0:
        return []
    if index is not None:
        frame = frame.reset_index(names=index)
    out = []
    for row in frame.to_dict("records"):
        out.append({str(k): _scalar(v) for k, v in row.items()})
    return out


def _scalar(v: Any) -> Any:
    """None for every kind of missing value (None, NaN, NaT, pandas NA); else ``v``."""
    if v is None:
        return None
    if isinstance(v, float):
        return None if math.isnan(v) else v
    if type(v).__module__.split(".")[0] in ("numpy", "pandas"):
        import pandas as pd

        try:
            if pd.isna(v):
                return None
        except (TypeError, ValueError):  # array-likes are values, not missing
            pass
    return v


def format_value(value: Any) -> str:
    """A cell as people read it: short floats, dates to the second, JSON for containers."""
    value = _scalar(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value.is_integer() and abs(value) < 1e15:
            return f"{value:.1f}"
        return f"{value:.6g}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if hasattr(value, "total_seconds"):
        return format_duration(value.total_seconds())
    if isinstance(value, _dt.datetime) or hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime() if hasattr(value, "to_pydatetime") else value
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(to_jsonable(value), ensure_ascii=False, separators=(",", ":"))
    return str(value)


def format_duration(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return ""
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, s = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{s:02d}s"
    hours, m = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{m:02d}m"
    days, h = divmod(hours, 24)
    return f"{days}d{h:02d}h"


def seconds_of(value: Any) -> float | None:
    """A timedelta (or pandas Timedelta/NaT) as seconds; None when missing."""
    if _scalar(value) is None or not hasattr(value, "total_seconds"):
        return None
    return value.total_seconds()


def format_size(n: float | None) -> str:
    if n is None:
        return ""
    n = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split()) if "\n" in text else text
    return text if len(text) <= width else text[: max(width - 1, 1)] + "…"


def render_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str | tuple[str, str]],
    *,
    empty: str = "(nothing)",
    max_cell: int = 48,
) -> str:
    """A plain-text table: a header, a rule, one line per row; numbers right-aligned."""
    if not rows:
        return empty
    cols = [(c, c) if isinstance(c, str) else c for c in columns]
    cells = [[_clip(format_value(r.get(key)), max_cell) for key, _ in cols] for r in rows]
    widths = [max(len(head), *(len(line[i]) for line in cells)) for i, (_, head) in enumerate(cols)]
    numeric = [
        all(_is_number(r.get(key)) for r in rows if _scalar(r.get(key)) is not None) for key, _ in cols
    ]
    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)
        ).rstrip()

    out = [line([head for _, head in cols]), line(["-" * w for w in widths])]
    out += [line(c) for c in cells]
    return "\n".join(out)


def _is_number(v: Any) -> bool:
    v = _scalar(v)
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, float)):
        return True
    return type(v).__module__.split(".")[0] == "numpy" and hasattr(v, "dtype") and v.dtype.kind in "iuf"


def render_record(fields: Mapping[str, Any], *, title: str | None = None) -> str:
    """``key: value`` lines, keys aligned; None values are left out."""
    shown = {k: v for k, v in fields.items() if _scalar(v) is not None and v != ""}
    width = max((len(k) for k in shown), default=0)
    lines = [title] if title else []
    lines += [f"{k.ljust(width)}  {format_value(v) if not isinstance(v, str) else v}" for k, v in shown.items()]
    return "\n".join(lines)


def section(title: str, body: str) -> str:
    return f"{title}\n{textwrap.indent(body, '  ')}"


# ------------------------------------------------------------------------------------ errors


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for an exception raised while a command ran."""
    from tracker.exceptions import (
        ConfigurationError,
        DatabaseUnavailable,
        InvalidValue,
        NotFound,
        TrackerError,
    )

    if isinstance(exc, (InvalidValue, NotFound)):
        return EXIT_USAGE
    if isinstance(exc, (ConfigurationError, DatabaseUnavailable)):
        return EXIT_ENVIRONMENT
    if isinstance(exc, TrackerError):
        return EXIT_FAILED
    if _is_connection_error(exc):
        return EXIT_ENVIRONMENT
    return EXIT_FAILED


def _is_connection_error(exc: BaseException) -> bool:
    from django.db.utils import OperationalError

    if not isinstance(exc, OperationalError):
        return False
    text = str(exc).lower()
    return any(
        s in text
        for s in ("connection", "could not connect", "unable to open database", "does not exist", "password")
    )


def one_line(text: str) -> str:
    """Collapse a message to one line (messages are sentences; tracebacks are for --verbose)."""
    return " ".join(str(text).split())


def describe_error(exc: BaseException) -> str:
    """One line saying what went wrong, for any exception."""
    from tracker.exceptions import TrackerError

    if isinstance(exc, TrackerError):
        return one_line(str(exc))
    if _is_connection_error(exc):
        return one_line(
            f"Cannot reach the database ({exc}). Check TRACKER_DATABASE_URL (or the tracker home) "
            f"and that the server is running; `tracker doctor` checks every setting."
        )
    from django.db.utils import DatabaseError

    if isinstance(exc, DatabaseError):
        return one_line(f"The database refused the operation: {exc}. Nothing of it was stored.")
    detail = str(exc) or type(exc).__name__
    return one_line(
        f"Unexpected error ({type(exc).__name__}: {detail}). Run again with --verbose for the "
        f"traceback and report it."
    )


class CommandFailed(CommandError):
    """A command's failure carrying its exit code and, for --verbose, the original error."""

    def __init__(self, message: str, returncode: int = EXIT_FAILED, original: BaseException | None = None):
        super().__init__(message, returncode=returncode)
        self.original = original


def error_line(prog: str, message: str, code: int, as_json: bool) -> str:
    """The one line a failed command prints on stderr (a JSON object with ``--json``)."""
    if as_json:
        return json.dumps({"error": one_line(message), "exit_code": code}, ensure_ascii=False)
    return f"{prog}: error: {one_line(message)}"


class _Parser(CommandParser):
    """Usage errors as one line (plus where to look), exit code 2, or CommandFailed in code."""

    json_errors = False  # set from the command line: --json makes the line JSON too

    def error(self, message: str) -> None:  # type: ignore[override]
        text = f"{message}. See `{self.prog} --help`."
        if self.called_from_command_line:
            self.exit(EXIT_USAGE, error_line(self.prog, text, EXIT_USAGE, self.json_errors) + "\n")
        raise CommandFailed(text, EXIT_USAGE)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    def add_usage(self, usage: Any, actions: Any, groups: Any, prefix: Any = None) -> None:
        actions = [a for a in actions if a.help is not argparse.SUPPRESS]
        super().add_usage(usage, actions, groups, prefix)


# ---------------------------------------------------------------------------------- command


class TrackerCommand(BaseCommand):
    """Base of every ``tracker_<verb>`` command.

    Subclasses set ``help`` (one line), ``examples`` (lines shown under ``--help``) and
    implement ``run(**options) -> Result | None``.
    """

    help = ""
    examples: Sequence[str] = ()
    # Apply pending migrations before running (the console script's promise); commands that
    # inspect or replace the database itself (doctor, restore, init) handle that themselves.
    requires_migrations = True
    requires_system_checks: ClassVar[list[str]] = []
    # The name shown in help and errors: "tracker runs compare" when run by the console script.
    cli_name: str | None = None

    # -- parser ------------------------------------------------------------------------------

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        epilog = ""
        if self.examples:
            epilog += "examples:\n" + "\n".join(f"  {e}" for e in self.examples) + "\n\n"
        epilog += EXIT_CODES_HELP
        kwargs.setdefault("formatter_class", _HelpFormatter)
        # Lets a command define --version (a dataset version) over Django's program version.
        kwargs.setdefault("conflict_handler", "resolve")
        kwargs.setdefault("epilog", epilog)
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.__class__ = _Parser
        if self.cli_name:
            parser.prog = self.cli_name
        for action in parser._actions:
            if set(action.option_strings) & _HIDDEN_BASE_OPTIONS:
                action.help = argparse.SUPPRESS
        group = parser.add_argument_group("output")
        group.add_argument("--json", action="store_true", help="print the result as JSON (for scripts)")
        group.add_argument(
            "--verbose", action="store_true", help="show the full traceback when something fails"
        )
        group.add_argument(
            "-q", "--quiet", action="store_true",
            help="print nothing but errors: no result, notes or progress bars (scripts that read the exit code)",
        )
        group.add_argument(
            "--progress",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="show progress bars (default: when stderr is a terminal and TRACKER PROGRESS is on; "
            "never with --json or --quiet unless asked)",
        )
        return parser

    # -- running -----------------------------------------------------------------------------

    def run_from_argv(self, argv: list[str]) -> None:
        """Parse, run, print; on failure one line on stderr and the documented exit code."""
        self._called_from_command_line = True
        verbose = "--verbose" in argv[2:]
        as_json = "--json" in argv[2:]
        parser = self.create_parser(argv[0], argv[1])
        parser.json_errors = as_json
        options = parser.parse_args(argv[2:])
        cmd_options = vars(options)
        args = cmd_options.pop("args", ())
        code = EXIT_OK
        try:
            self.execute(*args, **cmd_options)
            code = getattr(self, "_exit_code", EXIT_OK)
        except CommandError as exc:
            original = getattr(exc, "original", None)
            if verbose and original is not None:
                traceback.print_exception(original, file=sys.stderr)
            elif verbose:
                traceback.print_exc(file=sys.stderr)
            self._print_error(str(exc), exc.returncode, as_json)
            code = exc.returncode
        except KeyboardInterrupt:
            self._print_error("Interrupted.", EXIT_INTERRUPTED, as_json)
            code = EXIT_INTERRUPTED
        except BrokenPipeError:
            # The reader (`| head`) went away: stop quietly, like other Unix tools.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            code = EXIT_OK
        finally:
            from django.db import connections

            connections.close_all()
        sys.exit(code)

    def _print_error(self, message: str, code: int, as_json: bool) -> None:
        prog = self.cli_name or f"manage.py {type(self).__module__.rsplit('.', 1)[-1]}"
        sys.stderr.write(error_line(prog, message, code, as_json) + "\n")
        sys.stderr.flush()

    def handle(self, *args: Any, **options: Any) -> None:
        self.options = options
        self._exit_code = EXIT_OK
        try:
            if self.requires_migrations:
                _ensure_migrated()
            result = self.run(*args, **options)
        except CommandError:
            raise
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            if isinstance(exc, (SystemExit, GeneratorExit)):
                raise
            raise CommandFailed(describe_error(exc), exit_code_for(exc), exc) from exc
        if result is None:
            return
        self.emit(result)
        self._exit_code = result.exit_code
        if result.exit_code != EXIT_OK and not getattr(self, "_called_from_command_line", False):
            # call_command has no exit status: a failed operation raises, as it would in code.
            raise CommandFailed(result.error or _first_line(result), result.exit_code)
        if result.exit_code != EXIT_OK and options.get("quiet"):
            # --quiet hid the result that said what failed; errors are still printed.
            self._print_error(result.error or _first_line(result), result.exit_code, bool(options.get("json")))

    def run(self, *args: Any, **options: Any) -> Result | None:
        raise NotImplementedError

    def emit(self, result: Result) -> None:
        if self.options.get("quiet"):
            return
        if self.options.get("json"):
            self.stdout.write(json.dumps(to_jsonable(result.data), ensure_ascii=False, indent=2))
        elif result.text:
            self.stdout.write(result.text)
        for note in result.notes:
            self.stderr.write(note)

    # -- helpers for subclasses --------------------------------------------------------------

    def progress(self, total: int | None, desc: str, unit: str = " items", **kwargs: Any) -> Any:
        """A tqdm bar on stderr, shown when asked (--progress), or when TRACKER PROGRESS is on
        and stderr is a terminal; never with --json or --quiet unless asked."""
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, disable=not self.progress_enabled(),
                    file=self.stderr._out, leave=False, **kwargs)

    def progress_choice(self) -> bool | None:
        """For services that draw their own bars: True (asked), False (off), None (their rule)."""
        if self.options.get("progress") is not None:
            return bool(self.options["progress"])
        return None if self.progress_enabled() else False

    def progress_enabled(self) -> bool:
        from tracker import conf

        wanted = self.options.get("progress")
        if wanted is not None:
            return bool(wanted)
        if not conf.get("PROGRESS") or self.options.get("json") or self.options.get("quiet"):
            return False
        stream = self.stderr._out
        return bool(getattr(stream, "isatty", lambda: False)())

    def input_path(self, value: str, what: str = "file") -> Path:
        """An existing input file, or a usage error naming it."""
        path = Path(value).expanduser()
        if not path.exists():
            raise CommandFailed(f"The {what} {value!r} does not exist; check the path.", EXIT_USAGE)
        if path.is_dir():
            raise CommandFailed(f"{value!r} is a directory; give the path of a {what}.", EXIT_USAGE)
        return path

    def output_path(self, value: str, *, force: bool = False) -> Path:
        """A path to write to: its directory must exist; an existing file needs --force."""
        path = Path(value).expanduser()
        if path.is_dir():
            raise CommandFailed(f"{value!r} is a directory; give a file name to write.", EXIT_USAGE)
        if not path.parent.exists():
            raise CommandFailed(
                f"The directory {str(path.parent)!r} does not exist; create it first.", EXIT_USAGE
            )
        if path.exists() and not force:
            raise CommandFailed(
                f"{value!r} exists already; pass --force to overwrite it.", EXIT_USAGE
            )
        return path


def _first_line(result: Result) -> str:
    for line in (result.text or "").splitlines():
        if line.strip():
            return line.strip()
    return "The command reported a failure."


def _ensure_migrated() -> None:
    global _migrations_checked
    if _migrations_checked:
        return
    from tracker.configuration import ensure_migrated

    ensure_migrated()
    _migrations_checked = True


def parse_key_values(items: Iterable[str] | None, what: str) -> dict[str, Any]:
    """``["lr>0.01", "opt=adam"]`` as service filters: ``{"lr__gt": 0.01, "opt": "adam"}``.

    Operators: ``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=``. Values are read as JSON when they
    parse (numbers, true/false, null, quoted strings), else taken as text.
    """
    out: dict[str, Any] = {}
    for item in items or ():
        for op, lookup in (("!=", "ne"), ("<=", "lte"), (">=", "gte"), ("=", ""), ("<", "lt"), (">", "gt")):
            key, sep, raw = item.partition(op)
            if sep and key.strip():
                break
        else:
            raise CommandFailed(
                f"The {what} filter {item!r} needs an operator: KEY=VALUE, KEY!=VALUE, KEY<N, "
                f"KEY<=N, KEY>N or KEY>=N.",
                EXIT_USAGE,
            )
        key = key.strip()
        value = parse_value(raw.strip())
        if lookup in ("lt", "lte", "gt", "gte") and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise CommandFailed(f"The {what} filter {item!r} compares with {raw!r}, which is not a number.", EXIT_USAGE)
        out[f"{key}__{lookup}" if lookup else key] = value
    return out


def parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def terminal_width() -> int:
    return shutil.get_terminal_size((120, 24)).columns
