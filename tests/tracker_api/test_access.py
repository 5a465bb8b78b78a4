"""tracker.services.access: users, tokens, roles (the core behind the API and the CLI)."""

from __future__ import annotations

import pytest

from tracker.exceptions import Conflict, InvalidValue, NotFound, PermissionDenied, ProjectNotFound
from tracker.models import ApiToken, Project
from tracker.services import access


def test_users_and_tokens(db):
    u = access.create_user("ann", password="secret-pw", email="a@x.org")
    assert u.check_password("secret-pw")
    token_only = access.create_user("bot")
    assert not token_only.has_usable_password()
    with pytest.raises(Conflict, match="already exists"):
        access.create_user("ann")
    with pytest.raises(InvalidValue):
        access.create_user("  ")
    token, key = access.create_token("ann", name="laptop")
    assert key.startswith("trk_") and token.prefix == key[:12]
    assert access.authenticate_token(key)[0] == u
    assert access.authenticate_token(key + "x") is None
    assert access.authenticate_token("") is None
    with pytest.raises(InvalidValue):
        access.create_token(u, expires_in=-5)
    with pytest.raises(NotFound):
        access.create_token("nobody")
    with pytest.raises(NotFound):
        access.revoke_token(token.pk, user="bot")  # not bot's token
    access.revoke_token(key, user="ann")
    assert not ApiToken.objects.exists()
    assert access.authenticate_token(key) is None


def test_roles_and_checks(db):
    p = Project.objects.create(name="p")
    ann, bob, root = access.create_user("ann"), access.create_user("bob"), access.create_user("root", is_superuser=True)
    access.set_role(p, ann, "admin")
    access.set_role(p, bob, "viewer")
    assert access.role_of(bob, p) == "viewer" and access.role_of(root, p) == "admin"
    assert access.require_role(bob, "p", "viewer") == p
    with pytest.raises(PermissionDenied, match="editor role"):
        access.require_role(bob, "p", "editor")
    outsider = access.create_user("eve")
    with pytest.raises(ProjectNotFound) as hidden:
        access.require_role(outsider, "p", "viewer")
    with pytest.raises(ProjectNotFound) as absent:
        access.require_role(outsider, "nope", "viewer")
    # the same sentence for a hidden and a missing project, but for the name asked about
    assert str(hidden.value).replace("'p'", "X") == str(absent.value).replace("'nope'", "X")
    assert list(access.visible_projects(outsider)) == []
    assert list(access.visible_projects(bob)) == [p]
    assert list(access.visible_projects(bob, "editor")) == []
    with pytest.raises(Conflict, match="last admin"):
        access.set_role(p, ann, "viewer")
    with pytest.raises(Conflict, match="last admin"):
        access.remove_member(p, ann)
    access.set_role(p, bob, "admin")
    access.set_role(p, ann, "viewer")  # now allowed: bob is admin
    access.remove_member(p, ann)
    assert access.role_of(ann, p) is None
    with pytest.raises(InvalidValue, match="Unknown role"):
        access.set_role(p, ann, "owner")


def test_create_project_makes_creator_admin(db):
    u = access.create_user("ann")
    p = access.create_project("new", u, description="d")
    assert access.role_of(u, p) == "admin"
    with pytest.raises(Conflict, match="taken"):
        access.create_project("new", u)
