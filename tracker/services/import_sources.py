"""Reading import sources into chunks of JSON rows: DataFrames and Arrow tables column by column
(vectorised through Arrow where the type allows), lists of dicts and JSONL record by record, CSV
with exact line numbers and whole-column type inference, Parquet batch by batch."""

from __future__ import annotations

import codecs
import csv
import datetime as _dt
import decimal
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _enc  # the C encoder when available
from pathlib import Path
from typing import Any

from tracker.exceptions import InvalidValue

FORMATS = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
RESERVED = ("metadata", "media_uri")
CHUNK_ROWS = 50_000
_LEADING_ZERO = r"^[+-]?0[0-9]"
_ALL_DIGITS = r"^[+-]?[0-9]+$"


# --------------------------------------------------------------------------- value conversion


class Bad(Exception):
    """A value that cannot be stored; the message is the reason shown for its row."""


def _clean(value: Any, path: str) -> Any:
    """``value`` ready for JSON: NaN -> None, dates -> ISO 8601, numpy scalars -> Python."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            raise Bad(f"{path} is {value}, which JSON cannot hold")
        return value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise Bad(f"{path} has a non-string key {k!r}")
            out[k] = _clean(v, f"{path}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_clean(v, f"{path}[{i}]") for i, v in enumerate(value)]
    kind = type(value).__module__
    if kind.startswith("pandas") and type(value).__name__ in ("NAType", "NaTType"):
        return None  # pandas' missing values (NaT is also a datetime, so test it first)
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal) and value.is_finite():
        return float(value)
    if (kind == "numpy" or kind.startswith("numpy.")) and hasattr(value, "tolist"):
        return _clean(value.tolist(), path)  # numpy scalars and arrays
    raise Bad(
        f"{path} is a {type(value).__name__} ({value!r:.60}), which is not JSON-serialisable; "
        f"convert it to a string or number first"
    )


def _fragment(value: Any, path: str) -> str:
    """JSON text of one cell (Django's separators, ASCII), or Bad."""
    if value is None:
        return "null"
    if type(value) is str:
        return _enc(value)
    value = _clean(value, path)
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:  # pragma: no cover - _clean lets only JSON through
        raise Bad(f"{path} cannot be written as JSON ({exc})") from None


def _encode_python(name: str, values: list[Any]) -> tuple[list[str], dict[int, str]]:
    out: list[str] = []
    bad: dict[int, str] = {}
    path = f"column {name!r}"
    for i, v in enumerate(values):
        try:
            out.append(_fragment(v, path))
        except Bad as exc:
            out.append("null")
            bad[i] = str(exc)
    return out, bad


def encode_arrow(name: str, arr: Any) -> tuple[list[str], dict[int, str]]:
    """JSON fragments for an Arrow array, vectorised for the common scalar types."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.dictionary_decode()
        t = arr.type
    if pa.types.is_null(t):
        return ["null"] * len(arr), {}
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return pc.cast(arr, pa.string()).fill_null("null").to_pylist(), {}
    if pa.types.is_floating(t):
        arr = arr.cast(pa.float64())
        bad: dict[int, str] = {}
        if arr.null_count < len(arr):
            # NaN is how pandas writes a missing value: store null. Infinity has no JSON form.
            arr = pc.if_else(pc.is_nan(arr), pa.scalar(None, pa.float64()), arr)
            inf = pc.fill_null(pc.is_inf(arr), False)
            if pc.any(inf).as_py():
                values = arr.to_pylist()
                for i in pc.indices_nonzero(inf).to_pylist():
                    bad[i] = f"column {name!r} is {values[i]}, which JSON cannot hold"
                arr = pc.if_else(inf, pa.scalar(None, pa.float64()), arr)
        text = pc.cast(arr, pa.string())
        # Arrow prints 1.0 as "1"; keep the ".0" so the value reads back as a float.
        whole = pc.match_substring_regex(text, r"^-?[0-9]+$")
        text = pc.if_else(whole, pc.binary_join_element_wise(text, ".0", ""), text)
        return text.fill_null("null").to_pylist(), bad
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        values = arr.to_pylist()
        if arr.null_count == 0:
            return list(map(_enc, values)), {}
        return ["null" if v is None else _enc(v) for v in values], {}
    if (
        (pa.types.is_temporal(t) and not pa.types.is_duration(t) and not pa.types.is_interval(t))
        or pa.types.is_decimal(t)
        or pa.types.is_nested(t)
    ):
        values = arr.to_pylist()
        if pa.types.is_map(t):
            values = [None if v is None else dict(v) for v in values]
        return _encode_python(name, values)
    reason = (
        f"column {name!r} holds {t} values, which JSON cannot store; convert the column "
        f"(for example to strings) before importing"
    )
    valid = arr.is_valid().to_pylist()
    return ["null"] * len(arr), {i: reason for i, ok in enumerate(valid) if ok}


def _ids_from_arrow(name: str, arr: Any) -> tuple[list[str | None], dict[int, str]]:
    import pyarrow as pa
    import pyarrow.compute as pc

    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.dictionary_decode()
        t = arr.type
    if pa.types.is_integer(t):
        return pc.cast(arr, pa.string()).to_pylist(), {}
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return arr.to_pylist(), {}
    if pa.types.is_null(t):
        return [None] * len(arr), {}
    values = arr.to_pylist()
    return _ids_from_python(name, values)


def _ids_from_python(name: str, values: list[Any]) -> tuple[list[str | None], dict[int, str]]:
    out: list[str | None] = []
    bad: dict[int, str] = {}
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(None)
        elif isinstance(v, str):
            out.append(v)
        elif isinstance(v, float) and v.is_integer():
            out.append(str(int(v)))  # an int column that pandas widened to float for its NaNs
        elif isinstance(v, int) and not isinstance(v, bool):
            out.append(str(v))
        elif type(v).__module__ == "numpy" and hasattr(v, "item"):
            converted, problems = _ids_from_python(name, [v.item()])
            out.append(converted[0])
            if problems:
                bad[i] = problems[0]
        else:
            out.append(None)
            bad[i] = (
                f"the id in column {name!r} is a {type(v).__name__} ({v!r:.40}); ids must be "
                f"strings or integers"
            )
    return out, bad


# ---------------------------------------------------------------------------- prepared chunks


@dataclass
class Chunk:
    """Rows of one source chunk, converted but not yet checked for ids, duplicates and media."""

    numbers: list[int]
    ids: list[str | None]
    data: list[str]
    problems: dict[int, str]
    metadata: list[str | None] | None = None
    media_uri: list[str | None] | None = None
    media: list[str | None] | None = None
    # Rows without an id get one derived from their content (add_samples' rule).
    derive_ids: bool = False


class Spec:
    """The caller's choices that shape how rows are read."""

    def __init__(self, id_field: str | None, media_field: str | None) -> None:
        self.id_field = id_field
        self.media_field = media_field

    def resolve_id(self, columns: Iterable[str], source: str) -> str | None:
        """The id column to use, or None to derive ids; raises when a named one is missing."""
        cols = list(columns)
        if self.id_field is None:
            return "id" if "id" in cols else None
        if self.id_field not in cols:
            shown = ", ".join(repr(c) for c in cols[:20]) or "none"
            raise InvalidValue(
                f"The id column {self.id_field!r} is not in {source}; its columns are {shown}. "
                f"Pass id_field= one of them, or id_field=None to use an 'id' column if there "
                f"is one and derive stable ids from the content otherwise. Nothing was imported."
            )
        return self.id_field

    def check_media(self, columns: Iterable[str], source: str) -> None:
        if self.media_field is not None and self.media_field not in set(columns):
            raise InvalidValue(
                f"The media column {self.media_field!r} is not in {source}. Pass media_field= "
                f"the column holding file paths or URIs, or leave it out. Nothing was imported."
            )


def _column_chunk(
    columns: Mapping[str, Any], n: int, numbers: list[int], spec: Spec, id_col: str | None
) -> Chunk:
    """Convert one slice of a tabular source into a chunk, column by column.

    ``columns`` maps each name to an Arrow array, or to a plain list when Arrow could not hold
    the values (mixed types, arbitrary objects), which are then checked one by one.
    """
    problems: dict[int, str] = {}
    encoded: dict[str, tuple[list[str], dict[int, str]]] = {}
    ids: list[str | None] = [None] * n
    metadata = media_uri = media = None
    for name, col in columns.items():
        plain = isinstance(col, list)
        if name == id_col:
            ids, bad = _ids_from_python(name, col) if plain else _ids_from_arrow(name, col)
        elif name == "metadata":
            metadata, bad = _metadata_values(col if plain else col.to_pylist())
        elif name in ("media_uri", spec.media_field):
            values, bad = _string_values(name, col if plain else col.to_pylist())
            if name == spec.media_field:
                media = values
            else:
                media_uri = values
        else:
            encoded[name] = _encode_python(name, col) if plain else encode_arrow(name, col)
            continue
        for i, reason in bad.items():
            problems.setdefault(i, reason)
    for _, bad in encoded.values():
        for i, reason in bad.items():
            problems[i] = f"{problems[i]}; {reason}" if i in problems else reason
    if encoded:
        template = object_template(encoded)
        data = [template % row for row in zip(*(frags for frags, _ in encoded.values()))]
    else:
        data = ["{}"] * n
    return Chunk(numbers, ids, data, problems, metadata, media_uri, media, id_col is None)


def object_template(columns: Iterable[str]) -> str:
    """A %-format template for one row's JSON object (Django's separators, keys escaped)."""
    keys = [_enc(name).replace("%", "%%") + ": %s" for name in columns]
    return "{" + ", ".join(keys) + "}"


def _metadata_values(values: list[Any]) -> tuple[list[str | None], dict[int, str]]:
    out: list[str | None] = []
    bad: dict[int, str] = {}
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(None)
            continue
        if isinstance(v, str):  # a CSV cell holding a JSON object
            try:
                v = json.loads(v)
            except json.JSONDecodeError:
                pass
        if not isinstance(v, Mapping):
            out.append(None)
            bad[i] = f"'metadata' must be a dict (or a JSON object), not {type(v).__name__}"
            continue
        try:
            out.append(_fragment(dict(v), "metadata"))
        except Bad as exc:
            out.append(None)
            bad[i] = str(exc)
    return out, bad


def _string_values(name: str, values: list[Any]) -> tuple[list[str | None], dict[int, str]]:
    out: list[str | None] = []
    bad: dict[int, str] = {}
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and math.isnan(v)) or v == "":
            out.append(None)
        elif isinstance(v, str):
            out.append(v)
        else:
            out.append(None)
            bad[i] = f"{name!r} must be a string (a path or URI), not {type(v).__name__}"
    return out, bad


