"""Runs through the sync API: lifecycle, params, tags, notes, metrics, reading back, lineage."""

from __future__ import annotations

import datetime as dt
import math
import subprocess

import numpy as np
import pandas as pd
import pytest
from django.db import transaction
from django.utils import timezone
from test_runs_support import _runs_isolated  # noqa: F401  (autouse fixture)

import tracker
from tracker.exceptions import InvalidValue, ParamConflict, RunNotFound
from tracker.models import Metric, MetricSummary, Project, Run

pytestmark = pytest.mark.django_db


def row(run) -> Run:
    return Run.objects.get(uid=run.id)


# -- lifecycle -------------------------------------------------------------------------------
def test_with_block_finishes_and_captures_the_environment():
    with tracker.start_run("lifecycle", "ok", params={"lr": 0.1}, tags={"team": "a"}) as run:
        assert run.status == "running"
        assert row(run).status == "running"
    r = row(run)
    assert r.status == "finished" and run.status == "finished"
    assert r.ended_at is not None and r.ended_at >= r.started_at
    assert r.pid is not None and r.host
    assert r.python_version.split()[-1].count(".") == 2
    assert "django" in r.packages and "pandas" in r.packages
    assert r.heartbeat_timeout == tracker.conf.get("HEARTBEAT_TIMEOUT")
    assert r.project.name == "lifecycle" and r.name == "ok"


def test_exception_marks_the_run_failed_with_a_traceback_summary_and_propagates():
    def train():
        raise ValueError("loss exploded at step 7")

    with pytest.raises(ValueError, match="exploded"):
        with tracker.start_run("lifecycle", "bad") as run:
            run.log_metric("loss", 1.0)
            train()
    r = row(run)
    assert r.status == "failed"
    assert "ValueError: loss exploded at step 7" in r.error
    assert "in train" in r.error  # the frame that raised is named
    assert Metric.objects.filter(run=r).count() == 1  # points logged before the error are kept


def test_keyboard_interrupt_marks_the_run_killed():
    with pytest.raises(KeyboardInterrupt):
        with tracker.start_run("lifecycle", "interrupted") as run:
            raise KeyboardInterrupt
    r = row(run)
    assert r.status == "killed"
    assert "KeyboardInterrupt" in r.error


def test_finish_explicitly_with_an_exception_and_bad_status():
    run = tracker.start_run("lifecycle")
    with pytest.raises(InvalidValue, match="finished', 'failed' or 'killed'"):
        run.finish("done")
    assert row(run).status == "running"
    try:
        raise RuntimeError("disk full")
    except RuntimeError as exc:
        run.finish("failed", exc)
    r = row(run)
    assert r.status == "failed" and "RuntimeError: disk full" in r.error


