"""Immutable, versioned datasets built from samples, and run lineage."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Dataset(models.Model):
    project = models.ForeignKey("tracker.Project", on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "tracker_dataset"
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="tracker_dataset_name")]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class DatasetVersion(models.Model):
    """Version N of a dataset: frozen membership, splits, sample data and labels.

    The frozen rows live in a Parquet snapshot (a :class:`~tracker.models.Blob`); membership is
    also kept as :class:`DatasetItem` rows for queries. A version is visible only once
    ``state`` is ``ready``, so a crash mid-creation never leaves a half-made version.
    """

    class State(models.TextChoices):
        BUILDING = "building"
        READY = "ready"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.BUILDING)
    content_hash = models.CharField(max_length=64, blank=True, default="")
    description = models.TextField(blank=True, default="")
    splits = models.JSONField(default=dict, blank=True)  # {"train": 0.8, ...}
    seed = models.IntegerField(default=0)
    stratify_by = models.CharField(max_length=200, blank=True, default="")
    sample_count = models.BigIntegerField(default=0)
    split_counts = models.JSONField(default=dict, blank=True)
    schema = models.JSONField(default=dict, blank=True)
    snapshot = models.ForeignKey(
        "tracker.Blob", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        db_table = "tracker_dataset_version"
        constraints = [
            models.UniqueConstraint(fields=["dataset", "version"], name="tracker_dataset_version_n")
        ]
        ordering = ["dataset", "version"]

    def __str__(self) -> str:
        return f"{self.dataset.name} v{self.version}"


class DatasetItem(models.Model):
    """Membership of one sample in one version (the data itself is in the snapshot)."""

    id = models.BigAutoField(primary_key=True)
    # No database-level constraints on these two: a version inserts a million rows at once,
    # and PostgreSQL would check (and row-lock) the sample and the version once per row.
    # Django still applies CASCADE and SET_NULL when versions and samples are deleted.
    # db_index=False: the (version, split) index below serves lookups by version as well.
    version = models.ForeignKey(
        DatasetVersion,
        on_delete=models.CASCADE,
        related_name="items",
        db_constraint=False,
        db_index=False,
    )
    # Kept after the sample is deleted: the version must still say what it held.
    sample = models.ForeignKey(
        "tracker.Sample",
        null=True,
        on_delete=models.SET_NULL,
        related_name="dataset_items",
        db_constraint=False,
    )
    external_id = models.CharField(max_length=255)
    split = models.CharField(max_length=64, blank=True, default="")
    row_hash = models.CharField(max_length=32)

    class Meta:
        db_table = "tracker_dataset_item"
        indexes = [models.Index(fields=["version", "split"], name="tracker_dataset_item_split")]


class RunInput(models.Model):
    """Lineage: a run used a dataset version in a context ("train", "eval", ...)."""

    run = models.ForeignKey("tracker.Run", on_delete=models.CASCADE, related_name="inputs")
    version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, related_name="run_inputs")
    context = models.CharField(max_length=64, default="train")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "tracker_run_input"
        constraints = [
            models.UniqueConstraint(fields=["run", "version", "context"], name="tracker_run_input_unique")
        ]
