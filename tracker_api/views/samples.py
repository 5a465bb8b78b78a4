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

    @extend_schema(request=s.SampleBulkSerializer, responses={201: s.SampleBulkResultSerializer})
    def create(self, request: Any) -> Response:
        """Add samples (created on first use), updating those whose id exists; all or nothing."""
        from tracker.services.samples import add_samples

        ser = s.SampleBulkSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        d = ser.validated_data
        project = self.project_for(d["project"], "editor", create=True)
        stored = add_samples(project, d["records"], id_field=d.get("id_field") or "id")
        return Response(
            {
                "project": project.name,
                "count": len(stored),
                "samples": [{"id": x.pk, "external_id": x.external_id} for x in stored],
            },
            status=status.HTTP_201_CREATED,
        )
