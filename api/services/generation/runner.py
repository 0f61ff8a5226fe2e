"""Run a plan: the three databases load in parallel, and commit together or not at all.

`run_plan` starts one worker per table (`api.services.generation.worker`), as processes
(fork) by default or as threads. Row generation is pure Python and holds the GIL, so
threads only overlap the database's own work. On the 2-core machine processes measured
about twice as fast on SQLite; on PostgreSQL (`CopyLoader`, 1M rows, six alternating
runs) 8.1 s against 9.6 s median wall, with 2 s of CPU left idle instead of 4–7 s, as
the server's backends parse the rows in their own processes either way. Both loaders open
their own connection in the worker. `OrmLoader` goes through Django's connections, which
do not survive a fork (nor does psycopg's pool, with its threads), so its runs use threads.

The runner reads the workers' messages, reports each table's progress (`progress`), and
decides: once every table is ready (rows written, indexes rebuilt, still uncommitted) it
tells all of them to commit; if one fails, or Ctrl-C arrives first, it tells all of them to
roll back. Ctrl-C is caught in the runner (the workers ignore it) so that every worker ends
its transaction cleanly before the command reports what happened and exits non-zero.
"""

import gc
import multiprocessing
import queue as queues
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import connections

from api.domain.stores import STORE_NAMES
from api.services.generation.orders import order_batches
from api.services.generation.plan import Plan, TablePlan
from api.services.generation.products import product_batches
from api.services.generation.progress import Progress, Quiet
from api.services.generation.users import user_batches
from api.services.generation.worker import Decision, Event, Job, load_table

PROCESSES, THREADS = "processes", "threads"
POLL_S = 0.2


@dataclass
class TableOutcome:
    """How one table's load ended: ``status`` is an `Event` outcome or ``"pending"``.

    ``seconds`` is the worker's own time, from its start until its rows were written and
    indexed (ready to commit), excluding the wait for the other databases.
    """

    table: str
    alias: str
    planned: int
    first_id: int
    stored: int
    status: str = "pending"
    seconds: float = 0.0
    error: str = ""

    @property
    def loaded(self) -> int:
        """Rows now stored by this run: all planned rows once committed, else none."""
        return self.planned if self.status == Event.COMMITTED else 0


@dataclass
class RunResult:
    """The run's outcome; ``complete`` only when every table committed."""

    tables: dict[str, TableOutcome]
    seconds: float = 0.0
    interrupted: bool = False
    parallel: str = PROCESSES
    errors: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return all(t.status == Event.COMMITTED for t in self.tables.values())

    @property
    def loaded(self) -> int:
        return sum(t.loaded for t in self.tables.values())


def run_plan(
    plan: Plan, *, parallel: str = PROCESSES, progress: Progress | None = None
) -> RunResult:
    """Load every planned table in parallel, reporting to ``progress`` (None: quietly)."""
    started = time.perf_counter()
    jobs = [_job(plan, table) for table in STORE_NAMES if _runs(plan.tables[table])]
    result = RunResult(
        {
            job.table: TableOutcome(
                job.table, plan.tables[job.table].alias, job.count, job.first_id, job.stored
            )
            for job in jobs
        }
    )
    result.parallel = PROCESSES if _can_fork(plan, parallel) else THREADS
    if result.parallel == PROCESSES:
        context = multiprocessing.get_context("fork")
        channel, decision = context.Queue(), Decision(context)
        connections.close_all()  # a forked child must not share the parent's connections
        # Everything alive now (Django, the plan) lives until the command exits. Frozen,
        # no collection walks it again: not the workers' (which would also copy the
        # shared pages they touch), nor the parent's final one at exit, which took longer
        # than the rest of a small run's teardown (docs/performance.md). Not unfrozen:
        # that brings the final collection back; a long-lived caller (the tests) only
        # keeps what was garbage in cycles at this moment.
        gc.freeze()
        workers = {
            job.table: context.Process(
                target=load_table, args=(job, channel, decision), kwargs={"in_process": True}
            )
            for job in jobs
        }
    else:
        channel, decision = queues.Queue(), Decision(multiprocessing.get_context())
        workers = {
            job.table: threading.Thread(
                target=load_table, args=(job, channel, decision), kwargs={"in_process": False}
            )
            for job in jobs
        }
    with _interrupts(lambda: _interrupt(result, decision)):
        try:
            _start(workers.values())
            _follow(result, channel, decision, workers, jobs, progress or Quiet())
        finally:
            decision.decide(Decision.STOP)  # only if undecided: the runner itself failed
            for worker in workers.values():
                if worker.ident is not None:  # started (a thread's ident, a process's pid)
                    worker.join()
    result.seconds = time.perf_counter() - started
    return result


