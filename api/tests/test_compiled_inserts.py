"""The compiled insert stores what the ORM stores, and lets a unique index refuse a row."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction

from api.db.compiled_inserts import CompiledInsert
from api.models import Order, Product, User
from api.tests.conftest import ROUTED

db = pytest.mark.django_db(databases=ROUTED)

USER = {
    "name": "Ann Ample",
    "email": "ann@example.com",
    "organization_id": 7,
    "city": "Leeds",
    "credit_limit": Decimal("1234.50"),
    "segment_discount": Decimal("12.25"),
    "is_active": False,
}
RECORDS = [
    (User, USER, {"email"}),
    (User, {"name": "Bo", "email": "bo@example.com"}, {"email"}),
    (Product, {"name": "Lamp", "price": Decimal("0.10"), "stock": 3}, set()),
    (Product, {"name": "Free", "price": Decimal("0")}, set()),
    (
        Order,
        {
            "user_id": 2**40,
            "product_id": 1,
            "quantity": 3,
            "unit_price": Decimal("9.99"),
            "total": Decimal("29.97"),
            "status": "paid",
        },
        set(),
    ),
]


def stored(model, pk) -> dict:
    row = model.objects.values().get(pk=pk)
    del row["id"]
    return row


@db
@pytest.mark.parametrize(("model", "record", "unique"), RECORDS)
def test_a_compiled_insert_stores_what_create_stores(model, record, unique):
    """Every column, defaults included, as ``objects.create`` stores the same record."""
    alias = model.objects.db
    with transaction.atomic(using=alias):
        (new_id,) = CompiledInsert(model).insert(alias, [record])
    twin = {**record, **{field: f"twin-{record[field]}" for field in unique}}
    created = model.objects.create(**twin)
    ours, theirs = stored(model, new_id), stored(model, created.pk)
    for field in ("created_at", *unique):
        ours.pop(field), theirs.pop(field)
    assert ours == theirs
    assert (
        abs(
            stored(model, new_id) and model.objects.get(pk=new_id).created_at - datetime.now(UTC)
        ).total_seconds()
        < 60
    )


@db
def test_a_unique_index_refuses_a_row_without_aborting_the_transaction():
    """A taken e-mail or id gives None; the other rows of the batch are stored."""
    User.objects.create(id=5, name="Held", email="held@example.com")
    records = [
        {"name": "Dup", "email": "held@example.com"},
        {"name": "New", "email": "new@example.com"},
        {"id": 5, "name": "Same id", "email": "other@example.com"},
        {"id": 9, "name": "Own id", "email": "own@example.com"},
        {"name": "Dup in batch", "email": "new@example.com"},
    ]
    with transaction.atomic(using="users"):
        ids = CompiledInsert(User).insert("users", records)
    assert ids[0] is None and ids[2] is None and ids[4] is None
    assert ids[3] == 9 and ids[1] not in (None, 5, 9)
    assert set(User.objects.values_list("email", flat=True)) == {
        "held@example.com",
        "new@example.com",
        "own@example.com",
    }


@db
def test_a_constraint_that_is_not_a_unique_index_still_raises():
    """A NOT NULL (a bug upstream of the insert) is an IntegrityError, nothing stored."""
    with pytest.raises(IntegrityError), transaction.atomic(using="products"):
        CompiledInsert(Product).insert("products", [{"name": "No price", "price": None}])
    assert not Product.objects.exists()
