"""The endpoint table of the permission matrix: every route x method the schema lists.

``test_permission_matrix.py`` runs each row for every role (anonymous, a user of no project,
viewer, annotator, editor, admin) against an object of the user's own project and one of a
foreign project, and a separate test checks that this table covers the whole OpenAPI schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from tracker.services import access


@dataclass
class Endpoint:
    method: str
    path: str  # as the schema spells it, e.g. /api/samples/{id}/
    role: str  # lowest project role that succeeds; "staff" / "any" for global endpoints
    ok: int = 200
    kind: str = "object"  # object | list | create | global
    obj: str | None = None  # which setup object fills the path's {id}
    body: Callable[[dict[str, Any]], Any] | None = None
    query: Callable[[dict[str, Any]], str] | None = None
    raw: bytes | None = None  # a raw (non-JSON) body, for uploads
    params: dict[str, str] = field(default_factory=dict)  # other path params -> setup keys

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"


def setup_objects(project: Any, tag: str) -> dict[str, Any]:
    """Objects of every kind inside ``project``, for the routes to point at."""
    from tracker.services.samples import add_samples

    objs: dict[str, Any] = {"project": project.pk, "project_name": project.name}
    extra = access.create_user(f"extra-{tag}")
    objs["membership"] = access.set_role(project, extra, "viewer").pk
    objs["sample"] = add_samples(project, [{"id": f"s-{tag}", "text": "hello"}])[0].pk
    _datasets_and_labeling(project, tag, objs)
    _runs(project, tag, objs)
    for hook in SETUP_HOOKS:
        hook(project, tag, objs)
    return objs


def _datasets_and_labeling(project: Any, tag: str, objs: dict[str, Any]) -> None:
    from tracker.models import Sample
    from tracker.services.datasets import create_dataset
    from tracker.services.labeling import add_predictions, annotate, define_task

    info = create_dataset(f"ds-{tag}", Sample.objects.filter(project=project), project=project, progress=False)
    objs["version"] = info.id
    from tracker.models import Dataset

    objs["dataset"] = Dataset.objects.get(project=project, name=f"ds-{tag}").pk
    task = define_task(project, f"sentiment-{tag}", "classification", ["pos", "neg"])
    objs["task"] = task.pk
    more = add_samples_for(project, tag)
    objs["annotation"] = annotate(more, task, "pos", annotator=f"labeller-{tag}").pk
    objs["prediction"] = add_predictions(project, task, [{"external_id": f"s-{tag}", "value": "neg", "score": 0.4}])[0].pk
    objs["sample_ext"] = f"s-{tag}"


def _runs(project: Any, tag: str, objs: dict[str, Any]) -> None:
    import tempfile
    import time

    from tracker.models import Run
    from tracker.services.artifacts import log_artifact
    from tracker_api.views.runs import sink_write

    run = Run.objects.create(project=project, name=f"run-{tag}")
    sink_write(run.pk, [("loss", i, 1.0 / (i + 1), time.time()) for i in range(5)], None)
    with tempfile.NamedTemporaryFile(suffix=".txt") as fh:
        fh.write(b"weights")
        fh.flush()
        log_artifact(run, fh.name, name="model/weights.txt")
    objs["run"] = run.uid
    objs["artifact_name"] = "model/weights.txt"


def add_samples_for(project: Any, tag: str) -> Any:
    from tracker.services.samples import add_samples

    return add_samples(project, [{"id": f"t-{tag}", "text": "second"}])[0]


def _deletable(project: Any, tag: str, objs: dict[str, Any]) -> None:
    """A finished run (a running one cannot be deleted)."""
    from tracker.models import Run

    objs["done_run"] = Run.objects.create(project=project, name=f"done-{tag}", status=Run.Status.FINISHED).uid


# Domains that land later add a function here that creates their objects.
SETUP_HOOKS: list[Callable[[Any, str, dict[str, Any]], None]] = [_deletable]


ENDPOINTS: list[Endpoint] = [
    # users: staff only, except /me
    Endpoint("GET", "/api/users/", "staff", kind="global"),
    Endpoint("POST", "/api/users/", "staff", 201, kind="global", body=lambda o: {"username": "made-by-api"}),
    Endpoint("GET", "/api/users/{id}/", "staff", kind="global", obj="user"),
    Endpoint("PATCH", "/api/users/{id}/", "staff", kind="global", obj="user", body=lambda o: {"email": "a@b.org"}),
    Endpoint("GET", "/api/users/me/", "any", kind="global"),
    # tokens: everyone manages their own
    Endpoint("GET", "/api/tokens/", "any", kind="global"),
    Endpoint("POST", "/api/tokens/", "any", 201, kind="global", body=lambda o: {"name": "laptop"}),
    Endpoint("GET", "/api/tokens/{id}/", "any", kind="global", obj="own_token"),
    Endpoint("DELETE", "/api/tokens/{id}/", "any", 204, kind="global", obj="own_token"),
    # projects
    Endpoint("GET", "/api/projects/", "viewer", kind="list", query=lambda o: f"name={o['project_name']}"),
    Endpoint("POST", "/api/projects/", "any", 201, kind="global", body=lambda o: {"name": "brand-new"}),
    Endpoint("GET", "/api/projects/{id}/", "viewer", obj="project"),
    Endpoint("PATCH", "/api/projects/{id}/", "admin", obj="project", body=lambda o: {"description": "d"}),
    Endpoint("DELETE", "/api/projects/{id}/", "admin", 204, obj="project"),
    # memberships
    Endpoint("GET", "/api/memberships/", "viewer", kind="list", query=lambda o: f"project={o['project_name']}"),
    Endpoint("POST", "/api/memberships/", "admin", 201, kind="create",
             body=lambda o: {"project": o["project_name"], "user": "outsider", "role": "viewer"}),
    Endpoint("GET", "/api/memberships/{id}/", "viewer", obj="membership"),
    Endpoint("PATCH", "/api/memberships/{id}/", "admin", obj="membership", body=lambda o: {"role": "editor"}),
    Endpoint("DELETE", "/api/memberships/{id}/", "admin", 204, obj="membership"),
    # samples
    Endpoint("GET", "/api/samples/", "viewer", kind="list", query=lambda o: f"project={o['project_name']}"),
    Endpoint("POST", "/api/samples/", "editor", 201, kind="create",
             body=lambda o: {"project": o["project_name"], "records": [{"id": "new", "x": 1}]}),
    Endpoint("GET", "/api/samples/{id}/", "viewer", obj="sample"),
    Endpoint("POST", "/api/samples/import/", "editor", 201, kind="create",
             query=lambda o: f"project={o['project_name']}&file_format=csv&id_field=id", raw=b"id,text\nimp-1,hi\n"),
    # datasets
    Endpoint("GET", "/api/datasets/", "viewer", kind="list", query=lambda o: f"project={o['project_name']}"),
    Endpoint("GET", "/api/datasets/{id}/", "viewer", obj="dataset"),
    Endpoint("GET", "/api/dataset-versions/", "viewer", kind="list", query=lambda o: f"project={o['project_name']}"),
    Endpoint("POST", "/api/dataset-versions/", "editor", 201, kind="create",
             body=lambda o: {"project": o["project_name"], "name": "api-made", "splits": {"a": 0.5, "b": 0.5}}),
    Endpoint("GET", "/api/dataset-versions/{id}/", "viewer", obj="version"),
    Endpoint("GET", "/api/dataset-versions/{id}/export/", "viewer", obj="version"),
    Endpoint("GET", "/api/dataset-versions/{id}/diff/", "viewer", obj="version", query=lambda o: f"other={o['version']}"),
    Endpoint("GET", "/api/dataset-versions/{id}/runs/", "viewer", obj="version"),
    # annotation
    Endpoint("GET", "/api/tasks/", "viewer", kind="list", query=lambda o: f"project={o['project_name']}"),
    Endpoint("POST", "/api/tasks/", "editor", 201, kind="create",
             body=lambda o: {"project": o["project_name"], "name": "topic", "kind": "multilabel", "labels": ["a", "b"]}),
    Endpoint("GET", "/api/tasks/{id}/", "viewer", obj="task"),
    Endpoint("POST", "/api/tasks/{id}/next/", "annotator", obj="task", body=lambda o: {"n": 2}),
    Endpoint("POST", "/api/tasks/{id}/release/", "annotator", obj="task", body=lambda o: {}),
    Endpoint("GET", "/api/annotations/", "viewer", kind="list", query=lambda o: f"project={o['project_name']}"),
    Endpoint("POST", "/api/annotations/", "annotator", 201, kind="create",
             body=lambda o: {"task": o["task"], "sample": o["sample_ext"], "value": "neg"}),
    Endpoint("GET", "/api/annotations/{id}/", "viewer", obj="annotation"),
    Endpoint("GET", "/api/annotations/{id}/history/", "viewer", obj="annotation"),
    Endpoint("POST", "/api/annotations/{id}/review/", "editor", obj="annotation",
             body=lambda o: {"decision": "reject", "comment": "wrong"}),
    Endpoint("GET", "/api/predictions/", "viewer", kind="list", query=lambda o: f"project={o['project_name']}"),
    Endpoint("POST", "/api/predictions/", "editor", 201, kind="create",
             body=lambda o: {"task": o["task"], "predictions": [{"external_id": o["sample_ext"], "value": "pos"}]}),
    Endpoint("GET", "/api/predictions/{id}/", "viewer", obj="prediction"),
    Endpoint("POST", "/api/predictions/{id}/accept/", "annotator", 201, obj="prediction"),
    # runs
    Endpoint("GET", "/api/runs/", "viewer", kind="list", query=lambda o: f"project={o['project_name']}"),
    Endpoint("POST", "/api/runs/", "editor", 201, kind="create",
             body=lambda o: {"project": o["project_name"], "name": "api-run", "params": {"lr": 0.1}}),
    Endpoint("GET", "/api/runs/{id}/", "viewer", obj="run"),
    Endpoint("POST", "/api/runs/{id}/finish/", "editor", obj="run", body=lambda o: {"status": "finished"}),
    Endpoint("POST", "/api/runs/{id}/heartbeat/", "editor", 204, obj="run"),
    Endpoint("POST", "/api/runs/{id}/params/", "editor", obj="run", body=lambda o: {"params": {"batch": 32}}),
    Endpoint("POST", "/api/runs/{id}/tags/", "editor", obj="run", body=lambda o: {"tags": {"best": True}}),
    Endpoint("GET", "/api/runs/{id}/metrics/", "viewer", obj="run"),
    Endpoint("POST", "/api/runs/{id}/metrics/", "editor", 201, obj="run",
             body=lambda o: {"points": [{"key": "acc", "step": 1, "value": 0.5}]}),
    Endpoint("GET", "/api/runs/{id}/artifacts/", "viewer", obj="run"),
    Endpoint("GET", "/api/runs/{id}/artifacts/{name}", "viewer", obj="run", params={"name": "artifact_name"}),
    Endpoint("PUT", "/api/runs/{id}/artifacts/{name}", "editor", 201, obj="run", params={"name": "artifact_name"},
             raw=b"new weights", query=lambda o: "overwrite=true"),
    # deletions (issue 6): editors; an annotator deletes their own annotations (tested apart)
    Endpoint("DELETE", "/api/runs/{id}/", "editor", 204, obj="done_run"),
    Endpoint("DELETE", "/api/samples/{id}/", "editor", 204, obj="sample"),
    Endpoint("DELETE", "/api/tasks/{id}/", "editor", 204, obj="task", query=lambda o: "force=true"),
    Endpoint("DELETE", "/api/annotations/{id}/", "editor", 204, obj="annotation"),
    Endpoint("DELETE", "/api/predictions/{id}/", "editor", 204, obj="prediction"),
    # runs for remote clients: resume, notes, lineage, typed frames (tracker_api/views/interchange.py)
    Endpoint("POST", "/api/runs/{id}/resume/", "editor", obj="run", body=lambda o: {"params": {"resumed": True}}),
    Endpoint("POST", "/api/runs/{id}/notes/", "editor", obj="run", body=lambda o: {"text": "note", "append": True}),
    Endpoint("GET", "/api/runs/{id}/inputs/", "viewer", obj="run"),
    Endpoint("POST", "/api/runs/{id}/inputs/", "editor", 201, obj="run",
             body=lambda o: {"version": o["version"], "context": "eval"}),
    Endpoint("GET", "/api/runs/{id}/history/", "viewer", obj="run", query=lambda o: "key=loss&wide=false"),
    Endpoint("POST", "/api/runs/search/", "viewer", kind="list", body=lambda o: {"project": o["project_name"]}),
    Endpoint("POST", "/api/runs/frame/", "viewer", kind="list", body=lambda o: {"project": o["project_name"]}),
    Endpoint("POST", "/api/runs/history/", "viewer", kind="list",
             body=lambda o: {"project": o["project_name"], "wide": False}),
    Endpoint("POST", "/api/runs/compare/", "viewer", kind="create", body=lambda o: {"runs": [o["run"]]}),
    # agreement, final labels, Label Studio JSON
    Endpoint("GET", "/api/tasks/{id}/agreement/", "viewer", obj="task"),
    Endpoint("GET", "/api/tasks/{id}/resolved-labels/", "viewer", obj="task", query=lambda o: "strategy=latest"),
    Endpoint("GET", "/api/label-studio/export/", "viewer", kind="create", query=lambda o: f"project={o['project_name']}"),
    Endpoint("POST", "/api/label-studio/import/", "editor", 201, kind="create",
             query=lambda o: f"project={o['project_name']}",
             body=lambda o: [{"data": {"text": "imported"}, "meta": {"external_id": "ls-1"},
                              # no completed_by: the caller's own (other names need admin)
                              "annotations": [{"result": [
                                  {"from_name": "ls-sentiment", "type": "choices",
                                   "value": {"choices": ["pos"]}}]}]}]),
]
