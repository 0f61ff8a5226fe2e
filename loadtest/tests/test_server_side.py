"""The server's side of the report: a recorded run's Prometheus answers and psutil samples
drawn as panels, the bottleneck rules on its figures, and a run without Prometheus.

The recorded run (``data/server-run/``) is a real short ``loadtest --proxy`` run, its
files as the run wrote them (``summary.json``, Locust's ``locust.json`` and history,
``server-metrics.json``, ``processes.json``).
"""

import copy
import json
import shutil
import socket
from pathlib import Path

import pytest

from loadtest import prometheus, report, runner, sampler, sections, server_side, staging
from loadtest.summary import render_markdown
from loadtest.tests.test_report import RESOURCE

RECORDED = Path(__file__).parent / "data" / "server-run"
RUN_FILES = ("summary.json", "locust.json", "locust_stats_history.csv")
RUN_FILES += (prometheus.SERVER_METRICS, sampler.PROCESSES)
PANELS = [
    "Server p50 by route",
    "Server p95 by route",
    "Server p99 by route",
    "Server requests/s by status class",
    "CPU per process",
    "Memory per process",
    "Database time, share of the server&#x27;s time",
    "Queries/s by database alias: replicas and primaries",
]


def recorded_run(folder: Path) -> Path:
    """The recorded run's files in ``folder`` (its report not yet written)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        shutil.copy(RECORDED / name, folder / name)
    return folder


def recorded_summary() -> dict:
    return json.loads((RECORDED / "summary.json").read_text())


def test_the_recorded_runs_figures_are_recomputed_from_its_files():
    """``summary.json``'s ``server_side`` is what `server_side.figures` makes of the saved
    Prometheus answers and psutil samples: the page can be redrawn from the files alone."""
    summary = recorded_summary()
    collected = prometheus.read(RECORDED)
    figures = server_side.figures(summary, collected, sampler.read(RECORDED))
    figures["bottleneck"] = server_side.bottleneck(figures)
    assert figures == summary["server_side"]
    assert figures["available"] and figures["reason"] is None
    assert 0 < figures["server_p50_ms"] <= figures["server_p95_ms"] <= figures["server_p99_ms"]
    assert figures["server_p95_ms"] < figures["client_p95_ms"]  # nginx and the queue: Locust's
    assert figures["requests_by_status"]["2xx"] > 0
    assert 0 < figures["db_time_share_pct"] < 100
    assert figures["reads"]["primary"] > 0 and figures["reads"]["replica"] == 0  # no replica
    roles = set(figures["roles"])
    assert {"gunicorn worker", "locust master", "nginx worker", "prometheus"} <= roles
    sources = {p["role"]: p["source"] for p in figures["processes"]}
    assert sources["gunicorn worker"] == "prometheus" and sources["nginx worker"] == "psutil"


def test_the_report_draws_the_server_side_from_a_recorded_run(tmp_path):
    """Every panel of the issue from the recorded run's files, offline: p50/p95/p99 by
    route, requests/s by status class, CPU and memory per process (the server's from
    Prometheus, the rest from psutil), the database's share, replica and primary reads;
    the bottleneck's sentence under the headline."""
    folder = recorded_run(tmp_path / "reports")
    summary = json.loads((folder / "summary.json").read_text())
    page = report.write_report(summary, folder).read_text()
    server = page[page.index('<section id="server">') : page.index('<section id="kinds">')]
    titles = [title for title in PANELS if f"<b>{title}</b>" in server]
    assert titles == PANELS
    assert ("No breaker opened during the run." in server) != ("Breaker trips" in server)
    routes = {
        line["label"]
        for line in sections.server_side(run_data(folder))["panels"][1]["chart"]["lines"]
    }
    assert "api/run-query/ user_id" in routes and "metrics" not in routes
    headline = page[page.index('<section id="headline">') : page.index('<section id="thresholds">')]
    sentence = summary["server_side"]["bottleneck"]["sentence"]
    assert f"<b>Bottleneck:</b> {sentence}".replace("'", "&#x27;") in headline
    assert "gunicorn worker" in server and "locust master" in server
    assert "<script" not in page.lower() and not RESOURCE.search(page)
    markdown = render_markdown(summary)
    assert f"Bottleneck: {sentence}" in markdown
    side = summary["server_side"]
    assert f"Server side after the ramp-up (Prometheus): p50 {side['server_p50_ms']} ms" in markdown


def run_data(folder: Path) -> sections.RunData:
    summary = json.loads((folder / "summary.json").read_text())
    return sections.RunData(
        summary=summary,
        entries=json.loads((folder / "locust.json").read_text()),
        history=sections.read_history(folder / "locust_stats_history.csv"),
        server_metrics=prometheus.read(folder),
        processes=sampler.read(folder),
    )


