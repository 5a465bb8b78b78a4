"""The async API: ``await tracker.aio.add_samples(...)``, name for name and signature for
signature the same as ``tracker.*``. For top-level ``await`` in notebooks and async views."""

from __future__ import annotations

import importlib
from typing import Any


_FACADES = (
    "tracker._async.samples",
    "tracker._async.runs",
    "tracker._async.datasets",
    "tracker._async.labeling",
)


def _facade_modules() -> list[Any]:
    mods = []
    for name in _FACADES:
        try:
            mods.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return mods


def public_names() -> list[str]:
    return sorted(n for m in _facade_modules() for n in m.__all__)


def __getattr__(name: str) -> Any:
    for mod in _facade_modules():
        if name in mod.__all__:
            value = getattr(mod, name)
            globals()[name] = value
            return value
    raise AttributeError(f"module 'tracker.aio' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(public_names()))
