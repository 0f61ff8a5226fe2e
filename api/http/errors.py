"""One error envelope for the whole API: ``{"error": "message", "details": {...}}``.

`exception_handler` is DRF's ``EXCEPTION_HANDLER``: it turns every DRF exception, Django's
404, an oversize body and any database error into that envelope. A database that is down
or locked past its busy timeout is a 503 with ``Retry-After``, never a 500; its body names
the store and the kind of failure (`api.db.failures.failure_kind`), never the driver's
message, which can carry host names, roles and file paths: that goes to the log. The
``handler*`` functions give Django's own 400/404/500 pages the same JSON shape.
"""

import logging

from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response

from api.db.failures import StoreShed, failure_kind, unavailable_reason
from api.db.routers import DatabaseRouter

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
DATABASE_UNAVAILABLE = "database unavailable, retry later"
NOT_FOUND = "not found"


class ApiError(exceptions.APIException):
    """An API error with a one-line message and optional per-field ``details``."""

    def __init__(self, message: str | None = None, details: dict | None = None):
        super().__init__(message)
        self.details = details or {}


class BadRequest(ApiError):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "bad request"


class Conflict(ApiError):
    """The record collides with a stored one (duplicate e-mail, existing id)."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "conflict"


class UnprocessableEntity(ApiError):
    """The request is well-formed but cannot be carried out as sent (an ``Idempotency-Key``
    reused with another payload)."""

    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "unprocessable request"


class PayloadTooLarge(ApiError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "request body too large"


class ServiceUnavailable(ApiError):
    """A database is down or locked past its timeout; retry after ``Retry-After`` seconds."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = DATABASE_UNAVAILABLE


def database_unavailable(exc: DatabaseError, store: str | None = None) -> ServiceUnavailable:
    """Log a database failure in full and turn it into the 503 the client sees.

    ``store`` is the store (``users``, ``products``, ``orders``) or None when unknown; a
    `StoreUnavailable` names its own. The body says
    ``{"store": ..., "failure": failure_kind(exc)}``.
    """
    kind = failure_kind(exc)
    store = getattr(exc, "store", None) or store
    if isinstance(exc, StoreShed):  # refused unasked: the failure that opened it was logged
        logger.info("database %s: request shed (%s)", store or "?", kind)
    else:
        logger.error("database %s failed (%s): %s", store or "?", kind, exc, exc_info=exc)
    message = unavailable_reason(store, kind) if store else DATABASE_UNAVAILABLE
    return ServiceUnavailable(message, {"store": store, "failure": kind})


def envelope(message: str, details: dict | None = None) -> dict:
    """The body of every error response."""
    return {"error": message, "details": details or {}}


def as_api_exception(exc: Exception, store: str | None = None) -> exceptions.APIException | None:
    """The API error ``exc`` stands for, or None when it is not one (a bug: re-raise).

    ``store`` names the database a `DatabaseError` came from, when the caller knows it.
    """
    if isinstance(exc, Http404):
        return exceptions.NotFound(NOT_FOUND)
    if isinstance(exc, RequestDataTooBig):
        return PayloadTooLarge()
    if isinstance(exc, DatabaseError):
        return database_unavailable(exc, store)
    return exc if isinstance(exc, exceptions.APIException) else None


def error_response_parts(exc: exceptions.APIException) -> tuple[int, dict, dict[str, str]]:
    """``(status, enveloped body, headers)`` of the response for ``exc``."""
    headers = {}
    if getattr(exc, "allow", None):
        headers["Allow"] = exc.allow
    if exc.status_code == status.HTTP_503_SERVICE_UNAVAILABLE:
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    # What DRF's own exception handler adds: the 401's challenge (set by the view from
    # its first authentication class) and the 429's wait.
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None) is not None:
        headers["Retry-After"] = str(exc.wait)
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail
        body = envelope("invalid input", detail if isinstance(detail, dict) else {"input": detail})
    else:
        body = envelope(str(exc.detail), getattr(exc, "details", {}))
    return exc.status_code, body, headers


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF ``EXCEPTION_HANDLER``: map ``exc`` to an enveloped response, or None to re-raise."""
    view = context.get("view")
    api_exc = as_api_exception(exc, store_of(view))
    if api_exc is None:
        return None
    status_code, body, headers = error_response_parts(api_exc)
    if "Allow" in headers and view is not None:
        # DRF sets Allow from the view's headers after this handler; narrow it there.
        view.headers["Allow"] = headers["Allow"]
    return Response(body, status=status_code, headers=headers)


def store_of(view) -> str | None:
    """The routed alias a resource view reads (its serializer's model), or None."""
    model = getattr(getattr(getattr(view, "serializer_class", None), "Meta", None), "model", None)
    return DatabaseRouter.model_alias(model) if model is not None else None


def method_not_allowed(method: str, allow: str, message: str) -> exceptions.MethodNotAllowed:
    """A 405 whose ``Allow`` header names only ``allow``."""
    exc = exceptions.MethodNotAllowed(method, detail=message)
    exc.allow = allow
    return exc


def require_json(request) -> None:
    """Refuse (415) a write whose ``Content-Type`` is not JSON, even with an empty body.

    The rule that stops cross-site writes: a browser sends a cross-site request without
    asking first (CORS preflight, which this service never grants) only with a form's
    content types, so a page on another site cannot make a browser write here.
    """
    if request.content_type.split(";")[0].strip().lower() != "application/json":
        raise exceptions.UnsupportedMediaType(
            request.content_type or "none",
            detail="writes must be sent as Content-Type: application/json",
        )


def handler400(request, exception=None) -> JsonResponse:
    return JsonResponse(envelope("bad request"), status=400)


def handler404(request, exception=None) -> JsonResponse:
    return JsonResponse(envelope(NOT_FOUND, {"path": request.path}), status=404)


def handler500(request) -> JsonResponse:
    return JsonResponse(envelope("internal server error"), status=500)
