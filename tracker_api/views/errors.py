"""JSON answers for URLs no view matches and for unexpected errors, in the API's error shape."""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse


def not_found(request: Any, exception: Any = None) -> JsonResponse:
    return JsonResponse(
        {"detail": f"No API endpoint at {request.path!r}; the list is at /api/docs/.", "code": "not_found"},
        status=404,
    )


def server_error(request: Any) -> JsonResponse:
    return JsonResponse(
        {"detail": "The server failed to handle this request; the error is in its log.", "code": "server_error"},
        status=500,
    )
