"""Raw statements on the hot paths of runs and metrics, on Django's own connection.

Starting and finishing a run happen thousands of times in a sweep, and points arrive by the
hundred thousand: on SQLite, Django's cursor wrapper (placeholder rewriting, wrappers) and
ORM query compilation cost several times more than executing the statement. These helpers use
the DB-API cursor of the same connection, so they join the caller's transaction. Values still
go through each field's own ``get_db_prep_save``, so JSON, datetimes and booleans are adapted
exactly as the ORM would.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections


@lru_cache(maxsize=None)
def _fields(model: type, names: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(model._meta.get_field(n) for n in names)


def db() -> Any:
    """This thread's DatabaseWrapper itself: ``django.db.connection`` is a proxy whose every
    attribute access is a thread-local lookup, which adds up over thousands of rows."""
    return connections[DEFAULT_DB_ALIAS]


@lru_cache(maxsize=256)
def _qmark(sql: str) -> str:
    return sql.replace("%s", "?")


def sql_for(sql: str, conn: Any = None) -> str:
    """``sql`` written with %s placeholders, in this connection's placeholder style."""
    return _qmark(sql) if (conn or db()).vendor == "sqlite" else sql


def raw_cursor(conn: Any = None) -> Any:
    """A DB-API cursor of this thread's Django connection (opened if needed)."""
    conn = conn or db()
    conn.ensure_connection()
    return conn.connection.cursor()


def execute(sql: str, params: Sequence[Any] = ()) -> Any:
    conn = db()
    cur = raw_cursor(conn)
    cur.execute(sql_for(sql, conn), params)
    return cur


def executemany(sql: str, rows: Sequence[Sequence[Any]]) -> None:
    conn = db()
    cur = raw_cursor(conn)
    try:
        cur.executemany(sql_for(sql, conn), rows)
    finally:
        cur.close()


_PLAIN_TYPES = (str, int, float, bool, type(None))


@lru_cache(maxsize=None)
def _kinds(model: type, names: tuple[str, ...]) -> tuple[tuple[Any, str], ...]:
    """(field, kind) per name: "plain" (the Python value is the database value), "json" or
    "other" (the field's own get_db_prep_save)."""
    from django.db import models

    out = []
    for f in _fields(model, names):
        if isinstance(f, models.JSONField):
            kind = "json" if f.encoder is None else "other"
        elif isinstance(
            f,
            (models.CharField, models.TextField, models.IntegerField, models.FloatField,
             models.BooleanField, models.ForeignKey),
        ):
            kind = "plain"
        else:
            kind = "other"
        out.append((f, kind))
    return tuple(out)


def _prep(model: type, values: Mapping[str, Any], conn: Any) -> tuple[tuple[Any, ...], list[Any]]:
    kinds = _kinds(model, tuple(values))
    sqlite = conn.vendor == "sqlite"
    out = []
    for (f, kind), v in zip(kinds, values.values()):
        if kind == "plain" and v.__class__ in _PLAIN_TYPES:
            out.append(v)
        elif kind == "json" and sqlite:
            out.append(_dumps(v))  # what Django's adapt_json_value does, minus its layers
        else:
            out.append(f.get_db_prep_save(v, conn))
    return tuple(f for f, _ in kinds), out


def _dumps(value: Any) -> str:
    import json

    return json.dumps(value)


@lru_cache(maxsize=64)
def _insert_sql(model: type, names: tuple[str, ...], vendor: str, returning: bool) -> str:
    qn = db().ops.quote_name
    fields = _fields(model, names)
    cols = ", ".join(qn(f.column) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    sql = f"INSERT INTO {qn(model._meta.db_table)} ({cols}) VALUES ({marks})"
    if returning:
        sql += f" RETURNING {qn(model._meta.pk.column)}"
    return _qmark(sql) if vendor == "sqlite" else sql


def insert_row(model: type, values: Mapping[str, Any]) -> int:
    """INSERT one row of ``model``; returns its primary key."""
    conn = db()
    fields, params = _prep(model, values, conn)
    # SQLite's lastrowid is exact for a one-row INSERT, and RETURNING costs it twice as much.
    returning = conn.vendor != "sqlite" and conn.features.can_return_columns_from_insert
    sql = _insert_sql(model, tuple(values), conn.vendor, returning)
    cur = raw_cursor(conn)
    try:
        cur.execute(sql, params)
        return cur.fetchone()[0] if returning else cur.lastrowid
    finally:
        cur.close()


def update_row(model: type, pk: Any, values: Mapping[str, Any]) -> int:
    """UPDATE one row of ``model`` by primary key; returns the number of rows changed."""
    conn = db()
    fields, params = _prep(model, values, conn)
    qn = conn.ops.quote_name
    sets = ", ".join(f"{qn(f.column)} = %s" for f in fields)
    sql = f"UPDATE {qn(model._meta.db_table)} SET {sets} WHERE {qn(model._meta.pk.column)} = %s"
    cur = execute(sql, [*params, pk])
    try:
        return cur.rowcount
    finally:
        cur.close()


def project_id(name: str) -> int | None:
    cur = execute("SELECT id FROM tracker_project WHERE name = %s", [name])
    try:
        row = cur.fetchone()
    finally:
        cur.close()
    return row[0] if row else None


@contextmanager
def write_transaction(raw_ok: bool = True) -> Iterator[Any]:
    """A write transaction on this thread's connection; yields the DatabaseWrapper.

    On SQLite outside any atomic block (and when ``raw_ok``: the body only runs raw
    statements, never the ORM's own transactions) it is a plain BEGIN IMMEDIATE / COMMIT on
    the DB-API connection: Django's ``atomic()`` costs as much as the two statements of a
    one-point durable write. Everywhere else it is ``transaction.atomic()``.
    """
    from django.db import transaction

    conn = db()
    if not raw_ok or conn.vendor != "sqlite" or conn.in_atomic_block:
        with transaction.atomic(using=conn.alias):
            yield conn
        return
    conn.ensure_connection()
    raw = conn.connection
    raw.execute("BEGIN IMMEDIATE")
    try:
        # Driver errors become Django's (IntegrityError for a deleted run), as through its cursor.
        with conn.wrap_database_errors:
            yield conn
            # A deferred foreign-key check fails here, and leaves the transaction open.
            raw.execute("COMMIT")
    except BaseException:
        if raw.in_transaction:
            try:
                raw.execute("ROLLBACK")
            except Exception:  # a broken connection rolls back by itself
                pass
        raise
