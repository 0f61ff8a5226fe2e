"""ORM queries compiled once per database alias, then executed with new parameters.

`CompiledQuery` keeps the ORM as the only author of the SQL (quoting, table names,
dialect, and the converters that turn stored values into ``Decimal``, ``datetime`` and
``bool``) but builds and compiles each query once per alias instead of once per request.

On SQLite and PostgreSQL the compiled statement runs on the DB-API cursor of Django's own
connection, in Django's error wrapping, after the checks Django's cursor would make
(`_fetch_dbapi`). When something observes queries (``DEBUG`` logging them, an
``execute_wrapper`` other than the metrics' timer: `api.db.query_timing`) the statement
goes through Django's cursor so that it sees them.
What this saves: ``docs/performance.md``.
"""

from asyncio import _get_running_loop  # asyncio's own test: the running loop, or None
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from threading import Lock, local
from time import perf_counter
from typing import Any

from django.db import DatabaseError, connections, router
from django.db.models import Model, QuerySet
from psycopg import Cursor
from psycopg.pq import Format
from psycopg.types.datetime import TimestamptzLoader

from api.db.query_timing import TIMING, observed
from api.db.routers import PINNED_ALIASES, primary_after_failure
from api.db.sqlite_converters import RowConverter, faster_converter, row_converter
from api.metrics import QUERIES

# Backends whose DB-API cursor takes the compiled SQL as it is (PostgreSQL: "format"
# placeholders) or once translated by the backend's own cursor (SQLite: "qmark").
DBAPI_VENDORS = ("sqlite", "postgresql")


@dataclass(frozen=True)
class _Plan:
    sql: str
    dbapi_sql: str | None  # for the DB-API cursor; None: go through Django's cursor
    params: tuple
    positions: tuple[int, ...]
    names: tuple[str, ...]
    converters: tuple[tuple[int, Callable, Any], ...]  # (position, function, expression)
    convert: RowConverter | None  # all of them on one row; None when there are none


class CompiledQuery:
    """A ``values()`` query on ``model`` whose parameters change per call.

    ``build(*placeholders)`` must return the QuerySet; each placeholder is a sentinel that
    appears exactly once among the compiled parameters, and `fetch` puts the real values
    in its place. A ``limit`` is SQL's ``LIMIT``, compiled into a plan of its own (Django
    writes it into the SQL), so the database never sends more rows than asked for.
    """

    def __init__(self, model: type[Model], build: Callable[..., QuerySet], *placeholders):
        self.model = model
        self._build = build
        self._placeholders = placeholders
        self._plans: dict[tuple[str, int | None], _Plan] = {}
        self._lock = Lock()

    def fetch(self, *values: Any, limit: int | None = None) -> list[dict]:
        """Rows as dicts, at most ``limit`` of them, read from the model's read alias.

        A read that fails on a replica is read again on its primary (the replica leaves
        the rotation: `api.db.routers.primary_after_failure`), at no cost to a read that
        succeeds. Raises `django.db.DatabaseError` when the primary fails.
        """
        alias = router.db_for_read(self.model)
        try:
            plan = self._plans.get((alias, limit)) or self._compile(alias, limit)
            params = list(plan.params)
            for position, value in zip(plan.positions, values, strict=True):
                params[position] = value
            connection = thread_connection(alias)
            if plan.dbapi_sql is None or observed(connection):
                with connection.cursor() as cursor:
                    cursor.execute(plan.sql, params)
                    rows = cursor.fetchall()
            elif TIMING[0]:  # `timed`, inlined on the hottest statement
                started = perf_counter()
                try:
                    rows = _fetch_dbapi(connection, plan.dbapi_sql, params)
                finally:
                    QUERIES.observe(alias, perf_counter() - started)
            else:
                rows = _fetch_dbapi(connection, plan.dbapi_sql, params)
        except DatabaseError as exc:
            primary = primary_after_failure(alias, exc)
            if primary is None:
                raise
            token = PINNED_ALIASES.set(PINNED_ALIASES.get() | {primary})
            try:
                return self.fetch(*values, limit=limit)  # the router now picks the primary
            finally:
                PINNED_ALIASES.reset(token)
        names, convert = plan.names, plan.convert
        if convert is None:
            return [dict(zip(names, row, strict=True)) for row in rows]
        results = []
        for stored in rows:
            row = list(stored)
            convert(row, connection)
            results.append(dict(zip(names, row, strict=True)))
        return results

    def _compile(self, alias: str, limit: int | None) -> _Plan:
        with self._lock:
            queryset = self._build(*self._placeholders).using(alias)
            if limit is not None:
                queryset = queryset[:limit]
            compiler = queryset.query.get_compiler(using=alias)
            sql, params = compiler.as_sql()
            selected = [column for column, _, _ in compiler.select[: compiler.col_count]]
            # Flat, in the compiler's order: a column's functions run one after another.
            connection = connections[alias]
            converters = tuple(
                (position, faster_converter(function, expression, connection), expression)
                for position, (functions, expression) in compiler.get_converters(selected).items()
                for function in functions
            )
            plan = _Plan(
                sql=sql,
                dbapi_sql=dbapi_sql(alias, sql),
                params=tuple(params),
                positions=tuple(params.index(p) for p in self._placeholders),
                names=tuple(queryset.query.values_select),
                converters=converters,
                convert=row_converter(converters) if converters else None,
            )
            self._plans[alias, limit] = plan
            return plan


_by_thread = local()


