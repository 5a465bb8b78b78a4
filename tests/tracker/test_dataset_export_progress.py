"""Progress of dataset exports: the core's per-batch hook, and the bar ``version.export`` shows
(``tracker.import_samples``' rule: True shows it, False hides it, None shows it for large
exports while the PROGRESS setting is on; ``tqdm.auto``, so a widget in a notebook)."""

from __future__ import annotations

import asyncio
import json
import math

import pandas as pd
import pytest

import tracker
from notebooks import run_cells

ROWS = 25_000  # three JSONL/CSV batches of 10,000 rows


@pytest.fixture
def version(db):
    from tracker.models import Sample

    tracker.import_samples("prog", [{"id": f"s{i:05d}", "v": i, "tags": [i % 3]} for i in range(ROWS)],
                           progress=False)
    return tracker.create_dataset("numbers", Sample.objects.filter(project__name="prog"),
                                  splits={"train": 0.8, "test": 0.2}, progress=False)


def _file_rows(path, fmt: str) -> int:
    if fmt == "parquet":
        return len(pd.read_parquet(path))
    with open(path, encoding="utf-8") as fh:
        lines = sum(1 for _ in fh)
    return lines - 1 if fmt == "csv" else lines


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
@pytest.mark.parametrize("split", [None, "train"])
def test_the_hook_counts_rows_per_batch_up_to_the_total(version, tmp_path, fmt, split):
    from tracker.services import dataset_files as files

    calls: list[int] = []
    total = version.counts[split] if split else version.sample_count
    out = files.export(version.snapshot_path(), tmp_path / f"out.{fmt}", None, split,
                       sorted(version.splits), progress=calls.append)
    assert calls and all(n > 0 for n in calls)
    done = [sum(calls[: i + 1]) for i in range(len(calls))]
    assert done == sorted(done) and done[-1] == total == _file_rows(out, fmt)
    # Per batch, never per row: one call per 10,000 rows (JSONL, CSV) or per row group
    # (Parquet of a split); a whole Parquet version is one copy, one call.
    batch = files.ROW_GROUP_ROWS if fmt == "parquet" else 10_000
    assert len(calls) == (1 if fmt == "parquet" and split is None else math.ceil(total / batch))


def test_the_hook_is_not_called_for_bad_input(version, tmp_path):
    from tracker.exceptions import InvalidValue
    from tracker.services import dataset_files as files

    calls: list[int] = []
    with pytest.raises(InvalidValue):
        files.export(version.snapshot_path(), tmp_path / "x.csv", None, "val", sorted(version.splits),
                     progress=calls.append)
    assert calls == [] and not (tmp_path / "x.csv").exists()


def test_export_shows_a_bar_as_import_samples_does(version, tmp_path, capsys, monkeypatch, settings):
    from tracker.services import dataset_files as files

    label = "export dataset 'numbers' v1"
    version.export(tmp_path / "a.jsonl", progress=True)
    err = capsys.readouterr().err
    assert label in err and f"/{ROWS}" in err
    assert _file_rows(tmp_path / "a.jsonl", "jsonl") == ROWS

    version.export(tmp_path / "b.jsonl", split="test")  # None: small, no bar
    assert capsys.readouterr().err == ""

    monkeypatch.setattr(files, "PROGRESS_MIN_ROWS", 1_000)  # None: now large enough
    version.export(tmp_path / "c.csv", split="test")
    assert f"{label}: " in capsys.readouterr().err
    version.export(tmp_path / "d.csv", progress=False)  # False: never
    assert capsys.readouterr().err == ""
    settings.TRACKER = {**settings.TRACKER, "PROGRESS": False}  # the setting turns None off
    version.export(tmp_path / "e.csv")
    assert capsys.readouterr().err == ""
    version.export(tmp_path / "f.csv", progress=True)  # and True still shows it
    assert label in capsys.readouterr().err


@pytest.mark.django_db(transaction=True)
def test_async_export_shows_the_same_bar(tmp_path, capsys):
    from tracker.models import Sample

    tracker.import_samples("aprog", [{"id": str(i)} for i in range(50)], progress=False)
    tracker.create_dataset("few", Sample.objects.filter(project__name="aprog"), progress=False)

    async def work():
        version = await tracker.aio.get_dataset("few")
        await version.export(tmp_path / "a.parquet", progress=True)
        await version.export(tmp_path / "b.parquet")

    asyncio.run(work())
    err = capsys.readouterr().err
    assert err.count("export dataset 'few' v1") >= 1 and "/50" in err
    assert len(pd.read_parquet(tmp_path / "b.parquet")) == 50


@pytest.mark.notebook
def test_in_a_notebook_the_bar_is_a_widget(subprocess_env, tmp_path):
    from tracker.models import Sample

    tracker.import_samples("nbprog", [{"id": str(i)} for i in range(20)], progress=False)
    tracker.create_dataset("nb", Sample.objects.filter(project__name="nbprog"), progress=False)
    cells = run_cells(
        [
            "import tracker\ntracker.configure(quiet=True)\nv = tracker.get_dataset('nb')",
            f"print(v.export({str(tmp_path / 'nb.jsonl')!r}, progress=True).name)",
            f"print(v.export({str(tmp_path / 'quiet.jsonl')!r}).name)",
        ],
        subprocess_env,
    )
    for cell in cells:
        assert cell.error is None, cell.error
    shown, quiet = cells[1], cells[2]
    assert shown.stdout.strip() == "nb.jsonl" and quiet.stdout.strip() == "quiet.jsonl"
    widgets = [o for o in shown.outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widgets, shown.outputs  # tqdm.notebook's widget, not text on stderr
    assert "export dataset" not in shown.stderr
    assert not [o for o in quiet.outputs if "data" in o]
    rows = [json.loads(line) for line in (tmp_path / "nb.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(str(i) for i in range(20))
