"""Loaders: how one table's generated rows get into its database, one class per backend.

Every loader writes the whole load of its table in **one transaction**: `begin` (optionally
emptying the table), `write` batch after batch, `finish` (indexes, statistics, sequences),
then `commit` or `rollback`. A load is thus all or nothing per database, an interrupted
or failed run leaves the tables as they were, and the runner can hold every database's
commit until all three are ready (`api.services.generation.runner`).

- `SqliteLoader` (SQLite): the stdlib driver's ``executemany`` on the database file, with
  a 16 MB page cache during the load. Synchronous stays ``NORMAL``, as the server runs:
  the load is one transaction, which WAL syncs once, so ``OFF`` saved nothing measurable
  (``docs/performance.md``) and would have let a power loss during a load corrupt a file
  whose other rows a running server had acknowledged. When the new rows outnumber
  the stored ones, secondary indexes are dropped first and re-created at the end with the
  exact SQL that ``sqlite_master`` held, so migrations see the schema unchanged (the
  unique index on ``users.email`` is part of the table and stays). ``ANALYZE`` runs before
  the commit; afterwards the file returns to WAL, as the server expects. The journal stays
  WAL throughout: measured, rollback-journal modes were no faster, and WAL keeps the load
  crash-safe and works while the server has the file open.
- `CopyLoader` (PostgreSQL): ``COPY … FROM STDIN`` in text format through psycopg's
  ``write_row``, on the worker's own psycopg connection (so it is fork-safe and loads in
  processes). One ``COPY`` stays open across batches, so the server stores a batch while
  the worker generates the next; any other statement ends it first. When the new rows are
  many, secondary indexes, and the unique constraint on ``users.email`` when the table
  starts empty, are dropped first and re-created at the end from their
  ``pg_indexes.indexdef`` (the constraint re-attached ``USING INDEX``), so the schema ends
  exactly as migrations made it; the primary key stays. The id sequence moves past the
  planned ids when the load begins, never backwards; ``ANALYZE`` runs before the commit.
  Why text ``COPY``, one per run, and the rebuilt indexes: ``docs/performance.md``.
- `OrmLoader` (any other backend): Django's ``bulk_create`` with explicit ids; on
  PostgreSQL the id sequence is first moved past them, elsewhere Django resets it after.

`begin` re-checks, inside the transaction, that no row took the planned ids since planning
(`ConcurrentWriteError` otherwise).

Rows arrive as tuples in the model's column order with database-ready values (see
`api.services.generation.values`). A loader is created in the parent (it reads the table's
state for planning) and used in one worker, which opens its own connection.
"""

import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime

import psycopg
from django.conf import settings
from django.core.management.color import no_style
from django.db import connections, transaction
from django.db.models import Count, DateTimeField, Max, Model
from psycopg import sql as pg_sql

SQLITE_CACHE_KIB = 16 * 1024  # measured: 16 MB loads as fast as 32–128 MB, with less memory
SQL_VARIABLES = 900  # stay far below SQLITE_MAX_VARIABLE_NUMBER in IN (...) lists
# PostgreSQL waits for a lock forever by default: two runs at once, each holding a table
# the other needs until all of its tables are ready, would never end. Fail instead, after
# as long as SQLite's busy timeout.
LOCK_TIMEOUT_S = 20.0
# The share of new rows past which the indexes are rebuilt rather than maintained
# (measured: docs/performance.md); readers wait while they are gone.
COPY_REBUILD_SHARE = 0.5


class Loader:
    """Load rows of ``model`` into ``alias`` inside one transaction (the portable base).

    ``fork_safe``: the loader opens its own connection in the worker and never touches
    Django's, so the worker may be a forked process (Django's connections, and psycopg's
    pool with its threads, do not survive a fork).
    """

    fork_safe = False

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


