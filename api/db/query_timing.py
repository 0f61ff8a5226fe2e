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

from api.metrics import QUERIES

T = TypeVar("T")
# Whether `timed` times: set by `enable`, from the app's start-up with METRICS on (read
# once: the setting is not looked up per statement).
TIMING = [False]


def time_query(execute, sql, params, many, context):
    """Django execute wrapper: run the statement, add its time to its alias's."""
    started = perf_counter()
    try:
        return execute(sql, params, many, context)
    finally:
        QUERIES.observe(context["connection"].alias, perf_counter() - started)


def enable() -> None:
    """Time statements from now on: `install` on each new connection, `timed` on."""
    TIMING[0] = True


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
    """``run(*args)``, its time added to ``alias``'s database time once `enable` ran.

    For statements on the DB-API cursor; raises what ``run`` raises (the time counts).
    """
    if not TIMING[0]:
        return run(*args)
    started = perf_counter()
    try:
        return run(*args)
    finally:
        QUERIES.observe(alias, perf_counter() - started)