def calm() -> dict:
    """The recorded figures, every process at 1% of a core and the machine at half."""
    figures = copy.deepcopy(recorded_summary()["server_side"])
    for process in figures["processes"]:
        process["cpu_pct"] = 1.0
    figures["roles"] = server_side.by_role(figures["processes"])
    figures |= {"machine_cpu_pct": 50.0, "cores": 2, "breaker_trips": 0, "breakers_tripped": []}
    figures |= {"db_time_share_pct": 20.0, "server_p95_ms": 40.0, "client_p95_ms": 50}
    return figures


def busy(figures: dict, role: str, cpu: float) -> dict:
    """``figures`` with every process of ``role`` at ``cpu`` % of a core."""
    for process in figures["processes"]:
        if process["role"] == role:
            process["cpu_pct"] = cpu
    figures["roles"] = server_side.by_role(figures["processes"])
    return figures


def workers(figures: dict) -> int:
    return sum(p["role"] == "gunicorn worker" for p in figures["processes"])


@pytest.mark.parametrize(
    ("change", "rule", "sentence"),
    [
        (
            lambda f: busy(f, "locust master", 98.4) | {"machine_cpu_pct": 99.0},
            "load generator",
            "Locust used 98% of a core (locust master): the load generator is the limit, "
            "not the server.",
        ),
        (
            lambda f: f | {"breaker_trips": 3, "breakers_tripped": ["users read"]},
            "breakers",
            "Breakers opened 3 times (users read): a store refused work, and its requests "
            "failed fast.",
        ),
        (
            lambda f: busy(f, "gunicorn worker", 45.0) | {"machine_cpu_pct": 97.2},
            "machine",
            None,  # names the shares: checked below
        ),
        (
            lambda f: busy(f, "gunicorn worker", 95.0),
            "server CPU",
            "The {workers} server workers used 95% of a core each: the server's CPU is the limit.",
        ),
        (
            lambda f: f | {"db_time_share_pct": 62.0},
            "database",
            "Database time was 62% of the server's time: the database is the limit.",
        ),
        (
            lambda f: f | {"server_p95_ms": 8.0, "client_p95_ms": 300},
            "queueing",
            "The server answered in 8 ms at p95 but Locust waited 300 ms: requests queue in "
            "front of the server's workers (nginx, the listen queue), not in them.",
        ),
        (
            lambda f: f,
            "none",
            "No process reached 90% of a core and Locust's p95 (50 ms) is not far above the "
            "server's (40 ms): nothing saturated at this load.",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_the_bottleneck_is_the_first_rule_the_recorded_figures_meet(change, rule, sentence):
    figures = change(calm())
    said = server_side.bottleneck(figures)
    assert said["rule"] == rule
    if sentence:
        assert said["sentence"] == sentence.format(workers=workers(figures))
    else:
        roles = figures["roles"]
        postgres = roles["postgresql"]["processes"]  # the recorded run is on PostgreSQL
        assert roles["gunicorn master"]["processes"] == 1  # and nginx's master and worker
        assert said["sentence"] == (
            f"The machine's 2 cores were 97% busy (server {45 * workers(figures) + 1}%, "
            f"PostgreSQL {postgres}%, Locust 1%, nginx 2% of a core): CPU is the limit, "
            "shared by everything the run started on one machine."
        )


def test_a_machine_busy_with_other_work_is_told_apart():
    """All cores busy, but this run's processes used little of them: another program (a
    build, another test run) was the limit, not this run's."""
    said = server_side.bottleneck(calm() | {"machine_cpu_pct": 99.0})
    assert said["rule"] == "machine, other work"
    assert said["sentence"].startswith("The machine's 2 cores were 99% busy but this run's")
    assert said["sentence"].endswith("other work on the machine was the limit.")


def test_thresholds_sit_where_the_rules_say():
    """90% of a core, 50% database time, Locust's p95 twice the server's and 20 ms above:
    just below each, the next rule down answers."""
    assert server_side.bottleneck(busy(calm(), "locust master", 89.9))["rule"] == "none"
    assert server_side.bottleneck(calm() | {"db_time_share_pct": 49.9})["rule"] == "none"
    near = calm() | {"server_p95_ms": 15.0, "client_p95_ms": 34}  # twice, but 19 ms apart
    assert server_side.bottleneck(near)["rule"] == "none"


def test_without_prometheus_the_report_says_why_in_one_sentence(tmp_path, monkeypatch):
    """PATH without ``prometheus``: the scraper does not start, the figures carry its
    reason, the sentence sits atop the server's side, and the bottleneck rules fall back
    on the processes psutil sampled."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with prometheus.scraping(tmp_path, ["127.0.0.1:1"], port=runner.free_port()) as scraper:
        assert not scraper.running
    assert scraper.reason == (
        "Prometheus is not installed (no prometheus on PATH; make prometheus installs "
        "Debian's package), so this run has no server-side metrics."
    )
    assert not (tmp_path / prometheus.FOLDER).exists()
    folder = recorded_run(tmp_path / "reports")
    summary = json.loads((folder / "summary.json").read_text())
    collected = prometheus.collect(
        scraper, start=summary["window"]["start"], end=summary["window"]["end"], steady_start=None
    )
    prometheus.write(collected, folder)
    figures = server_side.figures(summary, collected, sampler.read(folder))
    assert figures["reason"] == scraper.reason and not figures["available"]
    assert figures["server_p95_ms"] is None and figures["processes"]
    assert {p["source"] for p in figures["processes"]} == {"psutil"}
    figures["bottleneck"] = server_side.bottleneck(figures)
    summary["server_side"] = figures
    page = report.write_report(summary, folder).read_text()
    server = page[page.index('<section id="server">') : page.index('<section id="kinds">')]
    escaped = scraper.reason.replace("'", "&#x27;")
    assert f'<p class="warning" id="no-server-side">{escaped}</p>' in server
    assert "<b>CPU per process</b>" in server and "Server p95 by route" not in server
    assert scraper.reason in render_markdown(summary)


def test_the_scrape_config_scrapes_each_server_every_second_with_the_token_file():
    config = prometheus.scrape_config(["127.0.0.1:1", "127.0.0.1:2"], credentials_file="/t")
    [job] = config["scrape_configs"]
    assert job["static_configs"] == [{"targets": ["127.0.0.1:1", "127.0.0.1:2"]}]
    assert (job["metrics_path"], job["scrape_interval"]) == ("/metrics", "1s")
    assert job["authorization"] == {"type": "Token", "credentials_file": "/t"}
    assert "authorization" not in prometheus.scrape_config(["127.0.0.1:1"])["scrape_configs"][0]


def test_reads_on_replicas_are_told_from_reads_on_primaries():
    """Replica aliases are ``<store>_replicaN``; ``default`` (the tokens) is neither."""
    by_alias = [
        {"labels": {"alias": "users_replica1"}, "value": 175.0},
        {"labels": {"alias": "users"}, "value": 200.0},
        {"labels": {"alias": "orders"}, "value": 47.0},
        {"labels": {"alias": "default"}, "value": 10.0},
    ]
    reads = server_side.reads(by_alias)
    assert (reads["replica"], reads["primary"], reads["replica_share_pct"]) == (175, 247, 41.5)
    assert server_side.reads([])["replica_share_pct"] is None


def test_postgresql_backends_are_told_by_their_database():
    """Only the backends serving the run's databases count (the cluster serves others);
    the auxiliary processes have no client in their title."""
    titles = {
        "postgres: 15/main: postgres dp_users 127.0.0.1(54321) idle": "dp_users",
        "postgres: postgres dp_orders [local] SELECT": "dp_orders",
        "postgres: 15/main: checkpointer ": None,
        "postgres: autovacuum launcher": None,
    }
    for title, database in titles.items():
        found = sampler.BACKEND.search(title)
        assert (found and found["database"]) == database, title


def test_a_runs_prometheus_folder_replaces_the_previous_runs(tmp_path):
    """``prometheus/`` is one of a run's files: published in place of the previous run's
    folder, as the other files are."""
    reports, staged = tmp_path / "reports", tmp_path / "reports" / staging.STAGING
    (reports / "prometheus" / "data").mkdir(parents=True)
    (reports / "prometheus" / "data" / "old").write_text("the previous run's")
    (staged / "prometheus" / "data").mkdir(parents=True)
    (staged / "prometheus" / "data" / "new").write_text("this run's")
    (staged / prometheus.SERVER_METRICS).write_text("{}")
    staging.publish(staged, reports)
    assert [p.name for p in (reports / "prometheus" / "data").iterdir()] == ["new"]
    assert (reports / prometheus.SERVER_METRICS).exists()


@pytest.mark.skipif(prometheus.binary() is None, reason="no prometheus on PATH")
def test_a_prometheus_that_fails_to_start_is_one_sentence_too(tmp_path):
    """Its address taken: Prometheus exits, the scraper says so with its last log line,
    and nothing of it is left running."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with prometheus.scraping(tmp_path, ["127.0.0.1:1"], port=port) as scraper:
            assert not scraper.running
    assert scraper.reason.startswith("Prometheus did not start (it exited with status 1: ")
    assert scraper.reason.endswith("), so this run has no server-side metrics.")
    assert "address already in use" in scraper.reason
