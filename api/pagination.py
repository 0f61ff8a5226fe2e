"""Keyset (cursor) pagination by primary key.

An offset page at depth N makes the database walk N rows; a keyset page is
``WHERE id > last_seen ORDER BY id LIMIT n`` on the primary-key index, equally fast at any
depth of a million rows, and stable while rows are being inserted.
"""

from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination

from api.errors import BadRequest


class KeysetPagination(CursorPagination):
    """Pages of ``page_size`` (default 50, at most 1000) ordered by ``id``."""

    ordering = "id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 1000

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except NotFound as exc:
            raise BadRequest("invalid cursor", {"cursor": [str(exc.detail)]}) from exc
