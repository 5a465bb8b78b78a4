"""Label schemas, validated annotations, history, review, predictions and the resolved-labels contract."""

from __future__ import annotations

import asyncio
import getpass
import inspect

import pandas as pd
import pytest

import tracker
from tracker.exceptions import (
    InvalidAnnotation,
    InvalidValue,
    NotFound,
    RunNotFound,
    SampleNotFound,
    TaskNotFound,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def samples():
    from tracker.models import Sample

    tracker.add_samples(
        "lab",
        [
            {"id": "t1", "text": "Alice met Bob in Paris.", "width": 200, "height": 100},
            {"id": "t2", "text": "Nothing here.", "width": 64, "height": 48},
            {"id": "t3", "text": "Carol flew to Rome.", "width": 10, "height": 10},
        ],
    )
    return {s.external_id: s for s in Sample.objects.filter(project__name="lab")}


def events(task=None):
    return tracker.annotation_history("lab", task)


# --------------------------------------------------------------------------- schemas


def test_define_task_every_kind_and_idempotent(samples):
    t = tracker.define_task("lab", "sentiment", "classification", ["pos", "neg"], instructions="Tone?")
    assert (t.kind, t.labels, t.config["instructions"], t.schema_version) == (
        "classification", ["pos", "neg"], "Tone?", 1)
    again = tracker.define_task("lab", "sentiment", "classification", ["pos", "neg"])
    assert again.pk == t.pk and again.schema_version == 1
    assert tracker.define_task("lab", "topics", "multilabel", ["a", "b"]).kind == "multilabel"
    assert tracker.define_task("lab", "ner", "spans", ["PER"]).config["text_field"] == "text"
    boxes = tracker.define_task("lab", "objects", "boxes", ["car"])
    assert boxes.config["width_field"] == "width" and boxes.config["image_field"] == "image"
    assert tracker.define_task("lab", "caption", "text", max_length=20).config["max_length"] == 20
    rating = tracker.define_task("lab", "quality", "rating", scale=(0, 10), step=2)
    assert rating.config["scale"] == [0, 10] and rating.config["step"] == 2
    assert [t.name for t in tracker.annotation_tasks("lab")] == [
        "caption", "ner", "objects", "quality", "sentiment", "topics"]
    assert tracker.get_task("lab", "ner").kind == "spans"


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        (("x", "clasification", ["a"]), {}, "Did you mean 'classification'"),
        (("x", "classification"), {}, "needs labels"),
        (("x", "classification", ["a", "a"]), {}, "listed twice"),
        (("x", "text", ["a"]), {}, "takes no labels"),
        (("x", "classification", ["a"]), {"scale": (1, 5)}, "scale= applies to rating"),
        (("x", "rating"), {"scale": (5, 1)}, "lowest < highest"),
        (("x", "rating"), {"step": -1}, "step must be"),
        (("x", "multilabel", ["a"]), {"annotators_per_sample": 0}, "annotators_per_sample"),
        (("", "text"), {}, "task name"),
    ],
)
def test_define_task_rejects_bad_schemas(args, kwargs, message):
    with pytest.raises(InvalidValue, match=message):
        tracker.define_task("lab", *args, **kwargs)
    from tracker.models import AnnotationTask

    assert not AnnotationTask.objects.exists()


def test_get_task_names_the_known_ones(samples):
    tracker.define_task("lab", "sentiment", "classification", ["pos"])
    with pytest.raises(TaskNotFound, match="Known tasks: sentiment"):
        tracker.get_task("lab", "sentimet")