def _can_fork(plan: Plan, parallel: str) -> bool:
    """Processes when asked for, possible (fork), and safe for every table's loader."""
    return (
        parallel == PROCESSES
        and "fork" in multiprocessing.get_all_start_methods()
        and all(table.loader.fork_safe for table in plan.tables.values())
    )


def _start(workers) -> None:
    """Start the workers; processes are forked with SIGINT blocked until they ignore it."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        for worker in workers:
            worker.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _runs(table: TablePlan) -> bool:
    return table.count > 0 or table.clear


def _job(plan: Plan, table: str) -> Job:
    part = plan.tables[table]
    common = {"seed": plan.seed, "first_id": part.first_id, "count": part.count}
    common["batch_size"] = plan.batch_size
    if table == "users":
        appending = part.stored > 0

        def batches(loader):
            taken = loader.taken_emails if appending else None
            return user_batches(**common, taken=taken, copy_text=loader.copy_text)
    elif table == "products":

        def batches(loader):
            return product_batches(**common, catalog=plan.catalog, copy_text=loader.copy_text)
    else:

        def batches(loader):
            return order_batches(**common, references=plan.references, copy_text=loader.copy_text)

    return Job(table, part.count, part.first_id, part.stored, part.clear, part.loader, batches)


def _follow(result, channel, decision, workers, jobs, progress: Progress) -> None:
    """Read messages until every table has an outcome; decide commit or stop."""
    for job in jobs:
        progress.start(job.table, label=result.tables[job.table].alias, total=job.count)
    pending, ready, silent = set(workers), set(), set()
    try:
        while pending:
            try:
                kind, table, value = channel.get(timeout=POLL_S)
            except queues.Empty:
                _reap(result, decision, workers, pending, silent, progress)
                continue
            outcome = result.tables[table]
            if kind == Event.PROGRESS:
                progress.advance(table, value)
            elif kind == Event.INDEXING:
                progress.state(table, Event.INDEXING)
            elif kind == Event.READY:
                ready.add(table)
                outcome.seconds = value
                progress.state(table, Event.READY)
                if ready == set(workers):
                    decision.decide(Decision.COMMIT)
            else:
                pending.discard(table)
                outcome.status = kind
                if kind == Event.FAILED:
                    outcome.error = value
                    result.errors.append(f"{table}: {value}")
                    decision.decide(Decision.STOP)
                progress.state(table, kind)
    finally:
        progress.close()


def _reap(result, decision, workers, pending, silent, progress: Progress) -> None:
    """A worker that died without reporting (killed, out of memory) failed its table.

    A worker seen dead is only failed at the next quiet poll, after its last message (sent
    just before it ended) has had time to arrive.
    """
    for table in list(pending):
        worker = workers[table]
        if not worker.is_alive() and table not in silent:
            silent.add(table)
        elif table in silent:
            code = getattr(worker, "exitcode", None)
            message = f"worker ended without reporting (exit code {code})"
            result.tables[table].status, result.tables[table].error = Event.FAILED, message
            result.errors.append(f"{table}: {message}")
            pending.discard(table)
            decision.decide(Decision.STOP)
            progress.state(table, Event.FAILED)


def _interrupt(result: RunResult, decision: Decision) -> None:
    """Ctrl-C: stop every worker, unless the commit was decided already (it completes)."""
    decision.decide(Decision.STOP)
    if decision.value == Decision.STOP:
        result.interrupted = True


class _interrupts:
    """Within the block, SIGINT calls ``handler`` instead of raising KeyboardInterrupt."""

    def __init__(self, handler: Callable[[], Any]) -> None:
        self.handler, self.previous = handler, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, lambda *_: self.handler())
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
