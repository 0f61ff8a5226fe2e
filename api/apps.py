from django.apps import AppConfig
from django.conf import settings
from django.core import checks
from django.db.backends.signals import connection_created

from api.db import open_connections, query_timing  # neither imports a model


class ApiConfig(AppConfig):
    name = "api"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        checks.register(check_fast_path, checks.Tags.compatibility)
        if settings.METRICS:  # database time and open connections for /metrics
            query_timing.enable()
            connection_created.connect(query_timing.install, dispatch_uid="query_timing")
            connection_created.connect(open_connections.track, dispatch_uid="open_connections")


def check_fast_path(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """``manage.py check``: the settings the lookup fast path cannot honour
    (`api.fastpath.checks.fast_path_errors`).

    Imported when the checks run, not in `ApiConfig.ready`: the fast path imports DRF and
    every policy of its view, ~0.15 s that a command running only the model checks
    (``generate_data``) or none would pay at every start.
    """
    from api.fastpath.checks import fast_path_errors

    return fast_path_errors()
