"""``/api/run-query/``: indexed lookups (GET ``type=get``) and concurrent inserts (POST).

A GET never writes: ``type=insert`` on GET is a 405 naming POST, and ``type=get`` on POST
a 405 naming GET.
"""

from time import perf_counter

from django.conf import settings
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView

from api.domain.batches import MAX_BATCH_RECORDS, InvalidBatch, parse_batch
from api.domain.limits import MAX_LOOKUP_COUNT, MAX_SYNTHETIC_COUNT
from api.domain.lookup_keys import INCLUDE_ORDERS, INCLUDES, LOOKUP_KEYS
from api.http.access import TOKEN_SCOPES, WRITE, lookup_permissions
from api.http.errors import BadRequest, method_not_allowed, require_json
from api.http.idempotency import idempotent
from api.http.inserts import batch_response
from api.http.lookups import lookup_response_body
from api.http.outputs import LOOKUP_OUTS, BatchIn, BatchOut, ErrorOut
from api.http.query_params import GET, INSERT, as_params, parse_insert_count, query_type
from api.http.renderers import JSONOnlyNegotiation
from api.http.schema_examples import insert_examples, lookup_examples
from api.http.throttling import INSERT_SCOPE, LOOKUP_SCOPE
from api.services.batch_insert import batch_insert
from api.services.synthetic import synthetic_insert

ERRORS = {code: ErrorOut for code in (400, 405, 503)}
GET_TYPE_PARAM = OpenApiParameter("type", str, enum=[GET], required=True, default=GET)
INSERT_TYPE_PARAM = OpenApiParameter("type", str, enum=[INSERT], required=True, default=INSERT)
KEY_PARAMS = [
    OpenApiParameter(
        name,
        key.value.schema,
        description=f"{key.store}: {key.query} lookup on {key.column}, e.g. {key.example}",
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


class RunQueryView(APIView):
    """Look records up by an indexed key, or insert a batch concurrently."""

    content_negotiation_class = JSONOnlyNegotiation

    def required_permissions(self, request) -> frozenset[str]:
        """A lookup: reading its key's model (`api.http.access.lookup_permissions`); an insert:
        the ``write`` scope. Also read by the lookup fast path, with its own request."""
        if request.method == "POST":
            return TOKEN_SCOPES[WRITE]
        return lookup_permissions(request.query_params.keys())

    def get_throttle_scope(self, request) -> str | None:
        """The throttle scope (`api.http.throttling`): lookups and inserts have their own rates."""
        return INSERT_SCOPE if request.method == "POST" else LOOKUP_SCOPE

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
                {"type": "integer", "minimum": 1, "maximum": MAX_SYNTHETIC_COUNT},
                description=f"1 to {MAX_SYNTHETIC_COUNT}: insert this many synthetic records "
                "per model instead of a body (not both)",
            ),
        ],
        request={"application/json": BatchIn},
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