def test_schema_change_keeps_annotations_valid_or_says_which_are_not(samples):
    tracker.define_task("lab", "sentiment", "classification", ["pos", "neg", "meh"])
    tracker.annotate(samples["t1"], "sentiment", "pos", "alice")
    tracker.annotate(samples["t2"], "sentiment", "meh", "alice")
    tracker.annotate(samples["t3"], "sentiment", "neg", "bob")

    # Adding a label keeps everything valid.
    t = tracker.define_task("lab", "sentiment", "classification", ["pos", "neg", "meh", "mixed"])
    assert t.schema_version == 2

    # Dropping a used label is refused, naming the annotation, and changes nothing.
    with pytest.raises(InvalidAnnotation, match=r"1 existing annotation.*'t2' by alice.*'meh'") as info:
        tracker.define_task("lab", "sentiment", "classification", ["pos", "neg"])
    assert [b["external_id"] for b in info.value.invalid] == ["t2"]
    t = tracker.get_task("lab", "sentiment")
    assert t.labels == ["pos", "neg", "meh", "mixed"] and t.schema_version == 2

    # Merging the label through rename_labels rewrites it, with history.
    t = tracker.define_task(
        "lab", "sentiment", "classification", ["positive", "neg"], rename_labels={"pos": "positive", "meh": "neg"}
    )
    assert t.labels == ["positive", "neg"] and t.schema_version == 3
    table = tracker.annotation_table("lab", "sentiment").set_index("external_id")
    assert table.loc["t1", "value"] == "positive" and table.loc["t2", "value"] == "neg"
    relabeled = events("sentiment").query("action == 'relabeled'")
    assert sorted(relabeled["external_id"]) == ["t1", "t2"]
    assert relabeled.set_index("external_id").loc["t2", "old_value"] == "meh"

    # Renames without new labels apply to the stored label list.
    t = tracker.define_task("lab", "sentiment", "classification", rename_labels={"neg": "negative"})
    assert t.labels == ["positive", "negative"]

    # allow_invalid applies the change and invalid_annotations() lists what broke.
    tracker.define_task("lab", "sentiment", "classification", ["positive"], allow_invalid=True)
    bad = tracker.invalid_annotations("lab", "sentiment")
    assert sorted(bad["external_id"]) == ["t2", "t3"]
    assert bad["reason"].str.contains("'negative' is not one of the labels").all()


def test_changing_kind_converts_or_reports_existing_values(samples):
    tracker.define_task("lab", "tags", "classification", ["a", "b"])
    tracker.annotate(samples["t1"], "tags", "a", "alice")
    tracker.annotate(samples["t2"], "tags", "b", "alice")
    # classification -> multilabel: every label becomes a one-label list, with history.
    tracker.define_task("lab", "tags", "multilabel", ["a", "b"])
    table = tracker.annotation_table("lab", "tags").set_index("external_id")
    assert table.loc["t1", "value"] == ["a"] and table.loc["t2", "value"] == ["b"]
    conv = events("tags").query("action == 'converted'")
    assert conv["old_value"].tolist() == ["a", "b"] and conv["new_value"].tolist() == [["a"], ["b"]]
    tracker.annotate(samples["t2"], "tags", ["a", "b"], "alice")
    # multilabel -> classification: one-label lists convert back; two labels cannot.
    with pytest.raises(InvalidAnnotation, match="would make 1 existing annotation.*'t2'"):
        tracker.define_task("lab", "tags", "classification", ["a", "b"])
    assert tracker.get_task("lab", "tags").kind == "multilabel"
    assert tracker.annotation_table("lab", "tags").set_index("external_id").loc["t1", "value"] == ["a"]


# --------------------------------------------------------------------------- values


def test_values_are_checked_and_normalised_per_kind(samples):
    t1 = samples["t1"]
    tracker.define_task("lab", "sentiment", "classification", ["pos", "neg"])
    tracker.define_task("lab", "topics", "multilabel", ["a", "b", "c"])
    tracker.define_task("lab", "ner", "spans", ["PER", "LOC"])
    tracker.define_task("lab", "objects", "boxes", ["car", "person"])
    tracker.define_task("lab", "caption", "text", max_length=10)
    tracker.define_task("lab", "quality", "rating", scale=(1, 5), step=0.5)

    assert tracker.annotate(t1, "sentiment", "pos", "u").value == "pos"
    # Label order follows the schema, duplicates collapse.
    assert tracker.annotate(t1, "topics", ["c", "a", "c"], "u").value == ["a", "c"]
    spans = tracker.annotate(t1, "ner", [(17, 22, "LOC"), {"start": 0, "end": 5, "label": "PER", "text": "Alice"}], "u")
    assert spans.value == [{"start": 0, "end": 5, "label": "PER"}, {"start": 17, "end": 22, "label": "LOC"}]
    boxes = tracker.annotate(t1, "objects", [{"x": 0, "y": 0, "width": 200, "height": 100, "label": "car"}], "u")
    assert boxes.value[0]["width"] == 200
    assert tracker.annotate(t1, "caption", "two words", "u").value == "two words"
    assert tracker.annotate(t1, "quality", 4.5, "u").value == 4.5
    assert tracker.annotate(t1, "quality", 4.0, "u").value == 4


