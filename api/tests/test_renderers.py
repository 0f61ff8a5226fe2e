"""`api.http.renderers.dumps`: the JSON every API response is rendered with."""

from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from api.http.renderers import dumps


def test_money_keeps_its_places_and_utc_timestamps_end_in_z():
    body = {"total": Decimal("199500.00"), "at": datetime(2023, 1, 2, 0, 6, 47, tzinfo=UTC)}
    assert dumps(body) == b'{"total":"199500.00","at":"2023-01-02T00:06:47Z"}'


def test_int_keys_still_render_as_strings():
    assert orjson.loads(dumps({"users": {1: Decimal("1.50")}})) == {"users": {"1": "1.50"}}


def test_a_value_json_cannot_hold_raises_type_error():
    with pytest.raises(TypeError):
        dumps({"value": object()})
