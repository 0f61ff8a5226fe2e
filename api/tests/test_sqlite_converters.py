"""The faster SQLite converters give what Django's give, value for value, error for error."""

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from django.db import connections
from django.db.models import DecimalField
from django.db.models.expressions import Col
from django.db.utils import ConnectionHandler
from django.test import override_settings
from hypothesis import given, settings
from hypothesis import strategies as st

from api.db.sqlite_converters import (
    SQLITE_DIGITS,
    decimal_converter,
    faster_converter,
    row_converter,
)
from api.models import Order, Product, User
from api.services.selectors import LOOKUP_QUERIES

MONEY_FIELDS = [
    field
    for model in (User, Product, Order)
    for field in model._meta.concrete_fields
    if isinstance(field, DecimalField)
]
EXAMPLES = settings(max_examples=400, derandomize=True, deadline=None)


@pytest.fixture(scope="module")
def sqlite():
    """A Django SQLite connection (its operations and time zone; no query is run)."""
    handler = ConnectionHandler({"default": {"ENGINE": "django.db.backends.sqlite3"}})
    yield handler["default"]
    handler.close_all()


def outcome(converter, value, expression, connection):
    """What a converter did: the value with its exact digits and type, or the error type."""
    try:
        result = converter(value, expression, connection)
    except Exception as exc:
        return ("raised", type(exc))
    if isinstance(result, Decimal):
        return ("decimal", result.as_tuple(), str(result))
    if isinstance(result, datetime):
        return ("datetime", result, result.tzinfo, result.isoformat())
    return ("other", result)


def converters_for(field, connection):
    expression = Col(field.model._meta.db_table, field)
    djangos = connection.ops.get_decimalfield_converter(expression)
    return expression, djangos, faster_converter(djangos, expression, connection)


def stored(text: str):
    """What SQLite hands back for Django's text of a Decimal in a ``decimal`` column."""
    with sqlite3.connect(":memory:") as connection:
        connection.execute("CREATE TABLE t (money decimal)")
        connection.execute("INSERT INTO t VALUES (?)", (text,))
        return connection.execute("SELECT money FROM t").fetchone()[0]


@pytest.mark.parametrize("field", MONEY_FIELDS, ids=lambda field: field.name)
def test_the_money_converter_is_swapped_for_djangos_own(sqlite, field):
    _, djangos, faster = converters_for(field, sqlite)
    assert faster is not djangos


@EXAMPLES
@given(data=st.data())
def test_money_as_django_writes_it_reads_back_the_same_without_djangos_detour(sqlite, data):
    """Every Decimal Django can store converts as in Django; up to 15 digits, the fast way.

    Up to the 15 digits a REAL keeps it comes back digit for digit, and Django's converter
    is left only zero, whose sign a stored float keeps (``-0.00``).
    """
    field = data.draw(st.sampled_from(MONEY_FIELDS))
    limit = Decimal(10) ** (field.max_digits - field.decimal_places)
    written = data.draw(
        st.decimals(
            min_value=-limit + 1,
            max_value=limit - 1,
            places=field.decimal_places,
            allow_nan=False,
            allow_infinity=False,
        )
    )
    value = stored(str(written))
    expression, djangos, _ = converters_for(field, sqlite)
    fallbacks = []

    def counted(*args):
        fallbacks.append(args[0])
        return djangos(*args)

    faster = decimal_converter(field, counted)
    assert outcome(faster, value, expression, sqlite) == outcome(djangos, value, expression, sqlite)
    if len(written.as_tuple().digits) <= SQLITE_DIGITS:  # what a REAL keeps
        assert faster(value, expression, sqlite).as_tuple() == written.as_tuple()
        zero_float = written.is_zero() and isinstance(value, float)
        assert fallbacks == ([value] * 2 if zero_float else [])


@EXAMPLES
@given(
    field=st.sampled_from(MONEY_FIELDS),
    value=st.one_of(
        st.none(),
        st.floats(),
        st.floats(min_value=-1e16, max_value=1e16),
        st.integers(),
        st.integers(min_value=-(10**16), max_value=10**16),
        st.decimals(places=2, allow_nan=False, allow_infinity=False).map(float),
        st.sampled_from([0.0, -0.0, 0, 1.005, 1.015, 2.675, 1e-05, -1e-05, 5e-324, 1e13]),
        st.text(max_size=20),
    ),
)
def test_any_stored_value_converts_as_django_converts_it(sqlite, field, value):
    """Floats Django never wrote, huge integers, text: the same result or the same error."""
    expression, djangos, faster = converters_for(field, sqlite)
    assert outcome(faster, value, expression, sqlite) == outcome(djangos, value, expression, sqlite)


USER_MONEY = [field for field in MONEY_FIELDS if field.model is User]


