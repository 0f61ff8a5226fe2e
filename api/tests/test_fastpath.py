"""The WSGI handler's lookup fast path answers exactly as Django's request cycle would.

Each test calls the real handlers in-process through WSGI: `FastPathHandler` (what
Gunicorn serves) against Django's plain `WSGIHandler`, on the same data. A spy on
``get_response`` (Django's middleware chain and view) tells which path answered.
Transactional: both handlers close connections after a request, as in production.
"""

import sys
from datetime import UTC, datetime
from io import BytesIO

import hypothesis
import orjson
import psycopg
import pytest
from django.core import signals
from django.core.exceptions import TooManyFieldsSent
from django.core.handlers.wsgi import WSGIHandler
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connections
from django.http import QueryDict
from hypothesis import given
from hypothesis import strategies as st
from psycopg.pq import Format
from rest_framework.authentication import BasicAuthentication
from rest_framework.permissions import IsAuthenticated
from rest_framework.throttling import AnonRateThrottle

from api.db.compiled import loads_utc_as_django, server_binding_cursor
from api.fastpath import FastPathHandler
from api.fastpath.query_string import query_params
from api.http.query_params import as_params
from api.http.renderers import dumps
from api.tests.conftest import ALL_DATABASES, postgresql_only
from api.views.run_query import RunQueryView

URL = "/api/run-query/"
pytestmark = pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)

FOUND = [
    "count=1&type=get&user_id=12",
    "type=get&user_id=10&count=3&include=orders",
    "type=get&email=USER11@Example.com",
    "type=get&organization_id=7&count=2",
    "type=get&product_id=1&count=2",
    "type=get&order_id=2",
    "type=get&user_id=%31%30",  # percent-encoded "10"
]


def environ(query: str, *, method: str = "GET", path: str = URL, **extra) -> dict:
    """A WSGI environ as Gunicorn builds it (the query string decoded as latin-1)."""
    return {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.url_scheme": "http",
        "wsgi.input": BytesIO(b""),
        "wsgi.errors": sys.stderr,
        **extra,
    }


def call(app, env: dict) -> tuple[str, list[tuple[str, str]], dict | bytes]:
    """``(status, sorted headers, body)`` of one WSGI call; JSON without ``elapsed_ms``.

    ``Content-Length``, when sent, is checked against the body and then shown as
    ``"matches"``: ``elapsed_ms`` varies the length between two calls.
    """
    answer = {}

    def start_response(status, headers, exc_info=None):
        answer.update(status=status, headers=headers)

    chunks = app(env, start_response)
    try:
        body = b"".join(chunks)
    finally:
        getattr(chunks, "close", lambda: None)()
    headers = dict(answer["headers"])
    if "Content-Length" in headers:
        assert int(headers["Content-Length"]) == len(body)
        headers["Content-Length"] = "matches"
    if headers.get("Content-Type") == "application/json":
        body = orjson.loads(body)
        body.pop("elapsed_ms", None)
    return answer["status"], sorted(headers.items()), body


@pytest.mark.parametrize("query", FOUND)
def test_a_successful_lookup_is_answered_as_django_answers_it(handler, shop, query):
    """Same status, headers (security headers, Content-Length) and body, without Django."""
    fast = call(handler, environ(query))
    assert fast == call(WSGIHandler(), environ(query))
    assert fast[0] == "200 OK" and fast[2]["results"]
    assert ("Content-Length", "matches") in fast[1]
    assert handler.django_calls == []


@pytest.mark.parametrize(
    "query,status",
    [
        ("type=get&user_id=abc", "400 Bad Request"),
        ("type=get&user_id=1&email=a@b.co", "400 Bad Request"),
        ("type=get&user_id=999", "404 Not Found"),
        ("type=get&email=nobody@example.com&include=orders", "404 Not Found"),
        ("type=insert", "405 Method Not Allowed"),
        ("type=select", "400 Bad Request"),
    ],
)
def test_a_failed_lookup_is_answered_as_drf_answers_it_with_one_query(
    handler, shop, caplog, query, status
):
    """The error envelope, status, headers and log line of DRF's path; the query runs once."""
    queries = []

    def count(execute, sql, params, many, context):
        queries.append(sql)
        return execute(sql, params, many, context)

    with caplog.at_level("WARNING", logger="django.request"):
        with connections["users"].execute_wrapper(count):
            answer = call(handler, environ(query))
        fast_log = [(r.levelname, r.getMessage()) for r in caplog.records]
        caplog.clear()
        assert answer == call(WSGIHandler(), environ(query))
        assert fast_log == [(r.levelname, r.getMessage()) for r in caplog.records]
    assert answer[0] == status and answer[2]["error"]
    assert handler.django_calls == []
    assert len(queries) == (1 if status.startswith("404") else 0)