def _records_chunk(records: list[Any], numbers: list[int], spec: Spec) -> Chunk:
    """Convert dicts (a list, or parsed JSONL lines) into a chunk, record by record."""
    id_field = spec.id_field or "id"
    ids: list[str | None] = []
    data: list[str] = []
    metadata: list[str | None] = []
    media_uri: list[str | None] = []
    media: list[str | None] = []
    problems: dict[int, str] = {}
    skip = {id_field, *RESERVED, spec.media_field}
    for i, rec in enumerate(records):
        ids.append(None)
        data.append("{}")
        metadata.append(None)
        media_uri.append(None)
        media.append(None)
        if isinstance(rec, Bad):  # a JSONL line that did not parse
            problems[i] = str(rec)
            continue
        if not isinstance(rec, Mapping):
            problems[i] = f"is a {type(rec).__name__}, not a dict (an object with named fields)"
            continue
        try:
            raw_id = rec.get(id_field)
            if raw_id is None or raw_id == "" or (isinstance(raw_id, float) and math.isnan(raw_id)):
                if spec.id_field is not None:
                    raise Bad(f"has no {id_field!r}")
            else:
                converted, bad = _ids_from_python(id_field, [raw_id])
                if bad:
                    raise Bad(bad[0])
                ids[i] = converted[0]
            body = {}
            for k, v in rec.items():
                if k in skip:
                    continue
                if not isinstance(k, str):
                    raise Bad(f"has a non-string key {k!r}")
                body[k] = _clean(v, k)
            data[i] = json.dumps(body, allow_nan=False)
            if "metadata" in rec:
                values, bad = _metadata_values([rec["metadata"]])
                if bad:
                    raise Bad(bad[0])
                metadata[i] = values[0]
            for key, target in (("media_uri", media_uri), (spec.media_field, media)):
                if key is not None and key in rec:
                    values, bad = _string_values(key, [rec[key]])
                    if bad:
                        raise Bad(bad[0])
                    target[i] = values[0]
        except Bad as exc:
            problems[i] = str(exc)
    # As in add_samples, a record without metadata or media_uri resets them: a record is the
    # whole sample. The media file is only touched when a media field was named.
    return Chunk(
        numbers,
        ids,
        data,
        problems,
        [m or "{}" for m in metadata],
        [u or "" for u in media_uri],
        media if spec.media_field else None,
        derive_ids=True,
    )


