"""The insert fast path answers a batch exactly as DRF's view would, and leaves to Django
everything it does not read the same way.

Each test posts through the real handlers in-process (`FastPathHandler`, what Gunicorn
serves, against Django's plain `WSGIHandler`) on the same data. Two answers to two
batches of the same shape are compared with each inserted id counted from the batch's
first: the databases give every batch new ids.
"""

import time
from io import BytesIO

import orjson
import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.db import connections
from hypothesis import given
from hypothesis import strategies as st

from api.domain.limits import MAX_JSON_DEPTH
from api.fastpath import FastPathHandler
from api.fastpath.inserts import records_of_scalars
from api.http.errors import handler500
from api.http.parsers import nesting_depth
from api.http.pinning import PINNING_COOKIE, pinned_by_cookie
from api.models import User
from api.services import batch_insert as batch_insert_module
from api.tests.conftest import ALL_DATABASES, postgresql_only, store_locked
from api.tests.test_access import token
from api.tests.test_fastpath import backend_pid, call, environ, persistent_connections

pytestmark = pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)
INSERT = "type=insert"


def post(body, query: str = INSERT, **extra) -> dict:
    """The environ of a JSON POST of ``body`` (a document, or bytes as they are)."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(raw)), **extra}
    return {**environ(query, method="POST", **headers), "wsgi.input": BytesIO(raw)}


def batch(tag: str) -> dict:
    """Users (new, a duplicate of a stored e-mail, one twice in the batch, invalid ones),
    products, and orders (for a stored user and product, for a missing user)."""
    return {
        "users": [
            {"name": "Ada", "email": f"ada.{tag}@example.com"},
            {"name": "Ada again", "email": f"ADA.{tag}@example.com"},
            {"name": "Taken", "email": "user11@example.com"},
            {"name": "", "email": "not-an-address"},
            {"name": "Extra", "email": f"x.{tag}@example.com", "colour": "red"},
            "not an object",
        ],
        "products": [{"name": f"Chair {tag}", "price": "19.99"}, {"name": "Free", "price": -1}],
        "orders": [
            {"user_id": 10, "product_id": 1, "quantity": 2},
            {"user_id": 999_999, "product_id": 1, "quantity": 1},
        ],
    }


def relative_ids(answer):
    """``answer`` with each inserted id counted from its model's first inserted id."""
    status, headers, body = answer
    if isinstance(body, dict):
        for name in ("users", "products", "orders"):
            ids = [r["id"] for r in body.get(name, []) if r["status"] == "inserted"]
            for record in body.get(name, []):
                if record["status"] == "inserted":
                    record["id"] -= min(ids)
    return status, headers, body


@pytest.mark.parametrize("tokens_required", [False, True], ids=["development", "production"])
def test_a_batch_is_answered_as_drf_answers_it(handler, shop, settings, tokens_required):
    """Same status, headers and per-record results (a 200 and a 207-free mix of inserted
    and rejected records), with nothing of Django's cycle run."""
    settings.API_TOKENS_REQUIRED = tokens_required
    authorization = {"HTTP_AUTHORIZATION": f"Token {token('writer', 'write')}"}
    fast = relative_ids(call(handler, post(batch("fast"), **authorization)))
    django = relative_ids(call(WSGIHandler(), post(batch("django"), **authorization)))
    assert fast == django
    assert fast[0] == "200 OK" and handler.django_calls == []
    assert fast[2]["summary"]["users"] == {"inserted": 1, "rejected": 5, "failed": 0}
    assert (
        User.objects.filter(email__in=["ada.fast@example.com", "ada.django@example.com"]).count()
        == 2
    )


