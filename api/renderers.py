"""orjson for JSON in both directions.

orjson is faster than the standard library (``docs/performance.md``), serialises
``datetime`` natively and, on input, rejects NaN/Infinity and nesting deeper than 1024
levels instead of recursing until the interpreter gives up. Output equals what DRF's
fields render for the same values (the lookups' rows and the resources' serializers agree:
``api/tests/test_lookup_keys.py``).
"""

from decimal import Decimal

import orjson
from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer

from api.errors import PayloadTooLarge
from api.limits import MAX_JSON_DEPTH

# Decimals become their text ("12.50": money keeps its places); anything else orjson
# cannot render raises TypeError. The C method rather than a Python function: orjson calls
# it for every money value.
_default = Decimal.__str__


# UTC datetimes end in Z, as DRF's DateTimeField renders them.
OPTIONS = orjson.OPT_UTC_Z


def dumps(data) -> bytes:
    """Serialise API data as DRF's fields would: Decimals as their text (money keeps its
    places), aware UTC datetimes as ISO 8601 ending in ``Z``.

    Raises `orjson.JSONEncodeError` (a `TypeError`) for a value JSON cannot hold.
    """
    try:
        return orjson.dumps(data, default=_default, option=OPTIONS)
    except orjson.JSONEncodeError:
        # A dict with int keys, say. OPT_NON_STR_KEYS takes them, but slows every
        # dump, so it is asked for only when needed (docs/performance.md).
        return orjson.dumps(data, default=_default, option=OPTIONS | orjson.OPT_NON_STR_KEYS)


class ORJSONRenderer(BaseRenderer):
    """Render responses with orjson."""

    media_type = "application/json"
    format = "json"
    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        return b"" if data is None else dumps(data)


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


class JSONOnlyNegotiation(DefaultContentNegotiation):
    """Always answer with the view's first renderer (JSON), whatever ``Accept`` says.

    The answer is always JSON, so parsing ``Accept`` would buy nothing
    (``docs/performance.md``); `api.hotpath` relies on it.
    """

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type
