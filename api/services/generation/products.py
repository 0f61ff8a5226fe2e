"""Rows for the ``products`` table: branded items from the catalog's categories.

A product's category and price come from `api.services.generation.catalog` (drawn ahead so
the orders worker knows them too); the rest is drawn here: a name ``<brand> <adjective>
<noun>`` from the category's words and Faker brands, a SKU ``<CATEGORY CODE>-<id>`` that is
unique because the id is, a stock level (some items sold out) and a creation time.
"""

import random
from collections.abc import Iterator
from math import trunc  # int() of a float, as a plain call: cheaper per pick

from api.services.generation.catalog import CATEGORIES, Catalog
from api.services.generation.pools import build_brands
from api.services.generation.values import (
    WINDOW_START_TS,
    copy_escape,
    day_texts,
    money,
    time_texts,
    window_step,
)

PRODUCT_COLUMNS = ("id", "name", "sku", "category", "price", "stock", "created_at")
SOLD_OUT_SHARE = 0.06
MAX_STOCK = 1_000


def product_batches(
    *,
    seed: int,
    first_id: int,
    count: int,
    batch_size: int,
    catalog: Catalog,
    copy_text: bool = False,
) -> Iterator[list[tuple]] | Iterator[list[str]]:
    """Yield ``count`` products with ids from ``first_id``, ``batch_size`` rows at a time.

    ``copy_text``: each row as one line of ``COPY`` text (``str``, in `PRODUCT_COLUMNS`
    order) instead of a tuple, as `api.services.generation.users.user_batches` does; the
    words of names and categories are escaped once, up front (`copy_escape`).
    """
    rng = random.Random(f"{seed}:products")
    r = rng.random
    text = copy_escape if copy_text else str
    brands = tuple(text(brand) for brand in build_brands(seed=seed))
    n_brands = len(brands)
    categories, cents = catalog.categories, catalog.cents
    # Per category: its adjectives and nouns with their counts, the SKU prefix, the name.
    kinds = [
        (
            tuple(text(word) for word in c.adjectives),
            len(c.adjectives),
            tuple(text(word) for word in c.nouns),
            len(c.nouns),
            text(f"{c.code}-"),
            text(c.name),
        )
        for c in CATEGORIES
    ]
    step, day, clock = window_step(count), day_texts(), time_texts()
    for start in range(0, count, batch_size):
        batch = []
        append = batch.append
        for k in range(start, min(start + batch_size, count)):
            pid = first_id + k
            adjectives, n_adjectives, nouns, n_nouns, code, category = kinds[categories[k]]
            adjective = adjectives[trunc(r() * n_adjectives)]
            noun = nouns[trunc(r() * n_nouns)]
            name = f"{brands[trunc(r() * n_brands)]} {adjective} {noun}"
            stock = 0 if r() < SOLD_OUT_SHARE else 1 + trunc(MAX_STOCK * r() ** 3)
            s = trunc(WINDOW_START_TS + (k + r()) * step)
            if copy_text:
                append(
                    f"{pid}\t{name}\t{code}{pid:07d}\t{category}\t{money(cents[k])}\t"
                    f"{stock}\t{day[s // 86_400]}{clock[s % 86_400]}\n"
                )
                continue
            append(
                (
                    pid,
                    name,
                    f"{code}{pid:07d}",
                    category,
                    money(cents[k]),
                    stock,
                    day[s // 86_400] + clock[s % 86_400],
                )
            )
        yield batch