def test_git_commit_and_dirty_flag_are_captured(tmp_path, monkeypatch):
    from tracker.services import _runs_env

    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    (repo / "train.py").write_text("print(1)\n")
    subprocess.run([*git, "add", "train.py"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "first"], cwd=repo, check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    monkeypatch.chdir(repo)
    _runs_env.clear_caches()
    with tracker.start_run("git") as clean:
        pass
    (repo / "train.py").write_text("print(2)\n")
    _runs_env.clear_caches()
    with tracker.start_run("git") as dirty:
        pass
    nowhere = tmp_path / "plain"
    nowhere.mkdir()
    monkeypatch.chdir(nowhere)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    _runs_env.clear_caches()
    with tracker.start_run("git") as outside:
        pass
    _runs_env.clear_caches()
    assert (row(clean).git_commit, row(clean).git_dirty) == (head, False)
    assert (row(dirty).git_commit, row(dirty).git_dirty) == (head, True)
    assert (row(outside).git_commit, row(outside).git_dirty) == ("", None)


def test_a_run_started_inside_a_rolled_back_transaction_leaves_nothing():
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with transaction.atomic():
            run = tracker.start_run("atomic", params={"a": 1})
            run.log_metric("x", 1.0)
            run.finish()
            raise Boom
    assert not Run.objects.filter(uid=run.id).exists()
    assert not Metric.objects.filter(run__uid=run.id).exists()


# -- params ----------------------------------------------------------------------------------
def test_params_are_flattened_and_json():
    with tracker.start_run(
        "params", params={"optimizer": {"name": "adam", "betas": (0.9, 0.99)}}
    ) as run:
        run.log_param("lr", np.float32(0.5))
        all_params = run.log_params({"epochs": 3, "data": {"path": "/d", "aug": None}})
    expected = {
        "optimizer.name": "adam",
        "optimizer.betas": [0.9, 0.99],
        "lr": 0.5,
        "epochs": 3,
        "data.path": "/d",
        "data.aug": None,
    }
    assert all_params == expected
    assert row(run).params == expected
    assert run.params == expected


def test_changing_a_param_raises_and_stores_nothing_of_the_call():
    run = tracker.start_run("params", params={"lr": 0.1, "seed": 1})
    run.log_params({"lr": 0.1})  # the same value again is fine
    run.log_param("seed", 1.0)  # 1 == 1.0
    with pytest.raises(ParamConflict) as exc:
        run.log_params({"batch": 32, "lr": 0.2})
    message = str(exc.value)
    assert "'lr'" in message and "0.1" in message and "0.2" in message and "new run" in message
    with pytest.raises(ParamConflict):
        run.log_param("seed", True)  # a bool is not the number 1
    assert row(run).params == {"lr": 0.1, "seed": 1}
    run.finish()


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"lr": float("nan")}, "JSON cannot hold"),
        ({"when": dt.date(2024, 1, 1)}, "not a JSON value"),
        ({"a": {"b": 1}, "a.b": 2}, "given twice"),
        ({"": 1}, "empty"),
        ({"x" * 300: 1}, "limit is 250"),
        ([("lr", 1)], "dict"),
    ],
)
def test_bad_params_fail_at_the_call_and_nothing_is_created(params, fragment):
    before = Run.objects.count()
    with pytest.raises(InvalidValue, match=fragment):
        tracker.start_run("params-bad", params=params)
    assert Run.objects.count() == before
    run = tracker.start_run("params-bad", params={"ok": 1})
    with pytest.raises(InvalidValue, match=fragment):
        run.log_params(params)
    assert row(run).params == {"ok": 1}
    run.finish()


# -- tags and notes --------------------------------------------------------------------------
def test_tags_and_notes_are_editable_after_the_run_ended():
    with tracker.start_run("tags", tags={"stage": "dev", "owner": "ana"}, notes="first try") as run:
        pass
    again = tracker.get_run(run.id)
    again.set_tag("stage", "prod")
    assert again.set_tags({"owner": None, "reviewed": True}) == {"stage": "prod", "reviewed": True}
    again.set_notes("works with lr=0.1", append=True)
    r = row(run)
    assert r.tags == {"stage": "prod", "reviewed": True}
    assert r.notes == "first try\n\nworks with lr=0.1"
    assert again.set_notes("replaced") == "replaced"
    assert row(run).status == "finished"


# -- metrics ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, fragment",
    [
        ("0.5", "str"),
        (None, "None"),
        (True, "boolean"),
        (np.bool_(True), "boolean"),
        ([1, 2], "list"),
        (np.array([1.0, 2.0]), "not a single number"),
        (1j, "complex"),
    ],
)
def test_bad_metric_values_fail_at_the_call(value, fragment):
    run = tracker.start_run("metrics-bad")
    with pytest.raises(InvalidValue, match=fragment):
        run.log_metric("loss", value)
    with pytest.raises(InvalidValue, match=fragment):
        run.log_metrics({"ok": 1.0, "loss": value})
    assert run._buf.rows == []  # nothing was recorded, not even the good value of the batch
    run.finish()
    assert not Metric.objects.filter(run__uid=run.id).exists()


def test_bad_steps_and_keys_fail_at_the_call():
    run = tracker.start_run("metrics-bad")
    for step, fragment in [
        (1.5, "step must be"),
        ("3", "step must be"),
        (True, "step must be"),
        (2**70, "64-bit"),
    ]:
        with pytest.raises(InvalidValue, match=fragment):
            run.log_metric("loss", 1.0, step=step)
    for key in ["", " loss", 3, "a\nb", "x" * 251]:
        with pytest.raises(InvalidValue):
            run.log_metric(key, 1.0)
    assert run._buf.rows == []
    run.finish()


def test_numbers_of_many_kinds_are_accepted():
    from decimal import Decimal
    from fractions import Fraction

    with tracker.start_run("metrics-kinds") as run:
        for i, v in enumerate(
            [
                1,
                2.5,
                np.float32(0.25),
                np.int64(7),
                np.float64(3.5),
                Decimal("0.125"),
                Fraction(1, 4),
                np.array(9.0),
            ]
        ):
            run.log_metric("v", v, step=np.int32(i))
    values = list(
        Metric.objects.filter(run__uid=run.id).order_by("step").values_list("value", flat=True)
    )
    assert values == [1.0, 2.5, 0.25, 7.0, 3.5, 0.125, 0.25, 9.0]


