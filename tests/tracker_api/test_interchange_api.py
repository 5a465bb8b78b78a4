"""Deletions, run reads for remote clients, agreement, final labels and Label Studio JSON over HTTP."""

from __future__ import annotations

import datetime as dt
import json
import math
import time

import pandas as pd
import pytest
from django.contrib.auth import get_user_model

import tracker
from api_support import make_world
from tracker.models import (
    Annotation, AnnotationEvent, Artifact, Blob, Claim, DatasetItem, Metric, MetricSummary, Prediction, Run, RunInput,
    Sample,
)
from tracker_api import frames


def post(client, path, body):
    return client.post(path, data=json.dumps(body), content_type="application/json")


def _samples(project, n=6, prefix="s"):
    from tracker.services.samples import add_samples

    return add_samples(project, [{"id": f"{prefix}{i}", "text": f"text {i}", "n": i} for i in range(n)])


def _version(project, name="ds"):
    from tracker.services.datasets import create_dataset

    return create_dataset(name, Sample.objects.filter(project=project), project=project, progress=False)


def _task(project, name="sentiment"):
    from tracker.services.labeling import define_task

    return define_task(project, name, "classification", ["pos", "neg"])


def _logged_run(world, name="r", status="running"):
    from tracker.services.artifacts import log_artifact
    from tracker_api.views.runs import sink_write

    ended = None if status == "running" else dt.datetime.now(dt.UTC)
    run = Run.objects.create(project=world.own, name=name, status=status, ended_at=ended)
    sink_write(run.pk, [("loss", i, 1.0 / (i + 1), time.time()) for i in range(20)], None)
    log_artifact(run, b"weights" * 100, "model.bin")
    return run


# -- deletions ----------------------------------------------------------------------------------
def test_a_running_run_is_refused_and_a_finished_one_goes_with_everything_it_logged(db):
    from tracker.services.datasets import use_dataset
    from tracker.services.labeling import add_predictions

    world = make_world()
    c = world.client("editor")
    run = _logged_run(world)
    child = Run.objects.create(project=world.own, name="child", parent=run, status="finished")
    _samples(world.own)
    use_dataset(run, _version(world.own).id, "train")
    pred = add_predictions(world.own, _task(world.own), [{"external_id": "s0", "value": "pos"}], run=run)[0]
    blob = Artifact.objects.get(run=run).blob_id

    r = c.delete(f"/api/runs/{run.uid}/")
    assert r.status_code == 409 and r.json()["code"] == "conflict", r.content
    assert "still running" in r.json()["detail"] and "finish" in r.json()["detail"]
    assert Metric.objects.filter(run=run).count() == 20
    assert post(c, f"/api/runs/{run.uid}/finish/", {"status": "killed"}).status_code == 200

    assert world.client("viewer").delete(f"/api/runs/{run.uid}/").status_code == 403
    assert c.delete(f"/api/runs/{run.uid}/").status_code == 204
    assert not Run.objects.filter(pk=run.pk).exists()
    for model in (Metric, MetricSummary, Artifact, RunInput):
        assert not model.objects.filter(run_id=run.pk).exists(), model
    assert Blob.objects.filter(pk=blob).exists()  # the bytes wait for `tracker gc`
    child.refresh_from_db()
    pred.refresh_from_db()
    assert child.parent_id is None and pred.run_id is None
    assert c.get(f"/api/runs/{run.uid}/").status_code == 404
    assert c.delete(f"/api/runs/{run.uid}/").status_code == 404


def test_a_run_whose_process_died_can_be_deleted(db):
    world = make_world()
    run = _logged_run(world)
    Run.objects.filter(pk=run.pk).update(heartbeat_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC), heartbeat_timeout=60)
    assert world.client("editor").delete(f"/api/runs/{run.uid}/").status_code == 204


