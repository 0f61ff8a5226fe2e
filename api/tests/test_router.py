"""The router places each model in its own database, and Django really consults it."""

import os
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections, router
from django.db.utils import load_backend
from django.http import HttpResponse
from django.test import Client, RequestFactory
from hypothesis import given
from hypothesis import strategies as st

from api.db import compiled
from api.db.breakers import READ_BREAKERS
from api.db.replicas import MONITOR, ReplicaMonitor
from api.db.routers import DatabaseRouter, pinned_aliases, primary_pinning
from api.fastpath import FastPathHandler
from api.http.middleware import primary_pinning_middleware
from api.http.pinning import PINNING_COOKIE, pinned_by_cookie
from api.models import Order, Product, User
from api.services.batch_insert import batch_insert
from api.services.selectors import table_stats, user_exists
from api.tests.conftest import ALL_DATABASES, raw_query, sqlite_only, sqlite_tables
from api.tests.test_fastpath import call, environ
from loadtest.runner import free_port

MODEL_TABLES = {"users": "users", "products": "products", "orders": "orders"}
MODELS = {"users": User, "products": Product, "orders": Order}
REPO = Path(settings.BASE_DIR)


def test_router_is_installed():
    """Django's settings name our router, so `django.db.router` consults it."""
    assert settings.DATABASE_ROUTERS == ["api.db.routers.DatabaseRouter"]


@pytest.mark.parametrize("alias", ["users", "products", "orders"])
def test_reads_and_writes_go_to_the_models_alias(alias):
    """Django's master router sends each model's reads and writes to its own alias."""
    model = MODELS[alias]
    assert router.db_for_read(model) == alias
    assert router.db_for_write(model) == alias


def test_contrib_models_have_no_routed_alias():
    """Models the router does not own fall through to ``default``."""
    from django.contrib.auth.models import Group

    assert DatabaseRouter().db_for_read(Group) is None
    assert router.db_for_write(Group) == "default"


@pytest.mark.parametrize("db", ALL_DATABASES)
@pytest.mark.parametrize("app_label,model_name,owner", [
    ("api", "user", "users"),
    ("api", "product", "products"),
    ("api", "order", "orders"),
    ("api", "idempotencykey", "default"),
    ("auth", "user", "default"),
    ("contenttypes", "contenttype", "default"),
])  # fmt: skip
def test_allow_migrate_only_in_the_owning_database(db, app_label, model_name, owner):
    """Each table may be created only in the database that owns it."""
    assert router.allow_migrate(db, app_label, model_name=model_name) is (db == owner)


def test_allow_relation_only_within_one_database():
    """Objects in different databases cannot be related; same-database objects can."""
    r = DatabaseRouter()
    assert r.allow_relation(User(), User()) is True
    assert r.allow_relation(User(), Order()) is False
    assert r.allow_relation(Product(), Order()) is False


@pytest.mark.django_db(databases=ALL_DATABASES)
@pytest.mark.parametrize("alias", ALL_DATABASES)
def test_each_database_holds_only_its_own_tables(alias):
    """Introspecting every database: a model's table only in its alias, contrib only in default."""
    tables = set(connections[alias].introspection.table_names()) - {"django_migrations"}
    for owner, table in MODEL_TABLES.items():
        assert (table in tables) is (alias == owner), (alias, table)
    has_contrib = {"auth_user", "auth_group", "django_content_type"} <= tables
    assert has_contrib is (alias == "default")
    if alias != "default":
        assert tables == {MODEL_TABLES[alias]}


@sqlite_only
@pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)
def test_orm_writes_without_using_land_in_the_routed_file():
    """A plain ``objects.create`` is committed to the model's own file and nowhere else."""
    user = User.objects.create(name="Ada", email="ada@example.com")
    product = Product.objects.create(name="Lamp", price="12.50")
    assert (user._state.db, product._state.db) == ("users", "products")
    assert raw_query("users", "SELECT id, email FROM users") == [(user.pk, "ada@example.com")]
    assert raw_query("products", "SELECT id, name FROM products") == [(product.pk, "Lamp")]
    assert "users" not in sqlite_tables("products") | sqlite_tables("orders")


