"""Shared fixtures and helpers for the runs, metrics and artifacts tests (no tests here)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest


def _discard_leftovers() -> None:
    """Forget runs a test left open, without touching the database (it may be rolled back)."""
    from tracker.services import metrics as mc
    from tracker.services import runs as core

    with core._open_lock:
        core._open.clear()
    flusher = mc._flusher
    if flusher is None:
        return
    for buf in flusher.buffers():
        with buf.lock:
            del buf.rows[:]
            buf.create = None
            buf.done = True
            buf.owned = False
            if buf.final is None:
                buf.final = {}
    flusher.wait_idle(10)
    assert flusher.stop_when_idle(10), "the metric flusher did not stop"


@pytest.fixture(autouse=True)
def _runs_isolated():
    """Each test starts without open runs and leaves none (nor a busy flusher) behind."""
    from tracker.services import metrics as mc

    mc.set_sink(None)
    yield
    mc.set_sink(None)
    _discard_leftovers()


def wait_for(
    predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.05
) -> object:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def metric_count(run_id: str) -> int:
    from tracker.models import Metric

    return Metric.objects.filter(run__uid=run_id).count()
