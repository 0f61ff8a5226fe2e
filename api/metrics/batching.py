"""Observations on the hottest paths, gathered per process and added to their metric in one
step per label set: `BatchedHistogram` (a request's time), `BatchedSummary` (a statement's).

prometheus-client's ``observe`` in multiprocess mode is a lock, a pid check and an mmap
write per value, through six Python calls: on every lookup it would be a large share of
the lookup's own work (docs/performance.md, "Metrics"); a dict lookup and two additions
here cost a small part of that. A daemon thread per process adds what was gathered to
the client's metric every `FLUSH_INTERVAL_SECONDS`, as the client itself would have
counted it (one ``inc`` per bucket, sum and count: `api/tests/test_metrics.py` compares
the two expositions), and so does `flush_all` before a scrape and at exit. A worker
killed with SIGKILL loses at most its last interval's observations; one that exits
normally loses none.

The client has no public call that adds many observations at once; the value objects it
keeps per child (``_buckets``, ``_sum``, ``_count``) are its own, pinned by that test and
by the pinned version in ``requirements.txt``.
"""

import atexit
import os
import threading
from bisect import bisect_left

from prometheus_client import Histogram

FLUSH_INTERVAL_SECONDS = 0.5  # under Prometheus's scrape interval (1 s in the load test)

_batches: list["_Batched"] = []


class _Batched:
    """Pending observations per label tuple, behind one lock shared with the flush."""

    def __init__(self, metric):
        self.metric = metric
        self._pending: dict[tuple, list] = {}
        self._children: dict[tuple, object] = {}
        self._use(threading.Lock())
        _batches.append(self)

    def flush(self) -> None:
        """Add every pending observation to the metric."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for labels, entry in pending.items():
            child = self._children.get(labels)
            if child is None:
                child = self._children[labels] = self.metric.labels(*self._values(labels))
            self._add(child, entry)

    @staticmethod
    def _values(key) -> tuple:
        """The label values a pending entry's key stands for."""
        return key

    def _add(self, child, entry: list) -> None:
        raise NotImplementedError

    def _forget(self) -> None:
        # In a forked child: the parent's pending observations are the parent's to add.
        self._pending = {}
        self._use(threading.Lock())

    def _use(self, lock) -> None:
        # Nothing between acquire and release raises (dict and list operations on floats
        # and tuples of strings), so no try/finally is needed around them.
        self._lock, self._acquire, self._release = lock, lock.acquire, lock.release


class BatchedHistogram(_Batched):
    """`observe(labels, seconds)` for a labelled `prometheus_client.Histogram`."""

    def __init__(self, histogram: Histogram):
        super().__init__(histogram)
        self.bounds = tuple(histogram._upper_bounds)  # the last is +Inf

    def observe(self, labels: tuple, value: float) -> None:
        """Count ``value`` under ``labels`` (one value per label name, in order)."""
        # acquire/release rather than ``with``: fewer instructions (docs/performance.md).
        self._acquire()
        entry = self._pending.get(labels)
        if entry is None:
            entry = self._pending[labels] = [0.0] + [0] * len(self.bounds)
        entry[0] += value
        entry[1 + bisect_left(self.bounds, value)] += 1  # le: the first bound >= value
        self._release()
        if _flusher.pid != _pid:
            _flusher.start()

    def _add(self, child, entry: list) -> None:
        child._sum.inc(entry[0])
        for bucket, count in zip(child._buckets, entry[1:], strict=True):
            if count:
                bucket.inc(count)


class BatchedSummary(_Batched):
    """`observe(label, seconds)` for a `prometheus_client.Summary` with one label."""

    def observe(self, label: str, value: float) -> None:
        """Count ``value`` under ``label``'s value (a string key hashes once, a tuple on
        every call)."""
        self._acquire()
        entry = self._pending.get(label)
        if entry is None:
            entry = self._pending[label] = [0.0, 0]
        entry[0] += value
        entry[1] += 1
        self._release()
        if _flusher.pid != _pid:
            _flusher.start()

    @staticmethod
    def _values(key: str) -> tuple:
        return (key,)

    def _add(self, child, entry: list) -> None:
        child._sum.inc(entry[0])
        child._count.inc(entry[1])


def flush_all() -> None:
    """Add every pending observation of this process to its metric: before this worker
    answers a scrape, and at exit."""
    for batch in _batches:
        batch.flush()


class _Flusher:
    """The process's flushing thread, started by the first observation after a fork."""

    def __init__(self):
        self.pid: int | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self.pid == _pid:
                return
            self.pid = _pid
            threading.Thread(target=self._run, name="metrics-flush", daemon=True).start()

    @staticmethod
    def _run() -> None:
        stop = threading.Event()  # never set: the thread ends with the process
        while not stop.wait(FLUSH_INTERVAL_SECONDS):
            flush_all()


_flusher = _Flusher()
_pid = os.getpid()  # this process's, kept current across forks (os.getpid is a system call)


def _after_fork() -> None:
    global _pid
    _pid = os.getpid()
    _flusher._lock = threading.Lock()
    for batch in _batches:
        batch._forget()


os.register_at_fork(after_in_child=_after_fork)
atexit.register(flush_all)
