"""Querysets compiled once and run many times: the ORM's own SQL, columns and converters.

Compiling a queryset (``filter(...).first()``) costs 0.2-0.6 ms; the indexed lookup it runs
costs 0.01-0.05 ms. For lookups on a request's hot path, :class:`Prebuilt` compiles the
queryset on first use and then only swaps the parameter values, runs the SQL through Django's
cursor (so query logging and execute wrappers still see it) and builds the instance the way
the ORM does (``Model.from_db`` with the same field converters).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import QuerySet


class Prebuilt:
    """``Prebuilt(build, *examples)``: ``build(*args)`` returns a queryset of one model
    (no ``select_related``) whose SQL takes each of ``args`` as a plain parameter.

    ``examples`` are placeholder values of the right types that the real arguments will never
    equal (they find the parameters' positions in the compiled SQL). ``first(*args)`` returns
    the first instance or None.
    """

    def __init__(self, build: Callable[..., QuerySet], *examples: Any) -> None:
        self._build, self._examples = build, examples
        self._compiled: dict[str, tuple[Any, ...]] = {}
        self._lock = threading.Lock()

    def first(self, *args: Any) -> Any:
        conn = connections[DEFAULT_DB_ALIAS]
        compiled = self._compiled.get(conn.vendor) or self._compile(conn)
        model, sql, template, positions, init_list, width, converters = compiled
        params = list(template)
        for pos, value in zip(positions, args):
            params[pos] = value
        with conn.cursor() as cur:
            cur.execute(sql, params)
            row = cur.fetchone()
        if row is None:
            return None
        values = list(row[:width])
        for pos, convs, expression in converters:
            value = values[pos]
            for convert in convs:
                value = convert(value, expression, conn)
            values[pos] = value
        return model.from_db(conn.alias, init_list, values)

    def _compile(self, conn: Any) -> tuple[Any, ...]:
        with self._lock:
            qs = self._build(*self._examples)
            compiler = qs.query.get_compiler(using=qs.db)
            sql, params = compiler.as_sql()
            positions = []
            for example in self._examples:
                found = [i for i, p in enumerate(params) if type(p) is type(example) and p == example]
                if len(found) != 1:
                    raise ValueError(f"{example!r} is not one plain parameter of {sql!r}")
                positions.append(found[0])
            info = compiler.klass_info
            if info.get("related_klass_infos"):
                raise ValueError("Prebuilt builds one model's instances; drop select_related().")
            start, end = info["select_fields"][0], info["select_fields"][-1] + 1
            if start != 0:
                raise ValueError("Prebuilt needs the model's columns first (no extra annotations).")
            cols = [s[0] for s in compiler.select[start:end]]
            init_list = [c.target.attname for c in cols]
            converters = [(pos, tuple(convs), expr) for pos, (convs, expr) in compiler.get_converters(cols).items()]
            compiled = (info["model"], sql, tuple(params), tuple(positions), init_list, end, converters)
            self._compiled[conn.vendor] = compiled
            return compiled


def insert(model: type, values: dict[str, Any], *, unless_exists: tuple[str, ...] = ()) -> Any:
    """INSERT one row of ``model`` as ``Model.objects.create`` would (each value through its
    field's ``get_db_prep_save``, through Django's cursor, so errors are Django's
    ``IntegrityError`` and friends); returns the new primary key. ``values`` names every
    column the ORM would write, defaults included.

    ``unless_exists``: the fields of a unique constraint; when a row with those values exists
    (or a concurrent transaction commits one first) nothing is inserted and None returned.
    """
    conn = connections[DEFAULT_DB_ALIAS]
    sql, fields, returning = _insert_sql(model, tuple(values), conn.vendor, unless_exists)
    params = [f.get_db_prep_save(v, conn) for f, v in zip(fields, values.values())]
    with conn.cursor() as cur:
        cur.execute(sql, params)
        if returning:
            row = cur.fetchone()
            return row[0] if row is not None else None
        return cur.lastrowid if cur.rowcount == 1 else None


def delete(model: type, **equal: Any) -> None:
    """``model.objects.filter(**equal).delete()`` for a model nothing refers to, as the one
    statement the ORM's fast delete runs; the ORM does it when delete signals are connected."""
    from django.db.models.signals import post_delete, pre_delete

    if pre_delete.has_listeners(model) or post_delete.has_listeners(model):
        model.objects.filter(**equal).delete()
        return
    conn = connections[DEFAULT_DB_ALIAS]
    sql = _delete_sql(model, tuple(equal), conn.vendor)
    with conn.cursor() as cur:
        cur.execute(sql, list(equal.values()))


@lru_cache(maxsize=64)
def _insert_sql(
    model: type, names: tuple[str, ...], vendor: str, unless_exists: tuple[str, ...]
) -> tuple[str, tuple[Any, ...], bool]:
    conn = connections[DEFAULT_DB_ALIAS]
    q = conn.ops.quote_name
    fields = tuple(model._meta.get_field(n) for n in names)
    # SQLite's lastrowid is exact for a one-row INSERT, and RETURNING costs it twice as much.
    returning = vendor != "sqlite" and conn.features.can_return_columns_from_insert
    sql = (
        f"INSERT INTO {q(model._meta.db_table)} ({', '.join(q(f.column) for f in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))})"
    )
    if unless_exists:
        target = ", ".join(q(model._meta.get_field(n).column) for n in unless_exists)
        sql += f" ON CONFLICT ({target}) DO NOTHING"
    if returning:
        sql += f" RETURNING {q(model._meta.pk.column)}"
    return sql, fields, returning


@lru_cache(maxsize=64)
def _delete_sql(model: type, names: tuple[str, ...], vendor: str) -> str:
    q = connections[DEFAULT_DB_ALIAS].ops.quote_name
    where = " AND ".join(f"{q(model._meta.get_field(n).column)} = %s" for n in names)
    return f"DELETE FROM {q(model._meta.db_table)} WHERE {where}"
