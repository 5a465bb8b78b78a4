"""Projects: looked up by name, created on first use."""

from __future__ import annotations

from tracker.exceptions import InvalidValue, ProjectNotFound
from tracker.models import Project

MAX_NAME = 200


def check_project_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidValue(f"A project name must be a non-empty string, not {name!r}.")
    if len(name) > MAX_NAME:
        raise InvalidValue(f"A project name has at most {MAX_NAME} characters; got {len(name)}.")
    return name.strip()


def get_or_create_project(project: str | Project) -> Project:
    """The project named ``project`` (created if new), or ``project`` itself if it is one."""
    if isinstance(project, Project):
        return project
    name = check_project_name(project)
    obj = Project.objects.filter(name=name).first()
    if obj is None:
        obj, _ = Project.objects.get_or_create(name=name)
    return obj


def get_project(project: str | Project) -> Project:
    """The existing project named ``project``; raises :class:`ProjectNotFound`."""
    if isinstance(project, Project):
        return project
    name = check_project_name(project)
    try:
        return Project.objects.get(name=name)
    except Project.DoesNotExist:
        known = list(Project.objects.order_by("name").values_list("name", flat=True)[:10])
        raise ProjectNotFound(
            f"There is no project named {name!r}. Known projects: "
            f"{', '.join(known) if known else 'none yet'}; projects are created on first use "
            f"by add_samples, start_run, create_dataset or define_task."
        ) from None


def list_projects() -> list[Project]:
    return list(Project.objects.order_by("name"))
