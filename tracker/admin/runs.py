"""Django admin for runs, metric points and summaries, artifacts and blobs."""

from __future__ import annotations

import json
import posixpath
from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from tracker.models import Artifact, Blob, Metric, MetricSummary, Run, RunInput

STATUS_COLORS = {
    "running": "#1f6feb",
    "finished": "#1a7f37",
    "failed": "#cf222e",
    "killed": "#9a6700",
}


def _short(value: Any, limit: int = 90) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _pretty(value: Any) -> str:
    return format_html(
        "<pre style='margin:0'>{}</pre>",
        json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True),
    )


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _duration(run: Run) -> str:
    end = run.ended_at or timezone.now()
    seconds = int((end - run.started_at).total_seconds())
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


class SummaryInline(admin.TabularInline):
    model = MetricSummary
    extra = 0
    can_delete = False
    fields = ["key", "last", "last_step", "min", "max", "count"]
    readonly_fields = fields
    ordering = ["key"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # written by the metric flusher only


class ArtifactInline(admin.TabularInline):
    model = Artifact
    extra = 0
    can_delete = False
    fields = ["name", "kind", "size_display", "sha256", "created_at", "download"]
    readonly_fields = fields
    ordering = ["name"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # uploaded through run.log_artifact(), which hashes and stores the bytes

    @admin.display(description="size")
    def size_display(self, obj: Artifact) -> str:
        return _size(obj.size)

    @admin.display(description="")
    def download(self, obj: Artifact) -> str:
        return format_html(
            "<a href='{}'>download</a>", reverse("admin:tracker_artifact_download", args=[obj.pk])
        )


class InputInline(admin.TabularInline):
    model = RunInput
    extra = 0
    can_delete = False
    fields = ["version", "context", "created_at"]
    readonly_fields = fields
    verbose_name = "dataset used"
    verbose_name_plural = "datasets used"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = [
        "uid",
        "name",
        "project",
        "status_badge",
        "started_at",
        "duration",
        "last_metrics",
        "short_params",
        "host",
    ]
    list_display_links = ["uid", "name"]
    list_filter = ["status", "project", "git_dirty", "host"]
    search_fields = ["uid", "name", "notes", "git_commit", "host", "project__name"]
    list_select_related = ["project", "parent"]
    date_hierarchy = "started_at"
    show_full_result_count = False
    raw_id_fields = ["parent"]
    fields = [
        "uid",
        "project",
        "name",
        "parent",
        "status",
        "notes",
        "tags",
        "params_display",
        "error_display",
        "started_at",
        "ended_at",
        "heartbeat_at",
        "heartbeat_timeout",
        "host",
        "pid",
        "git_commit",
        "git_dirty",
        "python_version",
        "packages_display",
    ]
    readonly_fields = [
        "uid",
        "project",
        "status",
        "params_display",
        "error_display",
        "started_at",
        "ended_at",
        "heartbeat_at",
        "heartbeat_timeout",
        "host",
        "pid",
        "git_commit",
        "git_dirty",
        "python_version",
        "packages_display",
    ]
    inlines = [SummaryInline, ArtifactInline, InputInline]
    actions = ["mark_finished", "mark_killed"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).prefetch_related("metric_summaries")

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        from tracker.services.runs import reap_stale

        reap_stale()  # a run whose process died shows as killed here too
        return super().changelist_view(request, extra_context)

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Run) -> str:
        color = STATUS_COLORS.get(obj.status, "#57606a")
        return format_html("<b style='color:{}'>{}</b>", color, obj.status)

    @admin.display(description="duration")
    def duration(self, obj: Run) -> str:
        return _duration(obj)

    @admin.display(description="metrics (last)")
    def last_metrics(self, obj: Run) -> str:
        summaries = sorted(obj.metric_summaries.all(), key=lambda s: s.key)
        shown = ", ".join(
            f"{s.key}={s.last:.4g}" if s.last is not None else f"{s.key}=nan" for s in summaries[:4]
        )
        return shown + (" …" if len(summaries) > 4 else "")

    @admin.display(description="params")
    def short_params(self, obj: Run) -> str:
        return _short(", ".join(f"{k}={_short(v, 20)}" for k, v in sorted(obj.params.items())))

    @admin.display(description="params")
    def params_display(self, obj: Run) -> str:
        return _pretty(obj.params)

    @admin.display(description="packages")
    def packages_display(self, obj: Run) -> str:
        return format_html_join(", ", "{}=={}", sorted(obj.packages.items()))

    @admin.display(description="error")
    def error_display(self, obj: Run) -> str:
        return (
            format_html("<pre style='margin:0;white-space:pre-wrap'>{}</pre>", obj.error)
            if obj.error
            else "-"
        )

    def _end(self, request: HttpRequest, queryset: QuerySet, status: str) -> None:
        changed = queryset.filter(status=Run.Status.RUNNING).update(
            status=status, ended_at=timezone.now()
        )
        self.message_user(request, f"{changed} running run(s) marked {status}.", messages.SUCCESS)

    @admin.action(description="Mark selected running runs finished")
    def mark_finished(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._end(request, queryset, Run.Status.FINISHED)

    @admin.action(description="Mark selected running runs killed")
    def mark_killed(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._end(request, queryset, Run.Status.KILLED)


@admin.register(Metric)
class MetricAdmin(admin.ModelAdmin):
    list_display = ["run", "key", "step", "value", "logged_at"]
    search_fields = ["=run__uid", "key"]
    list_select_related = ["run"]
    raw_id_fields = ["run"]
    readonly_fields = ["run", "key", "step", "value", "timestamp", "logged_at"]
    show_full_result_count = False  # a COUNT over millions of points per page is too slow
    ordering = ["-id"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # points come from run.log_metric()

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a logged point is history; delete it if it is wrong

    @admin.display(description="logged at")
    def logged_at(self, obj: Metric) -> Any:
        import datetime as dt

        return dt.datetime.fromtimestamp(obj.timestamp, tz=dt.timezone.utc)


@admin.register(MetricSummary)
class MetricSummaryAdmin(admin.ModelAdmin):
    list_display = ["run", "key", "last", "last_step", "min", "max", "count"]
    list_filter = ["key"]
    search_fields = ["=run__uid", "run__name", "key"]
    list_select_related = ["run"]
    readonly_fields = ["run", "key", "last", "last_step", "min", "max", "count", "updated_at"]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Artifact)
class ArtifactAdmin(admin.ModelAdmin):
    list_display = ["name", "run", "kind", "size_display", "short_sha", "created_at", "download"]
    list_filter = ["kind", "run__project"]
    search_fields = ["name", "sha256", "=run__uid", "run__name"]
    list_select_related = ["run", "blob"]
    raw_id_fields = ["run", "blob"]
    readonly_fields = ["run", "name", "blob", "kind", "size", "sha256", "created_at", "download"]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # uploaded through run.log_artifact(), which hashes and stores the bytes

    @admin.display(description="size", ordering="size")
    def size_display(self, obj: Artifact) -> str:
        return _size(obj.size)

    @admin.display(description="sha256")
    def short_sha(self, obj: Artifact) -> str:
        return obj.sha256[:12]

    @admin.display(description="")
    def download(self, obj: Artifact) -> str:
        if obj.pk is None:
            return "-"
        return format_html(
            "<a href='{}'>download</a>", reverse("admin:tracker_artifact_download", args=[obj.pk])
        )

    def get_urls(self) -> list:
        view = self.admin_site.admin_view(self.download_view)
        return [
            path("<int:pk>/download/", view, name="tracker_artifact_download"),
            *super().get_urls(),
        ]

    def download_view(self, request: HttpRequest, pk: int) -> FileResponse:
        if not self.has_view_permission(request):
            raise Http404
        art = get_object_or_404(Artifact.objects.select_related("blob"), pk=pk)
        from tracker.exceptions import StorageError
        from tracker.services.artifacts import ArtifactInfo, open_artifact

        try:
            fh = open_artifact(ArtifactInfo.from_model(art, ""))
        except StorageError as exc:
            raise Http404(str(exc)) from None
        return FileResponse(fh, as_attachment=True, filename=posixpath.basename(art.name))


@admin.register(Blob)
class BlobAdmin(admin.ModelAdmin):
    list_display = ["sha256", "size_display", "storage_name", "uses", "created_at"]
    search_fields = ["sha256", "storage_name"]
    readonly_fields = ["sha256", "size", "storage_name", "created_at"]
    show_full_result_count = False

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(_uses=Count("artifacts"))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="size", ordering="size")
    def size_display(self, obj: Blob) -> str:
        return _size(obj.size)

    @admin.display(description="artifacts", ordering="_uses")
    def uses(self, obj: Blob) -> int:
        return obj._uses
