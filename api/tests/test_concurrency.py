"""Concurrent batches: 64 threads writing to all three databases lose and duplicate nothing."""

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.db import connections

from api.db.bulkheads import close_worker_connections
from api.domain import validation as v
from api.domain.validation import Taken
from api.models import Order, Product, User
from api.services import batch_insert as service
from api.services import store_writes
from api.services.batch_insert import batch_insert
from api.tests.conftest import ROUTED, ROUTED_VENDORS, manage, sqlite_only, sqlite_path

THREADS = 64
SHARED_EMAILS = 8  # each shared address is submitted by THREADS / SHARED_EMAILS threads
AUTO_USERS = 10
AUTO_PRODUCTS = 5
# Explicit ids stay below a sentinel row: automatic ids continue after the highest id
# stored with an explicit id (SQLite's AUTOINCREMENT, and the insert service advances
# PostgreSQL's sequence), so they never collide with the explicit ones.
OWN, SHARED, SENTINEL = 100, 200, 1_000

db = pytest.mark.django_db(databases=ROUTED, transaction=True)


def thread_batch(t: int) -> dict[str, list]:
    """Thread ``t``'s batch: own users and products, one shared e-mail, three orders."""
    own, shared, neighbour = OWN + t, SHARED + t, OWN + (t + 1) % THREADS
    return {
        "users": [
            {"id": own, "name": f"Own {t}", "email": f"own{t}@example.com"},
            {"id": shared, "name": f"Shared {t}", "email": f"Shared{t % SHARED_EMAILS}@X.com"},
            *({"name": f"A{t}.{i}", "email": f"auto{t}.{i}@x.com"} for i in range(AUTO_USERS)),
        ],
        "products": [
            {"id": own, "name": f"Product {t}", "price": "9.99"},
            *({"name": f"Auto {t}.{i}", "price": t + i} for i in range(AUTO_PRODUCTS)),
        ],
        "orders": [
            {"user_id": own, "product_id": own, "quantity": 2},
            {"user_id": shared, "product_id": own, "quantity": 1},
            {"user_id": neighbour, "product_id": own, "quantity": 3},
        ],
    }  # fmt: skip


@db
def test_64_threads_insert_concurrently_without_loss_or_duplicates():
    """0 errors, every accepted row stored exactly once, results match the stored rows."""
    sentinels = batch_insert(
        users=[{"id": SENTINEL, "name": "Sentinel", "email": "sentinel@example.com"}],
        products=[{"id": SENTINEL, "name": "Sentinel", "price": 0}],
    )
    assert sentinels.summary()["users"]["inserted"] == 1
    batches = [thread_batch(t) for t in range(THREADS)]
    start = threading.Barrier(THREADS)

    def run(batch):
        start.wait()
        return batch_insert(**batch)

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        results = list(pool.map(run, batches))
    seconds = time.perf_counter() - began

    records = sum(len(rs) for b in batches for rs in b.values())
    failed = [
        r for res in results for rs in res.by_model().values() for r in rs if r.status == "failed"
    ]
    errors = len(failed)
    print(f"\nconcurrency: {THREADS} threads, {records} records, {errors} errors, {seconds:.2f} s")
    assert failed == []

    for name, model in {"users": User, "products": Product, "orders": Order}.items():
        reported = [r.id for res in results for r in getattr(res, name) if r.status == "inserted"]
        stored = list(model.objects.exclude(id=SENTINEL).values_list("id", flat=True))
        assert len(reported) == len(set(reported)) == len(stored)
        assert set(reported) == set(stored)

    emails = Counter(User.objects.values_list("email", flat=True))
    assert max(emails.values()) == 1
    assert sum(e.startswith("shared") for e in emails) == SHARED_EMAILS
    rejected = [r for res in results for r in res.users if r.status == "rejected"]
    assert len(rejected) == THREADS - SHARED_EMAILS
    assert [r.errors for r in rejected if r.errors != {"email": [v.EMAIL_DUPLICATE]}] == []
    assert User.objects.count() == 1 + THREADS * (1 + AUTO_USERS) + SHARED_EMAILS
    assert Product.objects.count() == 1 + THREADS * (1 + AUTO_PRODUCTS)

    user_ids = set(User.objects.values_list("id", flat=True))
    product_ids = set(Product.objects.values_list("id", flat=True))
    for order in Order.objects.all():
        assert order.user_id in user_ids and order.product_id in product_ids
        assert order.total == order.quantity * order.unit_price
    for t, res in enumerate(results):
        own_order, shared_order, _ = res.orders
        assert own_order.status == "inserted"
        assert (shared_order.status == "inserted") is (SHARED + t in user_ids)


