"""``/api/run-query/``: indexed lookups (GET ``type=get``) and concurrent inserts (POST).

A GET never writes: ``type=insert`` on GET is a 405 naming POST, and ``type=get`` on POST
a 405 naming GET.
"""

from time import perf_counter

from django.conf import settings
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework import status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView

from api.access import SCOPES, WRITE, lookup_permissions
from api.batches import MAX_BATCH_RECORDS, InvalidBatch, parse_batch
from api.errors import RETRY_AFTER_SECONDS, BadRequest, method_not_allowed, require_json
from api.idempotency import idempotent
from api.limits import MAX_LOOKUP_COUNT, MAX_SYNTHETIC_COUNT
from api.lookup_keys import INCLUDE_ORDERS, INCLUDES, LOOKUP_KEYS
from api.pagination import KeysetPagination
from api.query_params import (
    GET,
    INSERT,
    Lookup,
    Params,
    as_params,
    parse_insert_count,
    parse_lookup,
    query_type,
)
from api.renderers import JSONOnlyNegotiation
from api.schema_examples import insert_examples, lookup_examples
from api.selectors import UserOrders, lookup_rows, orders_with_products
from api.serializers import LOOKUP_OUTS, BatchIn, BatchOut, ErrorOut
from api.services.batch_insert import batch_insert
from api.services.results import BatchResult
from api.services.synthetic import synthetic_insert
from api.throttles import INSERT as INSERT_KIND
from api.throttles import LOOKUP as LOOKUP_KIND

ERRORS = {code: ErrorOut for code in (400, 405, 503)}
GET_TYPE_PARAM = OpenApiParameter("type", str, enum=[GET], required=True, default=GET)
INSERT_TYPE_PARAM = OpenApiParameter("type", str, enum=[INSERT], required=True, default=INSERT)
KEY_PARAMS = [
    OpenApiParameter(
        name,
        key.value.schema,
        description=f"{key.model}: {key.query} lookup on {key.column}, e.g. {key.example}",
        # Swagger UI fills every parameter that has an example into "Try it out", and a
        # lookup takes exactly one key: only ``user_id`` gets one, the others say it in words.
        examples=[OpenApiExample(name, value=key.example)] if name == "user_id" else [],
    )
    for name, key in LOOKUP_KEYS.items()
]
LOOKUP_OUT = PolymorphicProxySerializer(
    component_name="LookupOut",
    serializers=list(LOOKUP_OUTS.values()),
    resource_type_field_name=None,
)


def lookup_response_body(params: Params) -> dict:
    """The body for a GET: a lookup, or `MethodNotAllowed` for ``type=insert``.

    Raises `BadRequest` for malformed parameters and `NotFound` when nothing matches.
    """
    if query_type(params) == INSERT:
        raise method_not_allowed("GET", "POST", "type=insert writes: use POST")
    return lookup_body(parse_lookup(params))


def lookup_body(lookup: Lookup) -> dict:
    """The response body of a lookup; raises `NotFound` when nothing matches."""
    started = perf_counter()
    rows = lookup_rows(lookup)
    key = lookup.key
    if not rows:
        raise NotFound(f"no {key.model} with {key.name}={lookup.value}")
    if lookup.include_orders:
        included = orders_with_products([row["id"] for row in rows])
        for row in rows:
            row["orders"], row["orders_total"] = included.get(row["id"], NO_ORDERS)
            row["orders_next"] = (
                orders_page_after(row["id"], row["orders"][-1]["id"])
                if len(row["orders"]) < row["orders_total"]
                else None
            )
    return {
        "type": GET,
        "model": key.model,
        "key": key.name,
        "value": lookup.value,
        "count": lookup.count,
        "results": rows,
        "elapsed_ms": round((perf_counter() - started) * 1000, 3),
    }


NO_ORDERS = UserOrders([], 0)


def orders_page_after(user_id: int, order_id: int) -> str:
    """The path of ``user_id``'s orders page that starts after ``order_id`` (keyset cursor)."""
    cursor = KeysetPagination.cursor_after(order_id)
    return f"{reverse('user-orders', args=[user_id])}?cursor={cursor}"


def batch_status(result: BatchResult) -> int:
    """200 when no database failed; 503 when one did and nothing was stored; 207 (some
    records stored, some ``failed``: a partial commit) otherwise.

    A 503 tells a client that nothing happened, so it is never the answer to a batch of
    which part was written.
    """
    if not result.has_failures:
        return status.HTTP_200_OK
    return (
        status.HTTP_207_MULTI_STATUS if result.has_inserts else status.HTTP_503_SERVICE_UNAVAILABLE
    )


