"""The one place tracker errors become HTTP: status codes and a consistent JSON error body.

Every error answer has the same shape::

    {"detail": "<a whole sentence saying what was wrong and what to do>",
     "code": "<machine-readable code>",
     "fields": {"<field>": ["<message>", ...]}}      # only for input errors

``tracker.exceptions`` knows nothing about HTTP; the table below is the whole mapping.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import DataError
from django.db.models import ProtectedError
from django.http import Http404
from rest_framework import exceptions as drf, status
from rest_framework.response import Response

from tracker import exceptions as te

# Most specific first: the first class an error is an instance of decides.
STATUS: list[tuple[type[te.TrackerError], int, str]] = [
    (te.ParamConflict, status.HTTP_409_CONFLICT, "param_conflict"),
    (te.ImportRejected, status.HTTP_400_BAD_REQUEST, "import_rejected"),
    (te.InvalidAnnotation, status.HTTP_400_BAD_REQUEST, "invalid_annotation"),
    (te.InvalidValue, status.HTTP_400_BAD_REQUEST, "invalid"),
    (te.NotFound, status.HTTP_404_NOT_FOUND, "not_found"),
    (te.Conflict, status.HTTP_409_CONFLICT, "conflict"),
    (te.PermissionDenied, status.HTTP_403_FORBIDDEN, "permission_denied"),
    (te.DatabaseUnavailable, status.HTTP_503_SERVICE_UNAVAILABLE, "database_unavailable"),
    (te.StorageError, status.HTTP_503_SERVICE_UNAVAILABLE, "storage_error"),
    (te.ConfigurationError, status.HTTP_500_INTERNAL_SERVER_ERROR, "configuration_error"),
    (te.TrackerError, status.HTTP_500_INTERNAL_SERVER_ERROR, "error"),
]


class PayloadTooLarge(drf.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"
    default_detail = "The request body is larger than this endpoint accepts."


def error_body(detail: str, code: str, fields: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"detail": detail, "code": code}
    if fields:
        body["fields"] = fields
    body.update(extra)
    return body


def _flatten(detail: Any) -> Any:
    """DRF's ErrorDetail tree as plain strings/lists/dicts."""
    if isinstance(detail, dict):
        return {str(k): _flatten(v) for k, v in detail.items()}
    if isinstance(detail, list):
        return [_flatten(v) for v in detail]
    return str(detail)


def _summary(fields: Any) -> str:
    """One sentence naming the first problem, for clients that only show ``detail``."""
    if isinstance(fields, dict) and fields:
        name, msgs = next(iter(fields.items()))
        first = msgs
        while isinstance(first, (list, dict)) and first:
            first = first[0] if isinstance(first, list) else next(iter(first.values()))
        where = "" if name == "non_field_errors" else f"{name}: "
        more = f" ({len(fields) - 1} more field(s) listed in 'fields')" if len(fields) > 1 else ""
        return f"Invalid input. {where}{first}{more}"
    if isinstance(fields, list) and fields:
        return f"Invalid input. {fields[0]}"
    return "Invalid input."


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER: TrackerError, DRF and Django errors as one JSON shape."""
    headers: dict[str, str] = {}
    if isinstance(exc, te.TrackerError):
        for cls, code_status, code in STATUS:
            if isinstance(exc, cls):
                break
        extra: dict[str, Any] = {}
        report = getattr(exc, "report", None)
        if report is not None:
            extra["report"] = _jsonable(report)
        if isinstance(exc, te.DatabaseUnavailable):
            headers["Retry-After"] = "5"
        field = getattr(exc, "field", None)
        fields = {field: [str(exc)]} if isinstance(field, str) else None
        return Response(error_body(str(exc), code, fields, **extra), status=code_status, headers=headers)
    if isinstance(exc, ProtectedError):
        return Response(
            error_body(
                "Other objects still refer to this one (for example a run that used a dataset "
                "version); delete or detach those first.",
                "protected",
            ),
            status=status.HTTP_409_CONFLICT,
        )
    if isinstance(exc, DataError) or _driver_data_error(exc):
        # The database refused a value the validation let through (a NUL character in text
        # for PostgreSQL, a number out of range): the input's fault, so 400, and the
        # transaction has rolled back.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "a value is out of range"
        return Response(
            error_body(f"The database cannot store a value of this request: {first}.", "invalid"),
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, OverflowError):
        # SQLite's driver refuses integers beyond 64 bits before the query runs.
        return Response(
            error_body("A number in this request is too large to store or look up (the limit is 2**63 - 1).", "invalid"),
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge(str(exc) or PayloadTooLarge.default_detail)
    elif isinstance(exc, Http404):
        exc = drf.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf.PermissionDenied()
    if not isinstance(exc, drf.APIException):
        return None  # a bug: let Django log it and answer 500
    if isinstance(exc, (drf.NotAuthenticated, drf.AuthenticationFailed)):
        auth_header = context["view"].get_authenticate_header(context["request"])
        if auth_header:
            headers["WWW-Authenticate"] = auth_header
        else:
            exc.status_code = status.HTTP_403_FORBIDDEN
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))
    if isinstance(exc, drf.ValidationError):
        fields = _flatten(exc.detail)
        if isinstance(fields, list):
            fields = {"non_field_errors": fields}
        body = error_body(_summary(fields), "invalid", fields)
    else:
        detail = exc.detail
        code = exc.get_codes() if not isinstance(detail, (dict, list)) else exc.default_code
        body = error_body(_summary(_flatten(detail)) if isinstance(detail, (dict, list)) else str(detail), str(code))
    return Response(body, status=exc.status_code, headers=headers)


def _driver_data_error(exc: Exception) -> bool:
    """A DataError raised by psycopg itself (COPY and raw cursors bypass Django's wrapper),
    such as a NUL character PostgreSQL cannot hold in text or JSON."""
    try:
        import psycopg
    except ImportError:
        return False
    return isinstance(exc, psycopg.DataError)


def _jsonable(value: Any) -> Any:
    """A report object (dataclass, DataFrame, list of dicts) as JSON-ready data."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if hasattr(value, "to_dict") and callable(value.to_dict):
        try:
            return _jsonable(value.to_dict(orient="records"))
        except TypeError:
            return _jsonable(value.to_dict())
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
