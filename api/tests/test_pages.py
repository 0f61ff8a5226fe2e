"""The front door (``/``, ``/api/``) and the static files, through Django's handler.

The same pages in a real browser, served by Gunicorn: `test_browser`.
"""

import pytest
from django.test import Client, override_settings

from api.views.home import LINKS

PAGES = [link.path for link in LINKS]


@pytest.mark.django_db(databases=["default"])
def test_the_front_door_links_every_page():
    """``/`` is an HTML page linking each entry of `LINKS` and the API root."""
    response = Client().get("/")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    for path in [*PAGES, "/api/"]:
        assert f'href="{path.replace("&", "&amp;")}"' in html, path


def test_the_api_root_lists_the_same_links_as_absolute_urls():
    """``/api/`` (DRF's API root): every link by name, as a full URL."""
    response = Client().get("/api/")
    assert response.status_code == 200
    assert response.json() == {link.name: f"http://testserver{link.path}" for link in LINKS}


@override_settings(API_DOCS_PUBLIC=False, RUN_PAGE_ENABLED=False, API_TOKENS_REQUIRED=True)
@pytest.mark.django_db(databases=["default"])
def test_the_front_door_says_what_each_page_needs_in_production():
    """Docs and schema need a token, the run page its switch, the lookup the read scope."""
    needs = {link.name: link.needs() for link in LINKS}
    assert needs == {
        "docs": "a token (API_DOCS_PUBLIC is off)",
        "schema": "a token (API_DOCS_PUBLIC is off)",
        "schema-yaml": "a token (API_DOCS_PUBLIC is off)",
        "health": "",
        "stats": "",
        "lookup": "a token with the read scope",
        "run": "RUN_PAGE_ENABLED (off here)",
    }
    html = Client().get("/").content.decode()
    assert html.count("a token (API_DOCS_PUBLIC is off)") == 3


@pytest.mark.django_db(databases=["default"])
def test_the_schema_has_a_json_view_a_browser_shows():
    """``/api/schema.json`` is ``application/json`` (shown), ``/api/schema/`` YAML."""
    client = Client()
    assert client.get("/api/schema.json")["Content-Type"] == "application/json"
    assert client.get("/api/schema/")["Content-Type"].startswith("application/vnd.oai.openapi")


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/favicon.ico", "image/x-icon"),
        ("/static/api/site.css", "text/css"),
        ("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js", "text/javascript"),
        ("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui.css", "text/css"),
    ],
)
def test_static_files_are_served_without_debug(path, content_type, settings):
    """WhiteNoise serves them from the apps with DEBUG off (no collectstatic needed)."""
    assert settings.DEBUG is False
    response = Client().get(path)
    assert response.status_code == 200
    assert response["Content-Type"].startswith(content_type)


def test_the_docs_load_swagger_ui_from_this_server():
    """No CDN: every script and stylesheet of ``/api/docs/`` is under ``/static/``."""
    html = Client().get("/api/docs/").content.decode()
    assert "cdn." not in html and "https://" not in html
    assert 'src="/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js"' in html
