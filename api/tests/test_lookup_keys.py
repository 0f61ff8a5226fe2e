"""Every key of `api.domain.lookup_keys.LOOKUP_KEYS`, tested from the registry alone.

A new key gets these tests without a new line here: it answers 200 with the rows of its
model that the resource endpoints render identically, 404 for a value not stored, 400 for
a malformed one, a body the published schema validates, and the same answer from the hot
path as from Django's full request cycle.
"""

from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest
import schemathesis
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.wsgi import WSGIHandler
from django.db import connections
from django.test import Client
from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework import serializers

from api.domain.columns import HIDDEN_COLUMNS, output_columns
from api.domain.limits import MAX_ID
from api.domain.lookup_keys import INCLUDE_ORDERS, LOOKUP_KEYS, RANGE, LookupKey
from api.domain.stores import STORES
from api.fastpath import FastPathHandler
from api.http import outputs
from api.http.outputs import OUTPUTS, UserOut
from api.models import User
from api.services.selectors import LOOKUP_QUERIES, ONE_ID_QUERIES
from api.tests.conftest import ALL_DATABASES
from api.tests.test_fastpath import call, environ
from data_project.wsgi import application

URL = "/api/run-query/"
KEYS = list(LOOKUP_KEYS.values())
pytestmark = pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)
# A value of each type that the shop fixture does not store.
ABSENT = {int: MAX_ID, str: "nobody@example.com"}
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)


def stored_value(key: LookupKey):
    """The value of ``key`` on the lowest-id row of its model that has one."""
    rows = STORES[key.store].model.objects.exclude(**{key.column: None}).order_by("id")
    return rows.values_list(key.column, flat=True).first()


def queries(key: LookupKey) -> list[str]:
    """The successful queries of ``key``: one row, two rows, and each include."""
    value = stored_value(key)
    base = f"type=get&{key.name}={value}"
    return [base, f"{base}&count=2", *(f"{base}&include={i}" for i in key.includes)]


def get(query: str) -> tuple[int, dict]:
    response = Client().get(f"{URL}?{query}")
    return response.status_code, orjson.loads(response.content)


def resource(model: str, id_: int) -> dict:
    response = Client().get(f"/api/{model}/{id_}/")
    assert response.status_code == 200
    return orjson.loads(response.content)


@pytest.mark.parametrize("key", KEYS, ids=lambda key: key.name)
def test_a_stored_value_answers_its_models_rows(shop, key):
    """200: the rows whose column holds the value, first, each as its resource renders it."""
    value = stored_value(key)
    for query in queries(key):
        status, body = get(query)
        assert status == 200, body
        assert (body["model"], body["key"], body["value"]) == (key.store, key.name, value)
        rows = body["results"]
        assert rows and rows[0][key.column] == value
        assert [row["id"] for row in rows] == sorted(row["id"] for row in rows)
        if key.query == RANGE:
            assert all(value <= row[key.column] < value + body["count"] for row in rows)
        else:
            assert all(row[key.column] == value for row in rows) and len(rows) <= body["count"]
        for row in rows:
            orders = row.pop("orders", None)
            total, after = row.pop("orders_total", None), row.pop("orders_next", 0)
            assert row == resource(key.store, row["id"])
            if orders is not None:
                assert total == len(orders) and after is None  # the shop's users have few
            assert (orders is not None) == query.endswith(f"include={INCLUDE_ORDERS}")
            for order in orders or []:
                product = order.pop("product")
                assert order == resource("orders", order["id"])
                assert product == resource("products", product["id"])


@pytest.mark.parametrize("key", KEYS, ids=lambda key: key.name)
def test_count_bounds_the_rows(shop, key):
    value = stored_value(key)
    status, body = get(f"type=get&{key.name}={value}&count=1")
    assert status == 200 and len(body["results"]) == 1
    status, body = get(f"type=get&{key.name}={value}&count={key.max_count + 1}")
    assert status == 400 and "count" in body["details"]
    if key.query == RANGE:  # the range ends at the largest id a column holds
        status, body = get(f"type=get&{key.name}={MAX_ID}&count={key.max_count}")
        assert status == 404, body


@pytest.mark.parametrize("key", KEYS, ids=lambda key: key.name)
def test_a_value_not_stored_is_404_and_a_malformed_one_400(shop, key):
    status, body = get(f"type=get&{key.name}={ABSENT[key.value.python]}")
    assert status == 404 and body["error"].startswith(f"no {key.store} with {key.name}=")
    status, body = get(f"type=get&{key.name}=not%20a%20value")
    assert status == 400 and list(body["details"]) == [key.name]


