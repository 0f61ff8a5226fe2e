"""Query parameters of ``/api/run-query/``, parsed strictly.

``type`` is ``get`` or ``insert``. A ``get`` names exactly one lookup key (``user_id``,
``email``, ``organization_id``, ``product_id``, ``order_id``), an optional ``count``
(1–1000, default 1) and, for the user keys, ``include=orders``. An ``insert`` takes an
optional ``count`` (1–100) of synthetic records per model. Anything else (an unknown or
repeated parameter, a negative or non-numeric id) is a `BadRequest` naming the parameter.

The parsers read `Params`, each parameter's list of values: `as_params` makes it from
Django's ``request.GET``, `api.fast_path.query_params` straight from the query string.
A plain dict of lists, because `QueryDict.getlist` (three Python calls and a copy per
parameter) made up a third of the parsing that every lookup pays for.
"""

from collections.abc import Mapping
from typing import NamedTuple

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.http import QueryDict

from api.errors import BadRequest
from api.validation import MAX_ID

GET, INSERT = "get", "insert"
TYPES = (GET, INSERT)
ID_KEYS = ("user_id", "product_id", "order_id")
USER_KEYS = ("user_id", "email", "organization_id")
LOOKUP_KEYS = ("user_id", "email", "organization_id", "product_id", "order_id")
LOOKUP_KEY_SET = frozenset(LOOKUP_KEYS)
INCLUDES = ("orders",)
MAX_LOOKUP_COUNT = 1000
MAX_SYNTHETIC_COUNT = 100
GET_PARAMS = {"type", "count", "include", *LOOKUP_KEYS}
INSERT_PARAMS = {"type", "count"}
MAX_DIGITS = 19  # of a positive 64-bit integer

Params = Mapping[str, list[str]]


def as_params(query: QueryDict) -> dict[str, list[str]]:
    """``query``'s parameters, each with its list of values in order."""
    return dict(query.lists())


class Lookup(NamedTuple):
    """One ``type=get`` request: ``key`` = ``value``, up to ``count`` rows.

    A named tuple rather than a frozen dataclass: it is built on every lookup, in a third
    of the time.
    """

    key: str
    value: int | str
    count: int = 1
    include_orders: bool = False


def query_type(params: Params) -> str:
    """The ``type`` parameter: ``"get"`` or ``"insert"``; raises `BadRequest` otherwise."""
    value = single(params, "type")
    if value not in TYPES:
        raise BadRequest("type must be 'get' or 'insert'", {"type": [f"got {value!r}"]})
    return value


def parse_lookup(params: Params) -> Lookup:
    """Parse a ``type=get`` query; raises `BadRequest` naming each wrong parameter."""
    if not params.keys() <= GET_PARAMS:
        raise _unknown(params, GET_PARAMS)
    found = params.keys() & LOOKUP_KEY_SET
    if len(found) != 1:
        keys = [key for key in LOOKUP_KEYS if key in found]
        message = f"give exactly one of {', '.join(LOOKUP_KEYS)}"
        raise BadRequest(message, {"key": [f"got {len(keys)}: {', '.join(keys) or 'none'}"]})
    (key,) = found
    value = _email(params) if key == "email" else positive_int(params, key, MAX_ID)
    count = positive_int(params, "count", MAX_LOOKUP_COUNT) if "count" in params else 1
    include = single(params, "include") if "include" in params else None
    if include is not None and (include not in INCLUDES or key not in USER_KEYS):
        raise BadRequest(
            "include=orders is the only include, and only for user lookups",
            {"include": [f"got {include!r} with {key}"]},
        )
    return Lookup(key, value, count, include == "orders")


def parse_insert_count(params: Params) -> int | None:
    """``count`` of a ``type=insert`` query (synthetic records per model), or None."""
    if not params.keys() <= INSERT_PARAMS:
        raise _unknown(params, INSERT_PARAMS)
    return positive_int(params, "count", MAX_SYNTHETIC_COUNT) if "count" in params else None


def single(params: Params, name: str) -> str:
    """The one value of ``name``; raises `BadRequest` when it is missing or repeated."""
    values = params.get(name, ())
    if len(values) != 1:
        raise BadRequest(f"{name} must be given once", {name: [f"given {len(values)} times"]})
    return values[0]


def positive_int(params: Params, name: str, maximum: int) -> int:
    """The one value of ``name`` as an integer in [1, maximum]; raises `BadRequest`.

    ASCII digits only: ``int()`` would also take signs, spaces, ``_`` and other scripts'
    digits.
    """
    raw = single(params, name)
    value = int(raw) if len(raw) <= MAX_DIGITS and raw.isascii() and raw.isdigit() else 0
    if not 1 <= value <= maximum:
        raise BadRequest(
            f"{name} must be an integer from 1 to {maximum}", {name: [f"got {raw[:40]!r}"]}
        )
    return value


def _email(params: Params) -> str:
    raw = single(params, "email").strip()
    try:
        validate_email(raw)
    except ValidationError as exc:
        raise BadRequest("email is not a valid address", {"email": [raw[:254]]}) from exc
    return raw.lower()


def _unknown(params: Params, allowed: set[str]) -> BadRequest:
    unknown = sorted(params.keys() - allowed)
    return BadRequest(
        f"unknown parameter: {', '.join(unknown)}", {key: ["unknown"] for key in unknown}
    )
