"""`FastPathHandler`: Django's WSGI handler, answering lookups and insert batches itself.

The contract is in `api.fastpath`'s docstring; this module keeps it: what the handler
reproduces of Django's request cycle for a ``GET /api/run-query/`` lookup and a
``POST /api/run-query/?type=insert`` batch, and what it hands back to Django.
"""

import logging
import time
from http.client import responses
from time import perf_counter

from django.conf import settings
from django.core import signals
from django.core.cache import close_caches
from django.core.exceptions import DisallowedHost, TooManyFieldsSent
from django.core.handlers.base import reset_urlconf
from django.core.handlers.exception import response_for_exception
from django.core.handlers.wsgi import WSGIHandler
from django.core.management.base import SystemCheckError
from django.db import DatabaseError, close_old_connections, connections, reset_queries
from django.http import HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware
from django.urls import resolve, reverse
from django.utils.log import log_response
from rest_framework.exceptions import APIException

from api.db.compiled import thread_connection
from api.db.routers import DEFAULT_ALIAS, PINNED_ALIASES, replicas_by_alias
from api.domain.batches import InvalidBatch, parse_batch
from api.fastpath.checks import fast_path_errors, lookup_view_class
from api.fastpath.inserts import insert_document
from api.fastpath.policies import ViewPolicies
from api.fastpath.query_string import query_params
from api.http.errors import BadRequest, as_api_exception, error_response_parts
from api.http.inserts import batch_answer
from api.http.lookups import lookup_response_body
from api.http.pinning import pin_response, pinned_by_environ
from api.http.query_params import INSERT, key_label
from api.http.renderers import dumps
from api.metrics.wsgi import RequestMetrics, label_request
from api.services.batch_insert import batch_insert

logger = logging.getLogger(__name__)

# Django's own receivers of the request signals: database housekeeping, done here
# instead; closing the caches, which the Redis and database caches (settings.CACHES) do
# not do (BaseCache.close); resetting a per-request URLconf, which a lookup never sets.
DJANGO_RECEIVERS = frozenset(
    map(id, (close_old_connections, reset_queries, close_caches, reset_urlconf))
)
# What Django's get_host() and is_secure() read: their answers depend on nothing else.
CLIENT_KEYS = (
    "HTTP_HOST",
    "SERVER_NAME",
    "SERVER_PORT",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_FORWARDED_PORT",
    "wsgi.url_scheme",
)
MAX_REMEMBERED_CLIENTS = 256  # distinct Host headers are few; a flood of them is not kept
# A lookup that fails with one of these is answered here as DRF's exception handler
# answers it (the error envelope, its status and headers, Django's log line): a bad
# parameter, nothing found, a GET that would write (DRF's exceptions), a database error
# (503). Running the lookup again through Django would cost a second query, or a second
# timeout of a dead server.
ANSWERED = (APIException, DatabaseError)
# A query Django reads differently (not UTF-8, too many fields) is left to Django before
# any query runs. Anything else is a bug: logged here, then answered by Django too.
LEFT_TO_DJANGO = (UnicodeDecodeError, TooManyFieldsSent)
UNEXPECTED_LOG_INTERVAL_S = 60.0
# The query parameters of every insert the fast path answers (`api.fastpath.inserts`
# accepts only ``type=insert``), as the policies read them.
INSERT_PARAMS = {"type": ["insert"]}


def only_djangos_receivers(signal) -> bool:
    """Whether ``signal``'s receivers are all Django's connection housekeeping."""
    return all(lookup_key[0] in DJANGO_RECEIVERS for lookup_key, *_ in signal.receivers)


class UnexpectedErrorLog:
    """Log an unexpected exception with its traceback, at most once per interval per type.

    A bug on the hottest path would otherwise log once per request; the next line after
    a quiet interval says how many were left out. The standard library's logging has no
    rate limit, and one class of a dozen lines is less than a dependency for it.
    """

    def __init__(self, interval_s: float = UNEXPECTED_LOG_INTERVAL_S):
        self.interval_s = interval_s
        self._last: dict[type, tuple[float, int]] = {}  # type -> (logged at, left out since)

    def __call__(self, exc: Exception) -> None:
        now = time.monotonic()
        logged_at, left_out = self._last.get(type(exc), (None, 0))
        if logged_at is not None and now - logged_at < self.interval_s:
            self._last[type(exc)] = (logged_at, left_out + 1)
            return
        self._last[type(exc)] = (now, 0)
        logger.error(
            "lookup fast path: unexpected %s, Django answers instead (%d more left out)",
            type(exc).__name__,
            left_out,
            exc_info=exc,
        )


