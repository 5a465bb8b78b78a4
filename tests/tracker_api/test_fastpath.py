"""The hot write paths (a metric point, an annotation per request; tracker_api/fastpath.py):
the same answers as the DRF views, every error still the DRF view's, revocation at once, and the
PostgreSQL ingest's commit mode."""

from __future__ import annotations

import functools
import http.client
import json
from urllib.parse import urlsplit

import pytest

from api_support import make_world, start_server, stop_server
from tracker.models import Annotation, AnnotationEvent, AnnotationTask, Claim, Metric, MetricSummary, Run, Sample
from tracker.services import access
from tracker_api.views.labeling import AnnotationViewSet
from tracker_api.views.runs import RunViewSet

DRF_ACCEPT = "application/json; q=0.9"  # still JSON, but not what the fast path answers


def post(client, path, body, **extra):
    raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(path, data=raw, content_type=extra.pop("content_type", "application/json"), **extra)


@pytest.fixture
def drf_calls(monkeypatch):
    """How often the DRF views' handlers ran (the fast path does not call them)."""
    calls = []
    for cls, name in ((RunViewSet, "metrics"), (AnnotationViewSet, "create")):
        original = getattr(cls, name)

        @functools.wraps(original)  # keeps @action's marks: the router builds its routes from them
        def counting(self, *args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, counting)
    return calls


def _setup(world):
    c = world.client("editor")
    run = post(c, "/api/runs/", {"project": "own", "name": "r"}).json()["id"]
    task = post(c, "/api/tasks/", {"project": "own", "name": "t", "kind": "classification", "labels": ["a", "b"]}).json()["id"]
    Sample.objects.bulk_create([Sample(project=world.own, external_id=f"s{i}", data={"text": "x"}) for i in range(4)])
    return c, run, task


def _same_headers(fast, slow):
    volatile = {"Content-Length"}
    assert {k: v for k, v in fast.headers.items() if k not in volatile} == {
        k: v for k, v in slow.headers.items() if k not in volatile
    }


def test_fast_answers_equal_the_drf_views_answers(db, drf_calls):
    world = make_world()
    c, run, task = _setup(world)
    path = f"/api/runs/{run}/metrics/"
    fast = post(c, path, {"points": [{"key": "acc", "step": 1, "value": 0.5}]})
    assert drf_calls == []
    slow = post(c, path, {"points": [{"key": "acc", "step": 2, "value": 0.25}]}, HTTP_ACCEPT=DRF_ACCEPT)
    assert drf_calls == ["metrics"]
    assert fast.status_code == slow.status_code == 201 and fast.content == slow.content == b'{"points":1}'
    _same_headers(fast, slow)
    summary = MetricSummary.objects.get(run__uid=run, key="acc")
    assert (summary.count, summary.last_step, summary.last, summary.min, summary.max) == (2, 2, 0.25, 0.25, 0.5)

    ann = world.client("annotator")
    fast = post(ann, "/api/annotations/", {"task": task, "sample": "s0", "value": "a"})
    assert drf_calls == ["metrics"]
    slow = post(ann, "/api/annotations/", {"task": task, "sample": "s1", "value": "b"}, HTTP_ACCEPT=DRF_ACCEPT)
    assert drf_calls == ["metrics", "create"]
    assert fast.status_code == slow.status_code == 201
    _same_headers(fast, slow)
    got, want = fast.json(), slow.json()
    assert got.keys() == want.keys()
    assert (got["external_id"], got["value"], want["external_id"], want["value"]) == ("s0", "a", "s1", "b")
    for key in ("task", "annotator", "status", "review_comment", "reviewed_by", "reviewed_at", "prediction"):
        assert got[key] == want[key], key
    # what the fast path stored is what the DRF path stores, history included
    stored = Annotation.objects.get(pk=got["id"])
    assert (stored.value, stored.status, stored.annotator.username) == ("a", "submitted", "annotator")
    assert got["created_at"] == got["updated_at"] == stored.created_at.isoformat().replace("+00:00", "Z")
    events = list(AnnotationEvent.objects.filter(annotation=stored).values_list("action", "new_value", "actor__username"))
    assert events == [("created", "a", "annotator")]
    # by sample id too; a changed value goes through the core's update path
    again = post(ann, "/api/annotations/", {"task": task, "sample": stored.sample_id, "value": "b"})
    assert again.status_code == 201 and again.json()["id"] == stored.pk and again.json()["value"] == "b"
    assert drf_calls == ["metrics", "create"]
    assert AnnotationEvent.objects.filter(annotation=stored).count() == 2