@pytest.mark.parametrize(
    "task, value, message",
    [
        ("sentiment", "positive", "'positive' is not one of the labels 'pos', 'neg'. Did you mean 'pos'"),
        ("sentiment", 3, "a classification value is one label"),
        ("topics", ["a", "z"], "'z' is not one of the labels"),
        ("topics", 7, "a multilabel value is a list"),
        ("ner", [{"start": 0, "end": 99, "label": "PER"}], r"span 0 \(0..99\) is outside the text, which has 23 characters"),
        ("ner", [{"start": 5, "end": 5, "label": "PER"}], "outside the text"),
        ("ner", [{"start": 0, "end": 5, "label": "ORG"}], "'ORG' is not one of the labels"),
        ("ner", [{"start": 0, "end": 5, "label": "PER", "text": "Bob"}], "says its text is 'Bob', but characters 0..5 are 'Alice'"),
        ("ner", [{"start": 0.5, "end": 5, "label": "PER"}], "offsets must be whole numbers"),
        ("ner", [{"begin": 0, "label": "PER"}], "must be {'start': int"),
        ("objects", [{"x": 150, "y": 0, "width": 60, "height": 10, "label": "car"}], "is outside the 200x100 image"),
        ("objects", [{"x": -1, "y": 0, "width": 6, "height": 10, "label": "car"}], "outside the 200x100 image"),
        ("objects", [{"x": 1, "y": 0, "width": 0, "height": 10, "label": "car"}], "both must be > 0"),
        ("objects", [{"x": 1, "y": 0, "width": 2, "height": 10, "label": "bus"}], "'bus' is not one of the labels"),
        ("objects", [{"x": 1, "y": 0, "width": 2, "label": "car"}], "must be {'x', 'y', 'width', 'height', 'label'}"),
        ("caption", 12, "a text value is a string"),
        ("caption", "far too long text", "17 characters; at most 10"),
        ("quality", 6, "outside the scale 1..5"),
        ("quality", 4.2, "not on the scale's steps of 0.5"),
        ("quality", True, "a rating is a number"),
        ("quality", float("nan"), "a rating is a number"),
        ("sentiment", None, "the value is None"),
    ],
)
def test_bad_values_get_clear_errors_and_store_nothing(samples, task, value, message):
    tracker.define_task("lab", "sentiment", "classification", ["pos", "neg"])
    tracker.define_task("lab", "topics", "multilabel", ["a", "b"])
    tracker.define_task("lab", "ner", "spans", ["PER", "LOC"])
    tracker.define_task("lab", "objects", "boxes", ["car"])
    tracker.define_task("lab", "caption", "text", max_length=10)
    tracker.define_task("lab", "quality", "rating", step=0.5)
    with pytest.raises(InvalidAnnotation, match=message) as info:
        tracker.annotate(samples["t1"], task, value, "alice")
    assert f"sample 't1', task '{task}'" in str(info.value)
    from django.contrib.auth import get_user_model

    from tracker.models import Annotation, AnnotationEvent

    assert not Annotation.objects.exists() and not AnnotationEvent.objects.exists()
    assert not get_user_model().objects.filter(username="alice").exists()


def test_boxes_need_an_image_size(samples):
    from tracker.models import Sample

    tracker.add_samples("lab", [{"id": "nosize", "image": "x.png"}])
    tracker.define_task("lab", "objects", "boxes", ["car"])
    s = Sample.objects.get(external_id="nosize")
    with pytest.raises(InvalidAnnotation, match="no 'width'/'height' in its data or metadata"):
        tracker.annotate(s, "objects", [{"x": 0, "y": 0, "width": 1, "height": 1, "label": "car"}])
    # The size may also come from metadata, under configured field names.
    tracker.add_samples("lab", [{"id": "meta", "metadata": {"w": 30, "h": 20}}])
    tracker.define_task("lab", "objects2", "boxes", ["car"], width_field="w", height_field="h")
    m = Sample.objects.get(external_id="meta")
    assert tracker.annotate(m, "objects2", [(10, 10, 20, 10, "car")]).value[0]["x"] == 10


