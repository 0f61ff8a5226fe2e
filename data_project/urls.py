"""Top-level URLs: the browser run page; the API lives under ``/api/``."""

from django.urls import path

from api.views.run_page import RunPageView

urlpatterns = [
    path("run/", RunPageView.as_view(), name="run"),
]
