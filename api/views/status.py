"""``/api/stats/`` (rows and id ranges per database) and ``/api/health/``."""

import logging

from django.conf import settings
from django.db import DatabaseError, connections, router
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from api.db.failures import failure_kind
from api.db.replicas import MONITOR
from api.domain.stores import STORES
from api.http.access import NO_PERMISSIONS, READ, TOKEN_SCOPES
from api.http.errors import RETRY_AFTER_SECONDS, envelope
from api.http.outputs import ErrorOut, HealthOut, StatsOut
from api.http.throttling import LOOKUP_SCOPE
from api.services.selectors import cached_table_stats

logger = logging.getLogger(__name__)


class StatsView(APIView):
    """Row counts and the id range of every table, with the alias that holds it.

    At most ``STATS_CACHE_SECONDS`` old (`api.services.selectors.cached_table_stats`).
    Its id ranges and gaps map the stored users and orders, so it needs the ``read`` scope
    (`api.http.access`): a token when tokens are required (production).
    """

    def required_permissions(self, request) -> frozenset[str]:
        return TOKEN_SCOPES[READ] if request.method in ("GET", "HEAD") else NO_PERMISSIONS

    def get_throttle_scope(self, request) -> str | None:
        return LOOKUP_SCOPE if request.method in ("GET", "HEAD") else None

    @extend_schema(responses={200: StatsOut, 503: ErrorOut})
    def get(self, request):
        stats = cached_table_stats()
        for name, store in STORES.items():
            stats[name] = {"database": router.db_for_read(store.model), **stats[name]}
        return Response(stats)


def check_database(alias: str) -> str:
    """``"ok"``, or the kind of failure reading from ``alias`` met (`failure_kind`).

    Routed aliases read their table (an empty SQLite file would otherwise pass);
    ``default`` answers ``SELECT 1``.
    """
    try:
        owned = [s.model for s in STORES.values() if router.db_for_read(s.model) == alias]
        if owned:
            owned[0].objects.using(alias).exists()
        else:
            with connections[alias].cursor() as cursor:
                cursor.execute("SELECT 1")
    except DatabaseError as exc:
        kind = failure_kind(exc)
        logger.error("health: database %r is down (%s): %s", alias, kind, exc)
        return kind
    return "ok"


class HealthView(APIView):
    """Check every primary database: 200 when all answer, 503 naming those that do not.

    Replicas are reported, not checked here (``replicas``: each one's state and lag as
    `api.db.replicas` last measured them); one that is down or lagging takes no reads,
    which go to its primary, so it does not make the service unhealthy. Neither
    authenticated nor throttled: load balancers probe it.
    """

    authentication_classes = []
    throttle_classes = []

    @extend_schema(responses={200: HealthOut, 503: ErrorOut})
    def get(self, request):
        replicas = MONITOR.report()
        databases = {
            alias: check_database(alias) for alias in settings.DATABASES if alias not in replicas
        }
        down = {alias: [state] for alias, state in databases.items() if state != "ok"}
        if down:
            body = envelope(f"database unavailable: {', '.join(down)}", down)
            return Response(body, status=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        return Response(
            {
                "status": "ok",
                "databases": databases,
                "replicas": {
                    alias: {"state": h.state, "lag_seconds": h.lag_s, "checked_at": h.checked_at}
                    for alias, h in replicas.items()
                },
            }
        )
