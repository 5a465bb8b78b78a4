"""Datasets and versions (export streamed), and sample import upload."""

from __future__ import annotations

import json
import os
from typing import Any

import django_filters
from django.db.models import Max, Q
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response

from tracker.exceptions import ImportRejected, InvalidValue
from tracker.models import Dataset, DatasetVersion, Sample
from tracker_api.base import ProjectScopedViewSet
from tracker_api.serializers import datasets as s
from tracker_api.streaming import SpooledUpload, file_chunks, stream

EXPORT_TYPES = {
    "jsonl": "application/x-ndjson",
    "json": "application/json",
    "parquet": "application/vnd.apache.parquet",
    "csv": "text/csv",
}


class DatasetFilter(django_filters.FilterSet):
    project = django_filters.CharFilter(field_name="project__name")
    name = django_filters.CharFilter()

    class Meta:
        model = Dataset
        fields = ["project", "name"]


@extend_schema(tags=["datasets"])
class DatasetViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectScopedViewSet):
    """Datasets of your projects, with their latest ready version."""

    queryset = Dataset.objects.select_related("project").annotate(
        latest_version=Max("versions__version", filter=Q(versions__state=DatasetVersion.State.READY))
    )
    serializer_class = s.DatasetSerializer
    filterset_class = DatasetFilter
    ordering_fields = ["id", "name", "created_at"]
    ordering = ["id"]


class VersionFilter(django_filters.FilterSet):
    project = django_filters.CharFilter(field_name="dataset__project__name")
    dataset = django_filters.CharFilter(field_name="dataset__name", help_text="Dataset name.")
    version = django_filters.NumberFilter()

    class Meta:
        model = DatasetVersion
        fields = ["project", "dataset", "version"]


@extend_schema(tags=["datasets"])
class VersionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectScopedViewSet):
    """Ready dataset versions; POST freezes the next version (editor); ``export`` streams one."""

    queryset = DatasetVersion.objects.filter(state=DatasetVersion.State.READY).select_related(
        "dataset__project", "snapshot"
    )
    serializer_class = s.VersionSerializer
    project_field = "dataset__project"
    filterset_class = VersionFilter
    ordering_fields = ["id", "version", "created_at"]
    ordering = ["id"]

    @extend_schema(request=s.VersionCreateSerializer, responses={201: s.VersionSerializer})
    def create(self, request: Any) -> Response:
        """Freeze samples of a project as the next version of a dataset (one identical to the
        latest returns that one)."""
        from tracker.services.datasets import create_dataset

        ser = s.VersionCreateSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        d = ser.validated_data
        project = self.project_for(d["project"], "editor")
        samples = Sample.objects.filter(project=project)
        if d["external_ids"] is not None:
            samples = samples.filter(external_id__in=d["external_ids"])
        info = create_dataset(
            d["name"], samples, project=project, splits=d["splits"], seed=d["seed"],
            stratify_by=d["stratify_by"], description=d["description"], progress=False,
        )
        version = self.get_queryset().get(pk=info.id)
        return Response(s.VersionSerializer(version).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses=s.VersionUseSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=None)  # a plain list, as the schema says
    def runs(self, request: Any, pk: Any = None) -> Response:
        """The runs that used this version (``version.runs()`` in Python), oldest use first;
        only runs in projects you can read."""
        from tracker.services.access import project_ids_with_role
        from tracker.services.datasets import version_runs

        version = self.get_object()
        user = request.user
        uses = version_runs(version.pk, projects=None if user.is_superuser else project_ids_with_role(user, "viewer"))
        rows = [{"run": u.run.uid, "context": u.context, "created_at": u.created_at} for u in uses]
        return Response(s.VersionUseSerializer(rows, many=True).data)

    @extend_schema(
        parameters=[OpenApiParameter("other", int, required=True, description="The id of the version to compare to.")],
        responses=s.DiffSerializer,
    )
    @action(detail=True, methods=["get"])
    def diff(self, request: Any, pk: Any = None) -> Response:
        """What changed from this version to ``other`` (``v1.diff(v2)`` in Python): samples
        added, removed, changed (data, metadata, media or labels) and moved to another split.
        Both versions must be in projects you can read."""
        import dataclasses

        from tracker.exceptions import DatasetNotFound
        from tracker.services.datasets import diff_versions

        version = self.get_object()
        raw = request.query_params.get("other", "")
        # isascii: str.isdigit() also accepts digits int() refuses, such as "²"
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
            raise InvalidValue(f"other must be the id of a dataset version (an integer), not {raw[:40]!r}.")
        other = self.get_queryset().filter(pk=int(raw)).first()
        if other is None:
            raise DatasetNotFound(
                f"There is no dataset version {raw} in a project you are a member of; "
                f"GET /api/dataset-versions/?dataset=<name> lists their ids."
            )
        found = diff_versions(version.pk, other.pk)
        return Response(s.DiffSerializer(dataclasses.asdict(found)).data)

    @extend_schema(
        parameters=[
            OpenApiParameter("export_format", enum=list(EXPORT_TYPES), default="jsonl",
                             description="jsonl (one sample per line), json (an array), parquet or csv."),
            OpenApiParameter("split", str, required=False, description="Only this split."),
        ],
        responses={
            (200, "application/x-ndjson"): OpenApiResponse(OpenApiTypes.BINARY, description="One sample per line."),
            (200, "application/json"): OpenApiResponse(
                {"type": "array", "items": {"type": "object", "additionalProperties": True}},
                description="An array of samples.",
            ),
            (200, "application/vnd.apache.parquet"): OpenApiResponse(OpenApiTypes.BINARY, description="The snapshot."),
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.BINARY, description="CSV; nested values as JSON text."),
        },
    )
    @action(detail=True, methods=["get"])
    def export(self, request: Any, pk: Any = None) -> Any:
        """Download the version's rows, streamed as they are read (never built in memory)."""
        from tracker.services import dataset_files as files
        from tracker.services.datasets import version_info

        version = self.get_object()
        fmt = request.query_params.get("export_format", "jsonl")
        if fmt not in EXPORT_TYPES:
            raise InvalidValue(f"export_format must be one of {', '.join(EXPORT_TYPES)}, not {fmt[:40]!r}.")
        split = request.query_params.get("split") or None
        info = version_info(version)
        splits = sorted(info.counts)
        path = files.local_path(info.snapshot_name, info.snapshot_sha256, info.label)
        if split is not None and split not in splits:
            raise InvalidValue(
                f"There is no split {split[:40]!r}; this version has {', '.join(map(repr, splits)) or 'no splits'}."
            )
        filename = f"{info.name}-v{info.version}{'-' + split if split else ''}.{fmt}"
        headers = {"Content-Disposition": f'attachment; filename="{_safe_filename(filename)}"'}
        if fmt == "parquet" and split is None:
            headers["Content-Length"] = str(info.snapshot_size)
            headers["X-Content-SHA256"] = info.snapshot_sha256
            chunks = file_chunks(open(path, "rb"))
        elif fmt in ("jsonl", "json"):
            chunks = _json_rows(files.iter_batches(path, 2_000, split, splits), array=fmt == "json")
        else:
            chunks = _via_file(files, path, fmt, split, splits)
        return stream(request, chunks, content_type=EXPORT_TYPES[fmt], headers=headers)