def test_nan_and_infinities_are_stored_and_read_back():
    with tracker.start_run("metrics-nan") as run:
        for step, v in enumerate([1.0, float("nan"), float("inf"), -float("inf"), 0.5]):
            run.log_metric("x", v, step=step)
        run.log_metric("only_nan", float("nan"))
    hist = run.history()
    x = hist["x"].tolist()
    assert (
        x[0] == 1.0 and math.isnan(x[1]) and x[2] == math.inf and x[3] == -math.inf and x[4] == 0.5
    )
    s = MetricSummary.objects.get(run__uid=run.id, key="x")
    assert (s.count, s.min, s.max, s.last, s.last_step) == (5, -math.inf, math.inf, 0.5, 4)
    only = MetricSummary.objects.get(run__uid=run.id, key="only_nan")
    assert only.count == 1 and only.min is None and only.max is None
    assert only.last is None or math.isnan(only.last)
    frame = tracker.runs_frame("metrics-nan")
    assert math.isnan(frame.loc[run.id, "metrics.only_nan"])
    assert frame.loc[run.id, "metrics.x"] == 0.5


def test_steps_default_to_the_next_step_per_key_and_summaries_take_the_highest_step():
    run = tracker.start_run("metrics-steps")
    for v in (3.0, 2.0, 1.0):
        run.log_metric("loss", v)  # steps 0, 1, 2
    run.log_metric("acc", 0.9, step=10)
    run.log_metric("acc", 0.1, step=5)  # logged later, but an earlier step
    run.log_metric("acc", 0.5)  # the next step after the highest: 11
    run.log_metrics({"loss": 0.5, "lr": 0.01})  # one step for both: max(next) = 3
    run.finish()
    hist = run.history(wide=False)
    got = sorted(zip(hist["key"], hist["step"], hist["value"]))
    assert got == [
        ("acc", 5, 0.1),
        ("acc", 10, 0.9),
        ("acc", 11, 0.5),
        ("loss", 0, 3.0),
        ("loss", 1, 2.0),
        ("loss", 2, 1.0),
        ("loss", 3, 0.5),
        ("lr", 3, 0.01),
    ]
    acc = MetricSummary.objects.get(run__uid=run.id, key="acc")
    assert (acc.last, acc.last_step, acc.min, acc.max, acc.count) == (0.5, 11, 0.1, 0.9, 3)


def test_summaries_accumulate_across_flushes():
    run = tracker.start_run("metrics-flushes")
    run.log_metric("loss", 5.0, step=0)
    run.flush()
    run.log_metric("loss", -1.0, step=2)
    run.flush()
    run.log_metric("loss", 9.0, step=1)  # lower step: not the last
    run.finish()
    s = MetricSummary.objects.get(run__uid=run.id, key="loss")
    assert (s.last, s.last_step, s.min, s.max, s.count) == (-1.0, 2, -1.0, 9.0, 3)


def test_history_wide_and_long_and_by_key():
    with tracker.start_run("history") as run:
        for step in range(5):
            run.log_metrics({"loss": 1.0 / (step + 1), "acc": step / 10}, step=step)
        run.log_metric("loss", 0.0, step=4)  # a step logged twice keeps the last value
        run.log_metric("eval", 0.7, step=2)
    wide = run.history()
    assert list(wide.columns) == ["acc", "eval", "loss"] and wide.index.name == "step"
    assert (
        wide.loc[4, "loss"] == 0.0
        and wide.loc[2, "eval"] == 0.7
        and math.isnan(wide.loc[1, "eval"])
    )
    only = run.history("eval")
    assert list(only.columns) == ["eval"] and only.index.tolist() == [2]
    long = run.history(["loss"], wide=False)
    assert list(long.columns) == ["key", "step", "value", "timestamp"]
    assert len(long) == 6 and str(long["timestamp"].dt.tz) == "UTC"
    empty = run.history("missing")
    assert empty.empty


