"""The front door: ``/`` for a person (an HTML page) and ``/api/`` for a client (JSON).

Both list the same `LINKS`, so a page added here is reachable from both. What a link
needs in production (a token, a switch turned on) is said on the page rather than hidden:
a reader learns why a link answers 401 or 404 there.
"""

from dataclasses import dataclass

from django.conf import settings
from django.shortcuts import render
from django.urls import reverse
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

TEMPLATE = "api/home.html"


@dataclass(frozen=True)
class Link:
    """One entry of the front door: ``name`` (the API root's key), the URL's name and
    query, what it shows, and what it needs (`Link.needs`)."""

    name: str
    url_name: str
    title: str
    query: str = ""

    @property
    def path(self) -> str:
        return reverse(self.url_name) + (f"?{self.query}" if self.query else "")

    def needs(self) -> str:
        """What this link needs under the current settings; empty when anyone may open it."""
        if self.url_name in ("docs", "schema", "schema-json") and not settings.API_DOCS_PUBLIC:
            return "a token (API_DOCS_PUBLIC is off)"
        if self.url_name == "run" and not settings.RUN_PAGE_ENABLED:
            return "RUN_PAGE_ENABLED (off here)"
        if self.name == "lookup" and settings.API_TOKENS_REQUIRED:
            return "a token with the read scope"
        return ""


LINKS = (
    Link("docs", "docs", "API docs: Swagger UI, try any request"),
    Link("schema", "schema-json", "OpenAPI schema (JSON, readable in the browser)"),
    Link("schema-yaml", "schema", "OpenAPI schema (YAML, downloads)"),
    Link("health", "health", "health of every database and replica"),
    Link("stats", "stats", "rows and id ranges per table"),
    Link("lookup", "run-query", "user 1 and their orders", "type=get&user_id=1&include=orders"),
    Link("run", "run", "run the assignment batch from the browser"),
)


def home(request):
    """``/``: the links with what each shows and needs."""
    links = [{"path": link.path, "title": link.title, "needs": link.needs()} for link in LINKS]
    return render(request, TEMPLATE, {"links": links, "production": settings.PRODUCTION})


class ApiRootView(APIView):
    """``/api/``: every link of the front door by name, as absolute URLs (DRF's API root)."""

    authentication_classes = []
    throttle_classes = []

    @extend_schema(
        responses=inline_serializer(
            "ApiRootOut", {link.name: serializers.URLField() for link in LINKS}
        )
    )
    def get(self, request):
        return Response({link.name: request.build_absolute_uri(link.path) for link in LINKS})
