"""Shared fixtures: the assignment batch, the four aliases, raw access to SQLite files."""

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.core.cache import cache, caches
from django.core.cache.backends.db import DatabaseCache
from django.core.management.color import no_style
from django.db import connections, router

from api.db.breakers import READ_BREAKERS, WRITE_BREAKERS
from api.db.bulkheads import close_worker_connections
from api.domain.batches import ASSIGNMENT_FILE, read_batch
from api.fastpath import FastPathHandler
from api.http.access import TOKENS
from api.http.throttling import LIMITER
from api.models import Order, Product, User
from loadtest import runner

ALL_DATABASES = ["default", "users", "products", "orders"]
# The WSGI servers the live tests that test a server's behaviour run on, each in turn.
SERVERS = sorted(runner.SERVERS)
ROUTED = ["users", "products", "orders"]

# The SQLite test databases are files under DATA_DIR (threads cannot share :memory:).
Path(settings.DATA_DIR).mkdir(parents=True, exist_ok=True)

ROUTED_VENDORS = {connections[alias].vendor for alias in ROUTED}
SQLITE_ONLY = "SQLite-specific: files, PRAGMAs or its write lock"
POSTGRESQL_ONLY = "PostgreSQL-specific"
sqlite_only = pytest.mark.skipif({"sqlite"} != ROUTED_VENDORS, reason=SQLITE_ONLY)
postgresql_only = pytest.mark.skipif({"postgresql"} != ROUTED_VENDORS, reason=POSTGRESQL_ONLY)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under ``REQUIRE_ALL_TESTS`` (``.ci/run``) a skip is a failure, but for the other
    backend's tests (`sqlite_only`, `postgresql_only`), which the suite's other run
    (``make test``: SQLite, then PostgreSQL) runs: a test that cannot run in CI says why."""
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail") or not os.environ.get("REQUIRE_ALL_TESTS"):
        return
    longrepr = report.longrepr
    reason = (longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)).removeprefix(
        "Skipped: "
    )
    if reason not in (SQLITE_ONLY, POSTGRESQL_ONLY):
        report.outcome = "failed"
        report.longrepr = f"skipped under REQUIRE_ALL_TESTS, where every test must run: {reason}"


@pytest.fixture(autouse=True)
def _closed_breakers():
    """Every store's bulkheads start closed in every test."""
    yield
    for breaker in (*READ_BREAKERS.values(), *WRITE_BREAKERS.values()):
        breaker.open_until = 0.0


def uses_default_database(request) -> bool:
    """Whether the test's ``django_db`` mark lets it query the ``default`` alias."""
    mark = request.node.get_closest_marker("django_db")
    databases = mark.kwargs.get("databases", ["default"]) if mark else []
    return databases == "__all__" or "default" in databases


@pytest.fixture(autouse=True)
def _empty_cache(request):
    """The shared cache (``/api/stats/``, throttles), the workers' token cache and local
    throttle quotas start empty in every test. A test without the default database
    cannot have used the database cache."""
    clear = not isinstance(caches["default"], DatabaseCache) or uses_default_database(request)
    TOKENS.clear()
    LIMITER.reset()
    if clear:
        cache.clear()
    yield
    if clear:
        cache.clear()


@pytest.fixture(autouse=True)
def _close_worker_connections():
    """The insert workers outlive a test; their connections do not (settings change)."""
    yield
    close_worker_connections()


@pytest.fixture
def shop():
    """Users 10-14 (organisation 7 for 10-12), products 1-2, orders for users 10 and 11."""
    for i in range(10, 15):
        User.objects.create(
            id=i, name=f"User {i}", email=f"user{i}@example.com", organization_id=7 if i < 13 else 8
        )
    Product.objects.create(id=1, name="Lamp", price=Decimal("12.50"))
    Product.objects.create(id=2, name="Desk", price=Decimal("99.00"))
    for id_, user, product, quantity in [(1, 10, 1, 2), (2, 10, 2, 1), (3, 11, 1, 4)]:
        price = Product.objects.get(id=product).price
        Order.objects.create(
            id=id_,
            user_id=user,
            product_id=product,
            quantity=quantity,
            unit_price=price,
            total=price * quantity,
        )
    # As the insert path and generate_data leave them: PostgreSQL's id sequences past the
    # explicit ids (Django's sqlsequencereset), so an automatic id never meets a stored one.
    for model in (User, Product, Order):
        connection = connections[router.db_for_write(model)]
        with connection.cursor() as cursor:
            for sql in connection.ops.sequence_reset_sql(no_style(), [model]):
                cursor.execute(sql)


