"""Query parameters of ``/api/run-query/``, parsed strictly.

``type`` is ``get`` or ``insert``. A ``get`` names exactly one lookup key (``user_id``,
``email``, ``organization_id``, ``product_id``, ``order_id``), an optional ``count``
(1–1000, default 1) and, for the user keys, ``include=orders``. An ``insert`` takes an
optional ``count`` (1–100) of synthetic records per model. Anything else (an unknown or
repeated parameter, a negative or non-numeric id) is a `BadRequest` naming the parameter.
"""

import re
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
INCLUDES = ("orders",)
MAX_LOOKUP_COUNT = 1000
MAX_SYNTHETIC_COUNT = 100
GET_PARAMS = {"type", "count", "include", *LOOKUP_KEYS}
INSERT_PARAMS = {"type", "count"}

_DIGITS = re.compile(r"[0-9]{1,19}")


class Lookup(NamedTuple):
    """One ``type=get`` request: ``key`` = ``value``, up to ``count`` rows.

    A named tuple rather than a frozen dataclass: it is built on every lookup, in a third
    of the time.
    """

    key: str
    value: int | str
    count: int = 1
    include_orders: bool = False


def query_type(params: QueryDict) -> str:
    """The ``type`` parameter: ``"get"`` or ``"insert"``; raises `BadRequest` otherwise."""
    value = single(params, "type")
    if value not in TYPES:
        raise BadRequest("type must be 'get' or 'insert'", {"type": [f"got {value!r}"]})
    return value


def parse_lookup(params: QueryDict) -> Lookup:
    """Parse a ``type=get`` query; raises `BadRequest` naming each wrong parameter."""
    _reject_unknown(params, GET_PARAMS)
    keys = [key for key in LOOKUP_KEYS if key in params]
    if len(keys) != 1:
        message = f"give exactly one of {', '.join(LOOKUP_KEYS)}"
        raise BadRequest(message, {"key": [f"got {len(keys)}: {', '.join(keys) or 'none'}"]})
    key = keys[0]
    value = _email(params) if key == "email" else positive_int(params, key, MAX_ID)
    count = positive_int(params, "count", MAX_LOOKUP_COUNT) if "count" in params else 1
    include = single(params, "include") if "include" in params else None
    if include is not None and (include not in INCLUDES or key not in USER_KEYS):
        raise BadRequest(
            "include=orders is the only include, and only for user lookups",
            {"include": [f"got {include!r} with {key}"]},
        )
    return Lookup(key, value, count, include == "orders")


def parse_insert_count(params: QueryDict) -> int | None:
    """``count`` of a ``type=insert`` query (synthetic records per model), or None."""
    _reject_unknown(params, INSERT_PARAMS)
    return positive_int(params, "count", MAX_SYNTHETIC_COUNT) if "count" in params else None


def single(params: QueryDict, name: str) -> str:
    """The one value of ``name``; raises `BadRequest` when it is missing or repeated."""
    values = params.getlist(name)
    if len(values) != 1:
        raise BadRequest(f"{name} must be given once", {name: [f"given {len(values)} times"]})
    return values[0]


def positive_int(params: QueryDict, name: str, maximum: int) -> int:
    """The one value of ``name`` as an integer in [1, maximum]; raises `BadRequest`."""
    raw = single(params, name)
    value = int(raw) if _DIGITS.fullmatch(raw) else 0
    if not 1 <= value <= maximum:
        raise BadRequest(
            f"{name} must be an integer from 1 to {maximum}", {name: [f"got {raw[:40]!r}"]}
        )
    return value


def _email(params: QueryDict) -> str:
    raw = single(params, "email").strip()
    try:
        validate_email(raw)
    except ValidationError as exc:
        raise BadRequest("email is not a valid address", {"email": [raw[:254]]}) from exc
    return raw.lower()


def _reject_unknown(params: QueryDict, allowed: set[str]) -> None:
    if params.keys() <= allowed:
        return
    unknown = sorted(params.keys() - allowed)
    raise BadRequest(
        f"unknown parameter: {', '.join(unknown)}", {key: ["unknown"] for key in unknown}
    )
