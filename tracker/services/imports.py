"""Bulk sample import: a DataFrame, an Arrow table, a list of dicts, or a CSV / JSONL / Parquet file.

Rows are turned into JSON column by column (vectorised through Arrow where the type allows) and
upserted with one bulk statement per chunk: ``executemany`` on SQLite, ``COPY`` into a temporary
table and one ``INSERT ... ON CONFLICT`` on PostgreSQL. The whole import is one transaction.
"""

from __future__ import annotations

import gc
import hashlib
import json
import queue
import re
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from django.db import connection, transaction
from django.utils import timezone

from tracker import conf
from tracker.exceptions import ImportRejected, InvalidValue
from tracker.models import Project, Sample
from tracker.services.import_sources import Bad, Chunk, Source, Spec, open_source
from tracker.services.projects import get_or_create_project
from tracker.services.samples import MAX_EXTERNAL_ID, auto_external_id

ON_ERROR = ("raise", "skip")
# The report keeps this many errors in full; beyond that it only counts them.
MAX_LISTED_ERRORS = 10_000
PROGRESS_MIN_ROWS = 20_000
# Writes of at least this many rows refresh PostgreSQL's table statistics (see analyze()).
ANALYZE_AFTER_ROWS = 50_000
# SQLite's page cache during bulk writes (KiB): the default 2 MB makes index updates of a
# million rows thrash; 64 MB halves the time.
SQLITE_BULK_CACHE_KIB = 65_536

_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
T = TypeVar("T")


@contextmanager
def no_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector during a bulk step.

    A bulk step allocates millions of tuples and lists that live until it ends; the collector
    would scan them again and again (a third of the CPU time at a million rows) and find
    nothing to free. It is restored, and runs as usual, afterwards.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@contextmanager
def sqlite_bulk() -> Iterator[None]:
    """A larger SQLite page cache for a bulk write, restored afterwards; no-op elsewhere."""
    if connection.vendor != "sqlite":
        yield
        return
    with connection.cursor() as cur:
        cur.execute("PRAGMA cache_size")
        before = cur.fetchone()[0]
        cur.execute(f"PRAGMA cache_size = -{SQLITE_BULK_CACHE_KIB}")
    try:
        yield
    finally:
        with connection.cursor() as cur:
            cur.execute(f"PRAGMA cache_size = {int(before)}")


_DONE = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate ``items`` with the next ones computed ahead in a helper thread.

    The caller writes chunk k to the database (time spent in SQLite's or PostgreSQL's own code,
    with the GIL released) while the helper converts chunk k+1 (Python). The helper must not
    touch the database: Django gives each thread its own connection and transaction.
    """
    ready: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller and raised there
            put(_Failed(exc))

    helper = threading.Thread(target=produce, name="tracker-prefetch", daemon=True)
    helper.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item
    finally:
        stop.set()
        helper.join()


# --------------------------------------------------------------------------------------- report


@dataclass(frozen=True)
class RowError:
    """One rejected row: where it is, its id if known, and why it was rejected.

    ``row`` is the 1-based line number for CSV and JSONL files (as an editor shows it) and the
    0-based position for DataFrames, Arrow tables, Parquet files and lists (as ``iloc`` and
    indexing count). ``where`` spells that out ("line 7", "row 3").
    """

    row: int
    where: str
    id: str | None
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class ImportReport:
    """What an import did: counts, and every rejected row with its reason.

    ``errors`` lists at most 10,000 rejected rows in full; ``bad`` counts all of them.
    """

    project: str
    source: str
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    merged: int = 0
    bad: int = 0
    media_stored: int = 0
    stored: bool = True
    seconds: float = 0.0
    errors: list[RowError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every row was accepted."""
        return self.bad == 0

    def summary(self) -> str:
        """One line: what was stored and what was rejected."""
        rate = f", {self.rows / self.seconds:,.0f} rows/s" if self.seconds > 0 and self.rows else ""
        if not self.stored:
            head = f"Nothing imported into {self.project!r} from {self.source}"
        else:
            head = (
                f"Imported {self.source} into {self.project!r}: {self.created:,} created, "
                f"{self.updated:,} updated, {self.unchanged:,} unchanged"
            )
        extra = f", {self.merged:,} identical rows without an id merged" if self.merged else ""
        media = f", {self.media_stored:,} media files stored" if self.media_stored else ""
        return (
            f"{head}{extra}{media}; {self.bad:,} bad rows of {self.rows:,}"
            f" ({self.seconds:.2f} s{rate})."
        )

    def to_pandas(self) -> Any:
        """The rejected rows as a DataFrame (columns row, where, id, reason)."""
        import pandas as pd

        return pd.DataFrame(
            [(e.row, e.where, e.id, e.reason) for e in self.errors],
            columns=["row", "where", "id", "reason"],
        )

    def __repr__(self) -> str:
        lines = [self.summary()]
        shown = self.errors[:10]
        lines += [f"  {e}" for e in shown]
        if self.bad > len(shown):
            more = self.bad - len(shown)
            lines.append(f"  ... and {more:,} more (report.errors, report.to_pandas())")
        return "\n".join(lines)


