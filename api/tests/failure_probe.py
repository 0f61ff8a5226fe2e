"""Run in a subprocess by ``test_failures.py``: every request a broken store can fail,
through the fast path and through Django's, and what the process logged.

Prints one JSON document: ``{"answers": [{"name", "status", "retry_after", "body"}],
"logged": [text of every logged exception, its causes and their class names]}``. The
store is broken by the caller (its environment: ``DATA_DIR``, ``DATABASE_URL_<ALIAS>``;
or a lock it holds); this process only asks.
"""

import logging
import sys
from io import BytesIO

import orjson
from django.test import Client

from data_project.wsgi import application  # sets Django up, as Gunicorn imports it

HOST = "localhost"
# Users 1-2 and orders for them: the orders read the users store for their references.
BATCH = {
    "users": [{"name": "Ada", "email": "ada.probe@example.com"}],
    "orders": [{"user_id": 1, "product_id": 1, "quantity": 1}],
}
ORDERS_ONLY = {"orders": [{"user_id": 1, "product_id": 1, "quantity": 1}]}
LOOKUPS = ("type=get&user_id=1", "type=get&user_id=1&include=orders", "type=get&email=a@b.c")


class Recorder(logging.Handler):
    """Keeps the text of every exception logged, with its causes and class names."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        exceptions = [record.exc_info[1]] if record.exc_info else []
        exceptions += [arg for arg in record.args or () if isinstance(arg, BaseException)]
        while exceptions:
            exc = exceptions.pop()
            if exc is None:
                continue
            self.texts.add(type(exc).__name__)
            self.texts.update(line.strip() for line in str(exc).splitlines() if line.strip())
            exceptions += [exc.__cause__, exc.__context__]


def wsgi(method: str, path: str, query: str = "", body: dict | None = None) -> dict:
    """One call of the served application (the fast path first, as Gunicorn serves it)."""
    raw = orjson.dumps(body) if body is not None else b""
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": HOST,
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": HOST,
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": BytesIO(raw),
        "wsgi.errors": sys.stderr,
    }
    if body is not None:
        environ |= {"CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(raw))}
    answer = {}

    def start_response(status, headers, exc_info=None):
        answer.update(status=int(status.split()[0]), headers=dict(headers))

    chunks = application(environ, start_response)
    content = b"".join(chunks)
    getattr(chunks, "close", lambda: None)()
    return {
        "status": answer["status"],
        "retry_after": answer["headers"].get("Retry-After"),
        "body": content.decode(),
    }


def django(client: Client, method: str, path: str, body: dict | None = None, **headers) -> dict:
    """One request through Django's own request cycle (no fast path)."""
    if method == "GET":
        response = client.get(path, **headers)
    else:
        response = client.post(path, body or {}, content_type="application/json", **headers)
    return {
        "status": response.status_code,
        "retry_after": response.get("Retry-After"),
        "location": response.get("Location"),
        "body": response.content.decode(),
    }


def main() -> None:
    recorder = Recorder()
    logging.getLogger().addHandler(recorder)
    client = Client(HTTP_HOST=HOST)
    answers = {}
    for query in LOOKUPS:
        answers[f"fast GET {query}"] = wsgi("GET", "/api/run-query/", query)
        answers[f"django GET {query}"] = django(client, "GET", f"/api/run-query/?{query}")
    # Each insert twice: the second meets the breaker the first opened (shed).
    for attempt in (1, 2):
        for name, batch in (("batch", BATCH), ("orders", ORDERS_ONLY)):
            answers[f"fast POST {name} {attempt}"] = wsgi(
                "POST", "/api/run-query/", "type=insert", batch
            )
            answers[f"django POST {name} {attempt}"] = django(
                client, "POST", "/api/run-query/?type=insert", batch, HTTP_IDEMPOTENCY_KEY=name
            )
    for name, path, body in (
        ("create user", "/api/users/", {"name": "Bo", "email": "bo.probe@example.com"}),
        ("create order", "/api/orders/", {"user_id": 1, "product_id": 1, "quantity": 1}),
    ):
        answers[name] = django(client, "POST", path, body)
    for path in ("/api/users/1/", "/api/users/", "/api/users/1/orders/", "/api/stats/"):
        answers[f"GET {path}"] = django(client, "GET", path)
    answers["GET /api/health/"] = django(client, "GET", "/api/health/")
    answers["POST /run/"] = run = django(client, "POST", "/run/")
    if run["status"] == 303:  # the result page of a partial commit
        answers["GET /run/?result"] = django(client, "GET", run["location"])
    answers["GET /run/"] = django(client, "GET", "/run/")
    document = {
        "answers": [{"name": name, **answer} for name, answer in answers.items()],
        "logged": sorted(recorder.texts),
    }
    print(orjson.dumps(document).decode())


if __name__ == "__main__":
    main()
