"""Database time per alias for the metrics (`api.metrics.QUERY_SECONDS`), on every path.

Statements through Django's cursor are timed by `time_query`, an execute wrapper that
`install` puts first on each connection when it connects (the app's ``connection_created``
receiver, with ``METRICS`` on). The fast paths run their statements on the DB-API cursor,
which no execute wrapper sees, and time them with `timed`. `observed` keeps their rule:
when anything else watches queries (``DEBUG``'s log, a caller's ``execute_wrapper``),
statements go through Django's cursor so that it sees them; the timer alone does not count.
Commits are not statements and are not timed.
"""

from collections.abc import Callable
from time import perf_counter
from typing import TypeVar

from django.conf import settings

from api.metrics import observe_query

T = TypeVar("T")


def time_query(execute, sql, params, many, context):
    """Django execute wrapper: run the statement, add its time to its alias's."""
    started = perf_counter()
    try:
        return execute(sql, params, many, context)
    finally:
        observe_query(context["connection"].alias, perf_counter() - started)


def install(sender=None, connection=None, **kwargs) -> None:
    """``connection_created`` receiver: put `time_query` first among ``connection``'s
    execute wrappers, once (a wrapper connects again after a close, and keeps its list).

    First, so that ``execute_wrapper()`` blocks entered earlier pop their own on exit.
    """
    if time_query not in connection.execute_wrappers:
        connection.execute_wrappers.insert(0, time_query)


def observed(connection) -> bool:
    """Whether something besides `time_query` watches ``connection``'s statements."""
    if connection.queries_logged:
        return True
    wrappers = connection.execute_wrappers
    return bool(wrappers) and (len(wrappers) > 1 or wrappers[0] is not time_query)


def timed(alias: str, run: Callable[..., T], *args) -> T:
    """``run(*args)``, its time added to ``alias``'s database time when ``METRICS`` is on.

    For statements on the DB-API cursor; raises what ``run`` raises (the time counts).
    """
    if not settings.METRICS:
        return run(*args)
    started = perf_counter()
    try:
        return run(*args)
    finally:
        observe_query(alias, perf_counter() - started)
