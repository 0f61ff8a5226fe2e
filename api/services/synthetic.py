"""Synthetic valid records for load tests: ``POST /api/run-query/?type=insert&count=N``.

Values come from small Faker pools built once per process (Faker per record would cost
more than the insert). E-mails carry a random token so concurrent requests never collide.
Users and products go in first, through the concurrent service; the orders then reference
the rows just inserted, so every synthetic record is valid.
"""

import random
import secrets
from decimal import Decimal
from functools import cache

from faker import Faker

from api.domain.results import INSERTED, BatchResult
from api.services.batch_insert import batch_insert

POOL_SIZE = 200


@cache
def _pools() -> dict[str, list[str]]:
    fake = Faker(use_weighting=False)
    fake.seed_instance(20261122)
    return {
        "first": [fake.first_name() for _ in range(POOL_SIZE)],
        "last": [fake.last_name() for _ in range(POOL_SIZE)],
        "city": [fake.city() for _ in range(POOL_SIZE)],
        "domain": [fake.free_email_domain() for _ in range(20)],
        "product": [fake.catch_phrase() for _ in range(POOL_SIZE)],
        "category": [fake.word().capitalize() for _ in range(30)],
    }


def synthetic_users(count: int, rng: random.Random) -> list[dict]:
    pools = _pools()
    users = []
    for _ in range(count):
        first, last = rng.choice(pools["first"]), rng.choice(pools["last"])
        token = secrets.token_hex(5)
        users.append(
            {
                "name": f"{first} {last}",
                "email": f"{first}.{last}.{token}@{rng.choice(pools['domain'])}".lower(),
                "city": rng.choice(pools["city"]),
                "credit_limit": str(Decimal(rng.randrange(0, 5_000_000)) / 100),
            }
        )
    return users


def synthetic_products(count: int, rng: random.Random) -> list[dict]:
    pools = _pools()
    return [
        {
            "name": rng.choice(pools["product"]),
            "category": rng.choice(pools["category"]),
            "price": str(Decimal(rng.randrange(100, 500_000)) / 100),
            "stock": rng.randrange(0, 1000),
        }
        for _ in range(count)
    ]


def synthetic_insert(*, count: int) -> BatchResult:
    """Insert ``count`` synthetic users, products and orders; returns every record's result.

    Raises what `batch_insert` raises. Orders are only attempted when at least one user
    and one product were stored.
    """
    rng = random.Random()
    first = batch_insert(users=synthetic_users(count, rng), products=synthetic_products(count, rng))
    user_ids = [r.id for r in first.users if r.status == INSERTED]
    product_ids = [r.id for r in first.products if r.status == INSERTED]
    orders = [
        {
            "user_id": rng.choice(user_ids),
            "product_id": rng.choice(product_ids),
            "quantity": rng.randint(1, 5),
        }
        for _ in range(count if user_ids and product_ids else 0)
    ]
    second = batch_insert(orders=orders)
    return BatchResult(users=first.users, products=first.products, orders=second.orders)
