"""`OrmLoader` (any other backend): Django's ``bulk_create`` with explicit ids; on
PostgreSQL the id sequence is first moved past them, elsewhere Django resets it after.
"""

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from django.core.management.color import no_style
from django.db import connections, transaction
from django.db.models import DateTimeField, Model

from api.services.generation.loaders.base import SQL_VARIABLES, ConcurrentWriteError, Loader


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
