"""Top-level URLs: the front door at ``/``, the API under ``/api/``, the browser run
page at ``/run/`` and the Prometheus metrics at ``/metrics``. Static files (``/static/``,
``/favicon.ico``) are WhiteNoise's, ahead of these (settings.MIDDLEWARE)."""

from django.urls import include, path

from api.views.home import home
from api.views.metrics import MetricsView
from api.views.run_page import RunPageView

urlpatterns = [
    path("", home, name="home"),
    path("api/", include("api.urls")),
    path("run/", RunPageView.as_view(), name="run"),
    path("metrics", MetricsView.as_view(), name="metrics"),
]

handler400 = "api.http.errors.handler400"
handler404 = "api.http.errors.handler404"
handler500 = "api.http.errors.handler500"
