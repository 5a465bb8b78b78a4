"""Runs: create, finish, heartbeat, params, tags, metric ingest and history, artifacts.

A run created over HTTP belongs to its client: the client sends its heartbeats and its final
status (``tracker.configure(server_url=...)`` does), so a client that dies is reported killed
by the same heartbeat rule as a local process. Writes go through the runs core's sink, the
same unit of work the local flusher uses.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import django_filters
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response

from tracker import conf
from tracker.exceptions import InvalidValue, RunNotFound
from tracker.models import Artifact, Run
from tracker_api.base import ProjectScopedViewSet, query_flag
from tracker_api.fastpath import FastPosts
from tracker_api.serializers import runs as s
from tracker_api.streaming import SpooledUpload, file_chunks, stream

_SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
MAX_HISTORY_POINTS = 1_000_000
MAX_TIMESTAMP = 253_402_300_799.0  # 9999-12-31T23:59:59Z, the last second Python's datetime holds


def sink_write(run: Any, points: Any, fields: Any, *, synchronous: bool = True) -> int:
    """One unit of work through the runs core's database sink (the local flusher's path):
    create the run (``run`` a creation spec) or write to it (``run`` a pk), points and fields.
    ``synchronous=False``: see :meth:`tracker.services.metrics.DatabaseSink.write_many`."""
    from tracker.services.metrics import DatabaseSink

    return DatabaseSink().write_many([(run, points, fields)], synchronous=synchronous)[0]


DURABLE = OpenApiParameter(
    "durable", bool,
    description=(
        "true: answer only once the points are on disk. By default (TRACKER "
        "API_METRICS_SYNCHRONOUS_COMMIT off) PostgreSQL acknowledges before its log reaches the "
        "disk, and a crash of the database server can lose the last fraction of a second of "
        "points; a durable request also makes every earlier one durable."
    ),
)


def synchronous_commit(query: Any) -> bool:
    """Whether an ingest waits for the disk: ``?durable=`` if given, else the setting."""
    return query_flag(query, "durable", bool(conf.get("API_METRICS_SYNCHRONOUS_COMMIT")))


def ingest_fast(request: Any, key: str, id: str) -> Any:
    """``POST /api/runs/{id}/metrics/`` answered without DRF when it is an ordinary success
    (see :mod:`tracker_api.fastpath`); None hands the request to :meth:`RunViewSet.metrics`."""
    from tracker.services.access import has_role
    from tracker.services.metrics import ONE_TRIP_POINTS, guarded_write_ctes
    from tracker_api.authentication import GuardedWrite, caller
    from tracker_api.fastpath import answer, json_body

    body = json_body(request)
    points = body.get("points") if body.__class__ is dict else None
    if points.__class__ is not list:
        return None
    now = time.time()
    try:
        synchronous = synchronous_commit(request.GET) if request.META.get("QUERY_STRING") else bool(
            conf.get("API_METRICS_SYNCHRONOUS_COMMIT"))
        parsed = parse_points(points, now)
    except InvalidValue:
        return None
    # A few points are written by the statement that checks the caller (PostgreSQL: one round
    # trip), guarded by the rules the check applies; elsewhere they are written after it.
    write = None
    if 0 < len(parsed) <= ONE_TRIP_POINTS:
        write = GuardedWrite("editor", lambda runs: guarded_write_ctes(runs, parsed, now), synchronous)
    found = caller(key, Run, "uid", id, write=write)
    if found is None or not has_role(found.role, "editor"):
        return None
    request.user = found.user  # as DRF leaves it, for middleware and logging after the view
    if parsed and not found.wrote:
        sink_write(found.object_pk, parsed, None, synchronous=synchronous)
    return answer({"points": len(parsed)}, status.HTTP_201_CREATED)


def _valid(cls: Any, data: Any) -> dict[str, Any]:
    ser = cls(data=data)
    ser.is_valid(raise_exception=True)
    return ser.validated_data


def parse_points(points: list[Any], now: float) -> list[tuple[str, int, float, float]]:
    """JSON points as the core's (key, step, value, timestamp) tuples; the whole batch or an
    InvalidValue naming the first bad point (so nothing of a bad batch is stored)."""
    from tracker.services._runs_values import INT64_MAX, INT64_MIN, check_key, metric_step, metric_value

    out = []
    append = out.append
    seen: dict[str, str] = {}
    for i, p in enumerate(points):
        # The common point (a checked key, an int step, a float value, no timestamp) without
        # a call per field: a 1000-point batch spends more here than in the database.
        if p.__class__ is dict and len(p) == 3:
            key, step, value = p.get("key"), p.get("step"), p.get("value")
            if (
                key.__class__ is str
                and key in seen
                and step.__class__ is int
                and INT64_MIN <= step <= INT64_MAX
                and value.__class__ is float
            ):
                append((key, step, value, now))
                continue
        if not isinstance(p, dict):
            raise InvalidValue(
                f"Point {i} is a {type(p).__name__}; send objects like {{'key': 'loss', 'step': 3, "
                f"'value': 0.5}}. Nothing of this batch was stored."
            )
        try:
            key, step, value = p["key"], p["step"], p["value"]
        except KeyError as exc:
            raise InvalidValue(
                f"Point {i} has no {exc.args[0]!r}; each point needs key, step and value. Nothing of "
                f"this batch was stored."
            ) from None
        try:
            k = seen.get(key) if key.__class__ is str else None
            if k is None:
                k = check_key(key, "metric")
                seen[k] = k
            step = metric_step(k, step)
            if value is None:
                v = math.nan  # JSON has no NaN: null (or "NaN") stands for it
            elif value.__class__ is str:
                if value not in _SPECIAL:
                    raise InvalidValue(f"Metric {k!r} got the string {value[:40]!r}; send a number, null, \"NaN\", \"Infinity\" or \"-Infinity\".")
                v = _SPECIAL[value]
            else:
                v = metric_value(k, value)
            ts = p.get("timestamp", now)
            if ts.__class__ is not float:
                if isinstance(ts, bool) or not isinstance(ts, (int, float)):
                    raise InvalidValue(f"Metric {k!r}: timestamp must be unix seconds (a number), not {ts!r:.40}.")
                ts = float(ts)
            if not math.isfinite(ts) or not 0 <= ts <= MAX_TIMESTAMP:
                raise InvalidValue(
                    f"Metric {k!r}: timestamp {ts:.6g} is not a time; send unix seconds between 0 "
                    f"(1970) and {MAX_TIMESTAMP:.0f} (the year 9999), or leave it out for now."
                )
        except InvalidValue as exc:
            raise InvalidValue(f"Point {i}: {exc} Nothing of this batch was stored.") from None
        append((k, step, v, ts))
    return out


class RunFilter(django_filters.FilterSet):
    project = django_filters.CharFilter(field_name="project__name")
    name = django_filters.CharFilter()
    status = django_filters.ChoiceFilter(choices=Run.Status.choices)
    parent = django_filters.CharFilter(field_name="parent__uid", help_text="Parent run id.")
    started_after = django_filters.IsoDateTimeFilter(field_name="started_at", lookup_expr="gt")

    class Meta:
        model = Run
        fields = ["project", "name", "status", "parent", "started_after"]


@extend_schema(tags=["runs"])
class RunViewSet(FastPosts, mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectScopedViewSet):
    """Training runs of your projects. Editors create runs and log to them."""

    queryset = Run.objects.select_related("project", "parent")
    serializer_class = s.RunSerializer
    filterset_class = RunFilter
    lookup_field = "uid"
    lookup_url_kwarg = "id"
    lookup_value_regex = r"[0-9a-zA-Z]{1,32}"
    ordering_fields = ["id", "started_at", "name"]
    ordering = ["-id"]
    fast_posts = {"metrics": ingest_fast}  # a point per request: see tracker_api.fastpath

    def get_queryset(self) -> Any:
        if self._lean():
            return self.scope(Run.objects.only("id", "uid", "project_id"))
        return super().get_queryset()

    def _lean(self) -> bool:
        return self.action in ("heartbeat", "artifacts", "artifact") or (
            self.action == "metrics" and self.request.method == "POST"
        )

    def get_object(self) -> Any:
        if not self._lean():
            return super().get_object()
        # The hot write paths (a metric point per request, heartbeats) need the run's pk and
        # project and the caller's role there: one fixed query instead of three ORM ones.
        from django.db import connection

        from tracker.models import ProjectMembership
        from tracker.services.access import has_role

        q = connection.ops.quote_name
        uid = self.kwargs[self.lookup_url_kwarg]
        with connection.cursor() as cur:
            cur.execute(
                f"SELECT r.{q('id')}, r.{q('project_id')}, m.{q('role')} FROM {q(Run._meta.db_table)} r "
                f"LEFT JOIN {q(ProjectMembership._meta.db_table)} m ON m.{q('project_id')} = r.{q('project_id')} "
                f"AND m.{q('user_id')} = %s WHERE r.{q('uid')} = %s",
                [self.request.user.pk, uid],
            )
            row = cur.fetchone()
        role = None
        if row is not None:
            role = "admin" if self.request.user.is_superuser else row[2]
        if role is None:
            raise RunNotFound(f"There is no run {uid!r} in a project you are a member of.")
        need = self.required_role()
        if not has_role(role, need):
            from tracker.exceptions import PermissionDenied

            raise PermissionDenied(
                f"This needs the {need} role in the run's project; you are {role}. Ask a project "
                f"admin to raise your role."
            )
        run = Run.from_db(connection.alias, ["id", "uid", "project_id"], [row[0], uid, row[1]])
        self.request._tracker_roles = {**(getattr(self.request, "_tracker_roles", None) or {}), row[1]: row[2]}
        return run

    @extend_schema(request=s.RunCreateSerializer, responses={201: s.RunSerializer})
    def create(self, request: Any) -> Response:
        """Start a run (status running). The client sends heartbeats and finishes it."""
        from tracker.models.runs import new_run_uid
        from tracker.services._runs_values import check_name, flatten

        d = _valid(s.RunCreateSerializer, request.data)
        project = self.project_for(d["project"], "editor", create=True)
        parent = None
        if d["parent"]:
            parent = Run.objects.filter(uid=d["parent"], project=project).first()
            if parent is None:
                raise RunNotFound(f"Project {project.name!r} has no run {d['parent'][:32]!r} to be the parent.")
        now = timezone.now()
        values = dict(
            uid=new_run_uid(), name=check_name(d["name"]), parent_id=parent.pk if parent else None,
            status=Run.Status.RUNNING, params=flatten(d["params"], "param"),
            tags={k: v for k, v in flatten(d["tags"], "tag").items() if v is not None},
            notes=d["notes"], error="", started_at=now, heartbeat_at=now,
            heartbeat_timeout=d["heartbeat_timeout"] if d["heartbeat_timeout"] is not None else float(conf.get("HEARTBEAT_TIMEOUT")),
            host=d["host"], pid=d["pid"], git_commit=d["git_commit"], git_dirty=d["git_dirty"],
            python_version=d["python_version"], packages=d["packages"],
            created_by_id=request.user.pk,
        )
        pk = sink_write({"values": values, "project": project.pk}, [], None)
        run = Run.objects.select_related("project", "parent").get(pk=pk)
        return Response(s.RunSerializer(run).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: None})
    def destroy(self, request: Any, id: Any = None) -> Response:
        """Delete a run that is not running, with its metrics, params, tags, artifact records
        and lineage (artifact bytes stay until ``tracker gc``); a running run is 409."""
        from tracker.services.deletions import delete_run

        delete_run(self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=s.FinishSerializer, responses=s.RunSerializer)
    @action(detail=True, methods=["post"])
    def finish(self, request: Any, id: Any = None) -> Response:
        """Set the final status (finished, failed or killed) and the end time."""
        run = self.get_object()
        d = _valid(s.FinishSerializer, request.data)
        sink_write(run.pk, [], {"status": d["status"], "ended_at": timezone.now(), "error": d["error"]})
        run.refresh_from_db()
        return Response(s.RunSerializer(run).data)

    @extend_schema(request=None, responses={204: None})
    @action(detail=True, methods=["post"])
    def heartbeat(self, request: Any, id: Any = None) -> Response:
        """The client is alive: a running run is not reported killed while these arrive."""
        from tracker.services.metrics import DatabaseSink

        run = self.get_object()
        DatabaseSink().heartbeat([run.pk])
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=s.ParamsSerializer, responses=s.MapSerializer)
    @action(detail=True, methods=["post"])
    def params(self, request: Any, id: Any = None) -> Response:
        """Add params (nested objects are flattened with dots); a changed value is 409."""
        from tracker.services.runs import log_params

        run = self.get_object()
        d = _valid(s.ParamsSerializer, request.data)
        return Response({"values": log_params(run, d["params"])})

    @extend_schema(request=s.TagsSerializer, responses=s.MapSerializer)
    @action(detail=True, methods=["post"])
    def tags(self, request: Any, id: Any = None) -> Response:
        """Set tags (null removes one); allowed after the run ended."""
        from tracker.services.runs import set_tags

        run = self.get_object()
        d = _valid(s.TagsSerializer, request.data)
        return Response({"values": set_tags(run, d["tags"])})

    @extend_schema(
        methods=["GET"],
        parameters=[
            OpenApiParameter("keys", str, description="Comma-separated metric keys; default: all."),
            OpenApiParameter("max_points", int, description="At most this many points per key (extremes kept)."),
        ],
        responses=s.HistorySerializer,
    )
    @extend_schema(methods=["POST"], parameters=[DURABLE], request=s.MetricsIngestSerializer,
                   responses={201: s.IngestedSerializer})
    @action(detail=True, methods=["get", "post"], pagination_class=None, filter_backends=[])
    def metrics(self, request: Any, id: Any = None) -> Response:
        """POST: store a batch of points in one transaction. GET: the history per key."""
        run = self.get_object()
        if request.method == "POST":
            d = _valid(s.MetricsIngestSerializer, request.data)
            synchronous = synchronous_commit(request.query_params)
            points = parse_points(d["points"], time.time())
            if points:
                sink_write(run.pk, points, None, synchronous=synchronous)
            return Response({"points": len(points)}, status=status.HTTP_201_CREATED)
        return Response({"run": run.uid, "keys": self._history(run, request.query_params)})

    def _history(self, run: Run, q: Any) -> dict[str, Any]:
        import numpy as np

        from tracker.services.metrics import read_points
        from tracker_api.downsample import minmax_indices

        keys = [k for k in q.get("keys", "").split(",") if k] or None
        raw = q.get("max_points")
        max_points = None
        if raw is not None:
            try:
                max_points = int(raw)
                if not 2 <= max_points <= MAX_HISTORY_POINTS:
                    raise ValueError
            except ValueError:
                raise InvalidValue(f"max_points must be a whole number from 2 to {MAX_HISTORY_POINTS}, not {raw[:40]!r}.") from None
        pts = read_points([run.pk], keys)
        out: dict[str, Any] = {}
        if not len(pts):
            return out
        key_col = pts["key"]
        for key in dict.fromkeys(key_col.tolist()):
            sel = pts[key_col == key]
            count = len(sel)
            if max_points is not None:
                sel = sel[minmax_indices(sel["value"], max_points)]
            values = sel["value"]
            out[key] = {
                "step": sel["step"].tolist(),
                "value": np.where(np.isfinite(values), values, np.nan).astype(object).tolist(),
                "timestamp": sel["timestamp"].tolist(),
                "count": count,
            }
            # JSON has no NaN/inf: they travel as null.
            out[key]["value"] = [None if (v != v or v in (math.inf, -math.inf)) else v for v in out[key]["value"]]
        return out

    @extend_schema(responses=s.ArtifactSerializer(many=True))
    @action(detail=True, methods=["get"], url_path="artifacts", pagination_class=None, filter_backends=[])
    def artifacts(self, request: Any, id: Any = None) -> Response:
        """The run's artifacts (name, size, sha256)."""
        run = self.get_object()
        arts = Artifact.objects.filter(run=run).select_related("run").order_by("name")
        return Response(s.ArtifactSerializer(arts, many=True).data)

    @extend_schema(
        methods=["GET"],
        parameters=[OpenApiParameter("name", str, OpenApiParameter.PATH, description="Artifact name, e.g. plots/loss.png.")],
        responses={(200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY, description="The bytes, streamed; X-Content-SHA256 and Content-Length headers.")},
    )
    @extend_schema(
        methods=["PUT"],
        parameters=[
            OpenApiParameter("name", str, OpenApiParameter.PATH, description="Artifact name, e.g. plots/loss.png."),
            OpenApiParameter("overwrite", bool, description="Replace other bytes stored under this name."),
            OpenApiParameter("X-Content-SHA256", str, OpenApiParameter.HEADER, description="The sha256 the client computed; a mismatch is refused."),
            OpenApiParameter("X-Artifact-Metadata", str, OpenApiParameter.HEADER, description="A JSON object stored with the artifact."),
            OpenApiParameter("X-Artifact-Kind", enum=list(Artifact.Kind.values), location=OpenApiParameter.HEADER,
                             description="What the bytes are (dataframe: Parquet a client reads back as a DataFrame); default file."),
        ],
        request={"application/octet-stream": OpenApiTypes.BINARY},
        responses={201: s.ArtifactSerializer},
    )
    @action(detail=True, methods=["get", "put"], url_path=r"artifacts/(?P<name>[^?#]+?)", body_limit="upload",
            pagination_class=None, filter_backends=[])
    def artifact(self, request: Any, id: Any = None, name: str = "") -> Any:
        """GET: download the artifact, streamed. PUT: upload the request body as the artifact."""
        from tracker.services import artifacts as core

        run = self.get_object()
        if request.method == "GET":
            info = core.get_artifact(run, name)
            fh = core.open_artifact(info)
            headers = {
                "Content-Length": str(info.size),
                "X-Content-SHA256": info.sha256,
                "Content-Disposition": f'attachment; filename="{_safe(name.rsplit("/", 1)[-1])}"',
            }
            return stream(request, file_chunks(fh), content_type="application/octet-stream", headers=headers)
        name = core.check_artifact_name(name)
        overwrite = query_flag(request.query_params, "overwrite", False)
        kind = request.headers.get("X-Artifact-Kind", Artifact.Kind.FILE)
        if kind not in Artifact.Kind.values:
            raise InvalidValue(f"X-Artifact-Kind must be one of {', '.join(Artifact.Kind.values)}, not {kind[:40]!r}.")
        claimed = request.headers.get("X-Content-SHA256", "").strip().lower()
        with SpooledUpload(request, suffix=".upload") as upload:
            if claimed and claimed != upload.sha256:
                raise InvalidValue(
                    f"The upload's sha256 is {upload.sha256}, not {claimed[:64]} as the client said: the "
                    f"bytes changed on the way. Nothing was stored; send it again."
                )
            meta = {"source": request.headers.get("X-Artifact-Source", "upload")[:500]}
            if raw_meta := request.headers.get("X-Artifact-Metadata"):
                try:
                    extra = json.loads(raw_meta)
                except ValueError:
                    extra = None
                if not isinstance(extra, dict):
                    raise InvalidValue("X-Artifact-Metadata must be a JSON object.")
                meta.update(extra)
            infos = core.log_artifact(run, upload.path, name=name, overwrite=overwrite, metadata=meta)
        art = Artifact.objects.select_related("run").get(run=run, name=infos[0].name)
        if art.kind != kind:  # the client logged a DataFrame, a figure, bytes or a directory's file
            Artifact.objects.filter(pk=art.pk).update(kind=kind)
            art.kind = kind
        response = Response(s.ArtifactSerializer(art).data, status=status.HTTP_201_CREATED)
        response["X-Content-SHA256"] = art.sha256
        return response


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:200] or "artifact"
