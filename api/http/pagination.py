"""Keyset (cursor) pagination by primary key.

An offset page at depth N makes the database walk N rows; a keyset page is
``WHERE id > last_seen ORDER BY id LIMIT n`` on the primary-key index, equally fast at any
depth of a million rows, and stable while rows are being inserted.
"""

import binascii
from base64 import b64decode, b64encode
from urllib.parse import parse_qs, quote

from rest_framework.pagination import Cursor, CursorPagination

from api.domain.lookup_keys import parse_id
from api.http.errors import BadRequest
from api.http.query_params import as_params, positive_int, single

CURSOR_TOKENS = frozenset({"o", "r", "p"})  # offset, reverse, position: DRF's encode_cursor


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

    @staticmethod
    def cursor_after(position: int) -> str:
        """The ``cursor`` parameter of the page after ``position``, as DRF encodes it."""
        return quote(b64encode(f"p={position}".encode("ascii")).decode("ascii"))

    def decode_cursor(self, request) -> Cursor | None:
        """The cursor DRF's ``encode_cursor`` wrote, or None; `BadRequest` for anything else.

        Stricter than DRF's own decoding, which skips characters that are not base64, lets
        any text through as the position (a 500 when the query compares it with an
        id) and ignores unknown tokens: here the token must be base64 of ``o``, ``r`` and
        ``p`` at most once each, the offset within DRF's cutoff, ``r`` 0 or 1, and the
        position an id in the column's range.
        """
        if self.cursor_query_param not in request.query_params:
            return None
        raw = single(as_params(request.query_params), self.cursor_query_param)
        try:
            text = b64decode(raw.encode("ascii"), validate=True).decode("ascii")
            tokens = parse_qs(text, keep_blank_values=True, strict_parsing=bool(text))
            if not tokens.keys() <= CURSOR_TOKENS or any(len(v) != 1 for v in tokens.values()):
                raise ValueError(text)
            offset = int(tokens.get("o", ["0"])[0])
            reverse = tokens.get("r", ["0"])[0]
            position = tokens.get("p", [None])[0]
            if not 0 <= offset <= self.offset_cutoff or reverse not in ("0", "1"):
                raise ValueError(text)
            if position is not None:
                parse_id(position)
        except (UnicodeError, binascii.Error, ValueError):
            raise BadRequest(
                "invalid cursor: use the next or previous link of a page",
                {self.cursor_query_param: [f"got {raw[:40]!r}"]},
            ) from None
        return Cursor(offset=offset, reverse=reverse == "1", position=position)