@pytest.mark.parametrize(
    "query,extra,status",
    [
        ("type=get&user_id=\xff", {}, "400 Bad Request"),  # not UTF-8
        ("type=get&user_id=12", {"HTTP_HOST": "evil.example"}, "400 Bad Request"),
        ("type=get&user_id=12", {"REQUEST_METHOD": "HEAD"}, "200 OK"),
        ("type=get&user_id=12", {"PATH_INFO": "/api/run-query"}, "301 Moved Permanently"),
    ],
)
def test_everything_else_is_left_to_django(handler, shop, query, extra, status):
    """Other hosts, methods, paths and encodings: Django's own answer, logging included."""
    answer = call(handler, environ(query, **extra))
    assert answer == call(WSGIHandler(), environ(query, **extra))
    assert answer[0] == status
    assert status.startswith(("200", "301")) or "error" in answer[2]
    assert len(handler.django_calls) == 1


def test_https_behind_a_proxy_gets_djangos_hsts_header(shop, settings):
    """HTTPS as the server says it (``wsgi.url_scheme``, set from a trusted proxy's
    ``X-Forwarded-Proto``): the HSTS header; a client's own ``X-Forwarded-Proto`` is no HTTPS."""
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    env = {"wsgi.url_scheme": "https"}
    fast = call(FastPathHandler(), environ("type=get&user_id=12", **env))
    assert fast == call(WSGIHandler(), environ("type=get&user_id=12", **env))
    assert ("Strict-Transport-Security", "max-age=3600; includeSubDomains") in fast[1]
    plain = call(FastPathHandler(), environ("type=get&user_id=12"))
    assert "Strict-Transport-Security" not in dict(plain[1])
    claimed = call(
        FastPathHandler(), environ("type=get&user_id=12", HTTP_X_FORWARDED_PROTO="https")
    )
    assert "Strict-Transport-Security" not in dict(claimed[1])


def test_the_https_redirect_is_left_to_django(shop, settings):
    settings.SECURE_SSL_REDIRECT = True
    app = FastPathHandler()
    status, headers, _ = call(app, environ("type=get&user_id=12"))
    assert status == "301 Moved Permanently"
    assert dict(headers)["Location"] == "https://127.0.0.1:8000/api/run-query/?type=get&user_id=12"
    secure = call(app, environ("type=get&user_id=12", **{"wsgi.url_scheme": "https"}))
    assert secure[0] == "200 OK"
    claimed = call(app, environ("type=get&user_id=12", HTTP_X_FORWARDED_PROTO="https"))
    assert claimed[0] == "301 Moved Permanently"


def test_lookup_fast_path_off_leaves_every_lookup_to_django(shop, settings):
    settings.LOOKUP_FAST_PATH = False
    app = FastPathHandler()
    assert not app.lookups
    calls = []
    app.get_response = lambda request, original=app.get_response: (
        calls.append(1) or original(request)
    )
    assert call(app, environ("type=get&user_id=12"))[0] == "200 OK"
    assert calls == [1]


@pytest.mark.parametrize(
    "change,named",
    [
        ({"PREPEND_WWW": True}, "PREPEND_WWW"),
        (
            {"MIDDLEWARE": ["django.middleware.gzip.GZipMiddleware"]},  # added to the list
            "django.middleware.gzip.GZipMiddleware",
        ),
    ],
)
def test_settings_it_cannot_honour_stop_the_server_from_starting(settings, change, named):
    """A system-check error, from ``manage.py check`` and from building the handler."""
    for name, value in change.items():
        setattr(settings, name, getattr(settings, name) + value if name == "MIDDLEWARE" else value)
    with pytest.raises(SystemCheckError, match=named):
        FastPathHandler()
    with pytest.raises(SystemCheckError, match=named):
        call_command("check")
    settings.LOOKUP_FAST_PATH = False
    with pytest.raises(SystemCheckError, match=named):  # the insert fast path still on
        FastPathHandler()
    settings.INSERT_FAST_PATH = False
    app = FastPathHandler()
    assert not (app.lookups or app.inserts)
    call_command("check")