@sqlite_only
def test_migrate_all_creates_every_file_with_its_tables(tmp_path):
    """``manage.py migrate_all`` on an empty DATA_DIR builds four files, each with its tables."""
    env = {**os.environ, "DATA_DIR": str(tmp_path / "db")}
    run = subprocess.run(
        [sys.executable, "manage.py", "migrate_all", "--verbosity", "1"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    for alias in ALL_DATABASES:
        assert f"Database '{alias}'" in run.stdout

    def tables_and_mode(alias: str) -> tuple[set[str], str]:
        with closing(sqlite3.connect(tmp_path / "db" / f"{alias}.sqlite3")) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            names = {name for (name,) in rows} - {"django_migrations", "sqlite_sequence"}
            return names, conn.execute("PRAGMA journal_mode").fetchone()[0]

    for alias, table in MODEL_TABLES.items():
        assert tables_and_mode(alias) == ({table}, "wal")
    names, _ = tables_and_mode("default")
    assert {"auth_user", "django_content_type"} <= names
    assert names.isdisjoint(MODEL_TABLES.values())


REPLICAS = {"users": ["users_replica1", "users_replica2"]}


@pytest.fixture(autouse=True)
def _replicas_unmonitored(settings):
    """The routing tests name replicas that do not exist: every one takes reads
    (`api.db.replicas` is off); the monitor's own test turns it on."""
    settings.REPLICA_CHECK_SECONDS = 0


def test_reads_go_to_a_replica_until_the_scope_writes(settings):
    """Reads use a replica; after a write to the alias, that alias's reads use the primary."""
    settings.DATABASE_REPLICAS = REPLICAS
    with primary_pinning():
        reads = {router.db_for_read(User) for _ in range(50)}
        assert reads == set(REPLICAS["users"])
        assert router.db_for_read(Product) == "products"
        assert router.db_for_write(User) == "users"
        assert router.db_for_read(User) == "users"
        assert pinned_aliases() == {"users"}


def test_pinning_ends_with_its_scope(settings):
    """A new scope (the next request on the same thread) reads from replicas again."""
    settings.DATABASE_REPLICAS = REPLICAS
    with primary_pinning():
        router.db_for_write(User)
    with primary_pinning():
        assert router.db_for_read(User) in REPLICAS["users"]


def test_replicas_get_no_tables():
    """Migrations never run on a replica alias; it copies its primary."""
    assert router.allow_migrate("users_replica1", "api", model_name="user") is False


@pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)
def test_batch_inserts_pin_their_callers_reads(settings):
    """After an insert, the caller reads the aliases the batch wrote from their primaries,
    and only those: an order's references are read, not written."""
    settings.DATABASE_REPLICAS = REPLICAS
    with primary_pinning():
        batch_insert(users=[{"name": "Ann", "email": "ann@example.com"}])
        assert pinned_aliases() == {"users"}
        assert router.db_for_read(User) == "users"
    with primary_pinning():
        batch_insert(orders=[{"user_id": 1, "product_id": 1, "quantity": 1}])
        assert pinned_aliases() == {"orders"}
    with primary_pinning():
        batch_insert(
            users=[{"name": "Bo", "email": "bo@example.com"}],
            products=[{"name": "Lamp", "price": "1.00"}],
        )
        assert pinned_aliases() == {"users", "products"}


def test_each_request_starts_unpinned_and_leaves_no_pins_behind():
    """The middleware gives a request a clean scope and restores the thread's own after."""
    seen = []

    def view(request):
        seen.append(pinned_aliases())
        return HttpResponse()

    with primary_pinning():
        router.db_for_write(Order)
        primary_pinning_middleware(view)(RequestFactory().get("/"))
        assert seen == [frozenset()]
        assert pinned_aliases() == {"orders"}


def writing_view(*models):
    """A view that writes to ``models``' aliases (routes them) and reports its scope."""

    def view(request):
        for model in models:
            router.db_for_write(model)
        return HttpResponse(",".join(sorted(pinned_aliases())))

    return view


def cookie_after(request, view) -> str | None:
    response = primary_pinning_middleware(view)(request)
    morsel = response.cookies.get(PINNING_COOKIE)
    return morsel.value if morsel else None


BOTH_REPLICATED = {"users": ["users_replica1"], "orders": ["orders_replica1"]}


def test_a_write_pins_the_clients_next_requests_by_a_signed_cookie(settings):
    """A POST that writes answers with a cookie naming the replicated aliases it wrote; a
    later request that returns it reads them from the primary, others do not."""
    settings.DATABASE_REPLICAS = BOTH_REPLICATED
    factory = RequestFactory()
    cookie = cookie_after(factory.post("/"), writing_view(User, Product))
    assert cookie is not None
    response = primary_pinning_middleware(writing_view())(
        factory.get("/", HTTP_COOKIE=f"{PINNING_COOKIE}={cookie}")
    )
    assert response.content == b"users"  # products has no replica: nothing to pin
    assert PINNING_COOKIE not in response.cookies  # a read renews nothing
    assert primary_pinning_middleware(writing_view())(factory.get("/")).content == b""


def test_pinning_cookies_are_not_set_without_replicas_nor_for_reads(settings):
    settings.DATABASE_REPLICAS = {}
    assert cookie_after(RequestFactory().post("/"), writing_view(User)) is None
    settings.DATABASE_REPLICAS = BOTH_REPLICATED
    assert cookie_after(RequestFactory().get("/"), writing_view(User)) is None


@given(st.text(max_size=80))
def test_a_forged_or_altered_cookie_pins_nothing(value):
    assert pinned_by_cookie(value) == frozenset()


def test_a_pinning_cookie_expires_after_the_window(settings):
    settings.DATABASE_REPLICAS = BOTH_REPLICATED
    cookie = cookie_after(RequestFactory().post("/"), writing_view(Order))
    assert pinned_by_cookie(cookie) == {"orders"}
    altered = cookie.replace("orders", "users", 1)
    assert pinned_by_cookie(altered) == frozenset()
    settings.REPLICA_PINNING_SECONDS = 0
    time.sleep(1.01)  # the signature's timestamp counts whole seconds
    assert pinned_by_cookie(cookie) == frozenset()


@pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)
def test_the_fast_path_reads_the_primary_for_a_pinned_client(settings, caplog):
    """The replica alias here does not exist: a lookup that reads the primary (pinned by
    the cookie) answers 200, one that follows the router to the replica cannot."""
    settings.DATABASE_REPLICAS = {"users": ["users_nowhere"]}
    User.objects.create(id=5, name="Pinned", email="pinned@example.com")
    cookie = cookie_after(RequestFactory().post("/"), writing_view(User))
    app = FastPathHandler()
    env = environ("type=get&user_id=5", HTTP_COOKIE=f"{PINNING_COOKIE}={cookie}")
    status, _, body = call(app, env)
    assert status == "200 OK" and body["results"][0]["name"] == "Pinned"
    assert call(app, environ("type=get&user_id=5"))[0].startswith("500")  # to the replica


@pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)
def test_reads_skip_a_replica_until_its_check_finds_it_well(settings):
    """Monitored: a replica takes no reads before its first check (a monitor whose thread
    has not checked: none usable, all "unchecked"), nor while its check fails (an alias
    that is not configured: "error"); one that its check found well does, and the
    primary serves the reads of a store whose only replica is out. (The primary stands in
    for its own replica here; the real one is in test_replica.py.)"""
    settings.REPLICA_CHECK_SECONDS = 0.05
    settings.DATABASE_REPLICAS = {"users": ["users"], "orders": ["missing_replica"]}
    unstarted = ReplicaMonitor()
    unstarted._pid = os.getpid()  # as if its thread ran here: it never checks
    assert unstarted.usable(["users", "missing_replica"]) == []
    assert {h.state for h in unstarted.report().values()} == {"unchecked"}
    MONITOR.stop()
    try:
        deadline = time.monotonic() + 5
        while "unchecked" in {h.state for h in MONITOR.report().values()}:
            assert time.monotonic() < deadline, MONITOR.report()
            time.sleep(0.05)
        assert MONITOR.usable(["users", "missing_replica"]) == ["users"]
        assert MONITOR.report()["users"].state == "ok"
        assert MONITOR.report()["missing_replica"].state == "error"
        assert router.db_for_read(Order) == "orders"  # its only replica is out: the primary
    finally:
        MONITOR.stop()  # its thread's connections closed before the test databases go