class SqliteLoader(Loader):
    """``executemany`` on the SQLite file, indexes rebuilt after the load when worth it."""

    fork_safe = True

    def __init__(self, *, alias: str, model: type[Model], columns: Sequence[str]) -> None:
        super().__init__(alias=alias, model=model, columns=columns)
        settings = connections[alias].settings_dict
        self.path = str(settings["NAME"])
        self.timeout = float(settings.get("OPTIONS", {}).get("timeout", 20))
        names = ", ".join(f'"{c}"' for c in self.columns)
        marks = ", ".join("?" * len(self.columns))
        self.insert_sql = f'INSERT INTO "{self.table}" ({names}) VALUES ({marks})'
        self.conn: sqlite3.Connection | None = None
        self.dropped: list[str] = []

    def stored(self) -> tuple[int, int]:
        # AUTOINCREMENT never reuses an id, even a deleted one's; neither do we.
        rows, next_id = super().stored()
        with connections[self.alias].cursor() as cursor:
            cursor.execute("SELECT seq FROM sqlite_sequence WHERE name = %s", [self.table])
            row = cursor.fetchone()
        return rows, max(next_id, (row[0] if row else 0) + 1)

    def begin(self, *, clear: bool, first_id: int, stored: int, count: int) -> None:
        self.conn = conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        conn.execute(f"PRAGMA synchronous = {settings.SQLITE_SYNCHRONOUS}")
        conn.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
        conn.execute("BEGIN IMMEDIATE")
        if clear:
            conn.execute(f'DELETE FROM "{self.table}"')
            conn.execute("DELETE FROM sqlite_sequence WHERE name = ?", [self.table])
        else:
            self._check_unchanged(first_id)
        if clear or count >= stored:
            self._drop_indexes()

    def _check_unchanged(self, first_id: int) -> None:
        top = self.conn.execute(f'SELECT max(id) FROM "{self.table}"').fetchone()[0] or 0
        seq = self.conn.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = ?", [self.table]
        ).fetchone()
        if max(top, seq[0] if seq else 0) >= first_id:
            raise ConcurrentWriteError(
                f"{self.table}: rows were added during planning (ids from {first_id} are no "
                "longer free); run generate_data again"
            )

    def _drop_indexes(self) -> None:
        """Drop secondary indexes, keeping their exact SQL to re-create them in `finish`."""
        indexes = self.conn.execute(
            "SELECT name, sql FROM sqlite_master "
            "WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL ORDER BY name",
            [self.table],
        ).fetchall()
        for name, sql in indexes:
            self.conn.execute(f'DROP INDEX "{name}"')
            self.dropped.append(sql)

    def write(self, rows: list[tuple]) -> None:
        self.conn.executemany(self.insert_sql, rows)

    def taken_emails(self, emails: list[str]) -> set[str]:
        taken = set()
        for start in range(0, len(emails), SQL_VARIABLES):
            chunk = emails[start : start + SQL_VARIABLES]
            marks = ", ".join("?" * len(chunk))
            sql = f'SELECT email FROM "{self.table}" WHERE email IN ({marks})'
            taken.update(email for (email,) in self.conn.execute(sql, chunk))
        return taken

    def finish(self) -> None:
        while self.dropped:
            self.conn.execute(self.dropped.pop(0))
        self.conn.execute(f'ANALYZE "{self.table}"')

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.conn is not None and self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        self.dropped.clear()  # the rollback restored them

    def close(self) -> None:
        if self.conn is None:
            return
        try:
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self.conn.close()
            self.conn = None


