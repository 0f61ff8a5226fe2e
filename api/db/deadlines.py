"""How long a store's connection may wait for a lock, for one batch.

SQLite waits for its write lock at ``BEGIN IMMEDIATE`` for the busy timeout; PostgreSQL
for any lock for ``lock_timeout``. `waits_at_most` sets either from the batch's deadline.
"""

from contextlib import contextmanager
from math import floor

from django.db import connections

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
    for this batch, reset afterwards (the connection may go back to a pool).
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
        with connection.cursor() as cursor:
            # A lock wait ends at the deadline (reported "locked"); a statement that is
            # slow for another reason is stopped a second later (reported "timeout").
            # One round trip for both.
            cursor.execute(
                "SELECT set_config('lock_timeout', %s, false),"
                " set_config('statement_timeout', %s, false)",
                [str(milliseconds), str(milliseconds + 1000)],
            )
        try:
            yield
        finally:
            if connection.connection is not None and not connection.needs_rollback:
                with connection.cursor() as cursor:
                    # Two statements, one round trip (client-side binding sends them as
                    # one query); reading reset_val from pg_settings built the whole view.
                    cursor.execute("RESET lock_timeout; RESET statement_timeout")
    else:
        yield


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
