"""``generate_data``: counts, determinism, valid and consistent rows, append, clear, failures.

Small row counts and fixed seeds; the million-row timing lives in ``bench/generate.py``.
The command loads through forked worker processes by default, each on its own connection
to the test database (the loaders take each alias's ``settings_dict``): ``executemany`` on
SQLite, ``COPY`` on PostgreSQL. Tests marked `sqlite_only` check SQLite specifics (files,
query plans, the write lock, AUTOINCREMENT); those marked `postgresql_only` check that
``COPY`` stores exactly the rows the SQLite path stores, and leaves sequences, indexes,
constraints and statistics right.
"""

import fcntl
import hashlib
import json
import os
import pty
import re
import select
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import threading
import time
from array import array
from contextlib import closing
from decimal import Decimal
from io import StringIO
from pathlib import Path

import orjson
import psycopg
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connections, transaction
from django.test import Client

from api.domain.validation import (
    EMAIL_DUPLICATE,
    OrderInput,
    ProductInput,
    UserInput,
    check_fields,
)
from api.models import Order, Product, User
from api.services.batch_insert import batch_insert
from api.services.generation import THREADS, Counts, data_generate, loaders
from api.services.generation.catalog import product_catalog
from api.services.generation.loaders import CopyLoader, OrmLoader, SqliteLoader
from api.services.generation.orders import ORDER_COLUMNS, References, order_batches
from api.services.generation.products import PRODUCT_COLUMNS, product_batches
from api.services.generation.users import USER_COLUMNS, row_email, user_batches, with_email
from api.tests.conftest import (
    ROUTED,
    ROUTED_VENDORS,
    locked,
    postgresql_only,
    raw_query,
    sqlite_only,
)

db = pytest.mark.django_db(databases=ROUTED, transaction=True, reset_sequences=True)
REPO = Path(settings.BASE_DIR)
MODELS = {"users": User, "products": Product, "orders": Order}
INPUTS = {"users": UserInput, "products": ProductInput, "orders": OrderInput}
LOADER_CLASSES = (SqliteLoader, CopyLoader, OrmLoader)


