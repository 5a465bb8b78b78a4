"""Projects (namespaces) and samples (items of data)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class Project(models.Model):
    """A namespace for samples, datasets, annotation tasks and runs; created on first use."""

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "tracker_project"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


def _media_path(instance: Sample, filename: str) -> str:
    return f"media/{instance.project_id}/{filename}"


class Sample(models.Model):
    """An item of data: ``external_id`` is unique within its project."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="samples")
    external_id = models.CharField(max_length=255)
    data = models.JSONField(default=dict, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # Media stored through Django's storage API, or referenced by URI (never both required).
    media = models.FileField(upload_to=_media_path, max_length=500, blank=True, default="")
    media_uri = models.CharField(max_length=2000, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "tracker_sample"
        constraints = [
            models.UniqueConstraint(
                fields=["project", "external_id"], name="tracker_sample_unique_external_id"
            )
        ]
        indexes = [
            models.Index(fields=["project", "updated_at"], name="tracker_sample_updated"),
            # The annotation queue walks a project's samples in id order and stops at the first
            # free ones; without this it walks every other project's samples too.
            models.Index(fields=["project", "id"], name="tracker_sample_project_order"),
        ]
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.external_id}"
