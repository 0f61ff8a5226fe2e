"""The WSGI handler: Django's, with successful lookups answered ahead of its request cycle.

A ``type=get`` lookup is the hottest request of the product. In-process on the 2-core
machine Django's request cycle (signals, request object, URL resolving, five middleware,
the response object) cost 190 µs per lookup against 18 µs for the raw sqlite3 anchor, and
under a 1000-user swarm, where threads contend for the GIL and the cores are shared with
Locust, every in-process microsecond cost about two of server CPU.
`LookupFastPathHandler` is a `WSGIHandler` that answers successful
``GET /api/run-query/`` lookups itself, doing for them what Django's cycle does:

- the same validation and body: `api.query_params.parse_lookup` and
  `api.views.run_query.lookup_response_body`, rendered by orjson, in the same
  primary-pinning scope as `api.middleware.primary_pinning_middleware`;
- the same host check (``get_host()`` against ``ALLOWED_HOSTS``) and scheme
  (``is_secure()``), asked of Django's ``WSGIRequest`` once per distinct set of the
  headers they read and remembered (`LookupFastPathHandler._client`);
- the same headers: the security headers are made by Django's own `SecurityMiddleware`
  and `XFrameOptionsMiddleware` (``process_response`` on a probe response, once per
  scheme), ``Content-Length`` as `CommonMiddleware` sets it;
- the same connection housekeeping: ``close_if_unusable_or_obsolete()``, which Django's
  ``request_finished`` signal runs on every connection, runs on the read aliases where it
  can do anything after a successful lookup: connections with a maximum age (``0`` for
  pooled ones, which it returns to the pool) or health checks (reset for the next use).
  Persistent SQLite connections need none. A failed lookup is Django's, and so is its
  housekeeping. The signals themselves are sent instead when anything but Django's own
  housekeeping listens to them (an APM, say) or ``DEBUG`` logs queries.

Everything else is Django's: other paths and methods, a host that is not allowed, a
request that ``SECURE_SSL_REDIRECT`` redirects, a user agent to check against
``DISALLOWED_USER_AGENTS``, and every lookup that does not succeed (bad parameters, not
found, a database error): the handler then passes the untouched ``environ`` to Django,
which answers with its errors, logging and 503s. A lookup only reads, so running it a
second time that way is harmless. The fast path is off when ``LOOKUP_FAST_PATH`` is false,
when ``MIDDLEWARE`` holds a middleware it does not reproduce (`REPRODUCED`), or when
``PREPEND_WWW`` is set.
"""

import logging
from urllib.parse import parse_qsl

from django.conf import settings
from django.core import signals
from django.core.cache import close_caches
from django.core.exceptions import DisallowedHost
from django.core.handlers.base import reset_urlconf
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections, connections, reset_queries
from django.http import HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware
from django.urls import reverse

from api.renderers import dumps
from api.routers import DEFAULT_ALIAS, PINNED_ALIASES
from api.views.run_query import lookup_response_body

logger = logging.getLogger(__name__)

# The middleware whose effect on a successful GET lookup the fast path reproduces:
# pinning scope, security headers, host check and Content-Length, nothing (CSRF guards
# only unsafe methods), X-Frame-Options.
REPRODUCED = frozenset(
    {
        "api.middleware.primary_pinning_middleware",
        "django.middleware.security.SecurityMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
    }
)
# Django's own receivers of the request signals: database housekeeping, done here
# instead; closing the caches and resetting a per-request URLconf, which a lookup neither
# uses nor sets.
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


def fast_path_enabled() -> bool:
    """Whether settings allow the fast path; logs why not when they do not."""
    if not settings.LOOKUP_FAST_PATH:
        return False
    unknown = sorted(set(settings.MIDDLEWARE) - REPRODUCED)
    if unknown or settings.PREPEND_WWW:
        logger.warning(
            "lookup fast path off: %s",
            f"middleware {', '.join(unknown)}" if unknown else "PREPEND_WWW",
        )
        return False
    return True


def only_djangos_receivers(signal) -> bool:
    """Whether ``signal``'s receivers are all Django's connection housekeeping."""
    return all(lookup_key[0] in DJANGO_RECEIVERS for lookup_key, *_ in signal.receivers)


