"""Fault scenarios against a live server: what survives, and how fast the rest answers.

`locked_store` runs lookup clients (users) and insert clients (orders, which need the
``orders`` store) against a server for a before, a during and an after phase; during the
middle one another connection holds the ``orders`` SQLite file's write lock, or, on
PostgreSQL, an ``ACCESS EXCLUSIVE`` lock on its ``orders`` table (`hold_lock`). Each request
is recorded as `Sample` (the phase it was sent in, kind, status, seconds); `summarize`
gives per phase and kind the count, statuses and latency percentiles. ``bench/faults.py``
prints them; the suite asserts on them (``api/tests/test_bulkheads.py``).

`restarted_server` runs lookups and insert batches (each with an ``Idempotency-Key``,
sent again after a 503) while the database server is stopped and started again;
`restart_figures` gives its 503 window and recovery time, and `restart_records` compares
every record acknowledged with what the stores hold (``api/tests/test_restart.py``).
"""

import http.client
import itertools
import json
import random
import socket
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

PHASES = ("before", "during", "after")


@dataclass(frozen=True)
class Sample:
    phase: str
    kind: str
    status: int
    seconds: float
    started: float = 0.0  # time.monotonic() when sent


def _client_loop(
    host: str, port: int, stop: threading.Event, phase: list[str], request: Callable, out: list
) -> None:
    connection = http.client.HTTPConnection(host, port, timeout=30)
    while not stop.is_set():
        kind, method, path, body = request()
        started, started_in = time.monotonic(), phase[0]
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            connection.close()
            connection = http.client.HTTPConnection(host, port, timeout=30)
            status = 0
        out.append(Sample(started_in, kind, status, time.monotonic() - started, started))
    connection.close()


@contextmanager
def hold_lock(orders_db: Path | str) -> Iterator[None]:
    """Hold the orders store's lock for the block: the SQLite file's write lock
    (``BEGIN IMMEDIATE``), or for a ``postgres://`` URL an ``ACCESS EXCLUSIVE`` lock on
    its ``orders`` table, which stops its reads as well as its writes."""
    if str(orders_db).startswith(("postgres://", "postgresql://")):
        with psycopg.connect(str(orders_db), autocommit=True) as blocker:
            blocker.execute("BEGIN")
            blocker.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
            yield
            blocker.execute("ROLLBACK")
        return
    with closing(sqlite3.connect(orders_db, isolation_level=None)) as blocker:
        blocker.execute("BEGIN IMMEDIATE")
        yield
        blocker.execute("ROLLBACK")


def locked_store(
    url: str,
    orders_db: Path | str,
    *,
    lookup_clients: int = 8,
    insert_clients: int = 16,
    seconds: tuple[float, float, float] = (3.0, 8.0, 3.0),
) -> list[Sample]:
    """Run the locked-orders scenario against ``url`` (``orders_db``: the orders store's
    SQLite file or PostgreSQL URL, locked by `hold_lock`); every request's `Sample`."""
    host, port = url.removeprefix("http://").split(":")
    with closing(http.client.HTTPConnection(host, int(port), timeout=30)) as connection:
        connection.request("GET", "/api/stats/")
        stats = json.loads(connection.getresponse().read())
    users = (stats["users"]["min_id"], stats["users"]["max_id"])
    products = (stats["products"]["min_id"], stats["products"]["max_id"])

    def lookup():
        return "lookup", "GET", f"/api/run-query/?type=get&user_id={random.randint(*users)}", None

    def insert():
        order = {"user_id": users[0], "product_id": products[0], "quantity": 1}
        return "insert", "POST", "/api/run-query/?type=insert", json.dumps({"orders": [order]})

    stop, phase, samples = threading.Event(), ["before"], []
    clients = [
        threading.Thread(target=_client_loop, args=(host, int(port), stop, phase, request, samples))
        for request, count in ((lookup, lookup_clients), (insert, insert_clients))
        for _ in range(count)
    ]
    for client in clients:
        client.start()
    try:
        time.sleep(seconds[0])
        with hold_lock(orders_db):
            phase[0] = "during"
            time.sleep(seconds[1])
            phase[0] = "after"
        time.sleep(seconds[2])
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=60)
    return samples


