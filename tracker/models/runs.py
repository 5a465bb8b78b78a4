"""Training runs: params and tags (JSON on the run), step metrics, summaries, artifacts."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone


def new_run_uid() -> str:
    return secrets.token_hex(8)


class Run(models.Model):
    """One training run. ``uid`` is the public id; ``params``/``tags`` are flat JSON dicts."""

    class Status(models.TextChoices):
        RUNNING = "running"
        FINISHED = "finished"
        FAILED = "failed"
        KILLED = "killed"

    uid = models.CharField(max_length=32, unique=True, default=new_run_uid)
    project = models.ForeignKey("tracker.Project", on_delete=models.CASCADE, related_name="runs")
    name = models.CharField(max_length=200, blank=True, default="")
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    # Flattened with dots ("optimizer.lr"); values are JSON.
    params = models.JSONField(default=dict, blank=True)
    tags = models.JSONField(default=dict, blank=True)
    notes = models.TextField(blank=True, default="")
    error = models.TextField(blank=True, default="")  # traceback summary of a failed run
    started_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Seconds without a heartbeat after which the run counts as killed; set by the process
    # that beats (it knows its own cadence), so readers do not have to guess.
    heartbeat_timeout = models.FloatField(null=True, blank=True)
    # Captured environment.
    host = models.CharField(max_length=255, blank=True, default="")
    pid = models.IntegerField(null=True, blank=True)
    git_commit = models.CharField(max_length=64, blank=True, default="")
    git_dirty = models.BooleanField(null=True, blank=True)
    python_version = models.CharField(max_length=64, blank=True, default="")
    packages = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        db_table = "tracker_run"
        indexes = [
            models.Index(fields=["project", "started_at"], name="tracker_run_project_started"),
            models.Index(fields=["project", "status"], name="tracker_run_project_status"),
        ]
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name or self.uid} ({self.status})"


class Metric(models.Model):
    """One logged point. ``value`` NULL means NaN (SQLite cannot store NaN)."""

    id = models.BigAutoField(primary_key=True)
    # No database-level constraint: PostgreSQL would check (and key-share lock) the run once
    # per inserted point, the larger part of its work on a 1000-point batch. Points are only
    # written with their run's summary rows in the same transaction (services/metrics.py), and
    # MetricSummary keeps its constraint, so a point for a missing run still fails at commit
    # and rolls back; Django still cascades when a run is deleted.
    run = models.ForeignKey(
        Run, on_delete=models.CASCADE, related_name="metric_points", db_index=False, db_constraint=False
    )
    key = models.CharField(max_length=250)
    step = models.BigIntegerField()
    value = models.FloatField(null=True)
    timestamp = models.FloatField()  # unix seconds

    class Meta:
        db_table = "tracker_metric"
        indexes = [models.Index(fields=["run", "key", "step"], name="tracker_metric_run_key_step")]


class MetricSummary(models.Model):
    """Per run and key: last value (at the highest step), min, max, count; for fast tables."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="metric_summaries")
    key = models.CharField(max_length=250)
    last = models.FloatField(null=True)
    last_step = models.BigIntegerField()
    min = models.FloatField(null=True)
    max = models.FloatField(null=True)
    count = models.BigIntegerField(default=0)
    updated_at = models.FloatField()

    class Meta:
        db_table = "tracker_metric_summary"
        constraints = [
            models.UniqueConstraint(fields=["run", "key"], name="tracker_metric_summary_run_key")
        ]


class Blob(models.Model):
    """Content-addressed bytes in Django's storage; identical bytes are stored once."""

    sha256 = models.CharField(max_length=64, primary_key=True)
    size = models.BigIntegerField()
    storage_name = models.CharField(max_length=500)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "tracker_blob"


class Artifact(models.Model):
    """A named file of a run, pointing at a blob."""

    class Kind(models.TextChoices):
        FILE = "file"
        DIRECTORY_FILE = "directory-file"
        BYTES = "bytes"
        DATAFRAME = "dataframe"
        FIGURE = "figure"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="artifacts")
    name = models.CharField(max_length=500)
    blob = models.ForeignKey(Blob, on_delete=models.PROTECT, related_name="artifacts")
    kind = models.CharField(max_length=32, choices=Kind.choices, default=Kind.FILE)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "tracker_artifact"
        constraints = [models.UniqueConstraint(fields=["run", "name"], name="tracker_artifact_run_name")]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