# --------------------------------------------------------------------------------- the import


class _Accepted:
    """The rows of a chunk that passed every check, as columns for the writer."""

    __slots__ = ("data", "ids", "media", "media_uri", "metadata")

    def __init__(self, has_metadata: bool, has_media: bool, has_uri: bool) -> None:
        self.ids: list[str] = []
        self.data: list[str] = []
        self.metadata: list[str] | None = [] if has_metadata else None
        self.media: list[str] | None = [] if has_media else None
        self.media_uri: list[str] | None = [] if has_uri else None


class _Importer:
    def __init__(
        self,
        project: Project,
        source: Source,
        report: ImportReport,
        store_media: bool,
    ) -> None:
        self.project = project
        self.source = source
        self.report = report
        self.store_media = store_media
        self.seen: dict[str, int] = {}
        self.saved_media: list[str] = []
        self.media_cache: dict[str, str] = {}
        self.writer = _Writer(project)

    def error(self, number: int, eid: str | None, reason: str) -> None:
        self.report.bad += 1
        if len(self.report.errors) < MAX_LISTED_ERRORS:
            where = f"{self.source.where} {number}"
            self.report.errors.append(RowError(number, where, eid, reason))

    def accept(self, chunk: Chunk) -> _Accepted:
        """Check ids, duplicates and media of a chunk; report the bad rows, keep the rest."""
        fast = self._accept_clean(chunk)
        return fast if fast is not None else self._accept_rows(chunk)

    def _accept_clean(self, chunk: Chunk) -> _Accepted | None:
        """The common case checked a whole chunk at a time (C-speed set operations): no bad
        values, every id present, short and new, no media files. None: check row by row."""
        ids = chunk.ids
        if chunk.problems or chunk.media is not None or not ids:
            return None
        if None in ids or "" in ids or max(map(len, ids)) > MAX_EXTERNAL_ID:
            return None
        if len(set(ids)) != len(ids) or not self.seen.keys().isdisjoint(ids):
            return None
        self.seen.update(zip(ids, chunk.numbers))
        out = _Accepted(chunk.metadata is not None, False, chunk.media_uri is not None)
        out.ids = ids
        out.data = chunk.data
        if chunk.metadata is not None:
            out.metadata = [m or "{}" for m in chunk.metadata]
        if chunk.media_uri is not None:
            out.media_uri = [u or "" for u in chunk.media_uri]
        return out

    def _accept_rows(self, chunk: Chunk) -> _Accepted:
        where = self.source.where
        seen = self.seen
        problems = chunk.problems
        has_media = chunk.media is not None
        out = _Accepted(
            chunk.metadata is not None,
            has_media and self.store_media,
            chunk.media_uri is not None or has_media,
        )
        ids, data, numbers = chunk.ids, chunk.data, chunk.numbers
        for i, eid in enumerate(ids):
            number = numbers[i]
            if problems and i in problems:
                self.error(number, eid, problems[i])
                continue
            if eid is None or eid == "":
                if not chunk.derive_ids:
                    self.error(number, None, "has no id (the id column is empty)")
                    continue
                eid = auto_external_id(json.loads(data[i]))
                first = seen.setdefault(eid, number)
                if first != number:
                    self.report.merged += 1  # the same content again: the same sample
                    continue
            else:
                if len(eid) > MAX_EXTERNAL_ID:
                    self.error(
                        number, eid[:40], f"has an id longer than {MAX_EXTERNAL_ID} characters"
                    )
                    continue
                first = seen.setdefault(eid, number)
                if first != number:
                    self.error(
                        number,
                        eid,
                        f"repeats the id {eid!r} of {where} {first}; ids must be unique",
                    )
                    continue
            media_name = media_uri = ""
            if chunk.media_uri is not None:
                media_uri = chunk.media_uri[i] or ""
            if has_media:
                ref = chunk.media[i]  # type: ignore[index]
                if ref:
                    if self.store_media and not _URI.match(ref):
                        try:
                            media_name = self.store(ref)
                        except Bad as exc:
                            self.error(number, eid, str(exc))
                            continue
                    else:
                        media_uri = ref
            out.ids.append(eid)
            out.data.append(data[i])
            if out.metadata is not None:
                out.metadata.append(chunk.metadata[i] or "{}")  # type: ignore[index]
            if out.media is not None:
                out.media.append(media_name)
            if out.media_uri is not None:
                out.media_uri.append(media_uri)
        return out

    def store(self, ref: str) -> str:
        """Save a local media file through Django's storage, named by its content."""
        from django.core.files import File
        from django.core.files.storage import default_storage

        path = Path(ref.removeprefix("file://")).expanduser()
        if not path.is_absolute():
            path = self.source.base_dir / path
        key = str(path)
        if key in self.media_cache:
            return self.media_cache[key]
        try:
            digest = hashlib.sha256()
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        except FileNotFoundError:
            raise Bad(f"its media file {ref!r} does not exist (looked at {path})") from None
        except OSError as exc:
            raise Bad(f"its media file {ref!r} cannot be read ({exc.strerror})") from None
        sha = digest.hexdigest()
        name = f"media/{self.project.pk}/{sha[:2]}/{sha}{path.suffix.lower()}"
        if not default_storage.exists(name):
            with open(path, "rb") as fh:
                name = default_storage.save(name, File(fh, name=path.name))
            self.saved_media.append(name)
        self.report.media_stored += 1
        self.media_cache[key] = name
        return name

    def discard_media(self) -> None:
        """Remove the media files this import saved; called when it stores nothing."""
        from django.core.files.storage import default_storage

        for name in self.saved_media:
            try:
                default_storage.delete(name)
            except OSError:  # pragma: no cover - best effort; the files are content-addressed
                pass


