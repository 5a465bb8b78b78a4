"""Run reads for remote clients (search, frame, history, compare), resume, notes and lineage of a
run, inter-annotator agreement, final labels, and Label Studio JSON import and export.

The DataFrames the notebook API returns (``runs_frame``, ``history``, ``compare``) are built
here by the same core functions and sent typed (:mod:`tracker_api.frames`), so a client
configured with ``server_url`` gets the frame it would get from the database.
"""

from __future__ import annotations

import math
from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.response import Response

from tracker import conf
from tracker.exceptions import DatasetNotFound, InvalidValue, RunNotFound
from tracker.models import AnnotationTask, DatasetVersion, MetricSummary, Project, Run, RunInput
from tracker.services import access
from tracker_api import frames, permissions
from tracker_api.base import ProjectScopedViewSet, query_flag
from tracker_api.serializers import interchange as s
from tracker_api.serializers.datasets import VersionSerializer


def _valid(cls: Any, data: Any) -> dict[str, Any]:
    ser = cls(data=data)
    ser.is_valid(raise_exception=True)
    return ser.validated_data


def _finite(v: Any) -> Any:
    return v if v is None or not isinstance(v, float) or math.isfinite(v) else None


def _records(frame: Any) -> list[dict[str, Any]]:
    """DataFrame rows as JSON objects (NaN and infinities as null)."""
    return [{k: _finite(v) for k, v in row.items()} for row in frame.to_dict("records")]


def _visible_versions(view: ProjectScopedViewSet) -> Any:
    """Ready dataset versions of the projects the user may read."""
    from tracker.services.access import project_ids_with_role

    qs = DatasetVersion.objects.filter(state=DatasetVersion.State.READY)
    user = view.request.user
    return qs if user.is_superuser else qs.filter(dataset__project__in=project_ids_with_role(user, "viewer"))


class _RunLookup:
    """Runs by public id, 404 outside the user's projects."""

    lookup_field = "uid"
    lookup_url_kwarg = "id"
    lookup_value_regex = r"[0-9a-zA-Z]{1,32}"

    def visible_run(self: Any, ref: str) -> Run:
        """The visible run with this id, or the one visible run whose id starts with it (4+)."""
        from tracker.services.runs import lookup_uid

        found = lookup_uid(self.scope(Run.objects.all()), ref)
        if found is None:
            raise RunNotFound(f"There is no run {ref!r} in a project you are a member of.")
        return found


