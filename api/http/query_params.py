"""Query parameters of ``/api/run-query/``, parsed strictly.

``type`` is ``get`` or ``insert``. A ``get`` names exactly one lookup key of
`api.domain.lookup_keys.LOOKUP_KEYS`, parsed by that key's value type, an optional ``count``
(1 to the key's ``max_count``, default 1) and an ``include`` the key allows. An
``insert`` takes an optional ``count`` (1 to `MAX_SYNTHETIC_COUNT`) of synthetic records
per model. Anything else (an unknown or repeated parameter, a value its key's type
refuses) is a `BadRequest` naming the parameter.

The parsers read `Params`, each parameter's list of values: `as_params` makes it from
Django's ``request.GET``, `api.fastpath.query_string.query_params` straight from the
query string.
"""

from collections.abc import Mapping

from django.http import QueryDict

from api.domain.limits import MAX_SYNTHETIC_COUNT
from api.domain.lookup_keys import INCLUDE_ORDERS, INCLUDES, LOOKUP_KEYS, Lookup, parse_id
from api.http.errors import BadRequest

GET, INSERT = "get", "insert"
TYPES = (GET, INSERT)
KEY_NAMES = frozenset(LOOKUP_KEYS)
GET_PARAMS = frozenset({"type", "count", "include", *LOOKUP_KEYS})
INSERT_PARAMS = frozenset({"type", "count"})

Params = Mapping[str, list[str]]


def as_params(query: QueryDict) -> dict[str, list[str]]:
    """``query``'s parameters, each with its list of values in order."""
    return dict(query.lists())


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
    found = params.keys() & KEY_NAMES
    if len(found) != 1:
        names = [name for name in LOOKUP_KEYS if name in found]
        message = f"give exactly one of {', '.join(LOOKUP_KEYS)}"
        raise BadRequest(message, {"key": [f"got {len(names)}: {', '.join(names) or 'none'}"]})
    (name,) = found
    key = LOOKUP_KEYS[name]
    raw = single(params, name)
    try:
        value = key.value.parse(raw)
    except ValueError:
        raise BadRequest(
            key.value.invalid.format(name=name), {name: [f"got {raw[:40]!r}"]}
        ) from None
    count = positive_int(params, "count", key.max_count) if "count" in params else 1
    include = single(params, "include") if "include" in params else None
    if include is not None and include not in key.includes:
        allowed = ", ".join(k.name for k in LOOKUP_KEYS.values() if INCLUDE_ORDERS in k.includes)
        raise BadRequest(
            f"include={'|'.join(INCLUDES)} only, and only for {allowed}",
            {"include": [f"got {include!r} with {name}"]},
        )
    return Lookup(key, value, count, include == INCLUDE_ORDERS)


def parse_insert_count(params: Params) -> int | None:
    """``count`` of a ``type=insert`` query (synthetic records per model), or None."""
    if not params.keys() <= INSERT_PARAMS:
        raise _unknown(params, INSERT_PARAMS)
    return positive_int(params, "count", MAX_SYNTHETIC_COUNT) if "count" in params else None


def key_label(params: Params) -> str:
    """The lookup key a ``type=get`` query names (the first when it names several), or
    "": what the request metrics label a lookup by (`api.metrics.wsgi`)."""
    for name in params:
        if name in KEY_NAMES:
            return name
    return ""


def single(params: Params, name: str) -> str:
    """The one value of ``name``; raises `BadRequest` when it is missing or repeated."""
    values = params.get(name, ())
    if len(values) != 1:
        raise BadRequest(f"{name} must be given once", {name: [f"given {len(values)} times"]})
    return values[0]


def positive_int(params: Params, name: str, maximum: int) -> int:
    """The one value of ``name`` as an integer in [1, maximum]; raises `BadRequest`."""
    raw = single(params, name)
    try:
        value = parse_id(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= maximum:
        raise BadRequest(
            f"{name} must be an integer from 1 to {maximum}", {name: [f"got {raw[:40]!r}"]}
        )
    return value


def _unknown(params: Params, allowed: frozenset[str]) -> BadRequest:
    unknown = sorted(params.keys() - allowed)
    return BadRequest(
        f"unknown parameter: {', '.join(unknown)}", {key: ["unknown"] for key in unknown}
    )
