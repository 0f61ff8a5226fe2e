"""Read-only queries. Each reads its model's own database through the router.

The lookups return plain dicts of the columns the resources' output serializers render
(`api.domain.columns.output_columns`), from ``values()``: model instances and serializers
cost more than the query on the hottest path. Their queries are compiled once per alias
(`api.db.compiled`), one per key of `api.domain.lookup_keys.LOOKUP_KEYS`. Cross-database
joins happen here, in Python, with one query per database (`orders_with_products`),
never one query per row.
"""

from typing import NamedTuple

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, F, Max, Min, Model, QuerySet, Window
from django.db.models.functions import Lag, RowNumber

from api.db.breakers import READ_BREAKERS
from api.db.compiled import CompiledQuery
from api.db.routers import read_with_fallback
from api.domain.columns import output_columns
from api.domain.limits import MAX_ID, MAX_INCLUDED_ORDERS, MAX_ORDERS_PER_USER, MAX_REPORTED_GAPS
from api.domain.lookup_keys import EQUAL, LOOKUP_KEYS, RANGE, Lookup, LookupKey
from api.domain.stores import ORDERS, PRODUCTS, STORES, USERS
from api.models import Order, Product, User

STATS_CACHE_KEY = "api:table_stats"

# Sentinels that the compiled queries replace with real values.
_LOW, _HIGH, _NUMBER, _TEXT = -(2**62) + 1, -(2**62) + 2, -(2**62) + 3, "\x00value"


def _compiled(key: LookupKey, one: bool = False) -> CompiledQuery:
    """The query of ``key``: its `RANGE` of ids, or the first rows `EQUAL` to its value
    (``one``: a `RANGE` key's single id, by equality)."""
    model = STORES[key.store].model
    if key.query == RANGE and not one:
        return CompiledQuery(
            model,
            lambda low, high: (
                model.objects.filter(**{f"{key.column}__gte": low, f"{key.column}__lte": high})
                .order_by("id")
                .values(*output_columns(key.store))
            ),
            _LOW,
            _HIGH,
        )
    assert key.query == EQUAL or one, key
    return CompiledQuery(
        model,
        lambda value: (
            model.objects.filter(**{key.column: value})
            .order_by("id")
            .values(*output_columns(key.store))
        ),
        _TEXT if key.value.python is str else _NUMBER,
    )


LOOKUP_QUERIES: dict[str, CompiledQuery] = {
    name: _compiled(key) for name, key in LOOKUP_KEYS.items()
}
# A range of one id, the usual lookup, by equality: PostgreSQL keeps planning a prepared
# range afresh on every run (its generic plan's estimate, a share of the table, never
# beats a custom plan's one row), which made a lookup cost half as much again.
ONE_ID_QUERIES: dict[str, CompiledQuery] = {
    name: _compiled(key, one=True) for name, key in LOOKUP_KEYS.items() if key.query == RANGE
}


USER_ORDERS = CompiledQuery(
    Order,
    lambda user_id: (
        Order.objects.filter(user_id=user_id)
        .order_by("id")
        .values(*_with(output_columns("orders"), "user_id", "product_id"))
    ),
    _NUMBER,
)


def lookup_rows(lookup: Lookup) -> list[dict]:
    """Rows for a ``type=get`` lookup, by id ascending, as `api.http.outputs` renders them.

    A `RANGE` key reads the ids in ``[value, value + count)`` (capped at the largest id
    a column holds); an `EQUAL` key the first ``count`` rows whose column equals the
    value (SQL `LIMIT count`). Raises `api.db.failures.StoreUnavailable` naming the store if its
    database fails.
    """
    key = lookup.key
    query = LOOKUP_QUERIES[key.name]
    with READ_BREAKERS[key.store]:
        if key.query == RANGE:
            if lookup.count == 1:
                return ONE_ID_QUERIES[key.name].fetch(lookup.value)
            return query.fetch(lookup.value, min(lookup.value + lookup.count - 1, MAX_ID))
        return query.fetch(lookup.value, limit=lookup.count)


class UserOrders(NamedTuple):
    """The first orders of one user (by id, each with its ``product``) and how many it has."""

    orders: list[dict]
    total: int


