"""Request middleware."""

from api.db.routers import PINNED_ALIASES
from api.http.pinning import pin_response, pinned_by_environ


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