# ------------------------------------------------------------------------------------ sources


@dataclass
class Source:
    label: str  # "data.csv", "a DataFrame"
    where: str  # "line" or "row"
    total: int | None  # rows, when known before reading
    chunks: Iterator[Chunk]
    base_dir: Path
    size: int | None = None  # bytes of the file, for a progress bar when rows are not known


def open_source(source: Any, spec: Spec, fmt: str | None) -> Source:
    if isinstance(source, (str, Path)):
        return _open_path(Path(source).expanduser(), spec, fmt)
    mod = type(source).__module__
    if mod.startswith("pandas") and type(source).__name__ == "DataFrame":
        return _open_frame(source, spec)
    if mod.startswith("pyarrow") and type(source).__name__ in ("Table", "RecordBatch"):
        import pyarrow as pa

        table = source if isinstance(source, pa.Table) else pa.Table.from_batches([source])
        return _open_table(table, spec, "an Arrow table")
    if isinstance(source, Mapping):
        source = [source]
    if isinstance(source, (bytes, bytearray)) or not isinstance(source, Iterable):
        raise InvalidValue(
            f"import_samples() cannot read a {type(source).__name__}. Pass a pandas DataFrame, "
            f"a pyarrow Table, a list of dicts, or the path of a .csv, .jsonl or .parquet file."
        )
    records = source if isinstance(source, list) else list(source)
    return _open_records(records, spec)


