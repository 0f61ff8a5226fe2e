"""The concurrent batch insert: one worker thread per database, results through futures.

`batch_insert` checks every record's fields up front (`api.validation`), then hands each
database's part to that database's worker. The users and products workers run in
parallel, each inside ``transaction.atomic(using=<its alias>)``: they reject ids and
e-mails already taken, store the rest, and look up which users/products the batch's orders
refer to. The orders worker waits on both futures, so an order may name a user or product
stored before or accepted earlier in the same batch, then writes the orders inside its own
transaction.

A worker's `DatabaseError` (database down, locked past its busy timeout) turns its records
into ``failed`` results and is logged; any other exception is a bug and propagates to the
caller through ``Future.result()``.

Workers live as long as the process: one thread per database alias, started on first use,
shared by every batch of the process (batches queue per database, as SQLite's writers do
anyway). Each keeps its connection between batches under Django's own rules for a request
thread: ``close_old_connections()`` before and after every batch honours ``CONN_MAX_AGE``
(pooled PostgreSQL connections go back to the pool), health checks and broken
connections: starting three threads and opening three connections per batch had cost more
than the batch's inserts (``docs/performance.md``).
`close_worker_connections` closes what the workers hold.
"""

import logging
import os
from collections.abc import Callable, Iterable, Sequence, Set
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from threading import Lock
from time import monotonic
from typing import Any

from django.conf import settings
from django.db import (
    DatabaseError,
    IntegrityError,
    close_old_connections,
    connections,
    router,
    transaction,
)
from django.db.models import QuerySet

