"""``Idempotency-Key`` on the POSTs that insert (draft-ietf-httpapi-idempotency-key-header).

`idempotent` wraps a DRF ``post``. The first request with a key claims it (a running
`IdempotencyKey` row; the unique ``(owner, key)`` decides between concurrent requests) and
keeps its final response (2xx, 207, 4xx). The same key and payload replays that response
byte for byte with ``Idempotent-Replayed: true``; another payload is a 422; while the
first still runs, a wait of ``IDEMPOTENCY_WAIT_SECONDS``, then a 409 with ``Retry-After``.
A 5xx, a request that raised, or one running past ``IDEMPOTENCY_ABANDONED_SECONDS`` (its
worker died) frees the key so a retry runs again. Keys belong to the token's user (or
``anonymous``) and expire after ``IDEMPOTENCY_KEY_SECONDS``.
"""

import functools
import hashlib
import logging
import time
from datetime import datetime, timedelta

import orjson
from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter
from rest_framework.response import Response

from api.db.routers import DEFAULT_ALIAS
from api.http.errors import BadRequest, Conflict, UnprocessableEntity, database_unavailable
from api.http.renderers import dumps
from api.metrics import IDEMPOTENT_REPLAYS
from api.models import IdempotencyKey

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# Response headers a replay repeats: a 207's Retry-After, a 405's Allow.
REPLAYED_HEADERS = ("Retry-After", "Allow")
MAX_KEY_LENGTH = 255
POLL_SECONDS = 0.05
RETRY_AFTER_SECONDS = 1  # a 409's Retry-After: the first request is about to finish

# Documented on every decorated operation by `api.http.schema.AutoSchema`, with 409 and 422.
KEY_PARAMETER = OpenApiParameter(
    HEADER,
    {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": "^[ -~]+$"},
    location=OpenApiParameter.HEADER,
    description="Repeat the request safely: the same key and payload replay the first "
    "response (`Idempotent-Replayed: true`) and insert nothing more; another payload is "
    "a 422; while the first request runs, a 409 with Retry-After. Scoped to the token, "
    "kept IDEMPOTENCY_KEY_SECONDS (24 h).",
)
KEY_ERRORS = (409, 422)

KEY_INVALID = f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters"
KEY_REQUIRED = f"this request needs an {HEADER} header"
KEY_REUSED = f"this {HEADER} was used with another request"
KEY_IN_USE = f"a request with this {HEADER} is still running; retry later"


class KeyInUse(Conflict):
    """409: the first request with the key has not finished yet."""

    wait = RETRY_AFTER_SECONDS  # read by `api.http.errors.error_response_parts`: Retry-After


def parse_key(value: str | None) -> str | None:
    """The key in an ``Idempotency-Key`` header value, or None when there is none.

    The draft makes it a structured-field string (``"abc"``); a bare ``abc`` is accepted
    too. Raises `BadRequest` unless it is 1 to 255 printable ASCII characters.
    """
    if value is None:
        return None
    key = value.strip(" \t")
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in key):
        raise BadRequest(KEY_INVALID, {"header": HEADER})
    return key


def owner_of(request) -> str:
    """Whose key it is: ``user:<id>`` for a token client (`api.http.access.Client`), else
    ``anonymous``."""
    user_id = getattr(request.auth, "user_id", None)
    return "anonymous" if user_id is None else f"user:{user_id}"


