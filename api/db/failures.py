"""What kind of failure a database error is, and the errors database code raises.

A client is told the kind (`failure_kind`), never the driver's message: ``locked``,
``timeout``, ``unreachable``, ``full``, ``busy`` (refused before reaching the store) or
``error``. PostgreSQL's kinds come from the SQLSTATE; SQLite passes no codes through
Django, so its kinds come from the text of sqlite3's error.

`StoreUnavailable` is a `DatabaseError` that names its store and kind: a breaker raises it
for a failed operation, and `StoreShed` for one refused without touching the store. The
HTTP layer (`api.http.errors`) turns any `DatabaseError` into a 503.
"""

from django.db import DatabaseError

LOCKED, TIMEOUT, UNREACHABLE, FULL, ERROR = "locked", "timeout", "unreachable", "full", "error"
BUSY = "busy"  # refused before reaching the store: its queue is full (`api.db.bulkheads`)
SQLSTATE_KINDS = {
    "55P03": LOCKED,  # lock_not_available (lock_timeout)
    "40P01": LOCKED,  # deadlock_detected
    "57014": TIMEOUT,  # query_canceled (statement_timeout)
    "53100": FULL,  # disk_full
    "2200H": FULL,  # sequence_generator_limit_exceeded
    "57P01": UNREACHABLE,  # admin_shutdown
    "57P03": UNREACHABLE,  # cannot_connect_now
}
SQLITE_KINDS = (
    ("locked", LOCKED),
    ("busy", LOCKED),
    ("full", FULL),
    ("unable to open", UNREACHABLE),
)


class StoreUnavailable(DatabaseError):
    """An operation on ``store`` failed with a failure of ``kind`` (`failure_kind`)."""

    def __init__(self, store: str, kind: str, message: str | None = None):
        super().__init__(message or f"{store}: {kind}")
        self.store, self.kind = store, kind


class StoreShed(StoreUnavailable):
    """A request for ``store`` refused without touching it: its breaker is open (``kind``
    is the failure that opened it) or its queue is full (``busy``)."""

    def __init__(self, store: str, kind: str):
        super().__init__(store, kind, f"{store}: shed ({kind})")


def failure_kind(exc: DatabaseError) -> str:
    """``locked``, ``timeout``, ``unreachable``, ``full``, ``busy`` or ``error``: what a
    client may know. A `StoreUnavailable` carries its ``kind``."""
    if getattr(exc, "kind", None):
        return exc.kind
    cause = exc.__cause__
    sqlstate = getattr(cause, "sqlstate", None)
    if sqlstate in SQLSTATE_KINDS:
        return SQLSTATE_KINDS[sqlstate]
    text = str(exc).lower()
    if "timeout" in text or "timed out" in text:
        return TIMEOUT
    if sqlstate is None and ("connect" in text or "connection" in text or "pool" in text):
        return UNREACHABLE
    for words, kind in SQLITE_KINDS:
        if words in text:
            return kind
    return ERROR
