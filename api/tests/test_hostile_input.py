"""No input makes a 500 and no accepted request damages the service.

Each reported case is a regression test; each class of input behind them (ids and counts,
opaque cursors, nested bodies, any query parameter, any body field) is a property test
with Hypothesis, through Django's full request cycle with exceptions raised, so a 500
fails the test with its traceback.
"""

import json
import logging
import os
import string
import subprocess
import sys
import time
from base64 import b64encode
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest
from django.conf import settings as settings_module
from django.db import connections, models
from django.test import Client
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.domain.limits import (
    AUTOMATIC_ID_ROOM,
    MAX_EXPLICIT_ID,
    MAX_ID,
    MAX_INCLUDED_ORDERS,
    MAX_JSON_DEPTH,
    MAX_LOOKUP_COUNT,
    MAX_RESPONSE_BYTES,
)
from api.domain.lookup_keys import LOOKUP_KEYS
from api.domain.validation import OrderInput, ProductInput, UserInput
from api.http.parsers import nesting_depth
from api.http.renderers import dumps
from api.models import Order, Product, User
from api.tests.conftest import ALL_DATABASES
from data_project.logs import OncePerInterval, OneLineForBadRequests

pytestmark = pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)
URL = "/api/run-query/"
FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def client() -> Client:
    return Client(raise_request_exception=True)  # a 500 raises here, with its traceback


def deep(levels: int) -> str:
    return "[" * levels + "1" + "]" * levels


@pytest.mark.parametrize(
    "url,status",
    [
        (f"{URL}?type=get&user_id={MAX_ID}", 404),
        (f"{URL}?type=get&user_id={MAX_ID - 10}&count=1000", 404),  # value + count overflows
        (f"{URL}?type=get&user_id={MAX_ID + 1}", 400),
        ("/api/users/?cursor=cD1hYmM%3D", 400),  # "p=abc": a position that is not an id
        (f"/api/users/?cursor={b64encode(f'p={MAX_ID + 1}'.encode()).decode()}", 400),
        ("/api/users/?cursor=%25%25%25", 400),  # not base64 (DRF's decoder skipped it)
        ("/api/users/?cursor=eD0x", 400),  # "x=1": an unknown token
        ("/api/users/?cursor=cj0x&cursor=cj0x", 400),
        ("/api/users/?cursor=cj0xJnA9MTA%3D", 200),  # "r=1&p=10", as DRF encodes it
    ],
)
def test_reported_requests_are_4xx_not_500(client, shop, url, status):
    response = client.get(url)
    assert response.status_code == status, response.content
    assert status == 200 or orjson.loads(response.content)["error"]


@pytest.mark.parametrize(
    "path,body",
    [
        (f"{URL}?type=insert", f'{{"products": [{{"name": "x", "price": {deep(1000)}}}]}}'),
        ("/api/products/", f'{{"name": "x", "price": {deep(1000)}}}'),
        ("/api/users/", f'{{"name": "x", "email": "x@x.io", "city": {deep(MAX_JSON_DEPTH)}}}'),
    ],
)
def test_a_deeply_nested_body_is_400_before_any_field_sees_it(client, path, body):
    response = client.post(path, body, content_type="application/json")
    assert response.status_code == 400
    assert "nested deeper" in orjson.loads(response.content)["error"]
    assert User.objects.count() == Product.objects.count() == 0


@pytest.mark.django_db(databases=ALL_DATABASES, transaction=True, reset_sequences=True)
@pytest.mark.parametrize("path", ["/api/users/", f"{URL}?type=insert"])
def test_automatic_ids_keep_room_after_the_largest_explicit_id(client, path):
    """The largest id a client may give leaves 2**62 automatic ids, on both backends."""
    for id_, status in [(MAX_ID, 400), (MAX_EXPLICIT_ID + 1, 400), (MAX_EXPLICIT_ID, 201)]:
        record = {"id": id_, "name": "x", "email": f"{id_}@example.com"}
        body = record if path == "/api/users/" else {"users": [record]}
        response = client.post(path, orjson.dumps(body), content_type="application/json")
        expected = status if path == "/api/users/" else 200
        assert response.status_code == expected, response.content
    response = client.post(
        "/api/users/", orjson.dumps({"name": "y", "email": "y@example.com"}), "application/json"
    )
    assert response.status_code == 201
    assert MAX_ID - orjson.loads(response.content)["id"] + 1 >= AUTOMATIC_ID_ROOM


