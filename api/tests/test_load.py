"""The main job: Gunicorn + a headless Locust swarm over generated data, and its report.

These tests run the real thing in subprocesses (``manage.py loadtest``, Gunicorn with
``gunicorn.conf.py``, Locust) against a small generated data set in a temporary DATA_DIR:
the main job is defined on the embedded SQLite default, so they run on SQLite only.
"""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import psutil
import pytest
from django.conf import settings

from api.loadtest import runner
from api.loadtest.summary import percentile, read_stats, render_markdown, summarize
from api.lookup_keys import LOOKUP_KEYS
from api.tests.conftest import sqlite_only

REPO = Path(settings.BASE_DIR)
RECORDED = Path(__file__).parent / "data" / "locust.json"
# The recorded run's request kinds, and the swarm's today: one per swarmed lookup key.
RECORDED_KINDS = {"get user by id", "get user with orders", "get user by email", "insert batch"}
KINDS = {key.swarm_name for key in LOOKUP_KEYS.values() if key.swarm_weight} | {
    "get user with orders",
    "insert batch",
}


def manage(*args: str, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def generated_data_dir(path: Path, rows: int, seed: int) -> dict[str, str]:
    """``{"DATA_DIR": path}`` after ``migrate_all`` and ``generate_data`` there."""
    env = {"DATA_DIR": str(path)}
    for command in (("migrate_all",), ("generate_data", "--rows", str(rows), "--seed", str(seed))):
        run = manage(*command, "--verbosity", "0", env=env)
        assert run.returncode == 0, run.stderr
    return env


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> dict:
    """A DATA_DIR as ``make demo`` leaves it: the assignment data set, then generated rows.

    The assignment's rejected records leave ids missing among the users (8 and 10 of
    908), which the swarm must not ask for.
    """
    env = {"DATA_DIR": str(tmp_path_factory.mktemp("loaddb"))}
    commands = (
        ("migrate_all",),
        ("insert_data",),
        ("generate_data", "--rows", "3000", "--seed", "7"),
    )
    for command in commands:
        run = manage(*command, "--verbosity", "0", env=env)
        assert run.returncode == 0, run.stderr
    return env


def test_percentiles_follow_locusts_histogram_method():
    """99 requests at 10 ms and one at 500 ms: p50 and p95 are 10 ms, p99 is the outlier."""
    histogram = Counter({10: 99, 500: 1})
    assert (percentile(histogram, 0.5), percentile(histogram, 0.95)) == (10, 10)
    assert percentile(histogram, 0.99) == 500
    assert percentile(Counter(), 0.5) == 0


def test_summary_of_a_recorded_run():
    """A recorded Locust run gives totals that add up and a table with every request kind."""
    entries = read_stats(RECORDED)
    summary = summarize(entries, users=20)
    kinds, total = summary["kinds"], summary["total"]
    assert set(kinds) == RECORDED_KINDS
    assert total["requests"] == sum(k["requests"] for k in kinds.values()) > 0
    assert total["failures"] == 0
    for figures in [total, *kinds.values()]:
        assert 0 < figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    table = render_markdown(summary)
    assert f"20 users, {summary['duration_s']} s" in table and "0 failures" in table
    assert all(f"| {kind} |" in table for kind in RECORDED_KINDS)


def test_summary_refuses_a_run_without_requests():
    with pytest.raises(ValueError, match="no requests"):
        summarize([], users=1)


@sqlite_only
def test_main_job_swarms_gunicorn_with_zero_failures(data_dir, tmp_path):
    """``loadtest --proxy``: nginx and Gunicorn healthy, 20 users for 8 s, every task served,
    reports written."""
    reports = tmp_path / "reports"
    run = manage(
        "loadtest",
        *("--users", "20", "--spawn-rate", "10", "--run-time", "8s", "--rows", "3000"),
        *("--bind", f"127.0.0.1:{runner.free_port()}", "--reports", str(reports)),
        "--proxy",  # as make demo serves it: nginx in front of Gunicorn
        env=data_dir,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((reports / "summary.json").read_text())
    assert summary["total"]["failures"] == 0
    assert {name for name, k in summary["kinds"].items() if k["requests"] > 0} == KINDS
    assert (reports / "locust.html").stat().st_size > 10_000
    assert "0 failures" in (reports / "summary.md").read_text()


@sqlite_only
def test_main_job_fails_when_the_server_stops_mid_run(data_dir, tmp_path):
    """A server that dies during the swarm turns into failed requests and exit status 1."""
    port = runner.free_port()
    url = f"http://127.0.0.1:{port}"
    with runner.serve(f"127.0.0.1:{port}", env=data_dir) as server:
        runner.wait_healthy(url, server)
        swarm = subprocess.Popen(
            [
                *(sys.executable, "manage.py", "loadtest", "--server-url", url),
                *("--users", "10", "--spawn-rate", "10", "--run-time", "8s"),
                *("--reports", str(tmp_path)),
            ],
            cwd=REPO,
            env={**os.environ, **data_dir},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(4)
        server.terminate()
        server.wait(timeout=40)
    output, _ = swarm.communicate(timeout=120)
    assert swarm.returncode == 1, output[-3000:]
    assert "failed requests" in output
    assert json.loads((tmp_path / "summary.json").read_text())["total"]["failures"] > 0


@sqlite_only
def test_the_cluster_run_swarms_two_gunicorns_from_distributed_locust(data_dir, tmp_path):
    """``loadtest --instances 2 --processes 2``: nginx balancing two Gunicorns, a Locust
    master with two workers, every task served, no failures."""
    reports = tmp_path / "cluster"
    run = manage(
        "loadtest",
        *("--users", "20", "--spawn-rate", "10", "--run-time", "8s", "--rows", "3000"),
        *("--bind", f"127.0.0.1:{runner.free_port()}", "--reports", str(reports)),
        *("--instances", "2", "--processes", "2"),
        env=data_dir,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((reports / "summary.json").read_text())
    assert summary["total"]["failures"] == 0 and summary["total"]["requests"] > 100


@sqlite_only
def test_the_cluster_keeps_answering_when_one_gunicorn_is_killed(data_dir):
    """SIGKILL to one of two Gunicorns (master and workers): nginx passes its share to the
    other, and every lookup still answers 200."""
    bind = f"127.0.0.1:{runner.free_port()}"
    url = f"http://{bind}/api/run-query/?type=get&user_id=1"
    env = {**data_dir, "WEB_CONCURRENCY": "2", "GUNICORN_LOG_LEVEL": "critical"}
    with runner.serve_cluster(bind, 2, env=env) as servers:
        for server in servers:
            runner.wait_healthy(f"http://{bind}", server)
        assert {status_of(url) for _ in range(20)} == {200}
        victim = psutil.Process(servers[0].pid)
        for process in [*victim.children(recursive=True), victim]:
            process.kill()
        servers[0].wait(timeout=10)
        assert [status_of(url) for _ in range(40)] == [200] * 40


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
