"""Artifacts: every kind of object, content addressing, names, conflicts, crash safety, reads."""

from __future__ import annotations

import hashlib
import io
import os

import pandas as pd
import pytest
from django.core.files.storage import default_storage
from test_runs_support import _runs_isolated  # noqa: F401

import tracker
from tracker.exceptions import ArtifactNotFound, Conflict, InvalidValue, StorageError
from tracker.models import Artifact, Blob
from tracker.services import artifacts as core

pytestmark = pytest.mark.django_db


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def run():
    r = tracker.start_run("artifacts")
    yield r
    r.finish()


def stored_files(prefix: str = "blobs") -> list[str]:
    root = default_storage.path(prefix)
    out = []
    for base, _, files in os.walk(root):
        out += [os.path.relpath(os.path.join(base, f), root) for f in files]
    return out


def test_a_file_path_is_stored_content_addressed_once(run, tmp_path):
    data = os.urandom(50_000)
    (tmp_path / "model.bin").write_bytes(data)
    (tmp_path / "copy.bin").write_bytes(data)
    art = run.log_artifact(tmp_path / "model.bin")
    twin = run.log_artifact(str(tmp_path / "copy.bin"), name="weights/copy.bin")
    assert (art.name, art.kind, art.size, art.sha256) == ("model.bin", "file", 50_000, sha(data))
    assert twin.name == "weights/copy.bin" and twin.sha256 == art.sha256
    assert Blob.objects.filter(sha256=sha(data)).count() == 1
    blob = Blob.objects.get(sha256=sha(data))
    assert blob.storage_name.endswith(sha(data)) and blob.size == 50_000
    assert art.read_bytes() == data
    with art.open() as fh:
        assert fh.read(10) == data[:10]
    assert [a.name for a in run.artifacts()] == ["model.bin", "weights/copy.bin"]


def test_bytes_file_objects_dataframes_and_figures(run):
    from matplotlib.figure import Figure

    raw = run.log_artifact(b"\x00\x01binary", name="raw.bin")
    assert (raw.kind, raw.read_bytes()) == ("bytes", b"\x00\x01binary")
    text = run.log_artifact(io.StringIO("héllo\n" * 3), name="notes.txt")
    assert text.read_bytes() == ("héllo\n" * 3).encode()
    named = io.BytesIO(b"abc")
    named.name = "/somewhere/data.csv"
    assert run.log_artifact(named).name == "data.csv"
    frame = pd.DataFrame(
        {"id": [1, 2, 3], "score": [0.5, float("nan"), 2.0], "label": ["a", "b", None]}
    )
    df_art = run.log_artifact(frame, name="predictions")
    assert df_art.name == "predictions.parquet" and df_art.kind == "dataframe"
    assert df_art.metadata["rows"] == 3 and df_art.metadata["columns"] == ["id", "score", "label"]
    pd.testing.assert_frame_equal(df_art.load(), frame)
    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([1, 2, 3])
    png = run.log_artifact(fig, name="plots/curve", metadata={"epoch": 3})
    assert png.name == "plots/curve.png" and png.kind == "figure"
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert png.metadata["epoch"] == 3 and png.metadata["format"] == "png"
    assert run.artifact("raw.bin").sha256 == sha(b"\x00\x01binary")


def test_a_directory_becomes_one_artifact_per_file(run, tmp_path):
    root = tmp_path / "checkpoint"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (root / "sub" / "b.txt").write_text("b")
    arts = run.log_artifact(root)
    assert isinstance(arts, list)
    assert sorted(a.name for a in arts) == ["checkpoint/a.txt", "checkpoint/sub/b.txt"]
    assert {a.kind for a in arts} == {"directory-file"}
    renamed = run.log_artifact(root, name="ckpt")
    assert sorted(a.name for a in renamed) == ["ckpt/a.txt", "ckpt/sub/b.txt"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidValue, match="holds no files"):
        run.log_artifact(tmp_path / "empty")


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("/etc/passwd", "absolute path"),
        ("C:\\models\\m.pt", "backslash"),
        ("c:/models/m.pt", "absolute path"),
        ("../../escape.txt", "'..'"),
        ("a/../b", "'..'"),
        ("a//b", "empty"),
        ("./a", "'.'"),
        ("", "non-empty"),
        ("x" * 501, "at most 500"),
        ("bad\nname", "control"),
    ],
)
def test_bad_names_are_refused_and_nothing_is_stored(run, name, fragment):
    blobs = Blob.objects.count()
    before = stored_files()
    with pytest.raises(InvalidValue, match=fragment):
        run.log_artifact(b"data", name=name)
    assert Blob.objects.count() == blobs and not Artifact.objects.filter(run__uid=run.id).exists()
    assert stored_files() == before


