"""``/api/run-query/``: lookups, inserts, and a clear 4xx for every malformed request."""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import orjson
import pytest
from django.core.exceptions import SynchronousOnlyOperation
from django.db import connections
from django.test import Client
from django.test.utils import CaptureQueriesContext

from api.domain.lookup_keys import LOOKUP_KEYS
from api.http.query_params import Lookup
from api.models import Order, Product, User
from api.services.selectors import lookup_rows
from api.tests.conftest import ALL_DATABASES, ROUTED, locked, sqlite_only

URL = "/api/run-query/"
reads = pytest.mark.django_db(databases=ROUTED)
writes = pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)


@pytest.fixture
def client() -> Client:
    return Client()


def get(client: Client, query: str):
    response = client.get(f"{URL}?{query}")
    return response, orjson.loads(response.content)


@reads
def test_lookup_by_user_id_returns_that_user(client, shop):
    """The seed's own call works as is and returns exactly the user asked for."""
    response, body = get(client, "count=1&type=get&user_id=12")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert [u["id"] for u in body["results"]] == [12]
    user = body["results"][0]
    assert (user["email"], user["organization_id"], user["credit_limit"]) == (
        "user12@example.com",
        7,
        "0.00",
    )
    assert body["model"] == "users" and "error" not in body
    assert body["elapsed_ms"] >= 0


@reads
def test_count_reads_the_id_range_upward(client, shop):
    """``count=K`` returns the users with ids in [N, N+K); a missing id is simply absent."""
    _, body = get(client, "type=get&user_id=13&count=5")
    assert [u["id"] for u in body["results"]] == [13, 14]


@reads
def test_an_execute_wrapper_sees_the_lookup_query(client, shop):
    """Instrumentation hooked on the connection sees the compiled lookup statement."""
    seen = []

    def wrapper(execute, sql, params, many, context):
        seen.append((sql, list(params)))
        return execute(sql, params, many, context)

    with connections["users"].execute_wrapper(wrapper):
        _, body = get(client, "type=get&user_id=12&count=2")
    assert [u["id"] for u in body["results"]] == [12, 13]
    assert [params for sql, params in seen if "users" in sql] == [[12, 13]]  # id <= 13


@reads
def test_a_lookup_from_async_code_is_refused_as_django_refuses_queries(client, shop):
    """Inside an event loop a lookup raises `SynchronousOnlyOperation`, connected or not."""
    get(client, "type=get&user_id=12")  # the connection is open: only the guard can refuse

    async def lookup():
        return lookup_rows(Lookup(LOOKUP_KEYS["user_id"], 12))

    with pytest.raises(SynchronousOnlyOperation):
        asyncio.run(lookup())


@reads
def test_include_orders_joins_three_databases_with_one_query_each(client, shop):
    """Each user carries its orders, each order its product; one query per database."""
    with (
        CaptureQueriesContext(connections["users"]) as users_q,
        CaptureQueriesContext(connections["orders"]) as orders_q,
        CaptureQueriesContext(connections["products"]) as products_q,
    ):
        response, body = get(client, "type=get&user_id=10&count=3&include=orders")
    assert response.status_code == 200
    by_user = {u["id"]: u["orders"] for u in body["results"]}
    assert [o["id"] for o in by_user[10]] == [1, 2]
    assert [o["id"] for o in by_user[11]] == [3]
    assert by_user[12] == []
    assert by_user[10][0]["product"]["name"] == "Lamp"
    assert by_user[11][0]["total"] == "50.00"
    assert (len(users_q), len(orders_q), len(products_q)) == (1, 1, 1)


@reads
@pytest.mark.parametrize("query", [
    "type=get&user_id=999",
    "type=get&email=nobody@example.com",
    "type=get&organization_id=999",
    "type=get&order_id=999&count=5",
])  # fmt: skip
def test_nothing_found_is_404_with_an_error_body(client, shop, query):
    response, body = get(client, query)
    assert response.status_code == 404
    assert body["error"].startswith("no ") and body["details"] == {}


