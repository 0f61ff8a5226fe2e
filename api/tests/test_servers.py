"""The servers: Gunicorn (``gunicorn.conf.py``) and Granian (``data_project.granian_server``).

Each test that tests what a server does runs on both, live, on a free loopback port over a
small generated SQLite DATA_DIR: 1000 idle kept-alive connections held while lookups
answer; request bodies sent chunked are read, and bodies over the limit are the JSON 413
however they are sent; a reload (SIGHUP) and worker recycling replace every worker while
lookups keep answering; served directly, slow clients (headers trickled a byte a second,
1 MB answers not read) leave lookups under 1 s. `loadtest.faults` holds the slow clients.
"""

import http.client
import inspect
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import closing
from pathlib import Path

import gunicorn.util
import gunicorn.workers.base
import orjson
import psutil
import pytest
from django.conf import settings
from granian.utils.proxies import wrap_wsgi_with_proxy_headers
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from api.tests.conftest import SERVERS, generated_data_dir, live_server, sqlite_only
from data_project.chunked_bodies import LENGTH_REQUIRED
from data_project.granian_server import trust_proxy_headers
from loadtest import runner
from loadtest.faults import slow_clients, summarize

REPO = Path(settings.BASE_DIR)
LOOKUP = "/api/run-query/?type=get&user_id={}"
INSERT = "/api/run-query/?type=insert"
QUIET = {"GUNICORN_LOG_LEVEL": "warning"}
JSON_CONTENT = {"Content-Type": "application/json"}
USERS = 500  # of the 900 that 3000 generated rows hold

pytestmark = sqlite_only  # one generated SQLite DATA_DIR; the server is what is under test


@pytest.fixture(scope="module")
def generated_dir(tmp_path_factory) -> dict:
    return generated_data_dir(tmp_path_factory.mktemp("serversdb"), rows=3000, seed=9)


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def request(url: str, method: str, path: str, body=None, headers=None, chunked=False):
    """``(status, headers by lower-case name, body)`` of one request on a new connection;
    ``chunked`` sends ``body`` (bytes, or an iterable of them) chunked."""
    connection = http.client.HTTPConnection(*address(url), timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        response = connection.getresponse()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, headers, response.read()
    finally:
        connection.close()


def workers(process: subprocess.Popen) -> set[int]:
    """The worker processes' ids: the server's main process's children."""
    return {child.pid for child in psutil.Process(process.pid).children()}


def all_workers(process: subprocess.Popen, count: int, timeout_s: float = 30) -> set[int]:
    """`workers` once ``count`` of them run: a server answers as soon as its first worker
    does, and a busy machine may start the others seconds later."""
    deadline = time.monotonic() + timeout_s
    while len(workers(process)) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return workers(process)


class LookupClients:
    """``count`` threads looking users up on kept-alive connections until `stop`; every
    answer's status is kept. A request that finds its idle connection closed by a worker
    that stopped is sent again once on a new one, as HTTP clients retry idempotent requests
    (RFC 9110, 9.2.2); a second failure counts as status 0."""

    def __init__(self, url: str, count: int = 4):
        self.url, self.statuses, self.stopped = url, Counter(), threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(n,)) for n in range(count)]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _run(self, number: int) -> None:
        connection = http.client.HTTPConnection(*address(self.url), timeout=30)
        user = number
        while not self.stopped.is_set():
            user = user % USERS + 1
            for attempt in (1, 2):
                try:
                    connection.request("GET", LOOKUP.format(user))
                    response = connection.getresponse()
                    response.read()
                    self.statuses[response.status] += 1
                    break
                except (OSError, http.client.HTTPException):
                    connection.close()
                    connection = http.client.HTTPConnection(*address(self.url), timeout=30)
                    if attempt == 2:
                        self.statuses[0] += 1
        connection.close()


