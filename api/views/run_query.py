"""``/api/run-query/``: indexed lookups (GET ``type=get``) and concurrent inserts (POST).

A GET never writes: ``type=insert`` on GET is a 405 naming POST, and ``type=get`` on POST
a 405 naming GET.
"""

from time import perf_counter

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from api.batches import MAX_BATCH_RECORDS, InvalidBatch, parse_batch
from api.errors import (
    RETRY_AFTER_SECONDS,
    BadRequest,
    as_api_exception,
    error_response_parts,
    method_not_allowed,
)
from api.query_params import (
    GET,
    INSERT,
    LOOKUP_KEYS,
    MAX_LOOKUP_COUNT,
    MAX_SYNTHETIC_COUNT,
    Lookup,
    Params,
    as_params,
    parse_insert_count,
    parse_lookup,
    query_type,
)
from api.renderers import JSONOnlyNegotiation, dumps
from api.selectors import KEY_MODELS, lookup_rows, orders_with_products
from api.serializers import BatchIn, BatchOut, ErrorOut, LookupOut
from api.services.batch_insert import batch_insert
from api.services.results import BatchResult
from api.services.synthetic import synthetic_insert

ERRORS = {status: ErrorOut for status in (400, 405, 503)}
TYPE_PARAM = OpenApiParameter("type", str, enum=[GET, INSERT], required=True)


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
    if not rows:
        raise NotFound(f"no {KEY_MODELS[lookup.key]} with {lookup.key}={lookup.value}")
    if lookup.include_orders:
        orders = orders_with_products([row["id"] for row in rows])
        for row in rows:
            row["orders"] = orders.get(row["id"], [])
    return {
        "type": GET,
        "model": KEY_MODELS[lookup.key],
        "key": lookup.key,
        "value": lookup.value,
        "count": lookup.count,
        "results": rows,
        "elapsed_ms": round((perf_counter() - started) * 1000, 3),
    }


def batch_response(result: BatchResult, started: float) -> Response:
    """200 with every record's result, or 503 + ``Retry-After`` if a database failed."""
    body = {
        "type": INSERT,
        "summary": result.summary(),
        **{name: [r.as_dict() for r in rs] for name, rs in result.by_model().items()},
        "elapsed_ms": round((perf_counter() - started) * 1000, 3),
    }
    if result.has_failures:
        return Response(body, status=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    return Response(body)


class RunQueryView(APIView):
    """Look records up by an indexed key, or insert a batch concurrently."""

    content_negotiation_class = JSONOnlyNegotiation

    def dispatch(self, request, *args, **kwargs):
        """Serve GET without DRF's request machinery: lookups are the hottest path.

        DRF's request wrapping, negotiation and response finalising cost about a third of a
        lookup's server time. GET answers (lookups and their errors) are built here with the
        same envelope and statuses as DRF's exception handler; POST and the rest take DRF's
        full path.
        """
        if request.method != "GET":
            return super().dispatch(request, *args, **kwargs)
        try:
            body, status_code, headers = lookup_response_body(as_params(request.GET)), 200, {}
        except Exception as exc:
            api_exc = as_api_exception(exc)
            if api_exc is None:
                raise
            status_code, body, headers = error_response_parts(api_exc)
        return HttpResponse(
            dumps(body), status=status_code, content_type="application/json", headers=headers
        )

    @extend_schema(
        operation_id="run_query_get",
        parameters=[
            TYPE_PARAM,
            *(OpenApiParameter(key, str if key == "email" else int) for key in LOOKUP_KEYS),
            OpenApiParameter("count", int, description=f"1 to {MAX_LOOKUP_COUNT}, default 1"),
            OpenApiParameter("include", str, enum=["orders"], description="user keys only"),
        ],
        responses={200: LookupOut, 404: ErrorOut, **ERRORS},
        description="`type=get`: exactly one key. Id keys return the ids in "
        "[value, value + count); `email` at most one user; `organization_id` the first "
        "`count` users. `include=orders` adds each user's orders with their products.",
    )
    def get(self, request):
        return Response(lookup_response_body(as_params(request.query_params)))

    @extend_schema(
        operation_id="run_query_insert",
        parameters=[
            TYPE_PARAM,
            OpenApiParameter(
                "count",
                int,
                description=f"1 to {MAX_SYNTHETIC_COUNT}: insert this many synthetic records "
                "per model instead of a body",
            ),
        ],
        request={"application/json": BatchIn, "*/*": OpenApiTypes.NONE},
        responses={200: BatchOut, 413: ErrorOut, 415: ErrorOut, **ERRORS},
        description=f"`type=insert`: at most {MAX_BATCH_RECORDS} records per batch. Each "
        "record comes back `inserted`, `rejected` (with reasons) or `failed` (503).",
    )
    def post(self, request):
        params = as_params(request.query_params)
        if query_type(params) == GET:
            raise method_not_allowed("POST", "GET", "type=get reads: use GET")
        count = parse_insert_count(params)
        started = perf_counter()
        if count is not None:
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
