"""Every endpoint x every role x own/foreign project: 401 anonymous, 404 outside, 403 too low."""

from __future__ import annotations

import json
from typing import Any

import pytest

from api_support import ROLES, make_world
from matrix import ENDPOINTS, Endpoint, setup_objects
from tracker.services.access import RANK

WHO = ("anonymous", "outsider", *ROLES)
SIDES = ("own", "foreign")


def expected(ep: Endpoint, who: str, side: str) -> int:
    if who == "anonymous":
        return 401
    if ep.kind == "global":
        if ep.role == "staff":
            return ep.ok if who in {"staff", "root"} else 403
        return ep.ok
    member = who in ROLES and side == "own"
    if ep.kind == "list":
        return 200
    if not member:
        return 404
    return ep.ok if RANK[who] >= RANK[ep.role] else 403


def _call(client, ep: Endpoint, objs: dict, world) -> object:
    path = ep.path
    if "{id}" in path:
        path = path.replace("{id}", str(objs[ep.obj]))
    for param, key in ep.params.items():
        path = path.replace("{" + param + "}", str(objs[key]))
    if ep.query:
        path += "?" + ep.query(objs)
    kwargs = {}
    if ep.raw is not None:
        kwargs = {"data": ep.raw, "content_type": "application/octet-stream"}
    elif ep.body is not None:
        kwargs = {"data": json.dumps(ep.body(objs)), "content_type": "application/json"}
    return getattr(client, ep.method.lower())(path, **kwargs)


def _json(response: Any) -> Any:
    if not response.get("Content-Type", "").startswith("application/json"):
        return None
    if response.streaming:  # streamed exports (Label Studio JSON)
        return json.loads(b"".join(response.streaming_content))
    return response.json()


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("ep", [e for e in ENDPOINTS if e.kind != "global"], ids=lambda e: e.id)
def test_project_endpoint(db, ep: Endpoint, who: str, side: str) -> None:
    world = make_world()
    objs = setup_objects(world.own if side == "own" else world.foreign, side)
    setup_objects(world.foreign if side == "own" else world.own, "other")
    response = _call(world.client(None if who == "anonymous" else who), ep, objs, world)
    want = expected(ep, who, side)
    assert response.status_code == want, (response.status_code, response.content[:500])
    body = _json(response)
    if want >= 400:
        assert set(body) >= {"detail", "code"}, body
    if want == 404 and ep.kind == "object":
        # Nothing in the answer tells a hidden object from a missing one.
        assert "foreign" not in json.dumps(body)
    if ep.kind == "list" and want == 200:
        results = body["results"]
        if who in ROLES and side == "own":
            assert results, "a member sees the objects of their project"
        else:
            assert results == [], "no object of a project the user is not in"


@pytest.mark.parametrize("who", WHO + ("staff", "root"))
@pytest.mark.parametrize("ep", [e for e in ENDPOINTS if e.kind == "global"], ids=lambda e: e.id)
def test_global_endpoint(db, ep: Endpoint, who: str) -> None:
    from tracker.services import access

    world = make_world()
    target = access.create_user("target")
    objs = {"user": target.pk}
    if who != "anonymous":
        objs["own_token"] = access.create_token(world.users[who], name="spare")[0].pk
    else:
        objs["own_token"] = access.create_token(target, name="spare")[0].pk
    response = _call(world.client(None if who == "anonymous" else who), ep, objs, world)
    want = expected(ep, who, "own")
    assert response.status_code == want, (response.status_code, response.content[:500])


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("ep", [e for e in ENDPOINTS if e.kind != "global"], ids=lambda e: e.id)
def test_superuser_reaches_every_project(db, ep: Endpoint, side: str) -> None:
    world = make_world()
    objs = setup_objects(world.own if side == "own" else world.foreign, side)
    response = _call(world.client("root"), ep, objs, world)
    assert response.status_code == ep.ok, (response.status_code, response.content[:500])


def test_tokens_of_others_are_invisible(db) -> None:
    from tracker.services import access

    world = make_world()
    theirs = access.create_token(world.users["admin"], name="theirs")[0]
    client = world.client("viewer")
    assert client.get(f"/api/tokens/{theirs.pk}/").status_code == 404
    assert client.delete(f"/api/tokens/{theirs.pk}/").status_code == 404
    listed = client.get("/api/tokens/").json()["results"]
    assert {t["user"] for t in listed} == {"viewer"}
    # staff see and revoke anyone's
    assert world.client("staff").delete(f"/api/tokens/{theirs.pk}/").status_code == 204


def test_table_covers_every_route_of_the_schema(db) -> None:
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    routes = {
        f"{method.upper()} {path}"
        for path, ops in schema["paths"].items()
        for method in ops
        if method in {"get", "post", "put", "patch", "delete"}
    }
    covered = {e.id for e in ENDPOINTS}
    assert routes - covered == set(), "endpoints missing from the permission matrix"
    assert covered - routes == set(), "matrix rows for routes the schema does not list"
