"""Datasets, versions and sample imports."""

from __future__ import annotations

from rest_framework import serializers

from tracker.models import Dataset, DatasetVersion


class DatasetSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="name", read_only=True)
    latest_version = serializers.IntegerField(read_only=True, allow_null=True)

    class Meta:
        model = Dataset
        fields = ["id", "project", "name", "description", "created_at", "latest_version"]
        read_only_fields = fields


class VersionSerializer(serializers.ModelSerializer):
    project = serializers.CharField(source="dataset.project.name", read_only=True)
    name = serializers.CharField(source="dataset.name", read_only=True)
    counts = serializers.DictField(source="split_counts", child=serializers.IntegerField(), read_only=True)
    splits = serializers.DictField(child=serializers.FloatField(), read_only=True)
    schema = serializers.DictField(read_only=True)
    snapshot_sha256 = serializers.CharField(source="snapshot.sha256", read_only=True, allow_null=True, default=None)
    snapshot_size = serializers.IntegerField(source="snapshot.size", read_only=True, allow_null=True, default=None)

    class Meta:
        model = DatasetVersion
        fields = [
            "id", "project", "name", "version", "content_hash", "description", "splits", "seed",
            "stratify_by", "sample_count", "counts", "schema", "created_at", "snapshot_sha256",
            "snapshot_size",
        ]
        read_only_fields = fields


class VersionCreateSerializer(serializers.Serializer):
    project = serializers.CharField(max_length=200)
    name = serializers.CharField(max_length=200, help_text="Dataset name; the next version is made.")
    external_ids = serializers.ListField(
        child=serializers.CharField(max_length=255), required=False, allow_null=True, default=None,
        help_text="The samples to freeze; omit for every sample of the project.",
    )
    splits = serializers.DictField(child=serializers.FloatField(), required=False, allow_null=True, default=None)
    seed = serializers.IntegerField(required=False, default=0, min_value=-(2**31), max_value=2**31 - 1)
    stratify_by = serializers.CharField(required=False, allow_null=True, default=None, max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="")


class RowErrorSerializer(serializers.Serializer):
    row = serializers.IntegerField()
    where = serializers.CharField()
    id = serializers.CharField(allow_null=True)
    reason = serializers.CharField()


class ImportReportSerializer(serializers.Serializer):
    project = serializers.CharField()
    source = serializers.CharField()
    rows = serializers.IntegerField()
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    merged = serializers.IntegerField()
    bad = serializers.IntegerField()
    stored = serializers.BooleanField()
    seconds = serializers.FloatField()
    errors = RowErrorSerializer(many=True)


class DiffSerializer(serializers.Serializer):
    """What changed from one version to another, by sample id (``tracker.DatasetDiff``)."""

    old = serializers.CharField(help_text="The version compared from, as 'name vN'.")
    new = serializers.CharField(help_text="The version compared to.")
    added = serializers.ListField(child=serializers.CharField(), help_text="In new, not in old.")
    removed = serializers.ListField(child=serializers.CharField(), help_text="In old, not in new.")
    changed = serializers.ListField(child=serializers.CharField(), help_text="Data, metadata, media or labels differ.")
    moved = serializers.ListField(child=serializers.CharField(), help_text="In another split.")
    unchanged = serializers.IntegerField()


class VersionUseSerializer(serializers.Serializer):
    """A run that used a dataset version (``RunInput``: lineage)."""

    run = serializers.CharField(help_text="The run's id.")
    context = serializers.CharField(help_text="How it used the version: 'train', 'eval', ...")
    created_at = serializers.DateTimeField()
