"""Django admin for runs: lists, filters, search, the run page, actions and artifact downloads."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from test_runs_support import _runs_isolated  # noqa: F401

import tracker
from tracker.models import Artifact, Metric, MetricSummary, Project, Run

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client, django_user_model):
    user = django_user_model.objects.create_superuser("lead", "lead@example.org", "pw")
    client.force_login(user)
    return user


@pytest.fixture
def runs():
    with tracker.start_run("adm", "good", params={"lr": 0.1}, tags={"t": 1}) as good:
        for i in range(5):
            good.log_metric("loss", 1 / (i + 1))
        good.log_artifact(b"weights", name="model/w.bin")
    with pytest.raises(ValueError):
        with tracker.start_run("adm", "bad") as bad:
            raise ValueError("diverged")
    return good, bad


def test_list_pages_render_with_filters_and_search(client, staff, runs):
    good, bad = runs
    page = client.get("/admin/tracker/run/")
    assert page.status_code == 200
    html = page.content.decode()
    assert good.id in html and bad.id in html and "loss=0.2" in html and "lr=0.1" in html
    only_failed = client.get("/admin/tracker/run/?status__exact=failed").content.decode()
    assert bad.id in only_failed and good.id not in only_failed
    found = client.get(f"/admin/tracker/run/?q={good.id}").content.decode()
    assert good.id in found and bad.id not in found
    for model in ("metric", "metricsummary", "artifact", "blob"):
        assert client.get(f"/admin/tracker/{model}/").status_code == 200, model
    assert client.get(f"/admin/tracker/metric/?q={good.id}").status_code == 200


def test_run_page_shows_params_error_summaries_and_artifacts(client, staff, runs):
    good, bad = runs
    page = client.get(
        f"/admin/tracker/run/{Run.objects.get(uid=good.id).pk}/change/"
    ).content.decode()
    assert "&quot;lr&quot;: 0.1" in page and "model/w.bin" in page and "download" in page
    assert MetricSummary.objects.get(run__uid=good.id).key in page
    failed = client.get(
        f"/admin/tracker/run/{Run.objects.get(uid=bad.id).pk}/change/"
    ).content.decode()
    assert "ValueError: diverged" in failed


def test_artifact_download_streams_the_bytes(client, staff, runs):
    good, _ = runs
    art = Artifact.objects.get(run__uid=good.id)
    response = client.get(f"/admin/tracker/artifact/{art.pk}/download/")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"weights"
    assert 'filename="w.bin"' in response["Content-Disposition"]
    client.logout()
    assert client.get(f"/admin/tracker/artifact/{art.pk}/download/").status_code == 302  # login


def test_actions_and_stale_runs(client, staff):
    proj = Project.objects.create(name="adm-stale")
    old = timezone.now() - dt.timedelta(minutes=10)
    dead = Run.objects.create(
        project=proj, uid="dead000000000000", heartbeat_at=old, heartbeat_timeout=5
    )
    alive = Run.objects.create(
        project=proj, uid="alive00000000000", heartbeat_at=timezone.now(), heartbeat_timeout=600
    )
    client.get("/admin/tracker/run/")  # the list shows current statuses: the dead run is killed
    assert Run.objects.get(pk=dead.pk).status == "killed"
    response = client.post(
        "/admin/tracker/run/",
        {"action": "mark_finished", "_selected_action": [str(alive.pk), str(dead.pk)], "index": 0},
        follow=True,
    )
    assert "1 running run(s) marked finished" in response.content.decode()
    assert Run.objects.get(pk=alive.pk).status == "finished"
    assert Run.objects.get(pk=dead.pk).status == "killed"


def test_points_cannot_be_edited_or_added_in_the_admin(client, staff, runs):
    good, _ = runs
    point = Metric.objects.filter(run__uid=good.id).first()
    assert client.get("/admin/tracker/metric/add/").status_code == 403
    page = client.get(f"/admin/tracker/metric/{point.pk}/change/")
    assert page.status_code == 200 and b'name="value"' not in page.content