def _open_records(records: list[Any], spec: Spec) -> Source:
    def chunks() -> Iterator[Chunk]:
        for start in range(0, len(records), CHUNK_ROWS):
            part = records[start : start + CHUNK_ROWS]
            yield _records_chunk(part, list(range(start, start + len(part))), spec)

    return Source("a list of dicts", "row", len(records), chunks(), Path.cwd())


def _frame_columns(df: Any) -> dict[str, Any]:
    """Arrow arrays for a DataFrame slice's columns; a plain list where Arrow cannot hold them."""
    import pyarrow as pa

    out: dict[str, Any] = {}
    for i, name in enumerate(df.columns):
        series = df.iloc[:, i]
        try:
            # from_pandas: NaN and None become null, as pandas means them.
            out[str(name)] = pa.array(series, from_pandas=True)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            out[str(name)] = series.tolist()
    return out


def _open_frame(df: Any, spec: Spec) -> Source:
    names = [str(c) for c in df.columns]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise InvalidValue(
            f"The DataFrame has repeated column names ({', '.join(map(repr, dupes))}); rename "
            f"them so each field has one name. Nothing was imported."
        )
    if spec.id_field is not None and spec.id_field not in names and df.index.name == spec.id_field:
        df = df.reset_index()
        names = [str(c) for c in df.columns]
    id_col = spec.resolve_id(names, "the DataFrame")
    spec.check_media(names, "the DataFrame")
    n = len(df)

    def chunks() -> Iterator[Chunk]:
        for start in range(0, n, CHUNK_ROWS):
            part = df.iloc[start : start + CHUNK_ROWS]
            numbers = list(range(start, start + len(part)))
            yield _column_chunk(_frame_columns(part), len(part), numbers, spec, id_col)

    return Source("a DataFrame", "row", n, chunks(), Path.cwd())


