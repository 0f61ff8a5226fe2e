"""The swarm: ``locust -f locustfile.py`` opens the web UI; ``make demo`` runs it headless.

`ApiUser` is a FastHttpUser whose tasks are weighted like real traffic: one lookup task
per key of `api.domain.lookup_keys.LOOKUP_KEYS`, weighted by `loadtest.swarm.SWARM_WEIGHTS`
(mostly by user id), some lookups of users with their orders, and a few small insert batches.
Ids come from the real ranges that ``/api/stats/`` reports when the test starts (less
the ids it reports missing, such as the assignment's rejected records), and the values
of the other keys (e-mails, organisation ids) from a page of their model's resource. A
request succeeds only when its status is right AND its body says what was asked for (the
first result's column equals the value asked for), so a fast error page can never count
as throughput.

The swarm runs as a production client would: it sends ``LOCUST_API_TOKEN`` (``make demo``
creates one with the ``read`` and ``write`` scopes and the ``benchmark`` tier's rates,
``manage.py create_token``) on every request, and each insert batch is a JSON body of new
records sent with its own ``Idempotency-Key``. Without a token (``loadtest --access open``)
it sends neither.

Tags select a traffic shape: ``locust --tags user_id`` runs the lookup-by-user-id task
alone; each lookup task is tagged with its key and ``lookup``.
Defaults (1000 users, spawn rate 100, run time, report paths) live in ``locust.conf``.

With ``--json-file F``, `save_total` also writes ``F_total.json``: Locust's aggregated
entry, whose start time (the runner's, before the first user) is the start of the window
that locust.html's duration and RPS count; ``locust.json`` holds the per-kind entries only.
And ``F_run.json``: what Locust's own files lack for the report (`loadtest.summary`): the
answers by status code per kind, the failures with their messages, and the statistics
as they stood when the last user started (the ramp-up's end).
"""

import bisect
import copy
import json
import os
import random
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from urllib.parse import quote

import gevent
import orjson
from locust import FastHttpUser, events, tag, task
from locust.exception import StopTest
from locust.runners import MasterRunner, WorkerRunner

from api.domain.lookup_keys import RANGE, LookupKey
from loadtest.swarm import SWARM_WEIGHTS, SWARMED, swarm_name

ID_RANGES: dict[str, tuple[int, int]] = {}
MISSING_IDS: dict[str, list[list[int]]] = {}  # [first, last] ranges, lowest first
VALUES: dict[str, list] = {}  # stored values of the keys that are not id ranges
INSERT_BATCH = 2
# Answers by (request kind, status code): Locust's statistics count failures, not codes.
STATUS_CODES: Counter = Counter()
SPAWNED: dict = {}  # the statistics when the ramp-up ended (mark_ramp_up_end)
RUNNER: dict = {}  # this process's runner, for the events that do not pass it
API_TOKEN = os.environ.get("LOCUST_API_TOKEN", "")
AUTH_HEADERS = {"Authorization": f"Token {API_TOKEN}"} if API_TOKEN else {}


def read_json(url: str):
    """GET ``url`` with the swarm's token; the parsed JSON body."""
    request = urllib.request.Request(url, headers=AUTH_HEADERS)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


# Locust answers a StopTest raised in its greenlets by logging its message and stopping the
# test; gevent's hub would print its traceback first, as for any error it was not told of.
_hub = gevent.get_hub()
_hub.NOT_ERROR = (*_hub.NOT_ERROR, StopTest)


class StartUpReadFailed(Exception):
    """The start-up data is not there: the message says what is missing."""


@events.test_start.add_listener
def read_id_ranges(environment, **kwargs) -> None:
    """Read the id ranges and some e-mails once, before any user starts (in each process
    whose users run: not on a master). A read that fails stops the test with one line
    naming the host and the fix, and exit status 2: without the ranges every task would
    fail with a traceback of its own."""
    if isinstance(environment.runner, MasterRunner):
        return
    host = (environment.host or "").rstrip("/")
    try:
        read_start_up_data(host)
    except (StartUpReadFailed, OSError, ValueError, KeyError, TypeError) as exc:
        # Locust logs a StopTest's message alone (no traceback) and stops the test.
        environment.process_exit_code = 2
        raise StopTest(start_up_failure(host, exc)) from None


def read_start_up_data(host: str) -> None:
    """Fill `ID_RANGES`, `MISSING_IDS` and `VALUES` from ``host``'s API."""
    stats = read_json(f"{host}/api/stats/")
    for model, table in stats.items():
        if table["min_id"] is None:
            raise StartUpReadFailed(
                f"no {model} in the database of {host}: load them first "
                "(manage.py generate_data, or make demo)"
            )
        ID_RANGES[model] = (table["min_id"], table["max_id"])
        MISSING_IDS[model] = table["missing_ids"]
    for key in SWARMED:
        if key.query != RANGE:
            rows = read_json(f"{host}/api/{key.store}/?page_size=1000")["results"]
            VALUES[key.name] = [row[key.column] for row in rows if row[key.column] is not None]
            if not VALUES[key.name]:
                raise StartUpReadFailed(f"no {key.store} with a {key.column} to look up")


