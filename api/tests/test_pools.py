"""Pooled connections the server dropped (`api.db.pools`): replaced at once, not one per
checkout. A real psycopg_pool pool on the test PostgreSQL server, its connections ended by
the server (``pg_terminate_backend``), as a restart ends them."""

import time
import uuid

import psycopg
import pytest
from django.db import connections
from django.db.utils import OperationalError
from psycopg_pool import ConnectionPool, PoolTimeout

from api.db.breakers import READ_TRANSIENT, StoreBreaker
from api.db.pools import check_soon
from api.tests.conftest import postgresql_only

pytestmark = postgresql_only
SIZE = 3


def conninfo(alias: str = "users") -> str:
    params = connections[alias].settings_dict
    return psycopg.conninfo.make_conninfo(
        dbname=params["NAME"], user=params["USER"], host=params["HOST"], port=params["PORT"]
    )


@pytest.fixture
def pool():
    """An open pool of `SIZE` checked connections, named so the server can end them."""
    name = f"pool-test-{uuid.uuid4().hex[:8]}"
    pool = ConnectionPool(
        conninfo(),
        min_size=SIZE,
        max_size=SIZE,
        timeout=2.5,
        reconnect_timeout=2.0,
        check=ConnectionPool.check_connection,
        kwargs={"autocommit": True, "application_name": name},
        open=True,
    )
    pool.wait(timeout=10)
    pool.name_on_server = name
    yield pool
    pool.close()


def end_its_connections(pool) -> int:
    """What a server restart does to the pool's idle connections; how many it ended."""
    with psycopg.connect(conninfo(), autocommit=True) as admin:
        ended = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = %s",
            (pool.name_on_server,),
        ).fetchone()[0]
    time.sleep(0.2)  # the ended sessions' sockets close
    return ended


def checkout_seconds(pool) -> float:
    started = time.monotonic()
    try:
        with pool.connection() as conn:
            conn.execute("SELECT 1")
    except PoolTimeout:
        pass
    return time.monotonic() - started


@pytest.fixture
def users_pool(monkeypatch, pool):
    """``connections["users"].pool`` is ``pool`` (the suite's aliases are not pooled)."""
    wrapper = type(connections["users"])
    monkeypatch.setattr(
        wrapper, "pool", property(lambda self: pool if self.alias == "users" else None)
    )
    return pool


def test_without_a_check_a_checkout_finds_the_dead_connections_one_at_a_time(pool):
    """Why `check_soon`: psycopg_pool checks the one connection a checkout draws, and after
    a dead one waits a second before it draws again."""
    assert end_its_connections(pool) == SIZE
    assert checkout_seconds(pool) >= 0.9


def test_an_unreachable_failure_replaces_every_dead_pooled_connection_at_once(users_pool):
    """A breaker recording an ``unreachable`` failure has the store's pool check every
    idle connection: the next checkout gets a live one without waiting."""
    assert end_its_connections(users_pool) == SIZE
    breaker = StoreBreaker("users", READ_TRANSIENT, cooldown_s=10)
    breaker.failed(OperationalError("server closed the connection unexpectedly"))
    deadline = time.monotonic() + 10  # the check runs in a thread of its own
    while lost(users_pool) < SIZE and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lost(users_pool) == SIZE
    assert checkout_seconds(users_pool) < 0.5


def lost(pool) -> int:
    """Connections the pool found broken and replaced, per psycopg_pool's statistics."""
    return pool.get_stats().get("connections_lost", 0)


def test_one_check_per_pool_at_a_time(users_pool):
    """Failures in a burst start one check of a pool, not one each."""
    first = check_soon("users")
    again = check_soon("users")
    assert len(first) == 1 and again == []
    first[0].join(timeout=10)
    assert not first[0].is_alive()
    assert len(check_soon("users")) == 1  # once done, the next failure checks again


def test_stores_without_a_pool_start_no_check():
    """The suite's aliases are persistent connections: nothing to check."""
    assert check_soon("users") == [] and check_soon("orders") == []