@pytest.fixture
def handler(monkeypatch) -> FastPathHandler:
    """The project's handler; ``handler.django_calls`` lists the paths Django answered."""
    app = FastPathHandler()
    app.django_calls = []
    get_response = app.get_response

    def spy(request):
        app.django_calls.append(request.get_full_path())
        return get_response(request)

    monkeypatch.setattr(app, "get_response", spy)
    return app


@pytest.fixture
def assignment() -> dict[str, list]:
    """The assignment batch: 10 users, 10 products, 10 orders."""
    return read_batch()


@pytest.fixture
def assignment_expected() -> dict:
    """The fixture's own ``expected`` block: stored ids and rejection reasons per model."""
    return json.loads(ASSIGNMENT_FILE.read_text())["expected"]


def sqlite_path(alias: str) -> str:
    """The file behind ``alias`` during the test run (the test database)."""
    return connections[alias].settings_dict["NAME"]


def raw_query(alias: str, sql: str, params: tuple = ()) -> list[tuple]:
    """Run ``sql`` with the stdlib driver on the alias's file, bypassing Django entirely."""
    with closing(sqlite3.connect(sqlite_path(alias))) as conn:
        return conn.execute(sql, params).fetchall()


def sqlite_tables(alias: str) -> set[str]:
    """Table names found in the alias's SQLite file."""
    rows = raw_query(alias, "SELECT name FROM sqlite_master WHERE type = 'table'")
    return {name for (name,) in rows if not name.startswith("sqlite_")}


@contextmanager
def locked(alias: str, monkeypatch):
    """Hold the alias's SQLite write lock from another connection; shorten its busy timeout."""
    monkeypatch.setitem(connections.settings[alias]["OPTIONS"], "timeout", 0.2)
    close_worker_connections()  # so that the workers reconnect with the short timeout
    blocker = sqlite3.connect(sqlite_path(alias), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


@contextmanager
def store_locked(alias: str, monkeypatch, settings):
    """Make ``alias``'s inserts fail fast as locked: SQLite's write lock held elsewhere, or
    PostgreSQL's table (named like the alias) locked by another session."""
    if connections[alias].vendor == "sqlite":
        with locked(alias, monkeypatch):
            yield
        return
    settings.REQUEST_DEADLINE_SECONDS = 0.5  # the batch's lock_timeout
    with table_locked(alias):
        yield


@contextmanager
def table_locked(alias: str):
    """The PostgreSQL store's table (named like the alias) locked ACCESS EXCLUSIVE by
    another session of this process, until the block ends."""
    config = connections[alias].settings_dict
    with psycopg.connect(
        host=config["HOST"] or "127.0.0.1",
        port=config["PORT"] or 5432,
        user=config["USER"],
        password=config["PASSWORD"],
        dbname=config["NAME"],
    ) as holder:
        holder.execute(f"LOCK TABLE {alias} IN ACCESS EXCLUSIVE MODE")
        yield
        holder.rollback()


def manage(*args: str, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def generated_data_dir(path: Path, rows: int, seed: int) -> dict[str, str]:
    """``{"DATA_DIR": path}`` after ``migrate_all`` and ``generate_data`` there."""
    env = {"DATA_DIR": str(path)}
    for command in (("migrate_all",), ("generate_data", "--rows", str(rows), "--seed", str(seed))):
        run = manage(*command, "--verbosity", "0", env=env)
        assert run.returncode == 0, run.stderr
    return env


@contextmanager
def live_server(
    env: dict[str, str], server: str, **serve_options
) -> Iterator[tuple[str, subprocess.Popen]]:
    """``server`` (gunicorn, granian) serving the project with ``env`` on a free loopback
    port, as `loadtest.runner.serve` starts it (``serve_options``: ``proxy``), once healthy;
    yields its URL and main process, and stops it gracefully after the block."""
    bind = f"127.0.0.1:{runner.free_port()}"
    with runner.serve(bind, env=env, server=server, **serve_options) as process:
        runner.wait_healthy(f"http://{bind}", process)
        yield f"http://{bind}", process
