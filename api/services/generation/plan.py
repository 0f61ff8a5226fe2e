"""The plan of a run: how many rows per table, which ids, what orders may reference.

`plan_generation` runs in the parent before any worker starts. It reads each table's state
through its loader: with ``clear`` the table will be emptied and ids start at 1; otherwise
new ids start after the highest id the table has ever used (stored rows, and for SQLite
the AUTOINCREMENT counter), so appended rows collide with nothing. For the orders it reads
the ids of stored users and the ids and prices of stored products, compactly (8 bytes per
row), so appended orders may reference them, and draws the new products' catalog.

Counts: ``--rows`` splits 30% users, 10% products, 60% orders (`Counts.split`); an explicit
``--users``/``--products``/``--orders`` replaces its share.
"""

from array import array
from dataclasses import dataclass

from django.db import router

from api.domain.limits import MAX_ID
from api.domain.stores import STORE_NAMES, STORES
from api.models import Product, User
from api.services.generation.catalog import Catalog, product_catalog
from api.services.generation.loaders import Loader, loader_for
from api.services.generation.orders import ORDER_COLUMNS, References
from api.services.generation.products import PRODUCT_COLUMNS
from api.services.generation.users import USER_COLUMNS

COLUMNS = {"users": USER_COLUMNS, "products": PRODUCT_COLUMNS, "orders": ORDER_COLUMNS}
READ_CHUNK = 20_000


class PlanError(ValueError):
    """The requested run cannot be done (e.g. orders without any user); a usage error."""


@dataclass(frozen=True)
class Counts:
    """New rows per table."""

    users: int
    products: int
    orders: int

    @classmethod
    def split(cls, rows: int) -> "Counts":
        """30% users, 10% products, the rest (60%) orders."""
        users, products = rows * 3 // 10, rows // 10
        return cls(users, products, rows - users - products)

    @property
    def total(self) -> int:
        return self.users + self.products + self.orders


@dataclass(frozen=True)
class TablePlan:
    """One table's part: ``count`` new rows with ids ``first_id``…, after ``stored`` rows."""

    table: str
    alias: str
    count: int
    first_id: int
    stored: int
    clear: bool
    loader: Loader


@dataclass(frozen=True)
class Plan:
    """Everything the workers need; ``references`` and ``catalog`` serve the orders."""

    seed: int
    batch_size: int
    tables: dict[str, TablePlan]
    catalog: Catalog
    references: References


def plan_generation(
    *, counts: Counts, seed: int, batch_size: int, clear: bool, portable: bool = False
) -> Plan:
    """Read the tables' state and fix ids and references for the run.

    Raises `PlanError` when orders are asked for but no user or no product would exist,
    or when the ids would overflow.
    """
    tables = {}
    for table in STORE_NAMES:
        model = STORES[table].model
        alias = router.db_for_write(model)
        loader = loader_for(alias=alias, model=model, columns=COLUMNS[table], portable=portable)
        stored, next_id = (0, 1) if clear else loader.stored()
        count = getattr(counts, table)
        if next_id + count - 1 > MAX_ID:
            raise PlanError(f"{table}: {count} more rows would overflow the id column")
        tables[table] = TablePlan(table, alias, count, next_id, stored, clear, loader)

    catalog = product_catalog(seed=seed, count=counts.products)
    references = _references(tables, catalog) if counts.orders else _no_references(catalog)
    if counts.orders and not (references.users and references.products):
        raise PlanError("orders need at least one user and one product (stored or generated)")
    return Plan(seed, batch_size, tables, catalog, references)


def _references(tables: dict[str, TablePlan], catalog: Catalog) -> References:
    users, products = tables["users"], tables["products"]
    user_ids, product_ids, cents = array("q"), array("q"), array("q")
    if users.stored:
        rows = User.objects.using(users.alias).order_by("id").values_list("id", flat=True)
        user_ids.extend(rows.iterator(chunk_size=READ_CHUNK))
    if products.stored:
        rows = Product.objects.using(products.alias).order_by("id").values_list("id", "price")
        for product_id, price in rows.iterator(chunk_size=READ_CHUNK):
            product_ids.append(product_id)
            cents.append(int(price * 100))
    return References(
        user_ids, users.first_id, users.count, product_ids, cents, products.first_id, catalog.cents
    )


def _no_references(catalog: Catalog) -> References:
    return References(array("q"), 1, 0, array("q"), array("q"), 1, catalog.cents)
