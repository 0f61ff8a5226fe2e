"""Read-only queries. Each reads its model's own database through the router.

The lookups return plain dicts from ``values()``: model instances and serializers cost
more than the query on the hottest path. Cross-database joins happen here, in Python,
with one query per database (``orders_with_products``), never one query per row.
"""

from collections import defaultdict

from django.db.models import F, Max, Min, Model, QuerySet, Window
from django.db.models.functions import Lag

from api.compiled import CompiledQuery
from api.models import Order, Product, User
from api.query_params import Lookup

MODELS: dict[str, type[Model]] = {"users": User, "products": Product, "orders": Order}
KEY_MODELS = {
    "user_id": "users",
    "email": "users",
    "organization_id": "users",
    "product_id": "products",
    "order_id": "orders",
}


def fields(model: type[Model]) -> list[str]:
    """Column names of ``model`` in declaration order (``user_id``, not ``user``)."""
    return [field.attname for field in model._meta.concrete_fields]


# Sentinels that the compiled queries replace with real values.
_LOW, _HIGH, _NUMBER, _TEXT = -(2**62) + 1, -(2**62) + 2, -(2**62) + 3, "\x00value"


def _id_range(model: type[Model]) -> CompiledQuery:
    return CompiledQuery(
        model,
        lambda low, high: (
            model.objects.filter(id__gte=low, id__lt=high).order_by("id").values(*fields(model))
        ),
        _LOW,
        _HIGH,
    )


def _users_where(column: str, placeholder: int | str) -> CompiledQuery:
    return CompiledQuery(
        User,
        lambda value: User.objects.filter(**{column: value}).order_by("id").values(*fields(User)),
        placeholder,
    )


_LOOKUPS = {
    "user_id": _id_range(User),
    "product_id": _id_range(Product),
    "order_id": _id_range(Order),
    "email": _users_where("email", _TEXT),
    "organization_id": _users_where("organization_id", _NUMBER),
}


def lookup_rows(lookup: Lookup) -> list[dict]:
    """Rows for a ``type=get`` lookup, by id ascending.

    Id keys read the id range ``[value, value + count)`` (an index range scan on the
    primary key); ``email`` reads at most one user (unique index); ``organization_id`` the
    first ``count`` users of that organisation (its index). Raises
    `django.db.DatabaseError` if the database fails.
    """
    query = _LOOKUPS[lookup.key]
    if lookup.key in ("user_id", "product_id", "order_id"):
        return query.fetch(lookup.value, lookup.value + lookup.count)
    return query.fetch(lookup.value, limit=lookup.count)


def orders_with_products(user_ids: list[int]) -> dict[int, list[dict]]:
    """Each user's orders, each order with its ``product`` dict (or None if it is gone).

    Two queries: the orders database by the indexed ``user_id``, then the products
    database by primary key. Returns ``{user_id: [order, ...]}`` with orders by id.
    """
    orders = list(
        Order.objects.filter(user_id__in=user_ids).order_by("user_id", "id").values(*fields(Order))
    )
    product_ids = {order["product_id"] for order in orders}
    products = Product.objects.filter(id__in=product_ids).values(*fields(Product))
    by_id = {product["id"]: product for product in products}
    by_user = defaultdict(list)
    for order in orders:
        by_user[order["user_id"]].append({**order, "product": by_id.get(order["product_id"])})
    return by_user


def user_orders(user_id: int) -> QuerySet:
    """The orders of one user, for keyset pagination (orders database, indexed user_id)."""
    return Order.objects.filter(user_id=user_id)


def row_counts() -> dict[str, int]:
    """Rows stored per model: ``{"users": int, "products": int, "orders": int}``.

    Raises `django.db.DatabaseError` when a database is unreachable or not migrated.
    """
    return {name: model.objects.count() for name, model in MODELS.items()}


MAX_REPORTED_GAPS = 100


def table_stats() -> dict[str, dict]:
    """Per model: ``{"rows", "min_id", "max_id", "missing_ids"}``.

    ``min_id``/``max_id`` (None for an empty table) come from the primary-key index; the
    load test draws ids between them and skips ``missing_ids`` (see `missing_id_ranges`).
    Raises `django.db.DatabaseError` when a database fails.
    """
    stats = {}
    for name, model in MODELS.items():
        ids = model.objects.aggregate(min_id=Min("id"), max_id=Max("id"))
        rows = model.objects.count()
        dense = rows == 0 or rows == ids["max_id"] - ids["min_id"] + 1
        missing = [] if dense else missing_id_ranges(model)
        stats[name] = {"rows": rows, **ids, "missing_ids": missing}
    return stats


def missing_id_ranges(model: type[Model]) -> list[list[int]]:
    """``[[first, last], ...]``: ids absent between the lowest and highest, lowest first.

    At most `MAX_REPORTED_GAPS` ranges. One scan of the primary-key index (each id beside
    the one before it), so `table_stats` asks only when the count says ids are missing:
    rejected records with explicit ids, deleted rows.
    """
    gaps = (
        model.objects.annotate(previous=Window(Lag("id"), order_by="id"))
        .filter(id__gt=F("previous") + 1)
        .order_by("id")
        .values_list("previous", "id")[:MAX_REPORTED_GAPS]
    )
    return [[previous + 1, next_id - 1] for previous, next_id in gaps]
