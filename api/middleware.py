"""Request middleware."""

from api.pinning import pin_response, pinned_by_environ
from api.routers import PINNED_ALIASES


def primary_pinning_middleware(get_response):
    """Give every request its own primary-pinning scope (see `api.routers`), starting with
    the aliases its pinning cookie names (`api.pinning`: read-your-writes across requests).

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
