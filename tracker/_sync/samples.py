"""Projects and samples (sync)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from tracker._dispatch import entry

if TYPE_CHECKING:
    from tracker.models import Project, Sample

__all__ = ["add_samples", "get_project", "projects"]


@entry
def add_samples(
    project: str | Project, records: Iterable[Mapping[str, Any]], *, id_field: str = "id"
) -> list[Sample]:
    """Add samples to a project (created on first use), updating those whose id exists.

    Args:
        project: project name (or a ``Project``).
        records: dicts; ``record[id_field]`` is the sample's ``external_id`` (a stable id
            is derived from the content when it is missing), ``record["metadata"]`` its
            metadata, ``record["media_uri"]`` a media reference; every other key is data.
        id_field: the key holding the id.

    Returns:
        The stored ``Sample`` objects, in input order.

    Raises:
        InvalidValue: a record is not a dict, holds a value JSON cannot store, or repeats an
            id. Nothing of the call is stored then.
    """
    from tracker.services import samples

    return samples.add_samples(project, records, id_field=id_field)


@entry
def get_project(name: str) -> Project:
    """The project called ``name``; raises ``ProjectNotFound`` naming the known ones."""
    from tracker.services import projects

    return projects.get_project(name)


@entry
def projects() -> list[Project]:
    """All projects, by name."""
    from tracker.services import projects as core

    return core.list_projects()