@pytest.mark.parametrize("key", KEYS, ids=lambda key: key.name)
def test_an_include_the_key_does_not_allow_is_400(shop, key):
    for include in {INCLUDE_ORDERS, "invoices"} - set(key.includes):
        status, body = get(f"type=get&{key.name}={stored_value(key)}&include={include}")
        assert status == 400 and "include" in body["details"]


@pytest.mark.parametrize("key", KEYS, ids=lambda key: key.name)
def test_the_published_schema_validates_every_answer(shop, key):
    """200s, 404s and 400s, through the WSGI application Gunicorn serves."""
    operation = schema["/api/run-query/"]["GET"]
    examples = [*queries(key), f"type=get&{key.name}={ABSENT[key.value.python]}"]
    for query in [*examples, f"type=get&{key.name}=x"]:
        params = dict(pair.split("=") for pair in query.split("&"))
        case = operation.Case(query=params)
        response = case.call()
        assert response.status_code in (200, 400, 404)
        case.validate_response(response)


@pytest.mark.parametrize("key", KEYS, ids=lambda key: key.name)
def test_the_hot_path_answers_as_django_does(shop, key):
    """Same status, headers and body (but ``elapsed_ms``) as Django's full cycle."""
    fast = FastPathHandler()
    for query in queries(key):
        answer = call(fast, environ(query))
        assert answer == call(WSGIHandler(), environ(query))
        assert answer[0] == "200 OK"


money = st.decimals(
    min_value=Decimal("-999999999999.99"),
    max_value=Decimal("999999999999.99"),
    places=2,
    allow_nan=False,
    allow_infinity=False,
)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    name=st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=200),
    organization_id=st.none() | st.integers(1, MAX_ID),
    credit_limit=money,
    segment_discount=st.decimals(min_value=0, max_value=100, places=2),
    is_active=st.booleans(),
    created_at=st.datetimes(
        min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    ),
)
def test_any_stored_user_reads_the_same_through_a_lookup_and_its_resource(**values):
    """Text, large ids, money, flags and microseconds: the two renderings are equal."""
    user = User.objects.create(email="p@example.com", **values)
    try:
        _, _, lookup = call(FastPathHandler(), environ(f"type=get&user_id={user.id}"))
        assert lookup["results"] == [resource("users", user.id)]
    finally:
        user.delete()


def test_an_output_field_a_lookup_cannot_render_is_refused(monkeypatch):
    """Hiding a field is one edit (`HIDDEN_COLUMNS`); a computed field is an error."""
    monkeypatch.setitem(HIDDEN_COLUMNS, "users", frozenset({"phone", "mobile"}))
    columns = output_columns.__wrapped__("users")
    assert "id" in columns and not {"phone", "mobile"} & set(columns)

    class Hidden(UserOut):
        class Meta(UserOut.Meta):
            fields = columns

    class Computed(UserOut):
        shout = serializers.SerializerMethodField()

        def get_shout(self, user) -> str:
            return user.name.upper()

        class Meta(UserOut.Meta):
            fields = [*columns, "shout"]

    monkeypatch.setattr(outputs, "output_columns", output_columns.__wrapped__)
    monkeypatch.setitem(OUTPUTS, "users", Hidden)
    outputs.check_renders_columns("users")  # the serializer renders what lookups select
    monkeypatch.setitem(OUTPUTS, "users", Computed)
    with pytest.raises(ImproperlyConfigured, match=r"Computed\.shout"):
        outputs.check_renders_columns("users")


@pytest.mark.parametrize("key", [k for k in KEYS if k.query != RANGE], ids=lambda key: key.name)
def test_a_first_rows_lookup_asks_the_database_for_count_rows_only(shop, key):
    """SQL ``LIMIT count``: the database never sends more rows than the answer holds."""
    seen = []

    def wrapper(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    query = f"type=get&{key.name}={stored_value(key)}&count=2"
    with connections[key.store].execute_wrapper(wrapper):
        status, _ = get(query)
    assert status == 200
    assert [sql.rstrip().endswith("LIMIT 2") for sql in seen] == [True]


RANGE_KEYS = [key for key in KEYS if key.query == RANGE]


@pytest.mark.parametrize("key", RANGE_KEYS, ids=lambda key: key.name)
def test_one_id_by_equality_reads_what_its_range_reads(shop, key):
    """A one-id lookup runs as ``id = v`` (`selectors.ONE_ID_QUERIES`), not as the range
    ``v <= id <= v``; both read the same rows, for ids stored, missing and at the edges."""
    stored = list(STORES[key.store].model.objects.values_list("id", flat=True))
    for value in {*stored, 0, 1, 9, 15, 10**6, MAX_ID}:
        one = ONE_ID_QUERIES[key.name].fetch(value)
        assert one == LOOKUP_QUERIES[key.name].fetch(value, value), value
        assert [row["id"] for row in one] == ([value] if value in stored else [])