def test_deleting_samples_never_changes_a_frozen_version(db):
    from tracker.services.labeling import annotate

    world = make_world()
    c = world.client("editor")
    samples = _samples(world.own)
    version = _version(world.own)
    before = c.get(f"/api/dataset-versions/{version.id}/export/?export_format=json")
    before = json.loads(b"".join(before.streaming_content))
    assert c.delete(f"/api/samples/{samples[0].pk}/").status_code == 204
    annotate(samples[1], _task(world.own), "pos", annotator="alice")
    r = c.delete(f"/api/samples/{samples[1].pk}/")
    assert r.status_code == 409 and "1 annotation" in r.json()["detail"] and "force" in r.json()["detail"]
    assert Annotation.objects.count() == 1
    assert c.delete(f"/api/samples/{samples[1].pk}/?force=maybe").status_code == 400
    assert c.delete(f"/api/samples/{samples[1].pk}/?force=true").status_code == 204
    assert not Annotation.objects.exists() and not AnnotationEvent.objects.exists()
    after = c.get(f"/api/dataset-versions/{version.id}/export/?export_format=json")
    assert json.loads(b"".join(after.streaming_content)) == before
    assert DatasetItem.objects.filter(version_id=version.id).count() == 6
    assert DatasetItem.objects.filter(version_id=version.id, sample__isnull=True).count() == 2
    assert tracker.get_dataset("ds").to_pandas()["id"].tolist() == [row["id"] for row in before]


def test_version_diff_over_the_api_and_its_bad_input(db):
    world = make_world()
    c = world.client("viewer")
    _samples(world.own)
    v1 = _version(world.own)
    _samples(world.own, n=8)  # two more samples
    v2 = _version(world.own)
    _samples(world.foreign, prefix="f")
    theirs = _version(world.foreign, name="theirs")
    r = c.get(f"/api/dataset-versions/{v1.id}/diff/?other={v2.id}")
    assert r.status_code == 200, r.content
    local = tracker.get_dataset("ds", version=1).diff(tracker.get_dataset("ds", version=2))
    assert r.json() == {"old": local.old, "new": local.new, "added": ["s6", "s7"], "removed": [], "changed": [],
                        "moved": local.moved, "unchanged": local.unchanged}
    for bad in ("", "?other=", "?other=two", "?other=-1", "?other=1e3", "?other=%C2%B2"):  # "²" is a digit to str
        r = c.get(f"/api/dataset-versions/{v1.id}/diff/{bad}")
        assert r.status_code == 400 and "other must be the id of a dataset version" in r.json()["detail"], bad
    r = c.get(f"/api/dataset-versions/{v1.id}/diff/?other={theirs.id}")  # a version the user cannot see
    assert r.status_code == 404 and "foreign" not in r.content.decode()


def test_a_task_with_annotations_needs_force(db):
    from tracker.services.labeling import add_predictions, annotate
    from tracker.services.queue import next_samples

    world = make_world()
    c = world.client("editor")
    _samples(world.own)
    task = _task(world.own)
    annotate("s0", task, "pos", annotator="alice")
    add_predictions(world.own, task, [{"external_id": "s1", "value": "neg"}])
    next_samples(world.own, task, 2, annotator=world.users["annotator"])
    r = c.delete(f"/api/tasks/{task.pk}/")
    assert r.status_code == 409 and "Task 'sentiment' holds 1 annotation" in r.json()["detail"]
    assert c.delete(f"/api/tasks/{task.pk}/?force=true").status_code == 204
    for model in (Annotation, Prediction, Claim):
        assert not model.objects.exists(), model
    empty = _task(world.own, "empty")
    assert c.delete(f"/api/tasks/{empty.pk}/").status_code == 204
    assert Sample.objects.filter(project=world.own).count() == 6


def test_annotators_delete_their_own_annotations_editors_any(db):
    from tracker.services.labeling import annotate, review

    world = make_world()
    _samples(world.own)
    task = _task(world.own)
    mine = annotate("s0", task, "pos", annotator=world.users["annotator"])
    accepted = annotate("s1", task, "neg", annotator=world.users["annotator"])
    review([accepted.pk], "accept", reviewer=world.users["editor"])
    theirs = annotate("s2", task, "pos", annotator="alice")
    annotator = world.client("annotator")
    assert world.client("viewer").delete(f"/api/annotations/{mine.pk}/").status_code == 403
    r = annotator.delete(f"/api/annotations/{theirs.pk}/")
    assert r.status_code == 403 and "your own" in r.json()["detail"]
    r = annotator.delete(f"/api/annotations/{accepted.pk}/")
    assert r.status_code == 403 and "accepted" in r.json()["detail"]
    assert annotator.delete(f"/api/annotations/{mine.pk}/").status_code == 204
    editor = world.client("editor")
    assert editor.delete(f"/api/annotations/{theirs.pk}/").status_code == 204
    assert editor.delete(f"/api/annotations/{accepted.pk}/").status_code == 204
    assert not Annotation.objects.exists()


