"""The product catalog: categories, and each new product's category and price.

Orders copy their product's price into ``unit_price``, and the orders are generated in a
different worker (and database) than the products. So the part of a product an order needs,
its price, is drawn first, for every new product, into a compact array (`product_catalog`,
8 bytes per product) that both the products worker and the orders worker read. The same
seed gives the same catalog, whichever worker asks.

Prices are log-uniform inside the category's range (many cheap items, a few dear ones) and
end in .99, .49 or .00 like shop prices.
"""

import math
import random
from array import array
from dataclasses import dataclass

from api.services.generation.values import slots


@dataclass(frozen=True)
class Category:
    """A shop category: SKU prefix, the words product names are made of, a price range."""

    name: str
    code: str
    adjectives: tuple[str, ...]
    nouns: tuple[str, ...]
    min_price: int
    max_price: int
    weight: int


CATEGORIES = (
    Category(
        "Electronics",
        "ELE",
        ("Wireless", "Smart", "Portable", "Noise-Cancelling", "4K", "Compact"),
        ("Headphones", "Speaker", "Monitor", "Router", "Webcam", "Keyboard", "Charger"),
        9,
        2400,
        18,
    ),
    Category(
        "Home & Kitchen",
        "HOM",
        ("Stainless", "Ceramic", "Non-Stick", "Bamboo", "Cast Iron", "Glass"),
        ("Frying Pan", "Kettle", "Knife Set", "Blender", "Cutting Board", "Coffee Maker"),
        6,
        650,
        16,
    ),
    Category(
        "Clothing",
        "CLO",
        ("Organic Cotton", "Merino", "Slim-Fit", "Waterproof", "Linen", "Classic"),
        ("T-Shirt", "Sweater", "Jacket", "Jeans", "Dress", "Hoodie", "Socks"),
        5,
        320,
        15,
    ),
    Category(
        "Books",
        "BOO",
        ("Illustrated", "Hardcover", "Paperback", "Collector's", "Annotated"),
        ("Cookbook", "Novel", "Atlas", "Field Guide", "Biography", "Poetry Collection"),
        4,
        90,
        12,
    ),
    Category(
        "Sports & Outdoors",
        "SPO",
        ("Lightweight", "Adjustable", "Insulated", "Foldable", "Trail", "Pro"),
        ("Yoga Mat", "Tent", "Backpack", "Water Bottle", "Dumbbell Set", "Bike Helmet"),
        8,
        900,
        11,
    ),
    Category(
        "Beauty",
        "BEA",
        ("Hydrating", "Unscented", "Vegan", "Mineral", "Daily", "Travel-Size"),
        ("Face Cream", "Shampoo", "Lip Balm", "Sunscreen", "Body Lotion", "Serum"),
        3,
        140,
        10,
    ),
    Category(
        "Toys & Games",
        "TOY",
        ("Wooden", "Magnetic", "Educational", "Deluxe", "Mini", "Family"),
        ("Puzzle", "Board Game", "Building Set", "Plush Bear", "Train Set", "Card Game"),
        5,
        250,
        9,
    ),
    Category(
        "Office",
        "OFF",
        ("Ergonomic", "Recycled", "Refillable", "Heavy-Duty", "Desktop", "A4"),
        ("Notebook", "Desk Lamp", "Office Chair", "Stapler", "Pen Set", "Label Printer"),
        2,
        700,
        9,
    ),
)
_CATEGORY_SLOTS = slots([(index, c.weight) for index, c in enumerate(CATEGORIES)])
_LOG_RANGES = [(math.log(c.min_price), math.log(c.max_price)) for c in CATEGORIES]
_ENDINGS = (99, 99, 99, 49, 0)


@dataclass(frozen=True)
class Catalog:
    """New products' categories and prices (in cents), index ``k`` for the k-th new product."""

    categories: array
    cents: array


def product_catalog(*, seed: int, count: int) -> Catalog:
    """Draw category and price for ``count`` new products, the same for the same seed."""
    r = random.Random(f"{seed}:catalog").random
    categories, cents = array("B"), array("q")
    exp, n_slots, n_endings = math.exp, len(_CATEGORY_SLOTS), len(_ENDINGS)
    for _ in range(count):
        index = _CATEGORY_SLOTS[int(r() * n_slots)]
        low, high = _LOG_RANGES[index]
        whole = int(exp(low + (high - low) * r()))
        categories.append(index)
        cents.append(max(whole * 100 + _ENDINGS[int(r() * n_endings)] - 100, 99))
    return Catalog(categories, cents)