def generate(*args: str) -> str:
    """Run the command quietly except for its summary; return stdout."""
    out = StringIO()
    call_command("generate_data", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def counts() -> dict[str, int]:
    return {name: model.objects.count() for name, model in MODELS.items()}


def dump() -> dict[str, list[tuple]]:
    """Every stored row of the three tables, every column, in id order."""
    return {
        name: list(model.objects.order_by("id").values_list()) for name, model in MODELS.items()
    }


def command_line_env(data_dir: Path) -> dict[str, str]:
    """The environment for a ``manage.py`` subprocess on SQLite files in ``data_dir``."""
    servers = ("DATABASE_URL_", "DATABASE_REPLICA_URLS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(servers)}
    return {**env, "DATA_DIR": str(data_dir)}


def index_sql() -> dict[str, set]:
    return {
        alias: set(raw_query(alias, "SELECT name, sql FROM sqlite_master WHERE type = 'index'"))
        for alias in ROUTED
    }


@db
def test_rows_split_30_10_60_and_the_summary_reports_them():
    """``--rows 1000`` stores 300 users, 100 products, 600 orders and says so."""
    out = generate("--rows", "1000", "--seed", "3")
    assert counts() == {"users": 300, "products": 100, "orders": 600}
    assert "Generated 1,000 rows in" in out
    assert "rows/s" in out
    assert "users             300 rows  ids 1–300" in out


@db
def test_explicit_counts_replace_the_split():
    """Explicit counts are exact; with ``--rows`` the others keep their share."""
    generate("--users", "40", "--products", "5", "--orders", "12")
    assert counts() == {"users": 40, "products": 5, "orders": 12}
    generate("--rows", "100", "--users", "3", "--clear")
    assert counts() == {"users": 3, "products": 10, "orders": 60}


@db
def test_quiet_with_verbosity_0():
    """``-v 0`` prints neither progress nor summary."""
    out, err = StringIO(), StringIO()
    call_command("generate_data", "--rows", "50", "-v", "0", stdout=out, stderr=err)
    assert out.getvalue() == err.getvalue() == ""
    assert sum(counts().values()) == 50


CONTROL_CODES = ("\r", "\x1b")
LOG_LINE = re.compile(r"(users|products|orders) +(.+?)  \d+\.\d s")


def log_steps(log: str) -> dict[str, list[str]]:
    """Each table's steps in a progress log, in order, without the seconds."""
    steps = {"users": [], "products": [], "orders": []}
    for line in log.splitlines():
        table, step = LOG_LINE.fullmatch(line).groups()
        steps[table].append(step.strip())
    return steps


def tenths(total: int) -> list[str]:
    return [f"{total * t // 10:,}/{total:,} rows ({t * 10}%)" for t in range(1, 11)]


@db
def test_a_log_gets_plain_lines_not_bars():
    """Not a terminal: per table a start line, one line per tenth, the steps, the outcome."""
    err = StringIO()
    call_command(
        "generate_data", "--rows", "1000", "--batch-size", "10", stdout=StringIO(), stderr=err
    )
    log = err.getvalue()
    assert not [code for code in CONTROL_CODES if code in log], log
    planned = {"users": 300, "products": 100, "orders": 600}
    assert log_steps(log) == {
        table: [f"started: {total} rows", *tenths(total), "indexing", "ready", "committed"]
        for table, total in planned.items()
    }


@db
def test_a_caller_without_its_own_stderr_gets_plain_lines_too(capsys):
    """``call_command`` as ``loadtest`` calls it: progress on ``sys.stderr``, captured here."""
    call_command("generate_data", rows=100, verbosity=1)
    log = capsys.readouterr().err
    assert not [code for code in CONTROL_CODES if code in log], log
    assert log_steps(log)["orders"][-2:] == ["ready", "committed"]


@db
def test_a_log_ends_each_table_with_its_outcome_when_a_load_fails(monkeypatch):
    """Orders failing: its last line says so; the other tables' say rolled back."""
    fail_orders(monkeypatch, after=2)
    err = StringIO()
    with pytest.raises(CommandError):
        call_command(
            "generate_data", "--rows", "1000", "--batch-size", "100", stdout=StringIO(), stderr=err
        )
    steps = log_steps(err.getvalue())
    assert steps["orders"][0] == "started: 600 rows"
    assert {table: done[-1] for table, done in steps.items()} == {
        "users": "rolled back",
        "products": "rolled back",
        "orders": "failed",
    }


def in_terminal(command: list[str], *, env: dict[str, str]) -> tuple[int, str]:
    """Run ``command`` on a pseudo-terminal (100 columns): its exit status and output."""
    main, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    run = subprocess.Popen(
        command, cwd=REPO, env=env, stdin=terminal, stdout=terminal, stderr=terminal
    )
    os.close(terminal)
    output, deadline = [], time.monotonic() + 120
    try:
        while select.select([main], [], [], max(0, deadline - time.monotonic()))[0]:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # EIO: the command and its workers closed the terminal
                break
            output.append(chunk)
        code = run.wait(max(1, deadline - time.monotonic()))
    finally:
        os.close(main)
        if run.poll() is None:
            run.kill()
            run.wait()
    return code, b"".join(output).decode()


def test_a_terminal_gets_the_bars(tmp_path):
    """On a terminal the tables' tqdm bars are drawn in place, one under the other."""
    env = command_line_env(tmp_path)
    subprocess.run(
        [sys.executable, "manage.py", "migrate_all", "-v", "0"], cwd=REPO, env=env, check=True
    )
    command = [sys.executable, "manage.py", "generate_data", "--rows", "300"]
    code, shown = in_terminal(command, env=env)
    assert code == 0, shown
    assert "Generated 300 rows" in shown
    assert re.search(r"\rorders   : 100%\|█+\| 180/180 ", shown), shown
    assert "\x1b[A" in shown  # back up to the bar above
    assert "started:" not in shown


@db
def test_same_seed_same_rows_in_any_mode_and_batch_size():
    """Processes or threads, any batch size, fast or bulk_create loader: identical rows.

    A different seed gives different rows.
    """
    generate("--rows", "400", "--seed", "11")
    first = dump()
    generate("--rows", "400", "--seed", "11", "--clear", "--parallel", "threads")
    assert dump() == first
    generate("--rows", "400", "--seed", "11", "--clear", "--batch-size", "7")
    assert dump() == first
    result = data_generate(
        counts=Counts.split(400), seed=11, batch_size=50, clear=True, parallel=THREADS,
        portable=True,
    )  # fmt: skip
    assert result.complete
    assert dump() == first
    generate("--rows", "400", "--seed", "12", "--clear")
    assert dump()["users"] != first["users"]


# generated_rows_digest(seed=3, rows=10_000), from the generators as first written.
ROWS_DIGEST = "c0c432539b7ffec33aeb0927daa559faa97daaa2a278d269db9c1eb9cc7e5312"
POOLS_DIGEST = """
import hashlib
from api.services.generation.pools import build_brands, build_people
print(hashlib.sha256(repr((build_people(seed=5), build_brands(seed=5))).encode()).hexdigest())
"""


def test_pools_are_the_same_in_every_process(tmp_path):
    """The seeded pools do not depend on the process's hash seed (set order)."""
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**command_line_env(tmp_path), "PYTHONHASHSEED": hash_seed}
        shell = [sys.executable, "manage.py", "shell", "-v", "0", "-c", POOLS_DIGEST]
        run = subprocess.run(shell, cwd=REPO, env=env, check=True, capture_output=True, text=True)
        digests.add(run.stdout.split()[-1])
    assert len(digests) == 1


def generated_rows_digest(*, seed: int, rows: int) -> str:
    """SHA-256 of every row tuple's ``repr`` (types count) the generators make for a run.

    Orders twice: naming only the run's new users and products, and stored ones as well.
    """
    split = Counts.split(rows)
    catalog = product_catalog(seed=seed, count=split.products)
    fresh = References(array("q"), 1, split.users, array("q"), array("q"), 1, catalog.cents)
    stored_products = array("q", range(7, 7 * 301, 7))
    stored_cents = array("q", (k * 37 % 9000 + 99 for k in range(300)))
    stored = References(
        array("q", range(3, 3 * 501, 3)), 2_000, split.users, stored_products, stored_cents,
        3_000, catalog.cents,
    )  # fmt: skip
    streams = (
        user_batches(seed=seed, first_id=1, count=split.users, batch_size=1_000),
        product_batches(
            seed=seed, first_id=1, count=split.products, batch_size=1_000, catalog=catalog
        ),
        order_batches(seed=seed, first_id=1, count=split.orders, batch_size=999, references=fresh),
        order_batches(seed=seed, first_id=9, count=split.orders, batch_size=77, references=stored),
    )
    digest = hashlib.sha256()
    for batches in streams:
        for batch in batches:
            for row in batch:
                digest.update(f"{row!r}\n".encode())
    return digest.hexdigest()


def test_the_same_seed_gives_exactly_the_rows_it_always_gave():
    """Every generated value is pinned: a faster generator must make the very same rows.

    A deliberate change to the values (or a Faker upgrade, which changes the pools) changes
    this digest too; then update it.
    """
    assert generated_rows_digest(seed=3, rows=10_000) == ROWS_DIGEST


@db
def test_every_generated_record_passes_the_validation_rules():
    """Each user, product and order passes its input serializer's field rules."""
    generate("--rows", "1500", "--seed", "5")
    for name, model in MODELS.items():
        serializer = INPUTS[name]()
        fields = list(serializer.fields)
        for record in model.objects.values(*fields):
            _, errors = check_fields(serializer, record)
            assert errors == {}, (name, record, errors)
    assert set(User.objects.values_list("customer_type", flat=True)) == set(User.CustomerType)
    assert set(Order.objects.values_list("status", flat=True)) <= set(Order.Status)


@db
def test_emails_are_unique_and_lower_case_and_values_realistic():
    """No duplicate e-mail, all lower-case; phones carry the user's country code."""
    generate("--users", "2000", "--seed", "9")
    users = list(User.objects.values("email", "phone", "mobile", "country_code", "name"))
    emails = [u["email"] for u in users]
    assert len(set(emails)) == len(emails) == 2000
    assert all(email == email.lower() for email in emails)
    assert all(u["phone"].startswith(u["country_code"] + " ") for u in users)
    assert all(u["mobile"] == "" or u["mobile"].startswith(u["country_code"]) for u in users)
    assert len({u["name"] for u in users}) > 1500
    assert len({u["country_code"] for u in users}) >= 8
    discounts = User.objects.values_list("segment_discount", flat=True)
    assert all(Decimal(0) <= d <= Decimal(100) for d in discounts)


def assert_orders_consistent() -> None:
    """Every order names a stored user and product, at its price, with an exact total."""
    user_ids = set(User.objects.values_list("id", flat=True))
    prices = dict(Product.objects.values_list("id", "price"))
    for order in Order.objects.all():
        assert order.user_id in user_ids
        assert order.product_id in prices
        assert order.unit_price == prices[order.product_id]
        assert order.total == order.quantity * order.unit_price
        assert order.total.as_tuple().exponent == -2


@db
def test_orders_reference_existing_users_and_products_and_totals_add_up():
    """References exist, ``unit_price`` is the product's price, total = quantity × price."""
    generate("--rows", "3000", "--seed", "2")
    assert_orders_consistent()
    created = list(Order.objects.order_by("id").values_list("created_at", flat=True))
    assert created == sorted(created)
    assert (created[-1] - created[0]).days > 365


@db
def test_clear_empties_the_tables_and_restarts_ids():
    """``--clear`` replaces every row; ids start again at 1."""
    generate("--rows", "200", "--seed", "1")
    generate("--rows", "100", "--seed", "1", "--clear")
    assert counts() == {"users": 30, "products": 10, "orders": 60}
    for model in MODELS.values():
        assert min(model.objects.values_list("id", flat=True)) == 1


@db
def test_appending_uses_fresh_ids_and_references_stored_rows():
    """A second run appends after the stored ids and its orders may name stored rows."""
    generate("--rows", "200", "--seed", "4")
    out = generate("--rows", "200", "--seed", "4")
    assert counts() == {"users": 120, "products": 40, "orders": 240}
    assert "appended after 60 stored rows" in out
    new_user_ids = sorted(User.objects.filter(id__gt=60).values_list("id", flat=True))
    assert new_user_ids == list(range(61, 121))
    new_orders = Order.objects.filter(id__gt=120)
    assert new_orders.filter(user_id__lte=60).exists()
    assert new_orders.filter(product_id__lte=20).exists()
    assert_orders_consistent()
    emails = list(User.objects.values_list("email", flat=True))
    assert len(set(emails)) == len(emails)


@sqlite_only
@db
def test_appending_never_reuses_the_id_of_a_deleted_row():
    """New ids start after the highest id ever used (SQLite's AUTOINCREMENT counter)."""
    generate("--users", "3")
    User.objects.create(id=500, name="Deleted later", email="gone@example.com")
    User.objects.filter(id=500).delete()
    generate("--users", "3")
    assert list(User.objects.order_by("id").values_list("id", flat=True)) == [
        1,
        2,
        3,
        501,
        502,
        503,
    ]


@db
def test_an_email_already_stored_gets_a_variant_when_appending():
    """A stored address equal to one the run would generate is not duplicated."""
    generate("--users", "1", "--seed", "8")
    local, domain = User.objects.get(id=1).email.split("@")
    # An append with the same seed draws the same first user, with the next id: 101.
    clash = f"{local.removesuffix('1')}101@{domain}"
    User.objects.create(id=100, name="Early Bird", email=clash)
    generate("--users", "1", "--seed", "8")
    assert User.objects.get(id=101).email == f"{local.removesuffix('1')}101.1@{domain}"


@sqlite_only
@db
def test_the_api_lookups_use_indexes_and_the_schema_is_unchanged():
    """User by id, email, organization_id and orders by user_id are indexed lookups.

    Indexes dropped for the load come back with the exact SQL migrations created; the
    files stay in WAL mode and have fresh statistics.
    """
    before = index_sql()
    generate("--rows", "3000", "--seed", "6")
    assert index_sql() == before
    plans = {
        "users": [
            "SELECT * FROM users WHERE id = 5",
            "SELECT * FROM users WHERE email = 'x@example.com'",
            "SELECT * FROM users WHERE organization_id = 5",
        ],
        "orders": ["SELECT * FROM orders WHERE user_id = 5"],
    }
    for alias, queries in plans.items():
        for sql in queries:
            detail = " ".join(row[-1] for row in raw_query(alias, f"EXPLAIN QUERY PLAN {sql}"))
            assert "USING INDEX" in detail or "USING INTEGER PRIMARY KEY" in detail, detail
        assert raw_query(alias, "PRAGMA journal_mode") == [("wal",)]
        assert raw_query(alias, "SELECT count(*) FROM sqlite_stat1")[0][0] > 0


@sqlite_only
@db
def test_sqlite_builds_the_email_index_after_the_rows_of_a_load_into_an_empty_table(
    monkeypatch,
):
    """Into an empty table every index but the primary key goes, the unique e-mail one
    included, and is re-created after the rows; a large append keeps the unique one
    (appended e-mails are checked through it), a small one keeps all; the schema ends as
    migrations made it."""
    seen = {}

    def finish(self, original=SqliteLoader.finish):
        rows = self.conn.execute(f'PRAGMA index_list("{self.table}")')
        seen[self.table] = {name for _, name, *_ in rows}
        original(self)

    monkeypatch.setattr(SqliteLoader, "finish", finish)
    before = index_sql()
    generate("--rows", "3000", "--seed", "6", "--parallel", "threads")
    assert seen == {"users": set(), "products": set(), "orders": set()}
    generate("--rows", "300", "--seed", "7", "--parallel", "threads")
    assert seen["users"] == {"users_email_key", "users_organization_id_abe5d649"}
    generate("--rows", "4000", "--seed", "8", "--parallel", "threads")
    assert seen["users"] == {"users_email_key"}
    assert index_sql() == before


def schema() -> dict:
    """Every index and constraint of the three tables, with its definition."""
    return index_sql() if {"sqlite"} == ROUTED_VENDORS else pg_schema()


def email_lookup_plan(email: str) -> str:
    """The plan of the API's lookup by e-mail, as the backend explains it."""
    with connections["users"].cursor() as cursor:
        if connections["users"].vendor == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN SELECT * FROM users WHERE email = %s", [email])
            return " ".join(row[-1] for row in cursor.fetchall())
        cursor.execute("EXPLAIN SELECT * FROM users WHERE email = %s", [email])
        return " ".join(line for (line,) in cursor.fetchall())


@db
def test_after_a_load_the_email_index_refuses_a_duplicate_and_serves_lookups():
    """A load into an empty table builds the unique e-mail index after its rows. Then a
    stored address is refused through the ORM and through the API (whose batch insert
    stores first, ``ON CONFLICT DO NOTHING``: the index refuses the row, the rules then
    name the reason), and a lookup by e-mail is a search of that index."""
    generate("--users", "3000", "--seed", "4")
    taken = User.objects.get(id=7).email
    with pytest.raises(IntegrityError), transaction.atomic(using="users"):
        User.objects.create(name="Copy Cat", email=taken)
    response = Client().post(
        "/api/users/", orjson.dumps({"name": "Copy Cat", "email": taken.upper()}),
        content_type="application/json",
    )  # fmt: skip
    assert response.status_code == 409
    assert orjson.loads(response.content)["details"] == {"email": [EMAIL_DUPLICATE]}
    result = batch_insert(users=[{"name": "Copy Cat", "email": taken}])
    assert [(r.status, r.reason) for r in result.users] == [("rejected", EMAIL_DUPLICATE)]
    assert User.objects.filter(email=taken).count() == 1
    plan = email_lookup_plan(taken)
    assert "USING INDEX users_email_key (email=?)" in plan or (
        "Index Scan using users_email_key" in plan
    ), plan


@db
def test_a_duplicate_among_the_loaded_rows_fails_the_load_and_changes_nothing(monkeypatch):
    """The unique index is built after the rows, inside the load's transaction: a duplicate
    e-mail among them fails the run there (status 1), and every table keeps its rows and
    its indexes, the unique one included."""
    generate("--rows", "100", "--seed", "1")
    before = dump(), schema()
    for cls in LOADER_CLASSES:

        def duplicating(self, rows, write=cls.write, first=[]):  # noqa: B006 (per loader)
            if self.table == "users" and first:
                rows = [with_email(rows[0], first[0]), *rows[1:]]
            elif self.table == "users":
                first.append(row_email(rows[0]))
            write(self, rows)

        monkeypatch.setattr(cls, "write", duplicating)
    with pytest.raises(CommandError) as caught:
        generate("--users", "3000", "--batch-size", "1000", "--clear")
    assert caught.value.returncode == 1
    message = str(caught.value)
    assert "users     failed and rolled back, unchanged" in message
    assert "users_email_key" in message or "UNIQUE constraint failed: users.email" in message
    assert (dump(), schema()) == before


def test_generated_columns_are_the_models_columns():
    """Row tuples cover every column of each model, so a new field cannot be missed."""
    for model, columns in ((User, USER_COLUMNS), (Product, PRODUCT_COLUMNS)):
        assert set(columns) == {f.attname for f in model._meta.concrete_fields}
    assert set(ORDER_COLUMNS) == {f.attname for f in Order._meta.concrete_fields}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--rows", "-5"], "is negative"),
        (["--users", "many"], "is not an integer"),
        (["--batch-size", "0"], "must be between 1"),
        (["--parallel", "fibers"], "invalid choice"),
    ],
)
def test_bad_options_are_usage_errors(args, message):
    """Malformed options are rejected by the parser with a clear message."""
    with pytest.raises(CommandError, match=message):
        call_command("generate_data", *args)