@extend_schema(tags=["runs"])
class RunDetailViewSet(_RunLookup, ProjectScopedViewSet):
    """Resume, notes, dataset lineage and typed metric history of one run."""

    queryset = Run.objects.select_related("project", "parent")
    pagination_class = None
    filter_backends: list[Any] = []
    serializer_class = s.ResumedSerializer

    @extend_schema(request=s.ResumeSerializer, responses=s.ResumedSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request: Any, id: Any = None) -> Response:
        """Continue a run, as ``start_run(resume=id)`` does: status back to running (the client
        sends heartbeats and the end again), params added (a changed value is 409 and changes
        nothing), tags set, notes appended; the answer has each key's next metric step."""
        from tracker.services._runs_values import flatten
        from tracker.services.runs import reopen
        from tracker_api.serializers.runs import RunSerializer

        run = self.get_object()
        d = _valid(s.ResumeSerializer, request.data)
        timeout = d["heartbeat_timeout"] if d["heartbeat_timeout"] is not None else float(conf.get("HEARTBEAT_TIMEOUT"))
        run, steps = reopen(
            run, flatten(d["params"], "param"), flatten(d["tags"], "tag"), d["notes"],
            host=d["host"], pid=d["pid"], heartbeat_timeout=timeout,
        )
        return Response({"run": RunSerializer(run).data, "next_steps": steps})

    @extend_schema(request=s.NotesSerializer, responses=s.NotesOutSerializer)
    @action(detail=True, methods=["post"])
    def notes(self, request: Any, id: Any = None) -> Response:
        """Replace the run's notes, or append a paragraph (``append``); allowed after it ended."""
        from tracker.services.runs import set_notes

        run = self.get_object()
        d = _valid(s.NotesSerializer, request.data)
        return Response({"notes": set_notes(run, d["text"], append=d["append"])})

    @extend_schema(methods=["GET"], responses=s.InputOutSerializer(many=True))
    @extend_schema(methods=["POST"], request=s.InputSerializer, responses={201: s.InputOutSerializer})
    @action(detail=True, methods=["get", "post"])
    def inputs(self, request: Any, id: Any = None) -> Response:
        """GET: the dataset versions the run used, oldest use first. POST: record that it used a
        version (of a project you can read) in a context; idempotent."""
        from tracker.services.datasets import use_dataset

        run = self.get_object()
        versions = _visible_versions(self)
        if request.method == "POST":
            d = _valid(s.InputSerializer, request.data)
            version = versions.filter(pk=d["version"]).select_related("dataset__project", "snapshot").first()
            if version is None:
                raise DatasetNotFound(f"There is no ready dataset version {d['version']} in a project you are a member of.")
            use = use_dataset(run, version.pk, d["context"])
            return Response({"version": VersionSerializer(version).data, "context": use.context},
                            status=status.HTTP_201_CREATED)
        uses = (
            RunInput.objects.filter(run=run, version__in=versions)
            .select_related("version__dataset__project", "version__snapshot")
            .order_by("created_at", "id")
        )
        return Response([{"version": VersionSerializer(u.version).data, "context": u.context} for u in uses])

    @extend_schema(
        parameters=[
            OpenApiParameter("key", str, many=True, description="A metric key (repeat for several); default: all."),
            OpenApiParameter("wide", bool, description="One row per step and a column per key (default), "
                                                       "or long rows of key, step, value, timestamp."),
        ],
        responses=s.TableSerializer,
    )
    @action(detail=True, methods=["get"])
    def history(self, request: Any, id: Any = None) -> Response:
        """The run's metric points as the DataFrame ``run.history()`` returns, typed."""
        from tracker.services import runs as core

        run = self.get_object()
        keys = request.query_params.getlist("key") or None
        wide = query_flag(request.query_params, "wide", True)
        return Response(frames.encode(core.history([run.pk], keys, wide=wide, with_run=False)))


FORCE = OpenApiParameter(
    "force", bool, description="Also delete its annotations and their history (refused with 409 otherwise)."
)


def force_flag(request: Any) -> bool:
    """The ``?force=`` flag of a DELETE."""
    return query_flag(request.query_params, "force", False)


