"""Label Studio JSON both ways (round trip gives identical annotations), JSONL and CSV exports."""

from __future__ import annotations

import csv
import json

import pytest

import tracker
from tracker.exceptions import ImportRejected, InvalidAnnotation, InvalidValue

pytestmark = pytest.mark.django_db

COMPARED = ["task", "external_id", "annotator", "value", "status", "review_comment", "reviewed_by",
            "created_at", "updated_at"]


@pytest.fixture
def labelled():
    from tracker.models import Sample

    tracker.add_samples("src", [
        {"id": "a", "text": "Alice flew to Rome.", "image": "http://img/a.png", "width": 640, "height": 480,
         "metadata": {"batch": 1}},
        {"id": "b", "text": "Nothing to see.", "image": "http://img/b.png", "width": 300, "height": 200},
        {"id": "c", "text": "Unlabelled.", "width": 10, "height": 10},
    ])
    tracker.define_task("src", "sentiment", "classification", ["pos", "neg"])
    tracker.define_task("src", "topics", "multilabel", ["travel", "people", "none"])
    tracker.define_task("src", "ner", "spans", ["PER", "LOC"])
    tracker.define_task("src", "objects", "boxes", ["plane", "person"])
    tracker.define_task("src", "caption", "text")
    tracker.define_task("src", "quality", "rating", scale=(1, 10))
    s = {x.external_id: x for x in Sample.objects.filter(project__name="src")}
    a, b = s["a"], s["b"]
    for who in ("alice", "bob"):
        tracker.annotate(a, "sentiment", "pos", who)
        tracker.annotate(a, "ner", [(0, 5, "PER"), (14, 18, "LOC")], who)
    tracker.annotate(b, "sentiment", "neg", "alice")
    tracker.annotate(a, "topics", ["travel", "people"], "alice")
    tracker.annotate(b, "topics", [], "alice")  # "none apply" must survive the trip
    tracker.annotate(b, "ner", [], "bob")
    tracker.annotate(a, "objects", [(10, 20, 300.5, 200, "plane"), (0, 0, 33, 47, "person")], "alice")
    tracker.annotate(b, "objects", [(1, 2, 3, 4, "person")], "bob")
    tracker.annotate(a, "caption", "A flight.\nOver the sea.", "bob")
    tracker.annotate(a, "quality", 7, "alice")
    rej = tracker.annotate(b, "quality", 2, "bob")
    tracker.review(rej, "reject", comment="Too harsh.", reviewer="rita")
    acc = tracker.annotation_table("src", "sentiment").query("annotator == 'alice' and external_id == 'a'")
    tracker.review(int(acc["id"].iloc[0]), "accept", reviewer="rita")
    tracker.add_predictions("src", "sentiment", [{"external_id": "a", "value": "neg", "score": 0.41},
                                                 {"external_id": "c", "value": "pos", "score": 0.9}], model_version="m1")
    tracker.add_predictions("src", "objects", [{"external_id": "b", "value": [(5, 5, 10, 10, "plane")], "score": 0.3}],
                            model_version="m1")
    tracker.add_predictions("src", "ner", [{"external_id": "a", "value": [(0, 5, "PER")]}], model_version="m2")
    return s


def _table(project):
    t = tracker.annotation_table(project)[COMPARED]
    return sorted(t.to_dict("records"), key=lambda r: (r["task"], r["external_id"], r["annotator"]))


def _preds(project):
    from tracker.models import Prediction

    return sorted(
        (p.task.name, p.sample.external_id, json.dumps(p.value, sort_keys=True), p.score, p.model_version)
        for p in Prediction.objects.filter(task__project__name=project).select_related("task", "sample")
    )