def test_deleting_a_prediction_keeps_the_annotation_made_from_it(db):
    from tracker.services.labeling import accept_prediction, add_predictions

    world = make_world()
    _samples(world.own)
    pred = add_predictions(world.own, _task(world.own), [{"external_id": "s0", "value": "neg"}])[0]
    ann = accept_prediction(pred.pk, annotator="alice")
    assert world.client("annotator").delete(f"/api/predictions/{pred.pk}/").status_code == 403
    assert world.client("editor").delete(f"/api/predictions/{pred.pk}/").status_code == 204
    ann.refresh_from_db()
    assert ann.value == "neg" and ann.prediction_id is None


# -- runs for remote clients ------------------------------------------------------------------------
def test_run_search_pages_and_refuses_bad_filters(db):
    world = make_world()
    c = world.client("viewer")
    runs = [Run.objects.create(project=world.own, name=f"r{i}", status="finished", params={"lr": i / 10})
            for i in range(5)]
    Run.objects.create(project=world.foreign, name="theirs", status="finished", params={"lr": 0.3})
    seen, offset = [], 0
    while offset is not None:
        page = post(c, "/api/runs/search/", {"params": {"lr__gte": 0.1}, "page_size": 2, "offset": offset}).json()
        assert page["count"] == 4
        seen += [r["id"] for r in page["results"]]
        offset = page["next_offset"]
    assert seen == [r.uid for r in reversed(runs[1:])]  # most recent first, no foreign run
    assert post(c, "/api/runs/search/", {"page_size": 0}).json() == {"count": 5, "results": [], "next_offset": None}
    assert post(c, "/api/runs/search/", {"id_prefix": runs[0].uid[:6]}).json()["results"][0]["id"] == runs[0].uid
    assert post(c, "/api/runs/search/", {"limit": 2, "order_by": ["name"]}).json()["count"] == 2
    for bad in ({"status": ["sleeping"]}, {"order_by": ["nope"]}, {"since": "yesterday"}, {"limit": -1},
                {"tags": "x"}, {"page_size": 5000}, {"project": ""}):
        assert post(c, "/api/runs/search/", bad).status_code == 400, bad
    foreign = Run.objects.get(name="theirs")
    assert post(c, "/api/runs/search/", {"parent": foreign.uid}).status_code == 404
    r = post(c, "/api/runs/compare/", {"runs": [runs[0].uid, foreign.uid]})
    assert r.status_code == 404 and foreign.uid in r.json()["detail"]


def test_typed_frames_are_the_notebook_apis_frames(db):
    from tracker_api.views.runs import sink_write

    world = make_world()
    c = world.client("viewer")
    a = _logged_run(world, "a", "finished")
    b = Run.objects.create(project=world.own, name="b", status="finished", ended_at=dt.datetime.now(dt.UTC))
    sink_write(b.pk, [("loss", 0, math.inf, time.time()), ("loss", 1, math.nan, time.time())], None)
    frame = frames.decode(post(c, "/api/runs/frame/", {"project": "own"}).json())
    pd.testing.assert_frame_equal(frame, tracker.runs_frame(project="own"))
    wide = frames.decode(c.get(f"/api/runs/{b.uid}/history/").json())
    pd.testing.assert_frame_equal(wide, tracker.get_run(b.uid).history())
    assert wide.loc[0, "loss"] == math.inf and math.isnan(wide.loc[1, "loss"])
    many = frames.decode(post(c, "/api/runs/history/", {"project": "own", "keys": ["loss"], "wide": False}).json())
    pd.testing.assert_frame_equal(many, tracker.runs(project="own").history("loss", wide=False))
    table = frames.decode(post(c, "/api/runs/compare/", {"runs": [a.uid[:5], b.uid]}).json())
    pd.testing.assert_frame_equal(table, tracker.compare([a.uid, b.uid]))
    assert c.get(f"/api/runs/{b.uid}/history/?wide=perhaps").status_code == 400


