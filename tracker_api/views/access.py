"""Users (staff), tokens, projects and memberships."""

from __future__ import annotations

from typing import Any

import django_filters
from django.contrib.auth import get_user_model
from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from tracker.models import ApiToken, Project, ProjectMembership
from tracker.services import access
from tracker_api import permissions
from tracker_api.base import ApiMixin, ProjectScopedViewSet
from tracker_api.pagination import CursorPagination
from tracker_api.serializers import access as s


class UserFilter(django_filters.FilterSet):
    username = django_filters.CharFilter(lookup_expr="exact")
    is_active = django_filters.BooleanFilter()
    is_staff = django_filters.BooleanFilter()

    class Meta:
        model = get_user_model()
        fields = ["username", "is_active", "is_staff"]


@extend_schema(tags=["users"])
class UserViewSet(ApiMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Users. Staff list, create and change them (``PATCH {"is_active": false}`` deactivates);
    anyone reads ``/users/me/``."""

    queryset = get_user_model().objects.all()
    serializer_class = s.UserSerializer
    permission_classes = [permissions.IsAuthenticated, permissions.IsStaff]
    pagination_class = CursorPagination
    filterset_class = UserFilter
    ordering_fields = ["id", "username"]
    ordering = ["id"]

    def get_permissions(self) -> list[Any]:
        if self.action == "me":
            return [permissions.IsAuthenticated()]
        return super().get_permissions()

    @extend_schema(request=s.UserCreateSerializer, responses={201: s.UserSerializer})
    def create(self, request: Any) -> Response:
        data = self._valid(s.UserCreateSerializer)
        user = access.create_user(
            data["username"], password=data.get("password") or None, email=data.get("email", ""),
            is_staff=data["is_staff"], is_superuser=data["is_superuser"],
        )
        return Response(s.UserSerializer(user).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.UserUpdateSerializer, responses=s.UserSerializer)
    def partial_update(self, request: Any, pk: Any = None) -> Response:
        user = self.get_object()
        data = self._valid(s.UserUpdateSerializer)
        if data.get("is_superuser") and not request.user.is_superuser:
            from tracker.exceptions import PermissionDenied

            raise PermissionDenied("Only a superuser can make another user a superuser.")
        if user.pk == request.user.pk and any(k in data for k in ("is_active", "is_staff", "is_superuser")):
            from tracker.exceptions import Conflict

            raise Conflict("You cannot change your own active, staff or superuser flags; ask another staff user.")
        user = access.update_user(user, **data)
        return Response(s.UserSerializer(user).data)

    def http_method_not_allowed(self, request: Any, *args: Any, **kwargs: Any) -> Response:
        # Users are never deleted: their annotations, reviews and runs keep naming them. A DELETE
        # that only deactivated would leave the resource readable, which is not what DELETE means
        # (schemathesis' stateful phase flagged exactly that), so deactivation is a PATCH.
        if request.method == "DELETE":
            from rest_framework.exceptions import MethodNotAllowed

            raise MethodNotAllowed(
                "DELETE",
                detail='Users are not deleted (their annotations and runs keep their author); '
                'deactivate one with PATCH {"is_active": false}.',
            )
        return super().http_method_not_allowed(request, *args, **kwargs)

    @extend_schema(responses=s.UserSerializer)
    @action(detail=False, methods=["get"])
    def me(self, request: Any) -> Response:
        """The user making the request."""
        # Token authentication loads only the columns it checks; read the whole row here.
        return Response(s.UserSerializer(get_user_model().objects.get(pk=request.user.pk)).data)

    def _valid(self, cls: Any) -> dict[str, Any]:
        ser = cls(data=self.request.data)
        ser.is_valid(raise_exception=True)
        return ser.validated_data


@extend_schema(tags=["tokens"])
class TokenViewSet(ApiMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Your API tokens (staff: anyone's). Keys are shown once, at creation; only hashes are kept."""

    queryset = ApiToken.objects.none()  # for the schema; get_queryset picks the rows
    serializer_class = s.TokenSerializer
    pagination_class = CursorPagination
    ordering = ["-id"]
    filter_backends: list[Any] = []

    def get_queryset(self) -> Any:
        qs = ApiToken.objects.select_related("user")
        return qs if self.request.user.is_staff else qs.filter(user=self.request.user)

    @extend_schema(request=s.TokenCreateSerializer, responses={201: s.NewTokenSerializer})
    def create(self, request: Any) -> Response:
        ser = s.TokenCreateSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        data = ser.validated_data
        owner = request.user
        if data.get("user") and data["user"] != request.user.get_username():
            if not request.user.is_staff:
                from tracker.exceptions import PermissionDenied

                raise PermissionDenied("Only staff can create tokens for other users.")
            owner = access.get_user(data["user"])
        token, key = access.create_token(owner, name=data["name"], expires_in=data.get("expires_in"))
        out = s.NewTokenSerializer(token).data
        out["key"] = key
        return Response(out, status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: None})
    def destroy(self, request: Any, pk: Any = None) -> Response:
        """Revoke the token: its key stops working at once."""
        token = self.get_object()
        if token.pk == getattr(request.auth, "pk", None):
            from tracker.exceptions import Conflict

            # Revoking the key a script is using from that same script is nearly always a
            # mistake that locks it out half-way; do it from another token or the CLI.
            raise Conflict("This request is authenticated with that token; revoke it using another token or `tracker token --revoke`.")
        access.revoke_token(token)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ProjectFilter(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="exact")
    name__contains = django_filters.CharFilter(field_name="name", lookup_expr="icontains")

    class Meta:
        model = Project
        fields = ["name"]