@reads
@pytest.mark.parametrize("query,names", [
    ("", "type"),
    ("type=select&user_id=1", "type"),
    ("type=get", "key"),
    ("type=get&user_id=abc", "user_id"),
    ("type=get&user_id=-1", "user_id"),
    ("type=get&user_id=0", "user_id"),
    ("type=get&user_id=1.5", "user_id"),
    ("type=get&user_id=%2B1", "user_id"),  # int() takes a sign,
    ("type=get&user_id=%201", "user_id"),  # spaces,
    ("type=get&user_id=1_0", "user_id"),  # underscores
    ("type=get&user_id=%D9%A1", "user_id"),  # and other scripts' digits (Arabic-Indic 1)
    ("type=get&user_id=00000000000000000001", "user_id"),  # 20 digits
    ("type=get&user_id=99999999999999999999", "user_id"),
    ("type=get&user_id=", "user_id"),
    ("type=get&user_id=1&count=0", "count"),
    ("type=get&user_id=1&count=1001", "count"),
    ("type=get&user_id=1&count=many", "count"),
    ("type=get&user_id=1&colour=red", "colour"),
    ("type=get&user_id=1&include=invoices", "include"),
    ("type=get&product_id=1&include=orders", "include"),
    ("type=get&user_id=1&email=a@example.com", "key"),
    ("type=get&user_id=1&user_id=2", "user_id"),
    ("type=get&type=get&user_id=1", "type"),
    ("type=get&email=not-an-email", "email"),
])  # fmt: skip
def test_malformed_lookups_are_400_naming_the_parameter(client, shop, query, names):
    response, body = get(client, query)
    assert response.status_code == 400
    assert body["error"]
    assert names in body["details"]


@reads
def test_get_never_writes(client):
    """GET with type=insert is 405 naming POST, and stores nothing."""
    response = client.get(f"{URL}?type=insert&count=5")
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert orjson.loads(response.content)["error"]
    assert User.objects.count() == 0


def post(client: Client, body, query: str = "type=insert", **kwargs):
    data = body if isinstance(body, bytes | str) else orjson.dumps(body)
    kwargs.setdefault("content_type", "application/json")
    # Django's test client drops the Content-Type of an empty body; clients do not.
    kwargs.setdefault("CONTENT_TYPE", kwargs["content_type"])
    response = client.post(f"{URL}?{query}", data=data, **kwargs)
    return response, orjson.loads(response.content)


@writes
def test_post_type_get_is_405_naming_get(client):
    response, _ = post(client, {}, query="type=get&user_id=1")
    assert response.status_code == 405
    assert response["Allow"] == "GET"


@writes
def test_assignment_through_post_stores_8_9_7(client, assignment, assignment_expected):
    """Per-record results and per-model counts; rejected records carry their reason."""
    response, body = post(client, assignment)
    assert response.status_code == 200
    assert body["summary"] == {
        "users": {"inserted": 8, "rejected": 2, "failed": 0},
        "products": {"inserted": 9, "rejected": 1, "failed": 0},
        "orders": {"inserted": 7, "rejected": 3, "failed": 0},
    }
    rejected = {str(r["id"]): r["reason"] for r in body["orders"] if r["status"] == "rejected"}
    assert rejected == assignment_expected["orders"]["rejected"]
    assert body["users"][7]["errors"] == {"email": ["duplicate email"]}
    assert (User.objects.count(), Product.objects.count(), Order.objects.count()) == (8, 9, 7)


@writes
def test_synthetic_insert_stores_count_valid_records_per_model(client):
    """``count=N`` with no body inserts N users, N products and N orders that reference them."""
    response, body = post(client, b"", query="type=insert&count=7")
    assert response.status_code == 200
    assert {name: c["inserted"] for name, c in body["summary"].items()} == {
        "users": 7,
        "products": 7,
        "orders": 7,
    }
    user_ids = set(User.objects.values_list("id", flat=True))
    assert set(Order.objects.values_list("user_id", flat=True)) <= user_ids


@writes
@pytest.mark.parametrize("body,content_type,status", [
    (b"{not json", "application/json", 400),
    (b"[1, 2]", "application/json", 400),
    (b'"users"', "application/json", 400),
    (b'{"users": {"name": "x"}}', "application/json", 400),
    (b'{"customers": []}', "application/json", 400),
    (b"", "application/json", 400),
    (b"{}", "application/json", 400),
    (b"[" * 5000 + b"]" * 5000, "application/json", 400),
    (b'{"users": [{"name": "A", "email": "a@b.co", "stock": NaN}]}', "application/json", 400),
    (b"\xff\xfe{}", "application/json", 400),
    (b"name=x", "application/x-www-form-urlencoded", 415),
    (b"<users/>", "application/xml", 415),
])  # fmt: skip
def test_malformed_bodies_are_4xx_and_store_nothing(client, body, content_type, status):
    response, payload = post(client, body, content_type=content_type)
    assert response.status_code == status
    assert payload["error"]
    assert User.objects.count() == 0


@writes
def test_oversize_batches_and_bodies_are_refused(client, settings):
    """More than 1000 records is a 400; a body over the upload limit is a 413."""
    users = [{"name": f"U{i}", "email": f"u{i}@example.com"} for i in range(1001)]
    response, body = post(client, {"users": users})
    assert response.status_code == 400
    assert "at most 1000" in body["error"]

    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response, body = post(client, {"users": users[:100]})
    assert response.status_code == 413
    assert User.objects.count() == 0


