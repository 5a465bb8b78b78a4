"""`tracker gc`: only unreferenced blobs go, never one a run artifact or dataset version uses.

Blobs are stored for real (artifacts through the artifacts service, dataset snapshots through
create_dataset) in the test's storage; the checks read the files back.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import time

import pytest
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command
from django.utils import timezone

import tracker
from tracker.management.base import EXIT_FAILED, EXIT_USAGE
from tracker.services import ops


def gc_json(**options):
    out = io.StringIO()
    call_command("tracker_gc", json=True, stdout=out, **options)
    return json.loads(out.getvalue())


def log_bytes(run, data: bytes, name: str):
    from tracker.services import artifacts

    return artifacts.log_artifact(run, data, name)[0]


def age(sha: str, hours: float = 2) -> None:
    from tracker.models import Blob

    Blob.objects.filter(pk=sha).update(created_at=timezone.now() - dt.timedelta(hours=hours))


def read(storage_name: str) -> bytes:
    with default_storage.open(storage_name, "rb") as fh:
        return fh.read()


@pytest.fixture
def world(db):
    """A kept artifact, a dataset snapshot, an old orphan blob and a new orphan blob."""
    from tracker.models import Blob, Project, Run, Sample

    project = Project.objects.create(name="gc")
    keeper = Run.objects.create(project=project, name="keeper")
    doomed = Run.objects.create(project=project, name="doomed")
    kept = log_bytes(keeper, b"model weights " * 100, "model.bin")
    gone = log_bytes(doomed, b"scratch output " * 50, "scratch.bin")
    fresh = log_bytes(doomed, b"just uploaded", "fresh.bin")
    doomed.delete()  # its artifacts go with it; their blobs are now unreferenced
    tracker.add_samples("gc", [{"id": str(i), "x": i} for i in range(10)])
    version = tracker.create_dataset("gc-ds", Sample.objects.filter(project__name="gc"))
    snapshot = Blob.objects.get(pk=version._info.snapshot_sha256)
    for sha in (kept.sha256, gone.sha256, snapshot.sha256):
        age(sha)
    return {"kept": kept, "gone": gone, "fresh": fresh, "snapshot": snapshot, "version": version, "run": keeper}


def test_dry_run_lists_only_unreferenced_old_blobs_and_changes_nothing(world):
    from tracker.models import Blob

    before = set(Blob.objects.values_list("pk", flat=True))
    report = gc_json()
    assert [b["sha256"] for b in report["blobs"]] == [world["gone"].sha256]
    assert report["deleted"] is False and report["kept_recent"] == 1
    assert set(Blob.objects.values_list("pk", flat=True)) == before
    assert default_storage.exists(world["gone"].storage_name)
    out = io.StringIO()
    call_command("tracker_gc", stdout=out)
    assert "Would remove 1 unreferenced blobs" in out.getvalue()
    assert "Nothing was deleted" in out.getvalue()


def test_delete_removes_garbage_and_keeps_every_referenced_blob(world):
    from tracker.models import Blob
    from tracker.services import artifacts

    report = gc_json(delete=True)
    assert [b["sha256"] for b in report["blobs"]] == [world["gone"].sha256]
    assert not Blob.objects.filter(pk=world["gone"].sha256).exists()
    assert not default_storage.exists(world["gone"].storage_name)
    # grace 0 also takes the fresh orphan, and still nothing referenced
    report = gc_json(delete=True, grace=0)
    assert [b["sha256"] for b in report["blobs"]] == [world["fresh"].sha256]
    assert not default_storage.exists(world["fresh"].storage_name)
    assert gc_json(delete=True, grace=0)["blobs"] == []
    # what runs and dataset versions reference is intact, byte for byte
    info = artifacts.get_artifact(world["run"], "model.bin")
    assert artifacts.read_artifact(info) == b"model weights " * 100
    assert Blob.objects.filter(pk=world["snapshot"].sha256).exists()
    assert default_storage.exists(world["snapshot"].storage_name)
    again = tracker.get_dataset("gc-ds", 1)
    assert sorted(again.to_pandas()["id"]) == sorted(str(i) for i in range(10))


def test_a_reference_made_between_scan_and_delete_keeps_the_blob(world, monkeypatch):
    from tracker.models import Artifact, Blob

    gone = world["gone"]

    def upload_lands(candidates):
        # What a concurrent upload of the same bytes does: point a new artifact at the blob.
        assert gone.sha256 in candidates
        Artifact.objects.create(run=world["run"], name="again.bin", blob_id=gone.sha256, size=gone.size,
                                sha256=gone.sha256)

    monkeypatch.setattr(ops, "_after_scan", upload_lands)
    report = ops.gc(delete=True)
    assert report.blobs == [] and report.kept_referenced_meanwhile == 1
    assert Blob.objects.filter(pk=gone.sha256).exists()
    assert read(gone.storage_name) == b"scratch output " * 50


def test_a_dedup_upload_racing_gc_never_leaves_a_dangling_artifact(world, monkeypatch):
    """An upload finds the old blob (dedup), gc removes it, then the upload commits its row."""
    from tracker.services import artifacts

    real = artifacts._existing_blob
    raced = []

    def existing_then_gc(sha):
        found = real(sha)
        if found is not None and not raced:
            raced.append(sha)
            ops.gc(delete=True)  # runs exactly in the window between lookup and commit
        return found

    monkeypatch.setattr(artifacts, "_existing_blob", existing_then_gc)
    info = log_bytes(world["run"], b"scratch output " * 50, "reused.bin")
    assert raced == [world["gone"].sha256]
    assert artifacts.read_artifact(artifacts.get_artifact(world["run"], "reused.bin")) == b"scratch output " * 50
    assert default_storage.exists(info.storage_name)


def test_stray_files_are_removed_only_when_old(db, settings):
    from tracker import conf

    prefix = conf.get("BLOB_PREFIX")
    from django.core.files.base import ContentFile

    old = default_storage.save(f"{prefix}/tmp/abandoned-upload", ContentFile(b"partial"))
    new = default_storage.save(f"{prefix}/tmp/in-progress-upload", ContentFile(b"partial"))
    long_ago = time.time() - 7200
    os.utime(default_storage.path(old), (long_ago, long_ago))
    report = gc_json()
    assert [f["storage_name"] for f in report["orphan_files"]] == [old]
    assert default_storage.exists(old)
    gc_json(delete=True)
    assert not default_storage.exists(old)
    assert default_storage.exists(new)
    default_storage.delete(new)


def test_gc_bad_grace(db):
    with pytest.raises(CommandError) as info:
        call_command("tracker_gc", grace=-1, stdout=io.StringIO())
    assert info.value.returncode == EXIT_USAGE


HOLD_LOCK = """
    import sys, time, tracker
    tracker.configure(quiet=True, migrate=False)
    from tracker.services import backups
    with backups.maintenance_lock(exclusive=False, wait=True):
        print("locked", flush=True)
        sys.stdin.readline()
"""


def test_gc_refuses_while_a_backup_holds_the_lock(subprocess_env):
    import subprocess
    import sys
    import textwrap

    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(HOLD_LOCK)], env=subprocess_env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CommandError) as info:
            call_command("tracker_gc", delete=True, stdout=io.StringIO())
        assert info.value.returncode == EXIT_FAILED
        assert "backup is running" in str(info.value)
    finally:
        holder.communicate("done\n", timeout=60)
    assert gc_json(delete=True)["deleted"] is True