def percentile(values: list[float], share: float) -> float:
    """The value below which ``share`` of ``values`` lie (nearest rank); 0.0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def summarize(samples: list[Sample]) -> dict[str, dict[str, dict]]:
    """``{phase: {kind: {"requests", "statuses", "p50_s", "p95_s", "p99_s", "max_s",
    "under_1s"}}}`` from `locked_store`'s samples."""
    summary: dict[str, dict[str, dict]] = {}
    for phase in PHASES:
        for kind in ("lookup", "insert"):
            chosen = [s for s in samples if s.phase == phase and s.kind == kind]
            times = [s.seconds for s in chosen]
            summary.setdefault(phase, {})[kind] = {
                "requests": len(chosen),
                "statuses": dict(Counter(s.status for s in chosen)),
                "p50_s": percentile(times, 0.50),
                "p95_s": percentile(times, 0.95),
                "p99_s": percentile(times, 0.99),
                "max_s": max(times, default=0.0),
                "under_1s": sum(t < 1 for t in times) / len(times) if times else 0.0,
            }
    return summary


SLOW_MODES = ("headers", "body", "unread")


def _slow_client(host: str, port: int, mode: str, stop: threading.Event, big_path: str) -> None:
    """One misbehaving connection until ``stop``: trickles its headers or its body a byte a
    second, or asks for a large response and never reads it."""
    while not stop.is_set():
        try:
            with socket.create_connection((host, port), timeout=60) as sock:
                if mode == "unread":
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                    request = f"GET {big_path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
                    sock.sendall(request)
                    stop.wait(3600)
                    return
                if mode == "headers":
                    head = f"GET /api/health/ HTTP/1.1\r\nHost: {host}\r\nX-Slow: "
                    sock.sendall(head.encode())
                    trickle = b"a" * 3600
                else:
                    head = (
                        f"POST /api/run-query/?type=insert HTTP/1.1\r\nHost: {host}\r\n"
                        "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
                    )
                    sock.sendall(head.encode())
                    trickle = b" " * 3600
                for byte in trickle:
                    if stop.wait(1.0):
                        return
                    sock.sendall(bytes([byte]))
        except OSError:
            stop.wait(0.5)


def slow_clients(
    url: str,
    mode: str | tuple[str, ...],
    *,
    slow: int = 16,
    lookup_clients: int = 8,
    seconds: tuple[float, float] = (3.0, 8.0),
) -> list[Sample]:
    """Lookups before and while ``slow`` connections misbehave in ``mode``; their `Sample`s.

    ``mode``: ``headers`` (a request's headers a byte a second), ``body`` (a POST body a
    byte a second), ``unread`` (a response of about 1 MB that the client never reads), or
    a tuple of them, taken in turn: ``("headers", "unread")`` with ``slow=16`` is 8 of each.
    """
    modes = (mode,) if isinstance(mode, str) else mode
    host, port = url.removeprefix("http://").split(":")
    with closing(http.client.HTTPConnection(host, int(port), timeout=30)) as connection:
        connection.request("GET", "/api/stats/")
        stats = json.loads(connection.getresponse().read())
    users = (stats["users"]["min_id"], stats["users"]["max_id"])
    big_path = f"/api/run-query/?type=get&user_id={users[0]}&count=1000&include=orders"

    def lookup():
        return "lookup", "GET", f"/api/run-query/?type=get&user_id={random.randint(*users)}", None

    stop, slow_stop, phase, samples = threading.Event(), threading.Event(), ["before"], []
    clients = [
        threading.Thread(target=_client_loop, args=(host, int(port), stop, phase, lookup, samples))
        for _ in range(lookup_clients)
    ]
    misbehaving = [
        threading.Thread(
            target=_slow_client,
            args=(host, int(port), modes[n % len(modes)], slow_stop, big_path),
        )
        for n in range(slow)
    ]
    for client in clients:
        client.start()
    try:
        time.sleep(seconds[0])
        phase[0] = "during"
        for client in misbehaving:
            client.start()
        time.sleep(seconds[1])
    finally:
        stop.set()
        slow_stop.set()
        for client in clients + misbehaving:
            client.join(timeout=60)
    return samples


