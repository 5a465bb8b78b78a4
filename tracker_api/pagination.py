"""Cursor pagination: constant cost per page however deep the client pages."""

from __future__ import annotations

from typing import Any

from rest_framework import pagination

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
        return super().get_page_size(request)