@pytest.fixture
def unreachable_replicas(tmp_path):
    """``{alias: replica alias}`` for the three stores: connections that are refused
    (PostgreSQL: a port nothing listens on; SQLite: a file in a directory that is not
    there), this thread's only: Django's test case allows connections it did not set up."""
    added = {}
    for alias in ("users", "products", "orders"):
        replica = f"{alias}_down"
        database = {**connections.settings[alias]}
        if database["ENGINE"].endswith("sqlite3"):
            database["NAME"] = str(tmp_path / "absent" / f"{alias}.sqlite3")
        else:
            database["HOST"], database["PORT"] = "127.0.0.1", str(free_port())
        connections[replica] = load_backend(database["ENGINE"]).DatabaseWrapper(database, replica)
        added[alias] = replica
    yield added
    for replica in added.values():
        connections[replica].close()
        del connections[replica]
        compiled._by_thread.__dict__.pop(replica, None)


@pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)
def test_a_read_that_fails_on_a_replica_is_read_again_on_the_primary(
    settings, shop, unreachable_replicas
):
    """Every replica refuses connections and takes reads (no monitor): each lookup, and
    the orders and products it includes, is answered 200 from the primaries in the same
    request; the replicas are marked unreachable and the primaries' read breakers stay
    closed (a replica's failure is not the primary's)."""
    settings.REPLICA_CHECK_SECONDS = 0
    settings.DATABASE_REPLICAS = {a: [r] for a, r in unreachable_replicas.items()}
    app = FastPathHandler()
    with primary_pinning():  # the shop's writes pinned this thread's reads: a new scope
        assert router.db_for_read(User) == "users_down"
        status, _, body = call(app, environ("type=get&user_id=10&include=orders"))
        assert status == "200 OK", body
        assert [o["product"]["name"] for o in body["results"][0]["orders"]] == ["Lamp", "Desk"]
        status, _, body = call(app, environ("type=get&email=user11@example.com"))
        assert status == "200 OK" and body["results"][0]["id"] == 11, body
        assert user_exists(user_id=10) and table_stats()["users"]["rows"] == 5
    # Django's views: a list, a detail, a user's orders (read through DRF's generic views)
    for replica in unreachable_replicas.values():
        MONITOR._health.pop(replica, None)
    client = Client()
    for path, expected in [
        ("/api/products/", {1, 2}),
        ("/api/products/2/", {2}),
        ("/api/users/10/orders/", {1, 2}),
    ]:
        with primary_pinning():
            response = client.get(path)
        assert response.status_code == 200, response.content
        body = response.json()
        rows = body.get("results", [body])
        assert {row["id"] for row in rows} == expected, path
    assert {MONITOR._health[r].state for r in unreachable_replicas.values()} == {"unreachable"}
    assert not any(READ_BREAKERS[store].open_until for store in unreachable_replicas)