# -- reading ---------------------------------------------------------------------------------
def test_get_run_by_id_and_prefix_and_clear_errors():
    with tracker.start_run("get", "named") as run:
        pass
    assert tracker.get_run(run.id).name == "named"
    assert tracker.get_run(run.id[:6]).id == run.id
    with pytest.raises(RunNotFound, match="no run with id 'nope-nope'"):
        tracker.get_run("nope-nope")
    with pytest.raises(InvalidValue):
        tracker.get_run(3.5)
    clash = [Run(project=Project.objects.get(name="get"), uid=f"abcd{i}") for i in range(2)]
    Run.objects.bulk_create(clash)
    with pytest.raises(RunNotFound, match="several runs"):
        tracker.get_run("abcd")


def test_nested_runs_and_parent_filter():
    with tracker.start_run("nested", "sweep") as parent:
        for lr in (0.1, 0.01):
            with tracker.start_run("nested", "trial", params={"lr": lr}, parent=parent) as child:
                child.log_metric("loss", lr * 10)
    children = tracker.runs("nested", parent=parent).list()
    assert sorted(c.params["lr"] for c in children) == [0.01, 0.1]
    assert all(c.parent_id == parent.id for c in children)
    frame = tracker.runs_frame("nested")
    assert set(frame.loc[frame["name"] == "trial", "parent"]) == {parent.id}


def test_resume_continues_steps_and_keeps_params():
    with tracker.start_run("resume", params={"lr": 0.1}) as first:
        first.log_metric("loss", 1.0)
        first.log_metric("loss", 0.9)
    with tracker.start_run(resume=first.id, params={"epochs": 5}, notes="second leg") as again:
        assert again.id == first.id and again.status == "running"
        assert row(first).status == "running" and row(first).ended_at is None
        again.log_metric("loss", 0.8)
    assert row(first).status == "finished"
    assert row(first).params == {"lr": 0.1, "epochs": 5}
    assert run_steps(first.id, "loss") == [0, 1, 2]
    with pytest.raises(ParamConflict):
        tracker.start_run(resume=first.id, params={"lr": 0.2})
    with pytest.raises(RunNotFound):
        tracker.start_run(resume="0000000000000000")


def run_steps(run_id: str, key: str) -> list[int]:
    return list(
        Metric.objects.filter(run__uid=run_id, key=key)
        .order_by("step")
        .values_list("step", flat=True)
    )


def test_runs_collection_filters_lazily():
    specs = [
        ("resnet-18", {"lr": 0.1, "opt": "sgd"}, {"stage": "dev"}, 0.5, "finished"),
        ("resnet-50", {"lr": 0.01, "opt": "adam"}, {"stage": "prod"}, 0.2, "finished"),
        ("vit", {"lr": 0.001, "opt": "adam"}, {"stage": "prod"}, 0.3, "failed"),
    ]
    ids = {}
    for name, params, tags, loss, status in specs:
        run = tracker.start_run("filters", name, params=params, tags=tags)
        run.log_metric("val_loss", loss)
        run.finish(status)
        ids[name] = run.id
    with tracker.start_run("other", "resnet-18"):
        pass

    def names(coll) -> set[str]:
        return {r.name for r in coll}

    everything = tracker.runs("filters")
    assert names(everything) == {"resnet-18", "resnet-50", "vit"} and len(everything) == 3
    assert names(tracker.runs("filters", status="finished")) == {"resnet-18", "resnet-50"}
    assert names(tracker.runs("filters", status=["failed"])) == {"vit"}
    assert names(tracker.runs("filters", name="resnet-*")) == {"resnet-18", "resnet-50"}
    assert names(tracker.runs("filters", tags={"stage": "prod"})) == {"resnet-50", "vit"}
    assert names(tracker.runs("filters", params={"lr__lt": 0.05})) == {"resnet-50", "vit"}
    assert names(tracker.runs("filters", params={"opt__in": ["sgd"]})) == {"resnet-18"}
    assert names(tracker.runs("filters", params={"opt__ne": "adam"})) == {"resnet-18"}
    assert names(tracker.runs("filters", metrics={"val_loss__lte": 0.3})) == {"resnet-50", "vit"}
    assert names(everything.filter(status="finished").filter(params={"opt": "adam"})) == {
        "resnet-50"
    }
    assert names(tracker.runs("filters", ids=[ids["vit"]])) == {"vit"}
    assert tracker.runs("filters").order_by("name").first().name == "resnet-18"
    assert [r.name for r in tracker.runs("filters").order_by("-name")[:2]] == ["vit", "resnet-50"]
    assert tracker.runs("filters").order_by("name")[1].name == "resnet-50"
    assert len(tracker.runs("filters", limit=2).list()) == 2
    with pytest.raises(InvalidValue, match="Unknown run status 'done'"):
        tracker.runs("filters", status="done").list()
    with pytest.raises(InvalidValue, match="dict"):
        tracker.runs("filters", tags=["stage"]).count()
    with pytest.raises(InvalidValue, match="Cannot order runs by 'loss'"):
        tracker.runs("filters").order_by("loss").list()


