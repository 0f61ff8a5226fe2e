"""Which read replicas take reads: a per-process monitor of their health and lag.

A replica that is down, or whose replication lag exceeds ``REPLICA_MAX_LAG_SECONDS``
(5 s), leaves the rotation until a check finds it well again; reads of its alias go to
another replica or to the primary (`api.db.routers`). The checks run in one daemon thread
per process, every ``REPLICA_CHECK_SECONDS`` (2 s), on that thread's own connections, so
requests only read the latest result and never wait for a check. Until its first check a
replica takes no reads.

Each replica is its own breaker, apart from its store's read breaker
(`api.db.breakers.READ_BREAKERS`, the primary's): a read that fails on a replica
(refused, dropped, timed out) takes it out of the rotation at once (`ReplicaMonitor.failed`)
and is read again on the primary in the same request (`api.db.routers.read_with_fallback`),
so a replica's failure never reaches a client nor opens the primary's breaker. The monitor's
next check that starts after the failure is the breaker's probe: it puts the replica back.

``REPLICA_CHECK_SECONDS=0`` turns the monitor off: every replica
takes reads (the router's unit tests, mirrored test replicas).

Lag on PostgreSQL: 0 when the standby has replayed all it received, otherwise the age
of the last transaction it replayed (``pg_last_xact_replay_timestamp()``), so a standby
that stopped replaying (``pg_wal_replay_pause()``, a conflict, a slow disk) ages while
its primary commits. Other backends (mirrored test replicas): 0 when ``SELECT 1`` answers.
"""

import logging
import os
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, connections

from api.db.failures import ERROR, failure_kind

logger = logging.getLogger(__name__)

OK, LAGGING, UNCHECKED = "ok", "lagging", "unchecked"  # or a failure kind: "unreachable", …
LAG_SQL = """
SELECT CASE
    WHEN NOT pg_is_in_recovery() OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
    ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)
END
"""


@dataclass(frozen=True)
class ReplicaHealth:
    """One check's result: ``state`` (`OK`, `LAGGING`, `UNCHECKED` or a failure kind),
    ``lag_s`` (seconds, None when unknown) and when it was checked (``time.time()``)."""

    state: str
    lag_s: float | None = None
    checked_at: float | None = None


def check_replica(alias: str, max_lag_s: float) -> ReplicaHealth:
    """Measure ``alias``'s lag on this thread's connection; never raises."""
    connection = connections[alias]
    try:
        with connection.cursor() as cursor:
            cursor.execute(LAG_SQL if connection.vendor == "postgresql" else "SELECT 1")
            lag_s = float(cursor.fetchone()[0]) if connection.vendor == "postgresql" else 0.0
    except DatabaseError as exc:
        connection.close()  # the next check connects afresh
        return ReplicaHealth(failure_kind(exc), None, time.time())
    return ReplicaHealth(OK if lag_s <= max_lag_s else LAGGING, round(lag_s, 3), time.time())


class ReplicaMonitor:
    """The latest `ReplicaHealth` of every replica alias, refreshed by a daemon thread."""

    def __init__(self) -> None:
        self._health: dict[str, ReplicaHealth] = {}
        self._lock = threading.Lock()
        self._pid: int | None = None  # the process whose thread runs (Gunicorn forks)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def usable(self, replicas: list[str]) -> list[str]:
        """Those of ``replicas`` that take reads now (all of them when monitoring is off)."""
        if not settings.REPLICA_CHECK_SECONDS:
            return replicas
        if self._pid != os.getpid():
            self._start()
        health = self._health
        return [alias for alias in replicas if alias in health and health[alias].state == OK]

    def report(self) -> dict[str, ReplicaHealth]:
        """Every replica alias's latest health (`UNCHECKED` before its first check)."""
        if not settings.DATABASE_REPLICAS:
            return {}
        if settings.REPLICA_CHECK_SECONDS and self._pid != os.getpid():
            self._start()
        return {
            alias: self._health.get(alias, ReplicaHealth(UNCHECKED))
            for replicas in settings.DATABASE_REPLICAS.values()
            for alias in replicas
        }

    def failed(self, alias: str, exc: DatabaseError) -> str:
        """Take replica ``alias`` out of the rotation after a read on it failed with ``exc``,
        until a check started later finds it well; its failure kind (`failure_kind`).

        Kind ``error`` (the statement itself failed, or a conflict with replay cancelled
        it) leaves it in: the server answers, and its check would find it well at once.
        """
        kind = failure_kind(exc)
        if kind != ERROR:
            self._health = {**self._health, alias: ReplicaHealth(kind, None, time.time())}
            logger.warning("replica %r: a read failed (%s); out of the rotation", alias, kind)
        return kind

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._health = {}
            self._stopping = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(self._stopping,), name="replica-monitor", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """End the thread (it closes its connections) and forget every result; the next
        `usable` starts it again."""
        with self._lock:
            self._stopping.set()
            if self._thread is not None and self._pid == os.getpid():
                self._thread.join(timeout=10)
            self._pid, self._thread, self._health = None, None, {}

    def _run(self, stopping: threading.Event) -> None:
        try:
            self._check_until(stopping)
        finally:
            connections.close_all()  # this thread's own

    def _check_until(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            max_lag_s = settings.REPLICA_MAX_LAG_SECONDS
            for replicas in settings.DATABASE_REPLICAS.values():
                for alias in replicas:
                    started = time.time()
                    try:
                        health = check_replica(alias, max_lag_s)
                    except Exception:  # a bug must not end the thread (reads would stop)
                        logger.exception("replica %r: its check failed", alias)
                        health = ReplicaHealth("error", None, time.time())
                    before = self._health.get(alias)
                    if before is not None and (before.checked_at or 0) > started:
                        continue  # a read failed during the check: its verdict stands
                    if before is None or before.state != health.state:
                        log = logger.info if health.state == OK else logger.warning
                        log("replica %r: %s (lag %s s)", alias, health.state, health.lag_s)
                    self._health = {**self._health, alias: health}
            stopping.wait(settings.REPLICA_CHECK_SECONDS or 1.0)


MONITOR = ReplicaMonitor()
