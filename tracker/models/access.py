"""Who may do what: per-project roles and hashed API tokens."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class ProjectMembership(models.Model):
    class Role(models.TextChoices):
        VIEWER = "viewer"
        ANNOTATOR = "annotator"
        EDITOR = "editor"
        ADMIN = "admin"

    project = models.ForeignKey("tracker.Project", on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tracker_memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "tracker_project_membership"
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="tracker_membership_unique")
        ]


class ApiToken(models.Model):
    """An API token; only its sha256 is stored, the key is shown once at creation."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tracker_tokens")
    name = models.CharField(max_length=200, blank=True, default="")
    prefix = models.CharField(max_length=12, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "tracker_api_token"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})"
