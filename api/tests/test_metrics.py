"""``/metrics`` (`api.metrics`): right across workers, bounded, protected, off by a setting.

Live, on both servers with 4 workers: the request counters add up, per route, key, method
and status class, to the requests sent from 8 threads; the insert counters to the records
the database stored and the batches refused; a SIGKILLed worker's counts survive it. In
process: label values stay within fixed sets whatever a client sends (property test),
the breakers, bulkheads and query timer record what happened, and the endpoint needs the
``metrics`` scope in production, is open in development and gone with ``METRICS=0``.
"""

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from time import perf_counter
from unittest import mock

import orjson
import pytest
from django.db import DatabaseError, OperationalError, connections
from django.test import Client as HttpClient
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, Summary, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from api.db import query_timing
from api.db.breakers import READ_TRANSIENT, StoreBreaker
from api.db.open_connections import open_by_alias
from api.db.query_timing import observed, time_query
from api.metrics import BREAKER_OPEN, BREAKER_TRIPS, QUERY_SECONDS, REQUEST_SECONDS
from api.metrics import wsgi as metrics_wsgi
from api.metrics.batching import BatchedHistogram, BatchedSummary, flush_all
from api.metrics.exposition import MASTER, WORKER
from api.metrics.wsgi import METHODS, STATIC, UNMATCHED, RequestMetrics, label_request
from api.tests.conftest import SERVERS, generated_data_dir, live_server, manage, sqlite_only
from api.tests.test_access import token
from api.tests.test_servers import QUIET, all_workers, request

ROUTE = "api/run-query/"
JSON_CONTENT = {"Content-Type": "application/json"}


