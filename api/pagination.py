"""Keyset (cursor) pagination by primary key.

An offset page at depth N makes the database walk N rows; a keyset page is
``WHERE id > last_seen ORDER BY id LIMIT n`` on the primary-key index, equally fast at any
depth of a million rows, and stable while rows are being inserted.
"""

from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination

from api.errors import BadRequest
from api.query_params import as_params, positive_int


class KeysetPagination(CursorPagination):
    """Pages of ``page_size`` (default 50, at most 1000) ordered by ``id``."""

    ordering = "id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 1000

    def get_page_size(self, request) -> int:
        """``page_size`` from 1 to 1000; anything else is a `BadRequest`, not a silent default."""
        if self.page_size_query_param not in request.query_params:
            return self.page_size
        params = as_params(request.query_params)
        return positive_int(params, self.page_size_query_param, self.max_page_size)

    def get_schema_operation_parameters(self, view) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update(minimum=1, maximum=self.max_page_size)
        return parameters

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except NotFound as exc:
            raise BadRequest("invalid cursor", {"cursor": [str(exc.detail)]}) from exc
