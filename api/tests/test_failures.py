"""A database server that is down or silent is a fast 503, never a hang or a 500; no
answer to a failure carries the driver's message, SQL, a host, role, path or exception
class name, only the store and the kind of failure."""

import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
from contextlib import closing, contextmanager, nullcontext
from pathlib import Path

import orjson
import pytest
from django.conf import settings
from django.db import connections

from api.db.failures import KINDS
from api.domain.stores import STORE_NAMES
from api.tests.conftest import postgresql_only, sqlite_only, table_locked

PROBE = """
import os, time, orjson, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "data_project.settings")
django.setup()
from django.test import Client
client = Client(HTTP_HOST="localhost")
started = time.monotonic()
response = client.get("/api/run-query/?type=get&user_id=1")
print(orjson.dumps({"status": response.status_code, "seconds": time.monotonic() - started,
                    "retry_after": response.get("Retry-After"),
                    "body": orjson.loads(response.content)}).decode())
"""


def lookup_against(url: str, timeout_s: int = 2, pool: str = "0") -> dict:
    """Run one lookup in a fresh process whose ``users`` alias points at ``url``
    (``pool``: ``DATABASE_POOL``, persistent connections or Django's pool)."""
    env = {
        **os.environ,
        "DATABASE_URL_USERS": url,
        "DATABASE_CONNECT_TIMEOUT_SECONDS": str(timeout_s),
        "DATABASE_POOL": pool,
    }
    return last_json_line(["-c", PROBE], env, timeout=60)