def orders_per_user(users: int) -> int:
    """How many orders `orders_with_products` includes per user, for ``users`` users.

    `MAX_ORDERS_PER_USER`, less when that many for every user would pass
    `MAX_INCLUDED_ORDERS` in one response (at least one each).
    """
    return max(1, min(MAX_ORDERS_PER_USER, MAX_INCLUDED_ORDERS // max(users, 1)))


def orders_with_products(user_ids: list[int]) -> dict[int, UserOrders]:
    """Each user's first orders, each with its ``product`` dict (or None if it is gone).

    At most `orders_per_user` orders per user, so a response stays within
    `MAX_INCLUDED_ORDERS` whatever a user has bought; ``total`` counts them all. Two
    queries: the orders database by the indexed ``user_id``, then the products database by
    primary key. For one user (the usual lookup) the first is compiled once
    (`USER_ORDERS`, ``LIMIT`` one past the cap; a count only when the cap cuts); for more,
    a window numbers and counts each user's orders. Orders and products carry the columns
    their output serializers render. Users without orders are absent. Raises
    `api.db.failures.StoreUnavailable` naming the store whose database fails.
    """
    order_columns = output_columns("orders")
    per_user = orders_per_user(len(user_ids))
    with READ_BREAKERS[ORDERS.name]:
        if len(user_ids) == 1:
            orders = USER_ORDERS.fetch(user_ids[0], limit=per_user + 1)
            total = len(orders)
            if total > per_user:
                del orders[per_user:]
                total = read_with_fallback(
                    Order,
                    lambda alias: Order.objects.using(alias).filter(user_id=user_ids[0]).count(),
                )
            for order in orders:
                order["user_total"] = total
        else:
            by_user_id = {"partition_by": [F("user_id")]}
            orders = read_with_fallback(
                Order,
                lambda alias: list(
                    Order.objects.using(alias)
                    .filter(user_id__in=user_ids)
                    .annotate(
                        rank=Window(RowNumber(), order_by=F("id").asc(), **by_user_id),
                        user_total=Window(Count("id"), **by_user_id),
                    )
                    .filter(rank__lte=per_user)
                    .order_by("user_id", "id")
                    .values(*_with(order_columns, "user_id", "product_id", "user_total"))
                ),
            )
    product_ids = {order["product_id"] for order in orders}
    with READ_BREAKERS[PRODUCTS.name]:
        products = read_with_fallback(
            Product,
            lambda alias: list(
                Product.objects.using(alias)
                .filter(id__in=product_ids)
                .values(*output_columns("products"))
            ),
        )
        by_id = {product["id"]: product for product in products}
    by_user: dict[int, UserOrders] = {}
    for order in orders:
        row = {column: order[column] for column in order_columns}
        row["product"] = by_id.get(order["product_id"])
        user_id = order["user_id"]
        if user_id not in by_user:
            by_user[user_id] = UserOrders([], order["user_total"])
        by_user[user_id].orders.append(row)
    return by_user


def _with(columns: list[str], *more: str) -> list[str]:
    return [*columns, *(column for column in more if column not in columns)]


def user_exists(*, user_id: int) -> bool:
    """Whether user ``user_id`` is stored; a failure names the users store
    (`api.db.failures.StoreUnavailable`)."""
    with READ_BREAKERS[USERS.name]:
        return read_with_fallback(
            User, lambda alias: User.objects.using(alias).filter(pk=user_id).exists()
        )


def user_orders(user_id: int) -> QuerySet:
    """The orders of one user, for keyset pagination (orders database, indexed user_id)."""
    return Order.objects.filter(user_id=user_id)


def row_counts() -> dict[str, int]:
    """Rows stored per model: ``{"users": int, "products": int, "orders": int}``.

    Raises `django.db.DatabaseError` when a database is unreachable or not migrated.
    """
    return {name: store.model.objects.count() for name, store in STORES.items()}


def table_stats() -> dict[str, dict]:
    """Per model: ``{"rows", "min_id", "max_id", "missing_ids"}``.

    ``min_id``/``max_id`` (None for an empty table) come from the primary-key index; the
    load test draws ids between them and skips ``missing_ids`` (see `missing_id_ranges`).
    Counting and the gap search read whole indexes: `cached_table_stats` is what the API
    serves. Raises `api.db.failures.StoreUnavailable` naming the store whose database fails.
    """
    stats = {}
    for name, store in STORES.items():
        model = store.model
        with READ_BREAKERS[name]:
            stats[name] = read_with_fallback(model, lambda alias, m=model: _model_stats(m, alias))
    return stats


def _model_stats(model: type[Model], alias: str) -> dict:
    objects = model.objects.using(alias)
    ids = objects.aggregate(min_id=Min("id"), max_id=Max("id"))
    rows = objects.count()
    dense = rows == 0 or rows == ids["max_id"] - ids["min_id"] + 1
    missing = [] if dense else missing_id_ranges(model, alias)
    return {"rows": rows, **ids, "missing_ids": missing}


def cached_table_stats() -> dict[str, dict]:
    """`table_stats`, computed at most once per ``STATS_CACHE_SECONDS`` per cache.

    From Django's default cache (shared by every worker when it is Redis or a database
    cache), so repeated requests cost a cache read instead of full index scans.
    """
    return cache.get_or_set(STATS_CACHE_KEY, table_stats, settings.STATS_CACHE_SECONDS)


def missing_id_ranges(model: type[Model], alias: str | None = None) -> list[list[int]]:
    """``[[first, last], ...]``: ids absent between the lowest and highest, lowest first.

    At most `MAX_REPORTED_GAPS` ranges. One scan of the primary-key index (each id beside
    the one before it), so `table_stats` asks only when the count says ids are missing:
    rejected records with explicit ids, deleted rows.
    """
    gaps = (
        model.objects.using(alias)
        .annotate(previous=Window(Lag("id"), order_by="id"))
        .filter(id__gt=F("previous") + 1)
        .order_by("id")
        .values_list("previous", "id")[:MAX_REPORTED_GAPS]
    )
    return [[previous + 1, next_id - 1] for previous, next_id in gaps]
