"""Requests waiting for a pooled connection when psycopg_pool gives up connecting.

`regrow_for_waiters` is the pools' ``reconnect_failed`` (``settings.DATABASE_POOL_OPTIONS``,
which imports it before Django is set up: this module imports none of Django).
psycopg_pool makes a connection for waiting requests only when a request starts to wait
(psycopg issue #438): when its one attempt to grow gives up (``reconnect_timeout`` after
the server went away), the requests already waiting get no connection until their
timeout, however soon the server is back; each then fails with a 503 and trips its
store's breaker for a cool-down more. So while requests wait, a thread of its own asks
for a connection again (a request starting to wait, as far as the pool can tell), until
none waits. ``api/tests/test_pools.py`` proves it with the server behind a TCP forwarder.
"""

import logging
import threading

import psycopg
from psycopg_pool import PoolTimeout

logger = logging.getLogger(__name__)
_regrowing: set[str] = set()  # names of the pools a thread asks connections of now
_lock = threading.Lock()
REGROW_WAIT_SECONDS = 1.0  # how long each ask waits: the pool's first retry comes after ~1 s


def regrow_for_waiters(pool) -> threading.Thread | None:
    """psycopg_pool's ``reconnect_failed`` callback: ``pool`` gave up a connection attempt.

    While requests wait for one of its connections, a daemon thread asks ``pool`` for a
    connection every `REGROW_WAIT_SECONDS` at most, which makes the pool try to connect
    again at once, and returns it unused; it stops when no request waits, when it got one,
    or when the pool closes. Returns the thread started, or None (nothing waits, or a
    thread does this for ``pool`` already).
    """
    if not pool.get_stats().get("requests_waiting"):
        return None
    with _lock:
        if pool.name in _regrowing:
            return None
        _regrowing.add(pool.name)
    thread = threading.Thread(
        target=_ask_while_waited_for, args=(pool,), name=f"regrow-{pool.name}", daemon=True
    )
    thread.start()
    return thread


def _ask_while_waited_for(pool) -> None:
    try:
        # Read between asks, so this thread's own wait is not counted.
        while not pool.closed and pool.get_stats().get("requests_waiting"):
            try:
                with pool.connection(timeout=REGROW_WAIT_SECONDS):
                    return
            except PoolTimeout:  # still down: ask again while requests wait
                continue
    except psycopg.Error:  # closed while asking (PoolClosed), a check that failed
        logger.info("asking pool %s for a connection failed", pool.name, exc_info=True)
    finally:
        with _lock:
            _regrowing.discard(pool.name)
