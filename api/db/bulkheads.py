"""Bulkheads: one worker thread and a bounded queue per store, for its writes.

A batch's part for a store runs on that store's worker (`submit`), one batch at a time, as
SQLite's writers queue anyway; the only part of a batch runs in the caller's thread. A
queue holding ``INSERT_QUEUE_LIMIT`` batches, an open write breaker (`api.db.breakers`)
or a deadline passed while queued refuses the part at once (`StoreShed`), so a store that
is locked or slow holds up its own requests only. `api.db.deadlines.waits_at_most` bounds
a part's wait for the lock.

Workers live as long as the process, started on first use, and keep their connections
between batches under Django's rules for a request thread (``close_old_connections()``
before and after every batch); `close_worker_connections` closes what they hold. Each
queue's depth is in the metrics (`api.metrics.QUEUE_DEPTH`).
"""

import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from threading import Lock
from time import monotonic
from typing import TypeVar

from django.conf import settings
from django.db import close_old_connections, connections

from api.db.breakers import PROBE_WAIT_SECONDS, WRITE_BREAKERS
from api.db.deadlines import waits_at_most
from api.db.failures import BUSY, TIMEOUT, StoreShed
from api.metrics import QUEUE_DEPTH

T = TypeVar("T")

_workers: dict[str, ThreadPoolExecutor] = {}
_workers_lock = Lock()


def _worker(alias: str) -> ThreadPoolExecutor:
    """The worker thread of ``alias`` in this process, started on first use."""
    worker = _workers.get(alias)
    if worker is None:
        with _workers_lock:
            worker = _workers.get(alias)
            if worker is None:
                worker = _workers[alias] = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix=f"batch-insert-{alias}"
                )
    return worker


def _forget_workers() -> None:
    """In a forked child (a Gunicorn worker): the parent's threads did not come along."""
    global _workers_lock
    _workers.clear()
    _workers_lock = Lock()


os.register_at_fork(after_in_child=_forget_workers)


def close_worker_connections() -> None:
    """Close every connection the workers of this process hold, and wait until they have.

    For tests and for code that changes connection settings: the workers' next batches
    connect anew. Raises what closing raised.
    """
    with _workers_lock:
        closing = [worker.submit(connections.close_all) for worker in _workers.values()]
    for future in closing:
        future.result()


_queued: dict[str, int] = {}  # batches submitted to each alias's worker and not done
_queued_lock = Lock()
_depth_gauges: dict[str, object] = {}  # QUEUE_DEPTH's child per alias


def _publish_depth(alias: str) -> None:
    """Set ``alias``'s queue depth in the metrics; called holding ``_queued_lock``."""
    gauge = _depth_gauges.get(alias)
    if gauge is None:
        gauge = _depth_gauges[alias] = QUEUE_DEPTH.labels(alias)
    gauge.set(_queued[alias])


def submit(
    alias: str, deadline: float | None, work: Callable[..., T], *args, inline: bool = False
) -> Future:
    """``work(*args)`` on ``alias``'s worker, or a future failed at once with `StoreShed`
    when the store's write breaker is open or its queue is full.

    ``inline`` runs it in the calling thread instead, under the same breaker, queue bound
    and deadline, and returns its finished future: for a batch whose only part this is,
    nothing runs beside it, and the hand-off to the worker thread was a third of the
    batch's time (docs/performance.md, "Validated inserts").
    """
    try:
        probe = WRITE_BREAKERS[alias].check()
        with _queued_lock:
            if _queued.get(alias, 0) >= settings.INSERT_QUEUE_LIMIT:
                raise StoreShed(alias, BUSY)
            _queued[alias] = _queued.get(alias, 0) + 1
            _publish_depth(alias)
    except StoreShed as exc:
        shed: Future = Future()
        shed.set_exception(exc)
        return shed
    if probe and deadline is not None:
        deadline = min(deadline, monotonic() + PROBE_WAIT_SECONDS)
    if not inline:
        return _worker(alias).submit(_in_worker, alias, deadline, work, *args)
    done: Future = Future()
    try:
        done.set_result(_run(alias, deadline, work, *args))
    except Exception as exc:  # delivered as the worker's future would deliver it
        done.set_exception(exc)
    return done


def _in_worker(alias: str, deadline: float | None, work: Callable[..., T], *args) -> T:
    # What Django's request_started and request_finished signals do for a request thread.
    close_old_connections()
    try:
        return _run(alias, deadline, work, *args)
    finally:
        close_old_connections()


def _run(alias: str, deadline: float | None, work: Callable[..., T], *args) -> T:
    """``work(*args)`` within the deadline."""
    try:
        wait_s = None if deadline is None else deadline - monotonic()
        if wait_s is not None and wait_s <= 0:  # queued past the deadline: do not start
            raise StoreShed(alias, TIMEOUT)
        with waits_at_most(alias, wait_s):
            return work(*args)
    finally:
        with _queued_lock:
            _queued[alias] -= 1
            _publish_depth(alias)
