from django.apps import AppConfig
from django.conf import settings
from django.db.backends.signals import connection_created

from api.db import open_connections, query_timing  # neither imports a model


class ApiConfig(AppConfig):
    name = "api"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from api.fastpath import checks  # noqa: F401  (registers the fast path's checks)

        if settings.METRICS:  # database time and open connections for /metrics
            query_timing.enable()
            connection_created.connect(query_timing.install, dispatch_uid="query_timing")
            connection_created.connect(open_connections.track, dispatch_uid="open_connections")