def open_connections(alias: str) -> int:
    """Connections open to ``alias``'s database: this process's descriptors on the SQLite
    file, or PostgreSQL's sessions on the test database."""
    connection = connections[alias]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            )
            return cursor.fetchone()[0]
    path = os.path.realpath(sqlite_path(alias))
    return sum(1 for fd in Path("/proc/self/fd").iterdir() if _target(fd) == path)


def open_routed_connections() -> dict[str, int]:
    return {alias: open_connections(alias) for alias in ROUTED}


def _target(fd: Path) -> str | None:
    try:
        return os.readlink(fd)
    except OSError:  # closed since the listing
        return None


def worker_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("batch-insert")}


@db
@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs Linux /proc")
def test_workers_reuse_one_thread_and_one_connection_per_database(assignment):
    """Many batches: one worker thread per database, and no more connections than the first.

    On SQLite that is one connection per database, closed on demand; on PostgreSQL the
    pool (or the persistent connection) decides how many stay open.
    """
    before = open_routed_connections()
    batch_insert(**assignment)
    threads = worker_threads()
    assert threads == {f"batch-insert-{alias}_0" for alias in ROUTED}
    after_one = open_routed_connections()
    for _ in range(20):
        batch_insert(**assignment)
    assert worker_threads() == threads
    assert open_routed_connections() == after_one
    if "sqlite" in ROUTED_VENDORS:
        assert after_one == {alias: count + 1 for alias, count in before.items()}
        close_worker_connections()
        assert open_routed_connections() == before


@db
@sqlite_only
@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs Linux /proc")
def test_workers_close_a_connection_past_its_max_age(assignment, monkeypatch):
    """``CONN_MAX_AGE = 0``: a worker closes its connection after every batch."""
    close_worker_connections()
    before = open_connections("users")
    monkeypatch.setitem(connections.settings["users"], "CONN_MAX_AGE", 0)
    result = batch_insert(**assignment)
    assert result.summary()["users"]["inserted"] == 8
    assert open_connections("users") == before


@db
def test_a_worker_bug_propagates_instead_of_becoming_a_result(assignment, monkeypatch):
    """A non-database exception in a worker reaches the caller unchanged."""

    def broken(*args):
        raise RuntimeError("bug in the products worker")

    monkeypatch.setattr(service, "store_products", broken)
    with pytest.raises(RuntimeError, match="bug in the products worker"):
        batch_insert(**assignment)


@db
def test_a_conflict_committed_after_the_checks_is_rejected_not_failed(monkeypatch):
    """When another writer wins the race (PostgreSQL), the unique index rejects only the loser.

    SQLite's IMMEDIATE transactions make that race impossible here, so the checks are made
    to miss the rows a concurrent writer "committed" just before the insert.
    """
    User.objects.create(id=5, name="Winner", email="race@example.com")
    fresh_check = store_writes._taken
    checks = []

    def stale_first_check(model, alias, records):
        checks.append(records)
        return Taken(set(), set()) if len(checks) == 1 else fresh_check(model, alias, records)

    monkeypatch.setattr(store_writes, "_taken", stale_first_check)
    result = batch_insert(
        users=[
            {"name": "Loser", "email": "RACE@example.com"},
            {"name": "Bystander", "email": "by@example.com"},
            {"id": 5, "name": "Overwriter", "email": "other@example.com"},
        ]
    )
    assert [r.status for r in result.users] == ["rejected", "inserted", "rejected"]
    assert [r.reason for r in result.users] == [v.EMAIL_DUPLICATE, "", v.ID_EXISTS]
    assert sorted(User.objects.values_list("email", flat=True)) == [
        "by@example.com",
        "race@example.com",
    ]


