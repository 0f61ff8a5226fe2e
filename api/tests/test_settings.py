"""Settings come from the environment with safe defaults; production passes `check --deploy`."""

import os
import re
import runpy
import secrets
import subprocess
import sys
from datetime import datetime
from decimal import Decimal
from unittest import mock

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.db.models import Max

from api.domain.stores import STORE_NAMES
from api.models import Order, User
from api.tests.conftest import ALL_DATABASES, sqlite_only
from data_project.env import Env
from data_project.granian_server import granian_options

SETTINGS_FILE = settings.BASE_DIR / "data_project" / "settings.py"
DJANGO_ENV_VARS = [
    "DJANGO_ENV",
    "DJANGO_DEBUG",
    "DJANGO_SECRET_KEY",
    "DJANGO_ALLOWED_HOSTS",
    "DATA_DIR",
    "SQLITE_SYNCHRONOUS",
    "SQLITE_MMAP_BYTES",
    *(f"DATABASE_URL_{alias.upper()}" for alias in ALL_DATABASES),
    *(f"DATABASE_REPLICA_URLS_{alias.upper()}" for alias in ALL_DATABASES),
    "DATABASE_POOL",
    "DATABASE_PREPARE_THRESHOLD",
    "DATABASE_CONNECT_TIMEOUT",
    "DATABASE_CONNECT_TIMEOUT_SECONDS",
    "SQLITE_BUSY_TIMEOUT",
    "SQLITE_BUSY_TIMEOUT_SECONDS",
    "CACHE_TIMEOUT",
    "CACHE_TIMEOUT_SECONDS",
]


def load_settings(monkeypatch, **env: str) -> dict:
    """Evaluate the settings module afresh under exactly ``env`` (plus the process's PATH)."""
    for name in DJANGO_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(SETTINGS_FILE))


