"""Errors raised by tracker, sync and async alike.

Every error is a :class:`TrackerError`; most also inherit the built-in that fits, so
``except LookupError`` keeps working for code that does not know tracker::

    TrackerError
    ├── ConfigurationError (RuntimeError)        settings, configure(), the environment
    ├── AsyncContextError (RuntimeError)         sync API used where only the async one can run
    ├── NotFound (LookupError)
    │   ├── ProjectNotFound
    │   ├── SampleNotFound
    │   ├── RunNotFound
    │   ├── ArtifactNotFound
    │   ├── DatasetNotFound
    │   └── TaskNotFound
    ├── InvalidValue (ValueError)                bad input: says which value and why
    │   ├── ParamConflict                        a logged param was given another value
    │   ├── ImportRejected                       bad rows in an import; carries a report
    │   └── InvalidAnnotation                    a value does not fit its task's schema
    ├── Conflict                                 the stored state does not allow the change
    ├── PermissionDenied (PermissionError)
    ├── StorageError (OSError)                   artifact or media storage failed
    └── DatabaseUnavailable (ConnectionError)    the database cannot be reached right now

Messages are whole sentences that say what happened and what to do next. The REST API maps
these classes to HTTP in one exception handler; nothing here knows about HTTP.
"""

from __future__ import annotations

from typing import Any


class TrackerError(Exception):
    """Root of every error tracker raises on purpose."""


class ConfigurationError(TrackerError, RuntimeError):
    """Settings are missing, contradictory or cannot be applied."""


class AsyncContextError(TrackerError, RuntimeError):
    """A synchronous tracker call was made from a running event loop outside a Jupyter kernel."""


class NotFound(TrackerError, LookupError):
    """The named object does not exist (or is not visible to the caller)."""


class ProjectNotFound(NotFound):
    pass


class SampleNotFound(NotFound):
    pass


class RunNotFound(NotFound):
    pass


class ArtifactNotFound(NotFound):
    pass


class DatasetNotFound(NotFound):
    pass


class TaskNotFound(NotFound):
    pass


class InvalidValue(TrackerError, ValueError):
    """A value passed to tracker is of the wrong type, shape or range."""


class ParamConflict(InvalidValue):
    """A run parameter was logged again with a different value."""


class ImportRejected(InvalidValue):
    """An import found bad rows; ``report`` lists each with its row number and reason."""

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message)
        self.report = report


class InvalidAnnotation(InvalidValue):
    """An annotation or prediction value does not fit its task's label schema."""


class Conflict(TrackerError):
    """The stored state does not allow this change (for example an immutable version)."""


class PermissionDenied(TrackerError, PermissionError):
    """The caller may not do this."""


class StorageError(TrackerError, OSError):
    """Reading or writing an artifact or media file failed."""


class DatabaseUnavailable(TrackerError, ConnectionError):
    """The database could not be reached; the operation may be retried."""