def test_the_assignments_explicit_ids_still_work_after_the_largest_one(client, assignment):
    client.post(
        "/api/users/",
        orjson.dumps({"id": MAX_EXPLICIT_ID, "name": "x", "email": "x@x.io"}),
        "application/json",
    )
    response = client.post(f"{URL}?type=insert", orjson.dumps(assignment), "application/json")
    assert response.status_code == 200
    summary = orjson.loads(response.content)["summary"]
    assert [summary[m]["inserted"] for m in ("users", "products", "orders")] == [8, 9, 7]


@given(
    document=st.recursive(
        st.none() | st.integers(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
        max_leaves=30,
    )
)
def test_nesting_depth_counts_containers(document):
    def depth(value) -> int:
        if isinstance(value, dict):
            value = list(value.values())
        if not isinstance(value, list):
            return 0
        return 1 + max(map(depth, value), default=0)

    assert nesting_depth(document, 100) == depth(document)


# Query values: digits of every length (ids past 64 bits), signs, text, encodings.
query_values = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.text(string.digits, max_size=25),
    st.text(max_size=30),
    st.sampled_from(["", "orders", "invoices", "get", "insert", "user1@example.com"]),
)
query_keys = st.sampled_from(["type", "count", "include", "cursor", "page_size", "x", *LOOKUP_KEYS])


@FUZZ
@given(params=st.lists(st.tuples(query_keys, query_values), max_size=5))
def test_any_query_to_any_reading_endpoint_is_answered_without_a_500(client, shop, params):
    for path in (URL, "/api/users/", "/api/orders/", "/api/users/10/orders/"):
        response = client.get(path, data=[("type", "get"), *params] if path == URL else params)
        assert response.status_code in (200, 400, 404, 405), response.content


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
# Every field each kind of record takes (and one it does not), from the input serializers.
FIELDS = {
    model: [*serializer().fields, "unknown"]
    for model, serializer in (
        ("users", UserInput),
        ("products", ProductInput),
        ("orders", OrderInput),
    )
}


@FUZZ
@given(
    model=st.sampled_from(list(FIELDS)),
    record=st.data(),
)
def test_any_record_is_stored_or_rejected_never_a_500(client, shop, model, record):
    fields = record.draw(st.dictionaries(st.sampled_from(FIELDS[model]), json_values, max_size=8))
    batch = client.post(f"{URL}?type=insert", _json({model: [fields]}), "application/json")
    assert batch.status_code in (200, 400), batch.content
    single = client.post(f"/api/{model}/", _json(fields), "application/json")
    assert single.status_code in (201, 400, 409), single.content


def _json(document) -> bytes:
    """JSON as a client may send it: NaN and huge numbers included (orjson refuses them)."""
    return json.dumps(document).encode()


def test_stats_are_computed_once_per_cache_window(client, shop, settings):
    """Repeated ``/api/stats/`` reads the cache, not every table's whole index."""
    settings.STATS_CACHE_SECONDS = 60
    with CaptureQueriesContext(connections["users"]) as queries:
        first = client.get("/api/stats/")
        second = client.get("/api/stats/")
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    once = len(queries)
    with CaptureQueriesContext(connections["users"]) as again:
        client.get("/api/stats/")
    assert once > 0 and len(again) == 0


