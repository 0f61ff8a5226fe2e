"""The compiled insert stores what the ORM stores, and lets a unique index refuse a row."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import IntegrityError, models, transaction
from django.db.models import F, Q
from django.db.models.functions import Lower
from django.test.utils import isolate_apps
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from api.db.compiled_inserts import CompiledInsert, unique_columns
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


EMAILS = st.sampled_from([f"u{i}@example.com" for i in range(6)])
# Far above the ids a PostgreSQL sequence hands out here (SQLite's follow the largest).
IDS = st.one_of(st.none(), st.integers(min_value=10**9, max_value=10**9 + 6))
BATCHES = st.lists(st.tuples(IDS, EMAILS), min_size=1, max_size=24)


def expected_ids(stored: dict[int, str], batch: list[tuple], got: list) -> list:
    """What one row at a time stores: automatic ids first, then explicit ones (the two
    statements), each row refused when its id or e-mail is taken by then. An automatic
    id is the database's to choose: ``got``'s, which the explicit ones then meet."""
    ids, emails = set(stored), set(stored.values())
    outcome = [None] * len(batch)
    for explicit in (False, True):
        for index, (pk, email) in enumerate(batch):
            if (pk is not None) is not explicit or email in emails or pk in ids:
                continue
            emails.add(email)
            outcome[index] = pk if explicit else got[index] or "an automatic id"
            ids.add(outcome[index])
    return outcome


@db
@hypothesis_settings(max_examples=60, deadline=None)
@given(stored=st.dictionaries(IDS.filter(bool), EMAILS, max_size=3), batch=BATCHES)
def test_each_returned_row_goes_to_the_record_that_stored_it(stored, batch):
    """Whatever mix of taken, repeated and new ids and e-mails a batch holds, each record
    gets the id of the row it stored, or None: one statement per part, matched by the
    unique columns it returns, as storing one row at a time would decide."""
    with transaction.atomic(using="users"):
        User.objects.all().delete()
        emails_stored = {}
        for pk, email in stored.items():
            if email not in emails_stored.values():
                User.objects.create(id=pk, name="Held", email=email)
                emails_stored[pk] = email
        records = [
            {"name": "N", "email": email, **({"id": pk} if pk is not None else {})}
            for pk, email in batch
        ]
        ids = CompiledInsert(User).insert("users", records)
        assert ids == expected_ids(emails_stored, batch, ids)
        for new_id, (_, email) in zip(ids, batch, strict=True):
            if new_id is not None:
                assert User.objects.get(pk=new_id).email == email
        transaction.set_rollback(True, using="users")


@db
def test_a_batch_larger_than_one_statement_is_split_and_matched_across_statements():
    """More rows than the backend takes parameters in one statement (SQLite: 999) go in
    several; a repeated e-mail in a later statement is refused there."""
    insert = CompiledInsert(User)
    per_statement = insert._plan("users", False).rows_per_statement
    count = per_statement + 5 if per_statement < 1000 else 1005
    records = [{"name": "N", "email": f"many{i}@example.com"} for i in range(count)]
    records.append({"name": "Again", "email": "many0@example.com"})
    with transaction.atomic(using="users"):
        ids = insert.insert("users", records)
    assert ids[-1] is None and None not in ids[:-1]
    assert len(set(ids[:-1])) == count
    stored = dict(User.objects.filter(id__in=ids[:-1]).values_list("id", "email"))
    assert [stored[i] for i in ids[:-1]] == [r["email"] for r in records[:-1]]


@isolate_apps("api")
def test_the_columns_that_match_a_returned_row_come_from_every_kind_of_unique_index():
    """``unique=True``, ``unique_together`` and a ``UniqueConstraint`` by fields or by bare
    column (``F``) all name columns; an index on another expression or with a condition
    cannot match a row to the values sent, so it is refused outright."""

    class Indexed(models.Model):  # noqa: DJ008 (never shown)
        a = models.IntegerField(unique=True)
        b = models.IntegerField()
        c = models.IntegerField()
        d = models.IntegerField()
        e = models.CharField(max_length=9)

        class Meta:
            unique_together = [("b", "c")]
            constraints = [
                models.UniqueConstraint(fields=["d"], name="d_key"),
                models.UniqueConstraint(F("e"), name="e_key"),
            ]

    assert unique_columns(Indexed) == {"id", "a", "b", "c", "d", "e"}

    class Lowered(models.Model):  # noqa: DJ008
        e = models.CharField(max_length=9)

        class Meta:
            constraints = [models.UniqueConstraint(Lower("e"), name="lower_e_key")]

    with pytest.raises(RuntimeError, match="expression"):
        unique_columns(Lowered)

    class Partial(models.Model):  # noqa: DJ008
        e = models.CharField(max_length=9)

        class Meta:
            constraints = [
                models.UniqueConstraint(fields=["e"], condition=Q(e__gt=""), name="e_some")
            ]

    with pytest.raises(RuntimeError, match="plain unique index"):
        unique_columns(Partial)