def test_unsupported_objects_and_missing_paths_are_refused(run, tmp_path):
    with pytest.raises(InvalidValue, match="Cannot log a dict"):
        run.log_artifact({"a": 1}, name="a.json")
    with pytest.raises(InvalidValue, match="not an existing file"):
        run.log_artifact(str(tmp_path / "missing.txt"))
    with pytest.raises(InvalidValue, match="needs a name"):
        run.log_artifact(b"bytes")
    with pytest.raises(InvalidValue, match="needs a name"):
        run.log_artifact(pd.DataFrame({"a": [1]}))


def test_same_name_same_bytes_is_a_no_op_other_bytes_conflict_unless_overwrite(run):
    first = run.log_artifact(b"v1", name="model.pt")
    again = run.log_artifact(b"v1", name="model.pt")
    assert again.sha256 == first.sha256
    with pytest.raises(Conflict, match="overwrite=True"):
        run.log_artifact(b"v2", name="model.pt")
    assert run.artifact("model.pt").read_bytes() == b"v1"
    replaced = run.log_artifact(b"v2", name="model.pt", overwrite=True)
    assert replaced.read_bytes() == b"v2"
    assert Artifact.objects.filter(run__uid=run.id, name="model.pt").count() == 1
    with pytest.raises(ArtifactNotFound, match="model.pt"):
        run.artifact("other.pt")


class Exploding(io.RawIOBase):
    """A file object that fails half way, like a network mount going away."""

    def __init__(self, size: int, fail_at: int) -> None:
        self._left = size
        self._fail_at = fail_at
        self._read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self._read >= self._fail_at:
            raise OSError("Input/output error")
        n = min(len(b), self._left, 64 * 1024)
        b[:n] = b"x" * n
        self._left -= n
        self._read += n
        return n


def test_a_failure_mid_upload_leaves_nothing_visible(run):
    blobs = Blob.objects.count()
    before = stored_files()
    with pytest.raises(StorageError, match="Could not store artifact 'big.bin'"):
        run.log_artifact(Exploding(10_000_000, fail_at=3_000_000), name="big.bin")
    assert Blob.objects.count() == blobs
    assert not Artifact.objects.filter(run__uid=run.id).exists()
    assert stored_files() == before  # no partial blob, and the temporary file is gone


def test_download_writes_the_file_whole_and_checks_the_hash(run, tmp_path):
    data = os.urandom(200_000)
    art = run.log_artifact(data, name="nested/w.bin")
    target = art.download(tmp_path)
    assert target == tmp_path / "w.bin" and target.read_bytes() == data
    explicit = art.download(tmp_path / "out" / "renamed.bin")
    assert explicit.read_bytes() == data
    # Corrupt the stored bytes: the download refuses and leaves no file behind.
    with open(default_storage.path(core.blob_name(art.sha256)), "r+b") as fh:
        fh.write(b"\xff\xff")
    with pytest.raises(StorageError, match="corrupted"):
        art.download(tmp_path / "bad.bin")
    assert not (tmp_path / "bad.bin").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bad.bin")]


def test_large_uploads_show_a_progress_bar(run, monkeypatch, capsys):
    monkeypatch.setattr(core, "PROGRESS_MIN_BYTES", 1 << 20)
    run.log_artifact(os.urandom(3 << 20), name="big.bin")
    err = capsys.readouterr().err
    assert "upload big.bin" in err and "3.00M" in err
    run.log_artifact(b"small", name="small.bin")
    assert "small.bin" not in capsys.readouterr().err


def test_artifacts_of_a_run_read_back_in_another_handle(run):
    run.log_artifact(b"payload", name="p.bin")
    again = tracker.get_run(run.id)
    assert [(a.name, a.size) for a in again.artifacts()] == [("p.bin", 7)]
    assert again.artifact("p.bin").load() == b"payload"
