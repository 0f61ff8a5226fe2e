"""`SqliteLoader` (SQLite): the stdlib driver's ``executemany`` on the database file, with
a 16 MB page cache during the load. Synchronous stays ``NORMAL``, as the server runs:
the load is one transaction, which WAL syncs once, so ``OFF`` saved nothing measurable
(``docs/performance.md``) and would have let a power loss during a load corrupt a file
whose other rows a running server had acknowledged. When the new rows outnumber
the stored ones, secondary indexes are dropped first and re-created at the end with the
exact SQL that ``sqlite_master`` held, so migrations see the schema unchanged. The unique
index on ``users.email`` goes too when the table starts empty: maintained row by row, each
row was a random insert into a B-tree that soon outgrew the page cache, and the load
slowed as the table grew; built at the end it is one sort. Its rebuild checks every
e-mail, inside the load's transaction: a duplicate fails the load, which rolls back with
the index in place. When appending it stays, for `taken_emails`. ``ANALYZE`` runs before
the commit; afterwards the file returns to WAL, as the server expects. The journal stays
WAL throughout: measured, rollback-journal modes were no faster, and WAL keeps the load
crash-safe and works while the server has the file open. Measured growth:
``docs/performance.md``.
"""

import sqlite3
from collections.abc import Sequence

from django.conf import settings
from django.db import connections
from django.db.models import Model

from api.services.generation.loaders.base import SQL_VARIABLES, ConcurrentWriteError, Loader

SQLITE_CACHE_KIB = 16 * 1024  # measured: 16 MB loads as fast as 32–128 MB, with less memory


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
            # Appended users are checked against the stored e-mails (`taken_emails`)
            # through the unique index, so it stays unless the table starts empty.
            self._drop_indexes(keep_unique=stored > 0)

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

    def _drop_indexes(self, *, keep_unique: bool) -> None:
        """Drop secondary indexes, keeping their exact SQL to re-create them in `finish`.

        Only indexes made by ``CREATE INDEX`` can go (those of a UNIQUE clause inside
        ``CREATE TABLE`` have no SQL of their own); unique ones stay if ``keep_unique``.
        """
        unique = {
            name
            for _, name, is_unique, *_ in self.conn.execute(f'PRAGMA index_list("{self.table}")')
            if is_unique
        }
        indexes = self.conn.execute(
            "SELECT name, sql FROM sqlite_master "
            "WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL ORDER BY name",
            [self.table],
        ).fetchall()
        for name, sql in indexes:
            if keep_unique and name in unique:
                continue
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
