"""Raw statements on the hot paths of runs and metrics, on Django's own connection.

Starting and finishing a run happen thousands of times in a sweep, and points arrive by the
hundred thousand: on SQLite, Django's cursor wrapper (placeholder rewriting, wrappers) and
ORM query compilation cost several times more than executing the statement. These helpers use
the DB-API cursor of the same connection, so they join the caller's transaction. Values still
go through each field's own ``get_db_prep_save``, so JSON, datetimes and booleans are adapted
exactly as the ORM would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from django.db import connection


@lru_cache(maxsize=None)
def _fields(model: type, names: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(model._meta.get_field(n) for n in names)


@lru_cache(maxsize=256)
def _qmark(sql: str) -> str:
    return sql.replace("%s", "?")


def sql_for(sql: str) -> str:
    """``sql`` written with %s placeholders, in this connection's placeholder style."""
    return _qmark(sql) if connection.vendor == "sqlite" else sql


def raw_cursor() -> Any:
    """A DB-API cursor of this thread's Django connection (opened if needed)."""
    connection.ensure_connection()
    return connection.connection.cursor()


def execute(sql: str, params: Sequence[Any] = ()) -> Any:
    cur = raw_cursor()
    cur.execute(sql_for(sql), params)
    return cur


def executemany(sql: str, rows: Sequence[Sequence[Any]]) -> None:
    cur = raw_cursor()
    try:
        cur.executemany(sql_for(sql), rows)
    finally:
        cur.close()


def _prep(model: type, values: Mapping[str, Any]) -> tuple[tuple[Any, ...], list[Any]]:
    fields = _fields(model, tuple(values))
    return fields, [f.get_db_prep_save(v, connection) for f, v in zip(fields, values.values())]


@lru_cache(maxsize=64)
def _insert_sql(model: type, names: tuple[str, ...], vendor: str, returning: bool) -> str:
    qn = connection.ops.quote_name
    fields = _fields(model, names)
    cols = ", ".join(qn(f.column) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    sql = f"INSERT INTO {qn(model._meta.db_table)} ({cols}) VALUES ({marks})"
    if returning:
        sql += f" RETURNING {qn(model._meta.pk.column)}"
    return _qmark(sql) if vendor == "sqlite" else sql


def insert_row(model: type, values: Mapping[str, Any]) -> int:
    """INSERT one row of ``model``; returns its primary key."""
    fields, params = _prep(model, values)
    returning = connection.features.can_return_columns_from_insert
    sql = _insert_sql(model, tuple(values), connection.vendor, returning)
    cur = raw_cursor()
    try:
        cur.execute(sql, params)
        return cur.fetchone()[0] if returning else cur.lastrowid
    finally:
        cur.close()


def update_row(model: type, pk: Any, values: Mapping[str, Any]) -> int:
    """UPDATE one row of ``model`` by primary key; returns the number of rows changed."""
    fields, params = _prep(model, values)
    qn = connection.ops.quote_name
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
