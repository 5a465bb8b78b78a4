"""Base views: authentication, project scoping and role checks shared by every resource."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework import exceptions as drf
from rest_framework import viewsets
from rest_framework.filters import OrderingFilter
from rest_framework.parsers import JSONParser
from django_filters.rest_framework import DjangoFilterBackend

from tracker.models import Project
from tracker.services import access
from tracker_api import permissions
from tracker_api.authentication import SessionAuthentication, TokenAuthentication
from tracker_api.exceptions import exception_handler
from tracker_api.pagination import CursorPagination


class ApiMixin:
    """What every tracker view uses, set on the class so a host project's DRF defaults do not
    change tracker's behaviour."""

    authentication_classes = [TokenAuthentication, SessionAuthentication]
    permission_classes = [permissions.IsAuthenticated]
    # JSON only: one request format to document, validate and fuzz (uploads are raw bodies).
    parser_classes = [JSONParser]
    # "upload": the view streams its body to disk and may take TRACKER["API_MAX_UPLOAD_BYTES"].
    body_limit = "body"
    # Ids are integers: /api/samples/abc/ is a 404, never a database error.
    lookup_value_regex = r"\d+"

    def get_exception_handler(self) -> Any:
        return exception_handler


class ProjectScopedViewSet(ApiMixin, viewsets.GenericViewSet):
    """A resource that belongs to a project through ``project_field`` (an ORM path).

    ``get_queryset`` keeps only objects of projects where the user holds ``read_role``;
    ``required_role()`` is ``read_role`` for safe methods, ``write_role`` otherwise, unless
    ``action_roles`` names the action.
    """

    permission_classes = [permissions.IsAuthenticated, permissions.ProjectRole]
    pagination_class = CursorPagination
    filter_backends = [DjangoFilterBackend, OrderingFilter]
    project_field = "project"
    read_role = "viewer"
    write_role = "editor"
    action_roles: dict[str, str] = {}
    ordering = ["-id"]

    def required_role(self) -> str:
        if self.action in self.action_roles:
            return self.action_roles[self.action]
        return self.read_role if self.request.method in permissions.SAFE else self.write_role

    def scope(self, qs: QuerySet) -> QuerySet:
        user = self.request.user
        if user.is_superuser:
            return qs
        # A subquery, not a list of ids: no extra query, and it cannot grow with the page.
        ids = access.project_ids_with_role(user, self.read_role)
        return qs.filter(**{f"{self.project_field}__in": ids})

    def get_queryset(self) -> QuerySet:
        return self.scope(super().get_queryset())

    def project_id_of(self, obj: Any) -> int:
        path = self.project_field.split("__")
        for part in path[:-1]:
            obj = getattr(obj, part)
        return getattr(obj, f"{path[-1]}_id")

    def project_for(self, project: Any, role: str | None = None, *, create: bool = False) -> Project:
        """The project named (or numbered) ``project`` if the user holds ``role`` in it.

        With ``create``, a name no project has yet creates the project with the user as its
        admin, as the notebook API creates projects on first use.
        """
        role = role or self.required_role()
        if isinstance(project, Project):
            return access.require_role(self.request.user, project, role, role=permissions.role_in(self.request, project.pk))
        if create and isinstance(project, str) and not Project.objects.filter(name=project.strip()).exists():
            from tracker.exceptions import Conflict

            try:
                created = access.create_project(project, self.request.user)
            except Conflict:
                pass  # created by a concurrent request: check membership below
            else:
                self.request._tracker_roles = None
                return created
        return access.require_role(self.request.user, project, role)

    def paginated(self, qs: QuerySet, serializer_class: Any = None) -> Any:
        page = self.paginate_queryset(qs)
        ser = (serializer_class or self.get_serializer_class())(page, many=True, context=self.get_serializer_context())
        return self.get_paginated_response(ser.data)


def require(condition: bool, message: str) -> None:
    if not condition:
        raise drf.ValidationError(message)


def query_flag(query: Any, name: str, default: bool) -> bool:
    """A boolean query parameter (``?force=true``): true/false, 1/0, yes/no, any case.

    Raises:
        InvalidValue: anything else (answered 400), so a typo never silently means false.
    """
    from tracker.exceptions import InvalidValue

    raw = query.get(name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise InvalidValue(f"{name} must be true or false, not {raw[:40]!r}.")
