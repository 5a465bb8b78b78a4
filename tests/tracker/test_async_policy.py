"""Outside a kernel: the sync API in a running loop names its awaitable; the async API works."""

from __future__ import annotations

import asyncio
import threading

import pytest
from django.db import transaction

import tracker
from tracker.exceptions import AsyncContextError, TrackerError
from tracker.models import Sample


def test_sync_api_inside_asyncio_run_names_the_awaitable():
    async def view():
        tracker.add_samples("p", [{"id": "a"}])

    with pytest.raises(AsyncContextError) as exc:
        asyncio.run(view())
    message = str(exc.value)
    assert "await tracker.aio.add_samples(" in message
    assert isinstance(exc.value, RuntimeError)


@pytest.mark.django_db(transaction=True)
def test_async_api_works_in_a_running_loop():
    async def view():
        first = await tracker.aio.add_samples("p", [{"id": "a", "x": 1}, {"id": "b", "x": 2}])
        project = await tracker.aio.get_project("p")
        return [s.external_id for s in first], project.name, await Sample.objects.acount()

    assert asyncio.run(view()) == (["a", "b"], "p", 2)


@pytest.mark.django_db(transaction=True)
def test_async_api_refuses_to_run_inside_a_transaction_of_the_calling_context(monkeypatch):
    """What a notebook cell with the opt-out does: atomic() then await in the same cell."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    async def cell():
        with transaction.atomic():
            with pytest.raises(TrackerError, match="inside a transaction.atomic"):
                await tracker.aio.add_samples("p", [{"id": "a"}])
            tracker.add_samples("p", [{"id": "b"}])  # the sync API joins the block instead
        from django.db import connection

        connection.close()

    asyncio.run(cell())
    assert list(Sample.objects.values_list("external_id", flat=True)) == ["b"]


@pytest.mark.django_db(transaction=True)
def test_sync_api_in_a_worker_thread_runs_inline():
    errors: list[BaseException] = []

    def work():
        try:
            tracker.add_samples("threads", [{"id": threading.current_thread().name}])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            from django.db import connection

            connection.close()

    threads = [threading.Thread(target=work, name=f"t{i}") for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert Sample.objects.filter(project__name="threads").count() == 4


@pytest.mark.django_db
def test_sync_write_inside_atomic_block_joins_the_transaction():
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with transaction.atomic():
            tracker.add_samples("tx", [{"id": "a"}])
            raise Boom
    assert not Sample.objects.filter(project__name="tx").exists()


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_calls_after_the_server_dropped_idle_connections_reconnect(monkeypatch):
    """A database restart kills every idle connection; no thread's next call may fail on it
    (scripts, kernels and asgiref's thread have no request cycle to replace them)."""
    import asyncio

    import psycopg
    from django.db import connection

    from tracker import _dispatch
    from tracker.models import Sample

    monkeypatch.setattr(_dispatch, "_IDLE_CHECK_SECONDS", 0.0)
    tracker.add_samples("reconnect", [{"id": "a"}])  # opens this thread's connection
    asyncio.run(tracker.aio.add_samples("reconnect", [{"id": "b"}]))  # and asgiref's
    s = connection.settings_dict
    with psycopg.connect(
        host=s["HOST"] or "127.0.0.1", port=s["PORT"] or 5432, user=s["USER"],
        password=s["PASSWORD"] or None, dbname=s["NAME"], autocommit=True,
    ) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()[0]
    assert killed >= 2
    tracker.add_samples("reconnect", [{"id": "c"}])
    asyncio.run(tracker.aio.add_samples("reconnect", [{"id": "d"}]))
    assert sorted(Sample.objects.values_list("external_id", flat=True)) == ["a", "b", "c", "d"]
