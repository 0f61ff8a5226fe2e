"""OpenAPI generation (drf-spectacular) with the error statuses every endpoint can return,
and every rule the input serializers enforce.

Any endpoint may answer 400 (a malformed parameter, such as ``page_size=0``) or 503 (a
database down or locked past its timeout), always with the error envelope; declaring them
once here keeps the schema honest without repeating them on every view. Operations
decorated with `api.http.idempotency.idempotent` get the ``Idempotency-Key`` header and its
409 and 422 the same way.

The input serializers (`api.domain.validation`) refuse more than drf-spectacular writes
down: unknown keys (``additionalProperties: false``), blank text and NUL
(`TEXT_PATTERN`), money with more digits or places than its column (`money_schema`). So
data generated from the schema (Schemathesis) is data the API accepts.
"""

from types import SimpleNamespace

from django.conf import settings
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema

from api.domain.validation import MoneyField, StrictCharField, StrictInput
from api.http.idempotency import KEY_ERRORS, KEY_PARAMETER
from api.http.outputs import BatchIn, ErrorOut

# Text a StrictCharField keeps: no NUL (Django's validator) and not only whitespace
# (trimmed, it would be blank). Python's and ECMA-262's syntax alike. (A lone surrogate,
# which DRF refuses too, is no Unicode scalar value: JSON Schema's strings hold none.)
TEXT_PATTERN = r"^[^\x00]*[^\x00\s][^\x00]*$"
BLANK_OR_TEXT_PATTERN = r"^[^\x00]*$"  # a field that may be blank: no NUL all the same

COMMON_ERRORS = ("400", "503")
AUTH_ERRORS = ("401", "403")  # a bad token anywhere; a missing scope (api.http.access)
THROTTLED = "429"  # api.http.throttling


class AutoSchema(SpectacularAutoSchema):
    """Add the common error responses to every operation that does not declare them, and
    say which operations a client may call without a token."""

    def _is_idempotent(self) -> bool:
        return getattr(getattr(self.view, self.method.lower(), None), "idempotent", False)

    def get_override_parameters(self):
        parameters = super().get_override_parameters()
        return [*parameters, KEY_PARAMETER] if self._is_idempotent() else parameters

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        codes = list(COMMON_ERRORS)
        if self._is_idempotent():
            codes += map(str, KEY_ERRORS)
        if self.view.get_authenticators():
            codes += AUTH_ERRORS
        if self.view.get_throttles():
            codes.append(THROTTLED)
        for code in codes:
            if code not in responses:
                responses[code] = self._get_response_for_code(ErrorOut, code, direction=direction)
        return responses

    def get_auth(self) -> list[dict]:
        """drf-spectacular's token scheme, plus ``{}`` (no token) where anonymous clients
        are served: everywhere without ``API_TOKENS_REQUIRED``; otherwise where the view
        needs no scope for the method whatever the parameters (products, lookups)."""
        auths = super().get_auth()
        if auths and {} not in auths and not self._token_required():
            auths.append({})
        return auths

    def _token_required(self) -> bool:
        required = getattr(self.view, "required_permissions", None)
        if not settings.API_TOKENS_REQUIRED or required is None:
            return False
        return bool(required(SimpleNamespace(method=self.method, query_params={})))

    def _map_serializer(self, serializer, direction, bypass_extensions=False):
        """A strict input refuses unknown keys; a batch needs one of its lists."""
        schema = super()._map_serializer(serializer, direction, bypass_extensions)
        if direction == "request" and isinstance(serializer, StrictInput):
            schema["additionalProperties"] = False
        if direction == "request" and isinstance(serializer, BatchIn):
            schema.update(additionalProperties=False, minProperties=1)
        return schema

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if direction != "request":
            return schema
        if isinstance(field, MoneyField):
            return {**money_schema(field), **{k: v for k, v in schema.items() if k != "oneOf"}}
        if isinstance(field, StrictCharField):
            if field.allow_blank:
                schema["pattern"] = BLANK_OR_TEXT_PATTERN
            else:
                schema.update(minLength=1, pattern=TEXT_PATTERN)
        return schema

    def _get_request_body(self, direction="request"):
        """Every write's body is required: a write without ``Content-Type: application/json``
        is a 415 even when empty (`api.http.errors.require_json`)."""
        body = super()._get_request_body(direction)
        if body is not None:
            body["required"] = True
        return body


def money_schema(field: MoneyField) -> dict:
    """What a `MoneyField` accepts: a JSON number, or a decimal string, with at most
    ``decimal_places`` places and ``max_digits`` digits, within its bounds. A number is
    stated in hundredths of an integer's range only (``multipleOf``) so that a generator's
    binary float, such as 0.30000000000000004, is not offered as valid."""
    places, whole = field.decimal_places, field.max_digits - field.decimal_places
    low = 0 if field.min_value is not None and field.min_value >= 0 else None
    high = field.max_value if field.max_value is not None else 10**whole - 10**-places
    sign = "" if low == 0 else "-?"
    digits = rf"[0-9]{{1,{whole}}}(\.[0-9]{{1,{places}}})?"
    if field.max_value is not None:  # below the bound's digits, or the bound itself
        bound = int(field.max_value)
        below = rf"[0-9]{{1,{len(str(bound)) - 1}}}(\.[0-9]{{1,{places}}})?"
        digits = rf"({below}|{bound}(\.0{{1,{places}}})?)"
    text = rf"^{sign}{digits}$"
    number = {"type": "number", "maximum": float(high), "multipleOf": 10**-places}
    if low is not None:
        number["minimum"] = low
    else:
        number["minimum"] = -float(high)
    return {"oneOf": [number, {"type": "string", "format": "decimal", "pattern": text}]}
