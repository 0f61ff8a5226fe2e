"""How long a store's connection may wait: for a lock, for one batch; for any read.

SQLite waits for its write lock at ``BEGIN IMMEDIATE`` for the busy timeout; PostgreSQL
for any lock for ``lock_timeout``. `waits_at_most` bounds a batch's part by its deadline,
and `atomic_within_deadline` is the transaction that honours it: on SQLite the busy
timeout is set before ``BEGIN``, on PostgreSQL the timeouts are set ``LOCAL`` to the
transaction by its first statement, sent with its ``BEGIN`` (one round trip, nothing to
reset afterwards).

Reads: in a process that serves requests (`serve_with_read_deadlines`, called by
``data_project.wsgi``), every PostgreSQL connection of a store or replica runs a statement
for at most ``READ_DEADLINE_SECONDS`` (``statement_timeout``, set once per connection), so
a locked or stalled store fails its own lookups (a 503 of kind ``timeout``, which opens
its read breaker) instead of holding the server's threads. SQLite reads in WAL mode take
no lock. Commands are not bounded: a load or a migration runs as long as it needs.
"""

import weakref
from contextlib import contextmanager
from math import floor
from threading import local

from django.db import DatabaseError, Error, connections, transaction
from django.db.backends.signals import connection_created

from api.db.compiled import server_binding_cursor
from api.db.query_timing import observed, timed
from api.db.routers import DEFAULT_ALIAS

# SQLite's busy timeout is set in steps of this many milliseconds, rounded down: the
# batches of a request thread or a store's worker then mostly find it already set.
SQLITE_STEP_MS = 100


@contextmanager
def waits_at_most(alias: str, seconds: float | None):
    """Bound how long the connection of ``alias`` waits for a lock; None: its own timeout.

    SQLite: the busy timeout (``BEGIN IMMEDIATE`` waits there), rounded down to
    `SQLITE_STEP_MS` and set only when the connection holds another value; it is left set
    afterwards, because every write on a routed alias sets its own and a read in WAL mode
    takes no lock. PostgreSQL: ``lock_timeout``, and ``statement_timeout`` a second later,
    for the transactions of `atomic_within_deadline` inside the block.
    """
    connection = connections[alias]
    if connection.vendor == "sqlite":
        default_ms = round(1000 * connection.settings_dict["OPTIONS"].get("timeout", 5))
        milliseconds = default_ms
        if seconds is not None:
            steps = floor(1000 * seconds / SQLITE_STEP_MS)
            milliseconds = min(max(steps * SQLITE_STEP_MS, 1), default_ms)
        _set_busy_timeout(connection, milliseconds)
        yield
    elif connection.vendor == "postgresql" and seconds is not None:
        milliseconds = max(1, round(1000 * seconds))
        pending = _deadline_ms.__dict__
        previous = pending.get(alias)
        pending[alias] = milliseconds
        try:
            yield
        finally:
            if previous is None:
                del pending[alias]
            else:
                pending[alias] = previous
    else:
        yield


_deadline_ms = local()  # alias -> the deadline of the part running in this thread, in ms
# A lock wait ends at the deadline (reported "locked"); a statement that is slow for
# another reason is stopped a second later (reported "timeout"). LOCAL: until COMMIT or
# ROLLBACK.
SET_LOCAL_TIMEOUTS = (
    "SELECT set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true)"
)


@contextmanager
def atomic_within_deadline(alias: str):
    """``transaction.atomic(using=alias)`` whose statements wait for locks no longer than
    the deadline `waits_at_most` set for this thread's part (none set: the connection's own
    timeouts). Raises `django.db.DatabaseError` as ``atomic`` and its statements do.

    On SQLite, outside any atomic block and with queries not observed, the transaction is
    `_sqlite_write_transaction`'s (``atomic``'s outermost block on the DB-API connection).
    On PostgreSQL the ``SET LOCAL`` statement is also the connection's health check
    (``CONN_HEALTH_CHECKS``), as a lookup is on the fast path: Django's own check is a
    ``SELECT 1`` round trip before the transaction. When it fails on a connection that
    then proves dead (the server restarted, or ended it while idle), nothing was written,
    and the transaction starts again once on a new connection, as Django's check would.
    """
    connection = connections[alias]
    milliseconds = _deadline_ms.__dict__.get(alias)
    if (
        connection.vendor == "sqlite"
        and not connection.in_atomic_block
        and not observed(connection)
    ):
        with _sqlite_write_transaction(connection):
            yield
        return
    if milliseconds is None or connection.vendor != "postgresql":
        with transaction.atomic(using=alias):
            yield
        return
    params = [str(milliseconds), str(milliseconds + 1000)]
    checked = (
        connection.health_check_enabled
        and not connection.health_check_done
        and connection.connection is not None
        and not connection.in_atomic_block
    )
    if checked:
        connection.health_check_done = True  # the statement below is the check
    for retry in (checked, False):
        atomic = transaction.atomic(using=alias)
        atomic.__enter__()
        raw = connection.connection
        try:
            _set_local_timeouts(connection, alias, params)
        except DatabaseError as exc:
            atomic.__exit__(type(exc), exc, exc.__traceback__)
            # Leaving atomic rolled back, or, the rollback failing, closed the connection
            # (and may have opened a new one): either way the old one is gone or proven.
            if retry and (connection.connection is not raw or not connection.is_usable()):
                connection.close()
                continue
            raise
        break
    try:
        yield
    except BaseException as exc:
        atomic.__exit__(type(exc), exc, exc.__traceback__)
        raise
    atomic.__exit__(None, None, None)


