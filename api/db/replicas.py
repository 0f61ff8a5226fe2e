"""Which read replicas take reads: a per-process monitor of their health and lag.

A replica that is down, or whose replication lag exceeds ``REPLICA_MAX_LAG_SECONDS``
(5 s), leaves the rotation until a check finds it well again; reads of its alias go to
another replica or to the primary (`api.db.routers`). The checks run in one daemon thread
per process, every ``REPLICA_CHECK_SECONDS`` (2 s), on that thread's own connections, so
requests only read the latest result and never wait for a check. Until its first check a
replica takes no reads. Each result goes to the metrics too (`publish`).

Each replica is its own breaker, apart from its store's read breaker
(`api.db.breakers.READ_BREAKERS`, the primary's): a read that fails on a replica
(refused, dropped, timed out) takes it out of the rotation at once (`ReplicaMonitor.failed`)
and is read again on the primary in the same request (`api.db.routers.read_with_fallback`),
so a replica's failure never reaches a client nor opens the primary's breaker. The monitor's
next check that starts after the failure is the breaker's probe: it puts the replica back.

``REPLICA_CHECK_SECONDS=0`` turns the monitor off: every replica
takes reads (the router's unit tests, mirrored test replicas).

Lag on PostgreSQL is how long replay is behind its primary: each check first reads the
primary's WAL position (`PRIMARY_POSITION_SQL`) and `PrimaryPositions` keeps when the
primary first reached each one; then the replica's replay position
(``pg_last_wal_replay_lsn()``). A replica that has replayed the latest position lags 0;
otherwise it lags since the primary first passed what it has replayed (a lower bound,
within one check period). So an idle primary with a caught-up replica reports 0 (a commit
long ago is not lag), a restarted replica is judged by what it replayed (not by what it
has received, which restarts at a segment's start), and one whose replay stopped
(``pg_wal_replay_pause()``, a conflict, a slow disk) lags from the primary's first write
it did not replay. A replica behind every position this process has seen, before it has
seen one for ``REPLICA_MAX_LAG_SECONDS``, is `UNCHECKED` (its lag is not known yet). When
the primary cannot be read, the positions seen before judge. Other backends (mirrored test
replicas): 0 when ``SELECT 1`` answers.
"""

import logging
import math
import os
import threading
import time
from collections import deque
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, connections

from api.db.failures import ERROR, failure_kind
from api.metrics import REPLICA_IN_ROTATION, REPLICA_LAG

logger = logging.getLogger(__name__)

OK, LAGGING, UNCHECKED = "ok", "lagging", "unchecked"  # or a failure kind: "unreachable", …
# The position a replica must replay to be caught up: a primary's current WAL position
# (its last replayed one, should the "primary" be a standby itself), in bytes.
PRIMARY_POSITION_SQL = """
SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END
    - '0/0'::pg_lsn
"""
# A promoted replica (no longer in recovery) has nothing to replay: None.
REPLAYED_SQL = """
SELECT CASE WHEN pg_is_in_recovery() THEN coalesce(pg_last_wal_replay_lsn() - '0/0'::pg_lsn, 0) END
"""
MAX_POSITIONS = 4096  # one per check that saw the primary write: hours at 2 s


class PrimaryPositions:
    """The WAL positions (bytes) one primary reached, each with when it was first seen
    (``time.time()`` seconds), oldest first; at most `MAX_POSITIONS`."""

    def __init__(self) -> None:
        self._seen: deque[tuple[float, int]] = deque(maxlen=MAX_POSITIONS)

    def record(self, at: float, position: int) -> None:
        """The primary was at ``position`` at ``at``; kept only if it moved on."""
        if not self._seen or position > self._seen[-1][1]:
            self._seen.append((at, position))

    def lag(self, now: float, replayed: int) -> tuple[float, bool] | None:
        """``(seconds, exact)``: how long replay at ``replayed`` is behind at ``now``; 0 once
        it reached the latest position. ``exact`` is False when it is behind every position
        kept (the seconds are then a lower bound). None before any position is known."""
        if not self._seen:
            return None
        if replayed >= self._seen[-1][1]:
            return 0.0, True
        for index, (at, position) in enumerate(self._seen):
            if position > replayed:  # the first position the replica has not replayed
                return max(0.0, now - at), index > 0
        raise AssertionError("unreachable: the latest position is past replayed")