def tag(value, expression, connection):
    """A second converter on a column: it must see the first one's result."""
    return ("tagged", value)


def converted(row_function, values, connection):
    """The outcome of ``row_function(row, connection)`` on a list of ``values``."""
    row = list(values)
    try:
        row_function(row, connection)
    except Exception as exc:
        return ("raised", type(exc))
    return [outcome(lambda value, *_: value, value, None, connection) for value in row]


@EXAMPLES
@given(
    values=st.lists(
        st.one_of(
            st.floats(),
            st.integers(),
            st.decimals(places=2, allow_nan=False, allow_infinity=False).map(float),
        ),
        min_size=len(USER_MONEY) + 1,
        max_size=len(USER_MONEY) + 1,
    )
)
def test_a_whole_row_converts_as_djangos_converters_one_by_one(sqlite, values):
    """Money columns (one also tagged afterwards) and a tagged column, as Django runs them."""
    columns = [converters_for(field, sqlite) for field in USER_MONEY]
    last = len(columns) - 1
    extra = [(last, tag, None), (last + 1, tag, None)]
    faster = [(p, fast, expression) for p, (expression, _, fast) in enumerate(columns)]
    djangos = [(p, django, expression) for p, (expression, django, _) in enumerate(columns)]

    def one_by_one(row, connection):
        for position, function, expression in djangos + extra:
            row[position] = function(row[position], expression, connection)

    expected = converted(one_by_one, values, sqlite)
    assert converted(row_converter(faster + extra), values, sqlite) == expected


@EXAMPLES
@given(value=st.one_of(st.none(), st.integers(), st.floats(), st.booleans(), st.text(max_size=5)))
def test_flags_convert_as_django_converts_them(sqlite, value):
    djangos = sqlite.ops.convert_booleanfield_value
    faster = faster_converter(djangos, None, sqlite)
    assert faster is not djangos
    assert outcome(faster, value, None, sqlite) == outcome(djangos, value, None, sqlite)
    assert type(faster(value, None, sqlite)) is type(djangos(value, None, sqlite))


DATETIME_CONVERTER = "convert_datetimefield_value"


@EXAMPLES
@given(
    moment=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    form=st.sampled_from(["str", "isoformat", "minutes", "aware", "zulu", "date"]),
    offset=st.integers(min_value=-23 * 60, max_value=23 * 60),
)
def test_timestamps_convert_as_django_converts_them(sqlite, moment, form, offset):
    """Django's text (``str(datetime)``), other ISO forms and aware text: the same datetime."""
    text = {
        "str": str(moment),
        "isoformat": moment.isoformat(),
        "minutes": moment.isoformat(" ", timespec="minutes"),
        "aware": moment.replace(tzinfo=timezone(timedelta(minutes=offset))).isoformat(),
        "zulu": moment.isoformat() + "Z",
        "date": moment.date().isoformat(),
    }[form]
    djangos = getattr(sqlite.ops, DATETIME_CONVERTER)
    faster = faster_converter(djangos, None, sqlite)
    assert faster is not djangos
    assert outcome(faster, text, None, sqlite) == outcome(djangos, text, None, sqlite)


@given(text=st.text(max_size=30))
@EXAMPLES
def test_text_that_is_no_timestamp_fails_as_in_django(sqlite, text):
    djangos = getattr(sqlite.ops, DATETIME_CONVERTER)
    faster = faster_converter(djangos, None, sqlite)
    assert outcome(faster, text, None, sqlite) == outcome(djangos, text, None, sqlite)


def test_timestamps_stay_naive_without_use_tz():
    # Django's own handler: it resets the cached zone of its connections when USE_TZ changes.
    connection = connections["default"]
    if connection.vendor != "sqlite":
        pytest.skip("SQLite converters")
    djangos = getattr(connection.ops, DATETIME_CONVERTER)
    faster = faster_converter(djangos, None, connection)
    assert faster("2023-01-02 00:06:47", None, connection).tzinfo is UTC  # caches the zone
    with override_settings(USE_TZ=False):
        naive = faster("2023-01-02 00:06:47", None, connection)
        assert naive == djangos("2023-01-02 00:06:47", None, connection)
        assert naive == datetime(2023, 1, 2, 0, 6, 47) and naive.tzinfo is None
    assert faster("2023-01-02 00:06:47", None, connection).tzinfo is UTC


@pytest.mark.django_db(databases=["users"])
def test_the_lookup_plans_use_them_on_sqlite_and_leave_other_backends_alone():
    query = LOOKUP_QUERIES["user_id"]
    query.fetch(1, 2)
    modules = {function.__module__ for _, function, _ in query._plans["users", None].converters}
    assert ("api.db.sqlite_converters" in modules) == (connections["users"].vendor == "sqlite")