def test_run_id_prefixes_resolve_among_visible_runs_only(db):
    world = make_world()
    c = world.client("viewer")

    def compare(*refs):
        return post(c, "/api/runs/compare/", {"runs": list(refs)})

    mine = Run.objects.create(project=world.own, name="mine", uid="abcd1111")
    twin = Run.objects.create(project=world.own, name="twin", uid="abce2222")
    Run.objects.create(project=world.foreign, name="theirs", uid="abcd9999")
    # the foreign run shares the prefix but is not visible: the prefix is unique for this user
    table = frames.decode(compare("abcd", twin.uid).json())
    pd.testing.assert_frame_equal(table, tracker.compare([mine.uid, twin.uid]))
    r = compare("abc", twin.uid)  # 3 characters: too short for a prefix
    assert r.status_code == 404 and "no run 'abc'" in r.json()["detail"]
    Run.objects.create(project=world.own, name="another", uid="abcd3333")
    r = compare("abcd", twin.uid)
    assert r.status_code == 404 and "matches several runs" in r.json()["detail"]
    r = compare("abcd9999", twin.uid)
    assert r.status_code == 404 and "theirs" not in r.content.decode()


def test_resume_with_a_changed_param_changes_nothing(db):
    world = make_world()
    c = world.client("editor")
    run = Run.objects.create(project=world.own, name="r", status="finished", params={"lr": 0.1}, notes="n")
    r = post(c, f"/api/runs/{run.uid}/resume/", {"params": {"lr": 0.2}, "notes": "again"})
    assert r.status_code == 409 and r.json()["code"] == "param_conflict"
    run.refresh_from_db()
    assert (run.status, run.notes, run.params) == ("finished", "n", {"lr": 0.1})
    r = post(c, f"/api/runs/{run.uid}/resume/", {"params": {"bs": 8}, "notes": "again", "host": "h", "pid": 7})
    assert r.status_code == 200 and r.json()["run"]["status"] == "running" and r.json()["next_steps"] == {}
    run.refresh_from_db()
    assert (run.notes, run.params, run.host, run.pid, run.ended_at) == ("n\n\nagain", {"lr": 0.1, "bs": 8}, "h", 7, None)
    assert post(c, f"/api/runs/{run.uid}/notes/", {"text": "new"}).json() == {"notes": "new"}
    assert post(c, f"/api/runs/{run.uid}/notes/", {"append": True}).status_code == 400


def test_inputs_see_and_take_only_versions_of_your_projects(db):
    from tracker.services.datasets import use_dataset

    world = make_world()
    c = world.client("editor")
    run = Run.objects.create(project=world.own, name="r", status="finished")
    _samples(world.own)
    _samples(world.foreign, prefix="f")
    own, foreign = _version(world.own), _version(world.foreign, "theirs")
    use_dataset(run, foreign.id, "eval")  # the notebook API may link across projects
    r = post(c, f"/api/runs/{run.uid}/inputs/", {"version": foreign.id})
    assert r.status_code == 404 and "foreign" not in r.json()["detail"]
    r = post(c, f"/api/runs/{run.uid}/inputs/", {"version": own.id, "context": "train"})
    assert r.status_code == 201 and r.json()["version"]["name"] == "ds"
    listed = c.get(f"/api/runs/{run.uid}/inputs/").json()
    assert [(u["version"]["name"], u["context"]) for u in listed] == [("ds", "train")]
    assert len(tracker.get_run(run.uid).inputs()) == 2


# -- labels ---------------------------------------------------------------------------------------
def _labelled(world):
    from tracker.services.labeling import annotate, review

    _samples(world.own, 8)
    task = _task(world.own)
    for i in range(8):
        for who, value in (("alice", "pos"), ("bob", "pos" if i % 3 else "neg"), ("carol", "neg" if i == 5 else "pos")):
            ann = annotate(f"s{i}", task, value, annotator=who)
        if i == 2:
            review([ann.pk], "accept", reviewer="boss")
    return task


def _rows(frame):
    """A frame's rows as the API sends them: NaN as null."""
    return [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
            for r in frame.to_dict("records")]


