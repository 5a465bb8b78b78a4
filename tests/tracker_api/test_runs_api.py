"""Runs over HTTP: create, metric batches (all or nothing), downsampled history, artifacts."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from api_support import make_world
from tracker.models import Artifact, Metric, Run
from tracker_api.downsample import minmax_indices


def post(client, path, body):
    return client.post(path, data=json.dumps(body), content_type="application/json")


def _run(client, **extra):
    r = post(client, "/api/runs/", {"project": "own", "name": "r", **extra})
    assert r.status_code == 201, r.content
    return r.json()["id"]


def test_create_records_the_clients_environment_and_refuses_a_foreign_parent(db):
    world = make_world()
    c = world.client("editor")
    uid = _run(c, host="gpu-7", pid=4242, python_version="3.12.1", packages={"torch": "2.5"},
               params={"opt": {"lr": 0.1}}, tags={"a": 1, "b": None})
    run = Run.objects.get(uid=uid)
    assert (run.host, run.pid, run.packages, run.params, run.tags) == ("gpu-7", 4242, {"torch": "2.5"}, {"opt.lr": 0.1}, {"a": 1})
    assert run.created_by == world.users["editor"] and run.status == "running"
    foreign = Run.objects.create(project=world.foreign, name="theirs")
    r = post(c, "/api/runs/", {"project": "own", "parent": foreign.uid})
    assert r.status_code == 404
    assert Run.objects.filter(project=world.own).count() == 1


def test_a_bad_point_stores_nothing_of_its_batch(db):
    world = make_world()
    c = world.client("editor")
    uid = _run(c)
    good = [{"key": "loss", "step": i, "value": 1.0} for i in range(100)]
    for bad in ({"key": "loss", "step": "x", "value": 1}, {"key": "", "step": 1, "value": 1},
                {"key": "loss", "step": 1, "value": "high"}, {"key": "loss", "step": 1, "value": True},
                {"key": "loss", "step": 2**70, "value": 1}, {"key": "loss", "step": 1}, "loss=1",
                {"key": "loss", "step": 1, "value": 1, "timestamp": "now"},
                {"key": "loss", "step": 1, "value": 1, "timestamp": -2.9e261},  # found by schemathesis
                {"key": "loss", "step": 1, "value": 1, "timestamp": 1e12}):
        r = post(c, f"/api/runs/{uid}/metrics/", {"points": [*good, bad]})
        assert r.status_code == 400, (bad, r.content)
        assert "Point 100" in r.json()["detail"] and "Nothing of this batch" in r.json()["detail"]
    assert not Metric.objects.exists()
    assert post(c, f"/api/runs/{uid}/metrics/", {"points": "nope"}).status_code == 400
    r = post(c, f"/api/runs/{uid}/metrics/", {"points": [{"key": "loss", "step": 1, "value": 1, "timestamp": 1e12}]})
    assert "send unix seconds between 0 (1970) and 253402300799 (the year 9999)" in r.json()["detail"]
    r = post(c, f"/api/runs/{uid}/metrics/", {"points": [{"key": "loss", "step": 1, "value": 1, "timestamp": 0}]})
    assert r.status_code == 201


def test_nan_and_infinity_travel_and_history_downsamples_keeping_extremes(db):
    world = make_world()
    c = world.client("editor")
    uid = _run(c)
    values = [float(i % 7) for i in range(5000)]
    values[2345] = 1000.0  # a spike that plain striding would drop
    points = [{"key": "loss", "step": i, "value": v} for i, v in enumerate(values)]
    points += [{"key": "odd", "step": 0, "value": None}, {"key": "odd", "step": 1, "value": "Infinity"},
               {"key": "odd", "step": 2, "value": "-Infinity"}, {"key": "odd", "step": 3, "value": "NaN"}]
    assert post(c, f"/api/runs/{uid}/metrics/", {"points": points}).json() == {"points": 5004}
    odd = Metric.objects.filter(run__uid=uid, key="odd").order_by("step")
    first, *rest = [m.value for m in odd][:3]
    assert (first is None or first != first) and rest == [float("inf"), float("-inf")]
    body = world.client("viewer").get(f"/api/runs/{uid}/metrics/?keys=loss&max_points=100").json()
    loss = body["keys"]["loss"]
    assert loss["count"] == 5000 and len(loss["step"]) <= 100
    assert 2345 in loss["step"] and max(loss["value"]) == 1000.0
    assert loss["step"][0] == 0 and loss["step"][-1] == 4999
    full = world.client("viewer").get(f"/api/runs/{uid}/metrics/").json()["keys"]
    assert len(full["loss"]["step"]) == 5000 and full["odd"]["value"] == [None, None, None, None]
    assert world.client("viewer").get(f"/api/runs/{uid}/metrics/?max_points=1").status_code == 400


def test_minmax_indices():
    v = np.array([0, 5, 1, 1, -3, 1, 1, 9, 1, 2], dtype=float)
    idx = minmax_indices(v, 6)
    assert len(idx) <= 6 and {0, 9, 4, 7} <= set(idx.tolist())
    assert minmax_indices(v, 100).tolist() == list(range(10))
    with_nan = np.array([np.nan] * 50 + [1.0] * 50)
    assert len(minmax_indices(with_nan, 10)) <= 10


def test_artifact_upload_is_checked_and_streamed_back(db):
    world = make_world()
    c = world.client("editor")
    uid = _run(c)
    data = bytes(range(256)) * 4096
    sha = hashlib.sha256(data).hexdigest()
    r = c.generic("PUT", f"/api/runs/{uid}/artifacts/ckpt/model.pt", data, content_type="application/octet-stream",
                  HTTP_X_CONTENT_SHA256="0" * 64)
    assert r.status_code == 400 and "changed on the way" in r.json()["detail"]
    assert not Artifact.objects.exists()
    r = c.generic("PUT", f"/api/runs/{uid}/artifacts/ckpt/model.pt", data, content_type="application/octet-stream",
                  HTTP_X_CONTENT_SHA256=sha, HTTP_X_ARTIFACT_METADATA='{"epoch": 3}')
    assert r.status_code == 201 and r.json()["sha256"] == sha and r.json()["metadata"]["epoch"] == 3
    r = c.generic("PUT", f"/api/runs/{uid}/artifacts/ckpt/model.pt", b"other", content_type="application/octet-stream")
    assert r.status_code == 409
    r = c.generic("PUT", f"/api/runs/{uid}/artifacts/ckpt/model.pt?overwrite=ture", b"other",
                  content_type="application/octet-stream")
    assert r.status_code == 400 and "overwrite must be true or false" in r.json()["detail"]
    for bad in ("../../etc/passwd", "a/../../b", "/abs"):
        r = c.generic("PUT", f"/api/runs/{uid}/artifacts/{bad}", b"x", content_type="application/octet-stream")
        assert r.status_code in (400, 404), (bad, r.status_code)
    got = world.client("viewer").get(f"/api/runs/{uid}/artifacts/ckpt/model.pt")
    assert got.status_code == 200
    assert got["X-Content-SHA256"] == sha and int(got["Content-Length"]) == len(data)
    assert b"".join(got.streaming_content) == data
    assert world.client("viewer").get(f"/api/runs/{uid}/artifacts/nope.bin").status_code == 404


def test_finish_and_params_conflict(db):
    world = make_world()
    c = world.client("editor")
    uid = _run(c, params={"lr": 0.1})
    assert post(c, f"/api/runs/{uid}/params/", {"params": {"lr": 0.2}}).status_code == 409
    assert post(c, f"/api/runs/{uid}/params/", {"params": {"bs": 8}}).json()["values"] == {"lr": 0.1, "bs": 8}
    assert post(c, f"/api/runs/{uid}/finish/", {"status": "running"}).status_code == 400
    r = post(c, f"/api/runs/{uid}/finish/", {"status": "failed", "error": "OOM"})
    assert r.json()["status"] == "failed" and r.json()["error"] == "OOM" and r.json()["ended_at"]