@pytest.mark.parametrize(
    "query,extra,body",
    [
        ("type=insert&count=2", {}, None),  # synthetic records
        ("type=insert&", {}, None),  # not the plain query
        (INSERT, {"HTTP_IDEMPOTENCY_KEY": "k-1"}, None),  # the key's bookkeeping
        (INSERT, {"CONTENT_TYPE": "text/plain"}, None),  # 415
        (INSERT, {"CONTENT_TYPE": "application/json; charset=latin-1"}, None),
        (INSERT, {}, b'{"users": [{"name": "A", '),  # malformed: DRF's 400
        (INSERT, {}, b"{}"),  # empty: the view's 400
        (INSERT, {}, b"[" * 2000 + b"]" * 2000),  # too deep: the parser's 400
        (INSERT, {"CONTENT_LENGTH": ""}, None),  # no length (chunked): Django reads it
    ],
)
def test_what_it_does_not_read_as_django_does_is_left_to_django(handler, shop, query, extra, body):
    """Django answers, with the body the fast path read put back."""
    env = post(body if body is not None else batch("left"), query=query, **extra)
    if "HTTP_IDEMPOTENCY_KEY" in extra:  # the same key with another batch would be a 422
        extra = {**extra, "HTTP_IDEMPOTENCY_KEY": "k-2"}
    same = post(body if body is not None else batch("left2"), query=query, **extra)
    answer = relative_ids(call(handler, env))
    assert handler.django_calls, "the fast path answered"
    assert answer == relative_ids(call(WSGIHandler(), same))


def test_a_body_over_the_limit_is_djangos_413(shop, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    answer = call(FastPathHandler(), post(batch("big")))
    assert answer[0].startswith("413 ")
    assert answer == call(WSGIHandler(), post(batch("big")))
    assert not User.objects.filter(email="ada.big@example.com").exists()


@pytest.mark.parametrize(
    "client,expected",
    [
        (None, "401 Unauthorized"),
        ("read", "403 Forbidden"),
        ("unknown", "401 Unauthorized"),
    ],
)
def test_policies_refuse_as_drf_refuses(handler, shop, settings, client, expected):
    """Production: a write needs a token with the write scope; nothing is stored."""
    settings.API_TOKENS_REQUIRED = True
    headers = {}
    if client == "read":
        headers["HTTP_AUTHORIZATION"] = f"Token {token('reader', 'read')}"
    elif client == "unknown":
        headers["HTTP_AUTHORIZATION"] = "Token " + "0" * 40
    answer = call(handler, post(batch("refused"), **headers))
    assert answer[0] == expected
    assert answer == call(WSGIHandler(), post(batch("refused"), **headers))
    assert handler.django_calls == []
    assert not User.objects.filter(email="ada.refused@example.com").exists()


def test_a_misshapen_batch_is_the_views_400(handler, shop):
    for document in ({"users": {}}, {"people": []}, [1, 2]):
        answer = call(handler, post(document))
        assert answer[0] == "400 Bad Request"
        assert answer == call(WSGIHandler(), post(document))
    assert handler.django_calls == []


def test_a_locked_store_is_a_503_with_retry_after_as_drf_answers_it(
    handler, shop, caplog, monkeypatch, settings
):
    """The users store locked past the deadline fails every users record: 503, logged as
    Django logs it; then, the write breaker open, Django's path is refused alike."""
    users_only = {"users": [{"name": "Ada", "email": "ada.down@example.com"}]}
    with store_locked("users", monkeypatch, settings):
        caplog.clear()
        answer = call(handler, post(users_only))
        assert answer[0] == "503 Service Unavailable", answer
        assert ("Retry-After", "5") in answer[1]
        assert answer[2]["users"][0]["status"] == "failed"
        assert [r.getMessage() for r in caplog.records if r.name == "django.request"] == [
            "Service Unavailable: /api/run-query/"
        ]
        assert answer == call(WSGIHandler(), post(users_only))
    assert handler.django_calls == []
    assert not User.objects.filter(email="ada.down@example.com").exists()


def test_a_bug_is_a_500_answered_once_and_never_run_again(handler, shop, monkeypatch, caplog):
    """A write is never handed to Django after it ran: a retry could store it twice."""
    calls = []

    def broken(**batch):
        calls.append(batch)
        raise RuntimeError("a bug")

    monkeypatch.setattr(batch_insert_module, "batch_insert", broken)
    monkeypatch.setattr("api.fastpath.handler.batch_insert", broken)
    status, _, body = call(handler, post(batch("bug")))
    assert status == "500 Internal Server Error"
    assert body == orjson.loads(handler500(None).content)
    assert len(calls) == 1 and handler.django_calls == []
    assert any(r.exc_info and "a bug" in str(r.exc_info[1]) for r in caplog.records)


def test_a_write_pins_the_written_aliases_as_the_middleware_does(handler, shop, settings):
    """With replicas, the answer carries the pinning cookie Django's path would set,
    naming the aliases the batch wrote: a users-only batch pins users alone."""
    settings.DATABASE_REPLICAS = {
        alias: [f"{alias}_replica1"] for alias in ("users", "products", "orders")
    }
    fast = call(handler, post({"users": [{"name": "A", "email": "a.pin@example.com"}]}))
    django = call(WSGIHandler(), post({"users": [{"name": "B", "email": "b.pin@example.com"}]}))
    assert fast[0] == django[0] == "200 OK"
    assert handler.django_calls == []
    for answer in (fast, django):
        (cookie,) = [value for name, value in answer[1] if name == "Set-Cookie"]
        name, _, rest = cookie.strip().partition("=")
        assert name == PINNING_COOKIE
        assert pinned_by_cookie(rest.split(";")[0]) == {"users"}
        assert "HttpOnly" in rest and "SameSite=Lax" in rest


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["users", "name", "x"]), children, max_size=3)
    ),
    max_leaves=12,
)


