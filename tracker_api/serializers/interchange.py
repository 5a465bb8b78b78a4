"""Run reads and lineage for remote clients, agreement and final labels, Label Studio interchange."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from tracker.models import Run
from tracker_api.serializers.datasets import VersionSerializer
from tracker_api.serializers.runs import RunSerializer

STATUSES = list(Run.Status.values)


# -- runs ---------------------------------------------------------------------------------------
class NotesSerializer(serializers.Serializer):
    text = serializers.CharField(allow_blank=True, trim_whitespace=False, max_length=1_000_000)
    append = serializers.BooleanField(required=False, default=False, help_text="Add a paragraph instead of replacing.")


class NotesOutSerializer(serializers.Serializer):
    notes = serializers.CharField()


class ResumeSerializer(serializers.Serializer):
    params = serializers.DictField(required=False, default=dict, help_text="Params to add; a changed value is 409.")
    tags = serializers.DictField(required=False, default=dict, help_text="Tags to set; null removes one.")
    notes = serializers.CharField(required=False, allow_blank=True, default="", trim_whitespace=False,
                                  max_length=1_000_000, help_text="A paragraph appended to the notes.")
    host = serializers.CharField(required=False, allow_blank=True, default="", max_length=255)
    pid = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=0, max_value=2**31 - 1)
    heartbeat_timeout = serializers.FloatField(
        required=False, allow_null=True, default=None, min_value=1, max_value=7 * 86400,
        help_text="Seconds without a heartbeat after which the run reads as killed; null: the server's default.",
    )


class ResumedSerializer(serializers.Serializer):
    run = RunSerializer()
    next_steps = serializers.DictField(child=serializers.IntegerField(), help_text="Per metric key, the step after the last logged one.")


class InputSerializer(serializers.Serializer):
    version = serializers.IntegerField(min_value=1, max_value=2**63 - 1, help_text="A dataset version's id.")
    context = serializers.CharField(max_length=64, required=False, default="train", help_text='"train", "eval", ...')


class InputOutSerializer(serializers.Serializer):
    version = VersionSerializer()
    context = serializers.CharField()


class RunQuerySerializer(serializers.Serializer):
    """The filters of ``tracker.runs(...)``; runs of projects you are not a member of never match."""

    project = serializers.CharField(required=False, allow_null=True, default=None, max_length=200)
    status = serializers.ListField(child=serializers.ChoiceField(choices=STATUSES), required=False, allow_null=True,
                                   default=None, max_length=len(STATUSES))
    name = serializers.CharField(required=False, allow_null=True, default=None, max_length=200,
                                 help_text='Exact name, or a pattern with "*".')
    tags = serializers.DictField(required=False, allow_null=True, default=None,
                                 help_text='{"key": value} or lookups such as {"lr__gt": 0.1}.')
    params = serializers.DictField(required=False, allow_null=True, default=None)
    metrics = serializers.DictField(required=False, allow_null=True, default=None,
                                    help_text='On last values: {"val_loss__lt": 0.3}.')
    parent = serializers.CharField(required=False, allow_null=True, default=None, max_length=32)
    ids = serializers.ListField(child=serializers.CharField(max_length=32), required=False, allow_null=True,
                                default=None, max_length=10_000)
    id_prefix = serializers.CharField(required=False, allow_null=True, default=None, max_length=32,
                                      help_text="Runs whose id starts with this.")
    since = serializers.DateTimeField(required=False, allow_null=True, default=None)
    order_by = serializers.ListField(child=serializers.CharField(max_length=64), required=False, allow_null=True,
                                     default=None, max_length=10)
    limit = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=0, max_value=2**31 - 1)


class RunSearchSerializer(RunQuerySerializer):
    offset = serializers.IntegerField(required=False, default=0, min_value=0, max_value=2**31 - 1)
    page_size = serializers.IntegerField(required=False, default=100, min_value=0, max_value=1000)


class RunRowSerializer(RunSerializer):
    metrics = serializers.DictField(child=serializers.FloatField(allow_null=True), read_only=True,
                                    help_text="Last value per metric key (null for NaN).")
    datasets = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta(RunSerializer.Meta):
        fields = [*RunSerializer.Meta.fields, "metrics", "datasets"]
        read_only_fields = fields


class RunPageSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="Runs matching (after limit).")
    results = RunRowSerializer(many=True)
    next_offset = serializers.IntegerField(allow_null=True)


class HistoryQuerySerializer(RunQuerySerializer):
    keys = serializers.ListField(child=serializers.CharField(max_length=250), required=False, allow_null=True,
                                 default=None, max_length=10_000)
    wide = serializers.BooleanField(required=False, default=True)


class CompareSerializer(serializers.Serializer):
    runs = serializers.ListField(child=serializers.CharField(max_length=32), min_length=1, max_length=1000,
                                 help_text="Run ids (or unique prefixes of 4+ characters).")
    only_differences = serializers.BooleanField(required=False, default=False)


_CELL = {"description": 'A value; NaN/infinities, times and durations are tagged ({"$float": "NaN"}).'}
_COLUMN = {
    "type": "object",
    "properties": {
        "name": {"description": "The column (or index level) label."},
        "dtype": {"type": "string", "description": "Its pandas dtype."},
        "unit": {"type": "string", "description": "Datetime/timedelta columns: the unit of the integers."},
        "tz": {"type": "string", "nullable": True},
    },
    "required": ["name", "dtype"],
}


@extend_schema_field({"type": "array", "items": _COLUMN})
class _Columns(serializers.JSONField):
    pass


@extend_schema_field({"type": "array", "items": {"type": "array", "items": _CELL}})
class _Rows(serializers.JSONField):
    pass


class TableSerializer(serializers.Serializer):
    """A pandas DataFrame, typed (tracker_api.frames): the frame the notebook API would return."""

    index = _Columns()
    columns = _Columns()
    columns_name = serializers.JSONField(allow_null=True)
    columns_dtype = serializers.CharField(help_text="The pandas dtype of the column labels.")
    results = _Rows(help_text="Rows: index values, then one cell per column.")


# -- labels -------------------------------------------------------------------------------------
class AgreementRowSerializer(serializers.Serializer):
    scope = serializers.CharField(help_text="overall, label, annotator or pair.")
    name = serializers.CharField()
    annotators = serializers.IntegerField()
    items = serializers.IntegerField()
    annotations = serializers.IntegerField()
    observed_agreement = serializers.FloatField(allow_null=True)
    cohen_kappa = serializers.FloatField(allow_null=True)
    krippendorff_alpha = serializers.FloatField(allow_null=True)


@extend_schema_field({"description": "The final label; its shape depends on the task's kind."})
class _Value(serializers.JSONField):
    pass


class ResolvedRowSerializer(serializers.Serializer):
    external_id = serializers.CharField()
    sample_id = serializers.IntegerField()
    value = _Value()
    strategy = serializers.CharField(help_text="The rule that decided.")
    votes = serializers.IntegerField()
    annotations = serializers.IntegerField()


_LS_TASK = {
    "type": "object",
    "description": "A Label Studio task: data, annotations (with result lists), predictions.",
    "properties": {
        "id": {},
        "data": {"type": "object", "additionalProperties": True},
        "meta": {"type": "object", "additionalProperties": True},
        "annotations": {"type": "array", "items": {"type": "object", "additionalProperties": True}},
        "predictions": {"type": "array", "items": {"type": "object", "additionalProperties": True}},
    },
    "required": ["data"],
    "additionalProperties": True,
}


@extend_schema_field({"type": "array", "items": _LS_TASK})
class LabelStudioTasks(serializers.JSONField):
    pass


class LabelStudioImportedSerializer(serializers.Serializer):
    samples = serializers.IntegerField()
    annotations = serializers.IntegerField()
    predictions = serializers.IntegerField()
    superseded = serializers.IntegerField(help_text="Older annotations of one person and task left out.")
    tasks = serializers.ListField(child=serializers.CharField())