def _arrow_columns(table: Any) -> dict[str, Any]:
    return {
        name: (col.combine_chunks() if col.num_chunks != 1 else col.chunk(0))
        for name, col in zip(table.column_names, table.columns)
    }


def _open_table(table: Any, spec: Spec, label: str, base_dir: Path | None = None) -> Source:
    names = list(table.column_names)
    id_col = spec.resolve_id(names, label)
    spec.check_media(names, label)
    n = table.num_rows

    def chunks() -> Iterator[Chunk]:
        for start in range(0, n, CHUNK_ROWS):
            part = table.slice(start, CHUNK_ROWS)
            numbers = list(range(start, start + part.num_rows))
            yield _column_chunk(_arrow_columns(part), part.num_rows, numbers, spec, id_col)

    return Source(label, "row", n, chunks(), base_dir or Path.cwd())


def _open_path(path: Path, spec: Spec, fmt: str | None) -> Source:
    if fmt is None:
        fmt = FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise InvalidValue(
                f"Cannot tell the format of {path.name!r} from its extension; pass "
                f"format='csv', 'jsonl' or 'parquet'."
            )
    elif fmt not in ("csv", "jsonl", "parquet"):
        raise InvalidValue(f"format must be 'csv', 'jsonl' or 'parquet', not {fmt!r}.")
    if not path.is_file():
        raise InvalidValue(
            f"There is no file at {str(path)!r}; check the path. Nothing was imported."
        )
    if fmt == "parquet":
        return _open_parquet(path, spec)
    if fmt == "jsonl":
        return _open_jsonl(path, spec)
    return _open_csv(path, spec)


def _open_parquet(path: Path, spec: Spec) -> Source:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InvalidValue(
            f"{path.name} is not a readable Parquet file ({exc}). Nothing was imported."
        ) from None
    names = list(pf.schema_arrow.names)
    id_col = spec.resolve_id(names, path.name)
    spec.check_media(names, path.name)

    def chunks() -> Iterator[Chunk]:
        start = 0
        for batch in pf.iter_batches(batch_size=CHUNK_ROWS):
            numbers = list(range(start, start + batch.num_rows))
            columns = dict(zip(batch.schema.names, batch.columns))
            yield _column_chunk(columns, batch.num_rows, numbers, spec, id_col)
            start += batch.num_rows

    return Source(path.name, "row", pf.metadata.num_rows, chunks(), path.parent)


def _open_jsonl(path: Path, spec: Spec) -> Source:
    def chunks() -> Iterator[Chunk]:
        records: list[Any] = []
        numbers: list[int] = []
        for lineno, line in _text_lines(path):
            if isinstance(line, Bad):
                records.append(line)
            elif not line.strip():
                continue
            else:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    records.append(Bad(f"is not valid JSON ({exc.msg} at column {exc.colno})"))
            numbers.append(lineno)
            if len(records) >= CHUNK_ROWS:
                yield _records_chunk(records, numbers, spec)
                records, numbers = [], []
        if records:
            yield _records_chunk(records, numbers, spec)

    return Source(path.name, "line", None, chunks(), path.parent, path.stat().st_size)