def test_keyword_options_follow_the_same_rules():
    """``call_command(..., rows=-3)`` bypasses the parser but not the rules: status 2."""
    with pytest.raises(CommandError, match="--rows: '-3' is negative") as caught:
        call_command("generate_data", rows=-3)
    assert caught.value.returncode == 2
    with pytest.raises(CommandError, match="--batch-size: must be between 1"):
        call_command("generate_data", batch_size=10**9)


@db
@pytest.mark.parametrize(
    "args, message",
    [
        (["--orders", "5"], "orders need at least one user and one product"),
        (["--users", "0"], "nothing to generate"),
    ],
)
def test_impossible_requests_exit_with_status_2(args, message):
    """Orders with nothing to reference, or nothing at all: status 2, nothing written."""
    with pytest.raises(CommandError, match=message) as caught:
        call_command("generate_data", *args)
    assert caught.value.returncode == 2
    assert counts() == {"users": 0, "products": 0, "orders": 0}


def test_bad_option_exits_2_from_the_command_line(tmp_path):
    """On the command line a malformed option exits with status 2 and says why."""
    run = subprocess.run(
        [sys.executable, "manage.py", "generate_data", "--rows", "-1"],
        cwd=REPO,
        env=command_line_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert "--rows: '-1' is negative" in run.stderr


def fail_orders(monkeypatch, *, after: int = 1) -> None:
    """Make the orders loader raise on its ``after``-th batch, whichever loader it is."""
    for cls in LOADER_CLASSES:
        write, calls = cls.write, []

        def failing(self, rows, write=write, calls=calls):
            if self.table == "orders":
                calls.append(1)
                if len(calls) >= after:
                    raise RuntimeError("disk on fire")
            write(self, rows)

        monkeypatch.setattr(cls, "write", failing)


@db
def test_an_error_in_one_worker_rolls_every_table_back_and_exits_1(monkeypatch):
    """A worker's exception is reported with its table; no database keeps any row."""
    generate("--rows", "100", "--seed", "1")
    before = dump()
    fail_orders(monkeypatch, after=2)
    with pytest.raises(CommandError) as caught:
        generate("--rows", "1000", "--seed", "2", "--batch-size", "100")
    assert caught.value.returncode == 1
    message = str(caught.value)
    assert "generate_data failed: the load is NOT complete; 0 rows stored" in message
    assert "orders    failed and rolled back, unchanged" in message
    assert "error in orders: RuntimeError: disk on fire" in message
    assert dump() == before


@sqlite_only
@db
def test_a_locked_database_rolls_every_table_back_and_exits_1(monkeypatch):
    """A locked orders database fails the run: nothing is committed anywhere, status 1."""
    generate("--rows", "100", "--seed", "1")
    before = dump()
    with locked("orders", monkeypatch), pytest.raises(CommandError) as caught:
        generate("--rows", "1000", "--seed", "2")
    assert caught.value.returncode == 1
    message = str(caught.value)
    assert "NOT complete; 0 rows stored" in message
    assert "orders    failed and rolled back" in message
    assert "users     rolled back, unchanged" in message
    assert "locked" in message
    assert dump() == before


@db
def test_an_interrupt_rolls_every_table_back_and_exits_130(monkeypatch):
    """Ctrl-C during the load: every worker rolls back, the command says so, status 130,
    and the process's own SIGINT handler is back (the default, or ignored when the suite
    runs as a background job)."""
    original = signal.getsignal(signal.SIGINT)
    for cls in LOADER_CLASSES:

        def write_then_interrupt(self, rows, write=cls.write):
            write(self, rows)
            if self.table == "orders":
                os.kill(os.getpid(), signal.SIGINT)

        monkeypatch.setattr(cls, "write", write_then_interrupt)
    with pytest.raises(CommandError) as caught:
        generate("--rows", "5000", "--parallel", "threads")
    assert caught.value.returncode == 130
    assert "interrupted: the load is NOT complete; 0 rows stored" in str(caught.value)
    assert counts() == {"users": 0, "products": 0, "orders": 0}
    assert signal.getsignal(signal.SIGINT) is original


@sqlite_only
def test_ctrl_c_on_the_command_line_loads_nothing(tmp_path):
    """SIGINT to the process group mid-load: status 130, report, all three files unchanged."""
    env = command_line_env(tmp_path)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate_all", "-v", "0"], cwd=REPO, env=env, check=True)
    run = subprocess.Popen(
        [*manage, "generate_data", "--rows", "600000", "--batch-size", "2000"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    seen = threading.Event()
    stderr = []

    def read_stderr():
        while chunk := run.stderr.read1(4096):
            stderr.append(chunk)
            if b"%)" in chunk:  # a table's first tenth: "... rows (10%)  0.4 s"
                seen.set()

    reader = threading.Thread(target=read_stderr)
    reader.start()
    assert seen.wait(60), b"".join(stderr)
    os.killpg(run.pid, signal.SIGINT)
    code = run.wait(60)
    reader.join()
    text = b"".join(stderr).decode()
    assert code == 130, text[-3000:]
    assert "interrupted: the load is NOT complete; 0 rows stored" in text
    assert not [code for code in CONTROL_CODES if code in text], text[-3000:]
    for alias in ROUTED:
        with closing(sqlite3.connect(tmp_path / f"{alias}.sqlite3")) as conn:
            assert conn.execute(f'SELECT count(*) FROM "{alias}"').fetchone() == (0,)
            indexes = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'index'")
            assert indexes.fetchone()[0] >= 1


# PostgreSQL: COPY against the SQLite path; sequences, indexes and constraints afterwards.

SQLITE_DUMP = """
import hashlib
import json
from api.tests.test_generate_data import dump
print(json.dumps(dump(), default=str))
"""


def comparable(rows: dict[str, list[tuple]]) -> dict[str, list[list]]:
    """Rows as JSON carries them: Decimal and datetime as their text, tuples as lists."""
    return json.loads(json.dumps(rows, default=str))


def sqlite_rows(data_dir: Path, runs: list[list[str]]) -> dict[str, list[list]]:
    """The rows ``generate_data`` stores on SQLite files in ``data_dir`` after ``runs``."""
    env = command_line_env(data_dir)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate_all", "-v", "0"], cwd=REPO, env=env, check=True)
    for args in runs:
        generate_run = [*manage, "generate_data", "-v", "0", *args]
        subprocess.run(generate_run, cwd=REPO, env=env, check=True, timeout=120)
    shell = [*manage, "shell", "-v", "0", "-c", SQLITE_DUMP]
    dumped = subprocess.run(shell, cwd=REPO, env=env, check=True, capture_output=True, text=True)
    return json.loads(dumped.stdout.splitlines()[-1])


def pg_values(sql: str) -> dict[str, list[tuple]]:
    """``sql`` (one ``%s``: the table name) run in each table's database."""
    values = {}
    for table in MODELS:
        with connections[table].cursor() as cursor:
            cursor.execute(sql, [table])
            values[table] = cursor.fetchall()
    return values


def sequences() -> dict[str, int | None]:
    """The last value each table's id sequence handed out (None: none yet)."""
    last = pg_values("SELECT pg_sequence_last_value(pg_get_serial_sequence(%s, 'id')::regclass)")
    return {table: rows[0][0] for table, rows in last.items()}


def top_ids() -> dict[str, int | None]:
    return {
        name: model.objects.order_by("-id").values_list("id", flat=True).first()
        for name, model in MODELS.items()
    }


def pg_indexes() -> dict[str, list[tuple]]:
    """Each table's indexes with their definitions."""
    return pg_values(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s ORDER BY indexname"
    )


def pg_schema() -> dict[str, list[tuple]]:
    """Each table's indexes with their definitions, and its constraints."""
    indexes = pg_indexes()
    constraints = pg_values(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = %s::regclass ORDER BY conname"
    )
    return {table: indexes[table] + constraints[table] for table in MODELS}


@postgresql_only
@db
def test_copy_stores_exactly_the_rows_the_sqlite_path_stores(tmp_path):
    """Same runs, same seeds: every column of every row equals SQLite's, in processes.

    The runs cover a load into empty tables, a small append (indexes kept) and a large
    one (indexes rebuilt, e-mails checked against the stored users).
    """
    runs = [
        ["--rows", "3000", "--seed", "21"],
        ["--rows", "1000", "--seed", "22"],
        ["--rows", "6000", "--seed", "23", "--batch-size", "700"],
    ]
    expected = sqlite_rows(tmp_path, runs)
    for args in runs:
        assert "(processes)" in generate(*args)
    stored = comparable(dump())
    assert {table: len(rows) for table, rows in stored.items()} == {
        "users": 3000,
        "products": 1000,
        "orders": 6000,
    }
    assert stored == expected


@postgresql_only
@db
def test_sequences_end_at_the_highest_id_and_never_move_back():
    """After a load and an append each sequence stands at the highest id.

    The API's next automatic id follows the generated ones; a sequence already past the
    rows (a deleted row's id) is never moved back: appended ids start after it.
    """
    generate("--rows", "1000", "--seed", "3")
    assert sequences() == top_ids() == {"users": 300, "products": 100, "orders": 600}
    generate("--rows", "100", "--seed", "3")
    assert sequences() == top_ids() == {"users": 330, "products": 110, "orders": 660}
    deleted = User.objects.create(name="Gone Soon", email="gone@example.com")
    assert deleted.id == 331
    deleted.delete()
    generate("--users", "5")
    assert list(User.objects.filter(id__gt=330).values_list("id", flat=True)) == [
        332,
        333,
        334,
        335,
        336,
    ]
    assert sequences()["users"] == 336
    assert User.objects.create(name="Next One", email="next@example.com").id == 337


@postgresql_only
@db
def test_indexes_are_rebuilt_exactly_when_the_load_dominates(monkeypatch):
    """Loads into empty tables drop secondary indexes and the unique e-mail index; a small
    append keeps every index; a large one keeps only the primary key and the unique index.

    Afterwards ``pg_indexes`` and ``pg_constraint`` are exactly as migrations left them,
    every table has fresh statistics, and the API's lookups are index scans.
    """
    seen = {}

    def finish(self, original=CopyLoader.finish):
        self._end_copy()
        rows = self.conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = %s", [self.table]
        )
        seen[self.table] = {name for (name,) in rows}
        original(self)

    monkeypatch.setattr(CopyLoader, "finish", finish)
    before = pg_schema()
    every = {table: {name for name, _ in rows} for table, rows in pg_indexes().items()}
    assert "users_email_key" in every["users"]
    only_keys = {table: {f"{table}_pkey"} for table in MODELS}

    generate("--rows", "3000", "--seed", "6", "--parallel", "threads")
    assert seen == only_keys
    assert pg_schema() == before
    generate("--rows", "300", "--seed", "7", "--parallel", "threads")
    assert seen == every
    assert pg_schema() == before
    generate("--rows", "4000", "--seed", "8", "--parallel", "threads")
    assert seen == {**only_keys, "users": {"users_pkey", "users_email_key"}}
    assert pg_schema() == before

    analyzed = pg_values("SELECT count(*) FROM pg_stats WHERE tablename = %s")
    assert all(rows[0][0] > 0 for rows in analyzed.values()), analyzed
    email = User.objects.get(id=7).email
    lookups = {
        "users": [
            f"SELECT * FROM users WHERE email = '{email}'",
            "SELECT * FROM users WHERE organization_id = 5",
        ],
        "orders": ["SELECT * FROM orders WHERE user_id = 5"],
    }
    for alias, queries in lookups.items():
        with connections[alias].cursor() as cursor:
            for sql in queries:
                cursor.execute(f"EXPLAIN {sql}")
                plan = " ".join(line for (line,) in cursor.fetchall())
                assert "Index" in plan, plan


@postgresql_only
@db
def test_a_failed_load_leaves_rows_indexes_and_sequences_as_they_were(monkeypatch):
    """A ``--clear`` load that fails mid-COPY restores rows, schema and sequences."""
    generate("--rows", "100", "--seed", "1")
    before = dump(), pg_schema(), sequences()
    fail_orders(monkeypatch, after=2)
    with pytest.raises(CommandError, match="disk on fire"):
        generate("--rows", "2000", "--seed", "2", "--batch-size", "100", "--clear")
    assert (dump(), pg_schema(), sequences()) == before


@postgresql_only
@db
def test_a_lock_held_elsewhere_fails_the_run_instead_of_waiting_forever(monkeypatch):
    """A table locked by another session past the lock timeout: status 1, nothing stored.

    Without a timeout two runs at once could wait for each other forever, each holding a
    table that the other needs.
    """
    generate("--rows", "100", "--seed", "1")
    before = dump()
    monkeypatch.setattr(loaders.postgresql, "LOCK_TIMEOUT_SECONDS", 0.2)
    params = CopyLoader(alias="orders", model=Order, columns=ORDER_COLUMNS).params
    with psycopg.connect(**params) as blocker:
        blocker.execute("LOCK TABLE orders IN ACCESS SHARE MODE")
        with pytest.raises(CommandError) as caught:
            generate("--rows", "1000", "--seed", "2", "--clear")
    assert caught.value.returncode == 1
    assert "orders    failed and rolled back" in str(caught.value)
    assert "lock timeout" in str(caught.value)
    assert dump() == before


# The growth benchmark (bench/generate.py --quick): it runs, and its floor is like-for-like.


def test_the_quick_growth_table_runs_and_its_floor_stores_the_same_rows():
    """``bench/generate.py --quick`` prints the growth table (``generate_data --users N``
    beside the raw floor) with its verdicts, after checking at each size that the floor
    stored exactly the rows ``generate_data`` stored; on PostgreSQL also beside
    ``psql \\copy``, in databases of its own, dropped afterwards."""
    command = [
        sys.executable,
        "bench/generate.py",
        "--quick",
        "--sizes",
        "1000,3000",
        "--reruns",
        "0",
    ]
    if {"postgresql"} == ROUTED_VENDORS:
        base = connections["users"].settings_dict
        server = f"postgres://{base['USER']}@{base['HOST']}:{base['PORT'] or 5432}"
        command += ["--postgres", f"{server}/test_growth_{os.getpid()}_"]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    header = (
        "users | ours s rows/s x1st table rows/s CPU s waited s RSS MB"
        " | floor s rows/s x1st RSS MB | ours/floor"
    )
    if "--postgres" in command:
        header += " psql \\copy s rows/s ours/psql"
    assert " ".join(lines[1].split()) == header
    assert [line.split()[0] for line in lines[2:4]] == ["1,000", "3,000"]
    assert lines[4].startswith("growth 3,000 vs 1,000 users: generate_data keeps ")
    assert lines[5].startswith("generate_data / floor: ")
    assert lines[6].startswith("peak memory of generate_data's process tree: ")
    assert all("[target" in line for line in lines[4:])