def start_up_failure(host: str, exc: Exception) -> str:
    """One line: what the start-up read of ``host`` met, and what to do about it."""
    if isinstance(exc, StartUpReadFailed):
        return str(exc)
    if isinstance(exc, urllib.error.HTTPError) and exc.code in (401, 403):
        fix = (
            "the swarm needs a token with the read scope: LOCUST_API_TOKEN=<key of "
            "manage.py create_token swarm --scope read --scope write>"
        )
        what = f"HTTP {exc.code}"
    elif isinstance(exc, urllib.error.HTTPError):
        what, fix = f"HTTP {exc.code}", "is it this project's server, and healthy?"
    elif isinstance(exc, OSError):
        reason = getattr(exc, "reason", exc)
        what = f"no answer ({reason})"
        fix = "start the server first (make serve), or give --host the address it serves on"
    else:
        what = f"an answer that is not this project's ({type(exc).__name__}: {exc})"
        fix = "give --host the address of this project's server"
    return f"cannot read {host or '(no --host)'}/api/stats/: {what}; {fix}"


@events.init_command_line_parser.add_listener
def progress_option(parser) -> None:
    parser.add_argument(
        "--progress-every",
        type=float,
        default=0,
        include_in_web_ui=False,
        help="print a progress line every N seconds (elapsed, users, req/s, p95, failures)",
    )


@events.test_start.add_listener
def forget_the_last_test(environment, **kwargs) -> None:
    """A new test (the web UI runs several) counts from nothing, as Locust's own stats do;
    a headless one prints its progress (``--progress-every``) until it stops."""
    STATUS_CODES.clear()
    SPAWNED.clear()
    RUNNER["runner"] = environment.runner
    every = getattr(environment.parsed_options, "progress_every", 0)
    if every and not isinstance(environment.runner, WorkerRunner):
        RUNNER["progress"] = gevent.spawn(print_progress, environment.runner, every)


@events.test_stop.add_listener
def stop_progress(environment, **kwargs) -> None:
    if progress := RUNNER.pop("progress", None):
        progress.kill(block=False)


def print_progress(runner, every: float) -> None:
    """Every ``every`` seconds, one line on stdout: elapsed time, users (now/asked), and
    Locust's current figures (its last ~10 s): requests/s, p95, failures so far."""
    started = time.monotonic()
    while True:
        gevent.sleep(every)
        print(progress_line(runner, time.monotonic() - started), flush=True)


def progress_line(runner, elapsed: float) -> str:
    total = runner.stats.total
    p95 = total.get_current_response_time_percentile(0.95) or 0
    minutes, seconds = divmod(int(elapsed), 60)
    return (
        f"  {minutes}:{seconds:02d}  users {runner.user_count:>5}/{runner.target_user_count:<5}"
        f"  {total.current_rps:>9,.1f} req/s  p95 {p95:>5,.0f} ms"
        f"  failures {total.num_failures:,} ({total.current_fail_per_sec:,.1f}/s)"
    )


@events.request.add_listener
def count_status(name: str, response=None, **kwargs) -> None:
    """Count each answer by request kind and status code (0: no answer at all)."""
    STATUS_CODES[name, getattr(response, "status_code", 0) or 0] += 1


@events.report_to_master.add_listener
def report_status(client_id: str, data: dict) -> None:
    """A worker hands its counts since its last report to the master (every 3 s, and at
    the end), as Locust hands its own statistics."""
    data["status_codes"] = [[name, code, count] for (name, code), count in STATUS_CODES.items()]
    STATUS_CODES.clear()


@events.worker_report.add_listener
def receive_status(client_id: str, data: dict) -> None:
    for name, code, count in data.get("status_codes", ()):
        STATUS_CODES[name, code] += count


@events.spawning_complete.add_listener
def mark_ramp_up_end(user_count: int, **kwargs) -> None:
    """Keep the statistics as they stand when the last user has started: the steady state
    is the run less these (on a master, as far as the workers have reported, every 3 s)."""
    runner = RUNNER.get("runner")  # the event does not pass it
    if SPAWNED or runner is None or isinstance(runner, WorkerRunner):
        return
    SPAWNED["at"] = time.time()
    SPAWNED["users"] = user_count
    # Copies: serialize() hands out the entries' live histograms, which go on counting.
    SPAWNED["entries"] = [
        copy.deepcopy(entry.serialize()) for entry in runner.stats.entries.values()
    ]


