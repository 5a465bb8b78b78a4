"""Samples."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from tracker.models import Sample


class SampleSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="name", read_only=True)
    media = serializers.SerializerMethodField()

    class Meta:
        model = Sample
        fields = ["id", "project", "external_id", "data", "metadata", "media", "media_uri", "created_at", "updated_at"]
        read_only_fields = fields

    def get_media(self, obj: Sample) -> str:
        return obj.media.name if obj.media else ""


@extend_schema_field({"type": "array", "items": {"type": "object", "additionalProperties": True}})
class RecordsField(serializers.JSONField):
    """A JSON list of objects, checked record by record by the service (which names the bad
    one); DRF's per-item field machinery would cost more than the insert for 10,000 records."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, list):
            raise serializers.ValidationError(f"Expected a list of objects, not {type(data).__name__}.")
        return data


class SampleBulkSerializer(serializers.Serializer):
    project = serializers.CharField(max_length=200, help_text="Project name; created on first use.")
    records = RecordsField(
        help_text="Sample records: `records[i][id_field]` is the id, `metadata` and `media_uri` "
        "are kept apart, every other key is data. Existing ids are updated.",
    )
    id_field = serializers.CharField(
        max_length=200, required=False, allow_null=True, default=None,
        help_text="The key holding each record's id; default: 'id' if records have one, else ids "
        "derived from the content (re-sending a record updates it).",
    )