def test_boxes_read_the_size_of_stored_media(samples, tmp_path):
    from django.core.files.base import ContentFile
    from PIL import Image

    from tracker.models import Sample

    tracker.define_task("lab", "objects", "boxes", ["car"])
    tracker.add_samples("lab", [{"id": "img"}])
    s = Sample.objects.get(external_id="img")
    path = tmp_path / "img.png"
    Image.new("RGB", (40, 30)).save(path)
    s.media.save("img.png", ContentFile(path.read_bytes()))
    assert tracker.annotate(s, "objects", [(0, 0, 40, 30, "car")]).value[0]["height"] == 30
    with pytest.raises(InvalidAnnotation, match="outside the 40x30 image"):
        tracker.annotate(s, "objects", [(0, 0, 41, 30, "car")])


def test_spans_need_the_text_field(samples):
    tracker.define_task("lab", "ner", "spans", ["PER"], text_field="body")
    with pytest.raises(InvalidAnnotation, match=r"sample.data\['body'\], but the sample has no such field"):
        tracker.annotate(samples["t1"], "ner", [(0, 1, "PER")])


# --------------------------------------------------------------------------- annotators and history


def test_annotators_are_django_users_created_on_first_use(samples):
    from django.contrib.auth import get_user_model

    User = get_user_model()
    tracker.define_task("lab", "sentiment", "classification", ["pos", "neg"])
    a = tracker.annotate(samples["t1"], "sentiment", "pos")  # default: the OS account
    assert a.annotator.username == getpass.getuser()
    b = tracker.annotate(samples["t1"], "sentiment", "neg", "alice")
    assert b.annotator.username == "alice" and not b.annotator.has_usable_password()
    staff = User.objects.create_user("reviewer", password="x")
    c = tracker.annotate(samples["t2"], "sentiment", "neg", staff)
    assert c.annotator == staff
    with pytest.raises(InvalidValue, match="non-empty username"):
        tracker.annotate(samples["t3"], "sentiment", "neg", "  ")


def test_every_change_is_history_and_nothing_is_overwritten_silently(samples):
    tracker.define_task("lab", "sentiment", "classification", ["pos", "neg"])
    s = samples["t1"]
    first = tracker.annotate(s, "sentiment", "pos", "alice")
    same = tracker.annotate(s, "sentiment", "pos", "alice")  # no change: no event
    assert same.pk == first.pk
    tracker.annotate(s, "sentiment", "neg", "alice")
    tracker.review(first, "reject", comment="It is sarcastic.", reviewer="rita")
    tracker.annotate(s, "sentiment", "neg", "alice")  # same value again: resubmits
    tracker.review(first.pk, "accept", reviewer="rita")
    h = events("sentiment")
    assert list(h["action"]) == ["created", "changed", "rejected", "resubmitted", "accepted"]
    assert list(h["old_value"]) == [None, "pos", "neg", "neg", "neg"]
    assert list(h["new_value"]) == ["pos", "neg", "neg", "neg", "neg"]
    assert list(h["old_status"]) == ["", "submitted", "submitted", "rejected", "submitted"]
    assert list(h["new_status"]) == ["submitted", "submitted", "rejected", "submitted", "accepted"]
    assert list(h["actor"]) == ["alice", "alice", "rita", "alice", "rita"]
    assert h.iloc[2]["comment"] == "It is sarcastic."
    assert h["at"].is_monotonic_increasing
    only_t1 = tracker.annotation_history("lab", sample="t1", annotator="alice")
    assert len(only_t1) == 5
    row = tracker.annotation_table("lab", "sentiment").iloc[0]
    assert (row["status"], row["reviewed_by"], row["value"]) == ("accepted", "rita", "neg")


def test_a_new_value_resets_review(samples):
    tracker.define_task("lab", "sentiment", "classification", ["pos", "neg"])
    a = tracker.annotate(samples["t1"], "sentiment", "pos", "alice")
    tracker.review([a], "accept", reviewer="rita")
    b = tracker.annotate(samples["t1"], "sentiment", "neg", "alice")
    assert (b.status, b.reviewed_by, b.review_comment) == ("submitted", None, "")


