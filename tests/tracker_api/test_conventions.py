"""Authentication, error bodies, the 413 limit, pagination and filtering, on the real stack."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from api_support import make_world
from tracker.models import ApiToken, Project, Sample
from tracker.services import access


def post(client, path, body, **extra):
    return client.post(path, data=json.dumps(body), content_type="application/json", **extra)


def test_anonymous_gets_401_with_challenge(db):
    from rest_framework.test import APIClient

    r = APIClient().get("/api/samples/")
    assert r.status_code == 401
    assert r["WWW-Authenticate"].startswith("Bearer")
    assert r.json()["code"] == "not_authenticated"


def test_tokens_are_stored_hashed_and_stop_working_when_revoked_or_expired(db):
    world = make_world()
    key = world.keys["viewer"]
    row = ApiToken.objects.get(user=world.users["viewer"])
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in json.dumps(list(ApiToken.objects.values()), default=str)
    client = world.client("viewer")
    assert client.get("/api/projects/").status_code == 200
    assert ApiToken.objects.get(pk=row.pk).last_used_at is not None

    access.revoke_token(key[:12])
    r = client.get("/api/projects/")
    assert r.status_code == 401 and "revoked" in r.json()["detail"]

    token, key2 = access.create_token(world.users["viewer"], expires_in=60)
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key2}")
    assert client.get("/api/projects/").status_code == 401

    _, key3 = access.create_token(world.users["viewer"])
    client.credentials(HTTP_AUTHORIZATION=f"Token {key3}")
    assert client.get("/api/projects/").status_code == 200
    access.deactivate_user("viewer")
    assert client.get("/api/projects/").status_code == 401


def test_malformed_authorization_headers_get_401(db):
    from rest_framework.test import APIClient

    for header in ("Bearer", "Bearer a b", "Bearer trk_nope", "Bearer " + "x" * 500):
        c = APIClient()
        c.credentials(HTTP_AUTHORIZATION=header)
        r = c.get("/api/projects/")
        assert r.status_code == 401, header
        assert "detail" in r.json()


def test_session_login_works_and_is_csrf_checked(db):
    from rest_framework.test import APIClient

    access.create_user("sess", password="pw-123456")
    c = APIClient(enforce_csrf_checks=True)
    assert c.login(username="sess", password="pw-123456")
    assert c.get("/api/users/me/").json()["username"] == "sess"
    r = post(c, "/api/projects/", {"name": "by-session"})
    assert r.status_code == 403 and "CSRF" in r.json()["detail"]
    assert not Project.objects.filter(name="by-session").exists()


def test_validation_errors_have_field_messages(db):
    world = make_world()
    r = post(world.client("admin"), "/api/projects/", {"metadata": [1]})
    assert r.status_code == 400
    body = r.json()
    assert body["code"] == "invalid"
    assert set(body["fields"]) == {"name", "metadata"}
    assert body["detail"].startswith("Invalid input.")


def test_tracker_errors_map_to_http_and_store_nothing(db):
    world = make_world()
    c = world.client("editor")
    r = post(c, "/api/samples/", {"project": "own", "records": [{"id": "a"}, {"id": "a"}]})
    assert r.status_code == 400
    assert "repeats the id 'a'" in r.json()["detail"] and r.json()["code"] == "import_rejected"
    r = post(c, "/api/samples/", {"project": "own", "records": [{"id": "ok"}, "not a dict"]})
    assert r.status_code == 400 and "row 1" in r.json()["detail"]
    assert [e["row"] for e in r.json()["report"]["errors"]] == [1]
    assert not Sample.objects.filter(project=world.own).exists()
    # A name that is taken answers 409.
    r = post(c, "/api/projects/", {"name": "foreign"})
    assert r.status_code == 409 and r.json()["code"] == "conflict"
    # The last admin cannot leave.
    admin_member = world.own.memberships.get(user=world.users["admin"])
    r = world.client("admin").delete(f"/api/memberships/{admin_member.pk}/")
    assert r.status_code == 409 and "last admin" in r.json()["detail"]


@pytest.mark.postgres_only
def test_values_postgres_cannot_store_are_400(db):
    world = make_world()
    r = post(world.client("editor"), "/api/samples/", {"project": "own", "records": [{"id": "z", "t": "a\u0000b"}]})
    assert r.status_code == 400, r.content
    assert "cannot store" in r.json()["detail"] or "NUL" in r.json()["detail"] or "\\x00" in r.json()["detail"]
    # found by schemathesis: a NUL in a nested key reached PostgreSQL through COPY
    r = post(world.client("editor"), "/api/samples/", {"project": "own", "records": [{"id": "k", "a": {"x\u0000y": 1}}]})
    assert r.status_code == 400, r.content
    assert not Sample.objects.filter(project=world.own).exists()


def test_oversized_bodies_get_413_and_store_nothing(db, settings):
    settings.TRACKER = {**settings.TRACKER, "API_MAX_BODY_BYTES": 2000}
    world = make_world()
    records = [{"id": str(i), "text": "x" * 50} for i in range(100)]
    r = post(world.client("editor"), "/api/samples/", {"project": "own", "records": records})
    assert r.status_code == 413
    body = r.json()
    assert body["code"] == "payload_too_large"
    assert "at most 2.0 KiB" in body["detail"] and "Split" in body["detail"]
    assert not Sample.objects.exists()
    r = post(world.client("editor"), "/api/samples/", {"project": "own", "records": records[:5]})
    assert r.status_code == 201


def test_bad_content_length_is_400(db):
    world = make_world()
    r = world.client("editor").generic("POST", "/api/samples/", b"{}", content_type="application/json", CONTENT_LENGTH="abc")
    assert r.status_code == 400 and r.json()["code"] == "bad_content_length"


def test_cursor_pagination_walks_everything_once_in_order(db):
    world = make_world()
    post(world.client("editor"), "/api/samples/", {"project": "own", "records": [{"id": f"{i:03}"} for i in range(250)]})
    c = world.client("viewer")
    seen, url, pages = [], "/api/samples/?project=own&page_size=100", 0
    while url:
        body = c.get(url).json()
        seen += [r["external_id"] for r in body["results"]]
        url, pages = body["next"], pages + 1
    assert pages == 3
    assert seen == [f"{i:03}" for i in range(250)]
    desc = c.get("/api/samples/?project=own&page_size=5&ordering=-id").json()["results"]
    assert [r["external_id"] for r in desc] == ["249", "248", "247", "246", "245"]
    one = c.get("/api/samples/?external_id=007").json()["results"]
    assert [r["external_id"] for r in one] == ["007"]
    r = c.get("/api/samples/?page_size=100000")
    assert len(r.json()["results"]) == 250  # capped at API_MAX_PAGE_SIZE (1000), not refused


def test_filters_and_ordering_cannot_reach_other_projects(db):
    world = make_world()
    post(world.client("foreign-admin"), "/api/samples/", {"project": "foreign", "records": [{"id": "secret"}]})
    c = world.client("admin")
    for query in ("project=foreign", "external_id=secret", "ordering=-updated_at", "ordering=project",
                  "project__name=foreign", "id=1", f"updated_after=2000-01-01T00:00:00Z"):
        r = c.get(f"/api/samples/?{query}")
        assert r.status_code == 200, query
        assert "secret" not in r.content.decode(), query
    secret = Sample.objects.get(external_id="secret")
    assert c.get(f"/api/samples/{secret.pk}/").status_code == 404
    assert c.get("/api/memberships/?project=foreign").json()["results"] == []
    assert c.get(f"/api/projects/{world.foreign.pk}/").status_code == 404


LISTS = [
    "/api/samples/?project=own", "/api/projects/", "/api/memberships/", "/api/tokens/", "/api/users/",
    "/api/datasets/", "/api/dataset-versions/", "/api/tasks/", "/api/annotations/", "/api/predictions/",
]


@pytest.mark.parametrize("path", LISTS)
def test_list_queries_do_not_grow_with_page_size(db, path):
    world = make_world()
    from tracker.services.samples import add_samples

    from tracker.services.datasets import create_dataset
    from tracker.services.labeling import add_predictions, annotate, define_task

    samples = add_samples(world.own, [{"id": str(i)} for i in range(60)])
    task = define_task(world.own, "t", "classification", ["a", "b"])
    for i in range(30):
        define_task(world.own, f"t{i}", "text")
        annotate(samples[i], task, "a", annotator=f"ann{i % 3}")
        create_dataset(f"d{i}", Sample.objects.filter(pk__lte=samples[i].pk), project=world.own, progress=False)
    add_predictions(world.own, task, [{"external_id": str(i), "value": "b"} for i in range(30)])
    for i in range(30):
        p = Project.objects.create(name=f"p{i}")
        access.set_role(p, world.users["staff"], "viewer")
        access.set_role(p, access.create_user(f"u{i}"), "viewer")
        access.create_token(world.users["staff"], name=str(i))
    access.set_role(world.own, world.users["staff"], "viewer")
    counts = {}
    client = world.client("staff")
    client.get("/api/users/me/")  # the token's first use writes last_used_at; not a list cost
    for size in (2, 25):
        with CaptureQueriesContext(connection) as ctx:
            r = client.get(f"{path}{'&' if '?' in path else '?'}page_size={size}")
        assert r.status_code == 200
        assert len(r.json()["results"]) == size
        counts[size] = len(ctx.captured_queries)
    assert counts[2] == counts[25], counts
    assert counts[2] <= 5, counts


def test_unknown_api_path_is_json_404(db):
    world = make_world()
    r = world.client("viewer").get("/api/no-such-thing/")
    assert r.status_code == 404 and r.json()["code"] == "not_found"


def test_schema_and_docs_are_served(db):
    from rest_framework.test import APIClient

    c = APIClient()
    schema = c.get("/api/schema/?format=json")
    assert schema.status_code == 200
    doc = json.loads(schema.content)
    assert doc["openapi"].startswith("3.")
    assert "/api/samples/" in doc["paths"]
    assert {"tokenAuth", "cookieAuth"} <= set(doc["components"]["securitySchemes"])
    assert c.get("/api/docs/").status_code == 200


def test_inputs_the_fuzzer_found_are_client_errors(db):
    """Regressions from schemathesis runs: each once answered 500."""
    from tracker.services.labeling import define_task

    world = make_world()
    c = world.client("editor")
    r = c.options("/api/samples/import/?project=own&file_format=csv")
    assert r.status_code == 200
    r = c.generic("POST", "/api/samples/import/?project=own&file_format=jsonl", b"\x89PNG\r\n\x1a\n\x00",
                  content_type="application/octet-stream")
    assert r.status_code == 400 and "not UTF-8" in r.json()["detail"], r.content
    assert not Sample.objects.filter(project=world.own).exists()
    task = define_task(world.own, "t", "classification", ["a", "b"])
    r = post(c, f"/api/tasks/{task.pk}/release/", {"samples": [2**80, "Dd"]})
    assert r.status_code == 400 and "samples" in r.json()["fields"]
    r = c.get(f"/api/samples/{2**80}/")
    assert r.status_code in (400, 404)
    r = c.get(f"/api/annotations/?task={2**80}")
    assert r.status_code in (200, 400)


def test_staff_deactivate_users_with_patch_and_delete_says_how(db):
    world = make_world()
    staff = world.client("staff")
    viewer = world.client("viewer")
    vid = world.users["viewer"].pk
    assert viewer.get("/api/projects/").status_code == 200

    r = staff.delete(f"/api/users/{vid}/")
    assert r.status_code == 405
    assert "is_active" in r.json()["detail"] and "PATCH" in r.json()["detail"]
    assert viewer.get("/api/projects/").status_code == 200  # nothing happened

    r = staff.patch(f"/api/users/{vid}/", data={"is_active": False}, format="json")
    assert r.status_code == 200 and r.json()["is_active"] is False
    assert viewer.get("/api/projects/").status_code == 401
    assert staff.get(f"/api/users/{vid}/").json()["is_active"] is False

    r = staff.patch(f"/api/users/{world.users['staff'].pk}/", data={"is_active": False}, format="json")
    assert r.status_code == 409 and "ask another staff user" in r.json()["detail"]
    r = staff.patch(f"/api/users/{vid}/", data={"is_superuser": True}, format="json")
    assert r.status_code == 403 and "superuser" in r.json()["detail"]
    r = staff.patch(f"/api/users/{vid}/", data={"is_active": True}, format="json")
    assert r.status_code == 200
    assert viewer.get("/api/projects/").status_code == 200
