"""Database connections open per alias, for the metrics (`api.metrics.CONNECTIONS_OPEN`).

Django keeps a connection per thread and alias and sends no signal when it closes one.
`track`, the ``connection_created`` receiver (with ``METRICS`` on), remembers each
connection wrapper weakly; a daemon thread per process, started by the first connection
the process makes (after a server forks its workers), counts every
`COUNT_INTERVAL_SECONDS` the wrappers that hold a DB-API connection, per alias, and sets
the gauge. A connection's wrapper holds it until Django closes it, so the count is what
the process holds open, request threads, insert workers and the replica monitor alike.
"""

import os
import threading
import weakref
from collections import Counter

from api.metrics import CONNECTIONS_OPEN

COUNT_INTERVAL_SECONDS = 1.0

_wrappers: weakref.WeakSet = weakref.WeakSet()
_counter_pid: int | None = None
_lock = threading.Lock()


def track(sender=None, connection=None, **kwargs) -> None:
    """``connection_created`` receiver: count ``connection``'s alias while it is open."""
    _wrappers.add(connection)
    if _counter_pid != os.getpid():
        _start()


def open_by_alias() -> Counter:
    """``{alias: connections open}`` in this process, counted now."""
    counts: Counter = Counter()
    for wrapper in list(_wrappers):
        counts[wrapper.alias] += wrapper.connection is not None
    return counts


def _start() -> None:
    global _counter_pid
    with _lock:
        if _counter_pid == os.getpid():
            return
        _counter_pid = os.getpid()
        threading.Thread(target=_count_forever, name="open-connections", daemon=True).start()


def _count_forever() -> None:
    stop = threading.Event()  # never set: the thread ends with the process
    seen: set[str] = set()  # an alias whose every wrapper is gone (its threads ended) is 0
    while not stop.wait(COUNT_INTERVAL_SECONDS):
        counts = open_by_alias()
        seen |= counts.keys()
        for alias in seen:
            CONNECTIONS_OPEN.labels(alias).set(counts[alias])