@db
def test_automatic_ids_continue_after_explicit_ones():
    """After a record stored with id 500, the next automatic id is above 500 (no collision)."""
    first = batch_insert(users=[{"id": 500, "name": "Explicit", "email": "e@example.com"}])
    second = batch_insert(users=[{"name": "Automatic", "email": "a@example.com"}])
    assert first.users[0].id == 500
    assert second.users[0].status == "inserted" and second.users[0].id > 500


RACE = """
import json, os, time
from api.services.batch_insert import batch_insert
start = float(os.environ["RACE_START"])
while time.time() < start:
    time.sleep(0.001)
outcomes = []
for i in range(int(os.environ["RACE_EMAILS"])):
    (result,) = batch_insert(users=[{"name": "Racer", "email": f"race{i}@example.com"}]).users
    outcomes.append([result.status, result.reason])
print(json.dumps(outcomes))
"""
RACE_EMAILS = 60


def race_env(tmp_path, name: str = "race") -> dict[str, str]:
    """A fresh set of stores for the racing processes: SQLite files in ``tmp_path``, or
    PostgreSQL databases ``dp_<name>_<pid>_<alias>`` (dropped afterwards by
    `drop_race_databases`) when the suite runs on PostgreSQL."""
    env = {"DATA_DIR": str(tmp_path)}
    if {"postgresql"} == ROUTED_VENDORS:
        base = connections["users"].settings_dict
        server = f"postgres://{base['USER']}@{base['HOST']}:{base['PORT'] or 5432}"
        prefix = f"dp_{name}_{os.getpid()}_"
        env |= {f"DATABASE_URL_{alias.upper()}": f"{server}/{prefix}{alias}" for alias in ROUTED}
    return env


def drop_race_databases(env: dict[str, str]) -> None:
    urls = [value for name, value in env.items() if name.startswith("DATABASE_URL_")]
    if urls:
        server = urls[0].rsplit("/", 1)[0]
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            for url in urls:
                admin.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


def test_two_processes_racing_on_the_same_emails_store_each_once(tmp_path):
    """Two processes insert the same 60 e-mails at the same moment, one batch each: every
    e-mail is stored once, and the other process is told "duplicate email", never a
    failure or a second row (on PostgreSQL the unique index decides a race the checks
    cannot see)."""
    env = race_env(tmp_path)
    try:
        migrated = manage("migrate_all", env=env)
        assert migrated.returncode == 0, migrated.stderr
        env |= {"RACE_START": str(time.time() + 3), "RACE_EMAILS": str(RACE_EMAILS)}
        racers = [
            subprocess.Popen(
                [sys.executable, "manage.py", "shell", "-c", RACE],
                cwd=settings.BASE_DIR,
                env={**os.environ, **env},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outputs = [racer.communicate(timeout=120) for racer in racers]
        assert [racer.returncode for racer in racers] == [0, 0], [err for _, err in outputs]
        first, second = (json.loads(out.splitlines()[-1]) for out, _ in outputs)
        for one, other in zip(first, second, strict=True):
            assert sorted([one, other]) == [["inserted", ""], ["rejected", v.EMAIL_DUPLICATE]]
        counted = manage(
            "shell", "-c", "from api.models import User; print(User.objects.count())", env=env
        )
        assert counted.stdout.split()[-1] == str(RACE_EMAILS)
    finally:
        drop_race_databases(env)