# Requests whose answers must not depend on the server: the fast path's lookups and its
# errors, DRF's views, WhiteNoise's static files (compressed when asked), the pages.
SAME_ANSWERS = [
    ("GET", LOOKUP.format(7), {}),
    ("GET", LOOKUP.format(7) + "&include=orders", {}),
    ("GET", "/api/run-query/?type=get&user_id=999999", {}),
    ("GET", "/api/run-query/?type=get&user_id=x", {}),
    ("GET", "/api/run-query/?type=get&user_id=7", {"Host": "evil.example"}),
    ("HEAD", LOOKUP.format(8), {}),
    ("GET", "/api/users/7/", {}),
    ("GET", "/api/", {"Accept": "application/json"}),
    ("GET", "/api/health/", {}),
    ("GET", "/static/api/site.css", {"Accept-Encoding": "gzip"}),
    ("GET", "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui.css", {}),
    ("GET", "/", {}),
    ("GET", "/nowhere/", {}),
    ("POST", INSERT, {"Content-Type": "text/plain"}),
]
# Set by the server itself, or by the moment (a lookup's elapsed_ms, and so its length).
SERVER_HEADERS = {"server", "date", "connection", "keep-alive", "transfer-encoding"}
MOMENT_HEADERS = {"content-length"}
ELAPSED = re.compile(rb'"elapsed_ms":[0-9.]+')


def test_both_servers_give_the_same_answers(generated_dir):
    """Status, headers (but the server's own) and body of each request in `SAME_ANSWERS`
    are the same under Gunicorn and under Granian."""
    answers = {}
    for server in SERVERS:
        with live_server({**generated_dir, **QUIET}, server) as (url, _):
            answers[server] = [  # one Host for both: absolute links carry it
                request(url, method, path, None, {"Host": "localhost", **headers})
                for method, path, headers in SAME_ANSWERS
            ]
    for sent, *each in zip(SAME_ANSWERS, *answers.values(), strict=True):
        (status, headers, body), *others = [
            (
                status,
                {k: v for k, v in headers.items() if k not in SERVER_HEADERS | MOMENT_HEADERS},
                ELAPSED.sub(b'"elapsed_ms":0', body),
            )
            for status, headers, body in each
        ]
        assert status < 500, sent
        for other in others:
            assert other == (status, headers, body), sent
    statuses = [status for status, _, _ in answers["gunicorn"]]
    assert statuses == [200, 200, 404, 400, 400, 200, 200, 200, 200, 200, 200, 200, 404, 415]


@pytest.mark.parametrize("server", SERVERS)
def test_lookups_answer_while_1000_idle_keep_alive_connections_are_held_open(generated_dir, server):
    """1000 clients each send a request and keep the connection open, idle: every one is
    answered, lookups on new connections answer at once, and after a pause the idle
    connections still serve a request (Granian's backpressure counts idle connections:
    ``GUNICORN_WORKER_CONNECTIONS`` sets it)."""
    with live_server({**generated_dir, **QUIET, "WEB_CONCURRENCY": "4"}, server) as (url, _):
        idle = []
        for _ in range(1000):
            connection = http.client.HTTPConnection(*address(url), timeout=10)
            connection.request("GET", "/api/health/")
            idle.append(connection)
        first = Counter()
        for connection in idle:
            response = connection.getresponse()
            response.read()
            first[response.status] += 1
        started = time.monotonic()
        lookups = [request(url, "GET", LOOKUP.format(user))[0] for user in range(1, 21)]
        lookups_s = time.monotonic() - started
        time.sleep(2)
        again = Counter()
        for connection in idle:
            connection.request("GET", "/api/health/")
        for connection in idle:
            response = connection.getresponse()
            response.read()
            again[response.status] += 1
            connection.close()
    assert first == {200: 1000}
    assert lookups == [200] * 20 and lookups_s < 2
    assert again == {200: 1000}


