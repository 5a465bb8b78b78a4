"""Users, tokens, projects and memberships."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from tracker.models import ApiToken, Project, ProjectMembership
from tracker.services import access


class UserSerializer(serializers.ModelSerializer):
    # Output only (UserCreateSerializer/UserUpdateSerializer take input). Declared so the schema
    # carries no `pattern`: Django's username regex uses Python's Unicode \w, which OpenAPI
    # validators read as ECMA-262's ASCII \w, so a valid "José" looked like a schema violation.
    username = serializers.CharField(max_length=150, read_only=True)

    class Meta:
        model = get_user_model()
        fields = ["id", "username", "email", "is_active", "is_staff", "is_superuser", "date_joined", "last_login"]
        read_only_fields = ["id", "date_joined", "last_login"]


class UserCreateSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(required=False, allow_blank=True, write_only=True, max_length=4096)
    email = serializers.EmailField(required=False, allow_blank=True, default="")
    is_staff = serializers.BooleanField(required=False, default=False)
    is_superuser = serializers.BooleanField(required=False, default=False)


class UserUpdateSerializer(serializers.Serializer):
    password = serializers.CharField(required=False, allow_blank=True, write_only=True, max_length=4096)
    email = serializers.EmailField(required=False, allow_blank=True)
    is_active = serializers.BooleanField(required=False)
    is_staff = serializers.BooleanField(required=False)
    is_superuser = serializers.BooleanField(required=False)


class TokenSerializer(serializers.ModelSerializer):
    user = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "user", "created_at", "last_used_at", "expires_at"]
        read_only_fields = fields


class TokenCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    expires_in = serializers.FloatField(
        required=False, allow_null=True, default=None, min_value=1, max_value=100 * 365 * 86400,
        help_text="Lifetime in seconds; omit for a token that does not expire.",
    )
    user = serializers.CharField(
        required=False, max_length=150, help_text="Staff only: create the token for this username."
    )


class NewTokenSerializer(TokenSerializer):
    key = serializers.CharField(read_only=True, help_text="The secret; shown only in this response.")

    class Meta(TokenSerializer.Meta):
        fields = [*TokenSerializer.Meta.fields, "key"]
        read_only_fields = fields


class ProjectSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField(help_text="Your role in this project.")
    metadata = serializers.DictField(required=False)

    class Meta:
        model = Project
        fields = ["id", "name", "description", "metadata", "created_at", "role"]
        read_only_fields = ["id", "created_at", "role"]
        # A taken name is the service's Conflict (409), like every other conflict.
        extra_kwargs = {"name": {"validators": []}}

    @extend_schema_field(serializers.ChoiceField(choices=access.ROLES, allow_null=True))
    def get_role(self, obj: Project) -> str | None:
        from tracker_api.permissions import role_in

        return role_in(self.context["request"], obj.pk)


class ProjectUpdateSerializer(ProjectSerializer):
    class Meta(ProjectSerializer.Meta):
        read_only_fields = ["id", "name", "created_at", "role"]


class MembershipSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="name", read_only=True)
    user = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = ProjectMembership
        fields = ["id", "project", "user", "role", "created_at"]
        read_only_fields = fields


class MembershipCreateSerializer(serializers.Serializer):
    project = serializers.CharField(max_length=200, help_text="Project name.")
    user = serializers.CharField(max_length=150, help_text="Username.")
    role = serializers.ChoiceField(choices=access.ROLES)


class MembershipUpdateSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=access.ROLES, required=False)
