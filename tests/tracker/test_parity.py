"""The sync and async facades never drift apart (names, signatures, handle methods)."""

from __future__ import annotations

import importlib
import inspect

import tracker
import tracker.aio


def _params(fn) -> list[tuple[str, object, object]]:
    sig = inspect.signature(fn)
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


def test_every_sync_name_has_an_async_twin_with_the_same_signature():
    names = tracker.public_names()
    assert "add_samples" in names
    assert names == tracker.aio.public_names()
    for name in names:
        sync_fn = getattr(tracker, name)
        async_fn = getattr(tracker.aio, name)
        if inspect.isclass(sync_fn):
            continue  # classes are checked as handle pairs below
        assert inspect.iscoroutinefunction(async_fn) or inspect.isasyncgenfunction(async_fn), name
        assert _params(sync_fn) == _params(async_fn), name
        assert (async_fn.__doc__ or "").strip(), f"tracker.aio.{name} has no docstring"
        assert (sync_fn.__doc__ or "").strip(), f"tracker.{name} has no docstring"


def _handle_pairs():
    pairs = []
    for sync_name in tracker._FACADES:
        async_name = sync_name.replace("tracker._sync.", "tracker._async.")
        try:
            sync_mod = importlib.import_module(sync_name)
            async_mod = importlib.import_module(async_name)
        except ModuleNotFoundError:
            continue
        for cls_name, cls in vars(async_mod).items():
            if (
                inspect.isclass(cls)
                and cls.__module__ == async_name
                and cls_name.startswith("Async")
                and hasattr(sync_mod, cls_name[5:])
            ):
                pairs.append((getattr(sync_mod, cls_name[5:]), cls))
    return pairs


def _public_methods(cls) -> dict[str, object]:
    return {
        name: member
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and (inspect.isfunction(member) or inspect.ismethod(member))
    }


def test_handle_classes_have_awaitable_twins():
    for sync_cls, async_cls in _handle_pairs():
        sync_methods = _public_methods(sync_cls)
        async_methods = _public_methods(async_cls)
        assert sorted(sync_methods) == sorted(async_methods), (sync_cls, async_cls)
        for name, method in sync_methods.items():
            twin = async_methods[name]
            assert _params(method) == _params(twin), f"{async_cls.__name__}.{name}"
            if inspect.iscoroutinefunction(method) or inspect.isasyncgenfunction(method):
                continue
            if getattr(method, "__tracker_no_io__", False):
                continue  # a pure in-memory method may stay sync on both sides
            assert inspect.iscoroutinefunction(twin) or inspect.isasyncgenfunction(twin), (
                f"{async_cls.__name__}.{name} must be awaitable like the rest of the async API"
            )
