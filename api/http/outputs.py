"""Output serializers: what a record, a lookup, a batch and an error look like to a client.

`UserOut`, `ProductOut` and `OrderOut` render exactly the store's
`api.domain.columns.output_columns` (checked when this module loads), which the lookups
select and the API's renderer formats the same way. Money is a string with its decimal
places (``"12.50"``), times ISO 8601 in UTC with ``Z``. Input serializers are the
validation rules, in `api.domain.validation`.
"""

import re

from django.core.exceptions import ImproperlyConfigured
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.settings import api_settings

from api.domain.batches import MAX_BATCH_RECORDS
from api.domain.columns import output_columns
from api.domain.limits import MAX_ID, MAX_INCLUDED_ORDERS, MAX_ORDERS_PER_USER, MAX_REPORTED_GAPS
from api.domain.lookup_keys import INCLUDE_ORDERS, LOOKUP_KEYS, LookupKey
from api.domain.results import STATUSES
from api.models import Order, Product, User


class UserOut(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = output_columns("users")


class ProductOut(serializers.ModelSerializer):
    class Meta:
        model = Product
        fields = output_columns("products")


class OrderOut(serializers.ModelSerializer):
    class Meta:
        model = Order
        fields = output_columns("orders")


OUTPUTS: dict[str, type[serializers.ModelSerializer]] = {
    "users": UserOut,
    "products": ProductOut,
    "orders": OrderOut,
}
# Fields whose representation the renderer reproduces from the stored value: the value
# itself (text, integers, flags), Decimals with the column's places (money), aware UTC
# datetimes as ISO 8601 with Z (`api.http.renderers.dumps`).
PLAIN_FIELDS = (
    serializers.CharField,
    serializers.ChoiceField,
    serializers.IntegerField,
    serializers.BooleanField,
    serializers.DecimalField,
    serializers.DateTimeField,
)


def check_renders_columns(store: str) -> None:
    """Raise `ImproperlyConfigured` unless ``OUTPUTS[store]`` renders exactly the store's
    `output_columns`, each as the plain column it is: what the lookups select and render
    themselves. A method field, a renamed source or a custom format would differ."""
    serializer = OUTPUTS[store]()
    columns = output_columns(store)
    for name, field in serializer.fields.items():
        if (
            field.source != name
            or name not in columns
            or not isinstance(field, PLAIN_FIELDS)
            or getattr(field, "format", None) not in (None, "iso-8601")
            or (
                isinstance(field, serializers.DecimalField)
                and not getattr(field, "coerce_to_string", api_settings.COERCE_DECIMAL_TO_STRING)
            )
        ):
            raise ImproperlyConfigured(
                f"{type(serializer).__name__}.{name}: lookups render model columns as they are"
            )
    if list(serializer.fields) != columns:
        raise ImproperlyConfigured(
            f"{type(serializer).__name__} must render {', '.join(columns)} (lookups select them)"
        )


for _store in OUTPUTS:
    check_renders_columns(_store)


class OrderWithProductOut(OrderOut):
    product = ProductOut(allow_null=True, help_text="null if the product no longer exists")

    class Meta(OrderOut.Meta):
        fields = [*output_columns("orders"), "product"]


class UserWithOrdersOut(UserOut):
    orders = OrderWithProductOut(
        many=True,
        required=False,
        help_text=f"with include=orders: the first orders by id, at most {MAX_ORDERS_PER_USER} "
        f"per user and {MAX_INCLUDED_ORDERS} in all",
    )
    orders_total = serializers.IntegerField(
        required=False, help_text="with include=orders: how many orders the user has"
    )
    orders_next = serializers.CharField(
        required=False,
        allow_null=True,
        help_text="with include=orders: the path of the user's orders page after the last "
        "one included, or null when all are included",
    )

    class Meta(UserOut.Meta):
        fields = [*output_columns("users"), "orders", "orders_total", "orders_next"]


@extend_schema_field(
    {"type": "string", "example": "a sentence naming what went wrong: 'page_size must be >= 1'"}
)
class ErrorMessageField(serializers.CharField):
    """The envelope's ``error``, with an example in the schema instead of ``"string"``."""


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": {},
        "example": {"page_size": ["must be >= 1"]},
    }
)
class ErrorDetailsField(serializers.DictField):
    """The envelope's ``details``: messages by field, parameter or database."""


class ErrorOut(serializers.Serializer):
    error = ErrorMessageField(help_text="What went wrong, in one line.")
    details = ErrorDetailsField(help_text="Per-field or per-parameter messages.")


