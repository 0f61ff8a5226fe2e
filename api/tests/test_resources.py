"""REST resources: keyset pagination, retrieve, create with the shared validation."""

import orjson
import pytest
from django.db import connections
from django.test import Client
from django.test.utils import CaptureQueriesContext

from api.models import Order, Product, User

reads = pytest.mark.django_db(databases=["users", "products", "orders"])
writes = pytest.mark.django_db(databases=["users", "products", "orders"], transaction=True)


@pytest.fixture
def client() -> Client:
    return Client()


def body(response) -> dict:
    return orjson.loads(response.content)


@reads
def test_keyset_pagination_walks_the_table_exactly_once(client):
    """Following ``next`` visits every row once, in id order, whatever the page size."""
    User.objects.bulk_create(User(name=f"U{i}", email=f"u{i}@example.com") for i in range(137))
    seen, url = [], "/api/users/?page_size=50"
    while url:
        page = body(client.get(url))
        seen += [user["id"] for user in page["results"]]
        url = page["next"]
    assert seen == sorted(User.objects.values_list("id", flat=True))


@reads
def test_pagination_runs_a_keyset_query_not_an_offset(client):
    """A deep page is ``WHERE id > cursor ORDER BY id LIMIT n``: no OFFSET over skipped rows."""
    Product.objects.bulk_create(Product(name=f"P{i}", price=1) for i in range(30))
    first = body(client.get("/api/products/?page_size=10"))
    with CaptureQueriesContext(connections["products"]) as queries:
        client.get(first["next"])
    sql = queries[-1]["sql"].upper()
    assert '"ID" >' in sql and "OFFSET" not in sql


@reads
def test_invalid_cursor_is_400(client):
    response = client.get("/api/orders/?cursor=not-a-cursor")
    assert response.status_code == 400
    assert body(response)["error"].startswith("invalid cursor")


@reads
@pytest.mark.parametrize("path", [
    "/api/users/5/", "/api/products/5/", "/api/orders/5/", "/api/users/5/orders/",
    "/api/users/0/", "/api/users/99999999999999999999/", "/api/users/abc/",
])  # fmt: skip
def test_missing_records_are_404_with_an_error_body(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert body(response)["error"]


@reads
def test_retrieve_and_a_users_orders(client):
    User.objects.create(id=3, name="Ann", email="ann@example.com")
    Order.objects.create(user_id=3, product_id=1, quantity=2, unit_price=5, total=10)
    Order.objects.create(user_id=4, product_id=1, quantity=1, unit_price=5, total=5)
    assert body(client.get("/api/users/3/"))["email"] == "ann@example.com"
    orders = body(client.get("/api/users/3/orders/"))["results"]
    assert [(o["user_id"], o["total"]) for o in orders] == [(3, "10.00")]


def create(client: Client, path: str, record) -> tuple[int, dict]:
    response = client.post(path, orjson.dumps(record), content_type="application/json")
    return response.status_code, body(response)


@writes
def test_create_user_201_then_409_for_the_same_email(client):
    status, user = create(client, "/api/users/", {"name": "Ann", "email": "Ann@Example.com"})
    assert status == 201
    assert user["email"] == "ann@example.com" and User.objects.filter(id=user["id"]).exists()
    status, error = create(client, "/api/users/", {"name": "Other", "email": "ANN@example.com"})
    assert status == 409
    assert error == {"error": "duplicate email", "details": {"email": ["duplicate email"]}}


@writes
def test_create_with_an_existing_id_is_409_and_overwrites_nothing(client):
    Product.objects.create(id=9, name="Chair", price=5)
    status, error = create(client, "/api/products/", {"id": 9, "name": "Other", "price": 1})
    assert status == 409
    assert error["details"] == {"id": ["id already exists"]}
    assert Product.objects.get(id=9).name == "Chair"


@writes
@pytest.mark.parametrize("path,record,field", [
    ("/api/users/", {"name": "", "email": "x@example.com"}, "name"),
    ("/api/users/", {"name": "X", "email": "nope"}, "email"),
    ("/api/products/", {"name": "Lamp", "price": -1}, "price"),
    ("/api/orders/", {"user_id": 1, "product_id": 1, "quantity": 0}, "quantity"),
    ("/api/orders/", {"user_id": 1, "product_id": 1, "quantity": 1}, "non_field_errors"),
    ("/api/users/", ["not", "an", "object"], None),
])  # fmt: skip
def test_invalid_creates_are_400_with_field_errors(client, path, record, field):
    status, error = create(client, path, record)
    assert status == 400
    assert error["error"]
    if field:
        assert field in error["details"]
    assert (User.objects.count(), Product.objects.count(), Order.objects.count()) == (0, 0, 0)


@writes
def test_create_order_computes_its_total(client):
    User.objects.create(id=1, name="U", email="u@example.com")
    Product.objects.create(id=1, name="P", price="2.25")
    status, order = create(client, "/api/orders/", {"user_id": 1, "product_id": 1, "quantity": 4})
    assert status == 201
    assert (order["unit_price"], order["total"], order["status"]) == ("2.25", "9.00", "pending")