BATCH_LIKE = st.dictionaries(
    st.sampled_from(["users", "orders"]),
    st.lists(st.dictionaries(st.sampled_from(["name", "x"]), JSON, max_size=2), max_size=3) | JSON,
    max_size=2,
)


@pytest.mark.django_db(databases=[])
@given(BATCH_LIKE | JSON)
def test_the_depth_shortcut_only_passes_documents_the_parser_would_pass(document):
    """A document of flat records skips the depth count: it is never deeper than 3."""
    if records_of_scalars(document):
        assert nesting_depth(document, MAX_JSON_DEPTH) <= 3


@postgresql_only
@persistent_connections
def test_a_connection_the_server_dropped_between_batches_is_replaced_unseen(handler, shop):
    """The transaction's first statement is the health check: the server ending the
    thread's connection between two batches costs the client nothing, and no round trip
    of Django's ``SELECT 1`` precedes a batch on a live connection."""
    for number in range(2):
        one = {"users": [{"name": "A", "email": f"a{number}.drop@example.com"}]}
        assert call(handler, post(one))[0] == "200 OK"
        dropped = backend_pid("users")
        with connections["orders"].cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [dropped])
        again = {"users": [{"name": "B", "email": f"b{number}.drop@example.com"}]}
        status, _, body = call(handler, post(again))
        assert status == "200 OK", body
        assert backend_pid("users") != dropped
    checks = []
    users = connections["users"]
    is_usable = users.is_usable
    users.is_usable = lambda: checks.append(1) or is_usable()  # Django's SELECT 1
    try:
        one = {"users": [{"name": "C", "email": "c.drop@example.com"}]}
        assert call(handler, post(one))[0] == "200 OK"
    finally:
        del users.is_usable
    assert checks == []
    assert handler.django_calls == []


def test_elapsed_ms_counts_the_batch_as_the_views_does(handler, shop, monkeypatch):
    """``elapsed_ms`` starts before the insert on both paths (a batch that takes 50 ms)."""

    def slow(**batch):
        time.sleep(0.05)
        return batch_insert_module.batch_insert(**batch)

    monkeypatch.setattr("api.fastpath.handler.batch_insert", slow)
    monkeypatch.setattr("api.views.run_query.batch_insert", slow)
    statuses = []

    def start_response(status, headers, exc_info=None):
        statuses.append(status)

    for app, tag in ((handler, "fast"), (WSGIHandler(), "django")):
        chunks = app(post({"users": [{"name": "A", "email": f"{tag}@slow.io"}]}), start_response)
        assert orjson.loads(b"".join(chunks))["elapsed_ms"] >= 50, tag
    assert statuses == ["200 OK", "200 OK"]