def test_review_rules(samples):
    tracker.define_task("lab", "sentiment", "classification", ["pos", "neg"])
    a = tracker.annotate(samples["t1"], "sentiment", "pos", "alice")
    b = tracker.annotate(samples["t2"], "sentiment", "neg", "alice")
    with pytest.raises(InvalidValue, match="Rejecting needs a comment"):
        tracker.review(a, "reject")
    with pytest.raises(InvalidValue, match="'accept' or 'reject'"):
        tracker.review(a, "approve")
    with pytest.raises(NotFound, match="No annotation with id 999999; nothing was reviewed"):
        tracker.review([a, 999999], "accept")
    from tracker.models import Annotation

    assert set(Annotation.objects.values_list("status", flat=True)) == {"submitted"}
    done = tracker.review(Annotation.objects.all(), "reject", comment="Redo.")
    assert {x.pk for x in done} == {a.pk, b.pk}
    assert set(Annotation.objects.values_list("review_comment", flat=True)) == {"Redo."}
    assert tracker.annotation_table("lab", status="rejected").shape[0] == 2
    with pytest.raises(InvalidValue, match="status must be one of"):
        tracker.annotation_table("lab", status="done")


def test_annotate_needs_a_way_to_find_the_task(samples):
    tracker.define_task("lab", "sentiment", "classification", ["pos"])
    with pytest.raises(InvalidValue, match="pass the sample as a Sample object"):
        tracker.annotate("t1", "sentiment", "pos")
    task = tracker.get_task("lab", "sentiment")
    assert tracker.annotate("t1", task, "pos").sample == samples["t1"]
    assert tracker.annotate(samples["t2"].pk, task, "pos").sample == samples["t2"]
    with pytest.raises(SampleNotFound, match="no sample 'nope'"):
        tracker.annotate("nope", task, "pos")


# --------------------------------------------------------------------------- bulk import


def test_import_annotations_in_bulk_with_history(samples):
    tracker.define_task("lab", "sentiment", "classification", ["pos", "neg"])
    tracker.annotate(samples["t1"], "sentiment", "pos", "alice")
    rows = pd.DataFrame(
        {
            "external_id": ["t1", "t2", "t3", "t1"],
            "value": ["neg", "pos", "neg", "pos"],
            "annotator": ["alice", "alice", "bob", "bob"],
            "status": ["submitted", "accepted", "rejected", None],
            "review_comment": ["", "", "wrong", None],
        }
    )
    assert tracker.import_annotations("lab", "sentiment", rows) == {"created": 3, "updated": 1, "unchanged": 0}
    table = tracker.annotation_table("lab", "sentiment").set_index(["external_id", "annotator"])
    assert table.loc[("t1", "alice"), "value"] == "neg"
    assert table.loc[("t2", "alice"), "status"] == "accepted"
    assert table.loc[("t3", "bob"), "review_comment"] == "wrong"
    assert table.loc[("t1", "bob"), "status"] == "submitted"
    h = events("sentiment")
    imported = h[h["action"] == "imported"]
    assert len(imported) == 4
    change = imported[imported["old_value"].notna()].iloc[0]
    assert (change["old_value"], change["new_value"]) == ("pos", "neg")
    # Importing the same rows again changes nothing.
    assert tracker.import_annotations("lab", "sentiment", rows)["unchanged"] == 4


