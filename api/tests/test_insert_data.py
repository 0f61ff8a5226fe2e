"""The assignment data set through the concurrent insert service and ``insert_data``."""

import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from api.db.breakers import WRITE_BREAKERS
from api.domain.results import ALREADY_STORED
from api.models import Order, Product, User
from api.services.batch_insert import batch_insert
from api.tests.conftest import ROUTED, locked, sqlite_only

db = pytest.mark.django_db(databases=ROUTED, transaction=True)
MODELS = {"users": User, "products": Product, "orders": Order}


def outcome(result, batch) -> dict:
    """Reshape a result like the fixture's ``expected`` block (submitted ids as keys)."""
    shaped = {}
    for name, results in result.by_model().items():
        submitted = [record["id"] for record in batch[name]]
        shaped[name] = {
            "stored": [submitted[r.index] for r in results if r.status == "inserted"],
            "rejected": {
                str(submitted[r.index]): r.reason for r in results if r.status == "rejected"
            },
        }
    return shaped


@db
def test_assignment_stores_8_users_9_products_7_orders(assignment, assignment_expected):
    """On empty databases the assignment gives exactly the expected rows and reasons."""
    result = batch_insert(**assignment)
    assert outcome(result, assignment) == assignment_expected
    for name, model in MODELS.items():
        stored = sorted(model.objects.values_list("id", flat=True))
        assert stored == assignment_expected[name]["stored"]
    assert not result.has_failures


@db
def test_assignment_twice_stores_nothing_new_and_says_why(assignment):
    """A second run rejects every record, each with a reason, and changes no row."""
    batch_insert(**assignment)
    before = {name: list(model.objects.order_by("id").values()) for name, model in MODELS.items()}
    again = batch_insert(**assignment)
    assert all(r.status == "rejected" and r.reason for rs in again.by_model().values() for r in rs)
    assert again.users[0].reason == "id already exists; duplicate email"
    assert again.orders[0].reason == "id already exists"
    after = {name: list(model.objects.order_by("id").values()) for name, model in MODELS.items()}
    assert after == before


@db
def test_records_whose_ids_are_stored_are_coded_already_stored(assignment):
    """On a second run the 24 records stored by the first carry ``ALREADY_STORED``; those
    a rule refuses (user 8's duplicate e-mail, user 10's blank name, ...) do not, and no
    record of a first run does, not even one whose id an earlier record of the batch took."""
    first = batch_insert(**assignment)
    assert not any(r.code for rs in first.by_model().values() for r in rs)
    again = batch_insert(**assignment)
    coded = {
        name: [r.id for r in rs if r.code == ALREADY_STORED]
        for name, rs in again.by_model().items()
    }
    assert coded == {
        name: [r.id for r in rs if r.status == "inserted"] for name, rs in first.by_model().items()
    }
    assert sum(map(len, coded.values())) == 24
    twins = batch_insert(users=[{"id": 50, "name": "A", "email": "a@example.com"}] * 2)
    assert [(r.status, r.reason, r.code) for r in twins.users] == [
        ("inserted", "", ""),
        ("rejected", "id already exists; duplicate email", ""),
    ]
    assert "code" not in again.users[0].as_dict()  # the API's records are unchanged


@db
def test_insert_data_prints_a_table_per_model():
    """The command prints per-record outcomes and the totals, and exits normally."""
    out = StringIO()
    call_command("insert_data", stdout=out)
    text = out.getvalue()
    assert "Users: 8 inserted, 2 rejected, 0 failed" in text
    assert "Products: 9 inserted, 1 rejected, 0 failed" in text
    assert "Orders: 7 inserted, 3 rejected, 0 failed" in text
    assert "rejected  duplicate email" in text
    assert "rejected  user and product do not exist" in text


@db
def test_insert_data_reads_another_file(tmp_path):
    """``--file`` runs any batch file; a malformed file is a clear command error."""
    batch = tmp_path / "batch.json"
    batch.write_text('{"users": [{"name": "Zed", "email": "zed@example.com"}]}')
    out = StringIO()
    call_command("insert_data", "--file", str(batch), stdout=out)
    assert "Users: 1 inserted, 0 rejected, 0 failed" in out.getvalue()
    assert User.objects.get().email == "zed@example.com"

    batch.write_text("{not json")
    with pytest.raises(CommandError, match="not valid JSON"):
        call_command("insert_data", "--file", str(batch))
    with pytest.raises(CommandError, match="cannot read"):
        call_command("insert_data", "--file", str(tmp_path / "missing.json"))


@sqlite_only
@db
def test_a_locked_database_fails_its_records_and_a_retry_completes(assignment, monkeypatch):
    """Orders locked past the timeout are ``failed``, not lost: a rerun stores them.

    Only field-rule rejections survive a database failure; every other record bound for
    that database is ``failed``, because its database rules could not be completed.
    """
    with locked("orders", monkeypatch):
        result = batch_insert(**assignment)
    assert result.has_failures
    assert result.summary()["users"] == {"inserted": 8, "rejected": 2, "failed": 0}
    assert result.summary()["orders"] == {"inserted": 0, "rejected": 2, "failed": 8}
    assert "locked" in result.orders[0].reason
    assert Order.objects.count() == 0

    started = time.monotonic()
    shed = batch_insert(**assignment)  # within the store's cool-down: failed at once
    assert shed.summary()["orders"]["failed"] == 8 and "locked" in shed.orders[0].reason
    assert time.monotonic() - started < 1 and Order.objects.count() == 0

    WRITE_BREAKERS["orders"].open_until = time.monotonic()  # the cool-down is over: a retry probes
    retry = batch_insert(**assignment)
    assert retry.summary()["orders"] == {"inserted": 7, "rejected": 3, "failed": 0}
    assert not WRITE_BREAKERS["orders"].open_until


@sqlite_only
@db
def test_a_locked_users_database_fails_the_orders_that_need_it(assignment, monkeypatch):
    """Without the users database the orders cannot be checked, so they fail too."""
    with locked("users", monkeypatch):
        result = batch_insert(**assignment)
    assert result.summary()["users"] == {"inserted": 0, "rejected": 1, "failed": 9}
    assert result.summary()["products"]["inserted"] == 9
    assert result.summary()["orders"] == {"inserted": 0, "rejected": 2, "failed": 8}
    assert "cannot check references" in result.orders[0].reason


@sqlite_only
@db
def test_insert_data_exits_non_zero_when_a_database_failed(monkeypatch):
    """The command reports the table and then fails with status 1."""
    out = StringIO()
    with locked("products", monkeypatch), pytest.raises(CommandError, match="failed"):
        call_command("insert_data", stdout=out)
    assert "Products: 0 inserted, 1 rejected, 9 failed" in out.getvalue()
