"""``/run/``: a GET shows counts and never writes; the CSRF-protected POST runs the batch."""

import re

import pytest
from django.db import connections
from django.test import Client

from api.selectors import row_counts
from api.tests.conftest import ALL_DATABASES

db = pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)


@pytest.fixture
def browser() -> Client:
    return Client(enforce_csrf_checks=True)


def csrf_token(page: str) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)


@db
def test_get_shows_counts_and_a_button_and_writes_nothing(browser):
    """The page renders the row counts and a POST form; loading it twice stores nothing."""
    for _ in range(2):
        response = browser.get("/run/")
        assert response.status_code == 200
    page = response.content.decode()
    assert '<form method="post">' in page and "<button" in page
    assert re.search(r'<td class="num">0</td>.*<td class="num">0</td>', page, re.S)
    assert row_counts() == {"users": 0, "products": 0, "orders": 0}


@db
def test_post_without_csrf_token_is_refused(browser):
    """A cross-site POST gets 403 and nothing is inserted."""
    assert browser.post("/run/").status_code == 403
    assert row_counts() == {"users": 0, "products": 0, "orders": 0}


@db
def test_post_runs_the_assignment_and_shows_each_record(browser):
    """The button's POST stores 8/9/7 and shows every record's outcome in a table."""
    token = csrf_token(browser.get("/run/").content.decode())
    response = browser.post("/run/", {"csrfmiddlewaretoken": token})
    assert response.status_code == 200
    page = response.content.decode()
    assert row_counts() == {"users": 8, "products": 9, "orders": 7}
    for name in ("users", "products", "orders"):
        assert f'id="results-{name}"' in page
    assert page.count('<tr class="inserted">') == 8 + 9 + 7
    assert page.count('<tr class="rejected">') == 2 + 1 + 3
    for reason in (
        "duplicate email",
        "name is blank",
        "price is negative",
        "quantity must be &gt; 0",
    ):
        assert reason in page
    assert re.search(r'<td class="num">8</td><td class="num">9</td><td class="num">7</td>', page)


@db
def test_page_reports_an_unmigrated_database_as_503(browser):
    """A missing table is a clear 503 page with Retry-After, not a crash."""
    with connections["orders"].cursor() as cursor:
        cursor.execute("ALTER TABLE orders RENAME TO orders_away")
    try:
        response = browser.get("/run/")
    finally:
        with connections["orders"].cursor() as cursor:
            cursor.execute("ALTER TABLE orders_away RENAME TO orders")
    assert response.status_code == 503
    assert response["Retry-After"]
    assert "database is unavailable" in response.content.decode()
