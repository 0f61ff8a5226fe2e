"""The main job: Gunicorn (or Granian) + a headless Locust swarm over generated data, and
its report.

These tests run the real thing in subprocesses (``manage.py loadtest``, Gunicorn with
``gunicorn.conf.py`` or Granian with ``data_project.granian_server``, Locust) against a
small generated data set in a temporary DATA_DIR: the main job is defined on the embedded
SQLite default, so they run on SQLite only.
"""

import http.server
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from contextlib import closing
from pathlib import Path

import psutil
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from api.tests.conftest import SERVERS, manage, sqlite_only
from loadtest import prometheus, runinfo, runner
from loadtest.checks import MIN_RPS_BREACHED
from loadtest.summary import percentile, read_stats, render_markdown, summarize
from loadtest.swarm import SWARMED, swarm_name

REPO = Path(settings.BASE_DIR)
RECORDED = Path(__file__).parent / "data" / "locust.json"
# The recorded run's request kinds, and the swarm's today: one per swarmed lookup key.
RECORDED_KINDS = {"get user by id", "get user with orders", "get user by email", "insert batch"}
KINDS = {swarm_name(key) for key in SWARMED} | {
    "get user with orders",
    "insert batch",
}


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


def samples(entry: dict) -> list[int]:
    """Every response time (ms) of a Locust entry, one per request, in order."""
    return sorted(int(ms) for ms, n in entry["response_times"].items() for _ in range(n))