@pytest.mark.parametrize("server", SERVERS)
def test_chunked_bodies_are_read_and_bodies_over_the_limit_are_the_json_413(generated_dir, server):
    """A batch sent with ``Transfer-Encoding: chunked`` is stored as with a Content-Length;
    a body over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` is the JSON 413, chunked or not."""
    user = {"name": f"Chunked {server}", "email": f"chunked-{server}@example.com"}
    chunks = iter([orjson.dumps({"users": [user]})[:10], orjson.dumps({"users": [user]})[10:]])
    json_type = {"Content-Type": "application/json"}
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    oversize = b'{"users": [' + b" " * limit + b"]}"
    with live_server({**generated_dir, **QUIET}, server) as (url, _):
        stored = request(url, "POST", INSERT, chunks, json_type, chunked=True)
        plain = request(url, "POST", INSERT, oversize, json_type)
        chunked = request(url, "POST", INSERT, iter([oversize]), json_type, chunked=True)
    assert stored[0] == 200, stored
    assert orjson.loads(stored[2])["users"][0]["status"] == "inserted"
    for status, headers, body in (plain, chunked):
        assert status == 413 and headers["content-type"].lower() == "application/json"
        assert orjson.loads(body)["error"].startswith("request body larger than")


def test_a_server_that_cannot_end_a_chunked_body_answers_411(generated_dir):
    """Django's ``runserver`` (wsgiref) does not decode chunked bodies: the JSON 411,
    never an insert of an empty batch."""
    port = runner.free_port()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=REPO,
        env={**os.environ, **generated_dir},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        runner.wait_healthy(f"http://127.0.0.1:{port}", process)
        status, _, body = request(
            f"http://127.0.0.1:{port}",
            "POST",
            INSERT,
            iter([b'{"users": []}']),
            {"Content-Type": "application/json"},
            chunked=True,
        )
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert (status, orjson.loads(body)) == (411, {"error": LENGTH_REQUIRED, "details": {}})


@pytest.mark.parametrize("server", SERVERS)
def test_a_reload_replaces_every_worker_while_lookups_keep_answering(generated_dir, server):
    """SIGHUP: new workers start and the old ones stop gracefully; no lookup fails."""
    env = {**generated_dir, **QUIET, "WEB_CONCURRENCY": "2"}
    with live_server(env, server) as (url, process), LookupClients(url) as clients:
        before = all_workers(process, 2)
        time.sleep(1)
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (workers(process) & before or not workers(process)):
            time.sleep(0.2)
        after = all_workers(process, 2)
        time.sleep(1)
    assert len(before) == 2 and len(after) == 2 and not before & after
    assert set(clients.statuses) == {200} and clients.statuses[200] > 100, clients.statuses


@pytest.mark.parametrize("server", SERVERS)
def test_workers_are_recycled_while_lookups_keep_answering(generated_dir, server):
    """Gunicorn replaces a worker after ``GUNICORN_MAX_REQUESTS`` requests, Granian after
    ``GRANIAN_WORKERS_LIFETIME_SECONDS`` (60 s at least, Granian's bound: the slowest test
    here): every worker is replaced, no lookup fails."""
    env = {**generated_dir, **QUIET, "WEB_CONCURRENCY": "2"}
    env |= {"GUNICORN_MAX_REQUESTS": "200", "GUNICORN_MAX_REQUESTS_JITTER": "0"}
    env |= {"GRANIAN_WORKERS_LIFETIME_SECONDS": "60"}
    with live_server(env, server) as (url, process), LookupClients(url) as clients:
        first = all_workers(process, 2)
        deadline = time.monotonic() + 100
        while time.monotonic() < deadline and workers(process) & first:
            time.sleep(0.2)
        replaced = not workers(process) & first
        time.sleep(1)  # the new workers serve
    assert replaced, "a worker outlived its lifetime"
    assert set(clients.statuses) == {200} and clients.statuses[200] > 400, clients.statuses


# How each way of serving directly starts the server: the README's direct start (Gunicorn
# finds ./gunicorn.conf.py itself), and what make serve and loadtest with PROXY= run.
DIRECT = {
    "gunicorn data_project.wsgi": [sys.executable, "-m", "gunicorn", "data_project.wsgi"],
    "make serve, PROXY=": runner.SERVERS[runner.GUNICORN],
    "make serve, PROXY= with SERVER=granian": runner.SERVERS[runner.GRANIAN],
}


