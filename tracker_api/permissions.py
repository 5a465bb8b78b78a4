"""Per-project roles on every endpoint: viewer < annotator < editor < admin.

Views declare the lowest role each action needs; querysets only ever hold objects of projects
the user is a member of, so objects elsewhere answer 404 (not 403), through any filter,
ordering or nested route. A visible object with too low a role answers 403.
"""

from __future__ import annotations

from typing import Any

from rest_framework import permissions

from tracker.services import access

SAFE = permissions.SAFE_METHODS


def roles(request: Any) -> dict[int, str]:
    """``{project_id: role}`` for the request's user, fetched once per request."""
    cached = getattr(request, "_tracker_roles", None)
    if cached is None:
        cached = access.memberships(request.user)
        request._tracker_roles = cached
    return cached


def role_in(request: Any, project_id: int) -> str | None:
    user = request.user
    if not user or not user.is_authenticated:
        return None
    if user.is_superuser:
        return "admin"
    return roles(request).get(project_id)


class IsAuthenticated(permissions.IsAuthenticated):
    """Every endpoint: anonymous requests get 401 with a WWW-Authenticate header."""

    message = "Authentication required: send `Authorization: Bearer <token>` (see `tracker token`)."


class IsStaff(permissions.BasePermission):
    """User management: staff only."""

    message = "Only staff users can manage users."

    def has_permission(self, request: Any, view: Any) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.is_staff)


class ProjectRole(permissions.BasePermission):
    """The role the view's ``required_role()`` names, in the object's project."""

    def has_object_permission(self, request: Any, view: Any, obj: Any) -> bool:
        need = view.required_role()
        have = role_in(request, view.project_id_of(obj))
        if access.has_role(have, need):
            return True
        self.message = (
            f"This needs the {need} role in the project; you are {have or 'not a member'}. "
            f"Ask a project admin to raise your role."
        )
        return False
