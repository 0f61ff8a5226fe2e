"""OpenAPI generation (drf-spectacular) with the error statuses every endpoint can return.

Any endpoint may answer 400 (a malformed parameter, such as ``page_size=0``) or 503 (a
database down or locked past its timeout), always with the error envelope; declaring them
once here keeps the schema honest without repeating them on every view. Operations
decorated with `api.idempotency.idempotent` get the ``Idempotency-Key`` header and its
409 and 422 the same way.
"""

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema

from api.idempotency import KEY_ERRORS, KEY_PARAMETER
from api.serializers import ErrorOut

COMMON_ERRORS = ("400", "503")


class AutoSchema(SpectacularAutoSchema):
    """Add the common error responses to every operation that does not declare them."""

    def _is_idempotent(self) -> bool:
        return getattr(getattr(self.view, self.method.lower(), None), "idempotent", False)

    def get_override_parameters(self):
        parameters = super().get_override_parameters()
        return [*parameters, KEY_PARAMETER] if self._is_idempotent() else parameters

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        codes = (*COMMON_ERRORS, *map(str, KEY_ERRORS)) if self._is_idempotent() else COMMON_ERRORS
        for code in codes:
            if code not in responses:
                responses[code] = self._get_response_for_code(ErrorOut, code, direction=direction)
        return responses
