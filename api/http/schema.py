"""OpenAPI generation (drf-spectacular) with the error statuses every endpoint can return.

Any endpoint may answer 400 (a malformed parameter, such as ``page_size=0``) or 503 (a
database down or locked past its timeout), always with the error envelope; declaring them
once here keeps the schema honest without repeating them on every view. Operations
decorated with `api.http.idempotency.idempotent` get the ``Idempotency-Key`` header and its
409 and 422 the same way.
"""

from types import SimpleNamespace

from django.conf import settings
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema

from api.http.idempotency import KEY_ERRORS, KEY_PARAMETER
from api.http.outputs import ErrorOut

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