@events.quitting.add_listener
def save_total(environment, **kwargs) -> None:
    """Write the aggregated entry beside ``locust.json``, and ``F_run.json``: answers by
    status code per kind, the failures' messages and the statistics at the end of the
    ramp-up (not on a worker: the master's aggregate is the run's)."""
    json_file = getattr(environment.parsed_options, "json_file", None)
    if not json_file or isinstance(environment.runner, WorkerRunner):
        return
    stats = environment.runner.stats
    with open(f"{json_file}_total.json", "w") as file:
        json.dump(stats.total.serialize(), file, indent=4)
    status_codes: dict[str, dict[int, int]] = {}
    for (name, code), count in sorted(STATUS_CODES.items()):
        status_codes.setdefault(name, {})[code] = count
    errors = [failure(error) for error in stats.errors.values()]
    details = {"status_codes": status_codes, "errors": errors, "spawned": SPAWNED or None}
    with open(f"{json_file}_run.json", "w") as file:
        json.dump(details, file, indent=1)


def failure(error) -> dict:
    """A failure as Locust counted it: method, name, the message alone, occurrences."""
    message = error.to_name().removeprefix(f"{error.method} {error.name}: ")
    return {
        "method": error.method,
        "name": error.name,
        "message": message,
        "occurrences": error.occurrences,
    }


def random_id(model: str) -> int:
    """An id drawn uniformly from the stored ids of ``model`` (redrawn inside a gap)."""
    missing = MISSING_IDS[model]
    if not missing:  # most tables: no search, as Locust shares the cores with the server
        return random.randint(*ID_RANGES[model])
    while True:
        drawn = random.randint(*ID_RANGES[model])
        gap = bisect.bisect_right(missing, drawn, key=lambda ids: ids[0]) - 1
        if gap < 0 or drawn > missing[gap][1]:
            return drawn


def random_user_id() -> int:
    return random_id("users")


def draw(key: LookupKey):
    """A stored value of ``key``: an id in its model's range, or one read at the start."""
    if key.query == RANGE:
        return random_id(key.store)
    return random.choice(VALUES[key.name])


def lookup_task(key: LookupKey):
    """The Locust task that looks one stored value of ``key`` up and checks the answer."""

    def lookup(user: FastHttpUser) -> None:
        value = draw(key)
        with user.client.get(
            f"/api/run-query/?count=1&type=get&{key.name}={quote(str(value), safe='@')}",
            name=swarm_name(key),
            catch_response=True,
        ) as response:
            expect_first(response, key.column, value)

    lookup.__name__ = f"get_by_{key.name}"
    return tag(key.name, "lookup")(lookup)


class ApiUser(FastHttpUser):
    """One client of the API, as real traffic mixes its requests."""

    tasks = {lookup_task(key): SWARM_WEIGHTS[key.name] for key in SWARMED}
    default_headers = AUTH_HEADERS

    @tag("lookup")
    @task(10)
    def get_user_with_orders(self) -> None:
        user_id = random_user_id()
        with self.client.get(
            f"/api/run-query/?type=get&user_id={user_id}&include=orders",
            name="get user with orders",
            catch_response=True,
        ) as response:
            if (
                expect_first(response, "id", user_id)
                and "orders" not in body(response)["results"][0]
            ):
                response.failure("no orders key")

    @tag("insert")
    @task(5)
    def insert_small_batch(self) -> None:
        with self.client.post(
            "/api/run-query/?type=insert",
            data=orjson.dumps(new_records(INSERT_BATCH)),
            headers={"Content-Type": "application/json", **idempotency_key()},
            name="insert batch",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}: {(response.text or '')[:200]}")
                return
            inserted = {model: c["inserted"] for model, c in body(response)["summary"].items()}
            if set(inserted.values()) != {INSERT_BATCH}:
                response.failure(f"inserted {inserted}, expected {INSERT_BATCH} of each")


def idempotency_key() -> dict[str, str]:
    """A new ``Idempotency-Key`` header when the swarm runs as production (with a token)."""
    return {"Idempotency-Key": str(uuid.uuid4())} if API_TOKEN else {}


def new_records(count: int) -> dict[str, list[dict]]:
    """``count`` new users, products and orders (of stored users and products), valid and
    unique, as a client would send them."""
    tag = uuid.uuid4().hex
    return {
        "users": [
            {"name": f"Swarm {tag[:8]} {i}", "email": f"swarm-{tag}-{i}@example.com"}
            for i in range(count)
        ],
        "products": [
            {"name": f"Swarm product {tag[:8]} {i}", "price": random.randint(100, 99_999) / 100}
            for i in range(count)
        ],
        "orders": [
            {
                "user_id": random_user_id(),
                "product_id": random_id("products"),
                "quantity": random.randint(1, 5),
            }
            for _ in range(count)
        ],
    }


def body(response) -> dict:
    """The JSON body, parsed by orjson.

    Locust shares the cores with the server under test, and orjson parses a body in a
    fraction of ``response.json()``'s time (``docs/performance.md``).
    """
    return orjson.loads(response.content)


def expect_first(response, field: str, value) -> bool:
    """Mark ``response`` failed unless it is a 200 whose first result has ``field == value``."""
    if response.status_code != 200:
        response.failure(f"status {response.status_code}: {(response.text or '')[:200]}")
        return False
    results = body(response).get("results") or [{}]
    if results[0].get(field) != value:
        response.failure(f"asked for {field}={value}, got {results[0].get(field)!r}")
        return False
    return True