class _Writer:
    """Upserts accepted rows of one project by (project, external_id)."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.vendor = connection.vendor
        self.table = Sample._meta.db_table
        now = timezone.now()
        self.now = connection.ops.adapt_datetimefield_value(now) if self.vendor == "sqlite" else now
        self.changed = 0
        self.created = 0
        self._temp_ready = False
        # PostgreSQL, project without samples: rows are copied straight into the table (no
        # temporary table, no conflict checks). Safe because ids were checked unique within
        # the import and the project row stays locked until commit (see lock_project).
        self.direct = False

    def lock_project(self) -> None:
        """Serialise imports into one project (PostgreSQL; SQLite serialises all writers)
        and note whether it is still empty."""
        if self.vendor != "postgresql":
            return
        Project.objects.select_for_update().filter(pk=self.project.pk).first()
        self.direct = not Sample.objects.filter(project=self.project).exists()

    def columns(self, rows: _Accepted) -> tuple[list[str], list[list[Any]]]:
        cols = ["external_id", "data"]
        values: list[list[Any]] = [rows.ids, rows.data]
        for name in ("metadata", "media", "media_uri"):
            col = getattr(rows, name)
            if col is not None:
                cols.append(name)
                values.append(col)
        return cols, values

    def prepare(self, rows: _Accepted) -> _Batch | None:
        """The statement and parameters for some accepted rows; no database access, so any
        thread may do it."""
        if not rows.ids:
            return None
        cols, values = self.columns(rows)
        if self.vendor == "postgresql":
            return _Batch(cols, "", list(zip(*values)))
        # Values shared by every row are literals in the statement (an integer, constants and
        # a timestamp Django formatted), so each row binds only its own values.
        defaults = {"metadata": "'{}'", "media": "''", "media_uri": "''"}
        fixed = [c for c in ("metadata", "media", "media_uri") if c not in cols]
        now = "'" + str(self.now).replace("'", "''") + "'"
        literals = [str(int(self.project.pk)), *(defaults[c] for c in fixed), now, now]
        all_cols = [*cols, "project_id", *fixed, "created_at", "updated_at"]
        values_sql = ", ".join(["%s"] * len(cols) + literals)
        sql = f"INSERT INTO {self.table} ({', '.join(all_cols)}) VALUES ({values_sql}) " + (
            self._conflict_sql(cols, "excluded", "IS NOT")
        )
        return _Batch(cols, sql, list(zip(*values)))

    def write(self, batch: _Batch) -> None:
        if self.vendor == "postgresql":
            self._write_postgres(batch)
        else:
            with connection.cursor() as cur:
                cur.executemany(batch.sql, batch.params)
                self.changed += max(cur.rowcount, 0)

    def _conflict_sql(self, cols: list[str], excluded: str, distinct: str) -> str:
        t = self.table
        sets = ", ".join(f"{c} = {excluded}.{c}" for c in cols[1:])
        # Rows whose content did not change are left alone (their updated_at included).
        differs = " OR ".join(f"{t}.{c} {distinct} {excluded}.{c}" for c in cols[1:])
        return (
            f"ON CONFLICT (project_id, external_id) DO UPDATE SET {sets}, "
            f"updated_at = {excluded}.updated_at WHERE {differs}"
        )

    def _write_postgres(self, batch: _Batch) -> None:
        cols = batch.columns
        if self.direct:
            defaults = {"metadata": "{}", "media": "", "media_uri": ""}
            fixed = [c for c in defaults if c not in cols]
            names = ", ".join([*cols, *fixed, "project_id", "created_at", "updated_at"])
            tail = (*(defaults[c] for c in fixed), self.project.pk, self.now, self.now)
            copy_sql = f"COPY {self.table} ({names}) FROM STDIN"
            with connection.cursor() as cur, cur.cursor.copy(copy_sql) as copy:
                for row in batch.params:
                    copy.write_row((*row, *tail))
            self.created += len(batch.params)
            self.changed += len(batch.params)
            return
        temp = "tracker_import_rows"
        with connection.cursor() as cur:
            if not self._temp_ready:
                cur.execute(
                    f"CREATE TEMPORARY TABLE IF NOT EXISTS {temp} (external_id text, "
                    f"data jsonb, metadata jsonb, media text, media_uri text) ON COMMIT DROP"
                )
                self._temp_ready = True
            cur.execute(f"TRUNCATE {temp}")
            raw = cur.cursor  # psycopg's own cursor: COPY is not part of the DB-API
            with raw.copy(f"COPY {temp} ({', '.join(cols)}) FROM STDIN") as copy:
                for row in batch.params:
                    copy.write_row(row)
            defaults = {"metadata": "'{}'::jsonb", "media": "''", "media_uri": "''"}
            select = ", ".join(
                c if c in cols else defaults[c]
                for c in ("external_id", "data", "metadata", "media", "media_uri")
            )
            cur.execute(
                f"WITH up AS (INSERT INTO {self.table} (project_id, external_id, data, metadata, "
                f"media, media_uri, created_at, updated_at) SELECT %s, {select}, %s, %s FROM {temp} "
                + self._conflict_sql(cols, "EXCLUDED", "IS DISTINCT FROM")
                + " RETURNING (xmax = 0) AS fresh) "
                "SELECT count(*) FILTER (WHERE fresh), count(*) FROM up",
                [self.project.pk, self.now, self.now],
            )
            created, changed = cur.fetchone()
            self.created += created
            self.changed += changed


@dataclass
class _Batch:
    columns: list[str]
    sql: str
    params: list[tuple]


def _progress(src: Source, enabled: bool | None) -> Any:
    from tqdm.auto import tqdm

    if enabled is None:
        # Rows unknown until read (JSONL): judge by the file's size (~100 bytes a row).
        rows = src.total if src.total is not None else (src.size or 0) // 100
        enabled = bool(conf.get("PROGRESS")) and rows >= PROGRESS_MIN_ROWS
    desc = f"import {src.label}"
    return tqdm(total=src.total, desc=desc, unit=" rows", disable=not enabled, leave=False)


def import_samples(
    project: str | Project,
    source: Any,
    id_field: str | None = None,
    on_error: str = "raise",
    *,
    media_field: str | None = None,
    store_media: bool = True,
    format: str | None = None,
    progress: bool | None = None,
) -> ImportReport:
    """Import samples in bulk; see :func:`tracker.import_samples`."""
    started = time.perf_counter()
    if on_error not in ON_ERROR:
        raise InvalidValue(f"on_error must be 'raise' or 'skip', not {on_error!r}.")
    if id_field is not None and (not isinstance(id_field, str) or not id_field):
        raise InvalidValue(
            f"id_field must be a column name (a non-empty string) or None, not {id_field!r}."
        )
    spec = Spec(id_field, media_field)
    src = open_source(source, spec, format)
    name = project.name if isinstance(project, Project) else str(project)
    report = ImportReport(project=name, source=src.label)
    importer: _Importer | None = None
    bar = _progress(src, progress)
    try:
        with no_gc(), transaction.atomic(), sqlite_bulk():
            proj = get_or_create_project(project)
            report.project = proj.name
            importer = _Importer(proj, src, report, store_media)
            writer = importer.writer
            writer.lock_project()
            before = None if connection.vendor == "postgresql" else _count(proj)
            strict = on_error == "raise"
            accepted = 0

            def converted() -> Iterator[tuple[int, int, _Batch | None]]:
                # Runs in the prefetch thread: reading, converting and checking, no database.
                for chunk in src.chunks:
                    rows = importer.accept(chunk)
                    # After a bad row under "raise" nothing is written: keep reading, to
                    # report every bad row at once.
                    batch = None if strict and report.bad else writer.prepare(rows)
                    yield len(chunk.ids), len(rows.ids), batch

            for n, good, batch in prefetch(converted()):
                report.rows += n
                accepted += good
                if batch is not None and not (strict and report.bad):
                    writer.write(batch)
                bar.update(n)
            if strict and report.bad:
                raise _Rollback
            created = writer.created if before is None else _count(proj) - before
            report.created = created
            report.updated = writer.changed - created
            report.unchanged = accepted - writer.changed
    except _Rollback:
        report.errors.sort(key=lambda e: e.row)
        report.stored = False
        report.media_stored = 0
        if importer is not None:
            importer.discard_media()
        report.seconds = time.perf_counter() - started
        raise ImportRejected(_rejection(report), report) from None
    except BaseException:
        if importer is not None:
            importer.discard_media()
        raise
    finally:
        bar.close()
        report.errors.sort(key=lambda e: e.row)
    if report.created + report.updated >= ANALYZE_AFTER_ROWS:
        analyze(Sample._meta.db_table, ["id", "project_id", "external_id", "updated_at"])
    report.seconds = time.perf_counter() - started
    return report


def analyze(table: str, columns: list[str] | None = None) -> None:
    """Refresh PostgreSQL's statistics of ``table`` after a bulk write.

    Autovacuum does it too, but later: queries right after a large import (the next notebook
    cell) would otherwise be planned for the table as it was, often several times slower.
    Skipped inside a caller's transaction, whose rows are not committed yet.
    """
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return
    q = connection.ops.quote_name
    # Only the columns queries filter and join on: statistics of JSON documents cost the
    # most to gather and serve the planner least.
    cols = f" ({', '.join(q(c) for c in columns)})" if columns else ""
    with connection.cursor() as cur:
        cur.execute(f"ANALYZE {q(table)}{cols}")


class _Rollback(Exception):
    pass


def _count(project: Project) -> int:
    return Sample.objects.filter(project=project).count()


def _rejection(report: ImportReport) -> str:
    listed = "; ".join(str(e) for e in report.errors[:5])
    more = f"; and {report.bad - 5:,} more" if report.bad > 5 else ""
    return (
        f"{report.bad:,} of {report.rows:,} rows of {report.source} are bad, so nothing was "
        f"imported: {listed}{more}. Fix them, or pass on_error='skip' to import the good rows "
        f"(the exception's .report lists every bad row)."
    )
