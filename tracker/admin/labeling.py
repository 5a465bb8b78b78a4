"""Django admin for labeling: tasks, annotations (with review actions and history), predictions, claims."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from tracker.exceptions import TrackerError
from tracker.models import Annotation, AnnotationEvent, AnnotationTask, Claim, Prediction


class ReviewActionForm(ActionForm):
    """The action bar with a comment box, so a rejection says why."""

    comment = forms.CharField(required=False, label="Review comment", max_length=2000)


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@admin.register(AnnotationTask)
class AnnotationTaskAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "kind", "label_list", "schema_version", "updated_at"]
    list_filter = ["kind", "project"]
    search_fields = ["name", "project__name"]
    list_select_related = ["project"]
    readonly_fields = ["schema_version", "created_at", "updated_at"]

    @admin.display(description="labels")
    def label_list(self, obj: AnnotationTask) -> str:
        return _short(", ".join(obj.labels))


class EventInline(admin.TabularInline):
    model = AnnotationEvent
    extra = 0
    can_delete = False
    fields = ["at", "action", "actor", "old_value", "new_value", "old_status", "new_status", "comment"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # history is written by tracker only


@admin.register(Annotation)
class AnnotationAdmin(admin.ModelAdmin):
    list_display = ["id", "task", "sample", "annotator", "short_value", "status", "reviewed_by", "updated_at"]
    list_filter = ["status", "task__project", "task"]
    search_fields = ["sample__external_id", "annotator__username", "task__name"]
    list_select_related = ["task", "sample", "annotator", "reviewed_by"]
    raw_id_fields = ["sample", "prediction"]
    readonly_fields = ["status", "review_comment", "reviewed_by", "reviewed_at", "created_at", "updated_at"]
    inlines = [EventInline]
    actions = ["accept", "reject"]
    action_form = ReviewActionForm
    show_full_result_count = False

    @admin.display(description="value")
    def short_value(self, obj: Annotation) -> str:
        return _short(obj.value)

    def _review(self, request: HttpRequest, queryset: QuerySet, decision: str) -> None:
        from tracker.services import labeling

        comment = request.POST.get("comment", "")
        try:
            done = labeling.review(queryset, decision, comment=comment, reviewer=request.user)
        except TrackerError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(request, f"{len(done)} annotation(s) {decision}ed.", messages.SUCCESS)

    @admin.action(description="Accept selected annotations")
    def accept(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._review(request, queryset, "accept")

    @admin.action(description="Reject selected annotations (give a comment)")
    def reject(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._review(request, queryset, "reject")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fixed = ["task", "sample", "annotator", "prediction"] if obj is not None else []
        return [*self.readonly_fields, *fixed]

    def save_model(self, request: HttpRequest, obj: Annotation, form: Any, change: bool) -> None:
        """Saves go through the core, so every edit is kept in the history (value checked in clean)."""
        from tracker.services import labeling

        with transaction.atomic():
            saved = labeling.save_annotation(obj.task, obj.sample, obj.annotator, obj.value, actor=request.user)
        obj.pk, obj.status, obj.created_at, obj.updated_at = saved.pk, saved.status, saved.created_at, saved.updated_at

    def get_form(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, **kwargs)
        base_clean = form.clean

        def clean(form_self: Any) -> Any:
            data = base_clean(form_self)
            # On change task and sample are read-only, so they come from the instance.
            inst = form_self.instance
            task = data.get("task") or (inst.task if inst.task_id else None)
            sample = data.get("sample") or (inst.sample if inst.sample_id else None)
            if task is not None and sample is not None and "value" in data:
                from tracker.services import labeling

                try:
                    data["value"] = labeling.check_value(task, data["value"], sample)
                except TrackerError as exc:
                    raise forms.ValidationError({"value": str(exc)}) from None
            return data

        form.clean = clean
        return form


@admin.register(Prediction)
class PredictionAdmin(admin.ModelAdmin):
    list_display = ["id", "task", "sample", "short_value", "score", "model_version", "run", "created_at"]
    list_filter = ["task__project", "task", "model_version"]
    search_fields = ["sample__external_id", "model_version"]
    list_select_related = ["task", "sample", "run"]
    raw_id_fields = ["sample", "run"]
    actions = ["accept_as_annotation"]
    show_full_result_count = False

    @admin.display(description="value")
    def short_value(self, obj: Prediction) -> str:
        return _short(obj.value)

    @admin.action(description="Accept as my annotation")
    def accept_as_annotation(self, request: HttpRequest, queryset: QuerySet) -> None:
        from tracker.services import labeling

        done, failed = 0, []
        for pred in queryset:
            try:
                labeling.accept_prediction(pred, request.user)
                done += 1
            except TrackerError as exc:
                failed.append(f"prediction {pred.pk}: {exc}")
        if done:
            self.message_user(request, f"{done} prediction(s) accepted as annotations.", messages.SUCCESS)
        for msg in failed:
            self.message_user(request, msg, messages.ERROR)


@admin.register(Claim)
class ClaimAdmin(admin.ModelAdmin):
    list_display = ["task", "sample", "annotator", "claimed_at", "expires_at", "active"]
    list_filter = ["task__project", "task"]
    list_select_related = ["task", "sample", "annotator"]
    raw_id_fields = ["sample"]
    actions = ["release_claims"]

    @admin.display(boolean=True)
    def active(self, obj: Claim) -> bool:
        return obj.expires_at > timezone.now()

    @admin.action(description="Release selected claims")
    def release_claims(self, request: HttpRequest, queryset: QuerySet) -> None:
        count, _ = queryset.delete()
        self.message_user(request, f"{count} claim(s) released.", messages.SUCCESS)