def test_agreement_and_resolved_labels_are_the_notebook_apis(db):
    world = make_world()
    task = _labelled(world)
    c = world.client("viewer")
    got = c.get(f"/api/tasks/{task.pk}/agreement/").json()
    assert got == _rows(tracker.agreement("own", "sentiment"))
    assert {r["scope"] for r in got} == {"overall", "label", "annotator", "pair"}
    pair = c.get(f"/api/tasks/{task.pk}/agreement/?annotator=alice&annotator=bob").json()
    assert pair == _rows(tracker.agreement("own", "sentiment", annotators=["alice", "bob"]))
    r = c.get(f"/api/tasks/{task.pk}/agreement/?metric=interval")
    assert r.status_code == 400 and "nominal" in r.json()["detail"]
    resolved = c.get(f"/api/tasks/{task.pk}/resolved-labels/?strategy=accepted&strategy=majority").json()
    assert resolved == _rows(tracker.resolve_labels("own", "sentiment", ("accepted", "majority")))
    assert resolved[2]["strategy"] == "accepted" and resolved[2]["value"] == "pos"
    ids = [s.pk for s in Sample.objects.filter(external_id__in=["s1", "s5"])]
    some = c.get(f"/api/tasks/{task.pk}/resolved-labels/?sample={ids[0]}&sample={ids[1]}").json()
    assert [r["external_id"] for r in some] == ["s1", "s5"]
    assert c.get(f"/api/tasks/{task.pk}/resolved-labels/?strategy=loudest").status_code == 400
    assert c.get(f"/api/tasks/{task.pk}/resolved-labels/?sample=first").status_code == 400


def test_label_studio_export_imports_into_another_project_unchanged(db):
    from tracker.services.access import set_role

    world = make_world()
    _labelled(world)
    editor = world.client("editor")
    r = editor.get("/api/label-studio/export/?project=own")
    assert r.streaming and r["Content-Type"] == "application/json"  # never built whole in memory
    exported = json.loads(b"".join(r.streaming_content))
    from tracker.services.interchange import export_label_studio, iter_label_studio

    assert exported == json.loads(json.dumps(export_label_studio(world.own), default=str))
    # page by page (3 samples a round of queries) gives the same tasks in the same order
    assert list(iter_label_studio(world.own, page=3)) == export_label_studio(world.own)
    assert [t["meta"]["external_id"] for t in iter_label_studio(world.own, page=3, samples=[]) ] == []
    r = editor.get("/api/label-studio/export/?project=own&task=nope")
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    r = post(editor, "/api/label-studio/import/?project=copy", exported)
    assert r.status_code == 201, r.content
    assert r.json() == {"samples": 8, "annotations": 24, "predictions": 0, "superseded": 0, "tasks": ["sentiment"]}
    a = tracker.annotation_table("own", "sentiment")[["external_id", "annotator", "value", "status"]]
    b = tracker.annotation_table("copy", "sentiment")[["external_id", "annotator", "value", "status"]]
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
    renamed = post(editor, "/api/label-studio/import/?project=copy&map=sentiment:mood", exported)
    assert renamed.status_code == 201 and renamed.json()["tasks"] == ["mood"]
    set_role("copy", world.users["viewer"], "viewer")
    assert post(world.client("viewer"), "/api/label-studio/import/?project=copy", exported).status_code == 403


def test_only_a_project_admin_imports_annotations_under_other_peoples_names(db):
    world = make_world()
    task = [{"data": {"text": "fine"}, "meta": {"external_id": "x1"},
             "annotations": [{"completed_by": {"email": "mallory@example.org"},
                              "result": [{"from_name": "mood", "to_name": "text", "type": "choices",
                                          "value": {"choices": ["pos"]}}]}]}]
    before = (Sample.objects.count(), get_user_model().objects.count())
    r = post(world.client("editor"), "/api/label-studio/import/?project=own", task)
    assert r.status_code == 403, r.content
    assert "'mallory@example.org'" in r.json()["detail"] and "admin role in project 'own'" in r.json()["detail"]
    assert (Sample.objects.count(), get_user_model().objects.count()) == before  # no sample, no account
    assert not Annotation.objects.exists()
    # ?annotator= naming someone else is the same thing
    mine = [{**task[0], "annotations": [{k: v for k, v in task[0]["annotations"][0].items() if k != "completed_by"}]}]
    r = post(world.client("editor"), "/api/label-studio/import/?project=own&annotator=alice", mine)
    assert r.status_code == 403 and "'alice'" in r.json()["detail"]
    # the editor's own annotations are fine; an admin may attribute to anyone
    r = post(world.client("editor"), "/api/label-studio/import/?project=own", mine)
    assert r.status_code == 201, r.content
    r = post(world.client("admin"), "/api/label-studio/import/?project=own", task)
    assert r.status_code == 201, r.content
    assert sorted(Annotation.objects.values_list("annotator__username", flat=True)) == ["editor", "mallory@example.org"]


