"""`RequestMetrics`: every request's time and status class, on the fast path and Django's.

Whichever path answers names the request's route in the WSGI environ (`label_request`):
the fast path for ``api/run-query/``, `api.http.middleware.route_labels` for every route
Django resolves. A request nobody labelled is ``static`` under ``STATIC_URL`` (WhiteNoise
answers before URL resolution) and ``unmatched`` otherwise (a 404, a request refused by
the host check), so that a client cannot mint label values.
"""

from time import perf_counter

from api.metrics import REQUEST_SECONDS

ROUTE = "api.metrics.route"  # environ keys
KEY = "api.metrics.key"
UNMATCHED, STATIC = "unmatched", "static"
# Methods are labelled as sent only when they are HTTP's own: any other string a client
# sends is "other".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
STATUS_CLASSES = {digit: f"{digit}xx" for digit in "12345"}


def label_request(environ: dict, route: str, key: str = "") -> None:
    """Name the route pattern (``"api/users/<id:pk>/"``) and lookup key (``"user_id"``,
    ``"insert"``, or "") that `RequestMetrics` records ``environ``'s request under."""
    environ[ROUTE] = route
    environ[KEY] = key


class RequestMetrics:
    """WSGI middleware: observe each request in `REQUEST_SECONDS` when the wrapped
    application returns (a streamed body's iteration is not counted).

    ``static_prefix`` is ``STATIC_URL``'s path (``"/static/"``). An exception from the
    application is recorded as ``5xx`` (the server answers 500) and raised again.
    """

    def __init__(self, application, static_prefix: str):
        self.application = application
        self.static_prefix = static_prefix
        self._children: dict[tuple[str, str, str, str], object] = {}

    def __call__(self, environ, start_response):
        started = perf_counter()
        status = "5"

        def recording_start_response(status_line, headers, exc_info=None):
            nonlocal status
            status = status_line[:1]
            return start_response(status_line, headers, exc_info)

        try:
            return self.application(environ, recording_start_response)
        finally:
            elapsed = perf_counter() - started
            route = environ.get(ROUTE)
            if route is None:
                path = environ.get("PATH_INFO", "")
                route = STATIC if path.startswith(self.static_prefix) else UNMATCHED
            method = environ.get("REQUEST_METHOD")
            if method not in METHODS:
                method = "other"
            labels = (route, environ.get(KEY, ""), method, status)
            child = self._children.get(labels)
            if child is None:
                child = self._children[labels] = REQUEST_SECONDS.labels(
                    route, labels[1], method, STATUS_CLASSES.get(status, "5xx")
                )
            child.observe(elapsed)
