"""The PostgreSQL server restarted under a swarm: 503s while it is down, nothing
acknowledged lost, serving again within seconds of its return.

The server restarted is a throwaway cluster of its own (``deploy/faults_cluster.sh``,
port ``FAULTS_PORT``, 5440), never the machine's main one, which other work shares.
Making it needs root and Debian's PostgreSQL tools: without them the test skips, unless
``REQUIRE_POSTGRES`` is set (``.ci/run``), which makes that a failure.
"""

import os
import shutil
import subprocess
from pathlib import Path

import orjson
import psycopg
import pytest
from django.conf import settings

from api.db.failures import KINDS
from api.domain.stores import STORE_NAMES
from api.tests.conftest import ROUTED, manage, postgresql_only
from api.tests.test_failures import FAILED_REASON
from loadtest import runner
from loadtest.faults import restart_figures, restart_records, restarted_server

SCRIPT = str(Path(settings.BASE_DIR) / "deploy" / "faults_cluster.sh")
SERVER_URL = f"postgres://postgres@127.0.0.1:{os.environ.get('FAULTS_PORT') or 5440}"
PREFIX = "dp_restart_"
# The restart: stopped this long after the swarm began, down this long, and the swarm
# goes on this long after the server accepts connections again.
SECONDS = (2.0, 3.0, 6.0)
RECOVERY_SECONDS = 5.0  # issue 28: serving again within this of the server's return

pytestmark = postgresql_only


def cluster(command: str) -> None:
    done = subprocess.run([SCRIPT, command], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"deploy/faults_cluster.sh {command}: {done.stdout}{done.stderr}"


@pytest.fixture(scope="module")
def restartable_server() -> str:
    """The throwaway cluster's URL (``postgres://...:5440``), running; created on first
    use, stopped after the module."""
    if os.geteuid() != 0 or shutil.which("pg_createcluster") is None:
        reason = "a PostgreSQL cluster of its own needs root and pg_createcluster"
        if os.environ.get("REQUIRE_POSTGRES"):
            pytest.fail(f"{reason} (REQUIRE_POSTGRES)")
        pytest.skip(reason)
    cluster("start")
    yield SERVER_URL
    cluster("stop")


def drop_databases(names: list[str]) -> None:
    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as admin:
        for name in names:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def assert_unavailable(answer) -> None:
    """A 503 with ``Retry-After`` and a JSON body naming each failure's store and kind."""
    assert answer.retry_after, answer
    document = orjson.loads(answer.body)
    if answer.kind == "lookup":
        details = document["details"]
        assert details["store"] in STORE_NAMES and details["failure"] in KINDS, document
        return
    records = [record for store in STORE_NAMES for record in document.get(store, [])]
    assert records and all(record["status"] == "failed" for record in records), document
    assert all(FAILED_REASON.fullmatch(record["reason"]) for record in records), document


@pytest.mark.parametrize("pool", ["0", "1"], ids=["persistent", "pool"])
def test_a_restarted_postgresql_server_is_503s_while_down_and_loses_no_acknowledged_record(
    restartable_server, tmp_path, pool
):
    """Two Gunicorn workers (persistent connections, or Django's pool) over three new
    databases on the throwaway server; four clients looking users up and four sending
    insert batches (users, a product, its order) with Idempotency-Keys, a batch answered
    503 sent again with its key; the server stopped (fast: its sessions ended) and
    started again (`SECONDS`). Every request is answered within its deadlines, none is a
    500; while the server is down every answer is a 503 with Retry-After and the JSON
    envelope; every record answered inserted is stored with the id answered, and none
    twice; from `RECOVERY_SECONDS` after the server accepts connections again every
    request succeeds."""
    names = [PREFIX + alias for alias in ROUTED]
    urls = {
        alias: f"{restartable_server}/{name}" for alias, name in zip(ROUTED, names, strict=True)
    }
    env = {
        "DATA_DIR": str(tmp_path),
        "DATABASE_URL_DEFAULT": "",  # the tokens and keys: SQLite, untouched by the restart
        **{f"DATABASE_URL_{alias.upper()}": url for alias, url in urls.items()},
        **{f"DATABASE_REPLICA_URLS_{alias.upper()}": "" for alias in ROUTED},
    }
    drop_databases(names)
    try:
        for command in (("migrate_all",), ("generate_data", "--rows", "3000", "--seed", "11")):
            run = manage(*command, "--verbosity", "0", env=env)
            assert run.returncode == 0, run.stderr
        bind = f"127.0.0.1:{runner.free_port()}"
        server_env = {**env, "GUNICORN_LOG_LEVEL": "critical", "WEB_CONCURRENCY": "2"}
        server_env["DATABASE_POOL"] = pool
        with runner.serve(bind, env=server_env) as server:
            runner.wait_healthy(f"http://{bind}", server)
            swarm = restarted_server(
                f"http://{bind}",
                f"{restartable_server}/postgres",
                lambda: cluster("stop"),
                lambda: cluster("start"),
                seconds=SECONDS,
            )
            serving = server.poll() is None
        records = restart_records(swarm, urls)
    finally:
        drop_databases(names)
    figures = restart_figures(swarm)
    counts = {name: n if isinstance(n, int) else len(n) for name, n in records.items()}
    print(f"\nrestart: {figures}\nrecords: {counts}")
    assert serving
    # Answered within the deadlines, never a 500: a connection (or the pool's) waited for
    # at most twice in a row (a batch's orders part starts when the parts it references
    # end), a lock within the batch's deadline, a second to spare.
    connect = settings.DATABASE_CONNECT_TIMEOUT_SECONDS
    bound = 2 * connect + settings.REQUEST_DEADLINE_SECONDS + 1
    assert figures["unanswered"] == 0 and max(figures["max_s"].values()) < bound, figures
    assert set(figures["statuses"]["lookup"]) <= {200, 503}, figures
    assert set(figures["statuses"]["insert"]) <= {200, 207, 503}, figures
    # Down: 503s, each with Retry-After and the envelope naming the store.
    assert set(figures["while_down"]) == {503} and figures["while_down"][503] > 20, figures
    for answer in swarm.answers:
        if answer.status == 503:
            assert_unavailable(answer)
    # Back: serving again within RECOVERY_SECONDS of the server's return, both kinds.
    assert figures["recovery_s"] < RECOVERY_SECONDS, figures
    assert all(s is not None for s in figures["first_success_s"].values()), figures
    # Nothing acknowledged lost; nothing stored twice (a retry after a 503 whose
    # transaction had committed finds the rows, and answers them rejected, not stored).
    assert records["acknowledged"] > 100, records
    assert records["lost"] == [] and records["stored_twice"] == [], records
