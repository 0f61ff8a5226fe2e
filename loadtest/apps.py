from django.apps import AppConfig


class LoadtestConfig(AppConfig):
    """The load-test harness: ``manage.py loadtest`` and its report. Nothing of the
    service (`api`) imports it."""

    name = "loadtest"
