"""Output shapes of the API, for the resources and for the OpenAPI schema.

Input is validated by `api.validation` (one place for every write path); the classes here
only describe what comes back. Money is a string with two decimals (``"12.50"``), times
are ISO 8601 in UTC.
"""

from rest_framework import serializers

from api.models import Order, Product, User
from api.query_params import LOOKUP_KEYS
from api.selectors import MAX_REPORTED_GAPS
from api.services.results import STATUSES


class UserOut(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = "__all__"


class ProductOut(serializers.ModelSerializer):
    class Meta:
        model = Product
        fields = "__all__"


class OrderOut(serializers.ModelSerializer):
    class Meta:
        model = Order
        fields = "__all__"


class OrderWithProductOut(OrderOut):
    product = ProductOut(allow_null=True, help_text="null if the product no longer exists")

    class Meta(OrderOut.Meta):
        fields = [*(f.attname for f in Order._meta.concrete_fields), "product"]


class UserWithOrdersOut(UserOut):
    orders = OrderWithProductOut(many=True)


class ErrorOut(serializers.Serializer):
    error = serializers.CharField(help_text="What went wrong, in one line.")
    details = serializers.DictField(help_text="Per-field or per-parameter messages.")


class LookupOut(serializers.Serializer):
    """``type=get``: ``results`` hold users, products or orders depending on ``key``."""

    type = serializers.CharField(default="get")
    model = serializers.ChoiceField(choices=["users", "products", "orders"])
    key = serializers.ChoiceField(choices=LOOKUP_KEYS)
    value = serializers.CharField()
    count = serializers.IntegerField()
    results = serializers.ListField(child=serializers.DictField())
    elapsed_ms = serializers.FloatField(help_text="Server time spent on the lookup.")


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
    """The body of ``type=insert``: lists of raw records, checked by `api.validation`.

    Records are validated one by one: a record that is not an object, or breaks a rule,
    comes back ``rejected`` in a 200 response while the others are stored.
    """

    users = serializers.ListField(child=serializers.JSONField(), required=False)
    products = serializers.ListField(child=serializers.JSONField(), required=False)
    orders = serializers.ListField(child=serializers.JSONField(), required=False)


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


class HealthOut(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "unavailable"])
    databases = serializers.DictField(child=serializers.CharField(), help_text="alias → ok/error")
