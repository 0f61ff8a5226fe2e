"""An ORM insert compiled once per alias, then run per batch: one multi-row ``INSERT ...
ON CONFLICT DO NOTHING RETURNING`` statement.

`CompiledInsert.insert` stores a store's validated records inside the caller's
``transaction.atomic(using=alias)`` and gives each record's new id, or None where a unique
index (the primary key, ``users.email``) already holds its value: the database is the
final word between concurrent writers, and a refused row aborts nothing, so no savepoint
is needed. Records without an id go in first, then those with one (two statements).
Django's compiler writes the SQL (``OnConflict.IGNORE`` and the returned columns, which
``bulk_create`` does not combine); each value is prepared by its field's
``get_db_prep_save``, as ``bulk_create`` prepares it, but for text in a text column,
which it returns unchanged; a constant default once per alias, a callable one
(``created_at``'s ``timezone.now``) once per call.

One statement carries as many rows as the backend takes parameters
(``connection.ops.bulk_batch_size``, as ``bulk_create`` splits). A refused row returns
nothing, so each returned row is matched to its record by the columns a unique index
covers (``id`` when given, ``users.email``), which the statement returns beside the new
id; a table with no such column (products, orders without ids) can refuse no row, and its
ids come back in the order of the rows, as ``bulk_create`` reads them. The statements run
on the DB-API cursor of Django's connection (PostgreSQL: a kept ``RawCursor`` with


"""

from collections.abc import Sequence
from operator import itemgetter
from threading import Lock
from typing import Any, NamedTuple

from django.db import IntegrityError, connections
from django.db.models import CharField, F, Field, Model, UniqueConstraint
from django.db.models.constants import OnConflict
from django.db.models.sql import InsertQuery
from psycopg import RawCursor

from api.db.compiled import DBAPI_VENDORS, server_binding_cursor
from api.db.query_timing import observed, timed

# PostgreSQL's protocol carries at most this many parameters per statement; Django's
# bulk_batch_size leaves that backend unbounded.
MAX_PARAMS = 65_535
MAX_KEPT_STATEMENTS = 64  # statement texts kept per plan, by row count


class Plan(NamedTuple):
    """One alias's compiled insert of one column set (with or without ``id``)."""

    head: str  # ``INSERT INTO ... VALUES ``
    tail: str  # `` ON CONFLICT DO NOTHING RETURNING id[, unique columns]``
    placeholders: str  # the DB-API cursor's: ``?`` (SQLite), ``$`` (PostgreSQL), ``%s``
    fields: tuple[Field, ...]
    defaults: list  # each column's prepared default (a callable one's: None)
    computed: tuple[tuple[int, Field], ...]  # (position, field) of each callable default
    keys: tuple[int, ...]  # row positions of the unique columns the statement returns
    rows_per_statement: int
    # attname -> (position, the type that goes in unchanged, field)
    columns: dict[str, tuple]
    statements: dict[tuple[int, bool], str]  # (rows, for the DB-API cursor) -> SQL

    def statement(self, rows: int, dbapi: bool) -> str:
        """The SQL inserting ``rows`` rows, with Django's placeholders or (``dbapi``) the
        DB-API cursor's: PostgreSQL's own ``$1, $2, ...``, which psycopg's ``RawCursor``
        passes on as they are (it parses ``%s`` anew in a statement of more than 50)."""
        sql = self.statements.get((rows, dbapi))
        if sql is None:
            width, mark = len(self.fields), self.placeholders if dbapi else "%s"
            if mark == "$":
                numbers = iter(range(1, rows * width + 1))
                values = ", ".join(
                    "(" + ", ".join(f"${next(numbers)}" for _ in range(width)) + ")"
                    for _ in range(rows)
                )
            else:
                values = ", ".join(["(" + ", ".join([mark] * width) + ")"] * rows)
            sql = self.head + values + self.tail
            if len(self.statements) < MAX_KEPT_STATEMENTS:
                self.statements[rows, dbapi] = sql
        return sql