@pytest.mark.parametrize(
    "rows, error, message",
    [
        ([{"external_id": "t1", "value": "pos"}, {"external_id": "t2", "value": "maybe"}], InvalidAnnotation,
         "row 1: sample 't2'.*'maybe' is not one of the labels.*Nothing was stored"),
        ([{"external_id": "t1", "value": "pos"}, {"external_id": "zz", "value": "pos"}], SampleNotFound,
         "1 row\\(s\\) name samples that project 'lab' does not have \\('zz'\\)"),
        ([{"external_id": "t1", "value": "pos"}, {"external_id": "t1", "value": "neg"}], InvalidValue,
         "rows 0 and 1 both annotate sample 't1'"),
        ([{"external_id": "t1", "value": "pos", "status": "done"}], InvalidValue, "has status 'done'"),
        ([{"value": "pos"}], InvalidValue, "row 0 names no sample"),
        ([{"external_id": "t1"}], InvalidValue, "row 0 has no 'value'"),
        ([{"external_id": "t1", "value": "pos", "created_at": "yesterday"}], InvalidValue, "unreadable time"),
        ("t1,pos", InvalidValue, "must be a list of dicts or a DataFrame"),
    ],
)
def test_import_annotations_rejects_bad_rows_and_stores_nothing(samples, rows, error, message):
    tracker.define_task("lab", "sentiment", "classification", ["pos", "neg"])
    with pytest.raises(error, match=message):
        tracker.import_annotations("lab", "sentiment", rows, annotator="alice")
    from tracker.models import Annotation, AnnotationEvent

    assert not Annotation.objects.exists() and not AnnotationEvent.objects.exists()


# --------------------------------------------------------------------------- predictions


def test_predictions_in_bulk_replace_and_accept(samples):
    from tracker.models import Prediction, Run

    tracker.define_task("lab", "sentiment", "classification", ["pos", "neg"])
    run = Run.objects.create(project=samples["t1"].project, name="m")
    preds = tracker.add_predictions(
        "lab", "sentiment",
        pd.DataFrame({"external_id": ["t1", "t2"], "value": ["pos", "neg"], "score": [0.9, 0.55]}),
        model_version="v1", run=run.uid,
    )
    assert [p.sample.external_id for p in preds] == ["t1", "t2"]
    assert Prediction.objects.filter(run=run, model_version="v1").count() == 2
    # Re-running v1 replaces its predictions; v2 adds its own.
    tracker.add_predictions("lab", "sentiment", [{"sample": samples["t1"], "value": "neg", "score": 0.6}], model_version="v1")
    tracker.add_predictions("lab", "sentiment", [{"sample": samples["t1"].pk, "value": "pos"}], model_version="v2")
    assert Prediction.objects.filter(sample=samples["t1"]).count() == 2
    assert Prediction.objects.get(sample=samples["t1"], model_version="v1").value == "neg"
    assert Prediction.objects.filter(sample=samples["t2"]).count() == 1

    v2 = Prediction.objects.get(model_version="v2")
    a = tracker.accept_prediction(v2, "alice")
    assert (a.value, a.prediction_id, a.annotator.username) == ("pos", v2.pk, "alice")
    assert events("sentiment")["action"].tolist() == ["accepted_prediction"]
    with pytest.raises(NotFound, match="no prediction with id 0"):
        tracker.accept_prediction(0)


@pytest.mark.parametrize(
    "rows, kwargs, error, message",
    [
        ([{"external_id": "t1", "value": "maybe"}], {}, InvalidAnnotation, "row 1.*'maybe' is not one of the labels.*Nothing was stored"),
        ([{"external_id": "t1", "value": "pos", "score": "high"}], {}, InvalidValue, "a score is a finite number"),
        ([{"external_id": "t9", "value": "pos"}], {}, SampleNotFound, "'t9'"),
        ([{"external_id": "t1", "value": "pos"}], {"run": "no-such-run"}, RunNotFound, "no run with uid 'no-such-run'"),
    ],
)
def test_bad_predictions_store_nothing(samples, rows, kwargs, error, message):
    from tracker.models import Prediction

    tracker.define_task("lab", "sentiment", "classification", ["pos", "neg"])
    tracker.add_predictions("lab", "sentiment", [{"external_id": "t2", "value": "pos"}])
    with pytest.raises(error, match=message):
        tracker.add_predictions("lab", "sentiment", [{"external_id": "t2", "value": "neg"}, *rows], **kwargs)
    assert list(Prediction.objects.values_list("value", flat=True)) == ["pos"]


def test_accepting_a_prediction_the_schema_no_longer_allows(samples):
    from tracker.models import Prediction

    tracker.define_task("lab", "sentiment", "classification", ["pos", "neg"])
    tracker.add_predictions("lab", "sentiment", [{"external_id": "t1", "value": "neg"}])
    tracker.define_task("lab", "sentiment", "classification", ["pos"])  # no annotations: allowed
    with pytest.raises(InvalidAnnotation, match="'neg' is not one of the labels"):
        tracker.accept_prediction(Prediction.objects.get().pk)


