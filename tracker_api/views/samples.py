"""Samples: list with cursor pagination, bulk create/upsert, import upload."""

from __future__ import annotations

from typing import Any

import django_filters
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.response import Response

from tracker.models import Sample
from tracker_api.base import ProjectScopedViewSet
from tracker_api.serializers import samples as s
from tracker_api.serializers.datasets import ImportReportSerializer
from tracker_api.views.interchange import FORCE, force_flag


class SampleFilter(django_filters.FilterSet):
    project = django_filters.CharFilter(field_name="project__name", help_text="Project name.")
    external_id = django_filters.CharFilter()
    updated_after = django_filters.IsoDateTimeFilter(field_name="updated_at", lookup_expr="gt")

    class Meta:
        model = Sample
        fields = ["project", "external_id", "updated_after"]


@extend_schema(tags=["samples"])
class SampleViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectScopedViewSet):
    """Samples of your projects. POST adds or updates many at once (editor)."""

    queryset = Sample.objects.select_related("project")
    serializer_class = s.SampleSerializer
    filterset_class = SampleFilter
    ordering_fields = ["id", "updated_at", "created_at"]
    ordering = ["id"]

    @extend_schema(parameters=[FORCE], responses={204: None})
    def destroy(self, request: Any, pk: Any = None) -> Response:
        """Delete a sample with its predictions and claims; one with annotations needs
        ``?force=true``. Dataset versions that froze it keep returning it."""
        from tracker.services.deletions import delete_sample

        delete_sample(self.get_object(), force=force_flag(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=s.SampleBulkSerializer, responses={201: ImportReportSerializer})
    def create(self, request: Any) -> Response:
        """Add samples (the project is created on first use), updating those whose id exists.

        All or nothing: a bad record stores nothing, and the answer's ``report`` lists every
        bad record with its reason.
        """
        from tracker.services.imports import import_samples

        ser = s.SampleBulkSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        d = ser.validated_data
        project = self.project_for(d["project"], "editor", create=True)
        # The bulk import path: column-wise conversion and one statement per chunk (COPY on
        # PostgreSQL), several times faster than row-by-row upserts for 10,000 records.
        report = import_samples(project, d["records"], id_field=d.get("id_field"), store_media=False, progress=False)
        return Response(ImportReportSerializer(report).data, status=status.HTTP_201_CREATED)
