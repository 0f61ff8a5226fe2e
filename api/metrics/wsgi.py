"""`RequestMetrics`: every request's time and status class, on the fast path and Django's.

The WSGI handler (`api.fastpath.FastPathHandler`) records each request it serves: its own
answers with `RequestMetrics.record`, Django's through `RequestMetrics.serve`, which learns
the status from ``start_response``. Whichever path answers names the request's route in
the WSGI environ (`label_request`): the fast path for ``api/run-query/``,
`api.http.middleware.RouteLabelMiddleware` for every route Django resolves. A request
nobody labelled is ``static`` under ``STATIC_URL`` (WhiteNoise answers before URL
resolution) and ``unmatched`` otherwise (a 404, a host refused), so that a client cannot
mint label values. A chunked body refused before the handler (411, 413:
`data_project.chunked_bodies`) is not counted.
"""

from time import perf_counter

from api.metrics import REQUESTS

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
    """Observe requests in `api.metrics.REQUEST_SECONDS` (through its batch, `REQUESTS`).

    ``static_prefix`` is ``STATIC_URL``'s path (``"/static/"``). Times run from
    ``started`` (a `perf_counter` reading taken when the handler got the request) until
    the answer is returned; a streamed body's iteration is not counted.
    """

    def __init__(self, static_prefix: str):
        self.static_prefix = static_prefix

    def record(self, environ: dict, status_line: str, started: float) -> None:
        """Count ``environ``'s request, answered with ``status_line`` (``"200 OK"``)."""
        elapsed = perf_counter() - started
        route = environ.get(ROUTE)
        if route is None:
            route = (
                STATIC if environ.get("PATH_INFO", "").startswith(self.static_prefix) else UNMATCHED
            )
        method = environ.get("REQUEST_METHOD")
        if method not in METHODS:
            method = "other"
        status_class = STATUS_CLASSES.get(status_line[:1], "5xx")
        REQUESTS.observe((route, environ.get(KEY, ""), method, status_class), elapsed)

    def serve(self, application, environ: dict, start_response, started: float):
        """``application(environ, start_response)``, recorded with the status it started
        its response with; an exception is recorded as ``5xx`` (the server answers 500)
        and raised again."""
        status = ["500"]

        def recording_start_response(status_line, headers, exc_info=None):
            status[0] = status_line
            return start_response(status_line, headers, exc_info)

        try:
            return application(environ, recording_start_response)
        finally:
            self.record(environ, status[0], started)
