"""add_samples: upsert by id, stable auto ids, and bad input that changes nothing."""

from __future__ import annotations

import math

import pytest

import tracker
from tracker.exceptions import InvalidValue, ProjectNotFound
from tracker.models import Project, Sample

pytestmark = pytest.mark.django_db


def test_add_then_update_by_id():
    first = tracker.add_samples("p", [{"id": "a", "text": "one", "metadata": {"src": "x"}}, {"id": 7}])
    assert [s.external_id for s in first] == ["a", "7"]
    assert first[0].data == {"text": "one"} and first[0].metadata == {"src": "x"}
    again = tracker.add_samples("p", [{"id": "a", "text": "uno"}])
    assert again[0].pk == first[0].pk
    assert Sample.objects.get(pk=first[0].pk).data == {"text": "uno"}
    assert Sample.objects.count() == 2
    assert Project.objects.get().name == "p"


def test_records_without_id_get_a_stable_content_id():
    a = tracker.add_samples("p", [{"text": "same"}, {"text": "other"}, {"text": "same"}])
    b = tracker.add_samples("p", [{"text": "same"}])
    assert len({s.pk for s in a}) == 2
    assert b[0].pk == a[0].pk
    assert Sample.objects.count() == 2


def test_custom_id_field():
    [s] = tracker.add_samples("p", [{"uid": "u1", "v": 1}], id_field="uid")
    assert s.external_id == "u1" and s.data == {"v": 1}


@pytest.mark.parametrize(
    "records, message",
    [
        ([{"id": "ok"}, "not a dict"], "Record 1 is a str"),
        ([{"id": "ok"}, {"id": "bad", "x": math.nan}], "Record 1: data.x is nan"),
        ([{"id": "ok"}, {"id": "bad", "x": {1, 2}}], "not JSON-serialisable"),
        ([{"id": "ok"}, {"id": "bad", "x": {"deep": [1, object()]}}], "data.x.deep[1]"),
        ([{"id": "dup"}, {"id": "dup"}], "Records 0 and 1 have the same id 'dup'"),
        ([{"id": "x" * 300}], "longer than 255"),
        ([{"id": 1.5}], "must be a string or an integer"),
        ([{"id": "m", "metadata": "nope"}], "'metadata' must be a dict"),
        ("a string", "records must be an iterable of dicts"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(records, message):
    tracker.add_samples("p", [{"id": "ok", "v": "original"}])
    with pytest.raises(InvalidValue, match=r".*") as exc:
        tracker.add_samples("p", records)
    assert message in str(exc.value)
    assert list(Sample.objects.values_list("external_id", "data")) == [("ok", {"v": "original"})]


def test_bad_project_names():
    with pytest.raises(InvalidValue, match="non-empty string"):
        tracker.add_samples("  ", [{"id": 1}])
    with pytest.raises(ProjectNotFound, match="Known projects: none yet"):
        tracker.get_project("missing")
    assert Project.objects.count() == 0
