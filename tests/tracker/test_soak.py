"""The CI soak (issue 8): benchmarks/soak.py's workers against the test database for about a
minute (8 processes on PostgreSQL, 4 on SQLite); every point and artifact is accounted for, no
worker reports an error, and no worker's memory grows. The 10-minute run is the benchmark."""

from __future__ import annotations

import importlib.util
import time

import pytest
from support import ROOT, backend

SECONDS = 35.0  # of logging; with start-up and checks the test takes about a minute


def _soak():
    spec = importlib.util.spec_from_file_location("soak", ROOT / "benchmarks" / "soak.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_soak_every_point_and_artifact_accounted_for_and_memory_flat(subprocess_env):
    soak = _soak()
    n = 8 if backend() == "postgresql" else 4
    began = time.monotonic()
    procs = soak.start_workers(subprocess_env, n, SECONDS, rate=100, artifact_every=2.0, seed0=0)
    reports, problems = soak.collect(procs, timeout=SECONDS + 120)
    assert problems == [], problems  # no worker failed or wrote anything to stderr
    assert len(reports) == n
    assert all(r["points"] > SECONDS * 100 * 0.25 for r in reports), [r["points"] for r in reports]
    assert all(len(r["artifacts"]) >= SECONDS / 2.0 * 0.25 for r in reports)
    assert soak.verify(reports) == []  # every point once with its value, every artifact whole
    growth = [round(soak.rss_growth(r), 1) for r in reports]
    assert max(growth) < 20.0, growth  # MB, after warm-up
    print(f"soak: {n} processes, {time.monotonic() - began:.0f} s, RSS growth (MB) {growth}")
