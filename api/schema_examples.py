"""Examples in the OpenAPI schema for ``/api/run-query/``, taken from the API itself.

The request example is the assignment data set (`api.batches.ASSIGNMENT_FILE`). The
response examples are what the API answered to that batch on empty databases and to
lookups of the records it stored, recorded in ``fixtures/schema_examples.json`` by
``UPDATE_SCHEMA_EXAMPLES=1 pytest api/tests/test_schema.py``; the suite asks the API the
same questions and fails when its answers no longer match (timestamps and ``elapsed_ms``
aside), so the docs never show a shape the API does not return.
"""

import json
from pathlib import Path

from drf_spectacular.utils import OpenApiExample

from api.batches import read_batch

EXAMPLES_FILE = Path(__file__).resolve().parent / "fixtures" / "schema_examples.json"
# The lookups recorded: (example name, query string).
LOOKUPS = {
    "user by id, with orders": "type=get&user_id=1&include=orders",
    "user by email": "type=get&email=bob@example.com",
    "three products from id 1": "type=get&product_id=1&count=3",
}


def recorded() -> dict:
    """``{"insert": <response body>, "lookups": {name: <response body>}}`` from the file."""
    return json.loads(EXAMPLES_FILE.read_text(encoding="utf-8"))


def lookup_examples() -> list[OpenApiExample]:
    """One response example per recorded lookup, its query string in the summary."""
    answers = recorded()["lookups"]
    return [
        OpenApiExample(name, value=answers.get(name), summary=f"?{query}", response_only=True)
        for name, query in LOOKUPS.items()
    ]


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