@writes
@pytest.mark.parametrize(
    "query",
    [
        "type=insert&count=0",
        "type=insert&count=101",
        "type=insert&count=x",
        "type=insert&user_id=1",
    ],
)
def test_bad_insert_parameters_are_400(client, query):
    response, body = post(client, b"", query=query)
    assert response.status_code == 400
    assert body["details"]


@writes
def test_count_and_body_together_are_400(client):
    response, _ = post(client, {"users": []}, query="type=insert&count=2")
    assert response.status_code == 400


@sqlite_only
@writes
def test_a_locked_database_with_others_stored_is_a_207_partial_commit(
    client, assignment, monkeypatch
):
    """Products were stored while users failed: never a 503, which says nothing happened."""
    with locked("users", monkeypatch):
        response, body = post(client, assignment)
    assert response.status_code == 207
    assert int(response["Retry-After"]) > 0
    assert body["summary"]["users"]["failed"] == 9
    assert body["summary"]["products"]["inserted"] == Product.objects.count() == 9
    assert all(r["status"] == "failed" for r in body["orders"] if r["status"] != "rejected")
    assert "locked" in body["users"][0]["reason"] and "error" not in body


@sqlite_only
@writes
def test_a_locked_database_with_nothing_stored_is_a_503(client, monkeypatch):
    users = [{"name": "A", "email": "a@example.com"}, {"name": "B", "email": "b@example.com"}]
    with locked("users", monkeypatch):
        response, body = post(client, {"users": users})
    assert response.status_code == 503
    assert int(response["Retry-After"]) > 0
    assert body["summary"]["users"] == {"inserted": 0, "rejected": 0, "failed": 2}
    assert User.objects.count() == 0


@writes
def test_a_missing_table_on_lookup_is_503_not_500(client):
    with connections["users"].cursor() as cursor:
        cursor.execute("ALTER TABLE users RENAME TO users_away")
    try:
        response, body = get(client, "type=get&user_id=1")
    finally:
        with connections["users"].cursor() as cursor:
            cursor.execute("ALTER TABLE users_away RENAME TO users")
    assert response.status_code == 503
    assert response["Retry-After"]
    assert body["details"] == {"store": "users", "failure": "missing"}
    assert "no such table" not in response.content.decode()  # the driver's text is logged


@writes
def test_concurrent_posts_lose_nothing_and_duplicate_nothing():
    """16 clients post overlapping batches at once: every e-mail stored exactly once."""
    threads, per_thread = 16, 10
    start = threading.Barrier(threads)

    def client_run(t: int) -> dict:
        users = [
            {"name": f"T{t} U{i}", "email": f"shared{(t * per_thread + i) % 80}@example.com"}
            for i in range(per_thread)
        ]
        start.wait()
        response, body = post(Client(), {"users": users, "products": [{"name": "P", "price": t}]})
        assert response.status_code == 200
        return body

    with ThreadPoolExecutor(threads) as pool:
        bodies = list(pool.map(client_run, range(threads)))
    inserted = [r["id"] for b in bodies for r in b["users"] if r["status"] == "inserted"]
    assert len(inserted) == len(set(inserted)) == User.objects.count() == 80
    assert sum(b["summary"]["users"]["rejected"] for b in bodies) == threads * per_thread - 80
    assert Product.objects.count() == threads


@writes
def test_include_orders_is_capped_per_user_with_the_total_and_the_next_page(client, monkeypatch):
    """A user with more orders than the cap: the first ones, the total, where to page on."""
    monkeypatch.setattr("api.services.selectors.MAX_ORDERS_PER_USER", 3)
    User.objects.create(id=1, name="Big", email="big@example.com")
    User.objects.create(id=2, name="Small", email="small@example.com")
    Product.objects.create(id=1, name="Lamp", price=Decimal("1.00"))
    for id_, user in [*((i, 1) for i in range(1, 8)), (8, 2)]:
        Order.objects.create(id=id_, user_id=user, product_id=1, quantity=1, unit_price=1, total=1)
    _, body = get(client, "type=get&user_id=1&count=2&include=orders")
    big, small = body["results"]
    assert [o["id"] for o in big["orders"]] == [1, 2, 3] and big["orders_total"] == 7
    assert [o["id"] for o in small["orders"]] == [8] and small["orders_total"] == 1
    assert small["orders_next"] is None
    page = orjson.loads(client.get(big["orders_next"]).content)
    assert [o["id"] for o in page["results"]] == [4, 5, 6, 7]
    _, alone = get(client, "type=get&user_id=1&include=orders")  # one user: another query
    assert alone["results"] == [big]


def test_included_orders_stay_within_the_budget_for_any_number_of_users():
    from api.domain.limits import MAX_INCLUDED_ORDERS
    from api.services.selectors import orders_per_user

    for users in (1, 2, 9, 10, 11, 999, 1000):
        assert 1 <= orders_per_user(users) * users <= max(MAX_INCLUDED_ORDERS, users)