class CompiledInsert:
    """Inserts of ``model`` rows, one compiled statement per alias and column set."""

    def __init__(self, model: type[Model]) -> None:
        self.model = model
        self._plans: dict[tuple[str, bool], Plan] = {}
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
        # Queries observed (DEBUG, execute wrappers) go through Django's cursor.
        dbapi = not observed(connection)
        dbapi = dbapi and connection.vendor in DBAPI_VENDORS
        execute = _execute_dbapi if dbapi else _execute_django
        ids: list[int | None] = [None] * len(records)
        for explicit_id in (False, True):
            positions = [
                i for i, r in enumerate(records) if (r.get("id") is not None) is explicit_id
            ]
            if not positions:
                continue
            plan = self._plan(alias, explicit_id)
            template = plan.defaults.copy()
            for position, field in plan.computed:
                template[position] = field.get_db_prep_save(field.get_default(), connection)
            columns, step = plan.columns, plan.rows_per_statement
            rows = [_row(columns, template, records[i], connection) for i in positions]
            found = []
            for first in range(0, len(rows), step):
                chunk = rows[first : first + step]
                params = [value for values in chunk for value in values]
                returned = execute(connection, plan.statement(len(chunk), dbapi), params)
                found += _match(plan.keys, chunk, returned)
            for position, new_id in zip(positions, found, strict=True):
                ids[position] = new_id
        return ids

    def _plan(self, alias: str, explicit_id: bool) -> Plan:
        plan = self._plans.get((alias, explicit_id))
        if plan is None:
            with self._lock:
                plan = self._plans[alias, explicit_id] = self._compile(alias, explicit_id)
        return plan

    def _compile(self, alias: str, explicit_id: bool) -> Plan:
        meta = self.model._meta
        fields = tuple(
            field for field in meta.concrete_fields if explicit_id or not field.primary_key
        )
        unique = unique_columns(self.model)
        keys = tuple(i for i, field in enumerate(fields) if field.attname in unique)
        query = InsertQuery(self.model, on_conflict=OnConflict.IGNORE)
        query.insert_values(fields, [self.model()])
        compiler = query.get_compiler(using=alias)
        # The new id, then the unique columns that match a returned row to its record.
        compiler.returning_fields = [meta.pk, *(fields[i] for i in keys)]
        ((sql, params),) = compiler.as_sql()
        connection = connections[alias]
        if connection.vendor == "sqlite":
            # Django writes SQLite's INSERT OR IGNORE, which drops a row on any constraint,
            # NOT NULL too; an upsert clause ignores only unique indexes, as on PostgreSQL.
            sql = sql.replace("INSERT OR IGNORE INTO", "INSERT INTO", 1)
            sql = sql.replace(" RETURNING ", " ON CONFLICT DO NOTHING RETURNING ", 1)
        row = "(" + ", ".join(["%s"] * len(fields)) + ")"
        head, values, tail = sql.partition(" VALUES " + row)
        if (
            len(params) != len(fields)
            or not values
            or "%" in head + tail
            or not tail.startswith(" ON CONFLICT DO NOTHING RETURNING ")
        ):
            raise RuntimeError(f"{meta.label}: cannot compile a returning insert: {sql}")
        # What a record that leaves a column out stores: its default, prepared once; a
        # callable one (a timestamp) once per statement. get_default() of a field without
        # one is a constant too (None, or '' for text).
        computed = tuple(
            (position, field)
            for position, field in enumerate(fields)
            if field.has_default() and callable(field.default)
        )
        defaults = [
            None
            if field.has_default() and callable(field.default)
            else field.get_db_prep_save(field.get_default(), connection)
            for field in fields
        ]
        per_statement = connection.ops.bulk_batch_size(fields, range(MAX_PARAMS))
        return Plan(
            head=head + " VALUES ",
            tail=tail,
            placeholders={"sqlite": "?", "postgresql": "$"}.get(connection.vendor, "%s"),
            fields=fields,
            defaults=defaults,
            computed=computed,
            keys=keys,
            rows_per_statement=max(1, min(per_statement, MAX_PARAMS // len(fields))),
            columns={
                field.attname: (position, UNCHANGED.get(type(field)), field)
                for position, field in enumerate(fields)
            },
            statements={},
        )


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


def unique_columns(model: type[Model]) -> frozenset[str]:
    """The columns (attnames) of ``model``'s unique indexes: ``unique=True`` fields,
    ``unique_together`` and unconditional ``UniqueConstraint``s, by fields or by bare
    column expressions (``F("email")``). Raises `RuntimeError` for a unique index on
    any other expression or with a condition: a returned row could not be matched to
    its record by the values sent."""
    meta = model._meta
    columns = {field.attname for field in meta.concrete_fields if field.unique}
    for names in meta.unique_together:
        columns.update(meta.get_field(name).attname for name in names)
    for constraint in (c for c in meta.constraints if isinstance(c, UniqueConstraint)):
        if constraint.condition is not None or constraint.include or constraint.opclasses:
            raise RuntimeError(f"{meta.label}: {constraint.name} is not a plain unique index")
        names = list(constraint.fields)
        for expression in constraint.expressions:
            if not isinstance(expression, F):
                raise RuntimeError(f"{meta.label}: {constraint.name} indexes an expression")
            names.append(expression.name)
        columns.update(meta.get_field(name).attname for name in names)
    return frozenset(columns)


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


def _match(keys: tuple[int, ...], rows: list[list], returned: list[tuple]) -> list[int | None]:
    """Each row's new id from the ``(id, *unique values)`` tuples a statement returned,
    None for a row a unique index refused.

    Rows with the same unique values are stored in the order given, and once one is
    refused every later one is too (it meets the same index entry or the stored row), so
    the k tuples returned for a value are the first k rows with it. Raises
    `IntegrityError` when a table without unique columns returned fewer rows than it was
    given, or a returned tuple matches no row (then nothing can say which row is which).
    """
    if not keys:
        if len(returned) != len(rows):
            raise IntegrityError("a unique index refused a row of a table without unique columns")
        return [found[0] for found in returned]
    # One unique column gives plain values, several give tuples: alike on both sides.
    row_key, returned_key = itemgetter(*keys), itemgetter(*range(1, len(keys) + 1))
    row_keys = list(map(row_key, rows))
    if len(returned) == len(rows) and list(map(returned_key, returned)) == row_keys:
        return [found[0] for found in returned]  # the usual batch: all stored, in order
    waiting: dict[Any, list[int]] = {}
    for index, key in enumerate(row_keys):
        waiting.setdefault(key, []).append(index)
    ids: list[int | None] = [None] * len(rows)
    for found in returned:
        queue = waiting.get(returned_key(found))
        if not queue:
            raise IntegrityError(f"a stored row matches no record: {found[1:]!r}")
        ids[queue.pop(0)] = found[0]
    return ids


def _execute_django(connection, sql: str, params: list) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _execute_dbapi(connection, sql: str, params: list) -> list[tuple]:
    """``sql`` on the DB-API cursor, in Django's error wrapping: its returned rows."""
    return timed(connection.alias, _execute_raw, connection, sql, params)


def _execute_raw(connection, sql: str, params: list) -> list[tuple]:
    raw = connection.connection
    with connection.wrap_database_errors:
        if connection.vendor == "postgresql":
            # Kept per thread as the lookups' cursor is; psycopg prepares what it runs often.
            cursor = server_binding_cursor(connection.alias, raw, RawCursor)
            cursor.execute(sql, params)
            return cursor.fetchall()
        cursor = raw.cursor()
        try:
            return cursor.execute(sql, params).fetchall()
        finally:
            cursor.close()
