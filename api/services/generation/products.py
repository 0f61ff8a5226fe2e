"""Rows for the ``products`` table: branded items from the catalog's categories.

A product's category and price come from `api.services.generation.catalog` (drawn ahead so
the orders worker knows them too); the rest is drawn here: a name ``<brand> <adjective>
<noun>`` from the category's words and Faker brands, a SKU ``<CATEGORY CODE>-<id>`` that is
unique because the id is, a stock level (some items sold out) and a creation time.
"""

import random
from collections.abc import Iterator

from api.services.generation.catalog import CATEGORIES, Catalog
from api.services.generation.pools import build_brands
from api.services.generation.values import money, spread, timestamp_formatter

PRODUCT_COLUMNS = ("id", "name", "sku", "category", "price", "stock", "created_at")
SOLD_OUT_SHARE = 0.06
MAX_STOCK = 1_000


def product_batches(
    *, seed: int, first_id: int, count: int, batch_size: int, catalog: Catalog
) -> Iterator[list[tuple]]:
    """Yield ``count`` products with ids from ``first_id``, ``batch_size`` rows at a time."""
    rng = random.Random(f"{seed}:products")
    r = rng.random
    brands = build_brands(seed=seed)
    when = spread(count=count, rng=rng)
    timestamp = timestamp_formatter()
    for start in range(0, count, batch_size):
        batch = []
        for k in range(start, min(start + batch_size, count)):
            pid = first_id + k
            category = CATEGORIES[catalog.categories[k]]
            adjective = category.adjectives[int(r() * len(category.adjectives))]
            noun = category.nouns[int(r() * len(category.nouns))]
            batch.append(
                (
                    pid,
                    f"{brands[int(r() * len(brands))]} {adjective} {noun}",
                    f"{category.code}-{pid:07d}",
                    category.name,
                    money(catalog.cents[k]),
                    0 if r() < SOLD_OUT_SHARE else 1 + int(MAX_STOCK * r() ** 3),
                    timestamp(when(k)),
                )
            )
        yield batch