def test_runs_frame_has_one_row_per_run_with_params_metrics_tags_and_datasets():
    from tracker.models import Dataset, DatasetVersion

    proj = Project.objects.create(name="frame")
    ds = Dataset.objects.create(project=proj, name="digits")
    version = DatasetVersion.objects.create(dataset=ds, version=3, state=DatasetVersion.State.READY)
    with tracker.start_run(
        "frame", "a", params={"lr": 0.1, "opt": {"name": "adam"}}, tags={"t": "x"}
    ) as a:
        a.log_metric("loss", 2.0)
        a.log_metric("loss", 1.0)
        a.use_dataset(version.pk, "train")
    with tracker.start_run("frame", "b", params={"lr": 0.2}) as b:
        b.log_metric("acc", 0.9)
    running = tracker.start_run("frame", "c")
    frame = tracker.runs_frame("frame")
    assert list(frame.index) == [running.id, b.id, a.id]  # newest first
    assert frame.index.name == "id"
    for col in [
        "name",
        "project",
        "status",
        "started_at",
        "ended_at",
        "duration",
        "parent",
        "params.lr",
        "params.opt.name",
        "metrics.loss",
        "metrics.acc",
        "tags.t",
        "datasets",
        "host",
        "git_commit",
    ]:
        assert col in frame.columns, col
    assert frame.loc[a.id, "metrics.loss"] == 1.0 and math.isnan(frame.loc[a.id, "metrics.acc"])
    assert frame.loc[b.id, "params.lr"] == 0.2 and frame.loc[a.id, "params.opt.name"] == "adam"
    assert frame.loc[a.id, "tags.t"] == "x"
    assert frame.loc[a.id, "datasets"] == "digits:v3 (train)"
    assert frame.loc[running.id, "status"] == "running" and pd.isna(
        frame.loc[running.id, "ended_at"]
    )
    assert frame.loc[a.id, "duration"] > pd.Timedelta(0)
    assert isinstance(frame.loc[running.id, "duration"], pd.Timedelta)
    assert str(frame["started_at"].dt.tz) == "UTC"
    inputs = a.inputs()
    assert [(v.name, v.version, ctx) for v, ctx in inputs] == [("digits", 3, "train")]
    assert tracker.runs_frame("no-such-project").empty
    assert tracker.runs("frame").frame().shape == frame.shape
    running.finish()


def test_compare_puts_runs_side_by_side():
    with tracker.start_run("cmp", "small", params={"lr": 0.1, "seed": 1}) as a:
        a.log_metric("loss", 3.0)
        a.log_metric("loss", 1.0)
    with tracker.start_run("cmp", "large", params={"lr": 0.01, "seed": 1}) as b:
        b.log_metric("loss", 2.0)
    table = tracker.compare([a.id, b])
    assert list(table.columns) == ["small", "large"]
    assert table.loc["params.lr"].tolist() == [0.1, 0.01]
    assert table.loc["metrics.loss"].tolist() == [1.0, 2.0]
    assert table.loc["metrics.loss (max)"].tolist() == [3.0, 2.0]
    assert table.index.tolist().index("params.lr") < table.index.tolist().index("metrics.loss")
    diff = tracker.compare(tracker.runs("cmp"), only_differences=True)
    assert "params.seed" not in diff.index and "params.lr" in diff.index
    assert tracker.runs("cmp").compare().shape[1] == 2
    with pytest.raises(InvalidValue):
        tracker.compare([])


