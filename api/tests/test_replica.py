"""Read replicas against a real streaming replica (``deploy/replica.sh``, port 5433).

The replica tests elsewhere mirror each primary (``TEST: {"MIRROR": ...}``), so lag
never happens in them. Here a Gunicorn server reads three fresh databases through their
primaries on 127.0.0.1:5432 and their replicas on the streaming standby, and the test
holds the standby back with ``pg_wal_replay_pause()``. Skipped with a message where no
replica answers at ``REPLICA_URL``, unless ``REQUIRE_REPLICA`` is set (``make test``
starts one when it can; CI requires it).
"""

import os
import subprocess
import threading
import time
import uuid
from collections import Counter
from contextlib import contextmanager, suppress
from pathlib import Path

import psycopg
import pytest
import requests

from api.tests.conftest import manage, postgresql_only
from loadtest import runner

PRIMARY_URL = os.environ.get("PG_URL") or "postgres://postgres@127.0.0.1:5432"
REPLICA_URL = os.environ.get("REPLICA_URL") or "postgres://postgres@127.0.0.1:5433"
ROUTED = ("users", "products", "orders")
REPLICA_SCRIPT = str(Path(__file__).resolve().parents[2] / "deploy" / "replica.sh")
pytestmark = postgresql_only


def connect(url: str) -> psycopg.Connection:
    return psycopg.connect(f"{url}/postgres", autocommit=True, connect_timeout=3)


@pytest.fixture
def standby() -> psycopg.Connection:
    """A connection to the streaming replica's server (replay resumed at the end); one per
    test, since a test may stop the server."""
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
    resume(conn)
    conn.close()


def resume(standby: psycopg.Connection) -> None:
    """Resume replay, if the standby (this connection to it) is still there."""
    with suppress(psycopg.Error):
        standby.execute("SELECT pg_wal_replay_resume()")


