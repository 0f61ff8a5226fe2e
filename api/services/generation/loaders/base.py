"""The loader interface: one table's generated rows into its database, in one transaction.

Every loader writes the whole load of its table in **one transaction**: `Loader.begin`
(optionally emptying the table), `write` batch after batch, `finish` (indexes, statistics,
sequences), then `commit` or `rollback`. A load is thus all or nothing per database, and the
runner can hold every database's commit until all three are ready
(`api.services.generation.runner`). `begin` re-checks, inside the transaction, that no row
took the planned ids since planning (`ConcurrentWriteError` otherwise).

Rows arrive as tuples in the model's column order with database-ready values
(`api.services.generation.values`), or, for a loader with ``copy_text``, as lines of
PostgreSQL's ``COPY`` text format (each generator's ``copy_text=True``). A loader is
created in the parent (it reads the table's state for planning) and used in one worker,
which opens its own connection.
"""

from collections.abc import Sequence

from django.db.models import Count, Max, Model

SQL_VARIABLES = 900  # stay far below SQLITE_MAX_VARIABLE_NUMBER in IN (...) lists


class Loader:
    """Load rows of ``model`` into ``alias`` inside one transaction (the portable base).

    ``fork_safe``: the loader opens its own connection in the worker and never touches
    Django's, so the worker may be a forked process (Django's connections, and psycopg's
    pool with its threads, do not survive a fork). ``copy_text``: `write` also takes a
    batch of ``COPY`` text lines (``str``) instead of tuples.
    """

    fork_safe = False
    copy_text = False

    def __init__(self, *, alias: str, model: type[Model], columns: Sequence[str]) -> None:
        self.alias, self.model, self.columns = alias, model, tuple(columns)
        self.table = model._meta.db_table

    def stored(self) -> tuple[int, int]:
        """``(rows, next free id)`` of the table now; run in the parent, before the load."""
        state = self.model.objects.using(self.alias).aggregate(rows=Count("id"), top=Max("id"))
        return state["rows"], (state["top"] or 0) + 1

    def begin(self, *, clear: bool, first_id: int, stored: int, count: int) -> None:
        raise NotImplementedError

    def write(self, rows: list[tuple]) -> None:
        raise NotImplementedError

    def taken_emails(self, emails: list[str]) -> set[str]:
        """Which of ``emails`` the table already holds (users only)."""
        raise NotImplementedError

    def finish(self) -> None:
        """Work after the last row and before the commit (indexes, statistics)."""

    def commit(self) -> None:
        raise NotImplementedError

    def rollback(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release the worker's connection (after commit or rollback)."""


class ConcurrentWriteError(RuntimeError):
    """Another writer added rows after planning: the planned ids are no longer free."""