class FastPathHandler(WSGIHandler):
    """Django's WSGI handler; ``GET /api/run-query/`` lookups and
    ``POST /api/run-query/?type=insert`` batches skip its cycle.

    Raises `SystemCheckError` when built with settings it cannot honour
    (`api.fastpath.checks`).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lookups = settings.LOOKUP_FAST_PATH
        self.inserts = settings.INSERT_FAST_PATH
        errors = fast_path_errors()
        if errors:
            raise SystemCheckError("\n".join(f"{e.id}: {e.msg} ({e.hint})" for e in errors))
        self.lookup_path = reverse("run-query")
        self.route = resolve(self.lookup_path).route  # its label in the request metrics
        self.view_class = lookup_view_class()
        self.policies = ViewPolicies(self.view_class)
        self.send_signals = settings.DEBUG or not all(
            only_djangos_receivers(signal)
            for signal in (signals.request_started, signals.request_finished)
        )
        # Lookups and inserts use the routed aliases and their replicas, never ``default``.
        self.housekeeping_aliases = tuple(
            alias
            for alias, database in connections.settings.items()
            if alias != DEFAULT_ALIAS
            and (database["CONN_MAX_AGE"] is not None or database["CONN_HEALTH_CHECKS"])
        )
        self.proxy_header = (settings.SECURE_PROXY_SSL_HEADER or (None,))[0]
        # Read once, as Django's own middleware reads its settings when it is built.
        self.ssl_redirect = settings.SECURE_SSL_REDIRECT
        self.check_user_agent = bool(settings.DISALLOWED_USER_AGENTS)
        self.max_fields = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
        self.max_body_bytes = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        self.key_required = settings.IDEMPOTENCY_KEY_REQUIRED
        self.unexpected = UnexpectedErrorLog()
        # Every request this handler serves is timed here (api.metrics.wsgi), not by a
        # WSGI middleware around it: one call less on every lookup.
        self.metrics = RequestMetrics(settings.STATIC_URL) if settings.METRICS else None
        self._clients: dict[tuple, tuple[bool, bool]] = {}
        self._headers: dict[bool, list[tuple[str, str]]] = {}  # by is_secure()
        self._header_middleware = (
            SecurityMiddleware(lambda request: None),
            XFrameOptionsMiddleware(lambda request: None),
        )

    def __call__(self, environ, start_response):
        started = perf_counter()
        if environ.get("PATH_INFO") != self.lookup_path:
            return self._django(environ, start_response, started)
        method = environ.get("REQUEST_METHOD")
        if method == "GET" and self.lookups:
            answer_of = self._answer
        elif method == "POST" and self.inserts:
            answer_of = self._answer_insert
        else:
            return self._django(environ, start_response, started)
        if self.send_signals:
            signals.request_started.send(sender=self.__class__, environ=environ)
        try:
            answer = answer_of(environ)
        finally:
            if self.send_signals:
                signals.request_finished.send(sender=self.__class__)
            else:
                for alias in self.housekeeping_aliases:
                    thread_connection(alias).close_if_unusable_or_obsolete()
        if answer is None:
            return self._django(environ, start_response, started)
        status, body, headers = answer
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        if self.metrics is not None:
            self.metrics.record(environ, status, started)
        return [body]

    def _django(self, environ, start_response, started: float):
        """Django's handler's answer, recorded in the request metrics."""
        if self.metrics is None:
            return super().__call__(environ, start_response)
        return self.metrics.serve(super().__call__, environ, start_response, started)

    def _answer(self, environ) -> tuple[str, bytes, list[tuple[str, str]]] | None:
        """``(status line, body, headers)`` of a lookup, or None for Django to answer."""
        secure = self._answerable(environ)
        if secure is None:
            return None
        # primary_pinning's scope, entered as api.http.middleware enters it (a lookup writes
        # nothing, so it never sets the pinning cookie)
        scope = PINNED_ALIASES.set(pinned_by_environ(environ))
        try:
            params = query_params(environ, self.max_fields)
            label_request(environ, self.route, key_label(params))
            self.policies.enforce(environ, params)
            body = dumps(lookup_response_body(params))
        except ANSWERED as exc:
            return self._error(environ, secure, exc)
        except LEFT_TO_DJANGO:
            return None
        except Exception as exc:
            self.unexpected(exc)
            return None
        finally:
            PINNED_ALIASES.reset(scope)
        return "200 OK", body, self._response_headers(environ, secure)

    def _answer_insert(self, environ) -> tuple[str, bytes, list[tuple[str, str]]] | None:
        """``(status line, body, headers)`` of an insert batch, or None for Django to answer.

        Everything that sends the request to Django is decided before the policies run
        (`api.fastpath.inserts`); after them the batch is answered here, whatever happens:
        a write is never run twice. A bug is answered as Django answers it (logged, 500).
        """
        secure = self._answerable(environ)
        if secure is None:
            return None
        document = insert_document(environ, self.max_body_bytes, self.key_required)
        if document is None:
            return None
        label_request(environ, self.route, INSERT)
        scope = PINNED_ALIASES.set(pinned_by_environ(environ))
        try:
            self.policies.enforce(environ, INSERT_PARAMS, "POST")
            try:
                batch = parse_batch(document)
            except InvalidBatch as exc:
                raise BadRequest(str(exc), exc.details) from exc
            started = perf_counter()  # elapsed_ms counts the batch, as the view's does
            code, body, extra = batch_answer(batch_insert(**batch), started)
            headers = [*self._response_headers(environ, secure), *extra.items()]
            if replicas_by_alias():
                headers += self._pinning_cookie(environ, PINNED_ALIASES.get())
        except APIException as exc:
            return self._error(environ, secure, exc)
        except Exception as exc:
            return self._crash(environ, exc)
        finally:
            PINNED_ALIASES.reset(scope)
        if code >= 400:  # a 503: every record failed
            self._log(environ, code)
        return f"{code} {responses[code]}", dumps(body), headers

    def _answerable(self, environ) -> bool | None:
        """``is_secure()`` of a request the fast path may answer; None when Django's
        middleware would act on it (a bad host, an HTTPS redirect, a user-agent check)."""
        allowed, secure = self._client(environ)
        if (
            not allowed
            or (self.ssl_redirect and not secure)
            or (self.check_user_agent and "HTTP_USER_AGENT" in environ)
        ):
            return None
        return secure

    def _pinning_cookie(self, environ, pinned: frozenset[str]) -> list[tuple[str, str]]:
        """The ``Set-Cookie`` header `api.http.middleware` adds after a write, if any."""
        probe = HttpResponse()
        pin_response(self.request_class(environ), probe, pinned)
        return [("Set-Cookie", cookie.output(header="")) for cookie in probe.cookies.values()]

    def _crash(self, environ, exc: Exception) -> tuple[str, bytes, list[tuple[str, str]]]:
        """Django's answer to a view that raised ``exc``: its log line and ``handler500``."""
        request = self.request_class(environ)
        response = response_for_exception(request, exc)
        for middleware in self._header_middleware:
            middleware.process_response(request, response)
        headers = [*response.items()]
        return f"{response.status_code} {response.reason_phrase}", response.content, headers

    def _log(self, environ, code: int) -> None:
        """Django's log line for a response with status ``code`` (``log_response``)."""
        response = HttpResponse(status=code)
        request = self.request_class(environ)
        log_response(
            "%s: %s", response.reason_phrase, request.path, response=response, request=request
        )

    def _error(self, environ, secure: bool, exc: Exception) -> tuple[str, bytes, list]:
        """The answer `api.http.errors.exception_handler` gives for ``exc`` on DRF's path.

        Its headers narrow the view's (``Allow`` on a 405) or add to them
        (``Retry-After``); Django's ``log_response`` logs it as Django's handler would.
        """
        status, body, extra = error_response_parts(as_api_exception(exc))
        headers = dict(self._response_headers(environ, secure))
        headers.update(extra)
        self._log(environ, status)
        return f"{status} {responses[status]}", dumps(body), list(headers.items())

    def _client(self, environ) -> tuple[bool, bool]:
        """``(host allowed, is_secure())`` as Django's request says, remembered per client."""
        key = (*map(environ.get, CLIENT_KEYS), environ.get(self.proxy_header))
        known = self._clients.get(key)
        if known is None:
            request = self.request_class(environ)
            try:
                request.get_host()
                allowed = True
            except DisallowedHost:  # Django answers 400 and logs it
                allowed = False
            known = allowed, request.is_secure()
            if len(self._clients) < MAX_REMEMBERED_CLIENTS:
                self._clients[key] = known
        return known

    def _response_headers(self, environ, secure: bool) -> list[tuple[str, str]]:
        """The headers DRF's view and Django's middleware put on a lookup's JSON response.

        Probed once per ``is_secure()``: nothing else they depend on varies per request.
        """
        headers = self._headers.get(secure)
        if headers is not None:
            return headers
        probe = HttpResponse(content_type="application/json")
        request = self.request_class(environ)
        view = self.view_class()
        view.setup(request)  # as the view's as_view() does: HEAD joins the allowed methods
        for name, value in view.default_response_headers.items():
            probe[name] = value
        for middleware in self._header_middleware:
            middleware.process_response(request, probe)
        headers = self._headers[secure] = list(probe.items())
        return headers
