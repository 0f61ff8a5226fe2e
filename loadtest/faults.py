"""Fault scenarios against a live server: what survives, and how fast the rest answers.

`locked_store` runs lookup clients (users) and insert clients (orders, which need the
``orders`` store) against a server for a before, a during and an after phase; during the
middle one another connection holds the ``orders`` SQLite file's write lock, or, on
PostgreSQL, an ``ACCESS EXCLUSIVE`` lock on its ``orders`` table (`hold_lock`). Each request
is recorded as `Sample` (the phase it was sent in, kind, status, seconds); `summarize`
gives per phase and kind the count, statuses and latency percentiles. ``bench/faults.py``
prints them; the suite asserts on them (``api/tests/test_bulkheads.py``).
"""

import http.client
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
