"""tracker's Django models, one module per domain; import them from here.

``from tracker.models import Project, Sample`` is the way to use the ORM directly.
"""

from django.conf import settings as _settings

if not _settings.configured:
    from tracker.exceptions import ConfigurationError

    raise ConfigurationError(
        "tracker.models was imported before tracker was configured. Call tracker.configure() "
        "first (or, in a Django project, import models after Django has started)."
    )

from tracker.models.access import ApiToken, ProjectMembership
from tracker.models.datasets import Dataset, DatasetItem, DatasetVersion, RunInput
from tracker.models.labeling import (
    Annotation,
    AnnotationEvent,
    AnnotationTask,
    Claim,
    Prediction,
)
from tracker.models.projects import Project, Sample
from tracker.models.runs import Artifact, Blob, Metric, MetricSummary, Run

__all__ = [
    "Annotation",
    "AnnotationEvent",
    "AnnotationTask",
    "ApiToken",
    "Artifact",
    "Blob",
    "Claim",
    "Dataset",
    "DatasetItem",
    "DatasetVersion",
    "Metric",
    "MetricSummary",
    "Prediction",
    "Project",
    "ProjectMembership",
    "Run",
    "RunInput",
    "Sample",
]
