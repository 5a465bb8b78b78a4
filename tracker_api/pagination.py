"""Cursor pagination: constant cost per page however deep the client pages."""

from __future__ import annotations

from typing import Any

from rest_framework import pagination
from rest_framework.exceptions import ValidationError

from tracker import conf


class CursorPagination(pagination.CursorPagination):
    """Pages by position in an ordering that ends with a unique key, never OFFSET or COUNT.

    Clients follow ``next``/``previous``; ``?page_size=`` asks for a size up to
    ``TRACKER["API_MAX_PAGE_SIZE"]``. Views set ``ordering``; ``?ordering=`` may pick another
    of their ``ordering_fields``.
    """

    page_size_query_param = "page_size"
    ordering = "-id"

    def get_page_size(self, request: Any) -> int:
        self.page_size = conf.get("API_PAGE_SIZE")
        self.max_page_size = conf.get("API_MAX_PAGE_SIZE")
        raw = request.query_params.get(self.page_size_query_param)
        if raw is not None:
            try:
                wanted = int(raw)
                if wanted < 1:
                    raise ValueError
            except ValueError:
                raise ValidationError(
                    {"page_size": [f"page_size must be a whole number from 1 to {self.max_page_size}, not {raw[:40]!r}."]}
                ) from None
            return min(wanted, self.max_page_size)
        return self.page_size

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        params = super().get_schema_operation_parameters(view)
        for p in params:
            if p["name"] == self.page_size_query_param:
                p["schema"] = {"type": "integer", "minimum": 1}
        return params
