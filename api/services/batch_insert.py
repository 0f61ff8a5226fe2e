"""The concurrent batch insert: one worker per store, results through futures.

`batch_insert` checks every record's fields up front (`api.domain.validation`), then hands
each store's part to that store's worker (`api.db.bulkheads`). The users and products
parts run in parallel; the orders part waits on both futures, so an order may name a user
or product stored before or accepted earlier in the same batch. A batch with one part
runs it in the caller's thread, under the same breaker, queue bound and deadline. What
each part does inside its transaction is `api.services.store_writes`.

A part's `DatabaseError` (a store down, locked past its deadline, shed) turns its records
into ``failed`` results and is logged; any other exception is a bug and propagates to the
caller through ``Future.result()``.
"""

import logging
from collections.abc import Sequence
from concurrent.futures import Future
from time import monotonic
from typing import Any

from django.conf import settings
from django.db import DatabaseError, router

from api.db.breakers import WRITE_BREAKERS
from api.db.bulkheads import submit
from api.db.failures import StoreShed
from api.db.routers import DatabaseRouter
from api.domain.results import BatchResult, RecordResult
from api.domain.validation import (
    OrderInput,
    ProductInput,
    StrictInput,
    UserInput,
    check_records,
    input_serializer,
)
from api.models import Order, Product, User
from api.services.store_writes import (
    Candidate,
    Stored,
    failed,
    rejected,
    store_orders,
    store_products,
    store_users,
)

logger = logging.getLogger(__name__)

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
    (`api.db.breakers`), or whose queue holds ``INSERT_QUEUE_LIMIT`` batches, fails its part
    at once.
    """
    if deadline_s == REQUEST:
        deadline_s = settings.REQUEST_DEADLINE_SECONDS
    deadline = None if deadline_s is None else monotonic() + deadline_s
    user_rejects, user_candidates = _check_all(UserInput, users)
    product_rejects, product_candidates = _check_all(ProductInput, products)
    order_rejects, order_candidates = _check_all(OrderInput, orders)
    user_refs = {c.data["user_id"] for c in order_candidates}
    product_refs = {c.data["product_id"] for c in order_candidates}
    # Resolved here, in the caller's thread: every read and write of the workers goes to
    # the primaries, and the caller's later reads of the aliases the batch writes follow
    # them there (only those: a store read for references only is not pinned).
    users_db = _primary(User, writes=bool(user_candidates))
    products_db = _primary(Product, writes=bool(product_candidates))
    orders_db = _primary(Order, writes=bool(order_candidates))

    # Submitted users, products, orders: a worker's queue is first come, first served, so
    # the orders task never waits on a task queued behind it, even when aliases coincide.
    # A part with nothing to store or look up is not submitted; the only part of a batch
    # runs in this thread (nothing would run beside it).
    todo = (user_candidates or user_refs, product_candidates or product_refs, order_candidates)
    inline = sum(map(bool, todo)) == 1
    users_future = _part(
        users_db, deadline, inline, store_users, todo[0], user_candidates, user_refs
    )
    products_future = _part(
        products_db, deadline, inline, store_products, todo[1], product_candidates, product_refs
    )
    orders_future = _part(
        orders_db,
        deadline,
        inline,
        store_orders,
        todo[2],
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


def _primary(model, *, writes: bool) -> str:
    """``model``'s primary alias; pinned for the caller's scope (`router.db_for_write`)
    only when the batch ``writes`` to it."""
    return router.db_for_write(model) if writes else DatabaseRouter.model_alias(model)


def _check_all(
    serializer_class: type[StrictInput], raws: Sequence[Any]
) -> tuple[list[RecordResult], list[Candidate]]:
    rejects, candidates = [], []
    if not raws:
        return rejects, candidates
    checked = check_records(input_serializer(serializer_class), raws)
    for index, (raw, (clean, errors)) in enumerate(zip(raws, checked, strict=True)):
        if errors:
            submitted_id = raw.get("id") if isinstance(raw, dict) else None
            rejects.append(rejected(index, submitted_id, errors))
        else:
            candidates.append(Candidate(index, clean))
    return rejects, candidates


NOTHING = Future()
NOTHING.set_result(Stored([], {}))


def _part(alias: str, deadline: float | None, inline: bool, work, todo, *args) -> Future:
    """``work(alias, *args)`` on the store's worker (``inline``: in this thread), or
    `NOTHING` when ``todo`` is empty."""
    return submit(alias, deadline, work, alias, *args, inline=inline) if todo else NOTHING


def _outcome(future: Future, candidates: list[Candidate], alias: str) -> Stored:
    if future is NOTHING:  # never tried: the store's breaker learns nothing
        return future.result()
    try:
        stored = future.result()
    except DatabaseError as exc:
        if isinstance(exc, StoreShed):  # refused, not tried: the breaker learns nothing new
            kind = exc.kind
            logger.info("batch insert: database %r shed (%s)", alias, kind)
        else:
            kind = WRITE_BREAKERS[alias].failed(exc)
            logger.error(
                "batch insert: database %r failed (%s): %s", alias, kind, exc, exc_info=exc
            )
        return Stored([failed(c, alias, kind) for c in candidates], {})
    WRITE_BREAKERS[alias].succeeded()
    return stored


def _in_order(*groups: list[RecordResult]) -> list[RecordResult]:
    return sorted((r for group in groups for r in group), key=lambda r: r.index)
