"""Refuse oversized request bodies with 413 and a clear JSON message, before reading them."""

from __future__ import annotations

import json
from typing import Any, Callable

from django.http import HttpRequest, HttpResponse

from tracker import conf


def body_limit(view_func: Any) -> tuple[str, int]:
    # Views that stream uploads to disk (artifact content, import files) declare
    # body_limit = "upload"; everything else is parsed in memory and gets the smaller limit.
    kind = (getattr(view_func, "initkwargs", None) or {}).get("body_limit")
    kind = kind or getattr(getattr(view_func, "cls", None), "body_limit", "body")
    if kind == "upload":
        return kind, int(conf.get("API_MAX_UPLOAD_BYTES"))
    return "body", int(conf.get("API_MAX_BODY_BYTES"))


def declared_length(request: HttpRequest) -> int | None:
    """The request's Content-Length (0 when absent), None when it is not a byte count."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or "0")
    except ValueError:
        return None
    return length if length >= 0 else None


def _json(status: int, detail: str, code: str) -> HttpResponse:
    return HttpResponse(
        json.dumps({"detail": detail, "code": code}), status=status, content_type="application/json"
    )


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class RequestSizeLimitMiddleware:
    """Answers 413 when Content-Length exceeds the view's limit.

    Limits are ``TRACKER["API_MAX_BODY_BYTES"]`` for JSON and forms and
    ``TRACKER["API_MAX_UPLOAD_BYTES"]`` for streamed uploads.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func: Any, args: Any, kwargs: Any) -> HttpResponse | None:
        length = declared_length(request)
        if length is None:
            raw = request.META.get("CONTENT_LENGTH", "")
            return _json(400, f"Content-Length {raw[:40]!r} is not a byte count.", "bad_content_length")
        kind, limit = body_limit(view_func)
        if length > limit:
            hint = (
                "Split the data into several requests"
                if kind == "body"
                else "Store the file elsewhere and reference it by URI, or raise "
                "TRACKER['API_MAX_UPLOAD_BYTES'] on the server"
            )
            return _json(
                413,
                f"The request body is {_size(length)}; this endpoint accepts at most "
                f"{_size(limit)}. {hint}.",
                "payload_too_large",
            )
        return None