def _safe_filename(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:200]


def _json_rows(batches: Any, *, array: bool) -> Any:
    first = True
    if array:
        yield b"["
    for batch in batches:
        rows = [json.dumps(row, ensure_ascii=False, default=str) for row in batch.to_pylist()]
        if array:
            text = ("" if first else ",") + ",".join(rows)
        else:
            text = "".join(r + "\n" for r in rows)
        first = False
        yield text.encode()
    if array:
        yield b"]"


def _via_file(files: Any, path: str, fmt: str, split: str | None, splits: list[str]) -> Any:
    # CSV and split Parquet are written by the datasets service to a temporary file (streamed
    # row group by row group), then sent in chunks and removed.
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix="tracker-export-", suffix=f".{fmt}")
    os.close(fd)
    try:
        files.export(path, tmp, fmt, split, splits)
        with open(tmp, "rb") as fh:
            yield from file_chunks(fh)
    finally:
        os.unlink(tmp)


@extend_schema(tags=["samples"])
class SampleImportViewSet(ProjectScopedViewSet):
    """Upload a CSV, JSONL or Parquet file of samples (streamed to disk, then imported)."""

    queryset = Sample.objects.none()
    serializer_class = s.ImportReportSerializer
    body_limit = "upload"
    filter_backends: list[Any] = []
    pagination_class = None

    @extend_schema(
        operation_id="samples_import",
        parameters=[
            OpenApiParameter("project", str, required=True, description="Project name; created on first use."),
            OpenApiParameter("file_format", enum=["csv", "jsonl", "parquet"], required=True),
            OpenApiParameter("id_field", str, required=False, description="The column holding sample ids."),
            OpenApiParameter("on_error", enum=["raise", "skip"], default="raise",
                             description="raise: store nothing if a row is bad; skip: store the good rows."),
        ],
        request={"application/octet-stream": OpenApiTypes.BINARY},
        responses={201: s.ImportReportSerializer},
    )
    def create(self, request: Any) -> Response:
        """Import samples from the request body, all or nothing unless ``on_error=skip``."""
        from tracker.services.imports import import_samples

        q = request.query_params
        fmt = q.get("file_format")
        if fmt not in ("csv", "jsonl", "parquet"):
            raise InvalidValue(f"file_format must be csv, jsonl or parquet, not {str(fmt)[:40]!r}.")
        on_error = q.get("on_error", "raise")
        if on_error not in ("raise", "skip"):
            raise InvalidValue(f"on_error must be 'raise' or 'skip', not {on_error[:40]!r}.")
        if not q.get("project"):
            raise InvalidValue("Name the project: ?project=<name>.")
        project = self.project_for(q["project"], "editor", create=True)
        with SpooledUpload(request, suffix=f".{fmt}") as upload:
            # Media columns are never read from an upload: they would name files on the server.
            try:
                report = import_samples(
                    project, upload.path, id_field=q.get("id_field") or None, on_error=on_error,
                    format=fmt, store_media=False, progress=False,
                )
            except ImportRejected as exc:
                # Name the upload, not the server's temporary file.
                tmp_name = os.path.basename(upload.path)
                if exc.report is not None:
                    exc.report.source = "the upload"
                raise ImportRejected(str(exc).replace(tmp_name, "the upload"), exc.report) from None
            except UnicodeDecodeError as exc:
                # The import service reads text formats as UTF-8 and (for JSONL) lets the
                # decoder's error through; at the HTTP boundary it is the upload's fault.
                raise InvalidValue(
                    f"The uploaded {fmt} file is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                    f"save it as UTF-8 and upload it again. Nothing was imported."
                ) from None
        data = s.ImportReportSerializer(report).data
        data["source"] = f"upload ({fmt}, {upload.size} bytes)"
        return Response(data, status=status.HTTP_201_CREATED)
