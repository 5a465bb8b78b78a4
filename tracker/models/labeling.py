"""Annotation: label schemas (tasks), annotations with history and review, predictions, claims."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class AnnotationTask(models.Model):
    """A label schema over a project's samples."""

    class Kind(models.TextChoices):
        CLASSIFICATION = "classification"
        MULTILABEL = "multilabel"
        SPANS = "spans"
        BOXES = "boxes"
        TEXT = "text"
        RATING = "rating"

    project = models.ForeignKey(
        "tracker.Project", on_delete=models.CASCADE, related_name="annotation_tasks"
    )
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    labels = models.JSONField(default=list, blank=True)
    # Kind-specific options: text_field (spans), image size fields (boxes), min/max (rating),
    # annotators_per_sample (agreement), instructions.
    config = models.JSONField(default=dict, blank=True)
    schema_version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "tracker_annotation_task"
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="tracker_annotation_task_name")
        ]
        ordering = ["project", "name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"


class Annotation(models.Model):
    """One annotator's current value for one sample under one task; changes go to the history."""

    class Status(models.TextChoices):
        SUBMITTED = "submitted"
        ACCEPTED = "accepted"
        REJECTED = "rejected"

    task = models.ForeignKey(AnnotationTask, on_delete=models.CASCADE, related_name="annotations")
    sample = models.ForeignKey("tracker.Sample", on_delete=models.CASCADE, related_name="annotations")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="tracker_annotations"
    )
    value = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SUBMITTED)
    review_comment = models.TextField(blank=True, default="")
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    prediction = models.ForeignKey(
        "tracker.Prediction", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "tracker_annotation"
        constraints = [
            models.UniqueConstraint(
                fields=["task", "sample", "annotator"], name="tracker_annotation_unique"
            )
        ]
        indexes = [models.Index(fields=["task", "status"], name="tracker_annotation_status")]


class AnnotationEvent(models.Model):
    """History: who changed an annotation, when, from what to what."""

    annotation = models.ForeignKey(Annotation, on_delete=models.CASCADE, related_name="events")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    at = models.DateTimeField(default=timezone.now)
    action = models.CharField(max_length=32)  # created, changed, accepted, rejected, ...
    old_value = models.JSONField(null=True, blank=True)
    new_value = models.JSONField(null=True, blank=True)
    old_status = models.CharField(max_length=16, blank=True, default="")
    new_status = models.CharField(max_length=16, blank=True, default="")
    comment = models.TextField(blank=True, default="")

    class Meta:
        db_table = "tracker_annotation_event"
        ordering = ["at", "id"]


class Prediction(models.Model):
    """A pre-annotation from a model, optionally linked to the run that produced it."""

    task = models.ForeignKey(AnnotationTask, on_delete=models.CASCADE, related_name="predictions")
    sample = models.ForeignKey("tracker.Sample", on_delete=models.CASCADE, related_name="predictions")
    value = models.JSONField()
    score = models.FloatField(null=True, blank=True)
    model_version = models.CharField(max_length=200, blank=True, default="")
    run = models.ForeignKey(
        "tracker.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="predictions"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "tracker_prediction"
        indexes = [models.Index(fields=["task", "sample"], name="tracker_prediction_sample")]


class Claim(models.Model):
    """An annotator's exclusive, expiring hold on a sample in a task's queue."""

    task = models.ForeignKey(AnnotationTask, on_delete=models.CASCADE, related_name="claims")
    sample = models.ForeignKey("tracker.Sample", on_delete=models.CASCADE, related_name="claims")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tracker_claims"
    )
    claimed_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()

    class Meta:
        db_table = "tracker_claim"
        constraints = [
            models.UniqueConstraint(fields=["task", "sample"], name="tracker_claim_unique")
        ]
        indexes = [models.Index(fields=["task", "expires_at"], name="tracker_claim_expiry")]