def test_label_studio_round_trip_gives_identical_annotations(labelled, tmp_path):
    path = tmp_path / "export.json"
    exported = tracker.export_label_studio("src", path=path)
    assert json.loads(path.read_text()) == exported
    assert len(exported) == 3
    counts = tracker.import_label_studio("dst", path)
    assert counts["samples"] == 3 and counts["predictions"] == 4
    assert counts["annotations"] == len(tracker.annotation_table("src"))
    assert _table("dst") == _table("src")
    assert _preds("dst") == _preds("src")
    for name in ("sentiment", "topics", "ner", "objects", "caption", "quality"):
        src, dst = tracker.get_task("src", name), tracker.get_task("dst", name)
        # A Label Studio export carries no label config: the labels seen in use are created.
        assert dst.kind == src.kind and set(dst.labels) <= set(src.labels), name
    # Importing the same export again is idempotent.
    again = tracker.import_label_studio("dst", exported)
    assert again["annotations"] == counts["annotations"]
    assert _table("dst") == _table("src") and _preds("dst") == _preds("src")
    assert not tracker.annotation_history("dst").query("action != 'imported'").shape[0]


def test_export_is_label_studio_shaped(labelled):
    out = tracker.export_label_studio("src", ["sentiment", "objects"])
    a = next(t for t in out if t["meta"]["external_id"] == "a")
    assert a["data"]["text"] == "Alice flew to Rome." and a["meta"]["metadata"] == {"batch": 1}
    alice = next(x for x in a["annotations"] if x["completed_by"]["username"] == "alice")
    by_type = {r["type"]: r for r in alice["result"]}
    assert by_type["choices"]["value"] == {"choices": ["pos"]}
    assert by_type["choices"]["from_name"] == "sentiment" and by_type["choices"]["to_name"] == "text"
    rects = [r for r in alice["result"] if r["type"] == "rectanglelabels"]
    plane = next(r for r in rects if r["value"]["rectanglelabels"] == ["plane"])
    assert plane["to_name"] == "image"
    assert (plane["original_width"], plane["original_height"]) == (640, 480)
    assert plane["value"]["x"] == pytest.approx(10 / 640 * 100)
    assert plane["value"]["height"] == pytest.approx(200 / 480 * 100)
    assert alice["ground_truth"] is True
    assert [p["model_version"] for p in a["predictions"]] == ["m1"]
    assert a["predictions"][0]["score"] == 0.41
    spans = tracker.export_label_studio("src", "ner")[0]["annotations"][0]["result"]
    assert spans[0]["value"] == {"start": 0, "end": 5, "text": "Alice", "labels": ["PER"]}


FOREIGN = [
    {
        "id": 101,
        "data": {"text": "Paris is lovely", "image": "/data/upload/1/x.jpg"},
        "annotations": [
            {
                "id": 7, "completed_by": 3, "was_cancelled": False,
                "created_at": "2024-05-01T10:00:00.000000Z", "updated_at": "2024-05-01T10:05:00.000000Z",
                "result": [
                    {"from_name": "mood", "to_name": "text", "type": "choices", "value": {"choices": ["happy"]}},
                    {"from_name": "tags", "to_name": "text", "type": "choices", "value": {"choices": ["a", "b"]}},
                    {"from_name": "label", "to_name": "text", "type": "labels",
                     "value": {"start": 0, "end": 5, "text": "Paris", "labels": ["LOC"]}},
                    {"from_name": "bbox", "to_name": "image", "type": "rectanglelabels",
                     "original_width": 800, "original_height": 600, "image_rotation": 0,
                     "value": {"x": 12.5, "y": 50, "width": 25, "height": 10, "rotation": 0,
                               "rectanglelabels": ["tower"]}},
                    {"from_name": "stars", "to_name": "text", "type": "rating", "value": {"rating": 4}},
                    {"from_name": "note", "to_name": "text", "type": "textarea", "value": {"text": ["nice", "photo"]}},
                ],
            },
            {"id": 8, "completed_by": {"id": 4, "email": "eve@example.org"}, "was_cancelled": True, "result": []},
            {"id": 9, "completed_by": {"id": 5, "email": "dan@example.org"},
             "result": [{"from_name": "mood", "to_name": "text", "type": "choices", "value": {"choices": ["sad"]}}]},
        ],
        "predictions": [
            {"model_version": "v3", "score": 0.42,
             "result": [{"from_name": "mood", "to_name": "text", "type": "choices", "value": {"choices": ["happy"]}}]},
        ],
    },
    {"id": 102, "data": {"text": "No labels yet"}, "annotations": [], "predictions": []},
]


