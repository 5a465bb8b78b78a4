"""configure(): the embedded default, idempotence, clear errors, host projects, safe migration.

configure() runs once per process, so each case runs in a child interpreter.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from pathlib import Path

import pytest

from processes import run_python, start_python

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "DJANGO_"))}
    env["TRACKER_HOME"] = str(tmp_path / "home")
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_embedded_default_is_a_wal_sqlite_file_with_immediate_transactions(clean_env, tmp_path):
    out = run_python(
        """
        import os, tracker
        tracker.configure()
        from django.conf import settings
        from django.db import connection
        db = settings.DATABASES["default"]
        with connection.cursor() as cur:
            cur.execute("PRAGMA journal_mode"); mode = cur.fetchone()[0]
            cur.execute("PRAGMA busy_timeout"); busy = cur.fetchone()[0]
        print(db["NAME"], db["OPTIONS"]["transaction_mode"], mode, busy)
        print(settings.STORAGES["default"]["OPTIONS"]["location"])
        print(os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE"))
        tracker.add_samples("p", [{"id": 1}])
        tracker.configure()  # same values: no-op
        print("again ok")
        """,
        clean_env,
    )
    home = tmp_path / "home"
    lines = out.stdout.splitlines()
    assert lines[0] == f"{home / 'tracker.sqlite3'} IMMEDIATE wal 30000"
    assert lines[1] == str(home / "files")
    assert lines[2] == "None"  # never the opt-out outside a kernel
    assert lines[3] == "again ok"
    assert out.stderr == ""  # nothing printed outside a kernel
    with sqlite3.connect(home / "tracker.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM tracker_sample").fetchone()[0] == 1


@pytest.mark.parametrize(
    "call, message",
    [
        ("tracker.configure(); tracker.configure(flush_interval=5)", "already configured in this process with different values (TRACKER)"),
        ("tracker.configure(flush_intervall=5)", "unknown setting 'flush_intervall'"),
        ("tracker.configure(database_url='sqlite://:memory:')", "in-memory SQLite database cannot be shared"),
        ("tracker.configure(database_url='nonsense://x')", "Cannot read the database URL"),
        ("tracker.configure(home='/proc/forbidden/home')", "Cannot create the tracker home"),
    ],
)
def test_configuration_mistakes_raise_configuration_error(clean_env, call, message):
    out = run_python(
        f"""
        import tracker
        try:
            {call}
        except tracker.exceptions.ConfigurationError as exc:
            print("ConfigurationError:", exc)
        """,
        clean_env,
    )
    assert out.stdout.startswith("ConfigurationError:"), out.stdout + out.stderr
    assert message in out.stdout


def test_using_the_api_without_configure_uses_the_defaults(clean_env, tmp_path):
    out = run_python(
        """
        import tracker
        print(len(tracker.add_samples("p", [{"id": 1}, {"id": 2}])))
        """,
        clean_env,
    )
    assert out.stdout.strip() == "2"
    assert (tmp_path / "home" / "tracker.sqlite3").exists()


def _host_project(tmp_path: Path, apps: list[str]) -> Path:
    pkg = tmp_path / "hostproj"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "settings.py").write_text(
        f"""
SECRET_KEY = "host"
INSTALLED_APPS = {apps!r}
DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": {str(tmp_path / 'host.sqlite3')!r}}}}}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
"""
    )
    return pkg


def test_inside_a_host_django_project_tracker_works_without_configure(clean_env, tmp_path):
    _host_project(tmp_path, ["django.contrib.auth", "django.contrib.contenttypes", "tracker"])
    env = dict(clean_env, DJANGO_SETTINGS_MODULE="hostproj.settings")
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{ROOT}"
    run_python(
        "import django; django.setup()\n"
        "from django.core.management import call_command; call_command('migrate', verbosity=0)",
        env,
    )
    out = run_python(
        """
        import django; django.setup()
        import tracker
        print([s.external_id for s in tracker.add_samples("host", [{"id": "h1"}])])
        """,
        env,
    )
    assert out.stdout.strip() == "['h1']"
    assert not (tmp_path / "home").exists()  # the host's database, not the embedded default


def test_host_project_without_tracker_installed_gets_a_clear_error(clean_env, tmp_path):
    _host_project(tmp_path, ["django.contrib.auth", "django.contrib.contenttypes"])
    env = dict(clean_env, DJANGO_SETTINGS_MODULE="hostproj.settings")
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{ROOT}"
    out = run_python(
        """
        import django; django.setup()
        import tracker
        try:
            tracker.projects()
        except tracker.exceptions.ConfigurationError as exc:
            print(exc)
        try:
            tracker.configure()
        except tracker.exceptions.ConfigurationError as exc:
            print(exc)
        """,
        env,
    )
    first, second = out.stdout.strip().splitlines()
    assert "tracker is not in this Django project's INSTALLED_APPS" in first
    assert "add 'tracker' to INSTALLED_APPS and use tracker without calling configure()" in second


def test_processes_starting_together_on_a_fresh_home_migrate_once(clean_env, tmp_path):
    code = """
        import tracker
        tracker.configure()
        tracker.add_samples("p", [{"id": __import__("os").getpid()}])
        print("ok")
    """
    procs = [start_python(code, clean_env) for _ in range(4)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, results
    with sqlite3.connect(tmp_path / "home" / "tracker.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM tracker_sample").fetchone()[0] == 4


@pytest.mark.postgres_only
def test_processes_starting_together_on_a_fresh_postgres_database_migrate_once(clean_env, live_db_url):
    from django.db import connection

    name = f"tracker_fresh_{uuid.uuid4().hex[:8]}"
    with connection.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        url = live_db_url.rsplit("/", 1)[0] + "/" + name
        env = dict(clean_env, TRACKER_DATABASE_URL=url)
        code = """
            import tracker
            tracker.configure()
            tracker.add_samples("p", [{"id": __import__("os").getpid()}])
        """
        procs = [start_python(code, env) for _ in range(3)]
        results = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0] * 3, results
        out = run_python(
            "import tracker; tracker.configure()\n"
            "from tracker.models import Sample; print(Sample.objects.count())",
            env,
        )
        assert out.stdout.strip() == "3"
    finally:
        with connection.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name]
            )
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