def request_fingerprint(request) -> str:
    """sha256 hex of the method, path, sorted query parameters and the parsed JSON body.

    The body is canonical JSON (keys sorted), so whitespace and key order do not count.
    Reading ``request.data`` raises DRF's parse errors (415, 400, 413) as the view would.
    """
    query = sorted((k, v) for k, values in request.query_params.lists() for v in values)
    document = [request.method, request.path, query, request.data]
    canonical = orjson.dumps(document, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def idempotency_key_claim(
    *, owner: str, key: str, fingerprint: str
) -> IdempotencyKey | HttpResponse:
    """Claim ``key`` for this request (a running row), or answer from its existing row.

    Returns the claimed row, or the replay of the first request's response. Waits up to
    ``IDEMPOTENCY_WAIT_SECONDS`` (polling every `POLL_SECONDS`) while that request runs.
    Raises `UnprocessableEntity` (422) for another payload, `KeyInUse` (409) when the
    first request is still running after the wait, `ServiceUnavailable` (503) when the
    default database fails.
    """
    deadline = time.monotonic() + settings.IDEMPOTENCY_WAIT_SECONDS
    try:
        while True:
            now = timezone.now()
            try:
                # Its own short transaction (a savepoint inside an outer one): a failed
                # INSERT must not break the caller's.
                with transaction.atomic(using=DEFAULT_ALIAS):
                    return IdempotencyKey.objects.create(
                        owner=owner,
                        key=key,
                        fingerprint=fingerprint,
                        created_at=now,
                        expires_at=now + timedelta(seconds=settings.IDEMPOTENCY_KEY_SECONDS),
                    )
            except IntegrityError:
                pass  # the key is taken: answer from its row
            row = IdempotencyKey.objects.filter(owner=owner, key=key).first()
            if row is None:
                continue  # its request failed or it expired in the meantime: claim it anew
            if row.expires_at <= now:
                IdempotencyKey.objects.filter(pk=row.pk, expires_at__lte=now).delete()
                continue
            if row.fingerprint != fingerprint:
                raise UnprocessableEntity(KEY_REUSED, {"header": HEADER})
            if row.status is not None:
                return replay(row)
            abandoned = now - timedelta(seconds=settings.IDEMPOTENCY_ABANDONED_SECONDS)
            if row.created_at <= abandoned:  # its worker died mid-request: run it again
                IdempotencyKey.objects.filter(
                    pk=row.pk, status__isnull=True, created_at__lte=abandoned
                ).delete()
                continue
            if time.monotonic() >= deadline:
                raise KeyInUse(KEY_IN_USE, {"header": HEADER})
            time.sleep(POLL_SECONDS)
    except DatabaseError as exc:
        raise database_unavailable(exc, DEFAULT_ALIAS) from exc


def replay(row: IdempotencyKey) -> HttpResponse:
    """The stored response of ``row``'s first request, marked ``Idempotent-Replayed``
    (counted in `api.metrics.IDEMPOTENT_REPLAYS`)."""
    IDEMPOTENT_REPLAYS.inc()
    return HttpResponse(
        bytes(row.body),  # PostgreSQL gives a memoryview
        status=row.status,
        content_type="application/json",
        headers={**row.headers, REPLAYED_HEADER: "true"},
    )


def idempotency_key_settle(*, row: IdempotencyKey, response: HttpResponse) -> None:
    """Keep ``response`` as the key's answer, or free the key when it is a 5xx.

    A failure of the default database here is logged, not raised: the records are in,
    and the client must get their response. The key then stays running (409) until it
    expires, which is safer than letting a retry insert again.
    """
    try:
        if response.status_code >= 500:
            IdempotencyKey.objects.filter(pk=row.pk).delete()
            return
        body = dumps(response.data) if isinstance(response, Response) else response.content
        headers = {name: response[name] for name in REPLAYED_HEADERS if response.has_header(name)}
        IdempotencyKey.objects.filter(pk=row.pk).update(
            status=response.status_code, body=body, headers=headers
        )
    except DatabaseError:
        logger.exception("idempotency key %s of %s: response not stored", row.key, row.owner)


def idempotency_key_release(*, row: IdempotencyKey) -> None:
    """Free the key of a request that raised: a retry with it runs again."""
    try:
        IdempotencyKey.objects.filter(pk=row.pk).delete()
    except DatabaseError:
        logger.exception("idempotency key %s of %s: not released", row.key, row.owner)


def idempotency_keys_expire(*, now: datetime | None = None) -> int:
    """Delete every key expired at ``now`` (default: the current time); return how many."""
    deleted, _ = IdempotencyKey.objects.filter(expires_at__lte=now or timezone.now()).delete()
    return deleted


def idempotent(post):
    """Decorate a DRF view's ``post(self, request, *args, **kwargs)`` with ``Idempotency-Key``.

    Raises `BadRequest` (400) for a malformed key, or for a missing one when
    ``IDEMPOTENCY_KEY_REQUIRED``; see `idempotency_key_claim` for 409, 422 and 503.
    """

    @functools.wraps(post)
    def wrapper(view, request, *args, **kwargs):
        key = parse_key(request.headers.get(HEADER))
        if key is None:
            if settings.IDEMPOTENCY_KEY_REQUIRED:
                raise BadRequest(KEY_REQUIRED, {"header": HEADER})
            return post(view, request, *args, **kwargs)
        claim = idempotency_key_claim(
            owner=owner_of(request), key=key, fingerprint=request_fingerprint(request)
        )
        if isinstance(claim, HttpResponse):
            # finalize_response would put the view's default Allow over the stored one.
            view.headers.update({k: v for k, v in claim.items() if k in REPLAYED_HEADERS})
            return claim
        try:
            try:
                response = post(view, request, *args, **kwargs)
            except Exception as exc:
                # The error response DRF would give, so that a 4xx is kept like any answer.
                response = view.handle_exception(exc)
        except BaseException:  # a bug (500) or the worker stopping: nothing to keep
            idempotency_key_release(row=claim)
            raise
        idempotency_key_settle(row=claim, response=response)
        return response

    wrapper.idempotent = True  # `api.http.schema.AutoSchema` documents the header
    return wrapper
