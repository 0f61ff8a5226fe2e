"""`CopyLoader` (PostgreSQL): ``COPY … FROM STDIN`` in text format, on the worker's own
psycopg connection (so it is fork-safe and loads in processes). Rows arrive as ready
lines of ``COPY`` text (``copy_text``: the generators write each row as one line instead
of a tuple, which saves psycopg's ``write_row`` encoding the tuple again); tuples, from
any other caller, still go through ``write_row``. One ``COPY`` stays open across
batches, so the server stores a batch while the worker generates the next; any other
statement ends it first. When the new rows are many, secondary indexes, and unique ones
(``users_email_key``) when the table starts empty, are dropped first and re-created at
the end from their ``pg_indexes.indexdef`` (an index behind a unique constraint
re-attached ``USING INDEX``), so the schema ends exactly as migrations made it; the
primary key stays. A duplicate among the rows fails the unique index's rebuild, and with
it the load, which rolls back with the index in place. The id sequence moves past the
planned ids when the load begins, never backwards; ``ANALYZE`` runs before the commit.
Why text ``COPY``, ready lines, one ``COPY`` per run, and the rebuilt indexes:
``docs/performance.md``.
"""

from collections.abc import Sequence
from contextlib import ExitStack

import psycopg
from django.db import connections
from django.db.models import Model
from psycopg import sql as pg_sql

from api.services.generation.loaders.base import ConcurrentWriteError, Loader

# PostgreSQL waits for a lock forever by default: two runs at once, each holding a table
# the other needs until all of its tables are ready, would never end. Fail instead, after
# as long as SQLite's busy timeout.
LOCK_TIMEOUT_SECONDS = 20.0
# The share of new rows past which the indexes are rebuilt rather than maintained
# (measured: docs/performance.md); readers wait while they are gone.
COPY_REBUILD_SHARE = 0.5


class CopyLoader(Loader):
    """``COPY`` on the worker's own psycopg connection, indexes rebuilt when worth it.

    Dropping an index takes an ``ACCESS EXCLUSIVE`` lock until the commit (so does the
    ``TRUNCATE`` of ``--clear``): readers of the table wait for the load. Indexes are
    therefore dropped only when that is clearly faster: new rows at least half as many
    as the stored ones (`COPY_REBUILD_SHARE`).
    """

    fork_safe = True
    copy_text = True

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
        conn.execute(f"SET lock_timeout = {round(LOCK_TIMEOUT_SECONDS * 1000)}")
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

    def write(self, rows: list[tuple] | list[str]) -> None:
        # The COPY stays open across batches, so the server stores one batch while this
        # worker generates the next; any other statement ends it first (`_end_copy`).
        if self.copying is None:
            self.copying = ExitStack()
            self.copy = self.copying.enter_context(self.conn.cursor().copy(self.copy_sql))
        if rows and isinstance(rows[0], str):  # lines of COPY text, ready to send
            # Line by line: most lines are ASCII, which encodes by copying, where the
            # batch joined first is as wide as its widest character.
            encoding = self.conn.info.encoding
            self.copy.write(b"".join([line.encode(encoding) for line in rows]))
            return
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