def constant(value: str) -> serializers.CharField:
    """A string field that always holds ``value``, published as a pattern that only it matches.

    Not an enum: each lookup's answer has its own constants, and drf-spectacular makes a
    component of every enum and warns when components of one field name clash.
    """
    schema = {"type": "string", "pattern": f"^{re.escape(value)}$", "example": value}
    field_class = extend_schema_field(schema)(type("Constant", (serializers.CharField,), {}))
    return field_class()


def lookup_out(key: LookupKey) -> type[serializers.Serializer]:
    """The answer to a lookup by ``key``: its value's type, its model's rows."""
    if key.value.python is int:
        value = serializers.IntegerField(min_value=1, max_value=MAX_ID)
    else:
        value = serializers.EmailField()
    row = UserWithOrdersOut if INCLUDE_ORDERS in key.includes else OUTPUTS[key.store]
    fields = {
        "type": constant("get"),
        "model": constant(key.store),
        "key": constant(key.name),
        "value": value,
        "count": serializers.IntegerField(min_value=1, max_value=key.max_count),
        "results": row(many=True),
        "elapsed_ms": serializers.FloatField(help_text="Server time spent on the lookup."),
        "__doc__": f"``type=get&{key.name}=...``: {key.store}, by id ascending.",
    }
    name = "".join(part.title() for part in key.name.split("_"))
    return type(f"{name}LookupOut", (serializers.Serializer,), fields)


LOOKUP_OUTS = {name: lookup_out(key) for name, key in LOOKUP_KEYS.items()}


class RecordResultOut(serializers.Serializer):
    index = serializers.IntegerField(help_text="Position in the submitted list.")
    status = serializers.ChoiceField(choices=STATUSES)
    id = serializers.IntegerField(allow_null=True, help_text="Stored id, or the submitted one.")
    reason = serializers.CharField(allow_blank=True)
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))


class CountsOut(serializers.Serializer):
    inserted = serializers.IntegerField()
    rejected = serializers.IntegerField()
    failed = serializers.IntegerField()


class BatchOut(serializers.Serializer):
    """``type=insert``: one result per submitted record, and counts per model."""

    type = serializers.CharField(default="insert")
    summary = serializers.DictField(child=CountsOut())
    users = RecordResultOut(many=True)
    products = RecordResultOut(many=True)
    orders = RecordResultOut(many=True)
    elapsed_ms = serializers.FloatField()


class BatchIn(serializers.Serializer):
    """The body of ``type=insert``: lists of raw records, checked by `api.domain.validation`.

    Records are validated one by one: a record that is not an object, or breaks a rule,
    comes back ``rejected`` in a 200 response while the others are stored. At most
    ``MAX_BATCH_RECORDS`` (1000) records in all.
    """

    users = serializers.ListField(
        child=serializers.JSONField(), required=False, max_length=MAX_BATCH_RECORDS
    )
    products = serializers.ListField(
        child=serializers.JSONField(), required=False, max_length=MAX_BATCH_RECORDS
    )
    orders = serializers.ListField(
        child=serializers.JSONField(), required=False, max_length=MAX_BATCH_RECORDS
    )


class TableStatsOut(serializers.Serializer):
    database = serializers.CharField()
    rows = serializers.IntegerField()
    min_id = serializers.IntegerField(allow_null=True)
    max_id = serializers.IntegerField(allow_null=True)
    missing_ids = serializers.ListField(
        child=serializers.ListField(child=serializers.IntegerField(), min_length=2, max_length=2),
        help_text=(
            "[first, last] ranges of ids absent between min_id and max_id "
            f"(at most {MAX_REPORTED_GAPS})"
        ),
    )


class StatsOut(serializers.Serializer):
    users = TableStatsOut()
    products = TableStatsOut()
    orders = TableStatsOut()


class ReplicaHealthOut(serializers.Serializer):
    state = serializers.CharField(help_text="ok, lagging, unchecked, or the failure's kind")
    lag_seconds = serializers.FloatField(allow_null=True, help_text="replication lag, s")
    checked_at = serializers.FloatField(allow_null=True, help_text="Unix time of the check")


class HealthOut(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "unavailable"])
    databases = serializers.DictField(
        child=serializers.CharField(), help_text="primary alias → ok/error"
    )
    replicas = serializers.DictField(
        child=ReplicaHealthOut(), help_text="replica alias → its last check (no reads unless ok)"
    )