def test_import_a_label_studio_export(db):
    counts = tracker.import_label_studio("ls", json.dumps(FOREIGN))
    assert counts == {"samples": 2, "annotations": 7, "predictions": 1, "superseded": 0,
                      "tasks": ["bbox", "label", "mood", "note", "stars", "tags"]}
    kinds = {t.name: (t.kind, t.labels) for t in tracker.annotation_tasks("ls")}
    assert kinds["mood"] == ("classification", ["happy", "sad"])
    assert kinds["tags"] == ("multilabel", ["a", "b"])
    assert kinds["label"] == ("spans", ["LOC"]) and kinds["bbox"] == ("boxes", ["tower"])
    assert kinds["stars"][0] == "rating" and kinds["note"][0] == "text"
    t = tracker.annotation_table("ls").set_index(["task", "annotator"])
    assert t.loc[("mood", "label-studio-user-3"), "value"] == "happy"
    assert t.loc[("mood", "dan@example.org"), "value"] == "sad"
    assert t.loc[("bbox", "label-studio-user-3"), "value"] == [
        {"x": 100, "y": 300, "width": 200, "height": 60, "label": "tower"}]
    assert t.loc[("note", "label-studio-user-3"), "value"] == "nice\nphoto"
    assert str(t.loc[("mood", "label-studio-user-3"), "created_at"]) == "2024-05-01 10:00:00+00:00"
    assert "eve@example.org" not in t.index.get_level_values(1)  # cancelled: skipped
    from tracker.models import Prediction, Sample

    s = Sample.objects.get(external_id="101")
    assert (s.data["width"], s.data["height"]) == (800, 600)  # the image size came with the boxes
    p = Prediction.objects.get()
    assert (p.value, p.score, p.model_version) == ("happy", 0.42, "v3")
    # Tasks may be renamed on the way in, onto tasks that already exist.
    tracker.define_task("ls2", "sentiment", "classification", ["happy", "sad"])
    tracker.import_label_studio("ls2", FOREIGN[:1], tasks={"mood": "sentiment"})
    assert set(tracker.annotation_table("ls2", "sentiment")["value"]) == {"happy", "sad"}


def test_the_latest_of_several_annotations_by_one_person_counts(db):
    task = {"id": 1, "data": {"text": "x"}, "annotations": [
        {"completed_by": 9, "updated_at": "2024-01-02T00:00:00Z",
         "result": [{"from_name": "mood", "to_name": "text", "type": "choices", "value": {"choices": ["new"]}}]},
        {"completed_by": 9, "updated_at": "2024-01-01T00:00:00Z",
         "result": [{"from_name": "mood", "to_name": "text", "type": "choices", "value": {"choices": ["old"]}}]},
    ]}
    counts = tracker.import_label_studio("dup", [task])
    assert (counts["annotations"], counts["superseded"]) == (1, 1)
    assert tracker.annotation_table("dup")["value"].tolist() == ["new"]


def _nothing_stored():
    from tracker.models import Annotation, AnnotationTask, Prediction, Project, Sample

    return not any(m.objects.exists() for m in (Annotation, AnnotationTask, Prediction, Sample, Project))


@pytest.mark.parametrize(
    "mutate, error, message",
    [
        (lambda d: d[0]["annotations"][0]["result"].append(
            {"from_name": "poly", "to_name": "image", "type": "polygonlabels", "value": {"points": []}}),
         ImportRejected, "result type 'polygonlabels' \\(from_name 'poly'\\) has no tracker task kind"),
        (lambda d: d[0]["annotations"][0]["result"][2]["value"].update(text="Pari"),
         InvalidAnnotation, "says its text is 'Pari'"),
        (lambda d: d[0]["annotations"][0]["result"][3]["value"].update(x=90),
         InvalidAnnotation, "outside the 800x600 image"),
        (lambda d: d[1].pop("data"), ImportRejected, "task 1 has no 'data' object"),
        (lambda d: d[1].update(id=101), ImportRejected, "two tasks have the id '101'"),
    ],
)
def test_bad_label_studio_input_stores_nothing(db, mutate, error, message):
    data = json.loads(json.dumps(FOREIGN))
    mutate(data)
    with pytest.raises(error, match=message):
        tracker.import_label_studio("ls", data)
    assert _nothing_stored()


