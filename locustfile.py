"""The swarm: ``locust -f locustfile.py`` opens the web UI; ``make demo`` runs it headless.

`ApiUser` is a FastHttpUser whose tasks are weighted like real traffic: mostly lookups by
user id, some with the user's orders, some by e-mail, and a few small insert batches.
Ids come from the real ranges that ``/api/stats/`` reports when the test starts (less
the ids it reports missing, such as the assignment's rejected records), and e-mails from
a page of ``/api/users/``. A request succeeds only when its status is right
AND its body says what was asked for (the returned id or e-mail matches), so a fast
error page can never count as throughput.

Tags select a traffic shape: ``locust --tags user_id`` runs the lookup-by-id task alone.
Defaults (1000 users, spawn rate 100, run time, report paths) live in ``locust.conf``.
"""

import bisect
import json
import random
import urllib.request

import orjson
from locust import FastHttpUser, events, tag, task

ID_RANGES: dict[str, tuple[int, int]] = {}
MISSING_IDS: dict[str, list[list[int]]] = {}  # [first, last] ranges, lowest first
EMAILS: list[str] = []
INSERT_BATCH = 2


@events.test_start.add_listener
def read_id_ranges(environment, **kwargs) -> None:
    """Read the id ranges and some e-mails once, before any user starts."""
    host = environment.host.rstrip("/")
    with urllib.request.urlopen(f"{host}/api/stats/", timeout=30) as response:
        stats = json.load(response)
    for model, table in stats.items():
        if table["min_id"] is None:
            raise RuntimeError(f"no {model} in the database: run manage.py generate_data")
        ID_RANGES[model] = (table["min_id"], table["max_id"])
        MISSING_IDS[model] = table["missing_ids"]
    with urllib.request.urlopen(f"{host}/api/users/?page_size=1000", timeout=30) as response:
        EMAILS[:] = [user["email"] for user in json.load(response)["results"]]


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


class ApiUser(FastHttpUser):
    """One client of the API, as real traffic mixes its requests."""

    @tag("user_id", "lookup")
    @task(70)
    def get_user_by_id(self) -> None:
        user_id = random_user_id()
        with self.client.get(
            f"/api/run-query/?count=1&type=get&user_id={user_id}",
            name="get user by id",
            catch_response=True,
        ) as response:
            expect_first(response, "id", user_id)

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

    @tag("lookup")
    @task(10)
    def get_user_by_email(self) -> None:
        email = random.choice(EMAILS)
        with self.client.get(
            f"/api/run-query/?type=get&email={email}", name="get user by email", catch_response=True
        ) as response:
            expect_first(response, "email", email)

    @tag("insert")
    @task(5)
    def insert_small_batch(self) -> None:
        with self.client.post(
            f"/api/run-query/?type=insert&count={INSERT_BATCH}",
            name="insert batch",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}: {(response.text or '')[:200]}")
                return
            inserted = {model: c["inserted"] for model, c in body(response)["summary"].items()}
            if set(inserted.values()) != {INSERT_BATCH}:
                response.failure(f"inserted {inserted}, expected {INSERT_BATCH} of each")


def body(response) -> dict:
    """The JSON body, parsed by orjson.

    Locust shares the cores with the server under test; ``response.json()`` (decode, then
    the stdlib parser) took 5.4 µs per lookup body against orjson's 1.1 µs.
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
