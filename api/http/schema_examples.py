"""Examples in the OpenAPI schema for ``/api/run-query/``, taken from the API itself.

The request example is the assignment data set (`api.domain.batches.ASSIGNMENT_FILE`). The
response examples are what the API answered to that batch on empty databases and to
lookups of the records it stored, recorded in ``fixtures/schema_examples.json`` by
``UPDATE_SCHEMA_EXAMPLES=1 pytest api/tests/test_schema.py``; the suite asks the API the
same questions and fails when its answers no longer match (timestamps and ``elapsed_ms``
aside), so the docs never show a shape the API does not return.
"""

import json
from functools import cache
from pathlib import Path

from drf_spectacular.utils import OpenApiExample

from api.domain.batches import read_batch

EXAMPLES_FILE = Path(__file__).resolve().parent.parent / "fixtures" / "schema_examples.json"
# The lookups recorded: (example name, query string).
LOOKUPS = {
    "user by id, with orders": "type=get&user_id=1&include=orders",
    "user by email": "type=get&email=bob@example.com",
    "three products from id 1": "type=get&product_id=1&count=3",
}
# Lookups that fail, by the status they get: (example name, query string).
FAILED_LOOKUPS = {
    "400": ("two keys", "type=get&user_id=1&email=bob@example.com"),
    "404": ("no such user", "type=get&user_id=999999"),
}


@cache
def recorded() -> dict:
    """``{"insert": <body>, "lookups": {name: <body>}, "failed": {status: <body>}}``, the
    recorded answers (read once)."""
    return json.loads(EXAMPLES_FILE.read_text(encoding="utf-8"))


def lookup_examples() -> list[OpenApiExample]:
    """One response example per recorded lookup and failed lookup, its query string in the
    summary."""
    answers = recorded()
    found = [
        OpenApiExample(name, value=answers["lookups"].get(name), summary=f"?{query}")
        for name, query in LOOKUPS.items()
    ]
    failed = [
        OpenApiExample(
            name,
            value=answers.get("failed", {}).get(status),
            summary=f"?{query}",
            status_codes=[status],
        )
        for status, (name, query) in FAILED_LOOKUPS.items()
    ]
    return [*found, *failed]


def insert_examples() -> list[OpenApiExample]:
    """The assignment batch as the request, and the API's answer to it."""
    return [
        OpenApiExample("the assignment data set", value=read_batch(), request_only=True),
        OpenApiExample(
            "the assignment data set, stored",
            value=recorded().get("insert"),
            response_only=True,
            status_codes=["200"],
        ),
    ]
