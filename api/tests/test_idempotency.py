"""``Idempotency-Key`` on the POSTs that insert: replays, 422, 409, expiry, scoping, races."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from io import StringIO
from uuid import uuid4

import orjson
import psycopg
import pytest
import requests
from django.core.management import call_command
from django.db import connections, router
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from api.db.breakers import WRITE_BREAKERS
from api.http import idempotency
from api.http.parsers import ORJSONParser
from api.models import IdempotencyKey, Product, User
from api.tests.conftest import ALL_DATABASES, locked, manage, postgresql_only, store_locked
from api.tests.test_concurrency import drop_race_databases, race_env
from loadtest import runner

BATCH_URL = "/api/run-query/?type=insert"
PRODUCTS_URL = "/api/products/"
USERS_URL = "/api/users/"
db = pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)


sqlite_default = pytest.mark.skipif(
    connections["default"].vendor != "sqlite", reason="locks the default SQLite file"
)


def post(client: Client, url: str, body, key: str | None = None, **headers):
    """POST ``body`` as JSON (bytes as they are) with ``Idempotency-Key: key`` if given."""
    if key is not None:
        headers["Idempotency-Key"] = key
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.post(url, data=data, content_type="application/json", headers=headers)


def answer(response) -> tuple[int, bytes]:
    return response.status_code, response.content


def token_for(name: str) -> str:
    """A new token with the ``write`` scope for user ``name``."""
    out = StringIO()
    call_command("create_token", name, "--scope", "write", stdout=out)
    return out.getvalue().strip()


BATCH = {
    "users": [{"name": "Ada", "email": "ada@example.com"}],
    "products": [{"name": "Lamp", "price": "12.50"}],
}


@db
def test_the_same_key_and_payload_replay_the_first_response_and_insert_nothing_more():
    """Status and body byte for byte, ``Idempotent-Replayed: true``, no new rows."""
    client = Client()
    first = post(client, BATCH_URL, BATCH, key="k-1")
    assert first.status_code == 200 and "Idempotent-Replayed" not in first
    # Other whitespace and key order: the same payload.
    spaced = (
        b'{"products": [{"price": "12.50", "name": "Lamp"}],\n "users": '
        + orjson.dumps(BATCH["users"])
        + b"}"
    )
    again = post(client, BATCH_URL, spaced, key="k-1")
    assert answer(again) == answer(first)
    assert again["Idempotent-Replayed"] == "true"
    assert again["Content-Type"] == first["Content-Type"] == "application/json"
    assert (User.objects.count(), Product.objects.count()) == (1, 1)
    row = IdempotencyKey.objects.get()
    assert (row.owner, row.key, row.status) == ("anonymous", "k-1", 200)


@db
def test_without_a_key_a_post_inserts_every_time():
    client = Client()
    body = {"products": [{"name": "Lamp", "price": "1.00"}]}
    assert post(client, BATCH_URL, body).status_code == 200
    assert post(client, BATCH_URL, body).status_code == 200
    assert Product.objects.count() == 2
    assert not IdempotencyKey.objects.exists()


@db
def test_the_same_key_with_another_payload_is_422():
    client = Client()
    post(client, BATCH_URL, BATCH, key="k-1")
    other = {"products": [{"name": "Desk", "price": "99.00"}]}
    response = post(client, BATCH_URL, other, key="k-1")
    assert response.status_code == 422
    assert orjson.loads(response.content) == {
        "error": idempotency.KEY_REUSED,
        "details": {"header": "Idempotency-Key"},
    }
    assert Product.objects.count() == 1
    # Another query string is another request too.
    assert post(client, f"{BATCH_URL}&count=1", {}, key="k-1").status_code == 422


@db
def test_16_threads_with_one_key_store_the_records_once_and_get_one_answer():
    """16 clients race with the same key and payload: one batch stored, 16 equal answers."""
    threads = 16
    start = threading.Barrier(threads)
    body = {
        "users": [{"name": f"U{i}", "email": f"u{i}@example.com"} for i in range(20)],
        "products": [{"name": f"P{i}", "price": i} for i in range(20)],
    }

    def client_run(_: int) -> tuple[int, bytes, bool]:
        start.wait()
        try:
            response = post(Client(), BATCH_URL, body, key="race")
            return *answer(response), response.has_header("Idempotent-Replayed")
        finally:
            connections.close_all()

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(client_run, range(threads)))
    assert {(code, content) for code, content, _ in results} == {answer_of(results[0])}
    assert results[0][0] == 200
    assert sorted(replayed for *_, replayed in results) == [False] + [True] * (threads - 1)
    assert (User.objects.count(), Product.objects.count()) == (20, 20)
    assert IdempotencyKey.objects.get().status == 200


def answer_of(result: tuple[int, bytes, bool]) -> tuple[int, bytes]:
    return result[0], result[1]


def running_row(key: str, fingerprint: str = "0" * 64, owner: str = "anonymous"):
    now = timezone.now()
    return IdempotencyKey.objects.create(
        owner=owner, key=key, fingerprint=fingerprint, expires_at=now + timedelta(hours=1)
    )


@db
def test_a_key_still_running_after_the_wait_is_409_with_retry_after(settings):
    settings.IDEMPOTENCY_WAIT_SECONDS = 0
    body = {"products": [{"name": "Lamp", "price": "1.00"}]}
    running_row("busy", fingerprint_of(body))
    response = post(Client(), BATCH_URL, body, key="busy")
    assert response.status_code == 409
    assert response["Retry-After"] == str(idempotency.RETRY_AFTER_SECONDS)
    assert orjson.loads(response.content)["error"] == idempotency.KEY_IN_USE
    assert Product.objects.count() == 0


@db
def test_a_key_whose_worker_died_is_claimed_anew_after_the_abandoned_bound(settings):
    """A running row older than IDEMPOTENCY_ABANDONED_SECONDS: its worker was killed
    mid-request (the row was never settled nor released), so the retry runs."""
    settings.IDEMPOTENCY_WAIT_SECONDS = 0
    body = {"products": [{"name": "Lamp", "price": "1.00"}]}
    row = running_row("orphan", fingerprint_of(body))
    assert post(Client(), BATCH_URL, body, key="orphan").status_code == 409
    IdempotencyKey.objects.filter(pk=row.pk).update(
        created_at=timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_ABANDONED_SECONDS)
    )
    response = post(Client(), BATCH_URL, body, key="orphan")
    assert response.status_code == 200, response.content
    assert Product.objects.count() == 1
    assert IdempotencyKey.objects.get().status == 200


def fingerprint_of(body, url: str = BATCH_URL) -> str:
    """The fingerprint the API computes for ``body`` posted to ``url``."""
    posted = APIRequestFactory().post(url, orjson.dumps(body), content_type="application/json")
    return idempotency.request_fingerprint(Request(posted, parsers=[ORJSONParser()]))


@db
def test_a_request_waits_for_the_running_one_and_replays_its_answer(settings):
    """While the first request runs the second polls; when it finishes, it is replayed."""
    settings.IDEMPOTENCY_WAIT_SECONDS = 5
    body = {"products": [{"name": "Lamp", "price": "1.00"}]}
    row = running_row("slow", fingerprint_of(body))

    def finish() -> None:
        IdempotencyKey.objects.filter(pk=row.pk).update(
            status=201, body=b'{"done": true}', headers={"Retry-After": "7"}
        )
        connections.close_all()

    timer = threading.Timer(0.3, finish)
    timer.start()
    response = post(Client(), BATCH_URL, body, key="slow")
    timer.join()
    assert answer(response) == (201, b'{"done": true}')
    assert response["Retry-After"] == "7" and response["Idempotent-Replayed"] == "true"
    assert Product.objects.count() == 0


@db
def test_an_expired_key_runs_again_and_the_command_deletes_expired_rows():
    client = Client()
    body = {"products": [{"name": "Lamp", "price": "1.00"}]}
    assert post(client, BATCH_URL, body, key="old").status_code == 200
    past = timezone.now() - timedelta(seconds=1)
    IdempotencyKey.objects.filter(key="old").update(expires_at=past)
    again = post(client, BATCH_URL, body, key="old")
    assert again.status_code == 200 and "Idempotent-Replayed" not in again
    assert Product.objects.count() == 2  # expired on read: the request ran again
    assert IdempotencyKey.objects.get(key="old").expires_at > timezone.now()

    running_row("stale")
    IdempotencyKey.objects.filter(key="stale").update(expires_at=past)
    out = StringIO()
    call_command("expire_idempotency_keys", stdout=out)
    assert out.getvalue() == "1 expired idempotency keys deleted\n"
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["old"]


@db
def test_keys_are_scoped_to_the_token():
    """Two tokens (and anonymous) use one key independently; each replays its own answer."""
    tokens = [token_for("alice"), token_for("bob")]
    clients = [Client(headers={"Authorization": f"Token {t}"}) for t in tokens] + [Client()]
    body = {"products": [{"name": "Lamp", "price": "1.00"}]}
    firsts = [post(c, BATCH_URL, body, key="shared") for c in clients]
    assert [r.status_code for r in firsts] == [200, 200, 200]
    assert Product.objects.count() == 3
    for c, first in zip(clients, firsts, strict=True):
        assert answer(post(c, BATCH_URL, body, key="shared")) == answer(first)
    assert Product.objects.count() == 3
    owners = set(IdempotencyKey.objects.values_list("owner", flat=True))
    assert len(owners) == 3 and "anonymous" in owners
    assert all(o == "anonymous" or o.startswith("user:") for o in owners)


@db
def test_a_required_key_refuses_a_post_without_one(settings):
    settings.IDEMPOTENCY_KEY_REQUIRED = True
    client = Client()
    response = post(client, BATCH_URL, BATCH)
    assert response.status_code == 400
    assert orjson.loads(response.content)["error"] == idempotency.KEY_REQUIRED
    assert User.objects.count() == 0
    assert post(client, BATCH_URL, BATCH, key="k").status_code == 200


@pytest.mark.parametrize("value", ["", '""', "a" * 256, "tab\there", "caf\u00e9"])
@db
def test_a_malformed_key_is_400(value):
    response = post(Client(), BATCH_URL, BATCH, key=value)
    assert response.status_code == 400
    assert orjson.loads(response.content)["error"] == idempotency.KEY_INVALID
    assert (User.objects.count(), IdempotencyKey.objects.count()) == (0, 0)


@db
def test_a_quoted_key_is_the_same_key_as_the_bare_one():
    """The draft's structured-field form ``"abc"`` names the key ``abc``."""
    client = Client()
    first = post(client, BATCH_URL, BATCH, key='"abc"')
    again = post(client, BATCH_URL, BATCH, key="abc")
    assert answer(again) == answer(first) and again["Idempotent-Replayed"] == "true"
    assert IdempotencyKey.objects.get().key == "abc"
    assert post(client, BATCH_URL, BATCH, key="a" * 255).status_code == 200


