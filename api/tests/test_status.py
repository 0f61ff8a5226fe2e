"""``/api/stats/`` and ``/api/health/``."""

import orjson
import pytest
from django.db import connections
from django.test import Client

from api.models import Order, User
from api.tests.conftest import ALL_DATABASES
from api.tests.test_access import token

db = pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)


@db
def test_stats_reports_rows_and_id_ranges_per_database():
    User.objects.create(id=4, name="A", email="a@example.com")
    User.objects.create(id=9, name="B", email="b@example.com")
    User.objects.create(id=10, name="C", email="c@example.com")
    User.objects.create(id=12, name="D", email="d@example.com")
    body = orjson.loads(Client().get("/api/stats/").content)
    assert body["users"] == {
        "database": "users",
        "rows": 4,
        "min_id": 4,
        "max_id": 12,
        "missing_ids": [[5, 8], [11, 11]],
    }
    assert body["orders"] == {
        "database": "orders",
        "rows": 0,
        "min_id": None,
        "max_id": None,
        "missing_ids": [],
    }
    assert Order.objects.count() == 0


@db
def test_stats_report_no_missing_ids_for_a_dense_table():
    for id_ in (3, 4, 5):
        User.objects.create(id=id_, name="A", email=f"a{id_}@example.com")
    body = orjson.loads(Client().get("/api/stats/").content)
    assert body["users"]["missing_ids"] == [] and body["users"]["rows"] == 3


@db
def test_health_is_200_when_every_database_answers():
    response = Client().get("/api/health/")
    assert response.status_code == 200
    assert orjson.loads(response.content)["databases"] == dict.fromkeys(ALL_DATABASES, "ok")


@db
def test_health_is_503_naming_the_database_that_is_down():
    with connections["products"].cursor() as cursor:
        cursor.execute("ALTER TABLE products RENAME TO products_away")
    try:
        response = Client().get("/api/health/")
    finally:
        with connections["products"].cursor() as cursor:
            cursor.execute("ALTER TABLE products_away RENAME TO products")
    assert response.status_code == 503
    assert response["Retry-After"]
    body = orjson.loads(response.content)
    assert body["error"] == "database unavailable: products"
    assert list(body["details"]) == ["products"]


@db
def test_stats_need_a_read_token_when_tokens_are_required(settings):
    """Production (``API_TOKENS_REQUIRED``): no token is a 401, a token without the read
    scope a 403, with it the stats."""
    settings.API_TOKENS_REQUIRED = True
    assert Client().get("/api/stats/").status_code == 401
    writer = f"Token {token('stats-writer', 'write')}"
    assert Client().get("/api/stats/", HTTP_AUTHORIZATION=writer).status_code == 403
    reader = f"Token {token('stats-reader', 'read')}"
    response = Client().get("/api/stats/", HTTP_AUTHORIZATION=reader)
    assert response.status_code == 200 and set(orjson.loads(response.content)) == {
        "users",
        "products",
        "orders",
    }
