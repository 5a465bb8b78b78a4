"""tracker: experiment tracking, datasets and annotation on Django's ORM, notebook-first.

    import tracker
    tracker.configure()                       # embedded SQLite under ~/.tracker
    tracker.add_samples("demo", [{"id": "a", "text": "hello"}])
    await tracker.aio.add_samples(...)        # the same API, awaitable

Importable before Django is configured: public functions are loaded on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

from tracker.configuration import configure
from tracker.exceptions import TrackerError

__version__ = "0.1.0"

# Sync facade modules; each lists its public names in __all__. None of them imports Django
# models at import time, so `import tracker` stays cheap and works before configure().
_FACADES = (
    "tracker._sync.samples",
    "tracker._sync.runs",
    "tracker._sync.datasets",
    "tracker._sync.labeling",
)


def _facade_modules() -> list[Any]:
    mods = []
    for name in _FACADES:
        try:
            mods.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a real missing dependency, not a facade still to be written
                raise
    return mods


def public_names() -> list[str]:
    """Every public name of the sync facade (what ``tracker.aio`` mirrors)."""
    return sorted(n for m in _facade_modules() for n in m.__all__)


def __getattr__(name: str) -> Any:
    if name == "aio":
        return importlib.import_module("tracker.aio")
    for mod in _facade_modules():
        if name in mod.__all__:
            value = getattr(mod, name)
            globals()[name] = value
            return value
    raise AttributeError(f"module 'tracker' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(public_names()) | {"aio"})


__all__ = ["TrackerError", "configure", "public_names", "aio"]
