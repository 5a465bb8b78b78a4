"""tracker.import_samples: every source kind, updates, bad rows, media, on a real database."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tracker
from tracker.exceptions import AsyncContextError, ImportRejected, InvalidValue

pytestmark = pytest.mark.django_db


def _rows(project: str = "imp") -> dict[str, dict]:
    from tracker.models import Sample

    return {
        s.external_id: {
            "data": s.data,
            "metadata": s.metadata,
            "media": s.media.name,
            "uri": s.media_uri,
        }
        for s in Sample.objects.filter(project__name=project)
    }


def _state() -> list[tuple]:
    """Everything the samples table holds, to prove a rejected import changed nothing."""
    from tracker.models import Project, Sample

    return [
        sorted(Project.objects.values_list("name", flat=True)),
        sorted(
            Sample.objects.values_list(
                "project__name",
                "external_id",
                "data",
                "metadata",
                "media",
                "media_uri",
                "updated_at",
            ),
            key=repr,
        ),
    ]


# ------------------------------------------------------------------------------ DataFrames


def test_dataframe_types_become_json_values():
    df = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "text": ["hello", 'wörld "quoted"', None],
            "n": [1, 2, 3],
            "f": [0.5, 2.0, np.nan],
            "flag": [True, False, True],
            "when": pd.to_datetime(["2024-01-02 00:00:00", "2024-03-04 05:06:07", None]),
            "tags": [["x", "y"], [], None],
            "cat": pd.Categorical(["u", "v", "u"]),
        }
    )
    report = tracker.import_samples("imp", df)
    assert (report.created, report.updated, report.unchanged, report.bad) == (3, 0, 0, 0)
    rows = _rows()
    assert rows["a"]["data"] == {
        "text": "hello",
        "n": 1,
        "f": 0.5,
        "flag": True,
        "when": "2024-01-02T00:00:00",
        "tags": ["x", "y"],
        "cat": "u",
    }
    b = rows["b"]["data"]
    assert b["text"] == 'wörld "quoted"'
    assert b["f"] == 2.0 and isinstance(b["f"], float)  # a whole float stays a float
    assert b["when"] == "2024-03-04T05:06:07"
    # NaN, None and NaT are missing values: stored as null.
    assert rows["c"]["data"]["text"] is None
    assert rows["c"]["data"]["f"] is None
    assert rows["c"]["data"]["when"] is None


def test_reimporting_the_same_ids_updates_instead_of_duplicating():
    from tracker.models import Sample

    df = pd.DataFrame({"id": [f"s{i}" for i in range(100)], "v": range(100)})
    first = tracker.import_samples("imp", df)
    assert first.created == 100
    before = {s.external_id: s.updated_at for s in Sample.objects.all()}
    df.loc[df["id"].isin(["s3", "s7"]), "v"] = -1
    extra = pd.DataFrame({"id": ["new"], "v": [5]})
    second = tracker.import_samples("imp", pd.concat([df, extra]))
    assert (second.created, second.updated, second.unchanged) == (1, 2, 98)
    assert Sample.objects.filter(project__name="imp").count() == 101
    rows = _rows()
    assert rows["s3"]["data"] == {"v": -1} and rows["s4"]["data"] == {"v": 4}
    after = {s.external_id: s.updated_at for s in Sample.objects.all()}
    # Rows that did not change are not touched at all.
    assert after["s4"] == before["s4"]
    assert after["s3"] > before["s3"]


def test_integer_ids_and_an_index_named_as_the_id_field():
    df = pd.DataFrame({"v": ["a", "b"]}, index=pd.Index([10, 20], name="key"))
    report = tracker.import_samples("imp", df, id_field="key")
    assert report.created == 2
    assert set(_rows()) == {"10", "20"}


def test_without_an_id_column_ids_come_from_the_content():
    from tracker.models import Sample

    df = pd.DataFrame({"text": ["x", "y", "x"]})
    report = tracker.import_samples("imp", df)
    assert (report.created, report.merged) == (2, 1)
    again = tracker.import_samples("imp", df)
    assert (again.created, again.unchanged, again.merged) == (0, 2, 1)
    # The same rule as add_samples: the same content gets the same id either way.
    added = tracker.add_samples("imp", [{"text": "x"}])
    assert Sample.objects.count() == 2 and added[0].external_id in _rows()


def test_mixed_object_columns_are_checked_value_by_value():
    df = pd.DataFrame({"id": ["a", "b", "c"], "v": [1, "two", {"three": 3}]})
    tracker.import_samples("imp", df)
    rows = _rows()
    assert [rows[k]["data"]["v"] for k in "abc"] == [1, "two", {"three": 3}]


# --------------------------------------------------------------------------- lists, JSONL


def test_list_of_dicts_with_metadata_and_media_uri():
    report = tracker.import_samples(
        "imp",
        [
            {"id": "a", "text": "one", "metadata": {"source": "web"}, "media_uri": "s3://b/a.png"},
            {"id": 7, "text": "two"},
        ],
    )
    assert report.created == 2
    rows = _rows()
    assert rows["a"] == {
        "data": {"text": "one"},
        "metadata": {"source": "web"},
        "media": "",
        "uri": "s3://b/a.png",
    }
    assert rows["7"]["data"] == {"text": "two"}


def test_jsonl_file_with_bad_lines_reports_line_numbers(tmp_path: Path):
    path = tmp_path / "data.jsonl"
    path.write_text(
        '{"id": "a", "v": 1}\n'
        "\n"
        '{"id": "b", "v": \n'  # line 3: broken JSON
        '["not", "a", "dict"]\n'  # line 4
        '{"id": "c", "v": 3}\n'
    )
    with pytest.raises(ImportRejected) as err:
        tracker.import_samples("imp", path)
    report = err.value.report
    assert [(e.row, e.where) for e in report.errors] == [(3, "line 3"), (4, "line 4")]
    assert "is not valid JSON" in report.errors[0].reason
    assert "not a dict" in report.errors[1].reason
    assert "line 3" in str(err.value) and "on_error='skip'" in str(err.value)
    assert _rows() == {}
    skipped = tracker.import_samples("imp", path, on_error="skip")
    assert (skipped.created, skipped.bad) == (2, 2)
    assert set(_rows()) == {"a", "c"}


# ------------------------------------------------------------------------------------- CSV


def test_csv_columns_are_typed_over_the_whole_file(tmp_path: Path):
    path = tmp_path / "data.csv"
    path.write_text(
        "id,n,f,flag,zip,big,text,metadata\n"
        '1,1,0.5,true,007,12345678901234567890,"a, quoted\nnewline",{"k": 1}\n'
        "2,2,1,FALSE,010,1,plain,\n"
        "3,,,true,,,,\n"
    )
    report = tracker.import_samples("imp", path)
    assert report.created == 3
    rows = _rows()
    assert rows["1"]["data"] == {
        "n": 1,
        "f": 0.5,
        "flag": True,
        "zip": "007",  # leading zeros: kept as text
        "big": "12345678901234567890",  # beyond 64 bits: kept as text
        "text": "a, quoted\nnewline",
    }
    assert rows["1"]["metadata"] == {"k": 1}
    assert rows["2"]["data"]["f"] == 1.0 and rows["2"]["data"]["flag"] is False
    assert rows["3"]["data"] == {
        "n": None,
        "f": None,
        "flag": True,
        "zip": None,
        "big": None,
        "text": None,
    }


def test_csv_with_malformed_rows_is_rejected_whole_and_changes_nothing(tmp_path: Path):
    tracker.import_samples("imp", [{"id": "a", "v": "old"}])
    tracker.import_samples("other", [{"id": "x", "v": 1}])
    before = _state()
    path = tmp_path / "bad.csv"
    path.write_text(
        "id,v\n"
        "a,new\n"
        "b,2,extra\n"  # line 3: too many fields
        '"c,3\n'  # line 4: an unterminated quote swallows the rest
    )
    path2 = tmp_path / "short.csv"
    path2.write_text('id,v\na,new\nb\nc,"multi\nline"\nd\n')
    with pytest.raises(ImportRejected) as err:
        tracker.import_samples("imp", path2)
    assert [(e.where, e.reason) for e in err.value.report.errors] == [
        ("line 3", "has 1 fields; the header has 2"),
        ("line 6", "has 1 fields; the header has 2"),  # after a record spanning lines 4-5
    ]
    assert "2 of 4 rows of short.csv are bad, so nothing was imported" in str(err.value)
    with pytest.raises(ImportRejected) as err:
        tracker.import_samples("imp", path)
    assert err.value.report.errors[0].where == "line 3"
    assert _state() == before


def test_csv_skip_stores_good_rows_and_lists_the_rest(tmp_path: Path):
    path = tmp_path / "bad.csv"
    path.write_text("id,v\na,1\nb,2,3\nc,3\n")
    report = tracker.import_samples("imp", path, on_error="skip")
    assert (report.created, report.bad, report.rows) == (2, 1, 3)
    assert str(report.errors[0]) == "line 3: has 3 fields; the header has 2"
    assert report.to_pandas().to_dict("records") == [
        {"row": 3, "where": "line 3", "id": None, "reason": "has 3 fields; the header has 2"}
    ]
    assert "1 bad rows of 3" in repr(report)
    assert set(_rows()) == {"a", "c"}


def test_missing_id_column_names_the_columns_and_stores_nothing(tmp_path: Path):
    before = _state()
    path = tmp_path / "data.csv"
    path.write_text("key,v\na,1\n")
    with pytest.raises(InvalidValue) as err:
        tracker.import_samples("imp", path, id_field="sample_id")
    assert "The id column 'sample_id' is not in data.csv; its columns are 'key', 'v'" in str(
        err.value
    )
    with pytest.raises(InvalidValue, match="not in the DataFrame"):
        tracker.import_samples("imp", pd.DataFrame({"key": ["a"]}), id_field="sample_id")
    with pytest.raises(ImportRejected, match="has no 'sample_id'"):
        tracker.import_samples("imp", [{"key": "a"}], id_field="sample_id")
    assert _state() == before


def test_empty_ids_are_rejected_when_the_source_has_an_id_column(tmp_path: Path):
    path = tmp_path / "data.csv"
    path.write_text("id,v\na,1\n,2\n")
    with pytest.raises(ImportRejected, match="line 3: has no id"):
        tracker.import_samples("imp", path)


@pytest.mark.parametrize("kind", ["csv", "jsonl", "frame", "list"])
def test_duplicate_ids_in_one_source(tmp_path: Path, kind: str):
    tracker.import_samples("imp", [{"id": "a", "v": "stored"}])
    before = _state()
    if kind == "csv":
        source = tmp_path / "d.csv"
        source.write_text("id,v\na,1\nb,2\na,3\n")
        where = ("line 4", "line 2")
    elif kind == "jsonl":
        source = tmp_path / "d.jsonl"
        source.write_text('{"id": "a", "v": 1}\n{"id": "b", "v": 2}\n{"id": "a", "v": 3}\n')
        where = ("line 3", "line 1")
    else:
        records = [{"id": "a", "v": 1}, {"id": "b", "v": 2}, {"id": "a", "v": 3}]
        source = pd.DataFrame(records) if kind == "frame" else records
        where = ("row 2", "row 0")
    with pytest.raises(ImportRejected) as err:
        tracker.import_samples("imp", source)
    assert f"{where[0]}: repeats the id 'a' of {where[1]}; ids must be unique" in str(err.value)
    assert _state() == before
    report = tracker.import_samples("imp", source, on_error="skip")
    assert (report.updated, report.created, report.bad) == (1, 1, 1)
    assert _rows()["a"]["data"] == {"v": 1}  # the first occurrence wins


# ----------------------------------------------------------------------- unstorable values


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque>"


@pytest.mark.parametrize(
    "value, expected",
    [
        (Opaque(), "column 'v' is a Opaque (<Opaque>), which is not JSON-serialisable"),
        ({1, 2}, "column 'v' is a set"),
        (float("inf"), "column 'v' is inf, which JSON cannot hold"),
        (b"bytes", "holds binary values, which JSON cannot store"),
    ],
)
def test_unserialisable_values_in_a_dataframe(value, expected):
    tracker.import_samples("imp", [{"id": "keep", "v": 1}])
    before = _state()
    df = pd.DataFrame({"id": ["a", "b"], "v": [1, 1]}).astype({"v": object})
    df.at[1, "v"] = value
    if isinstance(value, bytes):
        df["v"] = [b"x", value]
    with pytest.raises(ImportRejected) as err:
        tracker.import_samples("imp", df)
    assert expected in str(err.value)
    assert err.value.report.errors[-1].where == "row 1"
    assert _state() == before


def test_unserialisable_values_in_records_name_the_field():
    before = _state()
    with pytest.raises(ImportRejected) as err:
        tracker.import_samples("imp", [{"id": "a", "nested": {"k": [1, Opaque()]}}, {"id": "b"}])
    assert "row 0: nested.k[1] is a Opaque (<Opaque>), which is not JSON-serialisable" in str(
        err.value
    )
    with pytest.raises(ImportRejected, match="'metadata' must be a dict"):
        tracker.import_samples("imp", [{"id": "a", "metadata": [1]}])
    assert _state() == before


def test_error_list_is_capped_but_every_bad_row_counted(monkeypatch):
    from tracker.services import imports

    monkeypatch.setattr(imports, "MAX_LISTED_ERRORS", 5)
    report = tracker.import_samples(
        "imp", [{"id": str(i), "v": float("inf")} for i in range(20)], on_error="skip"
    )
    assert report.bad == 20 and len(report.errors) == 5
    assert "and 15 more" in repr(report)


# --------------------------------------------------------------------------------- Parquet


def test_parquet_file_with_nested_columns(tmp_path: Path):
    table = pa.table(
        {
            "id": pa.array(["a", "b"]),
            "point": pa.array([{"x": 1, "y": 2.5}, None]),
            "tokens": pa.array([["a", "b"], ["c"]]),
            "day": pa.array([dt.date(2024, 1, 2), dt.date(2024, 2, 3)]),
        }
    )
    path = tmp_path / "data.parquet"
    pq.write_table(table, path, row_group_size=1)
    report = tracker.import_samples("imp", path)
    assert report.created == 2
    rows = _rows()
    assert rows["a"]["data"] == {
        "point": {"x": 1, "y": 2.5},
        "tokens": ["a", "b"],
        "day": "2024-01-02",
    }
    assert rows["b"]["data"]["point"] is None
    tracker.import_samples(
        "imp", table.slice(0, 1).set_column(1, "point", pa.array([{"x": 9, "y": 0.0}]))
    )
    assert _rows()["a"]["data"]["point"] == {"x": 9, "y": 0.0}


def test_parquet_bad_rows_are_numbered_from_zero(tmp_path: Path):
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "a"], "v": [1.0, float("inf"), 2.0]}), path)
    with pytest.raises(ImportRejected) as err:
        tracker.import_samples("imp", path)
    assert [str(e) for e in err.value.report.errors] == [
        "row 1: column 'v' is inf, which JSON cannot hold",
        "row 2: repeats the id 'a' of row 0; ids must be unique",
    ]


# ------------------------------------------------------------------------------------ media


def test_media_stored_through_django_storage_by_content(tmp_path: Path):
    from django.core.files.storage import default_storage

    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(b"\x89PNG one")
    (tmp_path / "img" / "b.png").write_bytes(b"\x89PNG one")  # the same bytes
    csv_path = tmp_path / "data.csv"
    csv_path.write_text(
        "id,image,label\na,img/a.png,cat\nb,img/b.png,dog\nc,https://x.org/c.png,cow\n"
    )
    report = tracker.import_samples("imp", csv_path, media_field="image")
    assert (report.created, report.media_stored) == (3, 2)
    rows = _rows()
    assert rows["a"]["media"] == rows["b"]["media"]  # stored once
    assert rows["a"]["media"].startswith("media/") and rows["a"]["media"].endswith(".png")
    with default_storage.open(rows["a"]["media"], "rb") as fh:
        assert fh.read() == b"\x89PNG one"
    assert rows["c"]["uri"] == "https://x.org/c.png" and rows["c"]["media"] == ""
    assert rows["a"]["data"] == {"label": "cat"}  # the media column is not data


def test_media_by_reference_only(tmp_path: Path):
    report = tracker.import_samples(
        "imp", [{"id": "a", "path": "/data/a.wav"}], media_field="path", store_media=False
    )
    assert report.media_stored == 0
    assert _rows()["a"]["uri"] == "/data/a.wav"


def test_missing_media_file_rejects_the_row_and_leaves_no_stored_file(tmp_path: Path):
    from django.core.files.storage import default_storage

    (tmp_path / "ok.wav").write_bytes(b"RIFF unique-bytes-for-this-test")
    df = pd.DataFrame(
        {"id": ["a", "b"], "audio": [str(tmp_path / "ok.wav"), str(tmp_path / "nope.wav")]}
    )
    with pytest.raises(ImportRejected) as err:
        tracker.import_samples("imp", df, media_field="audio")
    assert "row 1: its media file" in str(err.value) and "does not exist" in str(err.value)
    import hashlib

    sha = hashlib.sha256(b"RIFF unique-bytes-for-this-test").hexdigest()
    assert not any(sha in name for name in _walk(default_storage, "media"))
    assert _rows() == {}


def _walk(storage, prefix: str) -> list[str]:
    try:
        dirs, files = storage.listdir(prefix)
    except FileNotFoundError:
        return []
    return [f"{prefix}/{f}" for f in files] + [
        n for d in dirs for n in _walk(storage, f"{prefix}/{d}")
    ]


def test_media_field_must_exist():
    with pytest.raises(InvalidValue, match="The media column 'image' is not in the DataFrame"):
        tracker.import_samples("imp", pd.DataFrame({"id": ["a"]}), media_field="image")


# ----------------------------------------------------------------------------- arguments


def test_bad_arguments_are_explained(tmp_path: Path):
    with pytest.raises(InvalidValue, match="on_error must be 'raise' or 'skip'"):
        tracker.import_samples("imp", [], on_error="ignore")
    with pytest.raises(InvalidValue, match="cannot read a int"):
        tracker.import_samples("imp", 5)
    with pytest.raises(InvalidValue, match="There is no file at"):
        tracker.import_samples("imp", tmp_path / "missing.csv")
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(InvalidValue, match="Cannot tell the format of 'data.txt'"):
        tracker.import_samples("imp", tmp_path / "data.txt")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InvalidValue, match="empty.csv is empty"):
        tracker.import_samples("imp", tmp_path / "empty.csv")
    (tmp_path / "latin.csv").write_bytes("id,v\xe9\na,1\n".encode("latin-1"))
    with pytest.raises(InvalidValue, match="The header line of latin.csv is not UTF-8 text"):
        tracker.import_samples("imp", tmp_path / "latin.csv")
    (tmp_path / "x.parquet").write_text("not parquet")
    with pytest.raises(InvalidValue, match="is not a readable Parquet file"):
        tracker.import_samples("imp", tmp_path / "x.parquet")
    with pytest.raises(InvalidValue, match="repeated column names"):
        tracker.import_samples("imp", pd.DataFrame([[1, 2]], columns=["a", "a"]))


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_a_line_that_is_not_utf8_is_one_bad_row(tmp_path: Path, suffix: str):
    path = tmp_path / f"data.{suffix}"
    bom = "\ufeff".encode()  # Excel starts UTF-8 files with a byte-order mark
    if suffix == "csv":
        lines = [b"id,v", b"a,1", "b,caf\xe9".encode("latin-1"), b"c,3"]
    else:
        lines = [b'{"id": "a"}', '{"id": "b", "v": "caf\xe9"}'.encode("latin-1"), b'{"id": "c"}']
    path.write_bytes(bom + b"\n".join(lines) + b"\n")
    bad = len(lines) - 1
    with pytest.raises(ImportRejected) as err:
        tracker.import_samples("imp", path)
    [error] = err.value.report.errors
    assert error.where == f"line {bad}"
    assert error.reason.startswith("is not UTF-8 text (invalid continuation byte at byte")
    report = tracker.import_samples("imp", path, on_error="skip")
    assert report.created == 2
    assert set(_rows()) == {"a", "c"}  # the byte-order mark is not part of a name or id


def test_format_argument_reads_a_file_without_extension(tmp_path: Path):
    path = tmp_path / "export"
    path.write_text('{"id": "a", "v": 1}\n')
    assert tracker.import_samples("imp", path, format="jsonl").created == 1


def test_progress_bar_for_long_imports(capsys):
    tracker.import_samples("imp", [{"id": str(i)} for i in range(50)], progress=True)
    assert "import a list of dicts" in capsys.readouterr().err
    tracker.import_samples("imp", [{"id": "x"}])  # short: no bar by default
    assert capsys.readouterr().err == ""


@pytest.mark.django_db(transaction=True)
def test_async_import():
    async def work():
        report = await tracker.aio.import_samples("imp", pd.DataFrame({"id": ["a"], "v": [1]}))
        assert report.created == 1
        with pytest.raises(ImportRejected):
            await tracker.aio.import_samples("imp", [{"id": "b", "v": float("inf")}])
        # The sync API refuses to run inside the loop and names the awaitable twin.
        with pytest.raises(AsyncContextError, match="tracker.aio.import_samples"):
            tracker.import_samples("imp", [{"id": "c"}])

    asyncio.run(work())
    assert set(_rows()) == {"a"}


def test_report_json_of_stored_data_matches_what_django_writes():
    """Rows written by the bulk path read back exactly like add_samples' rows."""
    from tracker.models import Sample

    tracker.import_samples("imp", [{"id": "a", "v": [1, {"é": None}]}])
    tracker.add_samples("imp", [{"id": "b", "v": [1, {"é": None}]}])
    a, b = (Sample.objects.get(external_id=k) for k in "ab")
    assert a.data == b.data == {"v": [1, {"é": None}]}
    assert json.dumps(a.data) == json.dumps(b.data)


def test_ids_repeated_across_chunks_are_found(monkeypatch, tmp_path: Path):
    from tracker.services import import_sources

    monkeypatch.setattr(import_sources, "CHUNK_ROWS", 4)
    records = [{"id": f"r{i}", "v": i} for i in range(20)] + [{"id": "r3", "v": -1}]
    with pytest.raises(ImportRejected, match="row 20: repeats the id 'r3' of row 3"):
        tracker.import_samples("imp", pd.DataFrame(records))
    path = tmp_path / "d.csv"
    path.write_text("id,v\n" + "".join(f"r{i},{i}\n" for i in range(20)) + "bad\n")
    report = tracker.import_samples("imp", path, on_error="skip")
    assert (report.created, report.bad) == (20, 1)
    assert _rows()["r17"]["data"] == {"v": 17}