def primary_position(alias: str) -> int | None:
    """The primary ``alias``'s WAL position in bytes, on this thread's connection; None
    when it is not PostgreSQL or cannot be read (never raises)."""
    connection = connections[alias]
    if connection.vendor != "postgresql":
        return None
    try:
        with connection.cursor() as cursor:
            cursor.execute(PRIMARY_POSITION_SQL)
            return int(cursor.fetchone()[0])
    except DatabaseError:
        connection.close()  # the next check connects afresh
        return None


@dataclass(frozen=True)
class ReplicaHealth:
    """One check's result: ``state`` (`OK`, `LAGGING`, `UNCHECKED` or a failure kind),
    ``lag_s`` (seconds, None when unknown) and when it was checked (``time.time()``)."""

    state: str
    lag_s: float | None = None
    checked_at: float | None = None


def check_replica(
    alias: str, max_lag_s: float, positions: PrimaryPositions | None = None
) -> ReplicaHealth:
    """Measure ``alias``'s lag on this thread's connection against its primary's
    ``positions`` (recorded just before); never raises."""
    connection = connections[alias]
    try:
        with connection.cursor() as cursor:
            if connection.vendor != "postgresql":
                cursor.execute("SELECT 1")
                return ReplicaHealth(OK, 0.0, time.time())
            cursor.execute(REPLAYED_SQL)
            replayed = cursor.fetchone()[0]
    except DatabaseError as exc:
        connection.close()  # the next check connects afresh
        return ReplicaHealth(failure_kind(exc), None, time.time())
    now = time.time()
    measured = None if replayed is None or positions is None else positions.lag(now, replayed)
    if measured is None:  # promoted, or no position of the primary known to compare with
        return ReplicaHealth(OK, 0.0 if replayed is None else None, now)
    lag_s, exact = measured
    if lag_s > max_lag_s:
        return ReplicaHealth(LAGGING, round(lag_s, 3), now)
    return ReplicaHealth(OK if exact else UNCHECKED, round(lag_s, 3), now)


def publish(alias: str, health: ReplicaHealth) -> None:
    """Put replica ``alias``'s latest ``health`` in the metrics: its lag (NaN when unknown)
    and whether reads go to it (`api.metrics.REPLICA_LAG`, `REPLICA_IN_ROTATION`)."""
    REPLICA_LAG.labels(alias).set(math.nan if health.lag_s is None else health.lag_s)
    REPLICA_IN_ROTATION.labels(alias).set(1 if health.state == OK else 0)


class ReplicaMonitor:
    """The latest `ReplicaHealth` of every replica alias, refreshed by a daemon thread."""

    def __init__(self) -> None:
        self._health: dict[str, ReplicaHealth] = {}
        self._positions: dict[str, PrimaryPositions] = {}  # by primary alias; the thread's
        self._lock = threading.Lock()
        self._updating = threading.Lock()  # one writer of _health at a time; readers need none
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
            health = ReplicaHealth(kind, None, time.time())
            with self._updating:  # the monitor's thread replaces the dict too
                self._health = {**self._health, alias: health}
            publish(alias, health)
            logger.warning("replica %r: a read failed (%s); out of the rotation", alias, kind)
        return kind

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._health, self._positions = {}, {}
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
            for primary, replicas in settings.DATABASE_REPLICAS.items():
                positions = self._positions.setdefault(primary, PrimaryPositions())
                at = time.time()
                position = primary_position(primary)
                if position is not None:
                    positions.record(at, position)
                for alias in replicas:
                    started = time.time()
                    try:
                        health = check_replica(alias, max_lag_s, positions)
                    except Exception:  # a bug must not end the thread (reads would stop)
                        logger.exception("replica %r: its check failed", alias)
                        health = ReplicaHealth("error", None, time.time())
                    with self._updating:
                        before = self._health.get(alias)
                        if before is not None and (before.checked_at or 0) > started:
                            continue  # a read failed during the check: its verdict stands
                        self._health = {**self._health, alias: health}
                    publish(alias, health)
                    if before is None or before.state != health.state:
                        log = logger.info if health.state == OK else logger.warning
                        log("replica %r: %s (lag %s s)", alias, health.state, health.lag_s)
            stopping.wait(settings.REPLICA_CHECK_SECONDS or 1.0)


MONITOR = ReplicaMonitor()
