"""REST resources: ``/api/users/``, ``/api/products/``, ``/api/orders/`` and a user's orders.

Lists are keyset-paginated; retrieval is by primary key; creation goes through the same
concurrent insert service and validation as the batch endpoint: 201 with the stored
record, 400 with field errors, 409 for a duplicate e-mail or an existing id, 503 when the
database is unavailable.
"""

from django.db.models import Model
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import generics, status
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from api.db.routers import DatabaseRouter, read_again_on_primary
from api.domain.results import FAILED, INSERTED
from api.domain.validation import EMAIL_DUPLICATE, ID_EXISTS, OrderInput, ProductInput, UserInput
from api.http.access import NO_PERMISSIONS, READ, READ_PERMISSION, TOKEN_SCOPES, WRITE_PERMISSION
from api.http.errors import BadRequest, Conflict, ServiceUnavailable, require_json
from api.http.idempotency import idempotent
from api.http.outputs import ErrorOut, OrderOut, ProductOut, UserOut
from api.http.pagination import KeysetPagination
from api.http.throttling import CREATE_SCOPE, LOOKUP_SCOPE
from api.models import Order, Product, User
from api.services.batch_insert import batch_insert
from api.services.selectors import user_exists, user_orders

CONFLICTS = {EMAIL_DUPLICATE, ID_EXISTS}
CREATE_ERRORS = {status: ErrorOut for status in (400, 409, 415, 503)}


class ResourcePolicy:
    """The token scopes and throttle scope of a resource view (`api.http.access`, `throttling`):
    reading users or orders needs ``read``, products nothing; creating needs the model's
    ``add`` permission."""

    def _alias(self) -> str:
        return DatabaseRouter.model_alias(self.serializer_class.Meta.model)

    def required_permissions(self, request) -> frozenset[str]:
        if request.method == "POST":
            return frozenset({WRITE_PERMISSION[self._alias()]})
        if request.method in ("GET", "HEAD"):
            needed = READ_PERMISSION.get(self._alias())
            return frozenset({needed}) if needed else NO_PERMISSIONS
        return NO_PERMISSIONS

    def get_throttle_scope(self, request) -> str | None:
        if request.method == "POST":
            return CREATE_SCOPE
        return LOOKUP_SCOPE if request.method in ("GET", "HEAD") else None

    # A read that fails on a replica is read again on the primary (`read_again_on_primary`).
    def list(self, request, *args, **kwargs):
        return read_again_on_primary(
            lambda: super(ResourcePolicy, self).list(request, *args, **kwargs)
        )

    def retrieve(self, request, *args, **kwargs):
        return read_again_on_primary(
            lambda: super(ResourcePolicy, self).retrieve(request, *args, **kwargs)
        )


def create_one(request, name: str, model: type[Model], serializer_class) -> Response:
    """Insert one record through `batch_insert` and map its result to a status code."""
    require_json(request)
    data = request.data
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    result = getattr(batch_insert(**{name: [data]}), name)[0]
    if result.status == INSERTED:
        stored = model.objects.get(pk=result.id)
        return Response(serializer_class(stored).data, status=status.HTTP_201_CREATED)
    if result.status == FAILED:
        raise ServiceUnavailable(result.reason, {"store": result.store, "failure": result.code})
    messages = {message for messages in result.errors.values() for message in messages}
    if messages & CONFLICTS:
        raise Conflict(result.reason, result.errors)
    raise BadRequest(result.reason, result.errors)


class ResourceList(ResourcePolicy, generics.ListAPIView):
    """List with keyset pagination; POST creates one record."""

    pagination_class = KeysetPagination
    name: str

    @idempotent
    def post(self, request):
        return create_one(request, self.name, self.queryset.model, self.serializer_class)


@extend_schema(tags=["users"])
@extend_schema_view(
    post=extend_schema(request=UserInput, responses={201: UserOut, **CREATE_ERRORS})
)
class UserList(ResourceList):
    queryset = User.objects.all()
    serializer_class = UserOut
    name = "users"


@extend_schema(tags=["products"])
@extend_schema_view(
    post=extend_schema(request=ProductInput, responses={201: ProductOut, **CREATE_ERRORS})
)
class ProductList(ResourceList):
    queryset = Product.objects.all()
    serializer_class = ProductOut
    name = "products"


@extend_schema(tags=["orders"])
@extend_schema_view(
    post=extend_schema(request=OrderInput, responses={201: OrderOut, **CREATE_ERRORS})
)
class OrderList(ResourceList):
    queryset = Order.objects.all()
    serializer_class = OrderOut
    name = "orders"


@extend_schema(tags=["users"], responses={200: UserOut, 404: ErrorOut})
class UserDetail(ResourcePolicy, generics.RetrieveAPIView):
    queryset = User.objects.all()
    serializer_class = UserOut


@extend_schema(tags=["products"], responses={200: ProductOut, 404: ErrorOut})
class ProductDetail(ResourcePolicy, generics.RetrieveAPIView):
    queryset = Product.objects.all()
    serializer_class = ProductOut


@extend_schema(tags=["orders"], responses={200: OrderOut, 404: ErrorOut})
class OrderDetail(ResourcePolicy, generics.RetrieveAPIView):
    queryset = Order.objects.all()
    serializer_class = OrderOut


@extend_schema(tags=["users"], responses={200: OrderOut(many=True), 404: ErrorOut})
class UserOrderList(ResourcePolicy, generics.ListAPIView):
    """One user's orders, keyset-paginated; 404 if the user does not exist."""

    def required_permissions(self, request) -> frozenset[str]:
        return TOKEN_SCOPES[READ] if request.method in ("GET", "HEAD") else NO_PERMISSIONS

    serializer_class = OrderOut
    pagination_class = KeysetPagination

    def get_queryset(self):
        user_id = self.kwargs["pk"]
        if not user_exists(user_id=user_id):
            raise NotFound(f"no user with id {user_id}")
        return user_orders(user_id)
