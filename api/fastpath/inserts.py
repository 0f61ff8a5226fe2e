"""What the fast path reads of an insert request before it answers one.

`insert_document` decides, before any DRF policy runs, whether the fast path may answer a
``POST /api/run-query/?type=insert``: the request must be one Django's path would read the
same way (a plain query, a JSON content type, a body of ``Content-Length`` bytes within
``DATA_UPLOAD_MAX_MEMORY_SIZE`` that parses as a non-empty JSON document nested no deeper
than `MAX_JSON_DEPTH`, no ``Idempotency-Key``). Anything else goes to Django, with the
body it read put back, and Django answers it (the 400, 413 or 415, the idempotent
replay). The decision comes before the policies because a throttle counts the request:
once they ran, the fast path answers whatever happens.
"""

from io import BytesIO

import orjson

from api.domain.limits import MAX_JSON_DEPTH
from api.http.parsers import nesting_depth
from api.http.query_params import INSERT

INSERT_QUERY = f"type={INSERT}"
# What `api.http.errors.require_json` and ORJSONParser accept, spelled as clients send it;
# another spelling (upper case, another charset) is Django's to read.
JSON_CONTENT_TYPES = frozenset({"application/json", "application/json; charset=utf-8"})
IDEMPOTENCY_KEY = "HTTP_IDEMPOTENCY_KEY"  # api.http.idempotency.HEADER in the environ


def insert_document(environ: dict, max_body_bytes: int, key_required: bool):
    """The parsed JSON body of an insert the fast path may answer, or None for Django.

    ``max_body_bytes``: ``DATA_UPLOAD_MAX_MEMORY_SIZE``; ``key_required``:
    ``IDEMPOTENCY_KEY_REQUIRED``. A body read and then left to Django is put back as the
    request's ``wsgi.input``, so Django reads the same bytes.
    """
    if (
        environ.get("QUERY_STRING") != INSERT_QUERY
        or environ.get("CONTENT_TYPE") not in JSON_CONTENT_TYPES
        or key_required
        or IDEMPOTENCY_KEY in environ
        or "HTTP_TRANSFER_ENCODING" in environ
    ):
        return None
    length = environ.get("CONTENT_LENGTH", "")
    if not length.isdigit() or not 0 < int(length) <= max_body_bytes:
        return None
    body = environ["wsgi.input"].read(int(length))
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = None
    if not document or (
        not records_of_scalars(document)
        and nesting_depth(document, MAX_JSON_DEPTH) > MAX_JSON_DEPTH
    ):
        environ["wsgi.input"] = BytesIO(body)
        return None
    return document


def records_of_scalars(document) -> bool:
    """Whether ``document`` is an object of lists of flat objects (nested 3 deep at most,
    the usual batch): then ORJSONParser's depth limit cannot refuse it."""
    if not isinstance(document, dict):
        return False
    for records in document.values():
        if isinstance(records, dict):
            return False
        if not isinstance(records, list):
            continue  # a scalar: the batch's 400, at depth 1
        for record in records:
            if isinstance(record, list):
                return False
            if isinstance(record, dict):
                for value in record.values():
                    if isinstance(value, dict | list):
                        return False
    return True
