"""How long a store's connection may wait for a lock, for one batch.

SQLite waits for its write lock at ``BEGIN IMMEDIATE`` for the busy timeout; PostgreSQL
for any lock for ``lock_timeout``. `waits_at_most` sets either from the batch's deadline
and puts it back afterwards (the connection may be a request thread's, or go back to a
pool).
"""

from contextlib import contextmanager

from django.db import connections


@contextmanager
def waits_at_most(alias: str, seconds: float | None, *, shared: bool = True):
    """Bound how long the connection of ``alias`` waits for a lock; None: its own timeout.

    SQLite: the busy timeout (``BEGIN IMMEDIATE`` waits there), put back afterwards only
    when the connection is ``shared`` (a request thread's; a store's worker owns its
    connection and sets it again for its next batch); PostgreSQL: ``lock_timeout``, and
    ``statement_timeout`` a second later, for this batch, reset afterwards (the connection
    may go back to a pool).
    """
    connection = connections[alias]
    if connection.vendor == "sqlite":
        default_ms = round(1000 * connection.settings_dict["OPTIONS"].get("timeout", 5))
        milliseconds = default_ms if seconds is None else min(round(1000 * seconds), default_ms)
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA busy_timeout = {milliseconds}")
        try:
            yield
        finally:
            if shared and milliseconds != default_ms and connection.connection is not None:
                with connection.cursor() as cursor:
                    cursor.execute(f"PRAGMA busy_timeout = {default_ms}")
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
