"""Versioned datasets: frozen versions, splits, reading, exports, diffs, lineage, failures."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.files import File
from django.core.files.storage import FileSystemStorage
from test_runs_support import _runs_isolated  # noqa: F401

import tracker
from tracker._async.datasets import AsyncDatasetVersion
from tracker._sync.datasets import DatasetVersion
from tracker.exceptions import DatasetNotFound, InvalidValue, StorageError

pytestmark = pytest.mark.django_db

SPLITS = {"train": 0.8, "val": 0.1, "test": 0.1}


def _samples(project: str = "ds"):
    from tracker.models import Sample

    return Sample.objects.filter(project__name=project)


def _populate(n: int = 200, project: str = "ds", start: int = 0) -> None:
    tracker.import_samples(
        project,
        pd.DataFrame(
            {
                "id": [f"s{i:04d}" for i in range(start, start + n)],
                "text": [f"text {i}" for i in range(start, start + n)],
                "n": list(range(start, start + n)),
                "kind": ["a", "b", "c", "d"] * (n // 4) + ["a"] * (n % 4),
            }
        ),
    )


# ---------------------------------------------------------------------------- versions


def test_version_from_a_queryset_freezes_its_rows():
    _populate(20)
    v = tracker.create_dataset("mini", _samples().filter(data__n__lt=10), description="first ten")
    assert isinstance(v, DatasetVersion)
    assert (v.name, v.version, v.project, len(v), v.description) == (
        "mini",
        1,
        "ds",
        10,
        "first ten",
    )
    assert v.splits == {} and v.counts == {} and len(v.content_hash) == 64
    df = v.to_pandas()
    assert list(df.columns) == ["id", "kind", "n", "text"] == v.columns  # fields by name
    assert df["id"].tolist() == [f"s{i:04d}" for i in range(10)]
    assert df["n"].tolist() == list(range(10)) and df["text"][3] == "text 3"
    assert "'mini' v1: 10 samples" in repr(v)


def test_identical_content_returns_the_latest_version():
    from tracker.models import DatasetItem
    from tracker.models import DatasetVersion as VersionRow

    _populate(40)
    v1 = tracker.create_dataset("same", _samples(), splits=SPLITS)
    again = tracker.create_dataset("same", _samples().order_by("-data__n"), splits=SPLITS)
    assert again == v1 and again.version == 1
    assert VersionRow.objects.count() == 1 and DatasetItem.objects.count() == 40
    other = tracker.create_dataset("same", _samples(), splits=SPLITS, seed=1)
    assert other.version == 2  # different splits are different content
    back = tracker.create_dataset("same", _samples(), splits=SPLITS)
    assert back.version == 3  # identical to v1, but not to the latest


def test_version_from_a_list_of_samples():
    _populate(10)
    chosen = list(_samples().filter(data__n__in=[1, 3, 5]))
    v = tracker.create_dataset("picked", chosen + chosen[:1])
    assert v.to_pandas()["id"].tolist() == ["s0001", "s0003", "s0005"]


def test_versions_are_immutable_after_edits_and_deletes():
    from tracker.models import DatasetItem, Sample

    _populate(30)
    tracker.annotate  # noqa: B018 - the annotation API is part of the package under test
    v1 = tracker.create_dataset("frozen", _samples(), splits=SPLITS)
    before = v1.to_pandas()
    before_arrow = v1.to_arrow()
    Sample.objects.filter(external_id="s0003").update(data={"text": "edited", "n": -3, "kind": "z"})
    Sample.objects.filter(external_id__in=["s0004", "s0005"]).delete()
    tracker.add_samples("ds", [{"id": "s9999", "text": "new", "n": 9999, "kind": "a"}])
    again = tracker.get_dataset("frozen", 1)
    pd.testing.assert_frame_equal(again.to_pandas(), before)
    assert again.to_arrow().equals(before_arrow)
    assert again.content_hash == v1.content_hash
    # Membership rows survive the deletion; they lose the link to the deleted samples only.
    items = DatasetItem.objects.filter(version_id=v1.id)
    assert items.count() == 30
    assert items.filter(sample__isnull=True).count() == 2
    assert set(v1.samples().values_list("external_id", flat=True)) == set(before["id"]) - {
        "s0004",
        "s0005",
    }
    v2 = tracker.create_dataset("frozen", _samples(), splits=SPLITS)
    diff = v1.diff(v2)
    assert (diff.added, diff.removed, diff.changed, diff.moved) == (
        ["s9999"],
        ["s0004", "s0005"],
        ["s0003"],
        [],
    )
    assert diff.unchanged == 27 and bool(diff)
    assert "1 added, 2 removed, 1 changed" in repr(diff)
    assert diff.to_pandas().to_dict("records")[0] == {"id": "s9999", "change": "added"}
    assert not v2.diff(v2)
    assert v2.to_pandas().set_index("id").loc["s0003", "text"] == "edited"
    assert before.set_index("id").loc["s0003", "text"] == "text 3"


# ------------------------------------------------------------------------------- splits


def test_splits_keep_every_sample_when_ten_percent_are_added():
    _populate(1000)
    v1 = tracker.create_dataset("stable", _samples(), splits=SPLITS, seed=7)
    old = v1.to_pandas().set_index("id")["split"]
    assert set(old) == set(SPLITS)
    assert abs(v1.counts["train"] - 800) < 60 and sum(v1.counts.values()) == 1000
    _populate(100, start=1000)
    v2 = tracker.create_dataset("stable", _samples(), splits=SPLITS, seed=7)
    new = v2.to_pandas().set_index("id")["split"]
    assert len(new) == 1100
    assert (new.loc[old.index] == old).all()
    assert v1.diff(v2).moved == []
    # The assignment is a function of (seed, id): the dict order does not matter, the seed does.
    reordered = tracker.create_dataset(
        "other", _samples(), splits=dict(reversed(SPLITS.items())), seed=7
    )
    assert (reordered.to_pandas().set_index("id")["split"] == new).all()
    reseeded = tracker.create_dataset("other", _samples(), splits=SPLITS, seed=8)
    assert (reseeded.to_pandas().set_index("id")["split"] != new).sum() > 100


def test_stratified_splits_are_balanced_per_value_and_stable():
    _populate(400)
    v1 = tracker.create_dataset("strat", _samples(), splits=SPLITS, stratify_by="kind")
    df = v1.to_pandas()
    counts = df.groupby(["kind", "split"]).size().unstack()
    for kind in "abcd":
        assert counts.loc[kind, "train"] == 80 and counts.loc[kind, "val"] == 10
    _populate(40, start=400)
    v2 = tracker.create_dataset("strat", _samples(), splits=SPLITS, stratify_by="kind")
    old = df.set_index("id")["split"]
    new = v2.to_pandas().set_index("id")["split"]
    assert (new.loc[old.index] == old).all()
    counts = v2.to_pandas().groupby(["kind", "split"]).size().unstack()
    for kind in "abcd":
        assert counts.loc[kind, "train"] == 88 and counts.loc[kind, "test"] == 11


def test_split_reads_exports_and_batches(tmp_path: Path):
    _populate(250)
    v = tracker.create_dataset("read", _samples(), splits=SPLITS)
    full = v.to_pandas()
    val = v.to_pandas(split="val")
    assert len(val) == v.counts["val"] and set(val["split"]) == {"val"}
    assert v.to_arrow(split="test").num_rows == v.counts["test"]
    assert v.to_pandas(columns=["id", "n"]).columns.tolist() == ["id", "n"]
    batches = list(v.iter_batches(64))
    assert [len(b) for b in batches] == [64, 64, 64, 58]
    pd.testing.assert_frame_equal(pd.concat(batches, ignore_index=True), full)
    train = list(v.iter_batches(100, split="train", columns=["id"]))
    assert sum(len(b) for b in train) == v.counts["train"] and list(train[0].columns) == ["id"]

    pq_path = v.export(tmp_path / "all.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(pq_path), full)
    jl = v.export(tmp_path / "val.jsonl", split="val")
    lines = [json.loads(line) for line in jl.read_text().splitlines()]
    assert lines == val.to_dict("records")
    csv_path = v.export(tmp_path / "out" / "data.txt", format="csv")
    pd.testing.assert_frame_equal(pd.read_csv(csv_path, dtype={"id": str}), full, check_dtype=False)
    part = v.export(tmp_path / "train.parquet", split="train")
    assert pq.read_table(part).num_rows == v.counts["train"]

    with pytest.raises(
        InvalidValue, match="There is no split 'dev'; this version has 'test', 'train', 'val'"
    ):
        v.to_pandas(split="dev")
    with pytest.raises(InvalidValue, match="batch_size must be a positive integer"):
        next(v.iter_batches(0))
    with pytest.raises(InvalidValue, match="Cannot tell the export format"):
        v.export(tmp_path / "x.xlsx")
    no_splits = tracker.create_dataset("nosplit", _samples())
    with pytest.raises(InvalidValue, match="This version has no splits"):
        no_splits.to_pandas(split="train")


def test_heterogeneous_and_nested_data(tmp_path: Path):
    tracker.add_samples(
        "mixed",
        [
            {
                "id": "a",
                "x": 1,
                "when": "2024-01-02",
                "tags": ["p"],
                "split": "theirs",
                "meta": {"k": 1},
            },
            {"id": "b", "x": "one", "when": "later", "metadata": {"source": "web"}},
            {"id": "c", "media_uri": "s3://bucket/c.png"},
        ],
    )
    v = tracker.create_dataset("mixed", _samples("mixed"), splits={"all": 1.0})
    df = v.to_pandas().set_index("id")
    # A field holding different types in different samples is kept as JSON text.
    assert df.loc["a", "x"] == "1" and df.loc["b", "x"] == '"one"'
    assert df.loc["a", "when"] == "2024-01-02"  # a date-like string stays a string
    assert list(df.loc["a", "tags"]) == ["p"] and df.loc["a", "meta"] == {"k": 1}
    # A data field named like a reserved column is renamed, never overwritten.
    assert df.loc["a", "data.split"] == "theirs" and df.loc["a", "split"] == "all"
    assert v.schema["renamed"] == {"split": "data.split"}
    assert df.loc["b", "metadata"] == {"source": "web"}
    assert df.loc["c", "media_uri"] == "s3://bucket/c.png"
    lines = v.export(tmp_path / "mixed.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == v.to_arrow().to_pylist()
    out = v.export(tmp_path / "mixed.csv")
    text = out.read_text()
    assert '"[""p""]"' in text  # nested values are JSON text in CSV


# ----------------------------------------------------------------------------- labels


def test_labels_are_frozen_with_the_version():
    _populate(8, project="lab")
    tracker.define_task("lab", "sentiment", "classification", ["pos", "neg"])
    samples = list(_samples("lab").order_by("data__n"))
    for s in samples[:3]:
        tracker.annotate(s, "sentiment", "pos", annotator="ann")
    v1 = tracker.create_dataset("lab", _samples("lab"), splits={"train": 0.5, "test": 0.5})
    labels = v1.to_pandas().set_index("id")["label.sentiment"]
    assert labels[:3].tolist() == ["pos", "pos", "pos"] and labels[3:].isna().all()
    assert v1.schema["labels"] == ["sentiment"] and v1.schema["labels_frozen"] is True
    tracker.annotate(samples[0], "sentiment", "neg", annotator="ann")
    assert tracker.get_dataset("lab", 1).to_pandas()["label.sentiment"][0] == "pos"
    v2 = tracker.create_dataset("lab", _samples("lab"), splits={"train": 0.5, "test": 0.5})
    assert v2.to_pandas()["label.sentiment"][0] == "neg"
    assert v1.diff(v2).changed == [samples[0].external_id]
    # A filter across a many-valued relation repeats samples (two annotations here); a version
    # still holds each sample once.
    tracker.annotate(samples[1], "sentiment", "pos", annotator="second")
    joined = _samples("lab").filter(annotations__value="pos")
    assert joined.count() == 3
    picked = tracker.create_dataset("lab-joined", joined)
    assert picked.to_pandas()["id"].tolist() == [s.external_id for s in samples[1:3]]
    strat = tracker.create_dataset(
        "lab-strat", _samples("lab"), splits={"train": 0.5, "test": 0.5}, stratify_by="sentiment"
    )
    assert strat.stratify_by == "sentiment"


# -------------------------------------------------------------------------- bad inputs


def test_bad_arguments_are_explained_and_create_nothing():
    from tracker.models import Dataset
    from tracker.models import DatasetVersion as VersionRow

    _populate(10)
    _populate(2, project="elsewhere")
    cases = [
        ({"splits": {"train": 0.8, "val": 0.1}}, "add up to 0.9, not 1"),
        ({"splits": {"train": 1.5, "val": -0.5}}, "must be a number in (0, 1]"),
        ({"splits": ["train"]}, "splits must be a dict of names to fractions"),
        ({"splits": {"": 1.0}}, "A split name must be a non-empty string"),
        ({"stratify_by": "kind"}, "stratify_by needs splits"),
        ({"splits": SPLITS, "stratify_by": "nope"}, "stratify_by='nope' is neither a data field"),
        ({"seed": "0"}, "seed must be an integer"),
        ({"project": "elsewhere"}, "The samples belong to project 'ds', not 'elsewhere'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InvalidValue) as err:
            tracker.create_dataset("bad", _samples(), **kwargs)
        assert message in str(err.value), (kwargs, str(err.value))
    with pytest.raises(InvalidValue, match="the queryset matched nothing"):
        tracker.create_dataset("bad", _samples().filter(data__n__gt=100))
    from tracker.models import Sample

    with pytest.raises(InvalidValue, match="from 2 projects"):
        tracker.create_dataset("bad", Sample.objects.all())
    with pytest.raises(InvalidValue, match="Item 1 of samples is a str"):
        tracker.create_dataset("bad", [_samples().first(), "s0001"])
    with pytest.raises(InvalidValue, match="takes a queryset of Sample"):
        tracker.create_dataset("bad", "ds")
    from tracker.models import Project

    with pytest.raises(InvalidValue, match="a queryset of Sample, not of Project"):
        tracker.create_dataset("bad", Project.objects.all())
    with pytest.raises(InvalidValue, match="A dataset name must be a non-empty string"):
        tracker.create_dataset(" ", _samples())
    assert not VersionRow.objects.exists()
    assert not Dataset.objects.filter(name="bad").exists()


def test_lookups_name_what_exists():
    _populate(10)
    tracker.create_dataset("look", _samples())
    tracker.create_dataset("look", _samples().filter(data__n__lt=5))
    assert tracker.get_dataset("look").version == 2
    assert tracker.get_dataset("look", 1, project="ds").sample_count == 10
    with pytest.raises(DatasetNotFound, match="has no version 7; it has v1, v2"):
        tracker.get_dataset("look", 7)
    with pytest.raises(DatasetNotFound, match="no dataset named 'lok'.*Known datasets: look"):
        tracker.get_dataset("lok")
    with pytest.raises(InvalidValue, match="version must be an integer"):
        tracker.get_dataset("look", "2")
    _populate(3, project="p2")
    tracker.create_dataset("look", _samples("p2"))
    with pytest.raises(InvalidValue, match="exist in several projects \\(ds, p2\\); pass project="):
        tracker.get_dataset("look")
    listing = tracker.datasets()
    assert listing[
        ["project", "name", "latest_version", "versions", "samples"]
    ].values.tolist() == [
        ["ds", "look", 2, 2, 5],
        ["p2", "look", 1, 1, 3],
    ]
    assert len(tracker.datasets("p2")) == 1
    versions = tracker.dataset_versions("look", project="ds")
    assert versions["version"].tolist() == [1, 2] and versions["samples"].tolist() == [10, 5]


# ------------------------------------------------------------------- crashes and storage


def test_a_crash_mid_creation_leaves_no_visible_version(monkeypatch):
    from tracker.models import DatasetItem
    from tracker.models import DatasetVersion as VersionRow
    from tracker.services import datasets as core

    _populate(120)
    real = core._write_items

    def crash(version, frozen):
        frozen.ids = frozen.ids[:60]
        real(version, frozen)  # half the membership rows are written...
        raise RuntimeError("power cut")  # ...then the process "dies"

    monkeypatch.setattr(core, "_write_items", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        tracker.create_dataset("crash", _samples())
    assert not VersionRow.objects.exists() and not DatasetItem.objects.exists()
    with pytest.raises(DatasetNotFound):
        tracker.get_dataset("crash")
    monkeypatch.undo()
    assert tracker.create_dataset("crash", _samples()).version == 1


def test_stale_building_versions_are_invisible_and_cleaned_up():
    import datetime as dt

    from django.utils import timezone

    from tracker.models import Dataset, DatasetItem
    from tracker.models import DatasetVersion as VersionRow

    _populate(10)
    v1 = tracker.create_dataset("stale", _samples())
    # What a process killed mid-creation leaves: a building version with some items.
    dead = VersionRow.objects.create(
        dataset=Dataset.objects.get(name="stale"),
        version=2,
        state=VersionRow.State.BUILDING,
        created_at=timezone.now() - dt.timedelta(hours=2),
    )
    DatasetItem.objects.create(version=dead, external_id="x", row_hash="0" * 32)
    assert tracker.get_dataset("stale") == v1
    assert tracker.dataset_versions("stale")["version"].tolist() == [1]
    assert tracker.datasets()["latest_version"].tolist() == [1]
    v2 = tracker.create_dataset("stale", _samples().filter(data__n__lt=3))
    assert v2.version == 2
    assert not VersionRow.objects.filter(pk=dead.pk).exists()
    assert not DatasetItem.objects.filter(version_id=dead.pk).exists()


def test_a_missing_snapshot_file_is_a_clear_storage_error():
    from django.core.files.storage import default_storage

    _populate(5)
    v = tracker.create_dataset("gone", _samples())
    path = Path(default_storage.path(v.info.snapshot_name))
    path.unlink()
    with pytest.raises(StorageError, match="snapshot file of dataset 'gone' v1 .* is missing"):
        v.to_pandas()


class ObjectStoreLike(FileSystemStorage):
    """A storage without local file paths, like S3: tracker must read through ``open``."""

    def path(self, name: str) -> str:
        raise NotImplementedError("an object store has no local paths")

    def _open(self, name: str, mode: str = "rb") -> File:
        return File(open(FileSystemStorage.path(self, name), mode))


def test_remote_storage_reads_through_a_verified_local_copy(monkeypatch, tmp_path: Path):
    from django.conf import settings
    from django.test import override_settings

    _populate(5)
    v = tracker.create_dataset("remote", _samples())
    expected = v.to_pandas()
    stored = Path(v.snapshot_path())
    storages = dict(settings.STORAGES)
    location = storages["default"]["OPTIONS"]["location"]
    storages["default"] = {
        "BACKEND": f"{__name__}.ObjectStoreLike",
        "OPTIONS": {"location": location},
    }
    monkeypatch.setattr("tracker.services.dataset_files._cache_dir", lambda: tmp_path)
    with override_settings(STORAGES=storages):
        pd.testing.assert_frame_equal(v.to_pandas(), expected)
        cached = tmp_path / "cache" / "blobs" / f"{v.info.snapshot_sha256}.parquet"
        assert Path(v.snapshot_path()) == cached and cached.exists()
        # An object changed in storage behind tracker's back is refused, not read.
        cached.unlink()
        pq.write_table(pa.table({"id": ["tampered"]}), stored)
        with pytest.raises(StorageError, match="does not match its checksum"):
            v.to_pandas()
        assert not cached.exists()


# ------------------------------------------------------------------------------ lineage


def test_lineage_between_runs_and_versions(_runs_isolated):  # noqa: F811
    _populate(20)
    v1 = tracker.create_dataset("lineage", _samples(), splits=SPLITS)
    v2 = tracker.create_dataset("lineage", _samples().filter(data__n__lt=10), splits=SPLITS)
    with tracker.start_run("ds", "train-1") as run:
        run.use_dataset(v1, context="train")
        run.use_dataset(v2, context="eval")
        run.use_dataset(v1, context="train")  # idempotent
        inputs = run.inputs()
    assert [(v.version, ctx) for v, ctx in inputs] == [(1, "train"), (2, "eval")]
    assert isinstance(inputs[0][0], DatasetVersion)
    uses = v1.runs()
    assert [(u.run.name, u.context) for u in uses] == [("train-1", "train")]
    assert [u.run.uid for u in v2.runs()] == [run.id]
    frame = tracker.runs_frame("ds")
    row = [str(cell) for cell in frame.iloc[0].tolist()]
    assert any("lineage:v1 (train)" in cell and "lineage:v2 (eval)" in cell for cell in row)
    assert tracker.dataset_versions("lineage")["runs"].tolist() == [1, 1]
    with tracker.start_run("ds", "bad") as other:
        with pytest.raises(InvalidValue, match="context must be a short non-empty string"):
            other.use_dataset(v1, context="")
        with pytest.raises(InvalidValue, match="Expected a dataset version"):
            other.use_dataset("lineage", context="train")


# ---------------------------------------------------------------------------- async


@pytest.mark.django_db(transaction=True)
def test_async_twins(tmp_path: Path):
    _populate(50)

    async def work():
        v = await tracker.aio.create_dataset("aio", _samples(), splits=SPLITS)
        assert isinstance(v, AsyncDatasetVersion)
        same = await tracker.aio.get_dataset("aio")
        assert same == v and same.counts == v.counts
        df = await v.to_pandas()
        assert len(df) == 50
        assert (await v.to_arrow(split="train")).num_rows == v.counts["train"]
        sizes = [len(b) async for b in v.iter_batches(20)]
        assert sizes == [20, 20, 10]
        out = await v.export(tmp_path / "a.jsonl")
        assert len(out.read_text().splitlines()) == 50
        assert Path(await v.snapshot_path()).exists()
        v2 = await tracker.aio.create_dataset(
            "aio", _samples().filter(data__n__lt=25), splits=SPLITS
        )
        diff = await v.diff(v2)
        assert len(diff.removed) == 25
        assert await v.runs() == []
        assert await v.samples().acount() == 50
        listing = await tracker.aio.datasets()
        assert listing["latest_version"].tolist() == [2]
        versions = await tracker.aio.dataset_versions("aio")
        assert versions["version"].tolist() == [1, 2]
        return df

    df = asyncio.run(work())
    pd.testing.assert_frame_equal(df, tracker.get_dataset("aio", 1).to_pandas())


def test_diff_merges_ids_in_code_point_order():
    """Ids whose order differs between byte order and a locale collation ("B" < "a" < "é")."""
    ids = ["B", "a", "a-1", "Z9", "é", "e", "10", "9", "_x", "ß"]
    tracker.add_samples("order", [{"id": i, "v": 1} for i in ids])
    v1 = tracker.create_dataset("order", _samples("order"))
    from tracker.models import Sample

    Sample.objects.filter(external_id__in=["é", "B"]).delete()
    Sample.objects.filter(external_id="a").update(data={"v": 2})
    tracker.add_samples("order", [{"id": "A", "v": 1}, {"id": "ü", "v": 1}])
    v2 = tracker.create_dataset("order", _samples("order"))
    diff = v1.diff(v2)
    assert (diff.added, diff.removed, diff.changed) == (["A", "ü"], ["B", "é"], ["a"])
    assert diff.unchanged == 7
    back = v2.diff(v1)
    assert (back.added, back.removed, back.changed) == (["B", "é"], ["A", "ü"], ["a"])


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 7 rows, so a few dozen samples cross many chunk boundaries."""
    from tracker.services import dataset_build, datasets, import_sources

    monkeypatch.setattr(dataset_build, "CHUNK", 7)
    monkeypatch.setattr(datasets, "CHUNK", 7)
    monkeypatch.setattr(import_sources, "CHUNK_ROWS", 7)


def test_many_chunks_give_the_same_version(small_chunks):
    from tracker.models import DatasetItem

    _populate(100)
    v = tracker.create_dataset("chunky", _samples(), splits=SPLITS, stratify_by="kind")
    df = v.to_pandas()
    assert df["id"].tolist() == [f"s{i:04d}" for i in range(100)]
    assert df["n"].tolist() == list(range(100))
    items = DatasetItem.objects.filter(version_id=v.id)
    assert items.count() == 100
    by_id = dict(items.values_list("external_id", "sample__data__n"))
    assert by_id == {f"s{i:04d}": i for i in range(100)}  # every item points at its sample
    assert dict(items.values_list("external_id", "split")) == dict(zip(df["id"], df["split"]))
    listed = list(_samples().order_by("-data__n"))
    again = tracker.create_dataset("chunky-list", listed[::-1] + listed[:5])
    assert again.to_pandas()["id"].tolist() == df["id"].tolist()
    _populate(10, start=100)
    v2 = tracker.create_dataset("chunky", _samples(), splits=SPLITS, stratify_by="kind")
    assert len(v.diff(v2).added) == 10 and v.diff(v2).moved == []