def test_an_annotation_removes_the_annotators_claim(db):
    from tracker.services.queue import next_samples

    world = make_world()
    c, run, task_id = _setup(world)
    task = AnnotationTask.objects.get(pk=task_id)
    claimed = next_samples(world.own, task, 1, annotator=world.users["annotator"])
    assert Claim.objects.count() == 1
    r = post(world.client("annotator"), "/api/annotations/", {"task": task_id, "sample": claimed[0].external_id, "value": "a"})
    assert r.status_code == 201 and not Claim.objects.exists()


@pytest.mark.parametrize(
    "who, body, extra, status, detail",
    [
        ("viewer", {"points": [{"key": "a", "step": 1, "value": 1}]}, {}, 403, "editor role"),
        ("outsider", {"points": [{"key": "a", "step": 1, "value": 1}]}, {}, 404, "no run"),
        (None, {"points": [{"key": "a", "step": 1, "value": 1}]}, {}, 401, "credentials were not provided"),
        ("editor", {"points": [{"key": "a", "step": "x", "value": 1}]}, {}, 400, "Point 0"),
        ("editor", {"points": "nope"}, {}, 400, "list of points"),
        ("editor", '{"points": [{"key": "a", "step": 1, "value": NaN}]}', {}, 400, None),
        ("editor", b'{"points": [{"key": "\xff", "step": 1, "value": 1}]}', {}, 400, None),
        ("editor", {"points": [{"key": "a", "step": 1, "value": 1}]}, {"query": "?durable=perhaps"}, 400, "durable must be true or false"),
        (None, {"points": [{"key": "a", "step": 1, "value": 1}]}, {"HTTP_AUTHORIZATION": "Bearer trk_nope"}, 401, "Invalid, expired or revoked"),
        (None, {"points": [{"key": "a", "step": 1, "value": 1}]}, {"HTTP_AUTHORIZATION": "Bearer a b"}, 401, "Malformed"),
    ],
)
def test_metric_errors_are_the_drf_views_errors(db, who, body, extra, status, detail):
    world = make_world()
    c, run, _ = _setup(world)
    client = world.client(who)
    query = extra.pop("query", "")
    r = post(client, f"/api/runs/{run}/metrics/{query}", body, **extra)
    assert r.status_code == status, r.content
    assert set(r.json()) >= {"detail", "code"}
    if detail:
        assert detail in r.json()["detail"]
    if status == 401:
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="tracker"'
    assert not Metric.objects.exists()


@pytest.mark.parametrize(
    "who, body, status, detail",
    [
        ("viewer", {"sample": "s0", "value": "a"}, 403, "annotator role"),
        ("outsider", {"sample": "s0", "value": "a"}, 404, "no annotation task"),
        ("annotator", {"sample": "nope", "value": "a"}, 404, "has no sample 'nope'"),
        ("annotator", {"sample": "s0", "value": "c"}, 400, None),
        ("annotator", {"sample": "s0", "value": None}, 400, "value"),
        ("annotator", {"sample": "", "value": "a"}, 400, "sample"),
        ("annotator", {"sample": 2**63, "value": "a"}, 400, "sample"),
    ],
)
def test_annotation_errors_are_the_drf_views_errors(db, who, body, status, detail):
    world = make_world()
    _, _, task = _setup(world)
    r = post(world.client(who), "/api/annotations/", {"task": task, **body})
    assert r.status_code == status, r.content
    if detail:
        assert detail in r.json()["detail"] or detail in json.dumps(r.json().get("fields", {}))
    assert not Annotation.objects.exists()


def test_a_demoted_member_is_refused_on_the_next_request(db):
    world = make_world()
    c, run, task = _setup(world)
    path = f"/api/runs/{run}/metrics/"
    assert post(c, path, {"points": [{"key": "a", "step": 1, "value": 1}]}).status_code == 201
    access.set_role(world.own, world.users["editor"], "viewer")
    assert post(c, path, {"points": [{"key": "a", "step": 2, "value": 1}]}).status_code == 403
    access.remove_member(world.own, world.users["editor"])
    assert post(c, path, {"points": [{"key": "a", "step": 3, "value": 1}]}).status_code == 404
    assert Metric.objects.count() == 1