def test_unreadable_sources(db, tmp_path):
    with pytest.raises(InvalidValue, match="Cannot read the Label Studio export"):
        tracker.import_label_studio("ls", tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("[{not json")
    with pytest.raises(InvalidValue, match="not valid JSON"):
        tracker.import_label_studio("ls", bad)
    with pytest.raises(InvalidValue, match="JSON list of tasks"):
        tracker.import_label_studio("ls", [1, 2])
    assert _nothing_stored()


def test_jsonl_and_csv_exports(labelled, tmp_path):
    rows = [json.loads(line) for line in tracker.export_labels("src", "ner", tmp_path / "ner.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    alice = next(r for r in rows if r["annotator"] == "alice")
    assert alice["value"] == [{"start": 0, "end": 5, "label": "PER"}, {"start": 14, "end": 18, "label": "LOC"}]
    assert alice["external_id"] == "a" and alice["status"] == "submitted"

    path = tracker.export_labels("src", "sentiment", tmp_path / "out" / "sent.csv")
    with path.open(newline="") as fh:
        got = list(csv.DictReader(fh))
    assert {(r["external_id"], r["annotator"], r["value"], r["status"]) for r in got} == {
        ("a", "alice", "pos", "accepted"), ("a", "bob", "pos", "submitted"), ("b", "alice", "neg", "submitted")}

    resolved = tracker.export_labels("src", "topics", tmp_path / "topics.csv", strategy="majority", include_data=True)
    with resolved.open(newline="") as fh:
        got = {r["external_id"]: r for r in csv.DictReader(fh)}
    assert json.loads(got["a"]["value"]) == ["travel", "people"]
    assert json.loads(got["b"]["value"]) == []
    assert json.loads(got["a"]["data"])["text"] == "Alice flew to Rome."

    out = tracker.export_labels("src", "quality", tmp_path / "q.txt", format="jsonl", strategy=("accepted", "majority"))
    assert [json.loads(x)["value"] for x in out.read_text().splitlines()] == [7]  # b's only vote was rejected


def test_export_errors_leave_no_file(labelled, tmp_path):
    with pytest.raises(InvalidValue, match="name the file .jsonl or .csv"):
        tracker.export_labels("src", "ner", tmp_path / "ner.xlsx")
    with pytest.raises(InvalidValue, match="strategy must be one of"):
        tracker.export_labels("src", "ner", tmp_path / "ner.jsonl", strategy="best")
    assert list(tmp_path.iterdir()) == []


def test_export_queries_do_not_grow_with_samples_or_annotators(db):
    """One round of queries per page of samples; annotators and reviewers are fetched once."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tracker.services.interchange import iter_label_studio

    def queries(n_samples, annotators):
        project = f"q{n_samples}-{len(annotators)}"
        tracker.add_samples(project, [{"id": f"s{i}", "text": "x"} for i in range(n_samples)])
        tracker.define_task(project, "t", "classification", ["a", "b"])
        for i in range(n_samples):
            for who in annotators:
                tracker.annotate(_sample(project, f"s{i}"), "t", "a", who)
        with CaptureQueriesContext(connection) as ctx:
            tasks = list(iter_label_studio(project, page=4))
        assert len(tasks) == n_samples and all(len(t["annotations"]) == len(annotators) for t in tasks)
        return len(ctx.captured_queries)

    few = queries(4, ["u1", "u2"])
    many = queries(4, [f"v{i}" for i in range(8)])
    assert many == few  # not one query per annotator
    assert queries(8, ["w1"]) == few + 3  # a second page: samples, annotations, predictions


def _sample(project, ext):
    from tracker.models import Sample

    return Sample.objects.get(project__name=project, external_id=ext)
