"""orjson for the JSON the API answers, and the one content type it negotiates.

orjson is faster than the standard library (``docs/performance.md``), serialises
``datetime`` natively and, on input, rejects NaN/Infinity and nesting deeper than 1024
levels instead of recursing until the interpreter gives up. Output equals what DRF's
fields render for the same values (the lookups' rows and the resources' serializers agree:
``api/tests/test_lookup_keys.py``).
"""

from decimal import Decimal

import orjson
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer

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


class JSONOnlyNegotiation(DefaultContentNegotiation):
    """Always answer with the view's first renderer (JSON), whatever ``Accept`` says.

    The answer is always JSON, so parsing ``Accept`` would buy nothing
    (``docs/performance.md``); `api.fastpath` relies on it.
    """

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type
