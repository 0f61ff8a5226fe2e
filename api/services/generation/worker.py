"""One table's load, run in a worker process or thread, reporting through a queue.

`load_table` streams the job's batches into its loader's transaction, then reports
``ready`` and waits for the runner's `Decision`: commit, once every table is ready, or
stop (interrupt, or another table failed), which rolls the transaction back.
So either every database commits its rows, or none does, and a half-loaded table is never
committed. A worker ignores SIGINT: Ctrl-C reaches the whole process group, and the runner
alone decides, so each worker still closes its transaction cleanly.

Messages on the queue are tuples ``(kind, table, value)``; `Event` names the kinds.
"""

import logging
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from api.services.generation.loaders import Loader

DECISION_POLL_S = 0.05
logger = logging.getLogger(__name__)


class Event:
    """Message kinds: rows written, indexing started, ready to commit, and the outcome."""

    PROGRESS = "progress"
    INDEXING = "indexing"
    READY = "ready"
    COMMITTED = "committed"
    ROLLED_BACK = "rolled back"
    FAILED = "failed"


@dataclass(frozen=True)
class Job:
    """What to load: the table's planned rows and how to write them.

    ``batches`` gets the loader (the users generator asks it which e-mails are taken).
    """

    table: str
    count: int
    first_id: int
    stored: int
    clear: bool
    loader: Loader
    batches: Callable[[Loader], Iterator[list[tuple]]]


class Decision:
    """The runner's one decision for all workers: commit every table, or stop them all.

    The first decision wins (under a lock), so an interrupt that races with the commit
    decision can never leave one database committed and another rolled back. The value
    lives in shared memory (`multiprocessing.Value`), usable from processes and threads.
    """

    UNDECIDED, COMMIT, STOP = 0, 1, 2

    def __init__(self, context: Any) -> None:
        self._value = context.Value("b", self.UNDECIDED)

    def decide(self, value: int) -> bool:
        """Record ``value`` unless a decision was made already; True if this one counts."""
        with self._value.get_lock():
            if self._value.value != self.UNDECIDED:
                return False
            self._value.value = value
            return True

    @property
    def value(self) -> int:
        return self._value.value


class Stopped(Exception):
    """The runner asked this worker to stop; its transaction is rolled back."""


def load_table(job: Job, queue: Any, decision: Decision, *, in_process: bool) -> None:
    """Load ``job`` in one transaction; report progress and the outcome on ``queue``."""
    if in_process:
        # The runner forked us with SIGINT blocked: ignore it, then drop the block.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    started, loader = time.perf_counter(), job.loader
    try:
        loader.begin(clear=job.clear, first_id=job.first_id, stored=job.stored, count=job.count)
        for batch in job.batches(loader):
            _check(decision)
            loader.write(batch)
            queue.put((Event.PROGRESS, job.table, len(batch)))
        queue.put((Event.INDEXING, job.table, None))
        loader.finish()
        queue.put((Event.READY, job.table, time.perf_counter() - started))
        while decision.value != Decision.COMMIT:
            _check(decision)
            time.sleep(DECISION_POLL_S)
        loader.commit()
        queue.put((Event.COMMITTED, job.table, time.perf_counter() - started))
    except Stopped:
        _rollback(loader)
        queue.put((Event.ROLLED_BACK, job.table, None))
    except BaseException as exc:  # reported, never swallowed: the runner fails the command
        logger.error("generate_data: loading %s failed", job.table, exc_info=True)
        _rollback(loader)
        detail = "".join(traceback.format_exception_only(exc)).strip()
        queue.put((Event.FAILED, job.table, detail))
    finally:
        _close(loader)


def _check(decision: Decision) -> None:
    if decision.value == Decision.STOP:
        raise Stopped


def _rollback(loader: Loader) -> None:
    try:
        loader.rollback()
    except Exception:  # the failure is reported already; this one only follows from it
        logger.warning("generate_data: rollback of %s failed", loader.table, exc_info=True)


def _close(loader: Loader) -> None:
    try:
        loader.close()
    except Exception:
        logger.warning("generate_data: closing %s failed", loader.table, exc_info=True)
