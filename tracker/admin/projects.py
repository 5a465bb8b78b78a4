"""Django admin for projects and samples."""

from django.contrib import admin

from tracker.models import Project, ProjectMembership, Sample


class MembershipInline(admin.TabularInline):
    model = ProjectMembership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at"]
    search_fields = ["name", "description"]
    inlines = [MembershipInline]


@admin.register(Sample)
class SampleAdmin(admin.ModelAdmin):
    list_display = ["external_id", "project", "updated_at"]
    list_filter = ["project"]
    search_fields = ["external_id"]
    list_select_related = ["project"]
    show_full_result_count = False  # a COUNT over millions of rows per page view is too slow
