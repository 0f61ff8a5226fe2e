"""orjson for JSON request bodies, with the limits every body is held to.

orjson rejects NaN/Infinity and nesting deeper than 1024 levels instead of recursing until
the interpreter gives up; `ORJSONParser` adds the byte limit and `MAX_JSON_DEPTH`.
"""

import orjson
from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

from api.domain.limits import MAX_JSON_DEPTH
from api.http.errors import PayloadTooLarge


def nesting_depth(document, limit: int) -> int:
    """How deeply ``document``'s arrays and objects nest, counted up to ``limit + 1``.

    ``{"users": [{"name": "x"}]}`` is 3. Iterative, so no depth makes it recurse.
    """
    deepest, pending = 0, [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict):
            value = value.values()
        elif not isinstance(value, list):
            continue
        deepest = max(deepest, depth)
        if depth > limit:
            break
        pending.extend((item, depth + 1) for item in value if isinstance(item, dict | list))
    return deepest


class ORJSONParser(BaseParser):
    """Parse JSON bodies with orjson, refusing bodies over ``DATA_UPLOAD_MAX_MEMORY_SIZE``
    (413) and documents nested deeper than `MAX_JSON_DEPTH` (400).

    The depth is checked before any field validation sees the document: DRF's fields
    recurse into nested values (to validate or to describe them), and a value nested a
    thousand deep in a record exhausted Python's recursion limit there.
    """

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise PayloadTooLarge(f"request body larger than {limit} bytes")
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"malformed JSON: {exc}") from exc
        if nesting_depth(document, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
            raise ParseError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        return document