@extend_schema(tags=["projects"])
class ProjectViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, ProjectScopedViewSet
):
    """Projects you are a member of. Anyone may create one (and becomes its admin)."""

    queryset = Project.objects.all()
    serializer_class = s.ProjectSerializer
    project_field = "id"
    write_role = "admin"
    filterset_class = ProjectFilter
    ordering_fields = ["id", "name", "created_at"]
    ordering = ["id"]

    def scope(self, qs: Any) -> Any:
        user = self.request.user
        if user.is_superuser:
            return qs
        return qs.filter(id__in=access.project_ids_with_role(user, self.read_role))

    def project_id_of(self, obj: Project) -> int:
        return obj.pk

    @extend_schema(request=s.ProjectSerializer, responses={201: s.ProjectSerializer})
    def create(self, request: Any) -> Response:
        ser = s.ProjectSerializer(data=request.data, context=self.get_serializer_context())
        ser.is_valid(raise_exception=True)
        d = ser.validated_data
        proj = access.create_project(
            d["name"], request.user, description=d.get("description", ""), metadata=d.get("metadata")
        )
        request._tracker_roles = None
        return Response(s.ProjectSerializer(proj, context=self.get_serializer_context()).data, status=201)

    @extend_schema(request=s.ProjectUpdateSerializer, responses=s.ProjectSerializer)
    def partial_update(self, request: Any, pk: Any = None) -> Response:
        proj = self.get_object()
        ser = s.ProjectUpdateSerializer(proj, data=request.data, partial=True, context=self.get_serializer_context())
        ser.is_valid(raise_exception=True)
        ser.save()
        return Response(ser.data)

    def perform_destroy(self, instance: Project) -> None:
        with transaction.atomic():
            instance.delete()


class MembershipFilter(django_filters.FilterSet):
    project = django_filters.CharFilter(field_name="project__name", help_text="Project name.")
    user = django_filters.CharFilter(field_name="user__username", help_text="Username.")
    role = django_filters.ChoiceFilter(choices=ProjectMembership.Role.choices)

    class Meta:
        model = ProjectMembership
        fields = ["project", "user", "role"]


@extend_schema(tags=["projects"])
class MembershipViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectScopedViewSet):
    """Who is in your projects. Project admins add, change and remove members."""

    queryset = ProjectMembership.objects.select_related("project", "user")
    serializer_class = s.MembershipSerializer
    write_role = "admin"
    filterset_class = MembershipFilter
    ordering_fields = ["id", "created_at"]
    ordering = ["id"]

    @extend_schema(request=s.MembershipCreateSerializer, responses={201: s.MembershipSerializer})
    def create(self, request: Any) -> Response:
        ser = s.MembershipCreateSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        d = ser.validated_data
        proj = self.project_for(d["project"], "admin")
        member = access.set_role(proj, d["user"], d["role"])
        return Response(s.MembershipSerializer(member).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.MembershipUpdateSerializer, responses=s.MembershipSerializer)
    def partial_update(self, request: Any, pk: Any = None) -> Response:
        member = self.get_object()
        ser = s.MembershipUpdateSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        if "role" in ser.validated_data:
            member = access.set_role(member.project, member.user, ser.validated_data["role"])
        return Response(s.MembershipSerializer(member).data)

    @extend_schema(responses={204: None})
    def destroy(self, request: Any, pk: Any = None) -> Response:
        member = self.get_object()
        access.remove_member(member.project, member.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
