"""Every page in a real browser: Debian's headless Chromium, driven by Playwright, against
Gunicorn as ``make serve`` runs it (gunicorn.conf.py, DEBUG off, static files by
WhiteNoise), with every request off this machine refused, so the pages must work offline.

Each test saves a screenshot under ``reports/screenshots/`` (``SCREENSHOTS_DIR``). Where no
Chromium exists the tests skip, unless ``REQUIRE_BROWSER=1`` (CI; ``make browser`` installs
it). They run on the SQLite default only: the pages are the same on any store.
"""

import json
import os
import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings

from api.tests.conftest import manage, sqlite_only
from loadtest import runner

pytestmark = sqlite_only

CHROMIUM = (
    os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
)
SCREENSHOTS = Path(
    os.environ.get("SCREENSHOTS_DIR") or Path(settings.BASE_DIR) / "reports" / "screenshots"
)
LOOPBACK = {"127.0.0.1", "localhost"}


@pytest.fixture(scope="module")
def chromium():
    """A headless Chromium (Playwright's driver, Debian's browser)."""
    if not CHROMIUM:
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail("REQUIRE_BROWSER is set but no Chromium was found (make browser)")
        pytest.skip("no Chromium on this machine: `make browser` installs Debian's")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


class Offline:
    """A browser page that refuses every request not to loopback and remembers it, with
    the console errors and uncaught exceptions the page raised."""

    def __init__(self, browser, base_url: str):
        self.context = browser.new_context(
            base_url=base_url, viewport={"width": 1280, "height": 900}
        )
        self.page = self.context.new_page()
        self.refused: list[str] = []
        self.errors: list[str] = []
        self.context.route("**/*", self._route)
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page.on(
            "console",
            lambda msg: self.errors.append(f"console: {msg.text}") if msg.type == "error" else None,
        )

    def _route(self, route):
        url = urlsplit(route.request.url)
        if url.scheme in ("http", "https") and url.hostname not in LOOPBACK:
            self.refused.append(route.request.url)
            route.abort("internetdisconnected")
        else:
            route.continue_()

    def screenshot(self, name: str, element=None) -> None:
        """The whole page, or ``element`` only, as ``SCREENSHOTS/name.png``."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        if element is not None:
            element.screenshot(path=path)
        else:
            self.page.screenshot(path=path, full_page=True)

    def assert_clean(self) -> None:
        """Nothing was fetched from off the machine and nothing failed in the page."""
        assert self.refused == []
        assert self.errors == []


def site(tmp_path_factory, name: str, *commands: tuple[str, ...]):
    """Gunicorn on a fresh DATA_DIR prepared by ``commands`` (manage.py), DEBUG off,
    served as development (no token needed, docs and /run/ on)."""
    env = {"DATA_DIR": str(tmp_path_factory.mktemp(name))}
    for command in (("migrate_all",), *commands):
        run = manage(*command, "--verbosity", "0", env=env)
        assert run.returncode == 0, run.stderr
    bind = f"127.0.0.1:{runner.free_port()}"
    env |= {"DJANGO_DEBUG": "0", "WEB_CONCURRENCY": "1"}
    return bind, env


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """The base URL of a server with 300 generated rows (user 1 exists)."""
    bind, env = site(tmp_path_factory, "browser-loaded", ("generate_data", "--rows", "300"))
    with runner.serve(bind, env=env) as server:
        runner.wait_healthy(f"http://{bind}", server)
        yield f"http://{bind}"


@pytest.fixture
def empty(tmp_path_factory):
    """The base URL of a server with empty databases."""
    bind, env = site(tmp_path_factory, "browser-empty")
    with runner.serve(bind, env=env) as server:
        runner.wait_healthy(f"http://{bind}", server)
        yield f"http://{bind}"


@pytest.fixture
def browse(chromium):
    pages = []

    def open_page(base_url: str) -> Offline:
        pages.append(Offline(chromium, base_url))
        return pages[-1]

    yield open_page
    for page in pages:
        page.context.close()


def json_shown(page) -> dict:
    """The JSON document Chromium shows as text (its viewer wraps it in a ``<pre>``)."""
    return json.loads(page.locator("body").inner_text())


def test_the_front_door_links_every_page(loaded, browse):
    """``/`` renders with its stylesheet and icon, and each link opens a page that answers."""
    view = browse(loaded)
    view.page.goto("/")
    assert view.page.title() == "data_project"
    paths = view.page.locator("#links a").evaluate_all(
        "links => links.map(a => a.getAttribute('href'))"
    )
    assert {"/api/docs/", "/api/schema.json", "/api/health/", "/api/stats/", "/run/"} <= set(paths)
    # The stylesheet applied: right-aligned numbers come from site.css, not the browser.
    assert (
        view.page.locator("h1").evaluate("h => getComputedStyle(h).fontFamily") != "Times New Roman"
    )
    view.screenshot("front-door")
    for path in paths:
        # The YAML schema downloads rather than opens: fetched instead.
        fetch = view.page.request.get if path == "/api/schema/" else view.page.goto
        response = fetch(path)
        assert response.status == 200, path
    view.assert_clean()


@pytest.mark.parametrize(
    ("path", "name", "check"),
    [
        ("/api/", "api-root", lambda doc: {"docs", "schema", "health", "stats", "run"} <= set(doc)),
        ("/api/schema.json", "schema-json", lambda doc: doc["openapi"].startswith("3.")),
        ("/api/health/", "health", lambda doc: doc["status"] == "ok"),
        ("/api/stats/", "stats", lambda doc: doc["users"]["rows"] > 0),
    ],
)
def test_json_pages_are_shown_not_downloaded(loaded, browse, path, name, check):
    """The API root, schema, health and stats open as JSON text in the browser."""
    view = browse(loaded)
    response = view.page.goto(path)
    assert response.status == 200 and response.headers["content-type"].startswith(
        "application/json"
    )
    assert check(json_shown(view.page))
    view.screenshot(name)
    view.assert_clean()


def test_the_docs_render_offline_and_try_it_out_returns_200(loaded, browse):
    """Swagger UI comes from this server; "Try it out" on the lookup, with the values the
    schema fills in (``type=get``, ``user_id=1``), gets a 200 and the user."""
    view = browse(loaded)
    view.page.goto("/api/docs/")
    view.page.locator(".swagger-ui .info .title").filter(has_text="data_project API").wait_for()
    view.screenshot("docs")
    operation = view.page.locator("[id$='run_query_get']")
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.get_by_role("button", name="Execute").click()
    status = operation.locator(".live-responses-table .response .response-col_status").first
    status.wait_for()
    assert status.inner_text().strip() == "200"
    body = operation.locator(
        ".live-responses-table .response-col_description pre"
    ).first.inner_text()
    assert re.search(r'"key":\s*"user_id"', body) and re.search(r'"id":\s*1\b', body)
    view.screenshot("docs-try-it-out", operation)
    view.assert_clean()


def test_the_run_page_button_runs_the_batch_once(empty, browse):
    """``/run/``: the button stores the assignment batch and shows the per-table summary;
    a reload shows the same result without posting again; a second run says the records
    are already stored."""
    view = browse(empty)
    view.page.goto("/run/")
    view.screenshot("run-before")
    view.page.locator("#run-batch").click()
    view.page.wait_for_load_state()
    summary = view.page.locator("#summary")
    summary.wait_for()
    inserted = {
        table: int(summary.locator(f"[data-table='{table}']").get_attribute("data-inserted"))
        for table in ("users", "products", "orders")
    }
    assert inserted == {"users": 8, "products": 9, "orders": 7}
    counts = view.page.locator("#counts").inner_text()
    view.screenshot("run-after")
    assert view.page.evaluate("performance.getEntriesByType('navigation')[0].type") == "navigate"
    view.page.reload()  # PRG: a reload is a GET of the result, no form re-submitted
    assert view.page.locator("#counts").inner_text() == counts
    assert view.page.locator("#summary").is_visible()
    view.page.locator("#run-batch").click()
    view.page.wait_for_load_state()
    view.page.locator("#already-stored").wait_for()
    assert view.page.locator("#counts").inner_text() == counts
    view.screenshot("run-again")
    view.assert_clean()


def test_the_load_test_report_renders_offline(tmp_path, browse):
    """``reports/index.html`` opened from disk: the verdict and every section, the three
    charts over time as wide as the page with every line drawn, a column highlighted under
    the pointer (its tooltip is the SVG title), nothing fetched, no error."""
    from loadtest import sections
    from loadtest.tests.test_report import written_report

    written_report(tmp_path / "reports")
    view = browse(None)
    view.page.goto((tmp_path / "reports" / "index.html").as_uri())
    assert view.page.locator("h1").inner_text() == "Load test report"
    ids = view.page.locator("section").evaluate_all("sections => sections.map(s => s.id)")
    assert ids == [
        "headline",
        "thresholds",
        "compared",
        "over-time",
        "kinds",
        "steady",
        "failures",
        "distribution",
        "run",
        "files",
    ]  # fmt: skip: a hand-made run, without the server's side (the next test has it)
    assert len(ids) == len(sections.SECTIONS) - 1
    charts = view.page.locator("figure.chart svg")
    assert charts.count() == 3
    assert all(box["width"] > 1000 for box in charts.evaluate_all(
        "svgs => svgs.map(svg => svg.getBoundingClientRect().toJSON())"
    ))  # fmt: skip
    # Every line is drawn: a kind with one sample in a window as a dot.
    lines = view.page.locator("svg polyline")
    assert lines.count() >= 9
    drawn = lines.evaluate_all(
        "lines => lines.map(line => getComputedStyle(line).strokeLinecap === 'round'"
        " && line.points.length >= 2)"
    )
    assert all(drawn)
    column = view.page.locator("figure.chart rect.hover").nth(6)
    column.hover()
    assert column.evaluate("rect => getComputedStyle(rect).fill") != "rgba(0, 0, 0, 0)"
    view.screenshot("report")
    view.screenshot("report-over-time", view.page.locator("#over-time"))
    view.screenshot("report-kinds", view.page.locator("#kinds"))
    view.assert_clean()


def test_the_reports_server_side_renders_offline(tmp_path, browse):
    """A recorded run's report (issue 30): the bottleneck's sentence under the headline
    and the server's panels, drawn as wide as the page, every line drawn, nothing fetched,
    no error."""
    from loadtest import report, sections
    from loadtest.tests.test_server_side import PANELS, recorded_run

    folder = recorded_run(tmp_path / "reports")
    report.write_report(json.loads((folder / "summary.json").read_text()), folder)
    view = browse(None)
    view.page.goto((folder / "index.html").as_uri())
    ids = view.page.locator("section").evaluate_all("sections => sections.map(s => s.id)")
    assert ids[:5] == ["headline", "thresholds", "compared", "over-time", "server"]
    assert len(ids) == len(sections.SECTIONS)
    assert view.page.locator("#bottleneck").inner_text().startswith("Bottleneck: ")
    server = view.page.locator("#server")
    titles = server.locator("figure.chart figcaption b").all_inner_texts()
    assert titles[: len(PANELS)] == [title.replace("&#x27;", "'") for title in PANELS]
    boxes = server.locator("figure.chart svg").evaluate_all(
        "svgs => svgs.map(svg => svg.getBoundingClientRect().width)"
    )
    assert all(width > 1000 for width in boxes)
    assert server.locator("svg polyline").count() >= 2 * len(PANELS)
    view.screenshot("report-server-side", server)
    view.assert_clean()
