"""``/run/``: a GET shows counts and never writes; the CSRF-protected POST runs the batch
and redirects (303) to a GET that shows the result, however often it is reloaded."""

import re
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core import signing
from django.db import connections
from django.test import Client

from api.services.selectors import row_counts
from api.tests.conftest import ALL_DATABASES, locked, sqlite_only
from api.views import run_page
from api.views.run_result import RESULT_SALT

db = pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)
NONE = {"users": 0, "products": 0, "orders": 0}
ASSIGNMENT = {"users": 8, "products": 9, "orders": 7}
MAX_URL = 2000  # what every browser and proxy takes


@pytest.fixture
def browser() -> Client:
    return Client(enforce_csrf_checks=True)


def csrf_token(page: str) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)


def run(browser: Client, **secure) -> tuple:
    """Press the button: the POST's response, and the page its redirect leads to."""
    token = csrf_token(browser.get("/run/", **secure).content.decode())
    posted = browser.post("/run/", {"csrfmiddlewaretoken": token}, **secure)
    if posted.status_code != 303:
        return posted, None
    return posted, browser.get(posted["Location"], **secure)


class Tables(HTMLParser):
    """Each table with an id: its rows, each ``(tr attributes, [(tag, attributes, text)])``."""

    def __init__(self, page: str):
        super().__init__()
        self.tables: dict[str, list] = {}
        self._table = self._cell = None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id"), [])
        elif tag == "tr" and self._table is not None:
            self._table.append((attrs, []))
        elif tag in ("th", "td") and self._table is not None:
            self._cell = [tag, attrs, ""]
            self._table[-1][1].append(self._cell)

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag in ("th", "td"):
            self._cell[2] = self._cell[2].strip()
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[2] += data


def summary(page: str) -> dict[str, dict[str, int]]:
    """The ``#summary`` table's data attributes, per table."""
    rows = Tables(page).tables["summary"][1:]
    return {
        attrs["data-table"]: {
            k: int(attrs[f"data-{k}"]) for k in ("inserted", "rejected", "failed")
        }
        for attrs, _ in rows
    }


def results(page: str) -> dict[str, list]:
    """Per model, the text of each result row's cells."""
    tables = Tables(page).tables
    return {
        name: [[text for _, _, text in cells] for _, cells in tables[f"results-{name}"][1:]]
        for name in ASSIGNMENT
    }


@db
def test_get_shows_counts_and_a_button_and_writes_nothing(browser):
    """The page renders the row counts and a POST form; loading it twice stores nothing."""
    for _ in range(2):
        response = browser.get("/run/")
        assert response.status_code == 200
    page = response.content.decode()
    assert '<form method="post" action="/run/">' in page
    assert '<button type="submit" id="run-batch">' in page
    assert [text for _, _, text in Tables(page).tables["counts"][1][1]] == ["0", "0", "0"]
    assert 'id="summary"' not in page and 'id="results-users"' not in page
    assert row_counts() == NONE


@db
def test_post_without_csrf_token_is_refused(browser):
    """A cross-site POST gets 403 and nothing is inserted."""
    assert browser.post("/run/").status_code == 403
    assert row_counts() == NONE


@db
def test_post_redirects_to_a_get_that_shows_each_record_and_the_summary(browser):
    """The POST stores 8/9/7 and answers 303 to ``/run/?result=``; the GET shows every
    record's outcome and a summary whose numbers are the change in the row counts."""
    posted, shown = run(browser)
    assert posted.status_code == 303
    location = urlsplit(posted["Location"])
    assert location.path == "/run/" and list(parse_qs(location.query)) == ["result"]
    assert len(posted["Location"]) < MAX_URL
    assert row_counts() == ASSIGNMENT
    assert shown.status_code == 200
    page = shown.content.decode()
    assert summary(page) == {
        name: {"inserted": n, "rejected": 10 - n, "failed": 0} for name, n in ASSIGNMENT.items()
    }
    assert "<h3>Users: 8 inserted, 2 rejected, 0 failed</h3>" in page  # insert_data's line
    assert page.count('<tr class="inserted">') == 8 + 9 + 7
    assert page.count('<tr class="rejected">') == 2 + 1 + 3
    assert results(page)["users"][7] == ["8", "8", "rejected", "", "duplicate email"]
    assert results(page)["users"][0] == ["1", "1", "inserted", "1", ""]
    for reason in ("name is blank", "price is negative", "quantity must be &gt; 0"):
        assert reason in page
    assert [text for _, _, text in Tables(page).tables["counts"][1][1]] == ["8", "9", "7"]
    assert 'id="already-stored"' not in page and 'id="failures"' not in page


@db
def test_reloading_the_result_inserts_nothing_and_shows_the_same_result(browser, monkeypatch):
    """The result's GET twice more: the same tables, not one row more, no insert tried."""
    posted, shown = run(browser)
    tables = Tables(shown.content.decode()).tables
    monkeypatch.setattr(run_page, "batch_insert", None)  # calling it would be a TypeError
    for _ in range(2):
        again = browser.get(posted["Location"])
        assert again.status_code == 200
        assert Tables(again.content.decode()).tables == tables
        assert row_counts() == ASSIGNMENT


