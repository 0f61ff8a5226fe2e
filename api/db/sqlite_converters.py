"""Django's SQLite column converters for money, timestamps and flags, with shortcuts.

Django's SQLite backend converts each stored value in Python: a money value goes from a
float through a 15-digit Decimal context, then is quantized; a timestamp is parsed and
made aware with ``datetime.replace``. The converters here give the same values (equal,
with the same exponent, so they print the same) for the values SQLite hands back for what
Django wrote, and call Django's own converter for any other value, so that what Django
would do with it (round, raise) still happens. Property tests hold them equal to Django's
(``api/tests/test_sqlite_converters.py``); what they save: ``docs/performance.md``.

`faster_converter` swaps one of Django's converters for its equivalent here, or returns
it unchanged; `api.db.compiled` asks it once per compiled column, then
`row_converter` for the one function that converts a whole row.
"""

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Context, Decimal
from functools import partial
from typing import Any, NamedTuple

from django.db.models import DecimalField
from django.db.models.expressions import Col

# SQLite keeps 15 significant digits of a REAL; Django's converter rounds to as many.
SQLITE_DIGITS = 15

Converter = Callable[[Any, Any, Any], Any]
RowConverter = Callable[[list, Any], None]
# The converters `_convert_row` runs inline, by the kind in their ``inline`` attribute.
MONEY, FLAG, TIMESTAMP = "money", "flag", "timestamp"
fromisoformat = datetime.fromisoformat


def faster_converter(function: Converter, expression, connection) -> Converter:
    """``function``, or a faster one that converts every value to the same result.

    Only Django's own SQLite converters for a ``DecimalField``, a ``DateTimeField`` and a
    ``BooleanField`` column are swapped; anything else (another backend, a field's own
    converter, an annotation) is returned as it is.
    """
    if connection.vendor != "sqlite":
        return function
    operations = connection.ops
    method = getattr(function, "__func__", None)
    if method is type(operations).convert_datetimefield_value:
        return datetime_converter(function)
    if method is type(operations).convert_booleanfield_value:
        return boolean_converter()
    if (
        isinstance(expression, Col)
        and isinstance(expression.output_field, DecimalField)
        and getattr(function, "__code__", None)
        is operations.get_decimalfield_converter(expression).__code__
    ):
        return decimal_converter(expression.output_field, function)
    return function


def decimal_converter(field: DecimalField, djangos: Converter) -> Converter:
    """Django's ``DecimalField`` converter for SQLite, without its detour for most values.

    Django turns a stored float into ``Context(prec=15).create_decimal_from_float(value)``
    quantized to ``decimal_places``, and an integer (SQLite stores a Decimal with zero
    cents as one) likewise. When the float is the one nearest a decimal ``n`` ×
    10**-places (``n / 10**places == value``, both sides correctly rounded) and ``n`` has
    no more digits than 15 or ``max_digits``, that decimal is what Django's
    15-digit rounding gives (the float lies within half a unit in its last place of it,
    and a 15-digit step is wider than a float's), and its quantize changes nothing. So
    the result is that decimal, made by one exact multiplication. Any other value, and
    zero (whose sign the float keeps), goes to Django's converter.
    """
    places = field.decimal_places
    unit = Decimal(1).scaleb(-places)  # 0.01: n × unit is the decimal, exponent -places
    money = Money(
        scale=10**places,
        limit=10 ** min(SQLITE_DIGITS, field.max_digits),  # of the unscaled integer n
        multiply=Context(prec=field.max_digits).multiply,  # exact below `limit`
        unit=unit,
        one=Decimal(1).quantize(unit),  # 1.00: an integer × one has the exponent too
        djangos=djangos,
    )

    def converter(value, expression, connection):
        row = [value]
        _convert_row(((0, *money, expression),), (), (), (), row, connection)
        return row[0]

    converter.inline = (MONEY, money)
    return converter


def boolean_converter() -> Converter:
    """Django's ``BooleanField`` converter for SQLite: 1 and 0 (and their equals) to bool."""

    def converter(value, expression, connection):
        row = [value]
        _convert_row((), (0,), (), (), row, connection)
        return row[0]

    converter.inline = (FLAG, None)
    return converter