@db
def test_a_503_is_not_kept_so_a_retry_with_the_key_inserts(monkeypatch, settings):
    """Nothing stored (a locked store): the key is freed; the retry runs and is kept."""
    client = Client()
    body = {"products": [{"name": "Lamp", "price": "1.00"}]}
    with store_locked("products", monkeypatch, settings):
        failed = post(client, BATCH_URL, body, key="retry")
    assert failed.status_code == 503
    assert not IdempotencyKey.objects.exists()
    WRITE_BREAKERS["products"].open_until = 0.0  # the failure opened the store's breaker
    retried = post(client, BATCH_URL, body, key="retry")
    assert retried.status_code == 200 and "Idempotent-Replayed" not in retried
    assert Product.objects.count() == 1
    assert IdempotencyKey.objects.get().status == 200


@db
def test_a_207_is_replayed_with_its_retry_after(monkeypatch, settings):
    client = Client()
    with store_locked("users", monkeypatch, settings):
        first = post(client, BATCH_URL, BATCH, key="partial")
    assert first.status_code == 207
    again = post(client, BATCH_URL, BATCH, key="partial")
    assert answer(again) == answer(first)
    assert again["Retry-After"] == first["Retry-After"]
    assert (User.objects.count(), Product.objects.count()) == (0, 1)