@pytest.mark.parametrize("body", [
    {"data": {}},
    [{"annotations": []}],
    [{"data": {"t": 1}, "annotations": [{"result": [{"from_name": "x", "type": "polygonlabels", "value": {}}]}]}],
    [{"data": {"t": 1}, "annotations": [{"result": [{"from_name": "x", "type": "choices",
                                                     "value": {"choices": ["a"]}}], "tracker": {"tasks": ["x"]}}]}],
])
def test_a_bad_label_studio_import_stores_nothing(db, body):
    world = make_world()
    before = Sample.objects.count()
    r = post(world.client("editor"), "/api/label-studio/import/?project=own", body)
    assert r.status_code == 400, r.content
    assert r.json()["detail"].endswith(".") and Sample.objects.count() == before
    assert not Annotation.objects.exists()
    assert post(world.client("editor"), "/api/label-studio/import/?project=own&map=nocolon", []).status_code == 400
    assert world.client("editor").get("/api/label-studio/export/").status_code == 400


def test_every_filter_lookup_with_any_json_value_is_an_answer_not_a_server_error(transactional_db):
    # transactional: on PostgreSQL a refused value (NUL) must not poison the next request
    from tracker.services.runs import _LOOKUPS

    world = make_world()
    Run.objects.create(project=world.own, name="r", status="finished", params={"lr": 0.1, "opt": "adam"},
                       tags={"t": [1, 2]})
    c = world.client("viewer")
    values = [1, 0.5, "adam", True, None, [1, "a"], {"a": 1}, [], 2**70, "\u0000"]
    for lookup in sorted(_LOOKUPS):
        for value in values:
            for field in ("params", "tags", "metrics"):
                r = post(c, "/api/runs/search/", {field: {f"lr__{lookup}": value}})
                assert r.status_code in (200, 400), (field, lookup, value, r.content[:300])
                if r.status_code == 400:
                    assert r.json()["detail"].endswith("."), r.content


def test_empty_selections_and_out_of_range_times_read_back(db):
    from tracker_api.views.runs import sink_write

    world = make_world()
    run = Run.objects.create(project=world.own, name="r", status="finished", ended_at=dt.datetime.now(dt.UTC))
    sink_write(run.pk, [("loss", 0, 1.0, -2.9e261), ("loss", 1, 2.0, time.time())], None)
    c = world.client("viewer")
    for body in ({"limit": 0}, {"status": []}, {"ids": []}):
        frame = frames.decode(post(c, "/api/runs/frame/", body).json())
        assert frame.empty and list(frame.columns)[:3] == ["name", "project", "status"], body
        pd.testing.assert_frame_equal(frame, tracker.runs_frame(**body))
        for wide in (True, False):
            hist = frames.decode(post(c, "/api/runs/history/", {**body, "wide": wide}).json())
            pd.testing.assert_frame_equal(hist, tracker.runs(**body).history(wide=wide))
    long = frames.decode(c.get(f"/api/runs/{run.uid}/history/?wide=false").json())
    assert long["timestamp"].isna().tolist() == [True, False]  # a time beyond pandas' range is NaT
    pd.testing.assert_frame_equal(long, tracker.get_run(run.uid).history(wide=False))


def test_search_pages_cost_a_fixed_number_of_queries(db):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tracker.services.datasets import use_dataset
    from tracker_api.views.runs import sink_write

    world = make_world()
    _samples(world.own)
    version = _version(world.own)
    for i in range(30):
        run = Run.objects.create(project=world.own, name=f"r{i}", status="finished", parent=None)
        sink_write(run.pk, [("loss", 0, 1.0, time.time()), ("acc", 0, 0.5, time.time())], None)
        use_dataset(run, version.id, "train")
    c = world.client("viewer")
    post(c, "/api/runs/search/", {"page_size": 1})  # the token's first use writes last_used_at
    counts = {}
    for size in (2, 25):
        with CaptureQueriesContext(connection) as ctx:
            page = post(c, "/api/runs/search/", {"project": "own", "page_size": size}).json()
        assert len(page["results"]) == size and page["results"][0]["metrics"] == {"acc": 0.5, "loss": 1.0}
        assert page["results"][0]["datasets"] == ["ds:v1 (train)"]
        counts[size] = len(ctx.captured_queries)
    assert counts[2] == counts[25] and counts[2] <= 8, counts