@extend_schema(tags=["runs"])
class RunQueryViewSet(_RunLookup, ProjectScopedViewSet):
    """``tracker.runs(...)`` over HTTP: the notebook API's filters, its frames and comparisons."""

    queryset = Run.objects.select_related("project", "parent")
    pagination_class = None
    filter_backends: list[Any] = []
    serializer_class = s.RunPageSerializer
    write_role = "viewer"  # POST carries the filters here; nothing is written

    def _runs(self, d: dict[str, Any]) -> Any:
        from tracker.services import runs as core

        parent = self.visible_run(d["parent"]) if d["parent"] else None
        names = ("status", "name", "tags", "params", "metrics", "ids", "since", "order_by")
        qs = core.filter_runs(d["project"], parent=parent, **{k: d[k] for k in names if d[k] is not None})
        qs = self.scope(qs)
        if d["id_prefix"]:
            qs = qs.filter(uid__startswith=d["id_prefix"])
        if not qs.query.order_by:
            qs = qs.order_by("-started_at", "-id")
        return qs[: d["limit"]] if d["limit"] is not None else qs

    @extend_schema(request=s.RunSearchSerializer, responses=s.RunPageSerializer)
    @action(detail=False, methods=["post"])
    def search(self, request: Any) -> Response:
        """Runs matching the filters of ``tracker.runs(...)``, a page at a time (``offset``,
        ``page_size``), each with its last metric values and the dataset versions it used.
        A running run whose heartbeats stopped reads (and is stored) as killed."""
        from tracker.services import runs as core
        from tracker.services.datasets import run_inputs_summary

        d = _valid(s.RunSearchSerializer, request.data)
        core.reap_stale()
        qs = self._runs(d)
        count = qs.count()
        start = d["offset"]
        page = list(qs.select_related("project", "parent")[start : start + d["page_size"]]) if d["page_size"] else []
        pks = [r.pk for r in page]
        last: dict[int, dict[str, Any]] = {}
        for run_id, key, value in MetricSummary.objects.filter(run_id__in=pks).values_list("run_id", "key", "last"):
            last.setdefault(run_id, {})[key] = _finite(value)
        used = run_inputs_summary(pks)
        for r in page:
            r.metrics, r.datasets = last.get(r.pk, {}), used.get(r.pk, [])
        end = start + len(page)
        return Response({
            "count": count,
            "results": s.RunRowSerializer(page, many=True).data,
            "next_offset": end if page and end < count else None,
        })

    @extend_schema(request=s.RunQuerySerializer, responses=s.TableSerializer)
    @action(detail=False, methods=["post"])
    def frame(self, request: Any) -> Response:
        """The runs as ``tracker.runs_frame(...)`` returns them: a row per run, typed."""
        from tracker.services import runs as core

        d = _valid(s.RunQuerySerializer, request.data)
        return Response(frames.encode(core.runs_frame(self._runs(d))))

    @extend_schema(request=s.HistoryQuerySerializer, responses=s.TableSerializer)
    @action(detail=False, methods=["post"], url_path="history")
    def histories(self, request: Any) -> Response:
        """Metric histories of the matching runs as ``tracker.runs(...).history()`` returns them:
        index (run, step) and a column per key, or long rows with a run column."""
        from tracker._sync.runs import _pk_level_to_uid
        from tracker.services import runs as core

        d = _valid(s.HistoryQuerySerializer, request.data)
        qs = self._runs(d)
        uids = dict(qs.values_list("pk", "uid"))
        frame = core.history(list(uids), d["keys"], wide=d["wide"], with_run=True)
        return Response(frames.encode(_pk_level_to_uid(frame, uids, d["wide"])))

    @extend_schema(request=s.CompareSerializer, responses=s.TableSerializer)
    @action(detail=False, methods=["post"])
    def compare(self, request: Any) -> Response:
        """Runs side by side, as ``tracker.compare(...)``: a column per run, a row per field."""
        from tracker.services import runs as core

        d = _valid(s.CompareSerializer, request.data)
        core.reap_stale()
        runs = [self.visible_run(ref) for ref in d["runs"]]
        return Response(frames.encode(core.compare(runs, only_differences=d["only_differences"])))


@extend_schema(tags=["annotation"])
class TaskLabelsViewSet(ProjectScopedViewSet):
    """Agreement between annotators and final labels of a task."""

    queryset = AnnotationTask.objects.select_related("project")
    pagination_class = None
    filter_backends: list[Any] = []
    serializer_class = s.AgreementRowSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("metric", enum=["nominal", "ordinal", "interval"], default="nominal",
                             description="Krippendorff's difference function (ordinal/interval: rating tasks)."),
            OpenApiParameter("annotator", str, many=True, description="Only these usernames (repeat for several)."),
        ],
        responses=s.AgreementRowSerializer(many=True),
    )
    @action(detail=True, methods=["get"])
    def agreement(self, request: Any, pk: Any = None) -> Response:
        """Inter-annotator agreement, as ``tracker.agreement``: an overall row, one per label, per
        annotator and per pair; NaN (not defined) is null."""
        from tracker.services.agreement import agreement

        task = self.get_object()
        q = request.query_params
        names = q.getlist("annotator") or None
        frame = agreement(task.project, task, metric=q.get("metric", "nominal"), annotators=names)
        return Response(_records(frame))

    @extend_schema(
        parameters=[
            OpenApiParameter("strategy", str, many=True, description=(
                "majority (default), accepted or latest; repeat to try several in order.")),
            OpenApiParameter("sample", int, many=True, description="Only these sample ids (repeat for several)."),
        ],
        responses=s.ResolvedRowSerializer(many=True),
    )
    @action(detail=True, methods=["get"], url_path="resolved-labels")
    def resolved_labels(self, request: Any, pk: Any = None) -> Response:
        """Final labels per sample, as ``tracker.resolve_labels``; rejected annotations are
        ignored and samples without a final label are left out."""
        from tracker.services.agreement import resolve_labels

        task = self.get_object()
        q = request.query_params
        strategy = q.getlist("strategy") or ["majority"]
        samples = None
        if raw := q.getlist("sample"):
            try:
                samples = [int(v) for v in raw]
            except ValueError:
                raise InvalidValue("sample takes sample ids (integers).") from None
        frame = resolve_labels(task.project, task, strategy, samples=samples)
        return Response(_records(frame))


