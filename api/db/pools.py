"""Pooled connections a database server dropped: all replaced at once, not one per checkout.

With Django's pool (``DATABASE_POOL=1``, psycopg_pool) a checkout checks the idle
connection it draws. After the server restarts every idle connection is dead, and the
pool finds them one checkout at a time: a checkout that draws a dead one sleeps 1 s
(then 2 s, ...) before it draws again, until its timeout. So a request could still fail
(a 503) seconds after the server was back, and a store's breaker probe could fail on a
dead connection and keep the store shed for another cool-down.

`check_soon` asks psycopg_pool's own ``ConnectionPool.check()`` to test every idle
connection of a store's pools (its primary's and its replicas', and every other pool on
those servers) in a thread of its own:
the dead ones are closed and replaced, or, while the server is still down, given up after
``reconnect_timeout``, so that a checkout once the server is back makes a new connection.
It runs when a breaker records an ``unreachable`` failure (`api.db.breakers`); one check
per pool at a time. Persistent connections (no pool) need none of this: the lookup itself
is their health check (`api.db.compiled._fetch_dbapi`). Requests left waiting when the
pool gives up connecting: `api.db.pool_waiters`.
"""

import logging
import threading

import psycopg
from django.db import connections

from api.db.routers import replicas_by_alias
from api.domain.stores import STORES

logger = logging.getLogger(__name__)
_checking: set[str] = set()  # aliases whose pool a thread is checking now
_lock = threading.Lock()


def check_soon(store: str) -> list[threading.Thread]:
    """Check the idle connections of ``store``'s pools (primary and replicas) and of every
    other pool on the same servers, each in a daemon thread; the threads started (none
    for an alias without a pool, or whose pool a thread is checking already). A check
    that fails with psycopg's error (a pool closed while shutting down, say) is logged;
    anything else is a bug, printed by the thread's ``threading.excepthook``.

    The other stores' pools on a server too: a restart ended their connections as well,
    and a store that saw no failure while the server was away would find its dead ones
    on its first checkouts after the return (a 503 after 2 s in ``test_restart.py``)."""
    started: list[threading.Thread] = []
    if store not in STORES:
        return started
    alias = STORES[store].alias
    for each in same_servers((alias, *replicas_by_alias().get(alias, ()))):
        pool = getattr(connections[each], "pool", None)  # None: no pool, or not PostgreSQL
        if pool is None:
            continue
        with _lock:
            if each in _checking:
                continue
            _checking.add(each)
        thread = threading.Thread(
            target=_check, args=(each, pool), name=f"pool-check-{each}", daemon=True
        )
        thread.start()
        started.append(thread)
    return started


def same_servers(aliases: tuple[str, ...]) -> list[str]:
    """``aliases``, then every other alias on one of their servers (``HOST`` and ``PORT``
    as configured), in ``DATABASES`` order."""
    servers = {server_of(alias) for alias in aliases}
    return [
        *aliases,
        *(a for a in connections.settings if a not in aliases and server_of(a) in servers),
    ]


def server_of(alias: str) -> tuple[str, str]:
    params = connections.settings[alias]
    return params.get("HOST") or "", str(params.get("PORT") or "")


def _check(alias: str, pool) -> None:
    try:
        pool.check()
    except psycopg.Error:  # the pool's own errors (PoolClosed, ...) are psycopg's
        logger.warning("checking the connection pool of %s failed", alias, exc_info=True)
    finally:
        with _lock:
            _checking.discard(alias)