def samples(body: str) -> dict[tuple[str, frozenset], float]:
    """``{(sample name, labels): value}`` of a Prometheus text exposition."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def scrape(url: str, headers: dict | None = None) -> dict[tuple[str, frozenset], float]:
    status, found, body = request(url, "GET", "/metrics", headers=headers)
    assert status == 200, body
    assert found["content-type"].startswith("text/plain")
    return samples(body.decode())


def request_counts(scraped: dict) -> Counter:
    """Requests counted per ``(route, key, method, status)``."""
    counts: Counter = Counter()
    for (name, labels), value in scraped.items():
        if name == "dp_http_request_duration_seconds_count":
            found = dict(labels)
            counts[found["route"], found["key"], found["method"], found["status"]] += value
    return counts


def labelled(scraped: dict, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(
        value for (found, have), value in scraped.items() if found == name and wanted <= have
    )


def expected_requests(answers: list) -> Counter:
    """Requests sent per ``(route, key, method, status class)``, from the answers."""
    sent: Counter = Counter()
    for (method, path, _), (status, _, _) in answers:
        if path.startswith("/api/run-query/"):
            route = ROUTE
            key = "insert" if method == "POST" else path.split("&")[1].split("=")[0]
        elif path.startswith("/api/users/"):
            route, key = "api/users/<id:pk>/", ""
        else:
            route, key = "unmatched", ""
        sent[route, key, method, f"{status // 100}xx"] += 1
    return sent


def counted_as(scraped: dict, sent: Counter) -> bool:
    counted = request_counts(scraped)
    return {labels: counted[labels] for labels in sent} == dict(sent)


def scrape_until(url: str, done, timeout_s: float = 5.0) -> dict:
    """Scrape until ``done(scraped)`` or ``timeout_s`` passed; the last scrape."""
    deadline = time.monotonic() + timeout_s
    while True:
        scraped = scrape(url)
        if done(scraped) or time.monotonic() > deadline:
            return scraped
        time.sleep(0.25)


@pytest.fixture(scope="module")
def generated_dir(tmp_path_factory) -> dict:
    return generated_data_dir(tmp_path_factory.mktemp("metricsdb"), rows=3000, seed=11)


def users_stored(data_dir: str, prefix: str) -> int:
    with sqlite3.connect(Path(data_dir) / "users.sqlite3") as db:
        return db.execute(
            "SELECT count(*) FROM users WHERE email LIKE ?", (f"{prefix}%",)
        ).fetchone()[0]


@sqlite_only
@pytest.mark.parametrize("server", SERVERS)
def test_counters_from_four_workers_add_up_to_what_was_sent_and_stored(generated_dir, server):
    """Lookups (found, not found, bad), Django's routes, a 404 and insert batches with
    stored and rejected records, from 8 threads: every request is counted once under its
    labels, every record under its outcome, and a SIGKILLed worker's counts stay."""
    prefix = f"metrics-{server}-"
    batches = [
        [{"name": "Metrics", "email": f"{prefix}{n}-{i}@example.com"} for i in range(4)]
        + [{"name": "Metrics", "email": f"{prefix}{n}-0@example.com"}]  # repeats the first
        + [{"name": "", "email": "not an e-mail"}]  # refused by the field rules
        for n in range(12)
    ]
    plan = (
        [("GET", f"/api/run-query/?type=get&user_id={n}", None) for n in range(1, 41)]
        + [("GET", "/api/run-query/?type=get&user_id=999999", None)] * 5
        + [("GET", "/api/run-query/?type=get&product_id=1", None)] * 7
        + [("GET", "/api/run-query/?type=get&user_id=x", None)] * 3
        + [("GET", f"/api/users/{n}/", None) for n in range(1, 9)]
        + [("GET", "/no/such/page", None)] * 4
        + [("POST", "/api/run-query/?type=insert", {"users": batch}) for batch in batches]
    )

    def send(item):
        method, path, body = item
        payload = None if body is None else orjson.dumps(body)
        return item, request(url, method, path, payload, JSON_CONTENT if body else None)

    env = {**generated_dir, **QUIET, "WEB_CONCURRENCY": "4"}
    with live_server(env, server) as (url, process):
        pids = all_workers(process, 4)
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(send, plan))
        sent = expected_requests(answers)
        # Each worker adds its observations every half second (api.metrics.batching).
        first = scrape_until(url, lambda scraped: counted_as(scraped, sent))
        victim = sorted(pids)[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while victim in all_workers(process, 4) and time.monotonic() < deadline:
            time.sleep(0.2)
        after_kill = scrape(url)

    records: Counter = Counter()
    for (_, _, body), (status, _, answer) in answers:
        if body is not None:
            assert status == 200, answer
            for result in orjson.loads(answer)["users"]:
                records[result["status"]] += 1
    assert {s for *_, s in sent} == {"2xx", "4xx"}  # the plan reaches both classes

    for scraped in (first, after_kill):
        counted = request_counts(scraped)
        assert counted_as(scraped, sent), ({labels: counted[labels] for labels in sent}, sent)
        others = {labels[0] for labels in counted if labels not in sent}
        assert others <= {"api/health/", "metrics"}  # the readiness probe and the scrapes
        assert labelled(scraped, "dp_insert_records_total", store="users", outcome="inserted") == (
            users_stored(generated_dir["DATA_DIR"], prefix)
        )
        assert records["inserted"] == 12 * 4
        assert (
            labelled(scraped, "dp_insert_records_total", outcome="rejected")
            == records["rejected"]
            == 12 * 2
        )
        assert labelled(scraped, "dp_insert_batches_total", status="200") == len(batches)
        assert labelled(scraped, "dp_db_query_seconds_count", alias="users") >= 40 + 5 + 8
        assert labelled(scraped, "dp_db_query_seconds_count", alias="products") >= 7
    roles = Counter(
        dict(labels)["role"] for (name, labels) in first if name == "process_resident_memory_bytes"
    )
    assert roles == {WORKER: 4, MASTER: 1}


def metric_client(settings, **overrides):
    for name, value in overrides.items():
        setattr(settings, name, value)
    return HttpClient()


@pytest.mark.django_db(databases="__all__")
def test_metrics_are_open_in_development(settings):
    client = metric_client(settings, API_TOKENS_REQUIRED=False)
    client.get("/api/run-query/?type=get&product_id=1")
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer["Content-Type"].startswith("text/plain; version=")
    assert b"dp_http_request_duration_seconds" in answer.content
    assert b"process_cpu_seconds_total{" in answer.content


@pytest.mark.django_db(databases="__all__")
def test_in_production_metrics_need_a_token_with_the_metrics_scope(settings):
    client = metric_client(settings, API_TOKENS_REQUIRED=True)
    keys = {scope: token(f"metrics-{scope}", scope) for scope in ("read", "metrics")}
    anonymous = client.get("/metrics")
    reader = client.get("/metrics", HTTP_AUTHORIZATION=f"Token {keys['read']}")
    scraper = client.get("/metrics", HTTP_AUTHORIZATION=f"Token {keys['metrics']}")
    assert anonymous.status_code == 401 and anonymous.json()["error"]
    assert reader.status_code == 403 and reader.json()["error"]
    assert scraper.status_code == 200 and b"dp_breaker_open" in scraper.content


@pytest.mark.django_db(databases="__all__")
def test_metrics_off_is_a_404(settings):
    answer = metric_client(settings, METRICS=False).get("/metrics")
    assert answer.status_code == 404
    assert answer.json()["error"]


def served(metrics: RequestMetrics, application, method: str, path: str) -> None:
    """``application`` served through ``metrics`` for one request."""

    def start_response(status_line, headers, exc_info=None):
        return lambda data: None

    environ = {"REQUEST_METHOD": method, "PATH_INFO": path}
    metrics.serve(application, environ, start_response, perf_counter())


class LabelsSeen:
    """Stands in for `api.metrics.REQUESTS` to see the labels a request is counted under
    (rendering the whole registry per example took a quarter of a second)."""

    def __init__(self):
        self.labels: list[tuple] = []

    def observe(self, labels: tuple, value: float) -> None:
        self.labels.append(labels)


@given(
    method=st.text(max_size=12),
    path=st.text(max_size=30).map(lambda tail: "/" + tail),
    answered=st.sampled_from(["200 OK", "404 Not Found", "503 Service Unavailable", "302 Found"]),
)
@hypothesis_settings(max_examples=200, deadline=None)
def test_label_values_come_from_fixed_sets_whatever_a_client_sends(method, path, answered):
    """A client chooses the method and the path; the labels it gets are HTTP's methods or
    ``other``, a route a path named (here none: ``unmatched``/``static``) and a class."""

    def app(environ, start_response):
        start_response(answered, [])
        return [b""]

    seen = LabelsSeen()
    with mock.patch.object(metrics_wsgi, "REQUESTS", seen):
        served(RequestMetrics(static_prefix="/static/"), app, method, path)
    ((route, key, sent_method, status),) = seen.labels
    assert route in (STATIC, UNMATCHED) and key == ""
    assert sent_method in METHODS | {"other"}
    assert status == f"{answered[0]}xx"


def test_a_named_route_is_counted_under_its_pattern_and_an_exception_as_5xx():
    def app(environ, start_response):
        label_request(environ, "api/users/<id:pk>/")
        raise RuntimeError("a bug")

    child = REQUEST_SECONDS.labels("api/users/<id:pk>/", "", "GET", "5xx")
    flush_all()
    before = child._sum.get()
    with pytest.raises(RuntimeError):
        served(RequestMetrics(static_prefix="/static/"), app, "GET", "/api/users/1/")
    flush_all()
    assert child._sum.get() > before


def test_batched_observations_render_as_the_clients_own_observe_would():
    """`api.metrics.batching` adds a batch through the client's value objects: the
    exposition equals that of the same observations made one by one with ``observe``."""
    registry_one, registry_batched = CollectorRegistry(), CollectorRegistry()
    buckets = REQUEST_SECONDS._upper_bounds
    one = Histogram("h_one", "h", ["a"], buckets=buckets, registry=registry_one)
    batched = Histogram("h_one", "h", ["a"], buckets=buckets, registry=registry_batched)
    summary_one = Summary("s_one", "s", ["a"], registry=registry_one)
    summary_batched = Summary("s_one", "s", ["a"], registry=registry_batched)
    values = [0.0, 0.0005, 0.0007, 0.003, 0.3, 2.5, 11.0, 0.0005, 99.0]
    histogram_batch, summary_batch = BatchedHistogram(batched), BatchedSummary(summary_batched)
    for value in values:
        one.labels("x").observe(value)
        summary_one.labels("x").observe(value)
        histogram_batch.observe(("x",), value)
        summary_batch.observe("x", value)
    histogram_batch.flush()
    summary_batch.flush()

    def rendered(registry):  # but the creation times, which differ by construction
        found = samples(generate_latest(registry).decode())
        return {key: value for key, value in found.items() if not key[0].endswith("_created")}

    assert rendered(registry_batched) == rendered(registry_one)
    assert len(rendered(registry_one)) == len(buckets) + 2 + 2


def test_a_breaker_counts_a_trip_when_it_opens_not_while_it_stays_open():
    breaker = StoreBreaker("users", READ_TRANSIENT, cooldown_s=10, access="read")
    trips = BREAKER_TRIPS.labels("users", "read")
    gauge = BREAKER_OPEN.labels("users", "read")
    before = trips._value.get()
    timeout = OperationalError("canceling statement due to statement timeout")
    breaker.failed(timeout)
    breaker.failed(timeout)
    assert trips._value.get() == before + 1 and gauge._value.get() == 1
    breaker.succeeded()
    assert gauge._value.get() == 0


@pytest.mark.django_db(databases="__all__")
def test_the_query_timer_alone_does_not_count_as_observing(settings):
    """With the timer first among the wrappers, the fast paths stay on the DB-API cursor;
    a caller's wrapper sends them through Django's cursor, and leaves the timer in place."""
    connection = connections["users"]
    connection.ensure_connection()
    assert connection.execute_wrappers[:1] == [time_query]
    assert not observed(connection)
    seen = []
    with connection.execute_wrapper(lambda execute, *args: seen.append(1) or execute(*args)):
        assert observed(connection)
        connection.cursor().execute("SELECT 1")
    assert seen and connection.execute_wrappers == [time_query]
    query_timing.install(connection=connection)  # again: once only
    assert connection.execute_wrappers == [time_query]


def test_a_failing_statement_counts_its_time():
    child = QUERY_SECONDS.labels("products")
    flush_all()
    before = child._count.get()

    def fails():
        raise DatabaseError("gone")

    assert query_timing.TIMING[0]  # the app's start-up turned it on (METRICS)
    with pytest.raises(DatabaseError):
        query_timing.timed("products", fails)
    flush_all()
    assert child._count.get() == before + 1


def test_a_server_removes_the_metric_directory_it_made(tmp_path):
    """``metrics_dir.prepare``: a directory it made goes when the server exits; one given
    is emptied of earlier runs' files and kept."""
    given = tmp_path / "given"
    given.mkdir()
    (given / "counter_1.db").write_bytes(b"old")
    script = (
        "import os, sys; from data_project import metrics_dir;"
        "print(metrics_dir.prepare(True)); sys.stdout.flush()"
    )
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    made = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert not Path(made.stdout.strip()).exists()
    kept = subprocess.run(
        [sys.executable, "-c", script],
        env={**env, "PROMETHEUS_MULTIPROC_DIR": str(given)},
        capture_output=True,
        text=True,
    )
    assert kept.stdout.strip() == str(given) and given.is_dir()
    assert not list(given.glob("*.db"))


def test_create_token_offers_the_metrics_scope(tmp_path):
    done = manage("create_token", "--help", env={"DATA_DIR": str(tmp_path)})
    assert "metrics" in done.stdout


@pytest.mark.django_db(databases="__all__")
def test_open_connections_are_counted_per_alias_and_a_close_uncounts_one():
    """In a thread of its own, as a worker's thread holds its connections (the test's
    own are inside its transaction, which a close leaves open)."""
    counted = []

    def connect_then_close():
        connection = connections["products"]
        connection.ensure_connection()
        counted.append(open_by_alias()["products"])
        connection.close()
        counted.append(open_by_alias()["products"])

    before = open_by_alias()["products"]
    thread = threading.Thread(target=connect_then_close)
    thread.start()
    thread.join()
    assert counted == [before + 1, before]