@sqlite_default
@db
def test_a_default_database_that_fails_is_a_503_naming_it(monkeypatch):
    """The key cannot be claimed: 503 with Retry-After, and nothing is inserted."""
    client = Client()
    with locked("default", monkeypatch):
        connections["default"].close()  # reconnect with the short busy timeout
        response = post(client, BATCH_URL, BATCH, key="k")
    assert response.status_code == 503 and int(response["Retry-After"]) > 0
    assert orjson.loads(response.content)["details"] == {"store": "default", "failure": "locked"}
    assert (User.objects.count(), Product.objects.count()) == (0, 0)


@db
def test_a_resource_create_is_replayed_with_its_201():
    client = Client()
    body = {"name": "Lamp", "price": "12.50"}
    first = post(client, PRODUCTS_URL, body, key="create")
    assert first.status_code == 201
    again = post(client, PRODUCTS_URL, body, key="create")
    assert answer(again) == answer(first) and again["Idempotent-Replayed"] == "true"
    assert Product.objects.count() == 1
    # Another endpoint with the same key and body is another request.
    assert post(client, USERS_URL, body, key="create").status_code == 422


@db
def test_a_4xx_outcome_is_kept_and_replayed():
    """A duplicate e-mail's 409 is final: the same request with the key gets it again."""
    client = Client()
    user = {"name": "Ada", "email": "ada@example.com"}
    assert post(client, USERS_URL, user).status_code == 201
    first = post(client, USERS_URL, user, key="dup")
    assert first.status_code == 409
    again = post(client, USERS_URL, user, key="dup")
    assert answer(again) == answer(first) and again["Idempotent-Replayed"] == "true"
    assert IdempotencyKey.objects.get().status == 409