# --- a database server restarted under a swarm ----------------------------------------

# Insert clients send a batch that failed again after this pause, with the same
# Idempotency-Key: sooner than the 503's Retry-After asks, to find the first moment the
# store takes writes again.
RETRY_PAUSE_SECONDS = 0.25
# Explicit product ids of the restart swarm's batches: far above generated data's, one
# range per client; each batch's order references its own product, so a stored order
# names the batch it came from.
PRODUCT_IDS_FROM = 50_000_000
RESTART_PREFIX = "restart-"


@dataclass(frozen=True)
class Answer:
    """One request of `restarted_server`'s swarm and what came back."""

    kind: str  # "lookup" or "insert"
    status: int  # 0: no answer (the connection failed or timed out)
    started: float  # time.monotonic() when sent
    seconds: float
    retry_after: str | None
    body: bytes
    key: str = ""  # an insert's Idempotency-Key: its batch's, kept by every retry


@dataclass
class RestartRun:
    """`restarted_server`'s answers and when the server went and came back (monotonic)."""

    answers: list[Answer]
    batches: dict[str, dict]  # Idempotency-Key -> the batch sent with it
    stopping: float  # the stop command was run
    down: float  # it returned: the server accepts nothing
    restarting: float  # the start command was run
    back: float  # the first connection the server accepted again
    ended: float  # the swarm was told to stop (pending batches still retried)


def _restart_batch(client: int, number: int, user_id: int) -> dict:
    """Two new users, a new product with an explicit id, and an order of that product."""
    tag = f"{client}.{number}"
    product_id = PRODUCT_IDS_FROM + client * 1_000_000 + number
    return {
        "users": [
            {"name": f"Restart {tag}.{i}", "email": f"{RESTART_PREFIX}{tag}.{i}@example.com"}
            for i in range(2)
        ],
        "products": [{"id": product_id, "name": f"Restart {tag}", "price": "1.50"}],
        "orders": [{"user_id": user_id, "product_id": product_id, "quantity": 1}],
    }


def _send(connection, method: str, path: str, body: bytes | None, headers: dict) -> tuple:
    """``(status, retry_after, body, connection)``; status 0 and a new connection when no
    answer came. A kept-alive connection the server closed (a worker recycled) is opened
    again once, as HTTP clients do (an insert carries its Idempotency-Key); a timeout is
    not sent again."""
    for _ in range(2):
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheader("Retry-After"), response.read(), connection
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            connection = http.client.HTTPConnection(connection.host, connection.port, timeout=30)
            if isinstance(exc, TimeoutError):
                break
    return 0, None, b"", connection


