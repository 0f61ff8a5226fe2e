"""A batch's SQLite transaction (`api.db.deadlines.atomic_within_deadline`) behaves as
Django's ``transaction.atomic`` does for an outermost block, on the DB-API connection.

Each test runs the same steps in both and compares what was stored, what ran, what was
raised and the state Django's connection is left in.
"""

import sqlite3

import pytest
from django.db import IntegrityError, connections, transaction

from api.db.deadlines import atomic_within_deadline
from api.models import User
from api.tests.conftest import ROUTED, sqlite_only

pytestmark = [sqlite_only, pytest.mark.django_db(databases=ROUTED, transaction=True)]

ALIAS = "users"
STATE = (
    "autocommit",
    "in_atomic_block",
    "needs_rollback",
    "commit_on_exit",
    "savepoint_ids",
    "atomic_blocks",
    "run_on_commit",
    "closed_in_transaction",
)


def django_atomic(alias):
    return transaction.atomic(using=alias)


def state() -> tuple:
    connection = connections[ALIAS]
    return tuple(
        [*value] if isinstance(value := getattr(connection, name), list) else value
        for name in STATE
    )


def stored_elsewhere() -> set[str]:
    """The e-mails another connection sees: what was committed."""
    path = connections[ALIAS].settings_dict["NAME"]
    with sqlite3.connect(path) as other:
        return {email for (email,) in other.execute("SELECT email FROM users")}


def run(block, steps) -> dict:
    """``steps`` inside ``block``: what was stored, raised and ran, and the state after."""
    User.objects.all().delete()
    ran, raised = [], None
    try:
        with block(ALIAS):
            steps(ran)
    except Exception as exc:
        raised = type(exc)
    return {"stored": stored_elsewhere(), "raised": raised, "ran": ran, "state": state()}


def add(email: str) -> None:
    User.objects.using(ALIAS).create(name="N", email=email)


def commits(ran):
    add("a@example.com")
    transaction.on_commit(lambda: ran.append("hook"), using=ALIAS)


def raises(ran):
    add("a@example.com")
    transaction.on_commit(lambda: ran.append("hook"), using=ALIAS)
    raise ValueError


def nests(ran):
    add("a@example.com")
    try:
        with transaction.atomic(using=ALIAS):
            add("b@example.com")
            add("a@example.com")  # the unique index: only the savepoint is rolled back
    except IntegrityError:
        ran.append("inner rolled back")
    add("c@example.com")


def marks_rollback(ran):
    add("a@example.com")
    transaction.set_rollback(True, using=ALIAS)


def nests_a_durable_block(ran):
    with transaction.atomic(using=ALIAS, durable=True):
        add("a@example.com")


def closes(ran):
    add("a@example.com")
    connections[ALIAS].close()


@pytest.mark.parametrize(
    "steps", [commits, raises, nests, marks_rollback, nests_a_durable_block, closes]
)
def test_a_batch_transaction_does_what_atomic_does(steps):
    connections[ALIAS].ensure_connection()
    theirs = run(django_atomic, steps)
    connections[ALIAS].ensure_connection()
    ours = run(atomic_within_deadline, steps)
    assert ours == theirs
    assert not connections[ALIAS].in_atomic_block


def test_the_batch_transaction_takes_the_write_lock_at_begin():
    """``BEGIN IMMEDIATE``, as the backend's ``transaction_mode``: another writer waits
    from the first statement on, not from the first write."""
    path = connections[ALIAS].settings_dict["NAME"]
    with atomic_within_deadline(ALIAS):
        other = sqlite3.connect(path, timeout=0)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        other.close()
