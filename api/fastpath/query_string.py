"""The query string of a WSGI request as `api.http.query_params.Params`, without a `QueryDict`.

`query_params` gives what ``as_params(request.GET)`` gives for the same ``environ``
(tested side by side). It raises what Django raises for more fields than
``DATA_UPLOAD_MAX_NUMBER_FIELDS`` (`TooManyFieldsSent`), and `UnicodeDecodeError` for a
query that is not UTF-8, which the handler leaves to Django (it reads such a query as
latin-1).
"""

from urllib.parse import parse_qsl

from django.conf import settings
from django.core.exceptions import TooManyFieldsSent

TOO_MANY_FIELDS = (
    "The number of GET/POST parameters exceeded settings.DATA_UPLOAD_MAX_NUMBER_FIELDS."
)


def query_params(environ, max_fields: int | None = None) -> dict[str, list[str]]:
    """The query string's parameters, each with its values in order.

    ``max_fields`` defaults to ``DATA_UPLOAD_MAX_NUMBER_FIELDS`` (None: no limit).
    Raises `UnicodeDecodeError` for a query that is not UTF-8 and `TooManyFieldsSent`
    past ``max_fields``.
    """
    if max_fields is None:
        max_fields = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
    query = environ.get("QUERY_STRING", "")
    params: dict[str, list[str]] = {}
    if query.isascii() and "%" not in query and "+" not in query:
        # Nothing to decode or unquote: split as parse_qsl does, without its per-field
        # unquoting (see docs/performance.md, "query string").
        if max_fields is not None and query.count("&") >= max_fields:
            raise TooManyFieldsSent(TOO_MANY_FIELDS)
        for pair in query.split("&"):
            if pair:
                key, _, value = pair.partition("=")
                params.setdefault(key, []).append(value)
        return params
    # PEP 3333: the server decoded the raw bytes as latin-1.
    query = query.encode("iso-8859-1").decode()
    try:
        pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=max_fields)
    except ValueError as exc:  # parse_qsl's only ValueError: too many fields
        raise TooManyFieldsSent(TOO_MANY_FIELDS) from exc
    for key, value in pairs:
        params.setdefault(key, []).append(value)
    return params
