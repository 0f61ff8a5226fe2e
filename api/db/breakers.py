"""Circuit breakers: a store that is locked, slow or down fails its own requests fast.

Each store has a `StoreBreaker` for reads (`READ_BREAKERS`) and one for writes
(`WRITE_BREAKERS`). When an operation on a store fails in a way that will likely repeat
(locked past its wait, timed out, unreachable), the breaker opens for
``STORE_COOLDOWN_SECONDS``: requests that need that store are refused at once
(`StoreShed`) instead of tying a worker up for the whole wait, so requests for the other
stores keep their normal latency. After the cool-down one request probes the store,
waiting at most `PROBE_WAIT_SECONDS` for a lock; its success closes the breaker, its
failure opens it again. A write breaker opens on a lock too; a read breaker does not
(SQLite's readers never wait for its writers).

Each breaker's state and trips are in the metrics (`api.metrics.BREAKER_OPEN`,
`BREAKER_TRIPS`, labelled by store and access).

Hand-written rather than pybreaker: pybreaker holds one lock for the whole protected call,
which would serialise every lookup of a store through one thread.
"""

from threading import Lock
from time import monotonic

from django.conf import settings
from django.db import DatabaseError

from api.db.failures import (
    LOCKED,
    TIMEOUT,
    UNREACHABLE,
    StoreShed,
    StoreUnavailable,
    failure_kind,
)
from api.db.pools import check_soon
from api.domain.stores import STORE_NAMES
from api.metrics import BREAKER_OPEN, BREAKER_TRIPS

READ, WRITE = "read", "write"  # a breaker's access, its label in the metrics
PROBE_WAIT_SECONDS = 0.25  # a probe finds out; it need not wait out a lock that persists
READ_TRANSIENT = frozenset({TIMEOUT, UNREACHABLE})
WRITE_TRANSIENT = frozenset({LOCKED, TIMEOUT, UNREACHABLE})


class StoreBreaker:
    """The circuit breaker of one store for one kind of access; a context manager.

    ``with breaker: ...`` raises `StoreShed` at once while it is open, and turns a
    `DatabaseError` inside into a `StoreUnavailable` naming its store and kind, opening
    the breaker when that kind is in ``transient``.
    """

    __slots__ = (
        "_lock",
        "_open_gauge",
        "_trips",
        "access",
        "cooldown_s",
        "kind",
        "open_until",
        "store",
        "transient",
    )

    def __init__(
        self,
        store: str,
        transient: frozenset[str],
        cooldown_s: float | None = None,
        access: str = READ,
    ):
        self.store, self.transient, self.access = store, transient, access
        self.cooldown_s = settings.STORE_COOLDOWN_SECONDS if cooldown_s is None else cooldown_s
        self.open_until = 0.0  # monotonic seconds; 0.0 when closed
        self.kind = ""
        self._lock = Lock()
        self._open_gauge = BREAKER_OPEN.labels(store, access)
        self._trips = BREAKER_TRIPS.labels(store, access)

    def check(self) -> bool:
        """Raise `StoreShed` while open; past the cool-down, let one caller probe.

        Returns True for that probe (it should wait at most `PROBE_WAIT_SECONDS`).
        """
        until = self.open_until
        if not until:
            return False
        if monotonic() >= until:
            with self._lock:
                if self.open_until == until:  # the first caller past the cool-down probes
                    self.open_until = monotonic() + self.cooldown_s
                    return True
        raise StoreShed(self.store, self.kind)

    def succeeded(self) -> None:
        """Close the breaker: the store answered."""
        if self.open_until:
            self.open_until = 0.0
            self._open_gauge.set(0)

    def failed(self, exc: DatabaseError) -> str:
        """Record a failure; open the breaker if its kind will likely repeat. Its kind.

        An ``unreachable`` store's pooled connections are checked at once (`check_soon`):
        after a server restart they are all dead, and none should outlive the outage.
        """
        kind = failure_kind(exc)
        if kind == UNREACHABLE:
            check_soon(self.store)
        if kind in self.transient:
            self.kind = kind
            if not self.open_until:  # a failed probe keeps it open: no new trip
                self._trips.inc()
                self._open_gauge.set(1)
            self.open_until = monotonic() + self.cooldown_s
        return kind

    def __enter__(self) -> None:
        if self.open_until:
            self.check()

    def __exit__(self, exc_type, exc, traceback) -> bool:
        if exc is None:
            if self.open_until:
                self.succeeded()
            return False
        if isinstance(exc, DatabaseError) and not isinstance(exc, StoreUnavailable):
            kind = self.failed(exc)
            raise StoreUnavailable(self.store, kind, str(exc)) from exc
        return False


READ_BREAKERS = {store: StoreBreaker(store, READ_TRANSIENT, access=READ) for store in STORE_NAMES}
WRITE_BREAKERS = {
    store: StoreBreaker(store, WRITE_TRANSIENT, access=WRITE) for store in STORE_NAMES
}
