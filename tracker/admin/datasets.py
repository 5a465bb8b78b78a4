"""Django admin for datasets: datasets and their versions, which are shown read-only (a version
never changes once it is ready; make a new one with ``tracker.create_dataset``)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, Max, Q, QuerySet
from django.http import HttpRequest

from tracker.models import Dataset, DatasetVersion, RunInput

_READY = Q(versions__state=DatasetVersion.State.READY)


class _ReadOnly:
    """Admin pieces that show rows and never add, change or delete them."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class VersionInline(_ReadOnly, admin.TabularInline):
    model = DatasetVersion
    extra = 0
    fields = ("version", "state", "sample_count", "split_counts", "content_hash", "created_at")
    readonly_fields = fields
    ordering = ("-version",)
    show_change_link = True


class RunInputInline(_ReadOnly, admin.TabularInline):
    model = RunInput
    extra = 0
    fields = ("run", "context", "created_at")
    readonly_fields = fields
    verbose_name = "run that used this version"
    verbose_name_plural = "runs that used this version"


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ("name", "project", "latest_version", "ready_versions", "created_at")
    list_filter = ("project",)
    search_fields = ("name", "description")
    list_select_related = ("project",)
    # The name and project identify the versions' lineage: only the description may change.
    readonly_fields = ("project", "name", "created_at")
    inlines = (VersionInline,)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # datasets are made by create_dataset, with their first version

    def get_queryset(self, request: HttpRequest) -> QuerySet[Dataset]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                n_ready=Count("versions", filter=_READY),
                top=Max("versions__version", filter=_READY),
            )
        )

    @admin.display(description="latest", ordering="top")
    def latest_version(self, obj: Dataset) -> str:
        return f"v{obj.top}" if obj.top else "-"

    @admin.display(description="versions", ordering="n_ready")
    def ready_versions(self, obj: Dataset) -> int:
        return obj.n_ready


@admin.register(DatasetVersion)
class DatasetVersionAdmin(_ReadOnly, admin.ModelAdmin):
    list_display = (
        "__str__",
        "project",
        "state",
        "sample_count",
        "split_counts",
        "short_hash",
        "created_at",
    )
    list_filter = ("state", "dataset__project")
    search_fields = ("dataset__name", "content_hash", "description")
    list_select_related = ("dataset__project",)
    show_full_result_count = False
    fields = (
        "dataset",
        "version",
        "state",
        "description",
        "content_hash",
        "sample_count",
        "splits",
        "split_counts",
        "seed",
        "stratify_by",
        "schema",
        "snapshot",
        "created_at",
        "created_by",
    )
    readonly_fields = fields
    inlines = (RunInputInline,)

    @admin.display(ordering="dataset__project__name")
    def project(self, obj: DatasetVersion) -> str:
        return obj.dataset.project.name

    @admin.display(description="content hash", ordering="content_hash")
    def short_hash(self, obj: DatasetVersion) -> str:
        return obj.content_hash[:12]