def _raw(url: str, method: str, path: str, key: str, body: object = None) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, path, None if body is None else json.dumps(body),
                     {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_a_revoked_token_or_deactivated_user_is_refused_at_once_by_every_worker(subprocess_env):
    """Tokens are checked in the database on every request (nothing cached per process)."""
    world = make_world()
    run = Run.objects.create(project=world.own, name="r")
    tokens = {who: access.create_token(world.users[who], name="live") for who in ("editor", "admin")}
    server = start_server(subprocess_env, server="gunicorn", workers=2)
    try:
        path = f"/api/runs/{run.uid}/metrics/"
        point = {"points": [{"key": "a", "step": 1, "value": 1}]}
        for _ in range(6):  # fresh connections: both workers answer some
            assert _raw(server.url, "POST", path, tokens["editor"][1], point)[0] == 201
        token_id = tokens["editor"][0].pk
        # revoked with the editor's other token (a token cannot revoke itself)
        assert _raw(server.url, "DELETE", f"/api/tokens/{token_id}/", world.keys["editor"])[0] == 204
        for _ in range(10):
            status, body = _raw(server.url, "POST", path, tokens["editor"][1], point)
            assert status == 401 and b"revoked" in body
        admin_key = tokens["admin"][1]
        assert _raw(server.url, "POST", path, admin_key, point)[0] == 201
        access.deactivate_user(world.users["admin"])
        for _ in range(10):
            assert _raw(server.url, "POST", path, admin_key, point)[0] == 401
    finally:
        stop_server(server)
    assert Metric.objects.filter(run=run).count() == 7


def test_the_schema_documents_the_durable_parameter(db):
    world = make_world()
    doc = json.loads(world.client("viewer").get("/api/schema/?format=json").content)
    op = doc["paths"]["/api/runs/{id}/metrics/"]["post"]
    durable = [p for p in op["parameters"] if p["name"] == "durable"]
    assert durable and durable[0]["in"] == "query" and durable[0]["schema"]["type"] == "boolean"
    assert not any(p["name"] == "durable" for p in doc["paths"]["/api/runs/{id}/metrics/"]["get"].get("parameters", []))


@pytest.fixture
def sent_sql(monkeypatch):
    """The SQL text every psycopg cursor sends."""
    import psycopg

    sent = []
    original = psycopg.Cursor.execute

    def recording(self, query, params=None, **kwargs):
        sent.append(query if isinstance(query, str) else str(query))
        return original(self, query, params, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", recording)
    return sent


@pytest.mark.postgres_only
@pytest.mark.parametrize("batch", [1, 200])  # one round trip; COPY
def test_postgres_ingest_commits_without_waiting_for_the_disk_unless_asked(transactional_db, sent_sql, settings, batch):
    world = make_world()
    c, run, _ = _setup(world)
    path = f"/api/runs/{run}/metrics/"
    step = iter(range(10**6))

    def ingest(query=""):
        sent_sql.clear()
        points = [{"key": "loss", "step": next(step), "value": 0.5} for _ in range(batch)]
        r = post(c, path + query, {"points": points})
        assert r.status_code == 201 and r.json() == {"points": batch}
        return any("synchronous_commit TO off" in q for q in sent_sql)

    assert ingest() is True
    assert ingest("?durable=true") is False
    assert ingest("?durable=0") is True
    settings.TRACKER = {**settings.TRACKER, "API_METRICS_SYNCHRONOUS_COMMIT": True}
    assert ingest() is False
    assert ingest("?durable=false") is True
    assert Metric.objects.filter(run__uid=run).count() == 5 * batch
    assert MetricSummary.objects.get(run__uid=run, key="loss").count == 5 * batch


def test_a_failed_one_trip_write_stores_nothing_and_leaves_the_connection_usable(transactional_db):
    from django.db import IntegrityError, connection

    from tracker.services.metrics import DatabaseSink

    world = make_world()
    run = Run.objects.create(project=world.own, name="r")
    missing = run.pk + 1000
    with pytest.raises(Exception) as failed:
        DatabaseSink().write_many([(run.pk, [("a", 1, 1.0, 1.0)], None), (missing, [("a", 1, 1.0, 1.0)], None)],
                                  synchronous=False)
    assert isinstance(failed.value, IntegrityError) or "foreign key" in str(failed.value).lower()
    assert not connection.in_atomic_block
    assert Metric.objects.count() == 0 and MetricSummary.objects.count() == 0
    assert DatabaseSink().write_many([(run.pk, [("a", 1, 1.0, 1.0)], None)], synchronous=False) == [run.pk]
    assert Metric.objects.count() == 1


def test_the_hot_middleware_answers_before_the_chain_and_leaves_the_rest_to_it(db, drf_calls, settings):
    from tracker_api.fastpath import _hot_route

    world = make_world()
    c, run, task = _setup(world)
    path = f"/api/runs/{run}/metrics/"
    _hot_route.cache_clear()
    for step in (1, 2):
        r = post(c, path, {"points": [{"key": "acc", "step": step, "value": 0.5}]})
        assert r.status_code == 201
        # the headers of the middleware it skipped (SecurityMiddleware) are there
        assert r["X-Content-Type-Options"] == "nosniff" and r["Referrer-Policy"] == "same-origin"
    info = _hot_route.cache_info()
    assert (info.misses, info.hits) == (1, 1)  # resolved once, then answered from the cache
    assert drf_calls == []
    assert Metric.objects.filter(run__uid=run).count() == 2

    # a body over the limit, or a Content-Length that is not a count, goes down the chain
    settings.TRACKER = {**settings.TRACKER, "API_MAX_BODY_BYTES": 60}
    r = post(c, path, {"points": [{"key": "acc", "step": 3, "value": 0.5}], "pad": "x" * 80})
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
    r = post(c, path, {"points": []}, CONTENT_LENGTH="-1")
    assert r.status_code == 400 and r.json()["code"] == "bad_content_length"
    settings.TRACKER = {**settings.TRACKER, "API_MAX_BODY_BYTES": 1 << 20}
    # a path that is not a hot route, and one that is no route at all, are the chain's
    r = post(c, "/api/runs/", {"project": "own", "name": "second"})
    assert r.status_code == 201
    r = post(c, "/api/nowhere/", {})
    assert r.status_code == 404
    assert Metric.objects.filter(run__uid=run).count() == 2


@pytest.mark.postgres_only
def test_the_one_statement_check_writes_only_for_whom_the_check_allows(transactional_db):
    """PostgreSQL: the token check and the points are one statement; its SQL guard must let
    through exactly the callers the Python rules let through."""
    from datetime import timedelta

    from django.utils import timezone

    from tracker.models import ApiToken
    from tracker.services.metrics import guarded_write_ctes
    from tracker_api.authentication import GuardedWrite, caller

    world = make_world()
    run = Run.objects.create(project=world.own, name="r")
    other = Run.objects.create(project=world.foreign, name="theirs")
    step = iter(range(10**6))

    def attempt(who, run_uid=run.uid, key=None):
        points = [("acc", next(step), 0.5, 1.0)]
        write = GuardedWrite("editor", lambda runs: guarded_write_ctes(runs, points, 2.0), synchronous=False)
        before = Metric.objects.count()
        found = caller(key or world.keys[who], Run, "uid", run_uid, write=write)
        stored = Metric.objects.count() - before
        assert stored == (1 if found is not None and found.wrote else 0)
        return found, stored

    for who in ("editor", "admin", "root"):  # root: a superuser who is no member
        found, stored = attempt(who)
        assert found.wrote and stored == 1, who
    for who in ("viewer", "annotator", "outsider", "staff"):
        found, stored = attempt(who)
        assert found is not None and not found.wrote and stored == 0, who
    found, stored = attempt("editor", run_uid=other.uid)  # a run of a project they are not in
    assert not found.wrote and stored == 0 and found.role is None
    found, stored = attempt("editor", run_uid="no-such-run")
    assert found.object_pk is None and stored == 0
    assert attempt(None, key="trk_unknown") == (None, 0)
    ApiToken.objects.filter(user=world.users["admin"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert attempt("admin") == (None, 0)
    access.deactivate_user("editor")
    assert attempt("editor") == (None, 0)
    summary = MetricSummary.objects.get(run=run, key="acc")
    assert summary.count == Metric.objects.filter(run=run).count() == 3
    assert not Metric.objects.filter(run=other).exists()