# --------------------------------------------------------------------------- contract with datasets


def test_resolved_labels_contract(samples):
    from tracker.services.labeling import resolved_labels

    tracker.define_task("lab", "sentiment", "classification", ["pos", "neg"])
    tracker.define_task("lab", "topics", "multilabel", ["a", "b"])
    t1, t2, t3 = samples["t1"], samples["t2"], samples["t3"]
    # t1: majority pos (2 against 1)
    for who, v in (("u1", "pos"), ("u2", "pos"), ("u3", "neg")):
        tracker.annotate(t1, "sentiment", v, who)
    # t2: a tie, but one accepted annotation decides
    a = tracker.annotate(t2, "sentiment", "neg", "u1")
    tracker.annotate(t2, "sentiment", "pos", "u2")
    tracker.review(a, "accept", reviewer="rita")
    # t3: a tie and nothing accepted: no final label; the rejected one never counts
    tracker.annotate(t3, "sentiment", "neg", "u1")
    tracker.annotate(t3, "sentiment", "pos", "u2")
    r = tracker.annotate(t3, "sentiment", "pos", "u3")
    tracker.review(r, "reject", comment="no")
    tracker.annotate(t1, "topics", ["a", "b"], "u1")
    tracker.annotate(t1, "topics", ["a"], "u2")
    tracker.annotate(t1, "topics", ["a"], "u3")

    out = resolved_labels("lab", [t1.pk, t2.pk, t3.pk])
    assert out == {
        t1.pk: {"sentiment": "pos", "topics": ["a"]},
        t2.pk: {"sentiment": "neg"},
        t3.pk: {},
    }
    assert resolved_labels(samples["t1"].project, []) == {}
    sig = inspect.signature(resolved_labels)
    assert list(sig.parameters) == ["project", "sample_ids"]


# --------------------------------------------------------------------------- facades


def test_sync_and_async_facades_match():
    import tracker._async.labeling as aio_mod
    import tracker._sync.labeling as sync_mod

    assert sorted(sync_mod.__all__) == sorted(aio_mod.__all__)
    for name in sync_mod.__all__:
        s, a = getattr(sync_mod, name), getattr(aio_mod, name)
        assert inspect.iscoroutinefunction(a), name
        assert inspect.signature(s) == inspect.signature(a), name
        assert (s.__doc__ or "").strip(), name
        assert getattr(tracker, name) is s and getattr(tracker.aio, name) is a


@pytest.mark.django_db(transaction=True)
def test_async_twins_do_the_same_work():
    tracker.add_samples("alab", [{"id": "x1", "text": "a"}, {"id": "x2", "text": "b"}])

    async def view():
        await tracker.aio.define_task("alab", "sentiment", "classification", ["pos", "neg"])
        task = await tracker.aio.get_task("alab", "sentiment")
        a = await tracker.aio.annotate("x1", task, "pos", "alice")
        await tracker.aio.annotate("x1", task, "neg", "bob")
        await tracker.aio.review([a], "accept", reviewer="rita")
        got = await tracker.aio.next_samples("alab", "sentiment", 1, "carol")
        released = await tracker.aio.release("alab", "sentiment", None, "carol")
        frame = await tracker.aio.agreement("alab", "sentiment")
        resolved = await tracker.aio.resolve_labels("alab", "sentiment", ("accepted", "majority"))
        with pytest.raises(InvalidAnnotation):
            await tracker.aio.annotate("x2", task, "nope", "alice")
        hist = await tracker.aio.annotation_history("alab")
        return [s.external_id for s in got], released, frame, resolved, hist

    got, released, frame, resolved, hist = asyncio.run(view())
    assert got == ["x2"] and released == 1
    assert frame.iloc[0]["items"] == 1
    assert resolved["value"].tolist() == ["pos"]
    assert hist["action"].tolist() == ["created", "created", "accepted"]


def test_sync_api_inside_a_loop_names_the_async_twin():
    from tracker.exceptions import AsyncContextError

    async def view():
        tracker.next_samples("lab", "sentiment")

    with pytest.raises(AsyncContextError, match=r"await tracker.aio.next_samples"):
        asyncio.run(view())