def test_defaults_are_four_sqlite_files_under_var_db(monkeypatch):
    """With no environment, every alias is ``var/db/<alias>.sqlite3`` and DEBUG is off."""
    conf = load_settings(monkeypatch)
    assert conf["DEBUG"] is False
    assert list(conf["DATABASES"]) == ALL_DATABASES
    for alias, db in conf["DATABASES"].items():
        assert db["ENGINE"] == "django.db.backends.sqlite3"
        assert db["NAME"] == settings.BASE_DIR / "var" / "db" / f"{alias}.sqlite3"
        assert db["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
        assert db["CONN_MAX_AGE"] is None
        assert db["CONN_HEALTH_CHECKS"] is False  # only servers can drop a connection
        assert not db.get("ATOMIC_REQUESTS")


def settings_variables() -> list[str]:
    """Every variable settings.py reads by a literal name through its `Env`."""
    return sorted(set(re.findall(r'env\.\w+\(\s*"([A-Z0-9_]+)"', SETTINGS_FILE.read_text())))


def plain_settings(conf: dict) -> dict:
    """Each setting's repr, without the addresses of functions (each load makes new ones)."""
    return {
        name: re.sub(r" at 0x[0-9a-f]+", "", repr(value))
        for name, value in conf.items()
        if name.isupper()
    }


def test_a_blank_variable_means_unset(monkeypatch):
    """``make`` exports an unset variable as "", so every variable settings.py reads, set
    blank all at once, must give exactly the settings of an empty environment."""
    names = settings_variables()
    assert {"REQUEST_DEADLINE_SECONDS", "REDIS_URL", "DATA_DIR", "NUM_PROXIES"} <= set(names)
    for name in names:
        monkeypatch.delenv(name, raising=False)
    unset = plain_settings(load_settings(monkeypatch))
    for name in names:
        monkeypatch.setenv(name, "  ")
    assert plain_settings(load_settings(monkeypatch)) == unset


@pytest.mark.parametrize("name", ["REQUEST_DEADLINE_SECONDS", "DATABASE_POOL_MAX_SIZE"])
def test_a_number_that_does_not_parse_names_its_variable(monkeypatch, name):
    with pytest.raises(ImproperlyConfigured, match=name):
        load_settings(monkeypatch, **{name: "two"})


@pytest.mark.parametrize(
    ("old", "new", "setting"),
    [
        ("SQLITE_BUSY_TIMEOUT", "SQLITE_BUSY_TIMEOUT_SECONDS", "SQLITE_BUSY_TIMEOUT_SECONDS"),
        ("CACHE_TIMEOUT", "CACHE_TIMEOUT_SECONDS", "CACHE_TIMEOUT_SECONDS"),
        (
            "DATABASE_CONNECT_TIMEOUT",
            "DATABASE_CONNECT_TIMEOUT_SECONDS",
            "DATABASE_CONNECT_TIMEOUT_SECONDS",
        ),
    ],
)
def test_a_renamed_variable_still_works_with_a_warning(monkeypatch, old, new, setting):
    """The old name is read when the new one is unset, with a warning naming the new one;
    the new name wins when both are set."""
    with pytest.warns(FutureWarning, match=f"{old} is deprecated: set {new}"):
        assert load_settings(monkeypatch, **{old: "7"})[setting] == 7
    with pytest.warns(FutureWarning):
        assert load_settings(monkeypatch, **{old: "7", new: "9"})[setting] == 9


def test_data_dir_moves_the_files(monkeypatch, tmp_path):
    """``DATA_DIR`` relocates every SQLite file."""
    conf = load_settings(monkeypatch, DATA_DIR=str(tmp_path))
    assert {db["NAME"] for db in conf["DATABASES"].values()} == {
        tmp_path / f"{alias}.sqlite3" for alias in ALL_DATABASES
    }


def test_database_url_switches_one_alias_to_a_server(monkeypatch):
    """``DATABASE_URL_ORDERS`` puts only ``orders`` on PostgreSQL; the rest stay SQLite."""
    conf = load_settings(
        monkeypatch, DATABASE_URL_ORDERS="postgres://app:secret@db.internal:5432/orders"
    )
    orders = conf["DATABASES"]["orders"]
    assert orders["ENGINE"] == "django.db.backends.postgresql"
    assert (orders["HOST"], orders["PORT"], orders["NAME"]) == ("db.internal", 5432, "orders")
    assert orders["CONN_HEALTH_CHECKS"] is True
    assert conf["DATABASES"]["users"]["ENGINE"] == "django.db.backends.sqlite3"


def test_debug_only_when_asked(monkeypatch):
    """``DJANGO_DEBUG=1`` turns DEBUG on; any other value leaves it off."""
    assert load_settings(monkeypatch, DJANGO_DEBUG="1")["DEBUG"] is True
    assert load_settings(monkeypatch, DJANGO_DEBUG="nope")["DEBUG"] is False


def test_production_requires_a_secret_key(monkeypatch):
    """``DJANGO_ENV=production`` without ``DJANGO_SECRET_KEY`` refuses to start."""
    with pytest.raises(ImproperlyConfigured, match="DJANGO_SECRET_KEY"):
        load_settings(monkeypatch, DJANGO_ENV="production")


@sqlite_only
@pytest.mark.django_db(databases=ALL_DATABASES)
@pytest.mark.parametrize("alias", ["users", "products", "orders"])
def test_sqlite_connections_are_tuned_for_concurrent_writers(alias):
    """Every live connection runs WAL, synchronous=NORMAL and a busy timeout."""
    with connections[alias].cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"
        cursor.execute("PRAGMA synchronous")
        assert cursor.fetchone()[0] == 1  # NORMAL
        cursor.execute("PRAGMA busy_timeout")
        assert cursor.fetchone()[0] == int(settings.SQLITE_BUSY_TIMEOUT_SECONDS * 1000)


@pytest.mark.django_db(databases=ALL_DATABASES)
def test_the_orm_reads_typed_values_on_every_backend(shop):
    """Aware datetimes, bools and two-place Decimals, also where SQLite has no column type.

    The SQLite aliases leave type detection to the ORM's converters (``detect_types: 0``).
    """
    user = User.objects.values("created_at", "is_active", "credit_limit").get(id=10)
    newest = User.objects.aggregate(newest=Max("created_at"))["newest"]
    for value in (user["created_at"], newest, User.objects.get(id=10).created_at):
        assert isinstance(value, datetime) and value.utcoffset() is not None
    assert user["is_active"] is True
    assert User.objects.filter(is_active=True).count() == 5
    total = Order.objects.values_list("total", flat=True).get(id=1)
    assert isinstance(total, Decimal) and total == Decimal("25.00")
    assert str(total) == "25.00"


def run_check_deploy(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in DJANGO_ENV_VARS}
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=settings.BASE_DIR,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_in_production():
    """``manage.py check --deploy --fail-level WARNING`` passes with production settings."""
    run = run_check_deploy(
        DJANGO_ENV="production",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_ALLOWED_HOSTS="api.example.com",
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "no issues" in run.stdout


def test_check_deploy_flags_the_local_defaults():
    """The laptop defaults (HTTP, throwaway key) are not mistaken for a deployment."""
    run = run_check_deploy()
    assert run.returncode != 0
    assert "SECRET_KEY" in run.stderr


PG_URL = "postgres://app@db.internal:5432/users"


def test_server_aliases_fail_fast_and_can_pool(monkeypatch):
    """A PostgreSQL alias has a connect timeout, health checks, prepared statements and a
    persistent connection per thread, or Django's pool with DATABASE_POOL=1."""
    conf = load_settings(
        monkeypatch, DATABASE_URL_USERS=PG_URL, DATABASE_CONNECT_TIMEOUT_SECONDS="3"
    )
    users = conf["DATABASES"]["users"]
    assert users["OPTIONS"]["connect_timeout"] == 3
    assert users["OPTIONS"]["prepare_threshold"] == 5
    assert "pool" not in users["OPTIONS"] and users["CONN_MAX_AGE"] is None
    assert users["CONN_HEALTH_CHECKS"] is True

    conf = load_settings(
        monkeypatch, DATABASE_URL_USERS=PG_URL, DATABASE_POOL="1", DATABASE_PREPARE_THRESHOLD="none"
    )
    users = conf["DATABASES"]["users"]
    assert users["OPTIONS"]["pool"]["max_size"] == 8
    # A lost connection given up after seconds, not psycopg_pool's minutes of backoff
    assert users["OPTIONS"]["pool"]["reconnect_timeout"] == 2.0
    # ... and the requests waiting when it is given up are served once the server is back
    assert users["OPTIONS"]["pool"]["reconnect_failed"].__name__ == "regrow_for_waiters"
    assert users["OPTIONS"]["prepare_threshold"] is None
    assert users["CONN_MAX_AGE"] == 0  # the pool replaces persistent connections


def test_replica_urls_add_mirrored_replica_aliases(monkeypatch):
    """Each replica URL becomes ``<alias>_replicaN``, mirroring its primary in tests."""
    replicas = "postgres://r1.internal/users,postgres://r2.internal/users"
    conf = load_settings(
        monkeypatch, DATABASE_URL_USERS=PG_URL, DATABASE_REPLICA_URLS_USERS=replicas
    )
    assert conf["DATABASE_REPLICAS"] == {"users": ["users_replica1", "users_replica2"]}
    replica = conf["DATABASES"]["users_replica2"]
    assert (replica["HOST"], replica["TEST"]) == ("r2.internal", {"MIRROR": "users"})


def test_sqlite_synchronous_sets_each_stores_pragma_and_refuses_other_values(monkeypatch):
    """``SQLITE_SYNCHRONOUS=FULL`` (any case) puts ``PRAGMA synchronous=FULL`` in every
    store's connection set-up, NORMAL by default; OFF is refused. What a crash then leaves
    is api/tests/test_servers.py's `test_a_sigkilled_server_loses_no_acknowledged_row`."""
    conf = load_settings(monkeypatch, SQLITE_SYNCHRONOUS="full")
    assert "synchronous=FULL" in conf["DATABASES"]["users"]["OPTIONS"]["init_command"]
    assert (
        "synchronous=NORMAL"
        in load_settings(monkeypatch)["DATABASES"]["orders"]["OPTIONS"]["init_command"]
    )
    with pytest.raises(ImproperlyConfigured, match="SQLITE_SYNCHRONOUS"):
        load_settings(monkeypatch, SQLITE_SYNCHRONOUS="OFF")


def test_sqlite_mmap_bytes_sets_each_stores_pragma_and_refuses_a_negative_size(monkeypatch):
    """``SQLITE_MMAP_BYTES`` puts ``PRAGMA mmap_size`` in every store's connection set-up
    (1 GiB by default, 0 turns it off); a negative size is refused."""
    default = load_settings(monkeypatch)["DATABASES"]["users"]["OPTIONS"]
    assert "mmap_size=1073741824" in default["init_command"]
    conf = load_settings(monkeypatch, SQLITE_MMAP_BYTES="0")
    assert "mmap_size=0" in conf["DATABASES"]["orders"]["OPTIONS"]["init_command"]
    with pytest.raises(ImproperlyConfigured, match="SQLITE_MMAP_BYTES"):
        load_settings(monkeypatch, SQLITE_MMAP_BYTES="-1")


@sqlite_only
@pytest.mark.django_db(databases=ALL_DATABASES)
def test_every_sqlite_store_connection_reads_through_the_memory_map():
    """The running connections report the configured ``mmap_size``: the PRAGMA reached
    SQLite (a typo in ``init_command`` would fail to connect, a cap would show here)."""
    for alias in STORE_NAMES:
        with connections[alias].cursor() as cursor:
            cursor.execute("PRAGMA mmap_size")
            assert cursor.fetchone()[0] == settings.SQLITE_MMAP_BYTES


GUNICORN_CONF = settings.BASE_DIR / "gunicorn.conf.py"


def gunicorn_config(folder, **env: str) -> subprocess.CompletedProcess:
    """Gunicorn's settings after reading ``gunicorn.conf.py``, run in ``folder``."""
    (folder / "hello.py").write_text("def app(environ, start_response):\n    return []\n")
    return subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", GUNICORN_CONF, "--print-config", "hello:app"],
        cwd=folder,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def printed_config(run: subprocess.CompletedProcess) -> dict[str, str]:
    assert run.returncode == 0, run.stderr
    return dict(
        (name.strip(), value.strip())
        for name, _, value in (line.partition("=") for line in run.stdout.splitlines())
    )


def test_gunicorn_conf_reads_the_environment_as_settings_do_from_any_folder(tmp_path):
    """Another folder (the benchmarks serve the anchors with it), a blank variable is its
    default, a number that does not parse names its variable."""
    printed = printed_config(
        gunicorn_config(tmp_path, GUNICORN_BACKLOG="512", GUNICORN_THREADS=" ", NUM_PROXIES="1")
    )
    assert (printed["backlog"], printed["threads"]) == ("512", "1")
    run = gunicorn_config(tmp_path, GUNICORN_BACKLOG="lots")
    assert run.returncode != 0 and "GUNICORN_BACKLOG must be an int" in run.stderr


def test_gunicorn_serving_directly_gives_each_worker_threads_for_slow_clients(tmp_path):
    """No proxy in front (``NUM_PROXIES`` unset or 0): 16 threads per worker; behind one, 1;
    ``GUNICORN_THREADS`` decides either way."""
    environ = {key: value for key, value in os.environ.items() if key != "NUM_PROXIES"}
    with mock.patch.dict(os.environ, environ, clear=True):
        assert printed_config(gunicorn_config(tmp_path))["threads"] == "16"
        assert printed_config(gunicorn_config(tmp_path, NUM_PROXIES="0"))["threads"] == "16"
        assert printed_config(gunicorn_config(tmp_path, NUM_PROXIES="2"))["threads"] == "1"
        threads = printed_config(gunicorn_config(tmp_path, GUNICORN_THREADS="3"))["threads"]
        assert threads == "3"


def test_granian_reads_the_same_variables_as_gunicorn_conf():
    """Where Gunicorn's and Granian's settings mean the same thing, one variable sets both;
    a blank one is the default; a number that does not parse names its variable."""
    options = granian_options(
        Env(
            {
                "BIND": "[::1]:8123",
                "WEB_CONCURRENCY": "3",
                "GUNICORN_THREADS": "2",
                "GUNICORN_WORKER_CONNECTIONS": "700",
                "GUNICORN_BACKLOG": " ",
                "GUNICORN_KEEPALIVE": "90",
                "GUNICORN_GRACEFUL_TIMEOUT": "12",
                "GRANIAN_WORKERS_LIFETIME_SECONDS": "7200",
            }
        )
    )
    assert (options["address"], options["port"]) == ("::1", 8123)
    assert (options["workers"], options["blocking_threads"]) == (3, 2)
    assert (options["backpressure"], options["backlog"]) == (700, 2048)
    assert options["http1_settings"].header_read_timeout == 60_000  # Granian's upper bound
    assert (options["workers_kill_timeout"], options["workers_lifetime"]) == (12, 7200)
    assert granian_options(Env({"GRANIAN_WORKERS_LIFETIME_SECONDS": "5"}))["workers_lifetime"] == 60
    assert options["target"] == "data_project.wsgi:application"
    with pytest.raises(ImproperlyConfigured, match="GUNICORN_BACKLOG must be an int"):
        granian_options(Env({"GUNICORN_BACKLOG": "lots"}))
    with pytest.raises(ValueError, match="BIND must be host:port"):
        granian_options(Env({"BIND": "localhost"}))