class OrmLoader(Loader):
    """``bulk_create`` through Django: works on every backend Django supports.

    On PostgreSQL the id sequence is moved past the planned ids when the load begins
    (``setval`` is not transactional), so concurrent inserts through the API take ids after
    ours instead of colliding with them; elsewhere Django resets the sequence afterwards.
    """

    def __init__(self, *, alias: str, model: type[Model], columns: Sequence[str]) -> None:
        super().__init__(alias=alias, model=model, columns=columns)
        fields = {f.attname: f for f in model._meta.concrete_fields}
        self.datetimes = [
            i for i, c in enumerate(self.columns) if isinstance(fields[c], DateTimeField)
        ]
        self.postgresql = connections[alias].vendor == "postgresql"

    def stored(self) -> tuple[int, int]:
        rows, next_id = super().stored()
        sequence = self._sequence()
        if sequence:
            with connections[self.alias].cursor() as cursor:
                cursor.execute(f"SELECT last_value, is_called FROM {sequence}")
                last, called = cursor.fetchone()
            next_id = max(next_id, last + 1 if called else last)
        return rows, next_id

    def _sequence(self) -> str | None:
        """The PostgreSQL sequence behind ``id`` (None elsewhere)."""
        if not self.postgresql:
            return None
        with connections[self.alias].cursor() as cursor:
            cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [self.table])
            return cursor.fetchone()[0]

    def begin(self, *, clear: bool, first_id: int, stored: int, count: int) -> None:
        transaction.set_autocommit(False, using=self.alias)
        connection = connections[self.alias]
        if clear:
            flush = connection.ops.sql_flush(no_style(), [self.table], reset_sequences=True)
            connection.ops.execute_sql_flush(flush)
        elif self.stored()[1] > first_id:
            raise ConcurrentWriteError(
                f"{self.table}: rows were added during planning; run generate_data again"
            )
        sequence = self._sequence()
        if sequence and count:
            with connection.cursor() as cursor:
                cursor.execute("SELECT setval(%s, %s)", [sequence, first_id + count - 1])

    def write(self, rows: list[tuple]) -> None:
        objects = [
            self.model(**dict(zip(self.columns, self._values(row), strict=True))) for row in rows
        ]
        self.model.objects.using(self.alias).bulk_create(objects)

    def _values(self, row: tuple) -> Iterable:
        if not self.datetimes:
            return row
        values = list(row)
        for i in self.datetimes:
            values[i] = datetime.fromisoformat(values[i]).replace(tzinfo=UTC)
        return values

    def taken_emails(self, emails: list[str]) -> set[str]:
        users = self.model.objects.using(self.alias)
        taken = set()
        for start in range(0, len(emails), SQL_VARIABLES):
            chunk = emails[start : start + SQL_VARIABLES]
            taken.update(users.filter(email__in=chunk).values_list("email", flat=True))
        return taken

    def finish(self) -> None:
        if self.postgresql:
            return  # the sequence was moved past our ids in `begin`
        connection = connections[self.alias]
        with connection.cursor() as cursor:
            for sql in connection.ops.sequence_reset_sql(no_style(), [self.model]):
                cursor.execute(sql)

    def commit(self) -> None:
        transaction.commit(using=self.alias)

    def rollback(self) -> None:
        if not transaction.get_autocommit(using=self.alias):
            transaction.rollback(using=self.alias)

    def close(self) -> None:
        transaction.set_autocommit(True, using=self.alias)
        connections[self.alias].close()


