"""What kind of failure a database error is, and the errors database code raises.

A client is told the store and the kind (`failure_kind`, one of `KINDS`), never the
driver's message, which can carry SQL, host names, ports, roles and file paths: ``locked``,
``timeout``, ``unreachable``, ``missing`` (its table or database is not there), ``corrupt``
(SQLite: the file is not a database), ``full``, ``busy`` (refused before reaching the
store) or ``error``. PostgreSQL's kinds come from the SQLSTATE; SQLite passes no codes
through Django, so its kinds come from the text of sqlite3's error. `unavailable_reason`
is the one sentence a client reads about it.

`StoreUnavailable` is a `DatabaseError` that names its store and kind: a breaker raises it
for a failed operation, and `StoreShed` for one refused without touching the store. The
HTTP layer (`api.http.errors`) turns any `DatabaseError` into a 503.
"""

from django.db import DatabaseError

LOCKED, TIMEOUT, UNREACHABLE, FULL, ERROR = "locked", "timeout", "unreachable", "full", "error"
MISSING, CORRUPT = "missing", "corrupt"
BUSY = "busy"  # refused before reaching the store: its queue is full (`api.db.bulkheads`)
KINDS = (LOCKED, TIMEOUT, UNREACHABLE, MISSING, CORRUPT, FULL, BUSY, ERROR)
SQLSTATE_KINDS = {
    "55P03": LOCKED,  # lock_not_available (lock_timeout)
    "40P01": LOCKED,  # deadlock_detected
    "57014": TIMEOUT,  # query_canceled (statement_timeout)
    "53100": FULL,  # disk_full
    "2200H": FULL,  # sequence_generator_limit_exceeded
    "57P01": UNREACHABLE,  # admin_shutdown
    "57P03": UNREACHABLE,  # cannot_connect_now
    "42P01": MISSING,  # undefined_table
    "3D000": MISSING,  # invalid_catalog_name
}
SQLITE_KINDS = (
    ("locked", LOCKED),
    ("busy", LOCKED),
    ("full", FULL),
    ("unable to open", UNREACHABLE),
    ("no such table", MISSING),
    ("not a database", CORRUPT),
    ("malformed", CORRUPT),
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
    """One of `KINDS`: what a client may know. A `StoreUnavailable` carries its ``kind``."""
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


def unavailable_reason(store: str, kind: str) -> str:
    """``"database 'users' unavailable (locked); retry later"``: all a client reads of a
    store's failure, from a store name and one of `KINDS` (anything else is ``error``)."""
    return f"database {store!r} unavailable ({kind if kind in KINDS else ERROR}); retry later"
