"""Test setup through the public entry point: tracker.configure().

The database comes from TRACKER_TEST_DATABASE_URL (PostgreSQL) or is a real SQLite file in a
temporary tracker home. Tests that only make sense on one backend are deselected on the other
(marked ``postgres_only`` / ``sqlite_only``); nothing is skipped for a missing server: under
CI=true an unreachable PostgreSQL fails the run.

The heavy suites (markers ``browser``, ``s3``, ``mlflow``) run where TRACKER_TEST_SUITES names
them ("browser,s3" or "all"); scripts/test.sh selects them on one leg. Elsewhere they are
deselected, not skipped: a selected suite whose tool is missing fails.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

from support import backend, close_thread_connections  # noqa: E402

_HOME = Path(tempfile.mkdtemp(prefix="tracker-test-home-"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres_only: runs only when the suite runs on PostgreSQL")
    config.addinivalue_line("markers", "sqlite_only: runs only when the suite runs on SQLite")
    import tracker

    url = os.environ.get("TRACKER_TEST_DATABASE_URL") or None
    tracker.configure(home=_HOME, database_url=url, migrate=False, quiet=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_HOME, ignore_errors=True)


SUITES = ("browser", "s3", "mlflow")


def selected_suites() -> set[str]:
    raw = os.environ.get("TRACKER_TEST_SUITES", "")
    names = {s.strip() for s in raw.split(",") if s.strip()}
    return set(SUITES) if "all" in names else names & set(SUITES)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    current = backend()
    suites = selected_suites()
    keep, drop = [], []
    for item in items:
        if any(item.get_closest_marker(s) and s not in suites for s in SUITES):
            drop.append(item)
        elif current == "sqlite" and item.get_closest_marker("postgres_only"):
            drop.append(item)
        elif current == "postgresql" and item.get_closest_marker("sqlite_only"):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def tracker_home() -> Path:
    return _HOME


@pytest.fixture
def live_db_url(transactional_db: None) -> str:
    """A URL other processes (kernels, workers) can use to reach this test's database.

    Requests ``transactional_db`` so what the test and the other process write is committed
    and visible to both; the tables are emptied after the test.
    """
    from django.db import connection

    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    user = s.get("USER") or ""
    auth = f"{user}:{s['PASSWORD']}@" if s.get("PASSWORD") else (f"{user}@" if user else "")
    return f"postgres://{auth}{s.get('HOST') or '127.0.0.1'}:{s.get('PORT') or 5432}/{s['NAME']}"


@pytest.fixture
def subprocess_env(live_db_url: str, tracker_home: Path) -> dict[str, str]:
    """Environment for a child process that should use this test's database and storage."""
    env = dict(os.environ)
    env["TRACKER_DATABASE_URL"] = live_db_url
    env["TRACKER_HOME"] = str(tracker_home)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


@pytest.fixture(scope="session", autouse=True)
def _close_worker_connections(django_db_setup, django_db_blocker):
    """Before the test database is dropped, close what worker threads keep open."""
    yield
    with django_db_blocker.unblock():
        close_thread_connections()