class CopyLoader(Loader):
    """``COPY`` on the worker's own psycopg connection, indexes rebuilt when worth it.

    Dropping an index takes an ``ACCESS EXCLUSIVE`` lock until the commit (so does the
    ``TRUNCATE`` of ``--clear``): readers of the table wait for the load. Indexes are
    therefore dropped only when that is clearly faster: new rows at least half as many
    as the stored ones (`COPY_REBUILD_SHARE`).
    """

    fork_safe = True

    def __init__(self, *, alias: str, model: type[Model], columns: Sequence[str]) -> None:
        super().__init__(alias=alias, model=model, columns=columns)
        settings = connections[alias].settings_dict
        params = connections[alias].get_connection_params()
        # Django's cursor class and adapters are for its own connections; ours sends text.
        for key in ("cursor_factory", "context"):
            params.pop(key, None)
        self.params, self.role = params, settings["OPTIONS"].get("assume_role")
        self.relation = f'"{self.table}"'
        names = ", ".join(f'"{c}"' for c in self.columns)
        self.copy_sql = f"COPY {self.relation} ({names}) FROM STDIN"
        self.conn: psycopg.Connection | None = None
        self.copying: ExitStack | None = None  # the open COPY, if any
        self.copy: psycopg.Copy | None = None
        self.dropped: list[tuple[str, str | None]] = []  # (indexdef, unique constraint)

    def stored(self) -> tuple[int, int]:
        # The sequence may be past the stored rows (deleted rows, failed inserts): new ids
        # start after both, so no id is ever reused.
        rows, next_id = super().stored()
        with connections[self.alias].cursor() as cursor:
            cursor.execute(
                "SELECT pg_sequence_last_value(pg_get_serial_sequence(%s, 'id')::regclass)",
                [self.relation],
            )
            last = cursor.fetchone()[0]
        return rows, max(next_id, (last or 0) + 1)

    def begin(self, *, clear: bool, first_id: int, stored: int, count: int) -> None:
        self.conn = conn = psycopg.connect(**self.params)  # the transaction opens here
        if self.role:  # as Django does for its own connections
            conn.execute(pg_sql.SQL("SET ROLE {}").format(pg_sql.Literal(self.role)))
        # Timestamps arrive as naive UTC text (`values`); the columns are timestamptz.
        conn.execute("SET TIME ZONE 'UTC'")
        conn.execute(f"SET lock_timeout = {round(LOCK_TIMEOUT_S * 1000)}")
        if clear:
            # Transactional, the restarted sequence included: a rollback restores both.
            conn.execute(f"TRUNCATE {self.relation} RESTART IDENTITY")
        else:
            self._check_unchanged(first_id)
        if count:
            # Before the rows, so that API inserts during the load take ids after ours.
            conn.execute(
                "SELECT setval(s::regclass,"
                " GREATEST(%s, COALESCE(pg_sequence_last_value(s::regclass), 0)))"
                " FROM pg_get_serial_sequence(%s, 'id') AS s",
                [first_id + count - 1, self.relation],
            )
        if clear or count >= stored * COPY_REBUILD_SHARE:
            # Appended users are checked against the stored e-mails (`taken_emails`)
            # through the unique index, so it stays unless the table starts empty.
            self._drop_indexes(keep_unique=stored > 0)

    def _check_unchanged(self, first_id: int) -> None:
        top, last = self.conn.execute(
            f"SELECT (SELECT max(id) FROM {self.relation}),"
            " pg_sequence_last_value(pg_get_serial_sequence(%s, 'id')::regclass)",
            [self.relation],
        ).fetchone()
        if max(top or 0, last or 0) >= first_id:
            raise ConcurrentWriteError(
                f"{self.table}: rows were added during planning (ids from {first_id} are no "
                "longer free); run generate_data again"
            )

    def _drop_indexes(self, *, keep_unique: bool) -> None:
        """Drop what is cheaper to rebuild than to maintain, keeping each definition.

        The primary key stays (ids arrive in order: appending to it is cheap), as do
        indexes behind any other constraint than a plain unique one.
        """
        indexes = self.conn.execute(
            "SELECT c.relname, pg_get_indexdef(c.oid), x.indisunique,"
            " array(SELECT k.contype::text FROM pg_constraint AS k WHERE k.conindid = c.oid),"
            " EXISTS (SELECT FROM pg_constraint AS k WHERE k.conindid = c.oid AND k.condeferrable)"
            " FROM pg_index AS x JOIN pg_class AS c ON c.oid = x.indexrelid"
            " WHERE x.indrelid = %s::regclass ORDER BY c.relname",
            [self.relation],
        ).fetchall()
        for name, definition, unique, constraints, deferrable in indexes:
            if (unique and keep_unique) or deferrable:
                continue
            if not constraints:
                self.conn.execute(f'DROP INDEX "{name}"')
                self.dropped.append((definition, None))
            elif constraints == ["u"]:
                self.conn.execute(f'ALTER TABLE {self.relation} DROP CONSTRAINT "{name}"')
                self.dropped.append((definition, name))

    def write(self, rows: list[tuple]) -> None:
        # The COPY stays open across batches, so the server stores one batch while this
        # worker generates the next; any other statement ends it first (`_end_copy`).
        if self.copying is None:
            self.copying = ExitStack()
            self.copy = self.copying.enter_context(self.conn.cursor().copy(self.copy_sql))
        write_row = self.copy.write_row
        for row in rows:
            write_row(row)

    def _end_copy(self) -> None:
        copying, self.copying = self.copying, None
        if copying is not None:
            copying.close()

    def taken_emails(self, emails: list[str]) -> set[str]:
        self._end_copy()
        rows = self.conn.execute(
            f"SELECT email FROM {self.relation} WHERE email = ANY(%s)", [emails]
        ).fetchall()
        return {email for (email,) in rows}

    def finish(self) -> None:
        self._end_copy()
        while self.dropped:
            definition, constraint = self.dropped.pop(0)
            self.conn.execute(definition)
            if constraint:
                self.conn.execute(
                    f'ALTER TABLE {self.relation} ADD CONSTRAINT "{constraint}"'
                    f' UNIQUE USING INDEX "{constraint}"'
                )
        self.conn.execute(f"ANALYZE {self.relation}")

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.dropped.clear()  # the rollback restores them
        copying, self.copying = self.copying, None
        if self.conn is None or self.conn.closed:
            return
        if copying is not None:
            # Ends the open COPY with CopyFail; the server's "COPY failed" is expected.
            stop = RuntimeError("generate_data rolled back")
            copying.__exit__(RuntimeError, stop, None)
        self.conn.rollback()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


LOADERS: dict[str, type[Loader]] = {"sqlite": SqliteLoader, "postgresql": CopyLoader}


def loader_for(
    *, alias: str, model: type[Model], columns: Sequence[str], portable: bool = False
) -> Loader:
    """The fastest loader for the alias's backend; ``portable`` forces `OrmLoader`."""
    vendor = connections[alias].vendor
    cls = OrmLoader if portable else LOADERS.get(vendor, OrmLoader)
    return cls(alias=alias, model=model, columns=columns)
