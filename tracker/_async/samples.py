"""Projects and samples (async twins of tracker._sync.samples)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from tracker._dispatch import acall
from tracker._sync import samples as sync

if TYPE_CHECKING:
    from tracker.models import Project, Sample

__all__ = ["add_samples", "get_project", "projects"]


async def add_samples(
    project: str | Project, records: Iterable[Mapping[str, Any]], *, id_field: str = "id"
) -> list[Sample]:
    """Awaitable :func:`tracker.add_samples`."""
    return await acall("add_samples", sync.add_samples.__wrapped__, project, records, id_field=id_field)


async def get_project(name: str) -> Project:
    """Awaitable :func:`tracker.get_project`."""
    return await acall("get_project", sync.get_project.__wrapped__, name)


async def projects() -> list[Project]:
    """Awaitable :func:`tracker.projects`."""
    return await acall("projects", sync.projects.__wrapped__)
