"""Request middleware."""

from api.routers import primary_pinning


def primary_pinning_middleware(get_response):
    """Give every request its own primary-pinning scope (see `api.routers`).

    A thread serves many requests in turn; without a fresh scope, one request's writes
    would pin the next request's reads to the primary.
    """

    def middleware(request):
        with primary_pinning():
            return get_response(request)

    return middleware
