"""The labelling widget: its Python callbacks called directly, and headless in a real kernel."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

import tracker
from notebooks import run_cells, run_notebook
from tracker.exceptions import InvalidValue

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(db):
    from tracker.models import Sample

    tracker.add_samples("w", [
        {"id": "a", "text": "Alice loves Paris. Paris!", "width": 100, "height": 80, "image": "http://x/a.png"},
        {"id": "b", "text": "Bob hates rain.", "width": 100, "height": 80},
        {"id": "c", "text": "Meh.", "width": 100, "height": 80},
    ])
    return Sample.objects.filter(project__name="w").order_by("external_id")


def stored(task, annotator="me"):
    t = tracker.annotation_table("w", task)
    return dict(zip(t.query("annotator == @annotator")["external_id"], t.query("annotator == @annotator")["value"]))


def test_classification_buttons_shortcuts_and_navigation(project):
    tracker.define_task("w", "sentiment", "classification", ["pos", "neg"], instructions="Overall tone.")
    w = tracker.label(project, "sentiment", "me")
    assert "sample 1 of 3" in w.header.value and "Overall tone." in w.header.value
    assert "Alice loves Paris." in w.content.value
    assert w.label_buttons["pos"].description == "pos [1]"
    assert w.back_button.disabled
    w.label_buttons["neg"].click()  # saved at once, then the next sample
    assert stored("sentiment") == {"a": "neg"}
    assert w.index == 1 and "Saved for a" in w.status.value
    assert (w.progress.value, w.progress_text.value) == (1, "1 / 3 labelled")
    w.key_box.value = "1"  # a key typed in the shortcut box
    assert w.key_box.value == "" and stored("sentiment") == {"a": "neg", "b": "pos"}
    w.press("b")
    assert w.index == 1 and w.value == "pos" and w.label_buttons["pos"].button_style == "success"
    w.press("2")  # relabel b
    assert stored("sentiment")["b"] == "neg"
    w.press("s")  # skip c
    assert w.current is None and "All 3 samples seen; 2 labelled." in w.content.value
    assert w.next_button.disabled
    w.press("x")
    assert "No shortcut 'x'" in w.status.value
    w.back()
    assert w.current.external_id == "c"
    assert w.choose("maybe") is False
    assert "'maybe' is not one of the labels" in w.status.value and "c" not in stored("sentiment")
    history = tracker.annotation_history("w", "sentiment")
    assert history["action"].tolist() == ["created", "created", "changed"]


def test_widget_resumes_what_was_labelled_before(project):
    tracker.define_task("w", "sentiment", "classification", ["pos", "neg"])
    tracker.annotate(project[1], "sentiment", "pos", "me")
    w = tracker.label(list(project), "sentiment", "me", auto_advance=False)
    assert w.done == 1 and w.progress_text.value == "1 / 3 labelled"
    w.choose("neg")
    assert w.index == 0  # no auto-advance
    w.next()
    assert w.value == "pos"


def test_multilabel_toggles(project):
    tracker.define_task("w", "topics", "multilabel", ["city", "weather", "people"])
    w = tracker.label(project, "topics", "me")
    w.press("1"), w.press("3")
    assert stored("topics") == {"a": ["city", "people"]}
    w.label_buttons["city"].click()
    assert stored("topics") == {"a": ["people"]} and w.index == 0
    assert w.label_buttons["people"].button_style == "success" and w.label_buttons["city"].button_style == ""


def test_spans_from_typed_text_and_offsets(project):
    tracker.define_task("w", "ner", "spans", ["PER", "LOC"])
    w = tracker.label(project, "ner", "me")
    w.span_text.value = "Paris"
    w.span_occurrence.value = 2
    w.label_buttons["LOC"].click()
    assert stored("ner") == {"a": [{"start": 19, "end": 24, "label": "LOC"}]}
    assert w.span_text.value == ""
    assert w.add_span(0, 5, "PER")
    assert '<mark style="background:#e6194b33' in w.content.value and "PER" in w.content.value
    assert [label for label, _ in w.item_list.options] == ["0: PER [0:5]", "1: LOC [19:24]"]
    w.label_buttons["PER"].click()  # no text typed
    assert "Type the words to label" in w.status.value
    w.span_text.value = "London"
    w.choose("LOC")
    assert "'London' does not occur" in w.status.value
    assert w.add_span(0, 99, "PER") is False and "outside the text" in w.status.value
    w.item_list.value = 0
    w._remove_selected()
    assert stored("ner") == {"a": [{"start": 19, "end": 24, "label": "LOC"}]}


def test_boxes_drawn_on_the_image(project):
    tracker.define_task("w", "objects", "boxes", ["car"])
    w = tracker.label(project, "objects", "me")
    assert '<svg viewBox="0 0 100 80"' in w.content.value and 'href="http://x/a.png"' in w.content.value
    for box_input, v in zip(w.box_inputs, (10, 20, 30, 40)):
        box_input.value = v
    w.press("1")
    assert stored("objects") == {"a": [{"x": 10, "y": 20, "width": 30, "height": 40, "label": "car"}]}
    assert '<rect x="10" y="20" width="30" height="40"' in w.content.value
    assert w.add_box(90, 0, 20, 10, "car") is False and "outside the 100x80 image" in w.status.value
    assert w.remove(5) is False and "There is no item 5" in w.status.value
    assert w.remove(0) and stored("objects") == {"a": []}


def test_images_from_stored_media_are_embedded(db, tmp_path):
    from django.core.files.base import ContentFile
    from PIL import Image

    from tracker.models import Sample

    tracker.add_samples("img", [{"id": "p"}])
    s = Sample.objects.get(external_id="p")
    Image.new("RGB", (8, 6), "red").save(tmp_path / "p.png")
    s.media.save("p.png", ContentFile((tmp_path / "p.png").read_bytes()))
    tracker.define_task("img", "objects", "boxes", ["dot"])
    w = tracker.label([s], "objects", "me")
    assert 'viewBox="0 0 8 6"' in w.content.value and "data:image/png;base64," in w.content.value


def test_text_rating_and_json(project):
    tracker.add_samples("w", [{"id": "d", "payload": {"k": [1, 2]}}])
    tracker.define_task("w", "caption", "text", max_length=5)
    tracker.define_task("w", "stars", "rating", scale=(1, 3))
    w = tracker.label(project, "caption", "me")
    w.text_input.value = "short"
    w.set_value(w.text_input.value)
    assert stored("caption") == {"a": "short"}
    assert w.set_value("too long") is False and "at most 5" in w.status.value
    r = tracker.label(project, "stars", "me")
    assert [b.description for b in r.label_buttons.values()] == ["1 [1]", "2 [2]", "3 [3]"]
    r.press("3")
    assert stored("stars") == {"a": 3} and r.index == 1
    from tracker.models import Sample

    j = tracker.label(Sample.objects.filter(external_id="d"), "stars", "me")
    assert "&quot;payload&quot;" in j.content.value


def test_queue_mode_claims_batches_and_releases_skips(project):
    tracker.define_task("w", "sentiment", "classification", ["pos", "neg"])
    w = tracker.label("w", "sentiment", "me", batch=2)
    assert [s.external_id for s in w.state.samples] == ["a", "b"]
    assert sorted(tracker.claims("w", "sentiment")["external_id"]) == ["a", "b"]
    w.skip()  # a goes back to the queue
    assert sorted(tracker.claims("w", "sentiment")["external_id"]) == ["b"]
    w.press("1")  # b labelled; the batch is used up, so the next one is claimed
    assert [s.external_id for s in w.state.samples] == ["a", "b", "c"]  # a is not offered again
    assert w.current.external_id == "c"
    w.press("2")
    assert w.current is None and "The queue is empty" in w.content.value
    assert stored("sentiment") == {"b": "pos", "c": "neg"}
    assert tracker.claims("w", "sentiment").empty


def test_bad_widget_arguments(project):
    tracker.define_task("w", "sentiment", "classification", ["pos", "neg"])
    tracker.add_samples("other", [{"id": "z"}])
    from tracker.models import Sample

    with pytest.raises(InvalidValue, match="takes a list or queryset of Samples"):
        tracker.label(42, "sentiment")
    with pytest.raises(InvalidValue, match="is not in task 'sentiment'"):
        tracker.label([project[0], Sample.objects.get(external_id="z")], "sentiment")
    with pytest.raises(InvalidValue, match="Shortcut 'p' points at 'positive'"):
        tracker.label(project, "sentiment", shortcuts={"p": "positive"})
    with pytest.raises(InvalidValue, match="batch must be"):
        tracker.label("w", "sentiment", batch=0)
    w = tracker.label(project, "sentiment", "me", shortcuts={"p": "pos"})
    w.press("p")
    assert stored("sentiment") == {"a": "pos"}


# --------------------------------------------------------------------------- in a real kernel


def test_widget_in_a_headless_kernel_saves_through_the_database_thread(subprocess_env):
    cells = run_cells(
        [
            "import tracker\ntracker.configure(allow_async_unsafe=False, quiet=True)\n"
            "tracker.add_samples('k', [{'id': 'x', 'text': 'one'}, {'id': 'y', 'text': 'two'}])\n"
            "task = tracker.define_task('k', 'sentiment', 'classification', ['pos', 'neg'])",
            "w = tracker.label(tracker.next_samples('k', 'sentiment', 2, 'kim'), task, 'kim')\nw",
            "w.label_buttons['neg'].click()\nw.key_box.value = '1'\nprint(w.progress_text.value)",
            "w2 = await tracker.aio.label('k', 'sentiment', 'lee')\nprint(len(w2.state.samples))",
            "import threading\nprint(threading.current_thread().name)",
        ],
        subprocess_env,
    )
    for c in cells:
        assert c.error is None, c.error
    widget = cells[1].outputs[0]["data"]
    assert "application/vnd.jupyter.widget-view+json" in widget
    assert cells[2].stdout.strip() == "2 / 2 labelled"
    assert cells[3].stdout.strip() == "0"
    t = tracker.annotation_table("k", "sentiment")
    assert dict(zip(t["external_id"], t["value"])) == {"x": "neg", "y": "pos"}
    assert set(t["annotator"]) == {"kim"}


def test_example_notebook_runs_headless(subprocess_env, tmp_path):
    nb = nbformat.read(ROOT / "notebooks" / "labeling.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit it without outputs"
    run_notebook(nb, subprocess_env, cwd=tmp_path, timeout=300)
    outputs = {c.metadata.get("tags", ["?"])[0]: c.outputs for c in nb.cells if c.cell_type == "code"}
    mimes = {k for o in outputs["widget"] for k in o.get("data", {})}
    assert "application/vnd.jupyter.widget-view+json" in mimes
    text = "".join(o.get("text", "") for o in outputs["check"])
    summary = json.loads(text.strip().splitlines()[-1])
    assert summary["annotations"] >= 6 and summary["resolved"] == 3
    assert summary["exported_tasks"] == 4 and summary["kappa"] == pytest.approx(1.0)
    assert (tmp_path / "reviews-label-studio.json").exists()
