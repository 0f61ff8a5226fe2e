"""An ORM insert compiled once per alias, then run per record: ``INSERT ... ON CONFLICT DO
NOTHING RETURNING id``.

`CompiledInsert.insert` stores a store's validated records inside the caller's
``transaction.atomic(using=alias)`` and gives each record's new id, or None where a unique
index (the primary key, ``users.email``) already holds its value: the database is the
final word between concurrent writers, and a refused row aborts nothing, so no savepoint
is needed. Records without an id go in first, then those with one (two statements).
Django's compiler writes the SQL (``OnConflict.IGNORE`` and the returned primary key,
which ``bulk_create`` does not combine); each value is prepared by its field's
``get_db_prep_save``, as ``bulk_create`` prepares it, but for text in a text column,
which it returns unchanged; a constant default once per
alias, a callable one (``created_at``'s ``timezone.now``) once per call. The statements
run on the DB-API cursor of Django's connection, in Django's error
wrapping: SQLite one ``execute`` per record, PostgreSQL one pipelined ``executemany``.
What this saves against ``bulk_create``: ``docs/performance.md``, "Validated inserts".
"""

from collections.abc import Sequence
from threading import Lock

from django.db import connections
from django.db.models import CharField, Field, Model
from django.db.models.constants import OnConflict
from django.db.models.sql import InsertQuery

from api.db.compiled import dbapi_sql, server_binding_cursor


class CompiledInsert:
    """Inserts of ``model`` rows, one compiled statement per alias and column set."""

    def __init__(self, model: type[Model]) -> None:
        self.model = model
        self._plans: dict[tuple[str, bool], tuple] = {}  # (sql, DB-API sql, fields, defaults)
        # attname -> (position, the type that goes in unchanged, field), per plan
        self._columns: dict[tuple[str, bool], dict[str, tuple]] = {}
        self._lock = Lock()

    def insert(self, alias: str, records: Sequence[dict]) -> list[int | None]:
        """Each record's new id, or None when a unique index refused it; in order.

        ``records`` map field names to validated values; a record with ``id`` is stored
        under it. Run inside ``transaction.atomic(using=alias)``. Raises
        `django.db.IntegrityError` for a constraint that is not a unique index (a NOT
        NULL), and `django.db.DatabaseError` as Django's cursor would.
        """
        connection = connections[alias]
        connection.ensure_connection()
        ids: list[int | None] = [None] * len(records)
        for explicit_id in (False, True):
            positions = [
                i for i, r in enumerate(records) if (r.get("id") is not None) is explicit_id
            ]
            if not positions:
                continue
            sql, dbapi, fields, defaults = self._plan(alias, explicit_id)
            template = [
                field.get_db_prep_save(field.get_default(), connection)
                if default is CALLABLE
                else default
                for field, default in zip(fields, defaults, strict=True)
            ]
            columns = self._columns[alias, explicit_id]
            rows = [_row(columns, template, records[i], connection) for i in positions]
            if dbapi is None or connection.queries_logged or connection.execute_wrappers:
                returned = _execute_django(connection, sql, rows)  # observed: DEBUG, wrappers
            else:
                with connection.wrap_database_errors:
                    returned = _execute_dbapi(connection, dbapi, rows)
            for position, new_id in zip(positions, returned, strict=True):
                ids[position] = new_id
        return ids

    def _plan(self, alias: str, explicit_id: bool):
        plan = self._plans.get((alias, explicit_id))
        if plan is None:
            with self._lock:
                plan = self._compile(alias, explicit_id)
                self._columns[alias, explicit_id] = {
                    field.attname: (position, UNCHANGED.get(type(field)), field)
                    for position, field in enumerate(plan[2])
                }
                self._plans[alias, explicit_id] = plan
        return plan

    def _compile(self, alias: str, explicit_id: bool):
        meta = self.model._meta
        fields = tuple(
            field for field in meta.concrete_fields if explicit_id or not field.primary_key
        )
        query = InsertQuery(self.model, on_conflict=OnConflict.IGNORE)
        query.insert_values(fields, [self.model()])
        compiler = query.get_compiler(using=alias)
        compiler.returning_fields = [meta.pk]
        ((sql, params),) = compiler.as_sql()
        connection = connections[alias]
        if connection.vendor == "sqlite":
            # Django writes SQLite's INSERT OR IGNORE, which drops a row on any constraint,
            # NOT NULL too; an upsert clause ignores only unique indexes, as on PostgreSQL.
            sql = sql.replace("INSERT OR IGNORE INTO", "INSERT INTO", 1)
            sql = sql.replace(" RETURNING ", " ON CONFLICT DO NOTHING RETURNING ", 1)
        if len(params) != len(fields) or "ON CONFLICT DO NOTHING RETURNING" not in sql:
            raise RuntimeError(f"{meta.label}: cannot compile a returning insert: {sql}")
        # What a record that leaves a column out stores: its default, prepared once; a
        # callable one (a timestamp) once per statement. get_default() of a field without
        # one is a constant too (None, or '' for text).
        defaults = tuple(
            CALLABLE
            if field.has_default() and callable(field.default)
            else field.get_db_prep_save(field.get_default(), connection)
            for field in fields
        )
        return sql, dbapi_sql(alias, sql), fields, defaults


CALLABLE = object()  # a plan's default that is computed per call


def _unchanged_types() -> dict[type, type]:
    """Field class -> the value type its ``get_db_prep_save`` returns unchanged: ``str``
    for ``CharField`` (its ``get_prep_value`` is ``to_python``, a no-op on text) and its
    subclasses that change none of the three methods. (Integer fields adapt their values
    per backend since Django 5.0: they keep the full path.) The methods are pinned in
    test_fastpath_internals."""

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    unchanged = {}
    for cls in (CharField, *subclasses(CharField)):
        if (
            cls.get_db_prep_save is Field.get_db_prep_save
            and cls.get_db_prep_value is Field.get_db_prep_value
            and cls.get_prep_value is CharField.get_prep_value
            and cls.to_python is CharField.to_python
        ):
            unchanged[cls] = str
    return unchanged


UNCHANGED = _unchanged_types()


def _row(columns: dict[str, tuple], template: list, record: dict, connection) -> list:
    """The statement's parameters for ``record``: ``template`` (every column's default)
    with the record's values in their columns, each prepared by its field."""
    row = template.copy()
    for name, value in record.items():
        column = columns.get(name)
        if column is None:  # the id of a record without one, in the statement without it
            continue
        position, unchanged, field = column
        row[position] = (
            value if type(value) is unchanged else field.get_db_prep_save(value, connection)
        )
    return row


def _execute_django(connection, sql: str, rows: list[list]) -> list[int | None]:
    with connection.cursor() as cursor:
        returned = []
        for row in rows:
            cursor.execute(sql, row)
            found = cursor.fetchone()
            returned.append(found[0] if found else None)
        return returned


def _execute_dbapi(connection, sql: str, rows: list[list]) -> list[int | None]:
    raw = connection.connection
    if connection.vendor == "postgresql":
        # The lookups' kept server-binding cursor: psycopg pipelines executemany.
        cursor = server_binding_cursor(connection.alias, raw)
        cursor.executemany(sql, rows, returning=True)
        returned = []
        while True:
            row = cursor.fetchone()
            returned.append(row[0] if row else None)
            if not cursor.nextset():
                return returned
    cursor = raw.cursor()
    try:
        returned = []
        for row in rows:
            found = cursor.execute(sql, row).fetchone()
            returned.append(found[0] if found else None)
        return returned
    finally:
        cursor.close()