class LookupFastPathHandler(WSGIHandler):
    """Django's WSGI handler; successful ``GET /api/run-query/`` lookups skip its cycle."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fast_path = fast_path_enabled()
        self.lookup_path = reverse("run-query")
        self.send_signals = settings.DEBUG or not all(
            only_djangos_receivers(signal)
            for signal in (signals.request_started, signals.request_finished)
        )
        # Lookups read the routed aliases and their replicas, never ``default``.
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
        self._clients: dict[tuple, tuple[bool, bool]] = {}
        self._headers: dict[bool, list[tuple[str, str]]] = {}  # by is_secure()
        self._header_middleware = (
            SecurityMiddleware(lambda request: None),
            XFrameOptionsMiddleware(lambda request: None),
        )

    def __call__(self, environ, start_response):
        if (
            not self.fast_path
            or environ.get("REQUEST_METHOD") != "GET"
            or environ.get("PATH_INFO") != self.lookup_path
        ):
            return super().__call__(environ, start_response)
        if self.send_signals:
            signals.request_started.send(sender=self.__class__, environ=environ)
        try:
            answer = self._answer(environ)
        finally:
            if self.send_signals:
                signals.request_finished.send(sender=self.__class__)
            else:
                for alias in self.housekeeping_aliases:
                    connections[alias].close_if_unusable_or_obsolete()
        if answer is None:
            return super().__call__(environ, start_response)
        body, headers = answer
        start_response("200 OK", [*headers, ("Content-Length", str(len(body)))])
        return [body]

    def _answer(self, environ) -> tuple[bytes, list[tuple[str, str]]] | None:
        """``(body, headers)`` of a successful lookup, or None for Django to answer."""
        try:
            allowed, secure = self._client(environ)
            if (
                not allowed
                or (self.ssl_redirect and not secure)
                or (self.check_user_agent and "HTTP_USER_AGENT" in environ)
            ):
                return None
            # primary_pinning's scope, without its two Python calls
            scope = PINNED_ALIASES.set(frozenset())
            try:
                body = dumps(lookup_response_body(query_params(environ, self.max_fields)))
            finally:
                PINNED_ALIASES.reset(scope)
        except Exception:  # Django answers it again, with its errors and logging
            return None
        return body, self._headers.get(secure) or self._probe_headers(environ, secure)

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

    def _probe_headers(self, environ, secure: bool) -> list[tuple[str, str]]:
        """The headers Django's middleware put on a JSON response to such a request."""
        probe = HttpResponse(content_type="application/json")
        request = self.request_class(environ)
        for middleware in self._header_middleware:
            middleware.process_response(request, probe)
        headers = self._headers[secure] = list(probe.items())
        return headers


def query_params(environ, max_fields: int | None = None) -> dict[str, list[str]]:
    """The query string's parameters, each with its values in order: `api.query_params.Params`.

    Equal to ``as_params(request.GET)`` in a sixth of a `QueryDict`'s time.

    ``max_fields`` defaults to ``DATA_UPLOAD_MAX_NUMBER_FIELDS``. Raises
    `UnicodeDecodeError` for a query that is not UTF-8 and `ValueError` past
    ``max_fields``: Django then answers as it would.
    """
    if max_fields is None:
        max_fields = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
    query = environ.get("QUERY_STRING", "")
    params: dict[str, list[str]] = {}
    if query.isascii() and "%" not in query and "+" not in query:
        # Nothing to decode or unquote (the load test's queries): parse_qsl's result
        # without its per-field unquoting, which costs more than the rest of the parse.
        if max_fields is not None and query.count("&") >= max_fields:
            raise ValueError("Max number of fields exceeded")
        for pair in query.split("&"):
            if pair:
                key, _, value = pair.partition("=")
                params.setdefault(key, []).append(value)
    else:
        # PEP 3333: the server decoded the raw bytes as latin-1.
        query = query.encode("iso-8859-1").decode()
        for key, value in parse_qsl(query, keep_blank_values=True, max_num_fields=max_fields):
            params.setdefault(key, []).append(value)
    return params