@db
def test_a_second_run_says_every_record_was_rejected_and_which_are_already_stored(browser):
    """On a rerun nothing is stored; the note says so, and each record whose id is stored
    says it is, with the id it is stored under."""
    run(browser)
    posted, shown = run(browser)
    assert posted.status_code == 303 and len(posted["Location"]) < MAX_URL
    assert row_counts() == ASSIGNMENT
    page = shown.content.decode()
    assert summary(page) == {
        name: {"inserted": 0, "rejected": 10, "failed": 0} for name in ASSIGNMENT
    }
    note = re.search(r'<p class="note" id="already-stored">([^<]+)</p>', page).group(1)
    assert note.startswith(
        "All 30 records were rejected and row counts are unchanged: 24 are already stored"
    )
    assert note.endswith("; the other 6 broke a rule.")
    assert page.count('data-code="already_stored"') == 8 + 9 + 7
    rows = results(page)
    assert rows["users"][0] == [
        "1",
        "1",
        "rejected",
        "1",
        "already stored: id already exists; duplicate email",
    ]
    assert rows["users"][7] == ["8", "8", "rejected", "", "duplicate email"]
    assert rows["orders"][9] == ["10", "10", "rejected", "", "user and product do not exist"]


@db
@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "x" * 5000,
        signing.dumps({"at": 0, "rows": {}}, salt="api.http.pinning", compress=True),
        signing.dumps({"at": 0, "rows": {}}, salt=RESULT_SALT, compress=True),  # not a run
    ],
)
def test_a_result_that_does_not_verify_is_a_400_page_without_a_result(browser, token):
    """An altered, foreign or malformed ``result`` is a 400 page with counts, the button
    and a note, never a 500 and never a result."""
    response = browser.get("/run/", {"result": token})
    assert response.status_code == 400
    page = response.content.decode()
    assert 'id="bad-result"' in page and 'id="run-batch"' in page and 'id="counts"' in page
    assert 'id="summary"' not in page


@db
def test_an_altered_result_is_refused(browser):
    """Changing one character of a real result's token is a 400, not a different result."""
    posted, _ = run(browser)
    token = parse_qs(urlsplit(posted["Location"]).query)["result"][0]
    altered = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    assert browser.get("/run/", {"result": token}).status_code == 200
    assert browser.get("/run/", {"result": altered}).status_code == 400


@db
def test_numeric_columns_have_right_aligned_headers(browser):
    """In every table a column's header is ``num`` (right-aligned) exactly when its cells
    are: headers line up with their numbers."""
    _, shown = run(browser)
    tables = Tables(shown.content.decode()).tables
    assert {"counts", "summary", "results-users", "results-products", "results-orders"} <= set(
        tables
    )
    for table_id, rows in tables.items():
        (_, header), *body = rows
        for column, (_, attrs, text) in enumerate(header):
            header_num = "num" in attrs.get("class", "").split()
            cells_num = {"num" in row[column][1].get("class", "").split() for _, row in body}
            assert cells_num == {header_num}, (table_id, text)


@sqlite_only
@db
def test_a_partial_commit_redirects_and_the_result_says_which_records_failed(browser, monkeypatch):
    """Orders locked: users and products are stored, so the POST still redirects; the
    result says 8 records failed."""
    with locked("orders", monkeypatch):
        posted, shown = run(browser)
    assert posted.status_code == 303
    page = shown.content.decode()
    assert summary(page)["orders"] == {"inserted": 0, "rejected": 2, "failed": 8}
    assert re.search(r'id="failures">8 records failed', page)


@sqlite_only
@db
def test_nothing_stored_because_databases_failed_is_a_503_with_retry_after(browser, monkeypatch):
    """Every database locked: no redirect, a 503 page with ``Retry-After`` and the results
    (a reload of it retries)."""
    with (
        locked("users", monkeypatch),
        locked("products", monkeypatch),
        locked("orders", monkeypatch),
    ):
        posted, shown = run(browser)
    assert posted.status_code == 503 and shown is None
    assert posted["Retry-After"]
    page = posted.content.decode()
    assert 'id="failures">26 records failed' in page
    assert summary(page)["users"] == {"inserted": 0, "rejected": 1, "failed": 9}
    assert row_counts() == NONE


@db
def test_the_page_works_with_production_settings(browser, settings):
    """``DJANGO_ENV=production`` with ``RUN_PAGE_ENABLED=1``: DEBUG off, HTTPS only, secure
    CSRF cookie; the page needs nothing from another site (no scripts, styles, fonts)."""
    settings.DEBUG = False
    settings.RUN_PAGE_ENABLED = True
    settings.SECURE_SSL_REDIRECT = True
    settings.CSRF_COOKIE_SECURE = True
    assert browser.get("/run/").status_code == 301  # to https
    https = {"secure": True, "headers": {"referer": "https://testserver/run/"}}
    posted, shown = run(browser, **https)
    assert posted.status_code == 303 and shown.status_code == 200
    assert summary(shown.content.decode())["users"]["inserted"] == 8
    page = shown.content.decode()
    # Nothing from elsewhere: no script, and stylesheet and icon from this server.
    assert not re.search(r"<script|@import|url\(|https?://", page)
    assert re.findall(r'href="([^"]*)"', page) and all(
        href.startswith("/") for href in re.findall(r'(?:href|src)="([^"]*)"', page)
    )


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