def _text_lines(path: Path) -> Iterator[tuple[int, str | Bad]]:
    """(line number, text) of each line; a line that is not UTF-8 comes as a Bad, so one bad
    line is reported as such instead of stopping the whole file."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):  # files saved by Excel
                raw = raw[len(codecs.BOM_UTF8) :]
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield (
                    lineno,
                    Bad(
                        f"is not UTF-8 text ({exc.reason} at byte {exc.start}); save the file as UTF-8"
                    ),
                )


def _open_csv(path: Path, spec: Spec) -> Source:
    """Read a CSV file whole (as Arrow string columns), then type each column over all rows."""
    import pyarrow as pa

    bad: list[tuple[int, str]] = []
    lines: list[int] = []
    undecodable: dict[int, str] = {}

    def decoded() -> Iterator[str]:
        for lineno, text in _text_lines(path):
            if isinstance(text, Bad):
                undecodable[lineno] = str(text)
                yield "\n"  # an empty line: the reader skips it, the report names it
            else:
                yield text

    reader = csv.reader(decoded(), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise InvalidValue(f"{path.name} is empty; a CSV file needs a header line.") from None
    except csv.Error as exc:
        raise InvalidValue(f"The header line of {path.name} is not valid CSV ({exc}).") from None
    if 1 in undecodable:
        raise InvalidValue(
            f"The header line of {path.name} is not UTF-8 text; save the file as UTF-8. "
            f"Nothing was imported."
        )
    names = [h.strip() for h in header]
    if len(set(names)) != len(names) or "" in names:
        raise InvalidValue(
            f"The header of {path.name} has empty or repeated column names ({header!r}); "
            f"give every column its own name. Nothing was imported."
        )
    id_col = spec.resolve_id(names, path.name)
    spec.check_media(names, path.name)
    width = len(names)
    parts: list[list[Any]] = [[] for _ in names]
    rows: list[list[str]] = []
    done = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            bad.append((done + 1, f"is not valid CSV ({exc})"))
            done = reader.line_num
            continue
        start, done = done + 1, reader.line_num
        if not row:
            continue
        if len(row) != width:
            bad.append((start, f"has {len(row)} fields; the header has {width}"))
            continue
        rows.append(row)
        lines.append(start)
        if len(rows) >= CHUNK_ROWS:
            _flush_csv_rows(rows, parts)
            rows = []
    _flush_csv_rows(rows, parts)
    bad += undecodable.items()
    bad.sort()
    columns = {
        name: _infer_csv_type(pa.chunked_array(p, type=pa.string()))
        for name, p in zip(names, parts)
    }
    if id_col is not None:
        columns[id_col] = pa.chunked_array(parts[names.index(id_col)], type=pa.string())
    table = pa.table(columns)
    n = table.num_rows

    def chunks() -> Iterator[Chunk]:
        for number, reason in bad:
            yield Chunk([number], [None], ["{}"], {0: reason}, derive_ids=id_col is None)
        for start in range(0, n, CHUNK_ROWS):
            part = table.slice(start, CHUNK_ROWS)
            numbers = lines[start : start + part.num_rows]
            yield _column_chunk(_arrow_columns(part), part.num_rows, numbers, spec, id_col)

    return Source(path.name, "line", n + len(bad), chunks(), path.parent)


def _flush_csv_rows(rows: list[list[str]], parts: list[list[Any]]) -> None:
    import pyarrow as pa

    if not rows:
        return
    for part, values in zip(parts, zip(*rows)):
        # An empty field is a missing value.
        part.append(pa.array([v if v != "" else None for v in values], type=pa.string()))


def _infer_csv_type(col: Any) -> Any:
    """The column as integers, floats or booleans when every value is one, else as strings.

    Values with leading zeros ("007") and integers too big for 64 bits stay strings, so
    nothing is silently changed.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    col = (
        col.combine_chunks()
        if col.num_chunks != 1
        else (col.chunk(0) if col.num_chunks else pa.array([], pa.string()))
    )
    present = col.drop_null()
    if len(present) == 0:
        return col
    if pc.any(pc.match_substring_regex(present, _LEADING_ZERO)).as_py():
        return col
    try:
        return pc.cast(col, pa.int64())
    except pa.ArrowException:
        pass
    if pc.all(pc.match_substring_regex(present, _ALL_DIGITS)).as_py():
        return col  # integers beyond 64 bits: a float would change them
    try:
        return pc.cast(col, pa.float64())
    except pa.ArrowException:
        pass
    lowered = pc.utf8_lower(present)
    if pc.all(pc.is_in(lowered, value_set=pa.array(["true", "false"]))).as_py():
        return pc.equal(pc.utf8_lower(col), "true")
    return col