def restarted_server(
    url: str,
    dsn: str,
    stop_server: Callable[[], None],
    start_server: Callable[[], None],
    *,
    lookup_clients: int = 4,
    insert_clients: int = 4,
    seconds: tuple[float, float, float] = (2.0, 3.0, 6.0),
    settle_s: float = 15.0,
) -> RestartRun:
    """Lookups (a user, half of them with its orders) and insert batches (users, a product,
    its order; each with an Idempotency-Key) without pause against ``url``; ``seconds``:
    how long before ``stop_server`` runs, how long the server stays down, and how long the
    swarm goes on once ``dsn`` (a PostgreSQL URL on the restarted server) accepts a
    connection again after ``start_server``. A batch answered 503 or not at all is sent
    again with its key after `RETRY_PAUSE_SECONDS`, until it is answered 2xx (a batch
    pending when the swarm ends is retried for up to ``settle_s``).

    Raises `TimeoutError` when the server does not accept a connection within 60 s of
    ``start_server``.
    """
    host, port = url.removeprefix("http://").split(":")
    with closing(http.client.HTTPConnection(host, int(port), timeout=30)) as connection:
        connection.request("GET", "/api/stats/")
        stats = json.loads(connection.getresponse().read())
    users = (stats["users"]["min_id"], stats["users"]["max_id"])
    answers: list[Answer] = []
    batches: dict[str, dict] = {}
    stop = threading.Event()
    settled_by: list[float] = []  # when pending batches stop being retried

    def looker(number: int) -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        while not stop.is_set():
            user = random.randint(*users)
            path = f"/api/run-query/?type=get&user_id={user}" + ("&include=orders" * (number % 2))
            started = time.monotonic()
            status, retry_after, body, connection = _send(connection, "GET", path, None, {})
            answers.append(
                Answer("lookup", status, started, time.monotonic() - started, retry_after, body)
            )
        connection.close()

    def inserter(number: int) -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        for batch_number in itertools.count():
            if stop.is_set():
                break
            key = f"{RESTART_PREFIX}{number}.{batch_number}"
            batches[key] = batch = _restart_batch(number, batch_number, users[0])
            payload = json.dumps(batch).encode()
            headers = {"Content-Type": "application/json", "Idempotency-Key": key}
            while True:
                started = time.monotonic()
                status, retry_after, body, connection = _send(
                    connection, "POST", "/api/run-query/?type=insert", payload, headers
                )
                answers.append(
                    Answer(
                        "insert",
                        status,
                        started,
                        time.monotonic() - started,
                        retry_after,
                        body,
                        key,
                    )
                )
                if status not in (0, 503) or (stop.is_set() and time.monotonic() > settled_by[0]):
                    break
                time.sleep(RETRY_PAUSE_SECONDS)
        connection.close()

    clients = [threading.Thread(target=looker, args=(n,)) for n in range(lookup_clients)]
    clients += [threading.Thread(target=inserter, args=(n,)) for n in range(insert_clients)]
    for client in clients:
        client.start()
    try:
        time.sleep(seconds[0])
        stopping = time.monotonic()
        stop_server()
        down = time.monotonic()
        time.sleep(seconds[1])
        restarting = time.monotonic()
        starter = threading.Thread(target=start_server)
        starter.start()
        back = _first_connection(dsn, deadline=restarting + 60)
        starter.join(timeout=120)
        time.sleep(seconds[2])
    finally:
        settled_by.append(time.monotonic() + settle_s)
        ended = time.monotonic()
        stop.set()
        for client in clients:
            client.join(timeout=settle_s + 60)
    answers.sort(key=lambda answer: answer.started)
    return RestartRun(answers, batches, stopping, down, restarting, back, ended)


def _first_connection(dsn: str, deadline: float) -> float:
    """The monotonic time of the first connection ``dsn``'s server accepts (polled every
    20 ms); raises `TimeoutError` past ``deadline``."""
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(dsn, connect_timeout=1):
                return time.monotonic()
        except psycopg.OperationalError:
            time.sleep(0.02)
    raise TimeoutError(f"the database server did not accept a connection again: {dsn}")