def test_plot_metrics_draws_a_panel_per_key_and_a_line_per_run():
    from matplotlib.figure import Figure

    from tracker.plots import thin

    with tracker.start_run("plot", "a") as a:
        for i in range(50):
            a.log_metrics({"loss": 1 / (i + 1), "acc": i / 50}, step=i)
    with tracker.start_run("plot", "b") as b:
        for i in range(30):
            a_value = float("inf") if i == 3 else 2 / (i + 1)
            b.log_metric("loss", a_value, step=i)
    fig = tracker.plot_metrics([a, b.id])
    assert isinstance(fig, Figure)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert sorted(ax.get_title() for ax in panels) == ["acc", "loss"]
    loss = next(ax for ax in panels if ax.get_title() == "loss")
    assert sorted(line.get_label() for line in loss.get_lines()) == ["a", "b"]
    one = tracker.plot_metrics(tracker.runs("plot"), "loss", x="relative")
    assert [ax.get_title() for ax in one.axes] == ["loss"]
    assert isinstance(a.plot(), Figure)
    with pytest.raises(InvalidValue, match="None of the runs has metric 'nope'"):
        tracker.plot_metrics([a], "nope")
    with pytest.raises(InvalidValue, match="x must be"):
        tracker.plot_metrics([a], x="epoch")
    # Thinning keeps a single spike in a long flat line, deterministically.
    steps = np.arange(100_000)
    values = np.zeros(100_000)
    values[77_777] = 50.0
    s, v = thin(steps, values, 1000)
    assert len(s) <= 1100 and 50.0 in v and 77_777 in s
    assert np.array_equal(thin(steps, values, 1000)[0], s)


# -- lost heartbeats -------------------------------------------------------------------------
def test_a_run_with_a_stale_heartbeat_reads_as_killed_and_is_stored_so():
    from tracker.services import metrics as mc

    proj = Project.objects.create(name="stale")
    old = timezone.now() - dt.timedelta(seconds=30)
    stale = Run.objects.create(
        project=proj, uid="stale00000000001", heartbeat_at=old, heartbeat_timeout=5
    )
    fresh = Run.objects.create(
        project=proj, uid="fresh00000000001", heartbeat_at=timezone.now(), heartbeat_timeout=5
    )
    # No own timeout recorded: the reader's HEARTBEAT_TIMEOUT (60 s) applies.
    legacy = Run.objects.create(project=proj, uid="legacy0000000001", heartbeat_at=old)
    assert tracker.get_run("stale00000000001").status == "killed"
    stored = Run.objects.get(pk=stale.pk)
    assert stored.status == "killed" and stored.ended_at == old and "Heartbeat lost" in stored.error
    assert Run.objects.get(pk=fresh.pk).status == "running"
    assert Run.objects.get(pk=legacy.pk).status == "running"
    frame = tracker.runs_frame("stale")
    assert frame.loc["stale00000000001", "status"] == "killed"
    # The process was only paused: its next heartbeat brings the run back.
    mc.DatabaseSink().heartbeat([stale.pk])
    back = Run.objects.get(pk=stale.pk)
    assert back.status == "running" and back.ended_at is None and back.error == ""


def test_own_running_runs_are_never_reaped():
    run = tracker.start_run("stale-own")
    Run.objects.filter(uid=run.id).update(heartbeat_at=timezone.now() - dt.timedelta(hours=1))
    assert tracker.get_run(run.id).status == "running"
    run.finish()


# -- re-executing a notebook cell ------------------------------------------------------------
def test_reexecuting_a_cell_finishes_the_run_the_earlier_execution_left_running(capsys):
    from tracker.services import runs as core

    site = ("/tmp/ipykernel_1/123.py", 3)
    first = core.start_run("cells", "exp", site=site, execution=1)
    core.ensure_created(first)
    # The same cell executed again: the earlier run is finished, a new one starts.
    second = core.start_run("cells", "exp", site=site, execution=2)
    assert "still running from an earlier execution" in capsys.readouterr().err
    assert Run.objects.get(uid=first.uid).status == "finished"
    # Runs started within one execution (a loop over trials) never replace each other.
    third = core.start_run("cells", "exp", site=site, execution=2)
    core.ensure_created(second)
    core.ensure_created(third)
    assert Run.objects.get(uid=second.uid).status == "running"
    # Unnamed runs are matched by the line that started them, named ones by name.
    other = core.start_run("cells", "", site=("/tmp/ipykernel_1/999.py", 1), execution=3)
    core.ensure_created(other)
    assert Run.objects.get(uid=second.uid).status == "running"
    # Outside IPython (no execution count) nothing is ever replaced.
    plain = core.start_run("cells", "exp", site=site, execution=None)
    core.ensure_created(plain)
    assert Run.objects.get(uid=third.uid).status == "running"
    for active in (second, third, other, plain):
        core.finish_run(active)
