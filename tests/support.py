"""Helpers shared by test modules (imported by name: ``from support import ...``).

Kept out of ``conftest.py`` on purpose: two directories have a ``conftest.py``, so
``from conftest import`` picks whichever pytest imported first.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def backend() -> str:
    from django.conf import settings

    return "postgresql" if "postgresql" in settings.DATABASES["default"]["ENGINE"] else "sqlite"



def close_thread_connections() -> None:
    """Close connections held by tracker's database thread and asgiref's sync_to_async thread."""
    from asgiref.sync import SyncToAsync
    from django.db import connections

    from tracker import _dispatch

    SyncToAsync.single_thread_executor.submit(connections.close_all).result()
    if _dispatch._db_thread is not None:
        _dispatch._db_thread.run(connections.close_all)
    from tracker.services import metrics  # the metric flusher: write, end open runs, close

    metrics.shutdown(stall_seconds=5)