def test_request_signals_are_sent_when_anything_else_listens(shop):
    """An APM or audit hook on the request signals hears fast lookups too."""
    heard = []

    def receiver(sender, **kwargs):
        heard.append(sender)

    assert not FastPathHandler().send_signals  # only Django's own housekeeping
    signals.request_started.connect(receiver)
    signals.request_finished.connect(receiver)
    try:
        app = FastPathHandler()
        assert call(app, environ("type=get&user_id=12"))[0] == "200 OK"
    finally:
        signals.request_started.disconnect(receiver)
        signals.request_finished.disconnect(receiver)
    assert heard == [FastPathHandler, FastPathHandler]


def test_a_connection_past_its_max_age_is_closed_after_the_lookup(shop, monkeypatch):
    """As after any Django request: ``CONN_MAX_AGE=0`` closes it (returns it to the pool)."""
    users = connections["users"]
    if users.settings_dict["CONN_MAX_AGE"] is None:  # SQLite: persistent, kept between lookups
        call(FastPathHandler(), environ("type=get&user_id=12"))
        assert users.connection is not None
        monkeypatch.setitem(users.settings_dict, "CONN_MAX_AGE", 0)
        users.close()
    app = FastPathHandler()
    assert call(app, environ("type=get&user_id=12"))[0] == "200 OK"
    assert users.connection is None


def backend_pid(alias: str) -> int:
    return connections[alias].connection.info.backend_pid


persistent_connections = pytest.mark.skipif(
    "pool" in connections["users"].settings_dict.get("OPTIONS", {}),
    reason="DATABASE_POOL=1: the connection goes back to the pool after each request",
)


@postgresql_only
@persistent_connections
def test_a_connection_the_server_dropped_between_requests_is_replaced_unseen(handler, shop):
    """The lookup is the health check: the server ending the thread's persistent connection
    between two requests (a restart, an idle timeout) costs the client nothing; Django's
    path, whose health check is a ``SELECT 1`` per request, answers the same."""
    for app in (handler, WSGIHandler()):
        assert call(app, environ("type=get&user_id=12"))[0] == "200 OK"
        dropped = backend_pid("users")
        with connections["orders"].cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [dropped])
        status, _, body = call(app, environ("type=get&user_id=12"))
        assert status == "200 OK" and body["results"][0]["id"] == 12
        assert backend_pid("users") != dropped
    assert handler.django_calls == []


@postgresql_only
@persistent_connections
def test_lookups_run_as_prepared_statements_after_the_threshold(handler, shop):
    """psycopg prepares the fast path's statement on the thread's connection after
    ``prepare_threshold`` runs (the connection is kept between requests)."""
    threshold = connections["users"].settings_dict["OPTIONS"]["prepare_threshold"]
    for user in [10, 11, 12, 13, 14, 10, 11][: threshold + 1]:
        assert call(handler, environ(f"type=get&user_id={user}"))[0] == "200 OK"
    with connections["users"].connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [statement for (statement,) in cursor.fetchall()]
    assert any('FROM "users" WHERE "users"."id" = $1' in s for s in prepared), prepared


def test_a_database_error_is_a_503_answered_once(handler, shop, caplog):
    """The 503, ``Retry-After`` and error log of Django's path, without a second query."""
    with connections["users"].cursor() as cursor:
        cursor.execute("ALTER TABLE users RENAME TO users_away")
    try:
        status, headers, body = call(handler, environ("type=get&user_id=12"))
    finally:
        with connections["users"].cursor() as cursor:
            cursor.execute("ALTER TABLE users_away RENAME TO users")
    assert status == "503 Service Unavailable"
    assert dict(headers)["Retry-After"] == "5" and body["error"]
    assert handler.django_calls == []
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(m.startswith("database users failed") for m in logged)
    assert body["details"] == {"store": "users", "failure": "missing"}
    assert "Service Unavailable: /api/run-query/" in logged


def test_query_params_read_like_djangos_querydict():
    params = query_params(environ("type=get&email=a%2Bb%40c.co&x=&x=2&y"))
    assert params == {"type": ["get"], "email": ["a+b@c.co"], "x": ["", "2"], "y": [""]}


@pytest.mark.parametrize(
    "query",
    [
        "count=1&type=get&user_id=12",  # plain: split without unquoting
        "a=1&&b=2&a=3&c&d=&=e&f==g",
        "",
        "email=a%2Bb%40c.co&name=J+Doe",  # unquoted by parse_qsl
        "city=São+Paulo".encode().decode("iso-8859-1"),  # UTF-8 as the server passes it
    ],
)
def test_query_params_equal_a_querydict_of_the_same_query(query):
    raw = query.encode("iso-8859-1")
    assert query_params(environ(query)) == as_params(QueryDict(raw))


