"""OpenAPI generation (drf-spectacular) with the error statuses every endpoint can return.

Any endpoint may answer 400 (a malformed parameter, such as ``page_size=0``) or 503 (a
database down or locked past its timeout), always with the error envelope; declaring them
once here keeps the schema honest without repeating them on every view.
"""

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema

from api.serializers import ErrorOut

COMMON_ERRORS = ("400", "503")


class AutoSchema(SpectacularAutoSchema):
    """Add the common error responses to every operation that does not declare them."""

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code in COMMON_ERRORS:
            if code not in responses:
                responses[code] = self._get_response_for_code(ErrorOut, code, direction=direction)
        return responses
