"""Read replicas against a real streaming replica (``deploy/replica.sh``, port 5433).

The replica tests elsewhere mirror each primary (``TEST: {"MIRROR": ...}``), so lag
never happens in them. Here a Gunicorn server reads three fresh databases through their
primaries on 127.0.0.1:5432 and their replicas on the streaming standby, and the test
holds the standby back with ``pg_wal_replay_pause()``. Skipped with a message where no
replica answers at ``REPLICA_URL``, unless ``REQUIRE_REPLICA`` is set (``make test``
starts one when it can; CI requires it).
"""

import os
import time
import uuid

import psycopg
import pytest
import requests

from api.loadtest import runner
from api.tests.conftest import postgresql_only
from api.tests.test_load import manage

PRIMARY_URL = os.environ.get("PG_URL") or "postgres://postgres@127.0.0.1:5432"
REPLICA_URL = os.environ.get("REPLICA_URL") or "postgres://postgres@127.0.0.1:5433"
ROUTED = ("users", "products", "orders")
pytestmark = postgresql_only


def connect(url: str) -> psycopg.Connection:
    return psycopg.connect(f"{url}/postgres", autocommit=True, connect_timeout=3)


@pytest.fixture(scope="module")
def standby() -> psycopg.Connection:
    """A connection to the streaming replica's server (replay resumed at the end)."""
    try:
        conn = connect(REPLICA_URL)
        in_recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
    except psycopg.OperationalError as exc:
        in_recovery, reason = False, f"no replica at {REPLICA_URL}: {exc}"
    else:
        reason = f"{REPLICA_URL} is not a standby"
    if not in_recovery:
        if os.environ.get("REQUIRE_REPLICA"):
            pytest.fail(f"{reason} (REQUIRE_REPLICA; start one with deploy/replica.sh start)")
        pytest.skip(f"{reason}: deploy/replica.sh start makes one")
    yield conn
    conn.execute("SELECT pg_wal_replay_resume()")
    conn.close()


def wait_for(check, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def replicated_server(standby, tmp_path_factory):
    """Gunicorn (development settings) over three new databases and their replicas."""
    prefix = f"dp_rep_{uuid.uuid4().hex[:8]}_"
    names = [prefix + alias for alias in ROUTED]
    env = {"DATA_DIR": str(tmp_path_factory.mktemp("replica")), "REPLICA_PINNING_SECONDS": "15"}
    for alias, name in zip(ROUTED, names, strict=True):
        env[f"DATABASE_URL_{alias.upper()}"] = f"{PRIMARY_URL}/{name}"
        env[f"DATABASE_REPLICA_URLS_{alias.upper()}"] = f"{REPLICA_URL}/{name}"
    with connect(PRIMARY_URL) as primary:
        try:
            for name in names:
                primary.execute(f"CREATE DATABASE {name}")
            migrated = manage("migrate_all", "--verbosity", "0", env=env)
            assert migrated.returncode == 0, migrated.stderr
            wait_for(
                lambda: (
                    standby.execute(
                        "SELECT count(*) FROM pg_database WHERE datname LIKE %s", [prefix + "%"]
                    ).fetchone()[0]
                    == len(names)
                ),
                "the replica to replay the new databases",
            )
            bind = f"127.0.0.1:{runner.free_port()}"
            server_env = {**env, "GUNICORN_LOG_LEVEL": "critical", "WEB_CONCURRENCY": "2"}
            with runner.serve(bind, env=server_env) as server:
                runner.wait_healthy(f"http://{bind}", server)
                yield f"http://{bind}"
        finally:
            standby.execute("SELECT pg_wal_replay_resume()")
            for name in names:
                primary.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def insert_user(session: requests.Session, url: str, email: str) -> requests.Response:
    return session.post(
        f"{url}/api/run-query/?type=insert",
        json={"users": [{"name": "Replica Reader", "email": email}]},
        timeout=10,
    )


def lookup(session: requests.Session, url: str, email: str) -> int:
    return session.get(f"{url}/api/run-query/?type=get&email={email}", timeout=10).status_code


def test_a_client_reads_its_own_write_on_its_next_request_despite_lag(standby, replicated_server):
    """Replay paused: the writer's next requests (returning the pinning cookie) read the
    primary and find the new user; another client reads the replica, which has not got
    it, until replay resumes."""
    url, email = replicated_server, f"ryw-{uuid.uuid4().hex[:8]}@example.com"
    writer, other = requests.Session(), requests.Session()
    standby.execute("SELECT pg_wal_replay_pause()")
    try:
        wait_for(
            lambda: (
                standby.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()[0] == "paused"
            ),
            "replay to pause",
        )
        inserted = insert_user(writer, url, email)
        assert inserted.status_code == 200, inserted.text
        assert inserted.json()["summary"]["users"]["inserted"] == 1
        assert "dp_pinned" in writer.cookies
        assert [lookup(writer, url, email) for _ in range(5)] == [200] * 5
        assert [lookup(other, url, email) for _ in range(5)] == [404] * 5
    finally:
        standby.execute("SELECT pg_wal_replay_resume()")
    wait_for(lambda: lookup(other, url, email) == 200, "the replica to catch up")