from api.bulkheads import PROBE_WAIT_SECONDS, WRITES, StoreShed
from api.errors import BUSY, TIMEOUT
from api.models import Order, Product, User
from api.services.results import (
    ALREADY_STORED,
    FAILED,
    INSERTED,
    REJECTED,
    BatchResult,
    RecordResult,
)
from api.validation import (
    Errors,
    OrderInput,
    ProductInput,
    StrictInput,
    Taken,
    UserInput,
    check_fields,
    input_serializer,
    order_reference_errors,
    reason,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """A record that passed the field rules; ``data`` holds model-ready values."""

    index: int
    data: dict


@dataclass(frozen=True)
class Stored:
    """A worker's outcome: its results, and the referenced ids known to exist.

    ``known`` maps id → price for products; for users the values are ``None``.
    """

    results: list[RecordResult]
    known: dict[int, Decimal | None]


REQUEST = "request"  # the default deadline: settings.REQUEST_DEADLINE_SECONDS


def batch_insert(
    *,
    users: Sequence[Any] = (),
    products: Sequence[Any] = (),
    orders: Sequence[Any] = (),
    deadline_s: float | str | None = REQUEST,
) -> BatchResult:
    """Validate and store a batch of raw records concurrently, one worker per database.

    Each argument is a list of JSON-like dicts as a client sends them. Returns a
    `BatchResult` with one result per record, in submission order. Raises whatever
    non-database exception a worker raised (never swallowed, never turned into a result).

    ``deadline_s`` bounds, from now, how long each database's part may wait for its lock
    (and, queued, for its worker): past it the part's records are ``failed`` and nothing of
    them is written. The default is ``REQUEST_DEADLINE_SECONDS``; None waits as long as
    the connection's own timeout (commands). A store whose breaker is open
    (`api.bulkheads`), or whose queue holds ``INSERT_QUEUE_LIMIT`` batches, fails its part
    at once.
    """
    if deadline_s == REQUEST:
        deadline_s = settings.REQUEST_DEADLINE_SECONDS
    deadline = None if deadline_s is None else monotonic() + deadline_s
    user_rejects, user_candidates = _check_all(input_serializer(UserInput), users)
    product_rejects, product_candidates = _check_all(input_serializer(ProductInput), products)
    order_rejects, order_candidates = _check_all(input_serializer(OrderInput), orders)
    user_refs = {c.data["user_id"] for c in order_candidates}
    product_refs = {c.data["product_id"] for c in order_candidates}
    # Resolved here, in the caller's thread: every read and write of the workers goes to
    # the primaries, and the caller's later reads of these aliases follow them there.
    users_db, products_db, orders_db = map(router.db_for_write, (User, Product, Order))

    # Submitted users, products, orders: a worker's queue is first come, first served, so
    # the orders task never waits on a task queued behind it, even when aliases coincide.
    users_future = _submit(users_db, deadline, _store_users, users_db, user_candidates, user_refs)
    products_future = _submit(
        products_db, deadline, _store_products, products_db, product_candidates, product_refs
    )
    orders_future = _submit(
        orders_db,
        deadline,
        _store_orders,
        orders_db,
        order_candidates,
        users_future,
        products_future,
    )
    stored_users = _outcome(users_future, user_candidates, users_db)
    stored_products = _outcome(products_future, product_candidates, products_db)
    stored_orders = _outcome(orders_future, order_candidates, orders_db)

    return BatchResult(
        users=_in_order(user_rejects, stored_users.results),
        products=_in_order(product_rejects, stored_products.results),
        orders=_in_order(order_rejects, stored_orders.results),
    )


def _check_all(
    serializer: StrictInput, raws: Iterable[Any]
) -> tuple[list[RecordResult], list[Candidate]]:
    rejects, candidates = [], []
    for index, raw in enumerate(raws):
        clean, errors = check_fields(serializer, raw)
        if errors:
            submitted_id = raw.get("id") if isinstance(raw, dict) else None
            rejects.append(_rejected(index, submitted_id, errors))
        else:
            candidates.append(Candidate(index, clean))
    return rejects, candidates


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


def _submit(alias: str, deadline: float | None, work: Callable[..., Stored], *args) -> Future:
    """``work(*args)`` on ``alias``'s worker, or a future failed at once with `StoreShed`
    when the store's write breaker is open or its queue is full."""
    try:
        probe = WRITES[alias].check()
        with _queued_lock:
            if _queued.get(alias, 0) >= settings.INSERT_QUEUE_LIMIT:
                raise StoreShed(alias, BUSY)
            _queued[alias] = _queued.get(alias, 0) + 1
    except StoreShed as exc:
        shed: Future = Future()
        shed.set_exception(exc)
        return shed
    if probe and deadline is not None:
        deadline = min(deadline, monotonic() + PROBE_WAIT_SECONDS)
    return _worker(alias).submit(_in_worker, alias, deadline, work, *args)


def _in_worker(alias: str, deadline: float | None, work: Callable[..., Stored], *args) -> Stored:
    # What Django's request_started and request_finished signals do for a request thread.
    close_old_connections()
    try:
        wait_s = None if deadline is None else deadline - monotonic()
        if wait_s is not None and wait_s <= 0:  # queued past the deadline: do not start
            raise StoreShed(alias, TIMEOUT)
        with _waits_at_most(alias, wait_s):
            return work(*args)
    finally:
        with _queued_lock:
            _queued[alias] -= 1
        close_old_connections()


@contextmanager
def _waits_at_most(alias: str, seconds: float | None):
    """Bound how long the connection of ``alias`` waits for a lock; None: its own timeout.

    SQLite: the busy timeout (``BEGIN IMMEDIATE`` waits there); PostgreSQL: ``lock_timeout``,
    and ``statement_timeout`` a second later, for this batch, reset afterwards (the
    connection may go back to a pool).
    """
    connection = connections[alias]
    if connection.vendor == "sqlite":
        default_s = connection.settings_dict["OPTIONS"].get("timeout", 5)
        milliseconds = round(1000 * (default_s if seconds is None else min(seconds, default_s)))
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA busy_timeout = {milliseconds}")
        yield
    elif connection.vendor == "postgresql" and seconds is not None:
        milliseconds = max(1, round(1000 * seconds))
        with connection.cursor() as cursor:
            # A lock wait ends at the deadline (reported "locked"); a statement that is
            # slow for another reason is stopped a second later (reported "timeout").
            # One round trip for both.
            cursor.execute(
                "SELECT set_config('lock_timeout', %s, false),"
                " set_config('statement_timeout', %s, false)",
                [str(milliseconds), str(milliseconds + 1000)],
            )
        try:
            yield
        finally:
            if connection.connection is not None and not connection.needs_rollback:
                with connection.cursor() as cursor:
                    # Two statements, one round trip (client-side binding sends them as
                    # one query); reading reset_val from pg_settings built the whole view.
                    cursor.execute("RESET lock_timeout; RESET statement_timeout")
    else:
        yield


def _outcome(future: Future, candidates: list[Candidate], alias: str) -> Stored:
    try:
        stored = future.result()
    except DatabaseError as exc:
        if isinstance(exc, StoreShed):  # refused, not tried: the breaker learns nothing new
            kind = exc.kind
            logger.info("batch insert: database %r shed (%s)", alias, kind)
        else:
            kind = WRITES[alias].failed(exc)
            logger.error(
                "batch insert: database %r failed (%s): %s", alias, kind, exc, exc_info=exc
            )
        message = f"database {alias!r} unavailable ({kind}); retry later"
        return Stored([_failed(c, message) for c in candidates], {})
    WRITES[alias].succeeded()
    return stored


def _store_users(alias: str, candidates: list[Candidate], referenced: set[int]) -> Stored:
    if not candidates and not referenced:
        return Stored([], {})
    with transaction.atomic(using=alias):
        users = User.objects.using(alias)
        results = _store(users, candidates)
        # Read inside the transaction, after the insert: batch members count as existing.
        known = dict.fromkeys(_existing_ids(users, referenced))
    return Stored(results, known)


def _store_products(alias: str, candidates: list[Candidate], referenced: set[int]) -> Stored:
    if not candidates and not referenced:
        return Stored([], {})
    with transaction.atomic(using=alias):
        products = Product.objects.using(alias)
        results = _store(products, candidates)
        prices = dict(products.filter(id__in=referenced).values_list("id", "price"))
    return Stored(results, prices)


def _store_orders(
    alias: str, candidates: list[Candidate], users_future: Future, products_future: Future
) -> Stored:
    if not candidates:
        return Stored([], {})
    try:
        user_ids = users_future.result().known
        prices = products_future.result().known
    except DatabaseError as exc:
        message = f"cannot check references: {type(exc).__name__}: {exc}; retry later"
        return Stored([_failed(c, message) for c in candidates], {})

    results, valid = [], []
    for c in candidates:
        errors = order_reference_errors(c.data, user_ids=user_ids, product_ids=prices)
        if errors:
            results.append(_rejected(c.index, c.data.get("id"), errors))
            continue
        price = prices[c.data["product_id"]]
        total = price * c.data["quantity"]
        valid.append(Candidate(c.index, {**c.data, "unit_price": price, "total": total}))

    with transaction.atomic(using=alias):
        results += _store(Order.objects.using(alias), valid)
    return Stored(results, {})


def _store(queryset: QuerySet, candidates: list[Candidate]) -> list[RecordResult]:
    """Reject candidates whose id or e-mail is taken, insert the rest; inside ``atomic``.

    Rows go in with one ``bulk_create`` inside a savepoint. If another writer committed a
    conflicting row after our checks (possible under PostgreSQL's READ COMMITTED; SQLite's
    IMMEDIATE transactions serialise writers and rule it out), the savepoint is rolled back
    and each row is retried in its own savepoint, so that only the rows that now conflict
    are rejected, with the reason a fresh check finds. An `IntegrityError` no rule explains
    propagates.
    """
    alias, model = queryset.db, queryset.model
    taken = _taken(queryset, [c.data for c in candidates])
    stored_ids = frozenset(taken.ids)  # before `claim` adds the batch's own
    results, accepted = [], []
    for c in candidates:
        errors = taken.conflicts(c.data)
        if errors:
            results.append(_rejected(c.index, c.data.get("id"), errors, stored_ids))
        else:
            taken.claim(c.data)
            accepted.append((c, model(**c.data)))

    try:
        with transaction.atomic(using=alias):
            queryset.bulk_create([obj for _, obj in accepted])
    except IntegrityError:
        inserted = []
        for c, _ in accepted:
            obj = model(**c.data)
            try:
                with transaction.atomic(using=alias):
                    obj.save(using=alias, force_insert=True)
            except IntegrityError:
                now = _taken(queryset, [c.data])
                errors = now.conflicts(c.data)
                if not errors:
                    raise
                results.append(_rejected(c.index, c.data.get("id"), errors, now.ids))
            else:
                inserted.append((c, obj))
        accepted = inserted

    _advance_sequence(queryset, [c.data["id"] for c, _ in accepted if c.data.get("id")])
    return results + [RecordResult(c.index, INSERTED, obj.pk) for c, obj in accepted]


def _advance_sequence(queryset: QuerySet, explicit_ids: list[int]) -> None:
    """Move PostgreSQL's id sequence past explicit ids, so later automatic ids skip them.

    PostgreSQL's sequence ignores ids given explicitly (SQLite's AUTOINCREMENT does not);
    without this the next automatic id could be one just stored. Never moves it backwards.
    """
    connection = connections[queryset.db]
    if not explicit_ids or connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT setval(s::regclass,"
            " GREATEST(%s, COALESCE(pg_sequence_last_value(s::regclass), 0)))"
            " FROM pg_get_serial_sequence(%s, 'id') AS s",
            [max(explicit_ids), queryset.model._meta.db_table],
        )


def _taken(queryset: QuerySet, records: list[dict]) -> Taken:
    """The ids (and e-mails, for users) among ``records`` that are already stored."""
    ids = _existing_ids(queryset, {r.get("id") for r in records})
    if queryset.model is not User:
        return Taken(ids)
    emails = [r["email"] for r in records]
    return Taken(ids, set(queryset.filter(email__in=emails).values_list("email", flat=True)))


def _existing_ids(queryset: QuerySet, ids: set[int | None]) -> set[int]:
    ids = {pk for pk in ids if pk is not None}
    return set(queryset.filter(id__in=ids).values_list("id", flat=True)) if ids else set()


def _rejected(
    index: int, submitted_id: Any, errors: Errors, stored_ids: Set[int] = frozenset()
) -> RecordResult:
    """``stored_ids``: ids stored before the batch; a record with one is `ALREADY_STORED`."""
    valid_id = isinstance(submitted_id, int) and not isinstance(submitted_id, bool)
    record_id = submitted_id if valid_id else None
    code = ALREADY_STORED if record_id in stored_ids else ""
    return RecordResult(index, REJECTED, record_id, reason(errors), errors, code)


def _failed(candidate: Candidate, message: str) -> RecordResult:
    return RecordResult(candidate.index, FAILED, candidate.data.get("id"), message)


def _in_order(*groups: list[RecordResult]) -> list[RecordResult]:
    return sorted((r for group in groups for r in group), key=lambda r: r.index)