def restart_figures(run: RestartRun) -> dict:
    """What `restarted_server` saw, in seconds:

    ``statuses`` per kind; ``while_down``: the statuses of the requests sent and answered
    between the stop command's return and the start command; ``first_503_s``: when the
    first 503 was sent, from the stop command; ``last_503_s``: when the last one was
    answered, from the server's return (its first accepted connection); ``recovery_s``:
    when the last request that failed after that return was answered, from the return
    (0.0: none failed); ``first_success_s`` per kind: when the first 2xx sent after the
    return was answered, from it; ``max_s`` per kind: the longest request; ``unanswered``:
    requests without an answer; ``stop_s``, ``start_s``: how long the commands took to
    stop the server and to have it accept a connection again.
    """
    ok = {"lookup": {200}, "insert": {200, 207}}
    figures: dict = {"statuses": {}, "max_s": {}, "first_success_s": {}}
    for kind in ("lookup", "insert"):
        chosen = [a for a in run.answers if a.kind == kind]
        figures["statuses"][kind] = dict(Counter(a.status for a in chosen))
        figures["max_s"][kind] = max((a.seconds for a in chosen), default=0.0)
        returned = [
            a.started + a.seconds - run.back
            for a in chosen
            if a.started >= run.back and a.status in ok[kind]
        ]
        figures["first_success_s"][kind] = min(returned, default=None)
    figures["while_down"] = dict(
        Counter(
            a.status
            for a in run.answers
            if a.started >= run.down and a.started + a.seconds < run.restarting
        )
    )
    unavailable = [a for a in run.answers if a.status == 503]
    figures["first_503_s"] = min((a.started - run.stopping for a in unavailable), default=None)
    figures["last_503_s"] = max(
        (a.started + a.seconds - run.back for a in unavailable), default=None
    )
    figures["recovery_s"] = max(
        (
            a.started + a.seconds - run.back
            for a in run.answers
            if a.started + a.seconds >= run.back and a.status not in ok[a.kind]
        ),
        default=0.0,
    )
    figures["unanswered"] = sum(a.status == 0 for a in run.answers)
    figures["stop_s"] = run.down - run.stopping
    figures["start_s"] = run.back - run.restarting
    return figures


def restart_records(run: RestartRun, database_urls: dict[str, str]) -> dict:
    """Every record `restarted_server` sent against what the stores hold afterwards
    (``database_urls``: a PostgreSQL URL per store). Users are told apart by e-mail,
    products by their explicit id, orders by the product they name.

    Returns ``{"sent", "acknowledged": answered inserted (200/207), "lost": acknowledged
    but not stored with the id answered, "stored_twice", "failed_stored": answered failed
    or rejected last, or never answered 2xx, yet stored (once, by an earlier attempt
    or a retry), "failed_absent"}``; the last three are lists of record names.
    """
    with psycopg.connect(database_urls["users"]) as db:
        users = db.execute(
            "SELECT email, id FROM users WHERE email LIKE %s", [f"{RESTART_PREFIX}%"]
        ).fetchall()
    with psycopg.connect(database_urls["products"]) as db:
        products = db.execute(
            "SELECT id, id FROM products WHERE id >= %s", [PRODUCT_IDS_FROM]
        ).fetchall()
    with psycopg.connect(database_urls["orders"]) as db:
        orders = db.execute(
            "SELECT product_id, id FROM orders WHERE product_id >= %s", [PRODUCT_IDS_FROM]
        ).fetchall()
    stored: dict[str, dict] = {}
    for store, rows in (("users", users), ("products", products), ("orders", orders)):
        for name, id_ in rows:
            stored.setdefault(store, {}).setdefault(name, []).append(id_)
    final: dict[str, dict] = {}  # key -> the body of the batch's last 2xx answer
    for answer in run.answers:
        if answer.kind == "insert" and answer.status in (200, 207):
            final[answer.key] = json.loads(answer.body)
    outcome = {"sent": 0, "acknowledged": 0, "lost": [], "stored_twice": []}
    outcome |= {"failed_stored": [], "failed_absent": []}
    names = {"users": "email", "products": "id", "orders": "product_id"}
    for key, batch in run.batches.items():
        for store, records in batch.items():
            results = final.get(key, {}).get(store, [{}] * len(records))
            for record, result in zip(records, results, strict=True):
                outcome["sent"] += 1
                name = record[names[store]]
                ids = stored.get(store, {}).get(name, [])
                label = f"{store} {name}"
                if len(ids) > 1:
                    outcome["stored_twice"].append(label)
                if result.get("status") == "inserted":
                    outcome["acknowledged"] += 1
                    if ids != [result["id"]]:
                        outcome["lost"].append(label)
                else:
                    outcome["failed_stored" if ids else "failed_absent"].append(label)
    return outcome