def test_summary_of_a_recorded_run():
    """A recorded Locust run (4 kinds, 3312 requests over 5.64 s): each kind's and the
    total's figures as counted here from the raw entries, one sample per request (the
    percentile is the sample at that rank, as Locust reports it), and a table with every
    request kind."""
    raw = json.loads(RECORDED.read_text())
    summary = summarize(read_stats(RECORDED), users=20)
    kinds, total = summary["kinds"], summary["total"]
    assert set(kinds) == RECORDED_KINDS
    start = min(entry["start_time"] for entry in raw)
    end = max(entry["last_request_timestamp"] for entry in raw)
    assert summary["duration_s"] == round(end - start, 1) == 5.6
    everything = sorted(ms for entry in raw for ms in samples(entry))
    for figures, times, entries in [
        (total, everything, raw),
        *((kinds[entry["name"]], samples(entry), [entry]) for entry in raw),
    ]:
        assert figures["requests"] == len(times)
        assert figures["failures"] == 0
        assert figures["rps"] == round(len(times) / (end - start), 1)
        for name, fraction in (("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99)):
            assert figures[name] == times[min(int(len(times) * fraction), len(times) - 1)], name
        assert figures["max_ms"] == round(max(e["max_response_time"] for e in entries))
    assert total["requests"] == 3312 and kinds["get user by id"]["requests"] == 2455
    table = render_markdown(summary)
    assert f"20 users, {summary['duration_s']} s" in table and "0 failures" in table
    assert all(f"| {kind} |" in table for kind in RECORDED_KINDS)


def test_summary_refuses_a_run_without_requests():
    with pytest.raises(ValueError, match="no requests"):
        summarize([], users=1)


def locust_report_args(path: Path) -> dict:
    """The figures locust.html shows: the ``window.templateArgs`` its page renders."""
    text = path.read_text()
    start = text.index("window.templateArgs = ") + len("window.templateArgs = ")
    return json.JSONDecoder().raw_decode(text[start:])[0]


@sqlite_only
@pytest.mark.parametrize("server", SERVERS)
def test_main_job_swarms_the_server_with_zero_failures(data_dir, tmp_path, server):
    """``loadtest --proxy --server S``: nginx and the server healthy, 20 users for 8 s,
    every task served, reports written: the summary agrees with locust.html, and
    index.html holds the run's metadata (the server named), headline, thresholds and the
    comparison with the folder's previous run."""
    reports = tmp_path / "reports"
    reports.mkdir()
    previous = {"users": 20, "total": {"rps": 1.0, "p95_ms": 1, "failures": 0}}
    previous["run"] = {"finished_at": "2000-01-01T00:00:00+00:00", "commit": "abc1234"}
    (reports / "summary.json").write_text(json.dumps(previous))
    # 908 at first (the assignment's 8, 900 generated); an earlier swarm here added more.
    users_db = Path(data_dir["DATA_DIR"]) / "users.sqlite3"
    with closing(sqlite3.connect(users_db)) as users:
        (users_before,) = users.execute("SELECT count(*) FROM users").fetchone()
    bind = f"127.0.0.1:{runner.free_port()}"
    run = manage(
        "loadtest",
        *("--users", "20", "--spawn-rate", "10", "--run-time", "8s", "--rows", "3000"),
        *("--bind", bind, "--reports", str(reports), "--progress-every", "2"),
        "--proxy",  # as make demo serves it: nginx in front of the server
        *("--server", server, "--p95-ms", "100000"),
        env={**data_dir, "WEB_CONCURRENCY": "3"},
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    # The console talks: a line per phase, the topology first, progress every 2 s; Locust's
    # own INFO lines and the servers' are left to their logs.
    phases = [line.split(":")[0] for line in run.stdout.splitlines() if line.startswith("== ")]
    assert phases == [
        "== data", "== serve", "== check", "== metrics", "== swarm", "== stop", "== report"
    ]  # fmt: skip
    topology = rf"nginx on {re.escape(bind)} -> {server} on 127\.0\.0\.1:\d+"
    shape = r"\(3 workers × 1 thread per server; production settings\)"
    assert re.search(rf"^== serve: {topology} {shape}$", run.stdout, re.M), run.stdout
    progress = r"^  0:0\d  users +\d+/20 +[\d,.]+ req/s  p95 +\d+ ms  failures 0 \(0\.0/s\)$"
    assert len(re.findall(progress, run.stdout, re.M)) >= 3, run.stdout
    assert "/INFO/" not in run.stderr and "Booting worker" not in run.stderr, run.stderr
    summary = json.loads((reports / "summary.json").read_text())
    assert summary["total"]["failures"] == 0
    assert {name for name, k in summary["kinds"].items() if k["requests"] > 0} == KINDS
    # What the locustfile adds (locust_run.json): status codes, failures, the ramp-up's end.
    codes = {name: kind["status_codes"] for name, kind in summary["kinds"].items()}
    assert codes == {name: {"200": kind["requests"]} for name, kind in summary["kinds"].items()}
    assert summary["failures"] == []
    steady = summary["steady"]
    assert steady["users"] == 20 and 1 < steady["start_s"] < 5  # 20 users at 10/s
    assert 0 < steady["total"]["requests"] < summary["total"]["requests"]
    for figures in [steady["total"], *steady["kinds"].values()]:  # its own histogram's
        assert 0 < figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"], figures
    assert re.fullmatch(r"[0-9a-f]{12}", summary["run"]["run_id"])
    assert (reports / "locust.html").stat().st_size > 10_000
    assert "0 failures" in (reports / "summary.md").read_text()
    assert "Starting Locust" in (reports / "locust.log").read_text()

    # One window: locust.html's duration (whole seconds) and RPS, overall and per kind.
    locust = locust_report_args(reports / "locust.html")
    assert locust["duration"] == f"{int(summary['window']['seconds'])} seconds"
    rps = {row["name"]: round(row["total_rps"], 1) for row in locust["requests_statistics"]}
    assert rps.pop("Aggregated") == summary["total"]["rps"]
    assert rps == {name: kind["rps"] for name, kind in summary["kinds"].items()}

    index = (reports / "index.html").resolve()
    page = index.read_text()
    assert f"Report: {index}" in run.stdout and index.as_uri() in run.stdout
    assert "make serve" in run.stdout
    assert "PASSED" in page and f"{summary['total']['rps']}</b>requests/s" in page
    assert f"{summary['total']['p95_ms']} ms</b>p95" in page
    assert runinfo.git_commit() in page
    assert re.search(r"3 workers × 1 thread\s+per instance", page) and "proxy: nginx" in page
    assert re.search(rf"<th>topology</th><td>{topology.replace('->', '-&gt;')}</td>", page)
    assert summary["run"]["server"]["name"] == server and f"Server: {server}," in run.stdout
    assert ("Granian wsgi" if server == "granian" else "Gunicorn gthread") in page
    assert str(Path(data_dir["DATA_DIR"]) / "users.sqlite3") in page
    assert f"users {users_before} products" in page.replace(",", "")  # rows per table
    assert "not generated by this run" in page
    assert f"locust {runinfo.versions()['locust']}" in page
    assert "previous run (2000-01-01T00:00:00+00:00, commit abc1234, 20 users)" in page
    assert [check["passed"] for check in summary["thresholds"]] == [True, True]
    server_side_of_the_run(run.stdout, reports, summary, page)


def server_side_of_the_run(stdout: str, reports: Path, summary: dict, page: str) -> None:
    """Issue 30: a real Prometheus scraped the server behind nginx every second with a
    ``metrics`` token kept out of the reports, psutil sampled the rest, and the report
    draws both; Prometheus's data stays in ``reports/prometheus/data``."""
    address = r"127\.0\.0\.1:\d+"
    side = summary["server_side"]
    if not require_prometheus():
        assert side["reason"] == NOT_INSTALLED and f"== metrics: {NOT_INSTALLED}" in stdout
        return
    said = rf"^== metrics: Prometheus \S+ on {address} scrapes ({address})/metrics every 1 s$"
    scraped = re.search(said, stdout, re.M)
    assert scraped, stdout
    assert f"-> {summary['run']['server']['name']} on {scraped.group(1)}" in stdout  # not nginx
    assert side["available"], side["reason"]
    # Since the server started: the swarm's requests and the run's own health checks.
    served = sum(side["requests_by_status"].values())
    assert set(side["requests_by_status"]) == {"2xx"}
    assert 0 <= served - summary["total"]["requests"] < 50, (served, summary["total"])
    assert side["server_p95_ms"] > 0 and side["db_time_share_pct"] > 0
    roles = set(side["roles"])
    assert {"locust master", "nginx worker", "prometheus"} <= roles, roles
    assert any(p["source"] == "prometheus" for p in side["processes"])
    config = (reports / "prometheus" / "prometheus.yml").read_text()
    credentials = re.search(r"credentials_file: (\S+)", config).group(1)
    assert not Path(credentials).exists() and str(reports) not in credentials
    assert any((reports / "prometheus" / "data").iterdir())
    assert (reports / "processes.json").exists() and (reports / "server-metrics.json").exists()
    assert side["bottleneck"]["sentence"].replace("'", "&#x27;") in page
    assert "<b>Server p95 by route</b>" in page and "<b>CPU per process</b>" in page


NOT_INSTALLED = (
    "Prometheus is not installed (no prometheus on PATH; make prometheus installs "
    "Debian's package), so this run has no server-side metrics."
)


def require_prometheus() -> bool:
    """Whether Prometheus is installed; where it is not, fails under ``REQUIRE_PROMETHEUS``
    (CI), else the runs are checked for the sentence that says so."""
    if prometheus.binary() is None and os.environ.get("REQUIRE_PROMETHEUS"):
        pytest.fail("REQUIRE_PROMETHEUS is set but no prometheus is on PATH (make prometheus)")
    return prometheus.binary() is not None


def without_prometheus() -> str:
    """PATH without the directories that hold a ``prometheus``."""
    directories = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(d for d in directories if not (Path(d) / "prometheus").exists())


@sqlite_only
def test_a_run_without_prometheus_says_why_and_reports_the_rest(data_dir, tmp_path):
    """Prometheus missing (not on PATH): the run goes on, says why in one line, and its
    report has the sentence in place of the server's panels, with the processes psutil
    sampled."""
    reports = tmp_path / "reports"
    run = manage(
        "loadtest",
        *("--users", "5", "--spawn-rate", "5", "--run-time", "3s", "--rows", "3000"),
        *("--bind", f"127.0.0.1:{runner.free_port()}", "--reports", str(reports)),
        *("--progress-every", "0", "--access", "open"),
        env={**data_dir, "PATH": without_prometheus(), "WEB_CONCURRENCY": "2"},
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    reason = NOT_INSTALLED
    assert f"== metrics: {reason}" in run.stdout
    summary = json.loads((reports / "summary.json").read_text())
    assert summary["server_side"]["reason"] == reason
    assert summary["server_side"]["roles"]["gunicorn worker"]["processes"] == 2
    page = (reports / "index.html").read_text()
    assert reason.replace("'", "&#x27;") in page and "<b>CPU per process</b>" in page
    assert not (reports / "prometheus").exists()


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
                *("--reports", str(tmp_path), "--p95-ms", "100000"),
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
    page = (tmp_path / "index.html").read_text()
    assert "FAILED" in page and "failed requests (allowed: 0)" in page
    assert "a running server this run did not start" in page


@sqlite_only
@pytest.mark.parametrize("server", SERVERS)
def test_the_cluster_run_swarms_two_servers_from_distributed_locust(data_dir, tmp_path, server):
    """``loadtest --instances 2 --processes 2``: nginx balancing two servers, a Locust
    master with two workers, every task served, no failures; and ``--min-rps`` beyond reach
    alone makes the run fail, named in the error and the report."""
    reports = tmp_path / "cluster"
    run = manage(
        "loadtest",
        *("--users", "20", "--spawn-rate", "10", "--run-time", "8s", "--rows", "3000"),
        *("--bind", f"127.0.0.1:{runner.free_port()}", "--reports", str(reports)),
        *("--instances", "2", "--processes", "2", "--min-rps", "1000000", "--server", server),
        env={**data_dir, "WEB_CONCURRENCY": "4"},
    )
    summary = json.loads((reports / "summary.json").read_text())
    assert summary["total"]["failures"] == 0 and summary["total"]["requests"] > 100
    # The workers' status codes reach the master with their statistics.
    assert summary["total"]["status_codes"] == {"200": summary["total"]["requests"]}
    breach = MIN_RPS_BREACHED.format(actual=summary["total"]["rps"], limit="1000000")
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    assert summary["breaches"] == [breach]
    assert f"CommandError: {breach}" in run.stderr
    page = (reports / "index.html").read_text()
    assert "FAILED" in page and breach in page
    assert re.search(r"2 workers × 1 thread\s+per instance", page) and "2 instances" in page
    assert summary["run"]["server"]["name"] == server
    # Prometheus scraped both servers, not nginx; psutil saw the master and both workers.
    side = summary["server_side"]
    if not require_prometheus():
        return
    upstreams = re.search(r"-> 2 \w+ servers on (\S+), (\S+) \(", run.stdout).groups()
    assert re.search(rf"scrapes {upstreams[0]}/metrics, {upstreams[1]}/metrics ", run.stdout)
    assert side["available"], side["reason"]
    # At least Locust's count: once (of several runs) the master's total lacked ~20% of the
    # requests the servers answered, as if a worker's last report had not reached it.
    assert sum(side["requests_by_status"].values()) >= summary["total"]["requests"]
    scraped = {p["pid"] for p in side["processes"] if p["source"] == "prometheus"}
    assert len(scraped) >= 4  # two workers of each server (and their masters)
    assert side["roles"]["locust master"]["processes"] == 1
    assert side["roles"]["locust worker"]["processes"] == 2


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


def test_a_run_refuses_a_port_something_already_listens_on(tmp_path):
    """Issue 31: with ``make serve`` still on the port, nginx failed to bind and the swarm
    measured the development server. Now the run stops before anything starts, naming the
    port and the process holding it; a port merely in TIME_WAIT counts as free."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        bind = f"127.0.0.1:{holder.getsockname()[1]}"
        with pytest.raises(CommandError) as refused:
            call_command("loadtest", "--bind", bind, "--reports", str(tmp_path), "--rows", "10")
        assert f"{bind} is already in use by pid {os.getpid()}" in str(refused.value)
        with pytest.raises(runner.PortInUse), runner.serve(bind):
            pass
    runner.require_free(bind)  # closed: free again
    assert not list(tmp_path.iterdir())  # nothing ran, nothing was reported


class Impostor(http.server.BaseHTTPRequestHandler):
    """Another server on the run's port: healthy to any GET, as a ``make serve`` would be."""

    paths: list[str] = []

    def do_GET(self) -> None:
        self.paths.append(self.path)
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@sqlite_only
def test_a_run_refuses_to_swarm_another_server_that_took_its_port(tmp_path):
    """Issue 31: the port is free when the run checks it, then another server takes it
    before nginx binds it (nginx then fails to bind, and answers came from the other
    server). The run's server echoes the run's id in X-Loadtest-Run; the other server
    does not, so the run stops before the swarm, naming the port's holder, and reports
    nothing."""
    bind = f"127.0.0.1:{runner.free_port()}"
    host, port = bind.split(":")
    reports = tmp_path / "reports"
    run = subprocess.Popen(
        [
            *(sys.executable, "manage.py", "loadtest", "--proxy", "--bind", bind),
            *("--rows", "3000", "--users", "5", "--run-time", "5s", "--reports", str(reports)),
        ],
        cwd=REPO,
        # Gunicorn's INFO lines say when it listens (a run quiets them unless told).
        env={
            **os.environ,
            **{"DATA_DIR": str(tmp_path / "db"), "PYTHONUNBUFFERED": "1"},
            "GUNICORN_LOG_LEVEL": "info",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    Impostor.paths = []
    output, impostor = [], None
    try:
        for line in run.stdout:  # the port is taken once the run has checked it
            output.append(line)
            if "Listening at" in line:  # the server behind nginx: nginx starts next
                impostor = http.server.ThreadingHTTPServer((host, int(port)), Impostor)
                threading.Thread(target=impostor.serve_forever, daemon=True).start()
                break
        output.append(run.communicate(timeout=120)[0])
    finally:
        if impostor is not None:
            impostor.shutdown()
            impostor.server_close()
    output = "".join(output)
    assert impostor is not None, output[-3000:]
    assert run.returncode == 1, output[-3000:]
    assert f"CommandError: http://{bind} answers, but not as the server this run started" in (
        output
    )
    assert f"by pid {os.getpid()}" in output
    assert "/api/run-query/" not in " ".join(Impostor.paths)  # never swarmed
    assert not (reports / "summary.json").exists()


def locust_in(folder: Path, *args: str) -> list[str]:
    """``locust`` as a user runs it from the checkout, with the repository's files, but in
    ``folder``: the relative report paths of locust.conf land there."""
    return [
        *(sys.executable, "-m", "locust", "-f", str(REPO / "locustfile.py")),
        *("--config", str(REPO / "locust.conf"), *args),
    ]


def test_the_web_ui_listens_on_loopback_and_keeps_its_reports_apart(tmp_path):
    """Issue 31: ``locust -f locustfile.py`` listened on 0.0.0.0 and wrote
    reports/locust.html and the CSVs over the demo's. It listens on 127.0.0.1 and writes
    under reports/locust-ui/."""
    port = runner.free_port()
    ui = subprocess.Popen(
        locust_in(tmp_path, "--web-port", str(port)),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (listening := runner.port_holder(port)) and time.monotonic() < deadline:
            time.sleep(0.2)
        addresses = {
            conn.laddr.ip
            for conn in psutil.Process(ui.pid).net_connections(kind="tcp")
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port
        }
    finally:
        ui.send_signal(signal.SIGINT)  # as Ctrl-C: Locust writes its HTML report
        _, log = ui.communicate(timeout=60)
    assert listening and addresses == {"127.0.0.1"}, log
    assert (tmp_path / "reports" / "locust-ui" / "locust.html").exists(), log
    assert (tmp_path / "reports" / "locust-ui" / "locust_stats.csv").exists(), log
    assert not [path for path in (tmp_path / "reports").iterdir() if path.is_file()]


def test_a_swarm_with_no_server_stops_at_once_with_one_line(tmp_path):
    """Issue 31: with no server, the start-up read of /api/stats/ failed with a traceback
    and 19k KeyError tracebacks followed. Now the swarm stops at once with exit status 2
    and one line naming the host and the fix."""
    host = f"http://127.0.0.1:{runner.free_port()}"
    started = time.monotonic()
    run = subprocess.run(
        locust_in(tmp_path, "--headless", "--host", host, "-u", "5", "-r", "5", "-t", "20s"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 2, output[-3000:]
    assert time.monotonic() - started < 15  # not the 20 s run time
    assert "Traceback" not in output and "KeyError" not in output, output[-3000:]
    [error] = [line for line in output.splitlines() if "/ERROR/" in line]
    assert f"cannot read {host}/api/stats/: no answer" in error and "make serve" in error


@sqlite_only
def test_ctrl_c_ends_a_run_with_one_line_and_keeps_the_previous_report(data_dir, tmp_path):
    """Issue 31: Ctrl-C during the swarm printed three KeyboardInterrupt tracebacks and left
    a locust.html of the partial run beside the previous run's index.html. Now SIGINT to
    the terminal's process group ends the run with one line and status 130, stops every
    process it started, and leaves the previous run's files as they were."""
    reports = tmp_path / "reports"
    reports.mkdir()
    previous = {"users": 7, "total": {"rps": 1.0, "p95_ms": 1, "failures": 0}}
    previous["run"] = {"finished_at": "2000-01-01T00:00:00+00:00", "commit": "abc1234"}
    kept = {
        "summary.json": json.dumps(previous),
        "index.html": "<p>the previous run</p>",
        "locust.html": "<p>the previous run's Locust</p>",
        "locust_stats.csv": "the previous run's\n",
    }
    for name, text in kept.items():
        (reports / name).write_text(text)
    bind = f"127.0.0.1:{runner.free_port()}"
    run = subprocess.Popen(
        [
            *(sys.executable, "manage.py", "loadtest", "--proxy", "--bind", bind),
            *("--rows", "3000", "--users", "10", "--run-time", "60s", "--reports", str(reports)),
            *("--progress-every", "1"),
        ],
        cwd=REPO,
        env={**os.environ, **data_dir, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal's job is
    )
    output = []
    for line in run.stdout:
        output.append(line)
        if line.startswith("  0:01  users"):  # the first progress line: swarming
            break
    started = psutil.Process(run.pid).children(recursive=True)
    assert len(started) >= 3, "".join(output)  # nginx, the server, Locust
    os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    output = "".join(output) + run.communicate(timeout=120)[0]
    assert run.returncode == 130, output[-3000:]
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-3000:]
    [line] = [line for line in output.splitlines() if "Interrupted" in line]
    assert line == (
        f"CommandError: Interrupted: this run's measurements were discarded; {reports}/ "
        "holds the previous run (2000-01-01T00:00:00+00:00), unchanged."
    )
    assert {path.name: path.read_text() for path in reports.iterdir()} == kept
    _, alive = psutil.wait_procs(started, timeout=30)
    assert alive == []
    runner.require_free(bind)