class Money(NamedTuple):
    """What `decimal_converter` needs of one money column."""

    scale: int
    limit: int
    multiply: Callable[[int, Decimal], Decimal]
    unit: Decimal
    one: Decimal
    djangos: Converter


def _convert_row(money, flags, timestamps, others, row: list, connection) -> None:
    """Convert ``row`` in place: the columns of each kind, then any other converters.

    ``money``: ``(position, *Money, expression)`` each; ``flags``: positions;
    ``timestamps``: ``(position, Django's converter, expression)``; ``others``:
    ``(position, function, expression)``, called in order.
    """
    for position, scale, limit, multiply, unit, one, djangos, expression in money:
        value = row[position]
        if value.__class__ is float:
            scaled = value * scale
            if -limit < scaled < limit:  # not inf or nan, which round() refuses
                n = round(scaled)
                if n and -limit < n < limit and n / scale == value:
                    row[position] = multiply(n, unit)
                    continue
        elif value.__class__ is int and -limit < value * scale < limit:
            row[position] = multiply(value, one)
            continue
        row[position] = djangos(value, expression, connection)
    for position in flags:
        value = row[position]
        if value in (1, 0):  # what Django's convert_booleanfield_value does
            row[position] = bool(value)
    utc = connection.timezone is UTC if timestamps else False
    for position, djangos, expression in timestamps:
        value = row[position]
        if utc and value.__class__ is str:
            try:
                parsed = fromisoformat(value + "+00:00")
            except ValueError:
                parsed = None
            if parsed is not None and parsed.tzinfo is UTC:
                row[position] = parsed
                continue
        row[position] = djangos(value, expression, connection)
    for position, function, expression in others:
        row[position] = function(row[position], expression, connection)


def row_converter(converters) -> RowConverter:
    """``convert(row, connection)``: every converter of a compiled query, on one row.

    ``converters`` are ``(position, function, expression)`` in the compiler's order;
    ``row`` is a list, converted in place. The columns whose one converter came from
    `decimal_converter`, `boolean_converter` or `datetime_converter` are converted inline
    by one call of `_convert_row` rather than a Python call each; the other converters run
    as Django runs them, in order.
    """
    per_column = Counter(position for position, _, _ in converters)
    kinds: dict[str, list] = {MONEY: [], FLAG: [], TIMESTAMP: []}
    others = []
    for position, function, expression in converters:
        kind, spec = getattr(function, "inline", (None, None))
        if kind is None or per_column[position] > 1:
            others.append((position, function, expression))
        elif kind == MONEY:
            kinds[MONEY].append((position, *spec, expression))
        elif kind == FLAG:
            kinds[FLAG].append(position)
        else:
            kinds[TIMESTAMP].append((position, spec, expression))
    return partial(_convert_row, *map(tuple, kinds.values()), tuple(others))


def datetime_converter(djangos: Converter) -> Converter:
    """Django's ``DateTimeField`` converter for SQLite, for UTC connections.

    Django parses the stored text with ``datetime.fromisoformat`` and, with ``USE_TZ``,
    attaches the connection's time zone to a naive result (``timezone.make_aware``, that
    is ``replace(tzinfo=...)``). When that zone is UTC,
    parsing the text with ``+00:00`` appended gives the same aware datetime, with
    ``datetime.UTC`` as its ``tzinfo``. Text that does not parse so (an offset of its
    own, another format) or parses without that ``tzinfo`` (a bare date, whose offset
    Python drops) goes to Django's converter, as does every value of a
    connection with another time zone or without ``USE_TZ``.

    ``connection.timezone`` is None without ``USE_TZ``, and Django recomputes it for
    the connections of ``django.db.connections`` (the only ones `api.db.compiled`
    uses) when ``USE_TZ`` or ``TIME_ZONE`` change, so it alone tells, without reading
    ``settings``.
    """

    def converter(value, expression, connection):
        row = [value]
        _convert_row((), (), ((0, djangos, expression),), (), row, connection)
        return row[0]

    converter.inline = (TIMESTAMP, djangos)
    return converter
