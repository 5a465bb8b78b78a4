"""Dataset snapshots as files: JSON rows to Arrow, Parquet snapshots as content-addressed blobs,
and streaming reads and exports of them with bounded memory."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tracker import conf
from tracker.exceptions import InvalidValue, StorageError

# Rows per Parquet row group: reads and exports stream one group at a time.
ROW_GROUP_ROWS = 65_536
# version.export(progress=None) shows a bar from this many rows on.
PROGRESS_MIN_ROWS = 100_000
EXPORT_FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
}


# ------------------------------------------------------------------------- JSON rows -> Arrow


def _without_timestamps(t: Any) -> Any:
    """``t`` with every timestamp replaced by string (JSON has strings, not timestamps)."""
    import pyarrow as pa

    if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t):
        return pa.string()
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_without_timestamps(f.type)) for f in t])
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(t.value_field.with_type(_without_timestamps(t.value_type)))
    return t


def json_texts_table(texts: Sequence[str]) -> Any:
    """An Arrow table whose rows are the JSON objects ``texts`` (one field per column).

    Arrow's C++ reader does the parsing; it would turn ISO date strings into timestamps, so
    such fields are read again as the strings they are. Rows that do not fit one type per
    field fall back to :func:`records_table`.
    """
    import pyarrow as pa
    import pyarrow.json as pj

    if not texts:
        return pa.table({})
    payload = "\n".join(texts).encode()
    read = pj.ReadOptions(block_size=max(len(payload) + 1, 1 << 20), use_threads=True)
    try:
        table = pj.read_json(io.BytesIO(payload), read_options=read)
        fixed = pa.schema([f.with_type(_without_timestamps(f.type)) for f in table.schema])
        if fixed != table.schema:
            parse = pj.ParseOptions(explicit_schema=fixed, unexpected_field_behavior="infer")
            table = pj.read_json(io.BytesIO(payload), read_options=read, parse_options=parse)
        if table.num_rows == len(texts):
            return table
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        pass
    return records_table([json.loads(t) for t in texts])


def records_table(records: Sequence[Any], prefix: str = "") -> Any:
    """An Arrow table from dicts; a field whose values mix types holds their JSON text.

    A value that is not a dict is kept under the field ``data``.
    """
    import pyarrow as pa

    names: dict[str, None] = {}
    rows = []
    for rec in records:
        if not isinstance(rec, dict):
            rec = {"data": rec}
        rows.append(rec)
        for k in rec:
            names.setdefault(k, None)
    columns = {}
    for name in names:
        values = [r.get(name) for r in rows]
        columns[prefix + name] = values_array(values)
    if not columns:
        return pa.table({"__n": pa.nulls(len(rows))}).drop(["__n"])
    return pa.table(columns)


def values_array(values: list[Any]) -> Any:
    """An Arrow array of ``values``, or of their JSON text when they mix types."""
    import pyarrow as pa

    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        return json_text_array(values)


def json_text_array(values: list[Any]) -> Any:
    import pyarrow as pa

    return pa.array(
        [None if v is None else json.dumps(v, sort_keys=True) for v in values], pa.string()
    )


def concat(tables: list[Any]) -> Any:
    """Concatenate tables whose columns may differ; a column whose types clash becomes JSON text."""
    import pyarrow as pa

    tables = [t for t in tables if t is not None]
    if not tables:
        return pa.table({})
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    types: dict[str, list[Any]] = {}
    for t in tables:
        for f in t.schema:
            types.setdefault(f.name, []).append(f)
    clash = set()
    for name, fields in types.items():
        try:
            pa.unify_schemas([pa.schema([f]) for f in fields], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            clash.add(name)
    fixed = []
    for t in tables:
        for name in clash & set(t.column_names):
            i = t.column_names.index(name)
            col = t.column(name)
            if pa.types.is_null(col.type):
                continue
            t = t.set_column(i, name, json_text_array(col.to_pylist()))
        fixed.append(t)
    return pa.concat_tables(fixed, promote_options="permissive")


# ----------------------------------------------------------------------------- write + blobs


def write_parquet(table: Any, directory: str | None = None) -> Path:
    """Write ``table`` to a new temporary Parquet file and return its path."""
    import pyarrow.parquet as pq

    fd, name = tempfile.mkstemp(suffix=".parquet", prefix="tracker-snapshot-", dir=directory)
    os.close(fd)
    pq.write_table(table, name, row_group_size=ROW_GROUP_ROWS)
    return Path(name)


def file_sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def store_blob(path: Path) -> Any:
    """Store a file's bytes once, under their sha256, through Django's default storage.

    Named like run artifacts (:func:`tracker.services.artifacts.blob_name`), so blob garbage
    collection treats both alike. The file appears under its final name complete or not at
    all. Returns the :class:`~tracker.models.Blob` row (the existing one for known bytes).
    """
    from django.core.files import File
    from django.core.files.storage import FileSystemStorage, default_storage

    from tracker.models import Blob
    from tracker.services.artifacts import blob_name

    sha, size = file_sha256(path)
    blob = Blob.objects.filter(sha256=sha).first()
    if blob is not None and default_storage.exists(blob.storage_name):
        return blob
    name = blob_name(sha)
    try:
        if not default_storage.exists(name):
            if isinstance(default_storage, FileSystemStorage):
                final = default_storage.path(name)
                os.makedirs(os.path.dirname(final), exist_ok=True)
                part = f"{final}.{os.getpid()}.part"
                shutil.copyfile(path, part)
                os.replace(part, final)
            else:  # object stores make an object visible only once it is complete
                with open(path, "rb") as fh:
                    saved = default_storage.save(name, File(fh, name=sha))
                if saved != name:
                    default_storage.delete(saved)
                    raise StorageError(
                        f"The storage saved blob {name!r} under another name ({saved!r}); "
                        f"tracker needs a storage that keeps the names it is given."
                    )
    except OSError as exc:
        raise StorageError(
            f"Storing the dataset snapshot in Django's storage failed ({exc}). Check that the "
            f"storage (STORAGES['default']) is reachable and writable, then try again."
        ) from None
    if blob is None:
        blob, _ = Blob.objects.get_or_create(
            sha256=sha, defaults={"size": size, "storage_name": name}
        )
    if blob.storage_name != name and not default_storage.exists(blob.storage_name):
        Blob.objects.filter(pk=sha).update(storage_name=name)
        blob.storage_name = name
    return blob


# ---------------------------------------------------------------------------------- reading


def _cache_dir() -> Path:
    from tracker.configuration import default_home

    home = conf.get("HOME")
    return Path(home) if home else default_home()


def local_path(storage_name: str, sha256: str, label: str) -> str:
    """A local file holding the blob: the storage's own file, or a verified cached copy."""
    from django.core.files.storage import default_storage

    try:
        path = default_storage.path(storage_name)
    except NotImplementedError:
        path = None
    if path is not None:
        if not os.path.exists(path):
            raise StorageError(
                f"The snapshot file of {label} ({storage_name}) is missing from storage. It "
                f"was deleted outside tracker; restore it from a backup of the storage."
            )
        return path
    cached = _cache_dir() / "cache" / "blobs" / f"{sha256}.parquet"
    if cached.exists():
        return str(cached)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".{sha256}.{os.getpid()}.part")
    try:
        with default_storage.open(storage_name, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(
            f"Reading the snapshot of {label} from storage failed ({exc})."
        ) from None
    if file_sha256(tmp)[0] != sha256:
        tmp.unlink(missing_ok=True)
        raise StorageError(
            f"The snapshot of {label} in storage does not match its checksum; it was changed "
            f"outside tracker. Restore it from a backup."
        )
    os.replace(tmp, cached)
    return str(cached)


def _split_filter(split: str | None, splits: Sequence[str]) -> Any:
    if split is None:
        return None
    if not splits:
        raise InvalidValue(
            f"This version has no splits, so split={split!r} selects nothing; leave split out, "
            f"or create a version with splits={{'train': 0.8, ...}}."
        )
    if split not in splits:
        raise InvalidValue(
            f"There is no split {split!r}; this version has {', '.join(map(repr, splits))}."
        )
    import pyarrow.compute as pc

    return pc.field("split") == split


def read_table(
    path: str, split: str | None, splits: Sequence[str], columns: list[str] | None = None
) -> Any:
    import pyarrow.parquet as pq

    expr = _split_filter(split, splits)
    try:
        return pq.read_table(path, columns=columns, filters=expr)
    except KeyError as exc:  # pragma: no cover - depends on pyarrow's message
        raise InvalidValue(f"Unknown column {exc}.") from None


def iter_batches(
    path: str,
    batch_size: int,
    split: str | None,
    splits: Sequence[str],
    columns: list[str] | None = None,
) -> Iterator[Any]:
    """Record batches of ``batch_size`` rows (the last may be shorter), reading one row group
    at a time, so memory stays bounded whatever the size of the version."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InvalidValue(f"batch_size must be a positive integer, not {batch_size!r}.")
    _split_filter(split, splits)
    read = columns
    if columns is not None and split is not None and "split" not in columns:
        read = [*columns, "split"]
    pf = pq.ParquetFile(path)
    pending: list[Any] = []
    held = 0
    for batch in pf.iter_batches(batch_size=min(batch_size, ROW_GROUP_ROWS), columns=read):
        if split is not None:
            batch = batch.filter(pc.equal(batch.column("split"), split))
            if read is not columns:
                batch = batch.select(columns)
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        held += batch.num_rows
        while held >= batch_size:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, batch_size).combine_chunks().to_batches()[0]
            rest = table.slice(batch_size)
            pending = rest.to_batches() if rest.num_rows else []
            held = rest.num_rows
    if held:
        yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]


def progress_bar(total: int, desc: str, enabled: bool | None) -> Any:
    """A tqdm bar (``tqdm.auto``: a widget in notebooks) for writing ``total`` rows.

    The rule of :func:`tracker.services.imports.import_samples`: True shows it, False hides
    it, None shows it when the PROGRESS setting is on and there are at least
    :data:`PROGRESS_MIN_ROWS` rows.
    """
    from tqdm.auto import tqdm

    if enabled is None:
        enabled = bool(conf.get("PROGRESS")) and total >= PROGRESS_MIN_ROWS
    return tqdm(total=total, desc=desc, unit=" rows", disable=not enabled, leave=False)


def export(
    path: str,
    dest: str | os.PathLike[str],
    format: str | None,
    split: str | None,
    splits: Sequence[str],
    *,
    progress: Callable[[int], object] | None = None,
) -> Path:
    """Write the snapshot (or one split of it) to ``dest`` as Parquet, JSONL or CSV, streaming.

    ``progress`` is called with the number of rows each batch wrote (a tqdm bar's ``update``
    fits): once per batch of thousands of rows, never per row. The calls add up to the rows
    exported: the version's ``sample_count``, or the split's count, which callers know before
    they start.
    """
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    out = Path(dest).expanduser()
    if format is None:
        format = EXPORT_FORMATS.get(out.suffix.lower())
        if format is None:
            raise InvalidValue(
                f"Cannot tell the export format from {out.name!r}; end the name with .parquet, "
                f".jsonl or .csv, or pass format='parquet', 'jsonl' or 'csv'."
            )
    if format not in ("parquet", "jsonl", "csv"):
        raise InvalidValue(f"format must be 'parquet', 'jsonl' or 'csv', not {format!r}.")
    _split_filter(split, splits)  # validates the split name before anything is written
    if out.is_dir():
        raise InvalidValue(f"{str(out)!r} is a directory; give a file name to export to.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.part")
    advance = progress or (lambda n: None)
    try:
        if format == "parquet" and split is None:
            shutil.copyfile(path, tmp)  # the snapshot already is that file
            advance(pq.ParquetFile(tmp).metadata.num_rows)
        elif format == "parquet":
            schema = pq.read_schema(path)
            with pq.ParquetWriter(tmp, schema) as writer:
                for batch in iter_batches(path, ROW_GROUP_ROWS, split, splits):
                    writer.write_batch(batch)
                    advance(batch.num_rows)
        elif format == "jsonl":
            from tracker.services.import_sources import encode_arrow, object_template

            # Column by column, as imports encode them (Arrow formats the numbers), then one
            # %-template per row: several times faster than json.dumps of each row's dict.
            with open(tmp, "w", encoding="utf-8") as fh:
                for batch in iter_batches(path, 10_000, split, splits):
                    names = batch.schema.names
                    line = object_template(names) + "\n"
                    columns = [encode_arrow(n, c)[0] for n, c in zip(names, batch.columns)]
                    fh.writelines(line % row for row in zip(*columns))
                    advance(batch.num_rows)
        else:
            writer = None
            try:
                for batch in iter_batches(path, 10_000, split, splits):
                    batch = _flat_for_csv(batch)
                    if writer is None:
                        writer = pacsv.CSVWriter(str(tmp), batch.schema)
                    writer.write_batch(batch)
                    advance(batch.num_rows)
                if writer is None:  # no rows: still write the header
                    tmp.write_text(",".join(pq.read_schema(path).names) + "\n")
            finally:
                if writer is not None:
                    writer.close()
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _flat_for_csv(batch: Any) -> Any:
    """CSV holds scalars only: nested columns (lists, dicts) are written as JSON text."""
    import pyarrow as pa

    columns = []
    for col, f in zip(batch.columns, batch.schema):
        if pa.types.is_nested(f.type):
            col = json_text_array(col.to_pylist())
        elif pa.types.is_null(f.type):
            col = pa.nulls(len(col), pa.string())
        columns.append(col)
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)
