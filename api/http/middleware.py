"""Request middleware."""

from api.db.routers import PINNED_ALIASES
from api.http.pinning import pin_response, pinned_by_environ
from api.http.query_params import INSERT, key_label
from api.metrics.wsgi import label_request

RUN_QUERY = "run-query"  # the URL name of /api/run-query/


def primary_pinning_middleware(get_response):
    """Give every request its own primary-pinning scope (see `api.db.routers`), starting with
    the aliases its pinning cookie names (`api.http.pinning`: read-your-writes across requests).

    A thread serves many requests in turn; without a fresh scope, one request's writes
    would pin the next request's reads to the primary.
    """

    def middleware(request):
        token = PINNED_ALIASES.set(pinned_by_environ(request.META))
        try:
            response = get_response(request)
            pin_response(request, response, PINNED_ALIASES.get())
            return response
        finally:
            PINNED_ALIASES.reset(token)

    return middleware


class RouteLabelMiddleware:
    """Name the resolved route pattern (and, on ``/api/run-query/``, the lookup key or
    ``insert``) that `api.metrics.wsgi.RequestMetrics` counts the request under."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs) -> None:
        match = request.resolver_match
        key = ""
        if match.url_name == RUN_QUERY:
            key = INSERT if request.method == "POST" else key_label(request.GET)
        label_request(request.environ, match.route, key)
