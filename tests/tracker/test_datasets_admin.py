"""Django admin for datasets: lists and detail pages render; versions cannot be changed."""

from __future__ import annotations

import pytest

import tracker

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client, django_user_model):
    user = django_user_model.objects.create_superuser("lead", "lead@example.org", "pw")
    client.force_login(user)
    return user


@pytest.fixture
def version():
    from tracker.models import Sample

    tracker.add_samples("adm", [{"id": str(i), "text": f"t{i}"} for i in range(10)])
    samples = Sample.objects.filter(project__name="adm")
    tracker.create_dataset("admin-ds", samples, splits={"train": 0.5, "test": 0.5})
    return tracker.create_dataset("admin-ds", samples.filter(external_id__in=["1", "2"]))


def test_pages_render_with_versions_and_lineage(client, staff, version):
    from tracker.models import Dataset, Run, RunInput

    run = Run.objects.create(project=Dataset.objects.get().project, name="r1")
    RunInput.objects.create(run=run, version_id=version.id, context="eval")
    listing = client.get("/admin/tracker/dataset/")
    assert listing.status_code == 200
    assert b"admin-ds" in listing.content and b"v2" in listing.content
    dataset = client.get(f"/admin/tracker/dataset/{Dataset.objects.get().pk}/change/")
    assert dataset.status_code == 200 and version.content_hash.encode() in dataset.content
    versions = client.get("/admin/tracker/datasetversion/")
    assert versions.status_code == 200 and version.content_hash[:12].encode() in versions.content
    detail = client.get(f"/admin/tracker/datasetversion/{version.id}/change/")
    assert detail.status_code == 200
    assert b"r1" in detail.content and b"eval" in detail.content  # the runs that used it
    assert b'name="_save"' not in detail.content  # shown read-only
    assert client.get("/admin/tracker/sample/").status_code == 200


def test_versions_cannot_be_added_changed_or_deleted(client, staff, version):
    from tracker.models import DatasetVersion

    url = f"/admin/tracker/datasetversion/{version.id}/"
    assert client.get("/admin/tracker/datasetversion/add/").status_code == 403
    changed = client.post(url + "change/", {"description": "rewritten", "state": "ready"})
    assert changed.status_code == 403
    assert client.post(url + "delete/", {"post": "yes"}).status_code == 403
    row = DatasetVersion.objects.get(pk=version.id)
    assert row.description == "" and row.sample_count == 2
    assert client.get("/admin/tracker/dataset/add/").status_code == 403