@pytest.mark.parametrize("way", DIRECT)
def test_served_directly_slow_clients_leave_lookups_under_a_second(generated_dir, way):
    """8 connections trickling their headers a byte a second and 8 asking for a 1 MB
    answer they never read, with no proxy in front: lookups stay 200s under 1 s.
    (Gunicorn's workers have 16 threads when no proxy is in front: gunicorn.conf.py.)"""
    bind = f"127.0.0.1:{runner.free_port()}"
    environment = {**os.environ, **generated_dir, **QUIET, "BIND": bind}
    environment.pop("NUM_PROXIES", None)
    process = subprocess.Popen(DIRECT[way], cwd=REPO, env=environment)
    try:
        runner.wait_healthy(f"http://{bind}", process)
        samples = slow_clients(f"http://{bind}", ("headers", "unread"), seconds=(2, 4))
    finally:
        process.terminate()
        process.wait(timeout=40)
    summary = summarize(samples)
    during = summary["during"]["lookup"]
    assert during["statuses"] == {200: during["requests"]} and during["requests"] > 100, summary
    assert during["max_s"] < 1, summary


@pytest.mark.parametrize("server", SERVERS)
def test_make_serve_runs_the_command_the_live_tests_start(server):
    """``make serve`` (and ``SERVER=granian``) starts the command proven above."""
    run = subprocess.run(
        ["make", "-n", "--no-print-directory", "serve", f"SERVER={server}", "BIND=127.0.0.1:9"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    command = run.stdout.strip().splitlines()[-1]
    expected = " ".join(part.removeprefix(f"{REPO}/") for part in runner.SERVERS[server][1:])
    assert command.startswith("BIND=127.0.0.1:9 ") and command.endswith(expected), command
    assert re.search(r"python3?\S* -m ", command), command


# --- the scheme comes from the proxy alone -------------------------------------------

# What a client says to pass for HTTPS: every header some proxy uses for it.
CLAIMS_HTTPS = {
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Ssl": "on",
    "X-Forwarded-Protocol": "ssl",
    "X-Forwarded-For": "203.0.113.9",
}
SECURED = ("/api/run-query/?type=get&product_id=1", "/api/products/1/")  # fast path, Django's


def production(generated_dir: dict, **extra: str) -> dict:
    """Production as deployed behind TLS: HTTPS redirects and HSTS on."""
    return {
        **generated_dir,
        **QUIET,
        "DJANGO_ENV": "production",
        "DJANGO_SECRET_KEY": "x" * 50 + "-a-long-random-test-key",
        "NUM_PROXIES": "0",
        "FORWARDED_ALLOW_IPS": "",  # its default, from NUM_PROXIES
        **extra,
    }


def from_address(url: str, path: str, source: str, headers: dict) -> tuple[int, dict]:
    """``(status, headers by lower-case name)`` of a GET sent from loopback address ``source``."""
    connection = http.client.HTTPConnection(*address(url), timeout=30, source_address=(source, 0))
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status, {name.lower(): value for name, value in response.getheaders()}
    finally:
        connection.close()


def assert_plain_http(url: str, source: str = "127.0.0.1") -> None:
    """A client claiming HTTPS is redirected to it and gets no HSTS, on both paths."""
    for path in SECURED:
        status, headers = from_address(url, path, source, CLAIMS_HTTPS)
        assert status == 301 and headers["location"].startswith("https://"), (path, status)
        assert "strict-transport-security" not in headers, path


@pytest.mark.parametrize("server", SERVERS)
def test_served_directly_a_clients_forwarded_proto_is_ignored(generated_dir, server):
    """No proxy in front: ``X-Forwarded-Proto: https`` (and its cousins) from a client
    still gets the HTTPS redirect and no HSTS."""
    with live_server(production(generated_dir), server) as (url, _):
        assert_plain_http(url)


@pytest.mark.parametrize("server", SERVERS)
def test_behind_a_proxy_only_the_proxys_forwarded_proto_counts(generated_dir, server):
    """``NUM_PROXIES=1``, the proxy at 127.0.0.1 (``FORWARDED_ALLOW_IPS``' default): from
    127.0.0.2, which is not the proxy, the header is ignored; from the proxy it is HTTPS."""
    with live_server(production(generated_dir, NUM_PROXIES="1"), server) as (url, _):
        assert_plain_http(url, source="127.0.0.2")
        for path in SECURED:
            status, headers = from_address(url, path, "127.0.0.1", CLAIMS_HTTPS)
            assert status == 200 and "strict-transport-security" in headers, (path, status)


@pytest.mark.parametrize("server", SERVERS)
def test_through_nginx_a_clients_forwarded_proto_is_replaced(generated_dir, server):
    """deploy/nginx.conf sets ``X-Forwarded-Proto`` to its own scheme (plain HTTP here) and
    drops the other claims: the client's ``https`` does not reach the server."""
    env = production(generated_dir, NUM_PROXIES="1")  # as runner.serve(proxy=True) sets it
    with live_server(env, server, proxy=True) as (url, _):
        assert_plain_http(url)


# --- errors answered before Django: the API's envelope where the stack allows ----------

UNREADABLE = {
    "a request line too long": b"GET /api/health/?x=" + b"a" * 5000 + b" HTTP/1.1\r\n",
    "too many header fields": b"GET /api/health/ HTTP/1.1\r\n"
    + b"".join(b"X-H%d: 1\r\n" % i for i in range(150)),
    "a header line too long": b"GET /api/health/ HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n",
    "no request line": b"GARBAGE\r\n",
    "a bad chunk": b"POST /api/run-query/?type=insert HTTP/1.1\r\nContent-Type: application/json"
    b"\r\nTransfer-Encoding: chunked\r\n",
}
BAD_CHUNK_BODY = b"zz\r\n{}\r\n0\r\n\r\n"


def raw_answer(url: str, request: bytes) -> tuple[int, dict, bytes]:
    """``(status, headers by lower-case name, body)`` of bytes sent as they are."""
    if not request.startswith(b"GARBAGE"):
        request += b"Host: localhost\r\nConnection: close\r\n"
    request += b"\r\n" + (BAD_CHUNK_BODY if b"chunked" in request else b"")
    with socket.create_connection(address(url), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (h.partition(":") for h in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize(
    ("server", "proxy"),
    [("gunicorn", False), ("gunicorn", True), ("granian", True)],
    ids=["gunicorn", "nginx+gunicorn", "nginx+granian"],
)
def test_requests_refused_before_django_get_the_json_envelope(generated_dir, server, proxy):
    """What Gunicorn (gunicorn.conf.py's `write_json_error`) or nginx (deploy/nginx.conf's
    error pages) refuse before Django sees a request is a JSON envelope with its status:
    400, 414, 431. Behind nginx Granian's own 431 for over 100 header fields stays an empty
    body (Granian has no hook for it)."""
    env = {**generated_dir, **QUIET, "WEB_CONCURRENCY": "1"}
    with live_server(env, server, proxy=proxy) as (url, _):
        for name, request in UNREADABLE.items():
            status, headers, body = raw_answer(url, request)
            assert status in (400, 414, 431), (name, status)
            if server == "granian" and name == "too many header fields":
                assert status == 431
                continue
            assert headers["content-type"] == "application/json", (name, headers)
            assert set(orjson.loads(body)) == {"error", "details"}, (name, body)


def test_gunicorn_writes_its_error_pages_with_the_function_gunicorn_conf_replaces():
    """gunicorn.conf.py replaces ``gunicorn.util.write_error``: the worker still calls it,
    with the arguments `write_json_error` takes."""
    assert "util.write_error(client, status_int, reason, mesg)" in inspect.getsource(
        gunicorn.workers.base.Worker.handle_error
    )
    assert list(inspect.signature(gunicorn.util.write_error).parameters) == [
        "sock",
        "status_int",
        "reason",
        "mesg",
    ]


# --- durability: what a crash of the server leaves --------------------------------------


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
@pytest.mark.parametrize("server", SERVERS)
def test_a_sigkilled_server_loses_no_acknowledged_row(generated_dir, tmp_path, server, synchronous):
    """Insert batches acknowledged (200, ids given), then every process of the server
    SIGKILLed at once, with no chance to close a file: each acknowledged user is in the
    SQLite file when it is opened again (README, "Durability": a process crash loses
    nothing acknowledged, under ``synchronous`` NORMAL as under FULL; only FULL also
    survives a power loss, which no test here can cause)."""
    data_dir = tmp_path / "data"
    shutil.copytree(generated_dir["DATA_DIR"], data_dir)
    bind = f"127.0.0.1:{runner.free_port()}"
    env = {**os.environ, **QUIET, "DATA_DIR": str(data_dir), "BIND": bind}
    env |= {"SQLITE_SYNCHRONOUS": synchronous, "WEB_CONCURRENCY": "2"}
    process = subprocess.Popen(runner.SERVERS[server], cwd=REPO, env=env, start_new_session=True)
    acknowledged = []
    try:
        url = f"http://{bind}"
        runner.wait_healthy(url, process)
        for batch in range(20):
            users = [
                {"name": f"D{batch}.{i}", "email": f"d{batch}.{i}@example.com"} for i in range(10)
            ]
            status, _, body = request(
                url, "POST", INSERT, orjson.dumps({"users": users}), JSON_CONTENT
            )
            assert status == 200, body
            acknowledged += [record["id"] for record in orjson.loads(body)["users"]]
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the server and every worker, at once
        process.wait(timeout=30)
    with closing(sqlite3.connect(data_dir / "users.sqlite3")) as connection:
        stored = {row[0] for row in connection.execute("SELECT id FROM users WHERE name LIKE 'D%'")}
    assert len(acknowledged) == 200 and set(acknowledged) <= stored


PROXIES = ("127.0.0.1", "::1", "10.1.0.0/16")
# Peers and forwarded hosts: proxies, clients, an address inside the proxies' network,
# and what a client may write instead of an address.
HOSTS = st.sampled_from(
    ["127.0.0.1", "::1", "10.1.2.3", "10.2.0.1", "203.0.113.9", "2001:db8::1", "", "x", "unix:"]
)


@given(
    remote=st.one_of(st.none(), HOSTS),
    forwarded_for=st.one_of(
        st.none(), st.lists(HOSTS, max_size=4).map(", ".join), st.text(max_size=12)
    ),
    proto=st.one_of(st.none(), st.sampled_from(["http", "https", "HTTPS", "ws", "", "ftp"])),
)
@hypothesis_settings(max_examples=300, deadline=None)
def test_granians_proxy_headers_are_trusted_as_granians_own_wrapper_trusts_them(
    remote, forwarded_for, proto
):
    """`trust_proxy_headers` (which remembers its answers per address) leaves the same
    ``REMOTE_ADDR`` and ``wsgi.url_scheme`` as Granian's ``wrap_wsgi_with_proxy_headers``
    for any peer, ``X-Forwarded-For`` and ``X-Forwarded-Proto``."""
    environ = {"wsgi.url_scheme": "http"}
    for key, value in (
        ("REMOTE_ADDR", remote),
        ("HTTP_X_FORWARDED_FOR", forwarded_for),
        ("HTTP_X_FORWARDED_PROTO", proto),
    ):
        if value is not None:
            environ[key] = value
    seen = []

    def application(environ, start_response):
        seen.append((environ.get("REMOTE_ADDR"), environ["wsgi.url_scheme"]))
        return []

    ours = trust_proxy_headers(application, PROXIES)
    granians = wrap_wsgi_with_proxy_headers(application, trusted_hosts=list(PROXIES))
    for wrapped in (ours, ours, granians):  # twice: the second from the remembered answers
        wrapped(dict(environ), None)
    assert seen[0] == seen[1] == seen[2]