OUTERMOST = transaction.Atomic(None, savepoint=False, durable=False)


@contextmanager
def _sqlite_write_transaction(connection):
    """What ``transaction.atomic`` does for an outermost block on SQLite (``BEGIN
    IMMEDIATE``, then ``COMMIT``, or ``ROLLBACK`` on an exception), on the DB-API
    connection.

    Django's own costs twice the two statements (its cursor wrapper for ``BEGIN``, the
    autocommit switches around it: docs/performance.md, "Validated inserts"). Django's
    connection is left in the state ``Atomic`` gives it, so that a nested ``atomic`` makes
    a savepoint, ``on_commit`` callbacks run after the commit, and a connection closed
    inside is dropped at the end; the Django code this mirrors is pinned in
    ``test_fastpath_internals``. Queries observed (``DEBUG``, execute wrappers) take
    ``atomic`` itself, which logs its statements.
    """
    connection.ensure_connection()
    connection.validate_thread_sharing()
    raw = connection.connection
    connection.commit_on_exit = True
    connection.needs_rollback = False
    with connection.wrap_database_errors:
        # The backend's transaction_mode (settings); timed as Django's cursor would time it.
        timed(connection.alias, raw.execute, "BEGIN IMMEDIATE")
    connection.autocommit = False
    connection.in_atomic_block = True
    # What a nested durable block checks: it is not outermost.
    connection.atomic_blocks.append(OUTERMOST)
    try:
        yield
    except BaseException:
        _end_sqlite_transaction(connection, commit=False)
        raise
    _end_sqlite_transaction(connection, commit=not connection.needs_rollback)


def _end_sqlite_transaction(connection, *, commit: bool) -> None:
    """``Atomic.__exit__`` of an outermost block, for `_sqlite_write_transaction`."""
    connection.atomic_blocks.pop()
    connection.in_atomic_block = False
    try:
        if connection.closed_in_transaction:
            pass  # the database rolled back by itself
        elif commit:
            try:
                with connection.wrap_database_errors:
                    connection.connection.commit()
                connection.errors_occurred = False
            except DatabaseError:
                try:
                    connection.rollback()
                except Error:
                    connection.close()
                raise
        else:
            connection.needs_rollback = False
            try:
                connection.rollback()
            except Error:
                connection.close()
    finally:
        if connection.closed_in_transaction:
            connection.connection = None
        else:
            connection.autocommit = True
            if commit and connection.run_on_commit:
                connection.run_and_clear_commit_hooks()


def _set_local_timeouts(connection, alias: str, params: list[str]) -> None:
    if observed(connection):  # Django's cursor, so that the observer sees it
        with connection.cursor() as cursor:
            cursor.execute(SET_LOCAL_TIMEOUTS, params)
        return
    timed(alias, _set_local_timeouts_dbapi, connection, alias, params)


def _set_local_timeouts_dbapi(connection, alias: str, params: list[str]) -> None:
    raw = connection.connection
    with connection.wrap_database_errors, raw.pipeline():
        # In a pipeline, psycopg sends the transaction's BEGIN with it: one round trip.
        server_binding_cursor(alias, raw).execute(SET_LOCAL_TIMEOUTS, params)


def _set_busy_timeout(connection, milliseconds: int) -> None:
    """``PRAGMA busy_timeout`` on ``connection`` unless its DB-API connection has it."""
    connection.ensure_connection()
    raw = connection.connection
    kept = connection.__dict__.get("_busy_timeout_ms")
    if kept is not None and kept[0] is raw and kept[1] == milliseconds:
        return
    with connection.cursor() as cursor:
        cursor.execute(f"PRAGMA busy_timeout = {milliseconds}")
    connection._busy_timeout_ms = (raw, milliseconds)


_read_deadline_ms: int | None = None
_deadlined: "weakref.WeakSet" = weakref.WeakSet()  # DB-API connections already set


def serve_with_read_deadlines(seconds: float | None) -> None:
    """Bound every statement of this process's PostgreSQL store and replica connections
    by ``seconds`` (``READ_DEADLINE_SECONDS``; None or 0: unbounded), from the next
    connection on. For processes that serve requests; a batch's transaction sets its own
    (`atomic_within_deadline`)."""
    global _read_deadline_ms
    _read_deadline_ms = max(1, round(1000 * seconds)) if seconds else None
    connection_created.connect(_set_read_deadline, dispatch_uid="api.db.deadlines.read")


def _set_read_deadline(sender, connection, **kwargs) -> None:
    """``statement_timeout`` on a new connection; once per connection a pool hands out."""
    if (
        _read_deadline_ms is None
        or connection.vendor != "postgresql"
        or connection.alias == DEFAULT_ALIAS
        or connection.connection in _deadlined
    ):
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('statement_timeout', %s, false)", [str(_read_deadline_ms)]
        )
    _deadlined.add(connection.connection)
