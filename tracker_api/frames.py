"""pandas DataFrames over JSON, typed, so a remote client decodes the very frame the server built.

The shape (also the OpenAPI ``Table`` schema)::

    {"index": [{"name": "step", "dtype": "int64"}],          # one entry per index level
     "columns": [{"name": "loss", "dtype": "float64"}],
     "columns_name": null, "columns_dtype": "str",
     "results": [[0, 0.5], [1, "NaN"]]}                      # one row: index values, then cells

JSON has no NaN, infinities, datetimes or durations: float columns carry "NaN", "Infinity" and
"-Infinity" as strings, datetime and timedelta columns integers in their unit (null for NaT),
and cells of object columns tag such values (``{"$float": "NaN"}``, ``{"$datetime": "..."}``,
``{"$timedelta": ns}``). Rows are called ``results`` like every list answer of the API.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

_SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_TAGS = ("$float", "$datetime", "$timedelta", "$nat", "$na", "$dict")


def _float(v: float) -> Any:
    if v != v:
        return "NaN"
    if v in (math.inf, -math.inf):
        return "Infinity" if v > 0 else "-Infinity"
    return v


def _cell(v: Any) -> Any:
    """One value of an object column as JSON."""
    import numpy as np
    import pandas as pd

    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else {"$float": _float(v)}
    if isinstance(v, np.generic):
        return _cell(v.item())
    if v is pd.NaT:
        return {"$nat": None}
    if v is pd.NA:
        return {"$na": None}
    if isinstance(v, dt.datetime):
        return {"$datetime": pd.Timestamp(v).isoformat()}
    if isinstance(v, dt.timedelta):
        return {"$timedelta": int(pd.Timedelta(v).value)}
    if isinstance(v, dict):
        out = {str(k): _cell(x) for k, x in v.items()}
        if len(out) == 1 and next(iter(out)) in _TAGS:
            return {"$dict": out}  # a user's dict that looks like a tag stays a dict
        return out
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_cell(x) for x in v]
    return str(v)


def _uncell(v: Any) -> Any:
    import pandas as pd

    if isinstance(v, dict):
        if len(v) == 1:
            (tag, inner), = v.items()
            if tag == "$float":
                return _SPECIAL[inner]
            if tag == "$datetime":
                return pd.Timestamp(inner)
            if tag == "$timedelta":
                return pd.Timedelta(int(inner), unit="ns")
            if tag == "$nat":
                return pd.NaT
            if tag == "$na":
                return pd.NA
            if tag == "$dict":
                return {k: _uncell(x) for k, x in inner.items()}
        return {k: _uncell(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_uncell(x) for x in v]
    return v


def _encode(values: Any, name: Any) -> tuple[dict[str, Any], list[Any]]:
    """(description, JSON values) of one column or index level."""
    import numpy as np
    import pandas as pd

    s = pd.Series(values, copy=False)
    dtype = s.dtype
    desc: dict[str, Any] = {"name": _cell(name), "dtype": str(dtype)}
    kind = getattr(dtype, "kind", "O")
    if kind == "f" and isinstance(dtype, np.dtype):
        arr = s.to_numpy()
        if np.isfinite(arr).all():
            return desc, arr.tolist()
        return desc, [_float(v) for v in arr.tolist()]
    if kind in "iub" and isinstance(dtype, np.dtype):
        return desc, s.tolist()
    if kind in "Mm":
        tz = getattr(dtype, "tz", None)
        raw = (s.dt.tz_localize(None) if tz is not None else s).to_numpy()
        unit = np.datetime_data(raw.dtype)[0]
        desc.update(unit=unit, tz=str(tz) if tz is not None else None)
        ints = raw.view("i8")
        nat = np.iinfo(np.int64).min
        if not (ints == nat).any():
            return desc, ints.tolist()
        return desc, [None if i == nat else i for i in ints.tolist()]
    values = s.tolist()
    if all(v.__class__ is str for v in values):  # a text column: nothing to tag
        return desc, values
    return desc, [_cell(v) for v in values]


def _dtype(name: str | None) -> Any:
    """A dtype name as this pandas spells it: "str" (pandas 3's string dtype) is object before."""
    import pandas as pd

    if name == "str" and int(pd.__version__.split(".")[0]) < 3:
        return object
    return name


def _decode(desc: dict[str, Any], values: Any) -> Any:
    import numpy as np
    import pandas as pd

    dtype = desc["dtype"]
    if "unit" in desc:
        nat = np.iinfo(np.int64).min
        try:
            ints = np.array(values, dtype="i8")
        except TypeError:  # None (NaT) among them
            ints = np.array([nat if v is None else v for v in values], dtype="i8")
        kind = "timedelta64" if dtype.startswith("timedelta") else "datetime64"
        arr = pd.Series(ints.view(f"{kind}[{desc['unit']}]"))
        return arr.dt.tz_localize(desc["tz"]) if desc.get("tz") else arr
    if dtype.startswith("float"):
        try:
            return pd.Series(np.array(values, dtype=dtype))
        except (TypeError, ValueError):  # "NaN", "Infinity" among them (None is NaN either way)
            return pd.Series([_SPECIAL[v] if isinstance(v, str) else v for v in values], dtype=dtype)
    if dtype.startswith(("int", "uint", "bool")):
        return pd.Series(list(values), dtype=dtype)
    if any(v.__class__ in (dict, list) for v in values):
        cells = pd.Series([_uncell(v) for v in values], dtype=object)
    else:  # plain JSON scalars: nothing tagged
        cells = pd.Series(values, dtype=object)
    if _dtype(dtype) is not object and dtype != "object":
        try:
            return cells.astype(dtype)
        except (TypeError, ValueError):  # pragma: no cover - an extension dtype pandas cannot rebuild
            return cells
    return cells


def encode(frame: Any) -> dict[str, Any]:
    """A DataFrame as the JSON ``Table`` shape."""
    index = frame.index
    levels = [index.get_level_values(i) for i in range(index.nlevels)]
    parts = [_encode(level, name) for level, name in zip(levels, index.names)]
    parts += [_encode(frame.iloc[:, j], name) for j, name in enumerate(frame.columns)]
    nidx = index.nlevels
    columns = [p[0] for p in parts]
    rows = list(zip(*(p[1] for p in parts))) if len(frame) else []  # tuples: JSON arrays
    return {
        "index": columns[:nidx],
        "columns": columns[nidx:],
        "columns_name": _cell(frame.columns.name),
        "columns_dtype": str(frame.columns.dtype),
        "results": rows,
    }


def decode(table: dict[str, Any]) -> Any:
    """The DataFrame an :func:`encode` answer describes."""
    import pandas as pd

    descs = [*table["index"], *table["columns"]]
    rows = table["results"]
    cols = [[row[i] for row in rows] for i in range(len(descs))]  # zip(*rows) is slow for many rows
    series = [_decode(d, c) for d, c in zip(descs, cols)]
    nidx = len(table["index"])
    names = [_uncell(d["name"]) for d in table["index"]]
    if nidx == 1:
        index = pd.Index(series[0], name=names[0])
    else:
        index = pd.MultiIndex.from_arrays([pd.Index(s) for s in series[:nidx]], names=names)
    frame = pd.DataFrame({i: s.reset_index(drop=True) for i, s in enumerate(series[nidx:])})
    frame.index = index
    labels = [_uncell(d["name"]) for d in table["columns"]]
    try:
        frame.columns = pd.Index(labels, dtype=_dtype(table.get("columns_dtype")))
    except (TypeError, ValueError):  # pragma: no cover - labels the recorded dtype cannot hold
        frame.columns = pd.Index(labels)
    frame.columns.name = _uncell(table.get("columns_name"))
    return frame