@db
def test_a_handler_that_raises_frees_the_key(monkeypatch):
    """A bug (500) keeps nothing: the key can be used again once it is fixed."""

    def broken(**batch):
        raise RuntimeError("bug")

    monkeypatch.setattr("api.views.run_query.batch_insert", broken)
    client = Client(raise_request_exception=False)
    assert post(client, BATCH_URL, BATCH, key="bug").status_code == 500
    assert not IdempotencyKey.objects.exists()
    monkeypatch.undo()
    assert post(client, BATCH_URL, BATCH, key="bug").status_code == 200


@pytest.mark.django_db(databases=ALL_DATABASES)
def test_idempotency_keys_live_only_in_default():
    """The router sends the model to ``default`` and creates its table nowhere else."""
    assert router.db_for_write(IdempotencyKey) == router.db_for_read(IdempotencyKey) == "default"
    for alias in ALL_DATABASES:
        assert router.allow_migrate_model(alias, IdempotencyKey) is (alias == "default")
        tables = connections[alias].introspection.table_names()
        assert ("idempotency_keys" in tables) is (alias == "default"), alias


@pytest.mark.django_db(databases=ALL_DATABASES)
def test_the_schema_documents_the_header_and_its_answers():
    schema = orjson.loads(Client().get("/api/schema/?format=json").content)
    for path in ("/api/run-query/", "/api/users/", "/api/products/", "/api/orders/"):
        operation = schema["paths"][path]["post"]
        headers = [p["name"] for p in operation["parameters"] if p["in"] == "header"]
        assert headers == ["Idempotency-Key"], path
        assert {"409", "422"} <= set(operation["responses"]), path
    lookup = schema["paths"]["/api/run-query/"]["get"]
    assert "Idempotency-Key" not in [p["name"] for p in lookup["parameters"]]
    assert "422" not in lookup["responses"]


PAYLOADS = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["Lamp", "Desk", "Chair"]),
        "price": st.sampled_from(["1.00", "2.50", "-1"]),  # -1: a 400, kept like any answer
    }
)


@db
@hypothesis_settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(posts=st.lists(st.tuples(st.sampled_from("abc"), PAYLOADS), min_size=1, max_size=8))
def test_any_sequence_of_posts_inserts_once_per_key_and_replays_the_first_answer(posts):
    """Each key's first request decides: its payload replays that answer, another is 422."""
    client = Client()
    run = uuid4().hex  # keys of earlier examples stay in the database
    before = Product.objects.count()
    firsts: dict[str, tuple[dict, tuple[int, bytes]]] = {}
    for key, payload in posts:
        response = post(client, PRODUCTS_URL, payload, key=f"{run}-{key}")
        if key not in firsts:
            firsts[key] = (payload, answer(response))
            assert response.status_code in (201, 400)
        elif payload == firsts[key][0]:
            assert answer(response) == firsts[key][1]
        else:
            assert response.status_code == 422
    created = sum(first[1][0] == 201 for first in firsts.values())
    assert Product.objects.count() - before == created


@postgresql_only
def test_16_clients_with_one_key_across_4_workers_store_once_on_a_postgresql_default(tmp_path):
    """Four Gunicorn workers, ``default`` (the keys' database) on PostgreSQL: 16 clients
    post one batch with one key at the same moment; the batch is stored once and all 16
    get the same answer, 15 of them replayed (the key's row decides across processes)."""
    env = race_env(tmp_path, "idem")
    env["DATABASE_URL_DEFAULT"] = env["DATABASE_URL_USERS"].replace("_users", "_default")
    clients = 16
    body = orjson.dumps(
        {"users": [{"name": f"U{i}", "email": f"u{i}@example.com"} for i in range(20)]}
    )
    try:
        migrated = manage("migrate_all", "--verbosity", "0", env=env)
        assert migrated.returncode == 0, migrated.stderr
        bind = f"127.0.0.1:{runner.free_port()}"
        start = threading.Barrier(clients)

        def client_run(_: int) -> tuple[int, bytes, bool]:
            start.wait()
            response = requests.post(
                f"http://{bind}{BATCH_URL}",
                data=body,
                headers={"Content-Type": "application/json", "Idempotency-Key": "race"},
                timeout=30,
            )
            return response.status_code, response.content, "Idempotent-Replayed" in response.headers

        server_env = {**env, "WEB_CONCURRENCY": "4", "GUNICORN_LOG_LEVEL": "critical"}
        with runner.serve(bind, env=server_env) as server:
            runner.wait_healthy(f"http://{bind}", server)
            with ThreadPoolExecutor(clients) as pool:
                results = list(pool.map(client_run, range(clients)))
        with psycopg.connect(env["DATABASE_URL_USERS"]) as users:
            stored = users.execute("SELECT count(*) FROM users").fetchone()[0]
    finally:
        drop_race_databases(env)
    assert {answer_of(result) for result in results} == {answer_of(results[0])}
    assert results[0][0] == 200, results[0]
    assert sorted(replayed for *_, replayed in results) == [False] + [True] * (clients - 1)
    assert stored == 20
