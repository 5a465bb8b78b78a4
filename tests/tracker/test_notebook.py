"""The heart of the package: tracker and raw ORM in real Jupyter cells (nbclient + ipykernel)."""

from __future__ import annotations

import sys

import pytest

from notebooks import kernel_session, run_cells

pytestmark = [pytest.mark.notebook]


def test_cells_use_raw_orm_sync_api_async_api_and_transactions(subprocess_env):
    cells = run_cells(
        [
            # 0: the kernel really runs cells inside a running loop, and is our interpreter.
            "import asyncio, sys\n"
            "asyncio.get_running_loop() is not None, sys.executable",
            # 1: configure() prints its one line about the opt-out.
            "import tracker\ntracker.configure()",
            # 2: the sync API.
            "samples = tracker.add_samples('nb', [{'id': 'a', 'text': 'one'}, {'id': 'b', 'text': 'two'}])\n"
            "print([s.external_id for s in samples])",
            # 3: raw ORM, the seed user's workflow.
            "from tracker.models import Sample\n"
            "print(Sample.objects.filter(project__name='nb').order_by('external_id').values_list('external_id', flat=True)[::1])",
            # 4: top-level await of the async API.
            "more = await tracker.aio.add_samples('nb', [{'id': 'c', 'text': 'three'}])\n"
            "print(len(more), await Sample.objects.filter(project__name='nb').acount())",
            # 5: a tracker write inside the user's atomic block that then raises leaves nothing.
            "from django.db import transaction\n"
            "try:\n"
            "    with transaction.atomic():\n"
            "        tracker.add_samples('nb', [{'id': 'rolled-back'}])\n"
            "        raise RuntimeError('boom')\n"
            "except RuntimeError:\n"
            "    pass\n"
            "print(Sample.objects.filter(external_id='rolled-back').exists())",
            # 6: an error is shown cleanly, as tracker's own exception.
            "tracker.get_project('no-such-project')",
            # 7: the kernel keeps working after the error.
            "print(Sample.objects.count())",
        ],
        subprocess_env,
    )
    loop_running, executable = eval(cells[0].result)  # noqa: S307 - our own repr of a tuple
    assert loop_running is True
    assert executable == sys.executable
    assert "allow_async_unsafe=False" in cells[1].stderr
    assert cells[1].error is None
    assert cells[2].stdout.strip() == "['a', 'b']"
    assert cells[3].stdout.strip() == "['a', 'b']"
    assert cells[4].stdout.strip() == "1 3"
    assert cells[5].stdout.strip() == "False"
    err = cells[6].error
    assert err is not None and err["ename"] == "ProjectNotFound"
    assert "no project named 'no-such-project'" in err["evalue"]
    assert "Known projects: nb" in err["evalue"]
    assert cells[7].stdout.strip() == "3"


def test_sync_api_works_with_opt_out_disabled(subprocess_env):
    """With allow_async_unsafe=False, raw ORM fails as Django says, tracker's API still works."""
    cells = run_cells(
        [
            "import os, tracker\ntracker.configure(allow_async_unsafe=False)\n"
            "print(os.environ.get('DJANGO_ALLOW_ASYNC_UNSAFE'))",
            "print(len(tracker.add_samples('safe', [{'id': i} for i in range(5)])))",
            "print(len(tracker.projects()), await tracker.aio.get_project('safe'))",
            "import threading\n"
            "from tracker.models import Sample\n"
            "Sample.objects.count()",
        ],
        subprocess_env,
    )
    assert cells[0].stdout.strip() == "None"
    assert "allow_async_unsafe" not in cells[0].stderr
    assert cells[1].stdout.strip() == "5"
    assert cells[2].stdout.strip() == "1 safe"
    assert cells[3].error["ename"] == "SynchronousOnlyOperation"


@pytest.mark.postgres_only
def test_connections_stay_bounded_over_many_cells(subprocess_env):
    """200 cells touching the DB (sync, async and raw ORM) leave a handful of connections."""
    from django.db import connection

    body = [
        "tracker.add_samples('many', [{'id': str(i)}])",
        "await tracker.aio.add_samples('many', [{'id': 'x' + str(i)}])",
        "Sample.objects.filter(project__name='many').count()",
        "await Sample.objects.filter(project__name='many').acount()",
    ]
    with kernel_session(subprocess_env) as kernel:
        first = kernel.run("import tracker\ntracker.configure()\nfrom tracker.models import Sample\ni = 0")
        assert first.error is None, first.error
        for n in range(200):
            out = kernel.run(f"i += 1\n{body[n % 4]}")
            assert out.error is None, out.error
        assert kernel.run("print(Sample.objects.count())").stdout.strip() == "100"
        with connection.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            )
            live = cur.fetchone()[0]
    assert 1 <= live <= 4, f"{live} connections from one kernel after 200 cells"
