"""The lookup keys of ``GET /api/run-query/?type=get``: one registry, one entry per key.

Everything the API knows about a key is its `LookupKey` in `LOOKUP_KEYS`: the store it
reads, how its value is parsed, the query it runs, the rows one request may ask for, the
``include`` it allows and an example. The query parser, the selectors, the OpenAPI schema,
the Locust tasks and the tests all read it, so adding a key is one entry here (and its
swarm weight in ``loadtest/swarm.py``). `Lookup` is one parsed request.

Needs no settings (Django's e-mail validator reads none): the Locust swarm imports it
without setting Django up.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from api.domain.limits import MAX_ID, MAX_ID_DIGITS, MAX_LOOKUP_COUNT

# What a key's query returns, by id ascending:
RANGE = "range"  # the ids in [value, value + count): an index range scan on the primary key
EQUAL = "equal"  # the first ``count`` rows whose column equals value: its index
INCLUDE_ORDERS = "orders"  # each user with its orders and their products


@dataclass(frozen=True)
class ValueType:
    """How a key's value is read from the query string and published in the schema.

    ``parse(raw)`` returns the value or raises `ValueError`; ``invalid`` is the 400's
    message, formatted with the key's ``name``.
    """

    python: type
    parse: Callable[[str], int | str]
    invalid: str
    schema: dict


def parse_id(raw: str) -> int:
    """A positive 64-bit integer from ASCII digits; raises `ValueError` otherwise.

    ``int()`` alone would also take signs, spaces, ``_`` and other scripts' digits.
    """
    if len(raw) <= MAX_ID_DIGITS and raw.isascii() and raw.isdigit():
        value = int(raw)
        if 1 <= value <= MAX_ID:
            return value
    raise ValueError(raw)


def parse_email(raw: str) -> str:
    """A well-formed address, lower-cased as stored; raises `ValueError` otherwise."""
    address = raw.strip()
    try:
        validate_email(address)
    except ValidationError as exc:
        raise ValueError(raw) from exc
    return address.lower()


ID = ValueType(
    python=int,
    parse=parse_id,
    invalid=f"{{name}} must be an integer from 1 to {MAX_ID}",
    schema={"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_ID},
)
EMAIL = ValueType(
    python=str,
    parse=parse_email,
    invalid="{name} is not a valid address",
    schema={"type": "string", "format": "email", "maxLength": 254},
)


@dataclass(frozen=True)
class LookupKey:
    """One lookup key: ``?type=get&<name>=<value>[&count=N][&include=...]``.

    ``store`` is the name of the store read (`api.domain.stores`); ``column`` the column
    compared with the value, which the first result carries (so the swarm checks it);
    ``query`` `RANGE` or `EQUAL`; ``max_count`` the most rows one request returns;
    ``includes`` the ``include`` values it accepts; ``example`` a value for the schema.
    """

    name: str
    store: str
    value: ValueType
    query: str
    column: str
    example: int | str
    max_count: int = MAX_LOOKUP_COUNT
    includes: tuple[str, ...] = field(default=())


LOOKUP_KEYS: dict[str, LookupKey] = {
    key.name: key
    for key in (
        LookupKey(
            "user_id",
            "users",
            ID,
            RANGE,
            "id",
            example=1,
            includes=(INCLUDE_ORDERS,),
        ),
        LookupKey(
            "email",
            "users",
            EMAIL,
            EQUAL,
            "email",
            example="user1@example.com",
            includes=(INCLUDE_ORDERS,),
        ),
        LookupKey(
            "organization_id",
            "users",
            ID,
            EQUAL,
            "organization_id",
            example=1,
            includes=(INCLUDE_ORDERS,),
        ),
        LookupKey("product_id", "products", ID, RANGE, "id", example=1),
        LookupKey("order_id", "orders", ID, RANGE, "id", example=1),
    )
}
INCLUDES = tuple(sorted({include for key in LOOKUP_KEYS.values() for include in key.includes}))


class Lookup(NamedTuple):
    """One ``type=get`` request: ``key`` = ``value``, up to ``count`` rows."""

    key: LookupKey
    value: int | str
    count: int = 1
    include_orders: bool = False
