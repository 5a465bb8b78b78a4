"""tracker.services._prebuilt: querysets compiled once give what the ORM gives."""

from __future__ import annotations

import pytest

from tracker.models import AnnotationTask, Claim, Project, Sample
from tracker.services import _prebuilt
from tracker.services.labeling import define_task


def test_first_builds_the_instance_the_orm_builds(db):
    project = Project.objects.create(name="p")
    task = define_task(project, "t", "classification", ["a", "b"])
    by_pk = _prebuilt.Prebuilt(lambda pk: AnnotationTask.objects.filter(pk=pk), -1)
    got, want = by_pk.first(task.pk), AnnotationTask.objects.get(pk=task.pk)
    fields = [f.attname for f in AnnotationTask._meta.concrete_fields]
    assert [getattr(got, f) for f in fields] == [getattr(want, f) for f in fields]
    assert got.labels == ["a", "b"] and got.created_at.tzinfo is not None and not got._state.adding
    assert by_pk.first(task.pk + 100) is None
    two = _prebuilt.Prebuilt(lambda p, ext: Sample.objects.filter(project_id=p, external_id=ext), -1, "\x00")
    Sample.objects.create(project=project, external_id="x", data={"n": [1, 2]})
    assert two.first(project.pk, "x").data == {"n": [1, 2]}
    assert two.first(project.pk, "y") is None


def test_querysets_it_cannot_reuse_are_refused(db):
    joined = _prebuilt.Prebuilt(lambda pk: AnnotationTask.objects.select_related("project").filter(pk=pk), -1)
    with pytest.raises(ValueError, match="select_related"):
        joined.first(1)
    hidden = _prebuilt.Prebuilt(lambda pk: AnnotationTask.objects.filter(pk=pk + 1), -1)
    with pytest.raises(ValueError, match="not one plain parameter"):
        hidden.first(1)


def _claimable():
    """A task, a sample and a user: what a Claim row needs, and the time now."""
    from django.utils import timezone

    from tracker.services.access import create_user

    project = Project.objects.create(name="p")
    task = define_task(project, "t", "classification", ["a"])
    sample = Sample.objects.create(project=project, external_id="x", data={})
    return task, sample, create_user("ann"), timezone.now()


def test_insert_and_delete_write_what_the_orm_writes(db):
    task, sample, user, now = _claimable()
    pk = _prebuilt.insert(Claim, {"task": task.pk, "sample": sample.pk, "annotator": user.pk, "claimed_at": now, "expires_at": now})
    claim = Claim.objects.get(pk=pk)
    assert (claim.task_id, claim.sample_id, claim.annotator_id, claim.expires_at) == (task.pk, sample.pk, user.pk, now)
    _prebuilt.delete(Claim, task_id=task.pk, sample_id=sample.pk, annotator_id=user.pk + 1)
    assert Claim.objects.count() == 1
    _prebuilt.delete(Claim, task_id=task.pk, sample_id=sample.pk, annotator_id=user.pk)
    assert not Claim.objects.exists()


def test_delete_sends_the_signals_a_host_project_listens_to(db):
    from django.db.models.signals import post_delete

    task, sample, user, now = _claimable()
    Claim.objects.create(task=task, sample=sample, annotator=user, expires_at=now)
    seen = []

    def receiver(sender, instance, **kwargs):
        seen.append(instance.pk)

    post_delete.connect(receiver, sender=Claim)
    try:
        _prebuilt.delete(Claim, task_id=task.pk, sample_id=sample.pk, annotator_id=user.pk)
    finally:
        post_delete.disconnect(receiver, sender=Claim)
    assert len(seen) == 1 and not Claim.objects.exists()


def test_insert_unless_exists_inserts_once(db):
    task, sample, user, now = _claimable()
    row = {"task": task.pk, "sample": sample.pk, "annotator": user.pk, "claimed_at": now, "expires_at": now}
    first = _prebuilt.insert(Claim, row, unless_exists=("task", "sample"))
    assert first == Claim.objects.get().pk
    assert _prebuilt.insert(Claim, row, unless_exists=("task", "sample")) is None
    assert Claim.objects.count() == 1


def test_concurrent_annotations_of_one_sample_by_one_annotator_make_one(transactional_db):
    """save_annotation inserts unless the annotation exists: racing callers end with one row,
    the later value, and one history event per change."""
    import threading

    from django.db import connections

    from tracker.models import Annotation, AnnotationEvent
    from tracker.services.access import create_user
    from tracker.services.labeling import annotate

    project = Project.objects.create(name="p")
    task = define_task(project, "t", "classification", ["a", "b"])
    Sample.objects.create(project=project, external_id="x", data={})
    create_user("ann")
    start, errors = threading.Barrier(4), []

    def work(value: str) -> None:
        try:
            start.wait()
            annotate(Sample.objects.get(external_id="x"), AnnotationTask.objects.get(pk=task.pk), value, annotator="ann")
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(v,)) for v in "abab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ann = Annotation.objects.get()
    actions = list(AnnotationEvent.objects.filter(annotation=ann).order_by("id").values_list("action", flat=True))
    assert actions[0] == "created" and set(actions[1:]) <= {"changed"} and len(actions) <= 4
