"""Runs, metric points and artifacts."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from tracker.models import Artifact, Run

FINAL_STATUSES = ["finished", "failed", "killed"]


class RunSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="uid", read_only=True, help_text="The run's public id (uid).")
    project = serializers.SlugRelatedField(slug_field="name", read_only=True)
    parent = serializers.SlugRelatedField(slug_field="uid", read_only=True, allow_null=True)
    params = serializers.DictField(read_only=True)
    tags = serializers.DictField(read_only=True)
    packages = serializers.DictField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = Run
        fields = [
            "id", "project", "name", "parent", "status", "params", "tags", "notes", "error",
            "started_at", "ended_at", "heartbeat_at", "host", "pid", "git_commit", "git_dirty",
            "python_version", "packages",
        ]
        read_only_fields = fields


class RunCreateSerializer(serializers.Serializer):
    project = serializers.CharField(max_length=200, help_text="Project name; created on first use.")
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    params = serializers.DictField(required=False, default=dict)
    tags = serializers.DictField(required=False, default=dict)
    notes = serializers.CharField(required=False, allow_blank=True, default="")
    parent = serializers.CharField(required=False, allow_null=True, default=None, max_length=32, help_text="Parent run id.")
    # The client's environment: a run records where it ran, not where the server is.
    host = serializers.CharField(required=False, allow_blank=True, default="", max_length=255)
    pid = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=0, max_value=2**31 - 1)
    git_commit = serializers.CharField(required=False, allow_blank=True, default="", max_length=64)
    git_dirty = serializers.BooleanField(required=False, allow_null=True, default=None)
    python_version = serializers.CharField(required=False, allow_blank=True, default="", max_length=64)
    packages = serializers.DictField(child=serializers.CharField(max_length=200), required=False, default=dict)
    heartbeat_timeout = serializers.FloatField(
        required=False, allow_null=True, default=None, min_value=1, max_value=7 * 86400,
        help_text="Seconds without a heartbeat after which the run reads as killed; null: never.",
    )


class FinishSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=FINAL_STATUSES, default="finished")
    error = serializers.CharField(required=False, allow_blank=True, default="", max_length=100_000)


class ParamsSerializer(serializers.Serializer):
    params = serializers.DictField()


class TagsSerializer(serializers.Serializer):
    tags = serializers.DictField(help_text="A null value removes the tag.")


class MapSerializer(serializers.Serializer):
    """The run's params or tags after the change."""

    values = serializers.DictField()


@extend_schema_field({
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "key": {"type": "string"},
            "step": {"type": "integer"},
            "value": {"oneOf": [{"type": "number"}, {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}],
                      "nullable": True, "description": "null or \"NaN\" for NaN."},
            "timestamp": {"type": "number", "minimum": 0, "maximum": 253402300799,
                          "description": "Unix seconds (1970 to the year 9999); default: when received."},
        },
        "required": ["key", "step", "value"],
    },
})
class PointsField(serializers.JSONField):
    """Checked point by point in the view (DRF's per-item fields cost more than the insert)."""

    def to_internal_value(self, data: object) -> object:
        if not isinstance(data, list):
            raise serializers.ValidationError(f"Expected a list of points, not {type(data).__name__}.")
        return data


class MetricsIngestSerializer(serializers.Serializer):
    points = PointsField()


class IngestedSerializer(serializers.Serializer):
    points = serializers.IntegerField()


@extend_schema_field({
    "type": "object",
    "additionalProperties": {
        "type": "object",
        "properties": {
            "step": {"type": "array", "items": {"type": "integer"}},
            "value": {"type": "array", "items": {"type": "number", "nullable": True}},
            "timestamp": {"type": "array", "items": {"type": "number"}},
            "count": {"type": "integer", "description": "Points stored for the key (before downsampling)."},
        },
    },
})
class SeriesField(serializers.JSONField):
    pass


class HistorySerializer(serializers.Serializer):
    run = serializers.CharField()
    keys = SeriesField()


class ArtifactSerializer(serializers.ModelSerializer):
    run = serializers.CharField(source="run.uid", read_only=True)

    class Meta:
        model = Artifact
        fields = ["name", "run", "kind", "size", "sha256", "metadata", "created_at"]
        read_only_fields = fields
