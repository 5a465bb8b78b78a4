"""Annotation tasks, annotations, review, predictions and the queue (claim next)."""

from __future__ import annotations

from typing import Any

import django_filters
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response

from tracker.exceptions import RunNotFound, TaskNotFound
from tracker.models import Annotation, AnnotationTask, Prediction, Run, Sample
from tracker.services._prebuilt import Prebuilt
from tracker_api.base import ProjectScopedViewSet
from tracker_api.fastpath import FastPosts
from tracker_api.serializers import labeling as s
from tracker_api.views.interchange import FORCE, force_flag


def _valid(cls: Any, data: Any) -> dict[str, Any]:
    ser = cls(data=data)
    ser.is_valid(raise_exception=True)
    return ser.validated_data


class TaskFilter(django_filters.FilterSet):
    project = django_filters.CharFilter(field_name="project__name")
    name = django_filters.CharFilter()
    kind = django_filters.ChoiceFilter(choices=AnnotationTask.Kind.choices)

    class Meta:
        model = AnnotationTask
        fields = ["project", "name", "kind"]


@extend_schema(tags=["annotation"])
class TaskViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectScopedViewSet):
    """Label schemas. POST defines or changes one (editor); ``next`` claims samples to label."""

    queryset = AnnotationTask.objects.select_related("project")
    serializer_class = s.TaskSerializer
    filterset_class = TaskFilter
    ordering_fields = ["id", "name", "created_at"]
    ordering = ["id"]
    action_roles = {"next": "annotator", "release": "annotator"}

    @extend_schema(request=s.TaskDefineSerializer, responses={201: s.TaskSerializer})
    def create(self, request: Any) -> Response:
        """Define a task, or change the one of that name (its annotations are re-checked)."""
        from tracker.services.labeling import define_task

        d = _valid(s.TaskDefineSerializer, request.data)
        project = self.project_for(d.pop("project"), "editor", create=True)
        task = define_task(project, d.pop("name"), d.pop("kind"), d.pop("labels"), **d)
        return Response(s.TaskSerializer(task).data, status=status.HTTP_201_CREATED)

    @extend_schema(parameters=[FORCE], responses={204: None})
    def destroy(self, request: Any, pk: Any = None) -> Response:
        """Delete a task with its predictions and claims; one with annotations needs ``?force=true``."""
        from tracker.services.deletions import delete_task

        delete_task(self.get_object(), force=force_flag(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=s.NextSerializer, responses=s.ClaimedSerializer)
    @action(detail=True, methods=["post"])
    def next(self, request: Any, pk: Any = None) -> Response:
        """Claim the next samples to label (each held for you until the claim expires)."""
        from tracker.services.queue import next_samples

        task = self.get_object()
        d = _valid(s.NextSerializer, request.data)
        got = next_samples(task.project, task, d["n"], annotator=request.user, strategy=d["strategy"], ttl=d["ttl"])
        for sample in got:
            sample.project = task.project  # for the serializer, without a query per sample
        return Response({"samples": s.SampleSerializer(got, many=True).data})

    @extend_schema(request=s.ReleaseSerializer, responses=s.ReleasedSerializer)
    @action(detail=True, methods=["post"])
    def release(self, request: Any, pk: Any = None) -> Response:
        """Give back your claims on this task (all, or the samples named)."""
        from tracker.services.queue import release

        task = self.get_object()
        d = _valid(s.ReleaseSerializer, request.data)
        return Response({"released": release(task.project, task, d["samples"], annotator=request.user)})


class AnnotationFilter(django_filters.FilterSet):
    project = django_filters.CharFilter(field_name="task__project__name")
    task = django_filters.NumberFilter(field_name="task_id")
    sample = django_filters.NumberFilter(field_name="sample_id")
    external_id = django_filters.CharFilter(field_name="sample__external_id")
    annotator = django_filters.CharFilter(field_name="annotator__username")
    status = django_filters.ChoiceFilter(choices=Annotation.Status.choices)

    class Meta:
        model = Annotation
        fields = ["project", "task", "sample", "external_id", "annotator", "status"]


def annotate_fast(request: Any, key: str) -> Any:
    """``POST /api/annotations/`` answered without DRF when it is an ordinary success (see
    :mod:`tracker_api.fastpath`); None hands the request to :meth:`AnnotationViewSet.create`,
    which answers every error as before. The same core call stores the annotation."""
    from tracker.exceptions import TrackerError
    from tracker.services.access import has_role
    from tracker.services.labeling import annotate
    from tracker_api.authentication import caller
    from tracker_api.fastpath import answer, json_body

    body = json_body(request)
    if body.__class__ is not dict:
        return None
    task_id, sample, value = body.get("task"), body.get("sample"), body.get("value")
    # Exactly what AnnotateSerializer accepts unchanged; anything else takes the DRF path.
    if task_id.__class__ is not int or not 0 < task_id < 2**63 or value is None:
        return None
    if not (sample.__class__ is str and 0 < len(sample) <= 255) and not (sample.__class__ is int and 0 < sample < 2**63):
        return None
    found = caller(key, AnnotationTask, "id", task_id)
    if found is None or not has_role(found.role, "annotator"):
        return None
    task = _TASK.first(found.object_pk)
    if task is None:  # deleted a moment ago
        return None
    sample_obj = (_SAMPLE_BY_NAME if sample.__class__ is str else _SAMPLE_BY_ID).first(task.project_id, sample)
    if sample_obj is None:
        return None
    request.user = found.user  # as DRF leaves it, for middleware and logging after the view
    try:
        ann = annotate(sample_obj, task, value, annotator=found.user)
    except TrackerError:
        return None  # raised before anything is written; the DRF view says what is wrong
    return answer(_ANNOTATION.to_representation(ann), status.HTTP_201_CREATED)


# One instance whose fields are built once: to_representation keeps no per-call state.
_ANNOTATION = s.AnnotationSerializer()
_TASK = Prebuilt(lambda pk: AnnotationTask.objects.filter(pk=pk), -7_200_000_001)
# What resolve_sample looks up (project and external id, or project and id), compiled once.
# Unordered: a unique lookup needs no ORDER BY, and with one (samples order by id) PostgreSQL
# may walk the project's (project, id) index instead until its statistics are fresh.
_SAMPLE_BY_NAME = Prebuilt(
    lambda project, ext: Sample.objects.filter(project_id=project, external_id=ext).order_by(), -7_200_000_002, "\x00ext"
)
_SAMPLE_BY_ID = Prebuilt(lambda project, pk: Sample.objects.filter(project_id=project, pk=pk).order_by(), -7_200_000_003, -7_200_000_004)


def _task_in(view: ProjectScopedViewSet, task_id: int, role: str) -> AnnotationTask:
    """The task, if the user holds ``role`` in its project; a task elsewhere is "not found"."""
    from tracker_api.permissions import role_in

    task = AnnotationTask.objects.select_related("project").filter(pk=task_id).first()
    if task is None or role_in(view.request, task.project_id) is None:
        raise TaskNotFound(f"There is no annotation task {task_id} in a project you are a member of.")
    view.project_for(task.project, role)  # PermissionDenied when the role is too low
    return task


@extend_schema(tags=["annotation"])
class AnnotationViewSet(FastPosts, mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectScopedViewSet):
    """Annotations. Annotators store their own; editors review (accept or reject)."""

    queryset = Annotation.objects.select_related("sample", "annotator", "reviewed_by")
    serializer_class = s.AnnotationSerializer
    project_field = "task__project"
    filterset_class = AnnotationFilter
    ordering_fields = ["id", "updated_at", "created_at"]
    ordering = ["id"]
    write_role = "annotator"
    action_roles = {"review": "editor"}
    fast_posts = {"create": annotate_fast}  # one annotation per request: see tracker_api.fastpath

    def project_id_of(self, obj: Annotation) -> int:
        return AnnotationTask.objects.filter(pk=obj.task_id).values_list("project_id", flat=True).get()

    @extend_schema(request=s.AnnotateSerializer, responses={201: s.AnnotationSerializer})
    def create(self, request: Any) -> Response:
        """Store your value for a sample (changing it if you had one); checked against the task."""
        from tracker.services.labeling import annotate

        d = _valid(s.AnnotateSerializer, request.data)
        task = _task_in(self, d["task"], "annotator")
        ann = annotate(d["sample"], task, d["value"], annotator=request.user)
        return Response(s.AnnotationSerializer(ann).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: None})
    def destroy(self, request: Any, pk: Any = None) -> Response:
        """Delete an annotation and its history: annotators their own (not accepted ones),
        editors any."""
        from tracker.services.access import has_role
        from tracker.services.deletions import delete_annotation
        from tracker_api.permissions import role_in

        ann = self.get_object()
        may_review = has_role(role_in(request, self.project_id_of(ann)), "editor")
        delete_annotation(ann, actor=request.user, may_review=may_review)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=s.ReviewSerializer, responses=s.AnnotationSerializer)
    @action(detail=True, methods=["post"])
    def review(self, request: Any, pk: Any = None) -> Response:
        """Accept or reject (with a comment) an annotation."""
        from tracker.services.labeling import review

        ann = self.get_object()
        d = _valid(s.ReviewSerializer, request.data)
        done = review([ann.pk], d["decision"], comment=d["comment"], reviewer=request.user)[0]
        return Response(s.AnnotationSerializer(done).data)

    @extend_schema(responses=s.EventSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def history(self, request: Any, pk: Any = None) -> Response:
        """Every change of the annotation: who, when, from what to what."""
        ann = self.get_object()
        events = ann.events.select_related("actor").order_by("at", "id")
        return Response(s.EventSerializer(events, many=True).data)


class PredictionFilter(django_filters.FilterSet):
    project = django_filters.CharFilter(field_name="task__project__name")
    task = django_filters.NumberFilter(field_name="task_id")
    sample = django_filters.NumberFilter(field_name="sample_id")
    model_version = django_filters.CharFilter()

    class Meta:
        model = Prediction
        fields = ["project", "task", "sample", "model_version"]


@extend_schema(tags=["annotation"])
class PredictionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectScopedViewSet):
    """Pre-annotations from models. Editors add them in bulk; annotators accept one."""

    queryset = Prediction.objects.select_related("sample", "run")
    serializer_class = s.PredictionSerializer
    project_field = "task__project"
    filterset_class = PredictionFilter
    ordering_fields = ["id", "score", "created_at"]
    ordering = ["id"]
    action_roles = {"accept": "annotator"}

    def project_id_of(self, obj: Prediction) -> int:
        return AnnotationTask.objects.filter(pk=obj.task_id).values_list("project_id", flat=True).get()

    @extend_schema(request=s.PredictionsAddSerializer, responses={201: s.PredictionsAddedSerializer})
    def create(self, request: Any) -> Response:
        """Store many predictions at once (replacing the same model version's, by default)."""
        from tracker.services.labeling import add_predictions

        d = _valid(s.PredictionsAddSerializer, request.data)
        task = _task_in(self, d["task"], "editor")
        run = None
        if d["run"]:
            # A run of another project would leak its existence and link across projects.
            run = Run.objects.filter(uid=d["run"], project_id=task.project_id).first()
            if run is None:
                raise RunNotFound(f"Project {task.project.name!r} has no run {d['run'][:32]!r}.")
        made = add_predictions(
            task.project, task, d["predictions"], model_version=d["model_version"], run=run, replace=d["replace"]
        )
        return Response({"count": len(made), "ids": [p.pk for p in made]}, status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: None})
    def destroy(self, request: Any, pk: Any = None) -> Response:
        """Delete a prediction; annotations made from it keep their value."""
        from tracker.services.deletions import delete_prediction

        delete_prediction(self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses={201: s.AnnotationSerializer})
    @action(detail=True, methods=["post"])
    def accept(self, request: Any, pk: Any = None) -> Response:
        """Make the prediction your annotation of its sample."""
        from tracker.services.labeling import accept_prediction

        pred = self.get_object()
        ann = accept_prediction(pred.pk, annotator=request.user)
        return Response(s.AnnotationSerializer(ann).data, status=status.HTTP_201_CREATED)