def thread_connection(alias: str):
    """``connections[alias]``, remembered per thread.

    In a thread with no event loop running, Django's handler keeps one connection per
    alias and thread for the thread's life (a ``threading.local`` behind asgiref's
    ``Local``), so remembering it changes nothing but the cost of a read. Inside an event
    loop the handler's own answer is returned, uncached: it is the async context's
    connection, which then refuses to run a query as Django does.
    """
    if _get_running_loop() is not None:
        return connections[alias]
    connection = getattr(_by_thread, alias, None)
    if connection is None:
        connection = connections[alias]
        setattr(_by_thread, alias, connection)
    return connection


def dbapi_sql(alias: str, sql: str) -> str | None:
    """``sql`` as the alias's DB-API cursor takes it (SQLite: ``?`` placeholders), or None
    for a backend whose statements go through Django's cursor."""
    connection = connections[alias]
    if connection.vendor not in DBAPI_VENDORS:
        return None
    with connection.cursor() as cursor:
        convert_query = getattr(cursor.cursor, "convert_query", None)
    return sql if convert_query is None else convert_query(sql)


def _fetch_dbapi(connection, sql: str, params: list) -> list[tuple]:
    """What ``connection.cursor()`` and its ``execute`` do, without their wrapper layers.

    Django's checks are called only when they can act: no connection yet, a broken
    transaction, or an event loop running in this thread (when ``ensure_connection``
    refuses, as `SynchronousOnlyOperation`, to block it). Must stay equal to Django's
    ``_cursor``/``_execute`` (pinned in ``test_fastpath_internals``).

    The health check (``CONN_HEALTH_CHECKS``) Django runs before a reused connection's
    first query of a request is a round trip of its own (``SELECT 1`` on PostgreSQL);
    here the lookup is the check: a read-only query, run again once on a new connection
    when it fails on a connection that then proves unusable, so a server restart between
    requests is invisible to clients, as with Django's check.

    On PostgreSQL the statement is bound server-side (a plain psycopg ``Cursor`` instead
    of the connection's ``ClientCursor``), so psycopg prepares it after the connection's
    ``prepare_threshold`` runs (5; ``OPTIONS: {"prepare_threshold": None}`` turns that off,
    e.g. behind PgBouncer in transaction mode).
    Raises `django.db.DatabaseError` as Django's cursor would.
    """
    checked_by_query = (
        connection.health_check_enabled
        and not connection.health_check_done
        and connection.connection is not None
    )
    if checked_by_query:
        connection.health_check_done = True
    try:
        return _execute_dbapi(connection, sql, params)
    except DatabaseError:
        if not checked_by_query or connection.needs_rollback or connection.is_usable():
            raise
    connection.close()  # gone between requests: what Django's health check would find
    return _execute_dbapi(connection, sql, params)


def _execute_dbapi(connection, sql: str, params: list) -> list[tuple]:
    if connection.connection is None or _get_running_loop() is not None:
        connection.ensure_connection()
    connection.validate_thread_sharing()
    if connection.needs_rollback:
        connection.validate_no_broken_transaction()
    with connection.wrap_database_errors:
        raw = connection.connection
        if connection.vendor == "postgresql":
            cursor = server_binding_cursor(connection.alias, raw)
            cursor.execute(sql, params)
            return cursor.fetchall()
        cursor = raw.cursor()
        try:
            cursor.execute(sql, params)
            return cursor.fetchall()
        finally:
            cursor.close()


_cursors_by_thread = local()


def server_binding_cursor(alias: str, raw, cursor_class: type[Cursor] = Cursor) -> Cursor:
    """A psycopg ``Cursor`` (or ``cursor_class``, e.g. ``RawCursor``) on ``raw``, kept per
    thread and alias while ``raw`` is the alias's connection: building one (its adapters
    map, its transformer) per lookup was a measurable share of its CPU
    (docs/performance.md, PostgreSQL lookups). A new connection (reconnected, or another
    from the pool) gets a new cursor; the old one goes with its connection."""
    cursors = getattr(_cursors_by_thread, "cursors", None)
    if cursors is None:
        cursors = _cursors_by_thread.cursors = {}
    kept = cursors.get((alias, cursor_class))
    if kept is None or kept[0] is not raw:
        cursor = cursor_class(raw)
        if loads_utc_as_django(cursor):
            cursor.adapters.register_loader("timestamptz", TimestamptzLoader)
        kept = cursors[alias, cursor_class] = (raw, cursor)
    return kept[1]


def loads_utc_as_django(cursor: Cursor) -> bool:
    """Whether psycopg's own ``timestamptz`` loader gives ``cursor`` what Django's does.

    Django registers a Python subclass of psycopg's loader on every connection
    (``django.db.backends.postgresql.psycopg_any.register_tzloader``) that parses each
    value in Python and then sets its ``tzinfo`` to the connection's time zone. When that
    zone is UTC and so is the session's ``TimeZone`` (Django sets it when it connects and
    the project never changes it), psycopg's loader, which the C extension implements,
    already returns the value with ``datetime.timezone.utc``: the same object, without a
    Python call per value (what that saves: docs/performance.md, "PostgreSQL lookups").
    Anything else keeps Django's loader.
    """
    oid = cursor.adapters.types["timestamptz"].oid
    djangos = cursor.adapters.get_loader(oid, Format.TEXT)
    return (
        getattr(djangos, "timezone", None) is UTC
        and cursor.connection.pgconn.parameter_status(b"TimeZone") == b"UTC"
    )