def test_the_largest_lookup_answer_stays_within_the_byte_budget():
    """1000 users and 1000 orders with products, every text at its longest: within budget."""

    def longest(model) -> dict:
        row = {}
        for field in model._meta.concrete_fields:
            if getattr(field, "max_length", None):
                row[field.attname] = "\x01" * field.max_length  # JSON writes it as 6 bytes
            elif isinstance(field, models.DecimalField):
                row[field.attname] = Decimal("9" * (field.max_digits - 2) + ".99")
            elif isinstance(field, models.DateTimeField):
                row[field.attname] = datetime(2026, 12, 4, 23, 59, 59, 999999, tzinfo=UTC)
            else:
                row[field.attname] = MAX_ID
        return row

    users = [longest(User) for _ in range(MAX_LOOKUP_COUNT)]
    order = {**longest(Order), "product": longest(Product)}
    users[0]["orders"] = [order] * MAX_INCLUDED_ORDERS
    body = {"type": "get", "model": "users", "key": "user_id", "value": MAX_ID, "results": users}
    size = len(dumps(body))
    assert 0.5 * MAX_RESPONSE_BYTES < size < MAX_RESPONSE_BYTES, size  # a budget, not a guess


FLOOD = """
import sys
from io import BytesIO
from data_project.wsgi import application

many_fields = "&".join(f"f{i}=1" for i in range(1100))
statuses = []
for host, query in [("evil.example", "type=get&product_id=1"), ("localhost", many_fields)] * 50:
    environ = {
        "REQUEST_METHOD": "GET", "PATH_INFO": "/api/run-query/", "QUERY_STRING": query,
        "SERVER_NAME": "localhost", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": host, "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http",
        "wsgi.input": BytesIO(b""), "wsgi.errors": sys.stderr,
    }
    answer = []
    chunks = application(environ, lambda status, headers, exc_info=None: answer.append(status))
    statuses.append((answer[0], b"".join(chunks).startswith(b'{"error"')))
print(sorted(set(statuses)))
"""


def test_a_flood_of_bad_hosts_and_fields_logs_one_line_each(tmp_path):
    """100 requests with a Host not allowed or 1100 query fields, as a client in a loop
    sends them: each a JSON 400, and the log holds one line per kind, no traceback."""
    run = subprocess.run(
        [sys.executable, "-c", FLOOD],
        cwd=settings_module.BASE_DIR,
        env={**os.environ, "DJANGO_ENV": "development", "DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "[('400 Bad Request', True)]"
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len([line for line in lines if "django.security.DisallowedHost" in line]) == 1, lines
    assert len([line for line in lines if "django.security.TooManyFieldsSent" in line]) == 1, lines


def test_a_bad_requests_line_says_how_many_like_it_were_left_out():
    """After a quiet interval the next line of a kind counts those dropped before it;
    other records (a 5xx, any other logger) always pass, tracebacks and all."""
    limiter, formatter = OncePerInterval(interval_s=0.2), OneLineForBadRequests("%(message)s")

    def record(name: str, level: int, message: str, **extra) -> logging.LogRecord:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
        made = logging.LogRecord(name, level, __file__, 1, message, (), exc_info)
        made.__dict__.update(extra)
        return made

    host = [record("django.security.DisallowedHost", logging.ERROR, f"bad {i}") for i in range(5)]
    assert [limiter.filter(r) for r in host] == [True, False, False, False, False]
    assert formatter.format(host[0]) == "bad 0"
    time.sleep(0.25)
    later = record("django.security.DisallowedHost", logging.ERROR, "bad 5")
    assert limiter.filter(later) and formatter.format(later) == "bad 5 (4 more left out)"
    not_found = [record("django.request", logging.WARNING, "Not Found", status_code=404)] * 2
    assert [limiter.filter(r) for r in not_found] == [True, False]
    crash = record("django.request", logging.ERROR, "Internal Server Error", status_code=500)
    assert limiter.filter(crash) and limiter.filter(crash)
    assert "Traceback" in formatter.format(crash)
