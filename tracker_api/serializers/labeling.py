"""Annotation tasks, annotations (with history and review), predictions, the queue."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from tracker.models import Annotation, AnnotationEvent, AnnotationTask, Prediction
from tracker_api.serializers.samples import RecordsField, SampleSerializer

KINDS = list(AnnotationTask.Kind.values)


@extend_schema_field({"description": "A label value; its shape depends on the task's kind."})
class ValueField(serializers.JSONField):
    pass


@extend_schema_field({"oneOf": [{"type": "integer"}, {"type": "string"}],
                      "description": "A sample's id, or its external id as a string."})
class SampleRefField(serializers.Field):
    def to_internal_value(self, data: object) -> object:
        if isinstance(data, bool) or not isinstance(data, (int, str)) or data == "":
            raise serializers.ValidationError("Give the sample's id (an integer) or its external id (a string).")
        if isinstance(data, int) and not 0 < data < 2**63:
            raise serializers.ValidationError(f"{data} is not a sample id (ids are positive 64-bit integers).")
        if isinstance(data, str) and len(data) > 255:
            raise serializers.ValidationError("An external id has at most 255 characters.")
        return data

    def to_representation(self, value: object) -> object:
        return value


class TaskSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="name", read_only=True)
    labels = serializers.ListField(child=serializers.CharField(), read_only=True)
    config = serializers.DictField(read_only=True)

    class Meta:
        model = AnnotationTask
        fields = ["id", "project", "name", "kind", "labels", "config", "schema_version", "created_at", "updated_at"]
        read_only_fields = fields


class TaskDefineSerializer(serializers.Serializer):
    project = serializers.CharField(max_length=200)
    name = serializers.CharField(max_length=200)
    kind = serializers.ChoiceField(choices=KINDS)
    labels = serializers.ListField(child=serializers.CharField(max_length=200), required=False, allow_null=True, default=None)
    instructions = serializers.CharField(required=False, allow_null=True, default=None)
    annotators_per_sample = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=1, max_value=1000)
    text_field = serializers.CharField(required=False, allow_null=True, default=None, max_length=200)
    image_field = serializers.CharField(required=False, allow_null=True, default=None, max_length=200)
    width_field = serializers.CharField(required=False, allow_null=True, default=None, max_length=200)
    height_field = serializers.CharField(required=False, allow_null=True, default=None, max_length=200)
    scale = serializers.ListField(child=serializers.FloatField(), required=False, allow_null=True, default=None, min_length=2, max_length=2)
    step = serializers.FloatField(required=False, allow_null=True, default=None)
    max_length = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=1, max_value=10**7)
    rename_labels = serializers.DictField(child=serializers.CharField(max_length=200), required=False, allow_null=True, default=None)
    allow_invalid = serializers.BooleanField(required=False, default=False)


class AnnotationSerializer(serializers.ModelSerializer):
    task = serializers.PrimaryKeyRelatedField(read_only=True)
    sample = serializers.PrimaryKeyRelatedField(read_only=True)
    external_id = serializers.CharField(source="sample.external_id", read_only=True)
    annotator = serializers.SlugRelatedField(slug_field="username", read_only=True)
    reviewed_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    value = ValueField(read_only=True)

    class Meta:
        model = Annotation
        fields = [
            "id", "task", "sample", "external_id", "annotator", "value", "status", "review_comment",
            "reviewed_by", "reviewed_at", "prediction", "created_at", "updated_at",
        ]
        read_only_fields = fields


class AnnotateSerializer(serializers.Serializer):
    task = serializers.IntegerField(help_text="Task id.", min_value=1, max_value=2**63 - 1)
    sample = SampleRefField()
    value = ValueField()


class ReviewSerializer(serializers.Serializer):
    decision = serializers.ChoiceField(choices=["accept", "reject"])
    comment = serializers.CharField(required=False, allow_blank=True, default="")


class EventSerializer(serializers.ModelSerializer):
    actor = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    old_value = ValueField(read_only=True, allow_null=True)
    new_value = ValueField(read_only=True, allow_null=True)

    class Meta:
        model = AnnotationEvent
        fields = ["id", "at", "actor", "action", "old_value", "new_value", "old_status", "new_status", "comment"]
        read_only_fields = fields


class PredictionSerializer(serializers.ModelSerializer):
    task = serializers.PrimaryKeyRelatedField(read_only=True)
    sample = serializers.PrimaryKeyRelatedField(read_only=True)
    external_id = serializers.CharField(source="sample.external_id", read_only=True)
    run = serializers.SlugRelatedField(slug_field="uid", read_only=True, allow_null=True)
    value = ValueField(read_only=True)

    class Meta:
        model = Prediction
        fields = ["id", "task", "sample", "external_id", "value", "score", "model_version", "run", "created_at"]
        read_only_fields = fields


class PredictionsAddSerializer(serializers.Serializer):
    task = serializers.IntegerField(help_text="Task id.", min_value=1, max_value=2**63 - 1)
    predictions = RecordsField(
        help_text="Rows with `external_id` (or `sample`: an id), `value`, and optionally `score` "
        "and `model_version`."
    )
    model_version = serializers.CharField(required=False, allow_blank=True, default="", max_length=200)
    run = serializers.CharField(required=False, allow_null=True, default=None, max_length=32, help_text="Run uid.")
    replace = serializers.BooleanField(required=False, default=True)


class PredictionsAddedSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    ids = serializers.ListField(child=serializers.IntegerField())


class NextSerializer(serializers.Serializer):
    n = serializers.IntegerField(required=False, default=1, min_value=1, max_value=1000)
    strategy = serializers.ChoiceField(choices=["unlabeled", "least_confident", "random", "agreement"], default="unlabeled")
    ttl = serializers.FloatField(required=False, allow_null=True, default=None, min_value=1, max_value=7 * 86400)


class ReleaseSerializer(serializers.Serializer):
    samples = serializers.ListField(child=SampleRefField(), required=False, allow_null=True, default=None,
                                    help_text="Sample ids or external ids; omit to release all your claims.")


class ReleasedSerializer(serializers.Serializer):
    released = serializers.IntegerField()


class ClaimedSerializer(serializers.Serializer):
    samples = SampleSerializer(many=True)
