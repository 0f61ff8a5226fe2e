"""Pooled connections the server dropped (`api.db.pools`): replaced at once, not one per
checkout; and made for the requests waiting once the server is back
(`api.db.pool_waiters`). A real psycopg_pool pool on the test PostgreSQL server, its
connections ended by the server (``pg_terminate_backend``), as a restart ends them, or the
server made unreachable and reachable again by a TCP forwarder in front of it
(`Forwarder`)."""

import contextlib
import socket
import socketserver
import threading
import time
import uuid

import psycopg
import pytest
from django.db import connections
from django.db.utils import OperationalError
from psycopg_pool import ConnectionPool, PoolTimeout

from api.db.breakers import READ_TRANSIENT, StoreBreaker
from api.db.pool_waiters import regrow_for_waiters
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
    pool = open_pool("users")
    yield pool
    pool.close()


def open_pool(alias: str) -> ConnectionPool:
    """An open pool of `SIZE` checked connections to ``alias``'s database, named so the
    server can end them."""
    name = f"pool-test-{uuid.uuid4().hex[:8]}"
    pool = ConnectionPool(
        conninfo(alias),
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
    return pool


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


@pytest.fixture
def two_stores_pools(monkeypatch):
    """``connections["users"].pool`` and ``connections["orders"].pool``: two pools on the
    one test server."""
    pools = {alias: open_pool(alias) for alias in ("users", "orders")}
    wrapper = type(connections["users"])
    monkeypatch.setattr(wrapper, "pool", property(lambda self: pools.get(self.alias)))
    yield pools
    for each in pools.values():
        each.close()


def test_an_unreachable_failure_checks_the_other_stores_pools_on_that_server(
    two_stores_pools,
):
    """A server restart ended every store's connections; the store that saw no failure
    (orders) has its dead ones replaced too, before its first checkout."""
    orders = two_stores_pools["orders"]
    assert end_its_connections(orders) == SIZE
    breaker = StoreBreaker("users", READ_TRANSIENT, cooldown_s=10)
    breaker.failed(OperationalError("server closed the connection unexpectedly"))
    deadline = time.monotonic() + 10
    while lost(orders) < SIZE and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lost(orders) == SIZE
    assert checkout_seconds(orders) < 0.5


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


class Forwarder:
    """A TCP forwarder to the test server on a port of its own: `down` closes its port
    (connections are refused, open ones cut, as when a server stops) and `up` opens it
    again. The standard library's ``socketserver``; a thread per direction."""

    def __init__(self, upstream: tuple[str, int]):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.upstream = upstream
        self.server: socketserver.ThreadingTCPServer | None = None
        self.sockets: set[socket.socket] = set()

    def up(self) -> None:
        forwarder = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                upstream = socket.create_connection(forwarder.upstream)
                forwarder.sockets |= {self.request, upstream}
                back = threading.Thread(target=pump, args=(upstream, self.request), daemon=True)
                back.start()
                pump(self.request, upstream)
                back.join()

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        for each in list(self.sockets):
            cut(each)


def pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        cut(source)
        cut(target)


def cut(each: socket.socket) -> None:
    with contextlib.suppress(OSError):
        each.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def forwarded_pool():
    """``(pool, forwarder)``: a pool of one connection through a `Forwarder` that is up,
    giving a lost connection up after 0.5 s, with `regrow_for_waiters` as the settings
    configure it; the pool closed and the forwarder down after the test."""
    params = connections["users"].settings_dict
    forwarder = Forwarder((params["HOST"] or "127.0.0.1", int(params["PORT"] or 5432)))
    forwarder.up()
    pool = ConnectionPool(
        psycopg.conninfo.make_conninfo(
            dbname=params["NAME"], user=params["USER"], host="127.0.0.1", port=forwarder.port
        ),
        min_size=1,
        max_size=2,
        timeout=5.0,
        reconnect_timeout=0.5,
        reconnect_failed=regrow_for_waiters,
        check=ConnectionPool.check_connection,
        kwargs={"autocommit": True},
        open=True,
    )
    pool.wait(timeout=10)
    yield pool, forwarder
    pool.close()
    forwarder.down()


def test_a_request_waiting_when_the_pool_gives_up_gets_a_connection_once_the_server_is_back(
    forwarded_pool,
):
    """psycopg_pool alone strands it until its timeout (5 s here): its one attempt to
    grow gave up while the server was away, and it tries again only when a request starts
    to wait. With `regrow_for_waiters` the request is served about a second after the
    server's return."""
    pool, forwarder = forwarded_pool
    forwarder.down()
    time.sleep(0.2)  # the pool's connection is cut
    served: list[float] = []

    def request():
        with pool.connection() as conn:
            conn.execute("SELECT 1")
        served.append(time.monotonic())

    waiting = threading.Thread(target=request)
    waiting.start()
    time.sleep(1.5)  # the pool tried, retried, and gave up (reconnect_timeout 0.5 s)
    assert waiting.is_alive() and not served  # still waiting: the server is away
    back = time.monotonic()
    forwarder.up()
    waiting.join(timeout=10)
    assert served and served[0] - back < 2.0, "the waiting request was not served"


def test_nothing_is_asked_of_a_pool_no_request_waits_for(forwarded_pool):
    """A connection attempt given up with nobody waiting starts no thread: the next
    request to wait makes the pool connect anyway."""
    pool, _ = forwarded_pool
    assert regrow_for_waiters(pool) is None