@pytest.mark.parametrize("query", ["a=1&b=2&c=3", "a=1&b=%32&c=3"])
def test_query_params_refuse_more_fields_than_allowed(query):
    assert query_params(environ(query), max_fields=3)
    with pytest.raises(TooManyFieldsSent):
        query_params(environ(query), max_fields=2)


def test_an_unexpected_error_is_logged_once_a_minute_and_left_to_django(
    handler, shop, monkeypatch, caplog
):
    """A bug on the fast path is not hidden: one traceback per interval, Django answers."""

    def broken(params):
        raise RuntimeError("a bug")

    monkeypatch.setattr("api.fastpath.handler.lookup_response_body", broken)
    with caplog.at_level("ERROR", logger="api.fastpath.handler"):
        for _ in range(3):
            assert call(handler, environ("type=get&user_id=12"))[0] == "200 OK"
    logged = [r for r in caplog.records if r.name == "api.fastpath.handler"]
    assert len(logged) == 1 and "RuntimeError" in logged[0].getMessage()
    assert logged[0].exc_info[1].args == ("a bug",)
    assert len(handler.django_calls) == 3

    handler.unexpected.interval_s = 0  # the next one after a quiet interval counts the rest
    with caplog.at_level("ERROR", logger="api.fastpath.handler"):
        call(handler, environ("type=get&user_id=12"))
    assert "2 more left out" in caplog.records[-1].getMessage()


def test_an_expected_failure_is_not_logged_by_the_fast_path(handler, shop, caplog):
    with caplog.at_level("DEBUG", logger="api.fastpath"):
        assert call(handler, environ("type=get&user_id=abc"))[0] == "400 Bad Request"
    assert not [r for r in caplog.records if r.name.startswith("api.fastpath")]


@pytest.mark.parametrize(
    "policy,value,named",
    [
        ("permission_classes", [IsAuthenticated], "IsAuthenticated"),
        ("authentication_classes", [BasicAuthentication], "BasicAuthentication"),
        ("throttle_classes", [AnonRateThrottle], "AnonRateThrottle"),
    ],
)
def test_a_drf_policy_the_fast_path_does_not_apply_stops_it_and_django_applies_it(
    shop, settings, monkeypatch, policy, value, named
):
    """Lookups go through DRF's ``initial()``: the view's policies decide on Django's path."""
    monkeypatch.setattr(RunQueryView, policy, value)
    with pytest.raises(SystemCheckError, match=named):
        FastPathHandler()
    settings.LOOKUP_FAST_PATH = settings.INSERT_FAST_PATH = False
    app = FastPathHandler()
    lookup = environ("type=get&user_id=12")
    if policy == "throttle_classes":
        monkeypatch.setattr(AnonRateThrottle, "THROTTLE_RATES", {"anon": "1/min"})
        monkeypatch.setattr(AnonRateThrottle, "get_ident", lambda self, request: "one-client")
        assert call(app, lookup)[0] == "200 OK"
        assert call(app, lookup)[0] == "429 Too Many Requests"
    elif policy == "authentication_classes":  # no credentials: anonymous; bad ones: 401
        assert call(app, lookup)[0] == "200 OK"
        bad = environ("type=get&user_id=12", HTTP_AUTHORIZATION="Basic !!!")
        assert call(app, bad)[0] == "401 Unauthorized"
    else:  # no credentials, and the view authenticates by token: a 401 challenge
        assert call(app, lookup)[0] == "401 Unauthorized"


@postgresql_only
@hypothesis.settings(max_examples=200, deadline=None)
@given(
    moment=st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    )
)
def test_the_fast_path_cursor_loads_timestamps_as_djangos_cursor(moment):
    """psycopg's own ``timestamptz`` loader on the fast path's cursor (`loads_utc_as_django`)
    gives what Django's loader gives: equal values with the same ``tzinfo`` object, so
    the bodies render alike."""
    connection = connections["users"]
    connection.ensure_connection()
    assert loads_utc_as_django(psycopg.Cursor(connection.connection))  # Django's loader
    fast = server_binding_cursor("users", connection.connection)
    loader = fast.adapters.get_loader(fast.adapters.types["timestamptz"].oid, Format.TEXT)
    assert not hasattr(loader, "timezone")  # psycopg's, not Django's subclass
    query = "SELECT %s::timestamptz"
    with connection.cursor() as cursor:
        cursor.execute(query, [moment])
        (djangos,) = cursor.fetchone()
    (ours,) = fast.execute(query, [moment]).fetchone()
    assert ours == djangos == moment
    assert ours.tzinfo is djangos.tzinfo
    assert dumps(ours) == dumps(djangos)
