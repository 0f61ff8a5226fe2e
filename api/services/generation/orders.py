"""Rows for the ``orders`` table: users buying products, priced from the product.

An order's user and product are drawn from `References`: the ids already stored (read
before the load, so appended orders may name them) followed by the ids this run creates.
Products are drawn with a skew (a few are bestsellers); ``unit_price`` is the product's
price in cents, from the stored rows or the run's `Catalog`, and ``total`` is
``quantity × unit_price`` computed in integer cents, so it is exact.

Order dates are spread over the window in id order; the status follows the order's age:
recent orders are still pending, paid or shipped, older ones delivered or cancelled.
"""

import random
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from math import trunc  # int() of a float, as a plain call: cheaper per pick

from api.models import Order
from api.services.generation.values import (
    WINDOW_END_TS,
    WINDOW_START_TS,
    day_texts,
    money,
    slots,
    time_texts,
    window_step,
)

ORDER_COLUMNS = (
    "id",
    "user_id",
    "product_id",
    "quantity",
    "unit_price",
    "total",
    "status",
    "created_at",
)
PRODUCT_SKEW = 1.6  # index = n × u^skew: low indexes (older products) sell more
_S = Order.Status
_QUANTITIES = slots([(1, 45), (2, 22), (3, 12), (4, 7), (5, 5), (6, 3), (7, 2), (8, 2), (10, 2)])
_RECENT = slots([(_S.PENDING, 30), (_S.PAID, 35), (_S.SHIPPED, 25), (_S.CANCELLED, 10)])
_LAST_MONTH = slots([(_S.PAID, 5), (_S.SHIPPED, 20), (_S.DELIVERED, 67), (_S.CANCELLED, 8)])
_OLDER = slots([(_S.DELIVERED, 93), (_S.CANCELLED, 7)])
_RECENT, _LAST_MONTH, _OLDER = ([s.value for s in t] for t in (_RECENT, _LAST_MONTH, _OLDER))
RECENT_SINCE = WINDOW_END_TS - 7 * 86_400
LAST_MONTH_SINCE = WINDOW_END_TS - 30 * 86_400


@dataclass(frozen=True)
class References:
    """Ids an order may name: stored ones first (sorted), then the run's new range.

    ``stored_cents``/``new_cents`` hold the matching products' prices in cents.
    """

    stored_users: array
    first_new_user: int
    new_users: int
    stored_products: array
    stored_cents: array
    first_new_product: int
    new_cents: array

    @property
    def users(self) -> int:
        return len(self.stored_users) + self.new_users

    @property
    def products(self) -> int:
        return len(self.stored_products) + len(self.new_cents)


def order_batches(
    *,
    seed: int,
    first_id: int,
    count: int,
    batch_size: int,
    references: References,
    copy_text: bool = False,
) -> Iterator[list[tuple]] | Iterator[list[str]]:
    """Yield ``count`` orders with ids from ``first_id``, ``batch_size`` rows at a time.

    ``copy_text``: each row as one line of ``COPY`` text (``str``, in `ORDER_COLUMNS`
    order) instead of a tuple, as `api.services.generation.users.user_batches` does;
    statuses are plain lower-case words, with nothing to escape.
    """
    rng = random.Random(f"{seed}:orders")
    r = rng.random
    ref = references
    stored_users, n_stored_users, n_users = ref.stored_users, len(ref.stored_users), ref.users
    new_user_offset = ref.first_new_user - n_stored_users
    stored_products, stored_cents = ref.stored_products, ref.stored_cents
    n_stored_products, n_products, new_cents = len(stored_products), ref.products, ref.new_cents
    new_product_offset = ref.first_new_product - n_stored_products
    step, day, clock = window_step(count), day_texts(), time_texts()
    quantities, n_quantities, skew = _QUANTITIES, len(_QUANTITIES), PRODUCT_SKEW
    # The status tables with their lengths, chosen by the order's age.
    older, recent, last_month = ((t, len(t)) for t in (_OLDER, _RECENT, _LAST_MONTH))
    # Shop prices repeat (…99, …49), and so do their small multiples: memoise the text.
    price = cache(money)
    for start in range(0, count, batch_size):
        batch = []
        append = batch.append
        for k in range(start, min(start + batch_size, count)):
            u = trunc(r() * n_users)
            user = stored_users[u] if u < n_stored_users else u + new_user_offset
            p = trunc(n_products * r() ** skew)
            if p < n_stored_products:
                product, cents = stored_products[p], stored_cents[p]
            else:
                product, cents = p + new_product_offset, new_cents[p - n_stored_products]
            quantity = quantities[trunc(r() * n_quantities)]
            # Whole seconds: for an integer bound, s < bound exactly when the time is.
            s = trunc(WINDOW_START_TS + (k + r()) * step)
            if s < LAST_MONTH_SINCE:
                statuses, n_statuses = older
            else:
                statuses, n_statuses = recent if s >= RECENT_SINCE else last_month
            if copy_text:
                # The tuple below, as one line (the status is the same last draw).
                append(
                    f"{first_id + k}\t{user}\t{product}\t{quantity}\t{price(cents)}\t"
                    f"{price(cents * quantity)}\t{statuses[trunc(r() * n_statuses)]}\t"
                    f"{day[s // 86_400]}{clock[s % 86_400]}\n"
                )
                continue
            append(
                (
                    first_id + k,
                    user,
                    product,
                    quantity,
                    price(cents),
                    price(cents * quantity),
                    statuses[trunc(r() * n_statuses)],
                    day[s // 86_400] + clock[s % 86_400],
                )
            )
        yield batch
