"""How a facade call reaches the synchronous core safely from wherever it was made.

The rule (the heart of the package):

* No event loop running in this thread (a script, the IPython terminal, a management command,
  a DRF view, the metric flusher): the core runs inline.
* A loop is running here but Django's own opt-out is active (``DJANGO_ALLOW_ASYNC_UNSAFE``, which
  :func:`tracker.configure` turns on inside a Jupyter kernel only), or this thread is inside a
  ``transaction.atomic()`` block: inline too, so the call joins the caller's connection and
  transaction instead of waiting on SQLite's write lock from another thread.
* A loop is running here inside a Jupyter kernel: the core runs on one dedicated database thread
  and the cell waits for it. Django's async-safety check stays on everywhere.
* A loop is running here anywhere else (an async view, ``asyncio.run``): :class:`AsyncContextError`
  naming the awaitable twin in ``tracker.aio``.

The async facade makes one hop per call with asgiref's ``sync_to_async(thread_sensitive=True)``,
which is what Django's own ``aget``/``acount`` do, so in an async view it shares the request's
database thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, overload

from tracker.exceptions import AsyncContextError, TrackerError

P = ParamSpec("P")
R = TypeVar("R")

_kernel: bool | None = None


def in_kernel() -> bool:
    """True inside a Jupyter (ipykernel) process; cached once it is known to be true."""
    global _kernel
    if _kernel:
        return True
    if "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - ipykernel depends on IPython
        return False
    shell = get_ipython()
    _kernel = shell is not None and getattr(shell, "kernel", None) is not None
    return _kernel


def loop_running_here() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _in_atomic_block() -> bool:
    from django.db import connections

    # Only looks at this thread's wrapper; it never opens a connection.
    return any(conn.in_atomic_block for conn in connections.all(initialized_only=True))


def must_hop() -> bool:
    """True when this thread cannot run the ORM inline (a loop runs here, no opt-out)."""
    if not loop_running_here():
        return False
    if os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE"):
        return False
    return not _in_atomic_block()


class DatabaseThread:
    """One long-lived thread that runs ORM work for callers whose own thread cannot.

    A plain queue and a one-shot lock per call: about half the hand-off cost of a
    ``ThreadPoolExecutor`` future, which matters when every cell-level call pays it.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="tracker-db", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            ctx, fn, args, kwargs, out, done = self._queue.get()
            try:
                out.append((True, ctx.run(fn, *args, **kwargs)))
            except BaseException as exc:  # handed to the caller, who re-raises it
                out.append((False, exc))
            finally:
                done.release()

    def run(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        """Run ``fn`` on the database thread (with the caller's context) and return its result."""
        if threading.current_thread() is self._thread:
            return fn(*args, **kwargs)
        done = threading.Lock()
        done.acquire()
        out: list[tuple[bool, Any]] = []
        self._queue.put((contextvars.copy_context(), fn, args, kwargs, out, done))
        done.acquire()  # interruptible: a KeyboardInterrupt in the cell still gets through
        ok, value = out[0]
        if ok:
            return value
        raise value


_db_thread: DatabaseThread | None = None
_db_thread_lock = threading.Lock()


def db_thread() -> DatabaseThread:
    """The one dedicated database thread used by the sync API inside a running loop."""
    global _db_thread
    if _db_thread is None:
        with _db_thread_lock:
            if _db_thread is None:
                _db_thread = DatabaseThread()
    return _db_thread


def call(name: str, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Run ``fn`` (core work touching the ORM) safely from the current context.

    ``name`` is the public name of the calling entry point (``"add_samples"``,
    ``"Run.finish"``); it is only used to name the awaitable in :class:`AsyncContextError`.
    """
    from tracker.configuration import ensure_ready

    if not must_hop():
        ensure_ready()
        _drop_broken_connections()
        return fn(*args, **kwargs)
    if not in_kernel():
        raise AsyncContextError(
            f"tracker.{name}() was called from a running event loop (an async function, view or "
            f"task), where Django cannot run database work in this thread. Use "
            f"`await tracker.aio.{name}(...)` there instead; it has the same arguments."
        )
    return db_thread().run(_ready_then, fn, args, kwargs)


def _ready_then(fn: Callable[..., R], args: tuple, kwargs: dict) -> R:
    from tracker.configuration import ensure_ready

    ensure_ready()
    _drop_broken_connections()
    return fn(*args, **kwargs)


_IDLE_CHECK_SECONDS = 2.0
_last_use = threading.local()


def _drop_broken_connections() -> None:
    """Replace this thread's connection if it is broken: an earlier call failed on it, or it sat
    idle while the server may have gone away (a restart, an idle timeout).

    Scripts, kernels and worker threads (the database thread, asgiref's) never see Django's
    request cycle, which is where Django normally closes such connections (CONN_HEALTH_CHECKS);
    without this the first call after a database restart would fail. A flag and clock check per
    call; a round trip (``is_usable()``) only after an error or after two idle seconds.
    """
    from django.db import connections

    now = time.monotonic()
    idle = now - getattr(_last_use, "at", now) > _IDLE_CHECK_SECONDS
    _last_use.at = now
    for conn in connections.all(initialized_only=True):
        if conn.connection is None or conn.in_atomic_block:
            continue
        if conn.errors_occurred or (idle and conn.vendor != "sqlite"):
            if not conn.is_usable():
                conn.close()
            conn.errors_occurred = False


async def acall(name: str, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """The async facade's one hop to the core: ``fn`` runs on asgiref's thread-sensitive thread."""
    from asgiref.sync import sync_to_async

    if "django.db" in sys.modules and _in_atomic_block():
        raise TrackerError(
            f"`await tracker.aio.{name}()` was called inside a transaction.atomic() block. The "
            f"async API runs on another thread and cannot join that transaction; call the sync "
            f"`tracker.{name}()` inside the block instead."
        )
    return await sync_to_async(_ready_then, thread_sensitive=True)(fn, args, kwargs)


@overload
def entry(fn: Callable[P, R]) -> Callable[P, R]: ...
@overload
def entry(*, name: str) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def entry(fn: Any = None, *, name: str | None = None) -> Any:
    """Decorate a sync facade function so that its whole body runs through :func:`call`."""

    def decorate(f: Callable[P, R]) -> Callable[P, R]:
        public = name or f.__name__

        @functools.wraps(f)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            return call(public, f, *args, **kwargs)

        return wrapper

    return decorate(fn) if fn is not None else decorate
