"""Django admin for annotation: review actions, validated edits with history, prediction acceptance."""

from __future__ import annotations

import pytest

import tracker

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client, django_user_model):
    user = django_user_model.objects.create_superuser("lead", "lead@example.org", "pw")
    client.force_login(user)
    return user


@pytest.fixture
def labelled():
    tracker.add_samples("adm", [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}])
    tracker.define_task("adm", "sentiment", "classification", ["pos", "neg"])
    from tracker.models import Sample

    s = {x.external_id: x for x in Sample.objects.filter(project__name="adm")}
    return [tracker.annotate(s["a"], "sentiment", "pos", "ann"), tracker.annotate(s["b"], "sentiment", "neg", "ann")]


def _action(client, model, action, ids, **extra):
    return client.post(
        f"/admin/tracker/{model}/",
        {"action": action, "_selected_action": [str(i) for i in ids], "index": 0, **extra},
        follow=True,
    )


def test_admin_pages_render(client, staff, labelled):
    for url in ("annotationtask", "annotation", "prediction", "claim"):
        assert client.get(f"/admin/tracker/{url}/").status_code == 200, url
    page = client.get(f"/admin/tracker/annotation/{labelled[0].pk}/change/")
    assert page.status_code == 200 and b"Review comment" in client.get("/admin/tracker/annotation/").content


def test_review_actions(client, staff, labelled):
    from tracker.models import Annotation

    ids = [a.pk for a in labelled]
    page = _action(client, "annotation", "reject", ids)
    assert b"Rejecting needs a comment" in page.content
    assert set(Annotation.objects.values_list("status", flat=True)) == {"submitted"}
    _action(client, "annotation", "reject", ids[:1], comment="Sarcasm.")
    _action(client, "annotation", "accept", ids[1:])
    a, b = Annotation.objects.get(pk=ids[0]), Annotation.objects.get(pk=ids[1])
    assert (a.status, a.review_comment, a.reviewed_by.username) == ("rejected", "Sarcasm.", "lead")
    assert (b.status, b.reviewed_by.username) == ("accepted", "lead")
    h = tracker.annotation_history("adm")
    assert h.query("action == 'rejected'")["actor"].tolist() == ["lead"]


def test_edits_are_validated_and_kept_in_the_history(client, staff, labelled):
    from tracker.models import Annotation

    a = labelled[0]
    url = f"/admin/tracker/annotation/{a.pk}/change/"
    bad = client.post(url, {"value": '"maybe"', "events-TOTAL_FORMS": 1, "events-INITIAL_FORMS": 1})
    assert bad.status_code == 200 and b"is not one of the labels" in bad.content
    assert Annotation.objects.get(pk=a.pk).value == "pos"
    event_id = a.events.get().pk
    ok = client.post(url, {
        "value": '"neg"', "events-TOTAL_FORMS": 1, "events-INITIAL_FORMS": 1, "events-MIN_NUM_FORMS": 0,
        "events-MAX_NUM_FORMS": 1000, "events-0-id": event_id, "events-0-annotation": a.pk,
    })
    assert ok.status_code == 302, ok.content.decode()[:2000]
    assert Annotation.objects.get(pk=a.pk).value == "neg"
    last = tracker.annotation_history("adm").iloc[-1]
    assert (last["action"], last["old_value"], last["new_value"], last["actor"]) == ("changed", "pos", "neg", "lead")


def test_accept_prediction_action(client, staff, labelled):
    from tracker.models import Annotation, Prediction

    preds = tracker.add_predictions("adm", "sentiment", [{"external_id": "a", "value": "neg", "score": 0.4}])
    page = _action(client, "prediction", "accept_as_annotation", [preds[0].pk])
    assert b"1 prediction(s) accepted" in page.content
    mine = Annotation.objects.get(annotator__username="lead")
    assert (mine.value, mine.prediction_id) == ("neg", Prediction.objects.get().pk)


def test_release_claims_action(client, staff, labelled):
    from tracker.models import Claim

    tracker.add_samples("adm", [{"id": "c"}])
    tracker.next_samples("adm", "sentiment", 1, "zoe")
    page = _action(client, "claim", "release_claims", list(Claim.objects.values_list("pk", flat=True)))
    assert b"1 claim(s) released" in page.content and not Claim.objects.exists()
