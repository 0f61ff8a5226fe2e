"""The OpenAPI schema renders, validates, and documents every answer the API gives.

Schemathesis generates requests from the schema and checks each response: no 5xx but a
documented 503, every status code, content type, header and body as documented. It runs
twice: in-process through the WSGI application Gunicorn serves, on a small shop whose ids
start at 1 (so the schema's examples find rows), and over HTTP against a live Gunicorn on
generated data.
"""

import json
import os
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest
import schemathesis
from django.test import Client
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from api.domain.batches import read_batch
from api.http import schema_examples
from api.models import Order, Product, User
from api.tests.conftest import ALL_DATABASES, manage, sqlite_only
from data_project.wsgi import application
from loadtest import runner

db = pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)
HYPOTHESIS = settings(
    max_examples=40,
    derandomize=True,  # the same examples on every run: CI stays reproducible
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# In-process, schema-valid requests may still be refused for reasons a schema cannot
# express (an opaque cursor, an order for a user who does not exist, one lookup key of
# several), so that check is left out here; the live run below makes it, with those rules
# named for their operations in schemathesis.toml.
EXCLUDED = [positive_data_acceptance]
SCHEMATHESIS_CONFIG = Path(__file__).parent / "schemathesis.toml"


@pytest.mark.django_db(databases=ALL_DATABASES)
def test_schema_and_docs_render():
    client = Client()
    schema = orjson.loads(client.get("/api/schema/?format=json").content)
    assert schema["openapi"].startswith("3.")
    assert {"/api/run-query/", "/api/users/", "/api/users/{id}/orders/", "/api/health/"} <= set(
        schema["paths"]
    )
    run_query = schema["paths"]["/api/run-query/"]
    assert {"200", "400", "404", "405", "503"} <= set(run_query["get"]["responses"])
    assert {"200", "400", "405", "413", "415", "503"} <= set(run_query["post"]["responses"])
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()


def without_volatile(value):
    """``value`` with what differs between two identical requests blanked: timestamps
    (fields ending ``_at``) and ``elapsed_ms``."""
    if isinstance(value, dict):
        return {
            k: None if k.endswith("_at") or k == "elapsed_ms" else without_volatile(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [without_volatile(v) for v in value]
    return value


@db
def test_schema_examples_are_the_apis_own_answers():
    """The documented insert and lookup examples are what the API answers to the
    assignment batch on empty databases and to those lookups afterwards.
    ``UPDATE_SCHEMA_EXAMPLES=1`` records them anew."""
    client = Client()
    batch = client.post("/api/run-query/?type=insert", read_batch(), "application/json")
    assert batch.status_code == 200, batch.content
    answers = {"insert": batch.json(), "lookups": {}}
    for name, query in schema_examples.LOOKUPS.items():
        response = client.get(f"/api/run-query/?{query}")
        assert response.status_code == 200, (query, response.content)
        answers["lookups"][name] = response.json()
    answers["failed"] = {}
    for status, (_, query) in schema_examples.FAILED_LOOKUPS.items():
        response = client.get(f"/api/run-query/?{query}")
        assert response.status_code == int(status), (query, response.content)
        answers["failed"][status] = response.json()
    if os.environ.get("UPDATE_SCHEMA_EXAMPLES"):
        text = json.dumps(answers, indent=1, ensure_ascii=False) + "\n"
        schema_examples.EXAMPLES_FILE.write_text(text, encoding="utf-8")
        schema_examples.recorded.cache_clear()
    assert without_volatile(answers) == without_volatile(schema_examples.recorded())


@pytest.mark.django_db(databases=ALL_DATABASES)
def test_run_query_examples_are_in_the_schema():
    """Swagger UI shows the real batch and real answers, and fills only ``type`` and
    ``user_id`` into a lookup's "Try it out" (a lookup takes exactly one key)."""
    schema = orjson.loads(Client().get("/api/schema.json").content)
    lookup, insert = (schema["paths"]["/api/run-query/"][method] for method in ("get", "post"))
    parameters = lookup["parameters"]
    filled = {p["name"] for p in parameters if "default" in p["schema"] or "examples" in p}
    assert filled == {"type", "user_id"}
    examples = lookup["responses"]["200"]["content"]["application/json"]["examples"]
    assert [e["value"] for e in examples.values()] == list(
        schema_examples.recorded()["lookups"].values()
    )
    for status in schema_examples.FAILED_LOOKUPS:
        failed = lookup["responses"][status]["content"]["application/json"]["examples"]
        assert [e["value"] for e in failed.values()] == [
            schema_examples.recorded()["failed"][status]
        ]
    request_examples = insert["requestBody"]["content"]["application/json"]["examples"]
    assert [e["value"] for e in request_examples.values()] == [read_batch()]
    stored = insert["responses"]["200"]["content"]["application/json"]["examples"]
    assert [e["value"] for e in stored.values()] == [schema_examples.recorded()["insert"]]


@pytest.fixture
def small_shop():
    """Users 1-5 (organisation 1), products 1-3, orders 1-3 of user 1: the examples' ids."""
    for i in range(1, 6):
        User.objects.create(id=i, name=f"User {i}", email=f"user{i}@example.com", organization_id=1)
    for i in range(1, 4):
        Product.objects.create(id=i, name=f"Product {i}", price=Decimal(i) + Decimal("0.50"))
    for i in range(1, 4):
        Order.objects.create(
            id=i, user_id=1, product_id=i, quantity=2, unit_price=Decimal("1.50"), total=3
        )


# The schema is generated from code, without a database, so it can load at import time.
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)


@db
@schema.parametrize()
@HYPOTHESIS
def test_no_input_produces_a_server_error_or_an_undocumented_answer(case, small_shop):
    """Every generated request, in-process, on rows the examples find."""
    case.call_and_validate(excluded_checks=EXCLUDED)


@sqlite_only  # the generated data goes to SQLite files in a temporary DATA_DIR
def test_a_live_server_on_generated_data_answers_as_documented(tmp_path):
    """Schemathesis's CLI over HTTP, through Gunicorn and the fast path, on generated rows.

    Every phase (examples, coverage, fuzzing, stateful), every check, so data generated
    from the schema must be accepted (``positive_data_acceptance``): the schema states
    every field rule (api/http/schema.py), and schemathesis.toml names the answers to
    rules it cannot state; the recorded exchanges show lookups answered 200, so the
    schema of a found row was checked, not only errors, and records created (201).
    """
    env = {"DATA_DIR": str(tmp_path / "db"), "WEB_CONCURRENCY": "2"}
    for command in (("migrate_all",), ("generate_data", "--rows", "3000", "--seed", "7")):
        run = manage(*command, "--verbosity", "0", env=env)
        assert run.returncode == 0, run.stderr
    bind = f"127.0.0.1:{runner.free_port()}"
    har = tmp_path / "exchanges.har"
    with runner.serve(bind, env=env) as server:
        runner.wait_healthy(f"http://{bind}", server)
        run = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                *("--config-file", str(SCHEMATHESIS_CONFIG), "run"),
                f"http://{bind}/api/schema/?format=json",
                *("--checks", "all"),
                *("--max-examples", "40", "--generation-deterministic", "--no-color"),
                *("--report", "har", "--report-har-path", str(har)),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert run.returncode == 0, run.stdout[-5000:]
    answered = Counter(
        (
            entry["request"]["method"],
            urlsplit(entry["request"]["url"]).path,
            entry["response"]["status"],
        )
        for entry in json.loads(har.read_text())["log"]["entries"]
    )
    assert answered["GET", "/api/run-query/", 200] > 0
    assert answered["POST", "/api/users/", 201] + answered["POST", "/api/products/", 201] > 0
    assert not [key for key in answered if key[2] >= 500]