def batch_response(result: BatchResult, started: float) -> Response:
    """Every record's result, with `batch_status`; ``Retry-After`` when any record failed."""
    body = {
        "type": INSERT,
        "summary": result.summary(),
        **{name: [r.as_dict() for r in rs] for name, rs in result.by_model().items()},
        "elapsed_ms": round((perf_counter() - started) * 1000, 3),
    }
    code = batch_status(result)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if result.has_failures else None
    return Response(body, status=code, headers=headers)


class RunQueryView(APIView):
    """Look records up by an indexed key, or insert a batch concurrently."""

    content_negotiation_class = JSONOnlyNegotiation

    def required_permissions(self, request) -> frozenset[str]:
        """A lookup: reading its key's model (`api.access.lookup_permissions`); an insert:
        the ``write`` scope. Also read by the lookup fast path, with its own request."""
        if request.method == "POST":
            return SCOPES[WRITE]
        return lookup_permissions(request.query_params.keys())

    def throttle_kind(self, request) -> str | None:
        """`api.throttles` kind: lookups and inserts have their own rates."""
        return INSERT_KIND if request.method == "POST" else LOOKUP_KIND

    @extend_schema(
        operation_id="run_query_get",
        parameters=[
            GET_TYPE_PARAM,
            *KEY_PARAMS,
            OpenApiParameter(
                "count",
                {"type": "integer", "minimum": 1, "maximum": MAX_LOOKUP_COUNT},
                description=f"1 to {MAX_LOOKUP_COUNT}, default 1",
            ),
            OpenApiParameter(
                "include",
                str,
                enum=list(INCLUDES),
                description="keys: "
                + ", ".join(n for n, k in LOOKUP_KEYS.items() if INCLUDE_ORDERS in k.includes),
            ),
        ],
        responses={200: LOOKUP_OUT, 404: ErrorOut, **ERRORS},
        examples=lookup_examples(),
        description="`type=get`: exactly one key. Id keys return the ids in "
        "[value, value + count); `email` at most one user; `organization_id` the first "
        "`count` users. `include=orders` adds each user's orders with their products.",
    )
    def get(self, request):
        return Response(lookup_response_body(as_params(request.query_params)))

    @extend_schema(
        operation_id="run_query_insert",
        parameters=[
            INSERT_TYPE_PARAM,
            OpenApiParameter(
                "count",
                int,
                description=f"1 to {MAX_SYNTHETIC_COUNT}: insert this many synthetic records "
                "per model instead of a body",
            ),
        ],
        request={"application/json": BatchIn, "*/*": OpenApiTypes.NONE},
        responses={
            200: BatchOut,
            207: OpenApiResponse(
                BatchOut,
                description="partial commit: some records stored, "
                "some `failed` (retry those after Retry-After)",
            ),
            413: ErrorOut,
            415: ErrorOut,
            **ERRORS,
            503: OpenApiResponse(
                BatchOut,
                description="a database failed and nothing was "
                "stored: every valid record is `failed`; retry after Retry-After",
            ),
        },
        examples=insert_examples(),
        description=f"`type=insert`: at most {MAX_BATCH_RECORDS} records per batch. Each "
        "record comes back `inserted`, `rejected` (with reasons) or `failed`: 200 when "
        "none failed, 207 when some were stored and some failed, 503 when nothing was "
        "stored because a database failed.",
    )
    @idempotent
    def post(self, request):
        params = as_params(request.query_params)
        if query_type(params) == GET:
            raise method_not_allowed("POST", "GET", "type=get reads: use GET")
        count = parse_insert_count(params)
        require_json(request)
        started = perf_counter()
        if count is not None:
            if not settings.SYNTHETIC_INSERTS_ENABLED:
                raise PermissionDenied("synthetic inserts (count=N) are off here")
            if request.data:
                raise BadRequest("give either a JSON body or count=N, not both")
            return batch_response(synthetic_insert(count=count), started)
        if not request.data:
            raise BadRequest("give a JSON body with users, products, orders, or count=N")
        try:
            batch = parse_batch(request.data)
        except InvalidBatch as exc:
            raise BadRequest(str(exc), exc.details) from exc
        return batch_response(batch_insert(**batch), started)
