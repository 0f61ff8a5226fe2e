"""``GET /metrics``: the service's Prometheus metrics (`api.metrics`), for a scraper."""

from django.conf import settings
from django.http import Http404, HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.views import APIView

from api.http.access import METRICS, NO_PERMISSIONS, TOKEN_SCOPES
from api.http.renderers import JSONOnlyNegotiation
from api.metrics.exposition import scrape


class MetricsView(APIView):
    """Every worker's request, insert, database, breaker, queue and replica metrics and
    the server's processes' CPU and memory, in the Prometheus text format.

    Needs a token with the ``metrics`` scope when tokens are required (production: 401
    without one, 403 with another); open otherwise. 404 with ``METRICS=0``. Not in the
    API's schema: it is for Prometheus, not for the API's clients. Its errors are the
    API's JSON envelope whatever the scraper accepts.
    """

    content_negotiation_class = JSONOnlyNegotiation

    def required_permissions(self, request) -> frozenset[str]:
        return TOKEN_SCOPES[METRICS] if request.method in ("GET", "HEAD") else NO_PERMISSIONS

    @extend_schema(exclude=True)
    def get(self, request):
        if not settings.METRICS:
            raise Http404("metrics are off (METRICS=0)")
        body, content_type = scrape()
        return HttpResponse(body, content_type=content_type)