def wait_for(check, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def replica_control():
    """Stopping and starting the replica's server (``deploy/replica.sh``) needs root:
    skipped without it, failed instead under ``REQUIRE_REPLICA`` (CI)."""
    if os.geteuid() != 0:
        reason = "stopping the replica cluster (deploy/replica.sh stop) needs root"
        if os.environ.get("REQUIRE_REPLICA"):
            pytest.fail(f"{reason} (REQUIRE_REPLICA)")
        pytest.skip(reason)
    yield
    replica_script("start")  # whatever the test left, the next finds it streaming


def replica_script(command: str) -> None:
    done = subprocess.run([REPLICA_SCRIPT, command], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"deploy/replica.sh {command}: {done.stdout}{done.stderr}"


@contextmanager
def replicated_server(standby, data_dir, workers: int = 1, **settings: str):
    """Gunicorn (development settings, ``settings`` added, ``workers`` processes) over
    three new databases and their replicas on the standby; the databases are dropped
    afterwards."""
    prefix = f"dp_rep_{uuid.uuid4().hex[:8]}_"
    names = [prefix + alias for alias in ROUTED]
    env = {"DATA_DIR": str(data_dir), "REPLICA_CHECK_SECONDS": "0.2", **settings}
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
            server_env = {**env, "GUNICORN_LOG_LEVEL": "critical", "WEB_CONCURRENCY": str(workers)}
            with runner.serve(bind, env=server_env) as server:
                runner.wait_healthy(f"http://{bind}", server)
                wait_for(lambda: replica_states(f"http://{bind}") == {"ok"}, "healthy replicas")
                yield f"http://{bind}"
        finally:
            resume(standby)
            for name in names:
                primary.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def health(url: str) -> requests.Response:
    return requests.get(f"{url}/api/health/", timeout=10)


def replica_states(url: str) -> set[str]:
    """The states of every replica the server reports. One worker: each Gunicorn worker
    has its own monitor, so with more a check could not tell which one answered."""
    return {r["state"] for r in health(url).json()["replicas"].values()}


def paused(standby) -> None:
    standby.execute("SELECT pg_wal_replay_pause()")
    wait_for(
        lambda: standby.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()[0] == "paused",
        "replay to pause",
    )


def insert_user(session: requests.Session, url: str, email: str) -> requests.Response:
    return session.post(
        f"{url}/api/run-query/?type=insert",
        json={"users": [{"name": "Replica Reader", "email": email}]},
        timeout=10,
    )


def lookup(session: requests.Session, url: str, email: str) -> int:
    return session.get(f"{url}/api/run-query/?type=get&email={email}", timeout=10).status_code


def test_a_client_reads_its_own_write_on_its_next_request_despite_lag(standby, tmp_path):
    """Replay paused (the lag tolerated): the writer's next requests, returning the
    pinning cookie, read the primary and find the new user; another client reads the
    replica, which has not got it, until replay resumes."""
    email = f"ryw-{uuid.uuid4().hex[:8]}@example.com"
    writer, other = requests.Session(), requests.Session()
    with replicated_server(standby, tmp_path, REPLICA_MAX_LAG_SECONDS="3600") as url:
        paused(standby)
        inserted = insert_user(writer, url, email)
        assert inserted.status_code == 200, inserted.text
        assert inserted.json()["summary"]["users"]["inserted"] == 1
        assert "dp_pinned" in writer.cookies
        assert [lookup(writer, url, email) for _ in range(5)] == [200] * 5
        assert [lookup(other, url, email) for _ in range(5)] == [404] * 5
        standby.execute("SELECT pg_wal_replay_resume()")
        wait_for(lambda: lookup(other, url, email) == 200, "the replica to catch up")


def test_a_lagging_replica_leaves_the_rotation_until_it_catches_up(standby, tmp_path):
    """Replay paused past REPLICA_MAX_LAG_SECONDS: health reports the lag, and a client
    without the pinning cookie reads the new user from the primary."""
    email = f"lag-{uuid.uuid4().hex[:8]}@example.com"
    with replicated_server(standby, tmp_path, REPLICA_MAX_LAG_SECONDS="1") as url:
        paused(standby)
        assert insert_user(requests.Session(), url, email).status_code == 200
        wait_for(lambda: replica_states(url) == {"lagging"}, "the replicas to report lag")
        report = health(url).json()
        assert report["status"] == "ok" and report["replicas"]["users_replica1"]["lag_seconds"] > 1
        assert [lookup(requests.Session(), url, email) for _ in range(5)] == [200] * 5
        standby.execute("SELECT pg_wal_replay_resume()")
        wait_for(lambda: replica_states(url) == {"ok"}, "the replicas to catch up")


def replica_lags(url: str) -> list[tuple[str, float | None]]:
    return [(r["state"], r["lag_seconds"]) for r in health(url).json()["replicas"].values()]


def assert_caught_up_for(url: str, seconds: float, max_lag_s: float) -> None:
    """Every replica reports "ok" and less than ``max_lag_s`` of lag at every check for
    ``seconds`` (health polled every 0.1 s; the monitor checks every 0.2 s)."""
    seen = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen.extend(replica_lags(url))
        time.sleep(0.1)
    bad = [(state, lag) for state, lag in seen if state != "ok" or lag >= max_lag_s]
    assert seen and not bad, f"{len(bad)} of {len(seen)} reports out: {bad[:5]}"


def test_a_caught_up_replica_never_leaves_the_rotation(standby, tmp_path):
    """Writes now and then, with idle spells between (the tolerance 0.5 s): the replica
    replays each at once, so it lags about 0 at every check and never leaves the
    rotation (lag counted as the age of the last replayed commit made an idle spell
    look like lag at the next write)."""
    with replicated_server(standby, tmp_path, REPLICA_MAX_LAG_SECONDS="0.5") as url:
        for number in range(3):
            insert_user(requests.Session(), url, f"idle-{number}-{uuid.uuid4().hex[:8]}@x.org")
            assert_caught_up_for(url, 1.5, 0.5)


def test_a_restarted_caught_up_replica_rejoins_the_rotation(replica_control, standby, tmp_path):
    """The replica's server stopped and started, nothing left to replay: within a few
    checks it is "ok" with about 0 s of lag, and stays so (after a restart the received
    position is a segment's start, behind the replayed one: comparing the two kept it
    "lagging" until the primary wrote again)."""
    with replicated_server(standby, tmp_path, REPLICA_MAX_LAG_SECONDS="1") as url:
        replica_script("stop")
        wait_for(lambda: replica_states(url) == {"unreachable"}, "the replicas to go")
        replica_script("start")
        wait_for(lambda: replica_states(url) == {"ok"}, "the replicas to rejoin", timeout=10)
        assert_caught_up_for(url, 3, 1)


def test_a_stopped_replica_leaves_the_rotation_and_health_stays_ok(
    replica_control, standby, tmp_path
):
    """The replica's server stopped: health says so (200: the primaries answer), every
    lookup is served by the primary; started again, it rejoins."""
    email = f"down-{uuid.uuid4().hex[:8]}@example.com"
    with replicated_server(standby, tmp_path, REPLICA_MAX_LAG_SECONDS="3600") as url:
        assert insert_user(requests.Session(), url, email).status_code == 200
        replica_script("stop")
        try:
            wait_for(lambda: replica_states(url) == {"unreachable"}, "the replicas to go")
            assert health(url).status_code == 200
            assert [lookup(requests.Session(), url, email) for _ in range(5)] == [200] * 5
        finally:
            replica_script("start")
        wait_for(lambda: replica_states(url) == {"ok"}, "the replicas to return", timeout=60)


def test_no_lookup_fails_while_the_replica_stops_and_starts(replica_control, standby, tmp_path):
    """Two Gunicorn workers, four clients looking a user up (with its orders: the users,
    orders and products replicas) without pause; the replica's server stopped, then
    started: every lookup answers 200, those sent while it was down included. A read that
    fails on a replica (its connection ended, then refused) is read again on the primary
    in the same request, and a replica's failure does not open the primary's read breaker
    (which would shed them). A lookup with no answer (a connection error, a timeout)
    counts as failed."""
    email = f"swarm-{uuid.uuid4().hex[:8]}@example.com"
    with replicated_server(standby, tmp_path, workers=2, REPLICA_MAX_LAG_SECONDS="3600") as url:
        assert insert_user(requests.Session(), url, email).status_code == 200
        wait_for(lambda: lookup(requests.Session(), url, email) == 200, "the replica's copy")
        user_id = requests.get(f"{url}/api/run-query/?type=get&email={email}", timeout=10).json()
        queries = [f"email={email}", f"user_id={user_id['results'][0]['id']}&include=orders"]
        answers: list[tuple[float, int]] = []  # (monotonic time sent, status; 0: no answer)
        stop = threading.Event()

        def client(query: str) -> None:
            with requests.Session() as session:  # no pinning cookie: reads go to the replica
                while not stop.is_set():
                    sent = time.monotonic()
                    try:
                        response = session.get(f"{url}/api/run-query/?type=get&{query}", timeout=10)
                        status = response.status_code
                    except requests.RequestException:
                        status = 0
                    answers.append((sent, status))

        threads = [threading.Thread(target=client, args=(queries[i % 2],)) for i in range(4)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(1)
            replica_script("stop")
            down = time.monotonic()
            time.sleep(3)
            restarting = time.monotonic()
            replica_script("start")
            wait_for(lambda: replica_states(url) == {"ok"}, "the replicas to return", 60)
            time.sleep(1)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=15)
        assert not any(thread.is_alive() for thread in threads)
        failed = [status for _, status in answers if status != 200]
        while_down = [status for sent, status in answers if down <= sent < restarting]
        assert len(while_down) > 20, f"{len(while_down)} lookups sent while the replica was down"
        assert failed == [], f"{len(failed)} of {len(answers)} lookups failed: {Counter(failed)}"
