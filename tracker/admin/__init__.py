"""Django admin for tracker, one module per domain."""

from tracker.admin import datasets, labeling, projects, runs  # noqa: F401
