"""Runs through ``tracker.aio``: the same API awaited, in a running event loop."""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest
from test_runs_support import _runs_isolated  # noqa: F401

import tracker
from tracker._async.runs import AsyncArtifactFile, AsyncRun, AsyncRuns
from tracker.exceptions import AsyncContextError, ParamConflict, RunNotFound
from tracker.models import Metric, Run

pytestmark = pytest.mark.django_db(transaction=True)


def test_async_run_lifecycle_metrics_params_artifacts_and_reads(tmp_path):
    async def work():
        async with await tracker.aio.start_run(
            "aio", "async", params={"lr": 0.1}, tags={"a": 1}
        ) as run:
            assert isinstance(run, AsyncRun)
            for i in range(100):
                await run.log_metric("loss", 1 / (i + 1))
            await run.log_metrics({"acc": 0.5, "f1": 0.4})
            await run.log_param("epochs", 3)
            with pytest.raises(ParamConflict):
                await run.log_params({"lr": 0.2})
            await run.set_tag("stage", "dev")
            await run.set_notes("async notes")
            art = await run.log_artifact(b"bytes!", name="b.bin")
            assert isinstance(art, AsyncArtifactFile)
            assert await art.read_bytes() == b"bytes!"
            (tmp_path / "out").mkdir()
            path = await art.download(tmp_path / "out")
            assert path.read_bytes() == b"bytes!"
            hist = await run.history("loss")
            assert len(hist) == 100
        again = await tracker.aio.get_run(run.id)
        frame = await tracker.aio.runs_frame("aio")
        runs = await tracker.aio.runs("aio", status="finished")
        assert isinstance(runs, AsyncRuns)
        names = [r.name async for r in runs]
        listed = await runs.list()
        table = await tracker.aio.compare([run.id])
        fig = await tracker.aio.plot_metrics([run.id], "loss")
        artifacts = await again.artifacts()
        return run, again, frame, names, listed, table, fig, artifacts, await runs.count()

    run, again, frame, names, listed, table, fig, artifacts, count = asyncio.run(work())
    assert again.status == "finished" and again.params == {"lr": 0.1, "epochs": 3}
    assert again.tags == {"a": 1, "stage": "dev"} and again.notes == "async notes"
    assert isinstance(frame, pd.DataFrame) and frame.loc[run.id, "metrics.loss"] == pytest.approx(
        0.01
    )
    assert names == ["async"] and len(listed) == 1 and count == 1
    assert table.loc["params.lr", "async"] == 0.1
    assert [ax.get_title() for ax in fig.axes] == ["loss"]
    assert [a.name for a in artifacts] == ["b.bin"]
    assert Metric.objects.filter(run__uid=run.id).count() == 102


def test_async_with_records_failures_and_interrupts():
    ids = []

    async def fail():
        async with await tracker.aio.start_run("aio-fail") as run:
            ids.append(run.id)
            await run.log_metric("x", 1.0)
            raise RuntimeError("async boom")

    async def interrupt():
        async with await tracker.aio.start_run("aio-fail", "cancelled") as run:
            ids.append(run.id)
            raise KeyboardInterrupt

    with pytest.raises(RuntimeError):
        asyncio.run(fail())
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(interrupt())
    failed = tracker.get_run(ids[0])
    assert failed.status == "failed" and "RuntimeError: async boom" in failed.error
    assert tracker.get_run(ids[1]).status == "killed"
    # A read through tracker wrote the ends; the rows say the same.
    assert Run.objects.get(uid=ids[1]).status == "killed"


def test_durable_async_run_awaits_each_commit_and_errors_are_the_same_classes():
    async def work():
        run = await tracker.aio.start_run("aio-durable", durable=True)
        await run.log_metric("x", 1.0)
        count = await Metric.objects.filter(run__uid=run.id).acount()
        await run.finish()
        with pytest.raises(RunNotFound):
            await tracker.aio.get_run("zzzzzzzzzzzz")
        return count

    assert asyncio.run(work()) == 1


def test_sync_api_in_a_loop_points_to_the_awaitable():
    async def view():
        tracker.runs_frame("x")

    with pytest.raises(AsyncContextError, match=r"await tracker.aio.runs_frame\("):
        asyncio.run(view())

    async def handle_method():
        run = await tracker.aio.start_run("aio-mixed")
        sync_twin = tracker._sync.runs.Run(run._active)
        sync_twin.log_metric("x", 1.0)  # memory only: fine anywhere
        try:
            sync_twin.flush()
        finally:
            await run.finish()

    with pytest.raises(AsyncContextError, match="Run.flush"):
        asyncio.run(handle_method())