@extend_schema(tags=["annotation"])
class LabelStudioViewSet(ProjectScopedViewSet):
    """Label Studio JSON: export a project's samples with annotations and predictions, import an
    export (samples, tasks, annotations, predictions) all or nothing."""

    queryset = Project.objects.none()
    pagination_class = None
    filter_backends: list[Any] = []
    serializer_class = s.LabelStudioImportedSerializer
    action_roles = {"export": "viewer", "import_": "editor"}

    @extend_schema(
        operation_id="label_studio_export",
        parameters=[
            OpenApiParameter("project", str, required=True, description="Project name."),
            OpenApiParameter("task", str, many=True, description="Only these tasks (repeat for several); default all."),
        ],
        responses={(200, "application/json"): {"type": "array", "items": s._LS_TASK}},
    )
    @action(detail=False, methods=["get"])
    def export(self, request: Any) -> Response:
        """The project's samples as Label Studio tasks, with every annotation (review status in
        a ``tracker`` key, so re-importing gives identical annotations) and prediction.
        Streamed, a page of samples at a time: the server never holds the whole export."""
        from tracker.services.interchange import iter_label_studio
        from tracker_api.streaming import json_array, stream

        q = request.query_params
        if not q.get("project"):
            raise InvalidValue("Name the project: ?project=<name>.")
        project = self.project_for(q["project"], "viewer")
        items = iter_label_studio(project, q.getlist("task") or None)  # unknown tasks raise here
        return stream(request, json_array(items), content_type="application/json")

    @extend_schema(
        operation_id="label_studio_import",
        parameters=[
            OpenApiParameter("project", str, required=True, description="Project name; created on first use."),
            OpenApiParameter("map", str, many=True, description=(
                "from_name:task, to import a Label Studio control tag into a task of another name.")),
            OpenApiParameter("annotator", str, description="Username for annotations without completed_by "
                                                           "(default: you)."),
        ],
        request={"application/json": {"type": "array", "items": s._LS_TASK}},
        responses={201: s.LabelStudioImportedSerializer},
    )
    @action(detail=False, methods=["post"], url_path="import")
    def import_(self, request: Any) -> Response:
        """Import a Label Studio JSON export (the body): samples by ``meta.external_id`` or task
        id, missing tasks created from the result types, annotations under the usernames in
        ``completed_by``, predictions replaced per model version. Nothing is stored if anything
        is wrong; the answer counts what was imported."""
        from tracker.services.interchange import import_label_studio

        q = request.query_params
        if not q.get("project"):
            raise InvalidValue("Name the project: ?project=<name>.")
        mapping = {}
        for item in q.getlist("map"):
            source, sep, target = item.partition(":")
            if not sep or not source or not target:
                raise InvalidValue(f"map takes from_name:task, not {item[:80]!r}.")
            mapping[source] = target
        body = request.data
        if not isinstance(body, list):
            raise InvalidValue("The body is a Label Studio JSON export: a list of tasks.")
        project = self.project_for(q["project"], "editor", create=True)
        me = request.user.get_username()
        annotator = q.get("annotator") or me

        def authorize(names: set[str]) -> None:
            # Annotations under other people's names: an editor could otherwise put words in
            # anyone's mouth (and create accounts by naming them). A project admin may.
            others = sorted(names - {me})
            if others and not access.has_role(permissions.role_in(request, project.pk), "admin"):
                from tracker.exceptions import PermissionDenied

                shown = ", ".join(repr(n) for n in others[:5]) + (" ..." if len(others) > 5 else "")
                raise PermissionDenied(
                    f"This import stores annotations under other users' names ({shown}); that needs "
                    f"the admin role in project {project.name!r}. Ask an admin to import it, or "
                    f"import your own annotations only. Nothing was imported."
                )

        try:
            counts = import_label_studio(project, body, tasks=mapping, annotator=annotator, authorize=authorize)
        except (AttributeError, KeyError, TypeError) as exc:
            # A structure the export format does not have (a list where an object belongs):
            # the document's fault, and the import's transaction stored nothing.
            raise InvalidValue(
                f"The Label Studio export has an unexpected structure ({type(exc).__name__}: {exc}); "
                f"send the JSON Label Studio exports. Nothing was imported."
            ) from None
        return Response(counts, status=status.HTTP_201_CREATED)