def last_json_line(args: list[str], env: dict[str, str], timeout: int) -> dict:
    """The last line of ``python args`` (run in the project under ``env``), as JSON."""
    run = subprocess.run(
        [sys.executable, *args],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return orjson.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never answers (a hung database host)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("pool", ["0", "1"], ids=["persistent", "pool"])
def test_a_refused_server_is_a_fast_503(pool):
    """Nothing listening: a 503 with Retry-After within the connect timeout."""
    url = f"postgres://app@127.0.0.1:{closed_port()}/users"
    result = lookup_against(url, timeout_s=2, pool=pool)
    assert result["status"] == 503 and result["retry_after"]
    assert result["body"]["details"] == {"store": "users", "failure": "unreachable"}
    assert "127.0.0.1" not in orjson.dumps(result["body"]).decode()  # hosts go to the log
    assert result["seconds"] < 4


@pytest.mark.parametrize("pool", ["0", "1"], ids=["persistent", "pool"])
def test_a_silent_server_times_out_into_a_503(silent_server, pool):
    """``connect_timeout`` bounds the wait: a hung host costs seconds, not a worker forever."""
    url = f"postgres://app@127.0.0.1:{silent_server}/users"
    result = lookup_against(url, timeout_s=2, pool=pool)
    assert result["status"] == 503
    assert result["seconds"] < 6


# Words of drivers, SQL and Python that no answer may carry, whatever the failure.
DRIVER_WORDS = (
    "sqlite",
    "psycopg",
    "Error",
    "Shed",
    "StoreUnavailable",
    "Traceback",
    "LINE ",
    "FATAL",
    "SELECT",
    "INSERT",
    "FROM",
    "relation",
    "role",
    "no such",
    "not a database",
    "unable to open",
    "does not exist",
    "server at",
)
FAILED_REASON = re.compile(
    rf"(cannot check references: )?database '({'|'.join(STORE_NAMES)})' unavailable "
    rf"\(({'|'.join(KINDS)})\); retry later"
)


@pytest.fixture(scope="module")
def migrated_dir(tmp_path_factory) -> Path:
    """A ``DATA_DIR`` with every alias migrated, on SQLite."""
    path = tmp_path_factory.mktemp("failures") / "base"
    run = subprocess.run(
        [sys.executable, "manage.py", "migrate_all", "--verbosity", "0"],
        cwd=settings.BASE_DIR,
        env=sqlite_env(path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return path


def sqlite_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a process on SQLite files in ``data_dir`` (development)."""
    blank = {f"DATABASE_URL_{alias.upper()}": "" for alias in settings.DATABASE_ALIASES}
    replicas = {f"DATABASE_REPLICA_URLS_{alias.upper()}": "" for alias in STORE_NAMES}
    return {
        **os.environ,
        **blank,
        **replicas,
        "DATA_DIR": str(data_dir),
        "DJANGO_ENV": "development",
        "REDIS_URL": "",
        "REQUEST_DEADLINE_SECONDS": "0.3",
        "READ_DEADLINE_SECONDS": "0.3",
        "DATABASE_CONNECT_TIMEOUT_SECONDS": "2",
        **extra,
    }


def probe(env: dict[str, str]) -> dict:
    """``api/tests/failure_probe.py``'s answers and logged exceptions under ``env``."""
    return last_json_line(["-m", "api.tests.failure_probe"], env, timeout=120)


def assert_only_store_and_kind(result: dict, kind: str, forbidden: tuple[str, ...]) -> None:
    """No answer carries a logged exception's text or class, a driver's word or one of
    ``forbidden``; every failure names a store and a kind; the users store failed with
    ``kind``; nothing is a 500."""
    secrets = [text for text in result["logged"] if len(text) >= 8]
    assert secrets, "the failure was not logged: nothing was broken"
    kinds_seen = set()
    for answer in result["answers"]:
        name, body = answer["name"], answer["body"]
        assert answer["status"] != 500, name
        for text in (*secrets, *DRIVER_WORDS, *forbidden):
            assert text not in body, f"{name}: {text!r} in {body[:400]}"
        if answer["status"] == 503:
            assert answer["retry_after"], name
        if not body.startswith("{"):  # a page, or a redirect's empty body
            continue
        document = orjson.loads(body)
        details = document.get("details") if "error" in document else None
        if answer["status"] == 503 and details is not None and "store" in details:
            assert details["store"] in STORE_NAMES and details["failure"] in KINDS, name
            kinds_seen.add((details["store"], details["failure"]))
        for records in (document.get(store, []) for store in STORE_NAMES):
            for record in records if isinstance(records, list) else []:
                if record["status"] == "failed":
                    assert FAILED_REASON.fullmatch(record["reason"]), (name, record["reason"])
                    kinds_seen.add(tuple(FAILED_REASON.fullmatch(record["reason"]).groups()[1:]))
    assert ("users", kind) in kinds_seen, kinds_seen


def replace_file(data_dir: Path, alias: str, content: bytes | None) -> None:
    """Put ``content`` where ``alias``'s SQLite file was (None: a folder)."""
    for path in data_dir.glob(f"{alias}.sqlite3*"):
        path.unlink()
    target = data_dir / f"{alias}.sqlite3"
    if content is None:
        target.mkdir()
    else:
        target.write_bytes(content)


@contextmanager
def sqlite_locked(path: Path):
    """SQLite's write lock on ``path``, held by this process."""
    with closing(sqlite3.connect(path, isolation_level=None)) as holder:
        holder.execute("BEGIN IMMEDIATE")
        yield
        holder.execute("ROLLBACK")


@sqlite_only
@pytest.mark.parametrize(
    ("breakage", "kind"),
    [
        ("missing table", "missing"),
        ("corrupt", "corrupt"),
        ("no file", "unreachable"),
        ("locked", "locked"),
    ],
)
def test_a_broken_sqlite_store_is_named_with_its_kind_never_the_drivers_words(
    migrated_dir, tmp_path, breakage, kind
):
    """SQLite's store with no table, a file that is not a database, no file to open, or a
    held write lock: every answer, on the fast path and Django's, names the store and how
    it failed; the driver's message, the file's path and exception classes go to the log."""
    data_dir = tmp_path / "data"
    shutil.copytree(migrated_dir, data_dir)
    holding = nullcontext()
    if breakage == "missing table":
        replace_file(data_dir, "users", b"")
    elif breakage == "corrupt":
        replace_file(data_dir, "users", b"this is not an SQLite file" * 200)
    elif breakage == "no file":
        replace_file(data_dir, "users", None)
    else:
        holding = sqlite_locked(data_dir / "users.sqlite3")
    with holding:
        result = probe(sqlite_env(data_dir, SQLITE_BUSY_TIMEOUT_SECONDS="0.3"))
    assert_only_store_and_kind(result, kind, (str(data_dir), str(tmp_path), "users.sqlite3"))


def server_url(alias: str, *, user: str | None = None, port: int | None = None) -> str:
    """The URL of ``alias``'s test database (``user``, ``port``: others instead)."""
    config = connections[alias].settings_dict
    host, name = config["HOST"] or "127.0.0.1", config["NAME"]
    return f"postgres://{user or config['USER']}@{host}:{port or config['PORT'] or 5432}/{name}"


@postgresql_only
@pytest.mark.django_db(databases=["users", "products"])
@pytest.mark.parametrize(
    ("breakage", "kind"),
    [
        ("missing table", "missing"),
        ("unknown role", "unreachable"),
        ("closed port", "unreachable"),
        ("lock timeout", "locked"),
    ],
)
def test_a_broken_postgresql_store_is_named_with_its_kind_never_the_drivers_words(
    migrated_dir, tmp_path, breakage, kind
):
    """PostgreSQL's store without its table (another store's database), a role the server
    does not know, a port nobody listens on, a table locked past the deadlines: every
    answer names the store and how it failed, never the server's message, SQL, host,
    port or role."""
    data_dir = tmp_path / "data"
    shutil.copytree(migrated_dir, data_dir)
    holding, url = nullcontext(), server_url("users")
    if breakage == "missing table":
        url = server_url("products")
    elif breakage == "unknown role":
        url = server_url("users", user="h_no_such_role")
    elif breakage == "closed port":
        url = server_url("users", port=closed_port())
    else:
        holding = table_locked("users")
    config = connections["users"].settings_dict
    forbidden = (config["HOST"] or "127.0.0.1", f"port {config['PORT'] or 5432}", "h_no_such_role")
    with holding:
        result = probe(sqlite_env(data_dir, DATABASE_URL_USERS=url))
    assert_only_store_and_kind(result, kind, forbidden)
