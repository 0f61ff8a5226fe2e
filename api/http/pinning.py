"""Read-your-writes across requests: a client that wrote to an alias reads its primary.

Within a request, `api.db.routers` sends the reads of an alias the request wrote to the
primary. A client usually reads its write on its *next* request, which a replica may not
have replayed yet. So a response to a request that wrote carries a signed cookie naming
the aliases written (``PINNING_COOKIE``), valid for ``settings.REPLICA_PINNING_SECONDS``
(15 s by default, django-multidb-router's ``MULTIDB_PINNING_SECONDS``); a request that
returns it reads those aliases from their primaries until it expires. Any client with a
cookie jar (browsers, ``requests.Session``, Locust) returns it; JSON answers carry it too.

Only when replicas are configured (``settings.DATABASE_REPLICAS``): without them every
read is a primary read and no cookie is set. The cookie is signed with ``SECRET_KEY``
(`django.core.signing`), so a client can shorten its pinning but not forge another's
or pin aliases forever.
"""

from django.conf import settings
from django.core import signing
from django.http.cookie import parse_cookie

from api.db.routers import replicas_by_alias

PINNING_COOKIE = "dp_pinned"
_SALT = "api.http.pinning"
_SEPARATOR = "."  # alias names are identifiers
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def pinned_by_cookie(value: str | None) -> frozenset[str]:
    """The replicated aliases a pinning cookie's ``value`` names, if its signature holds
    and it is younger than ``REPLICA_PINNING_SECONDS``; otherwise none."""
    if not value:
        return frozenset()
    try:
        aliases = signing.TimestampSigner(salt=_SALT).unsign(
            value, max_age=settings.REPLICA_PINNING_SECONDS
        )
    except signing.BadSignature:  # forged, altered or expired (SignatureExpired)
        return frozenset()
    replicated = replicas_by_alias()
    return frozenset(alias for alias in aliases.split(_SEPARATOR) if alias in replicated)


def pinned_by_environ(environ: dict) -> frozenset[str]:
    """`pinned_by_cookie` of a WSGI request's ``Cookie`` header; none without replicas."""
    header = environ.get("HTTP_COOKIE")
    if not header or not replicas_by_alias():
        return frozenset()
    return pinned_by_cookie(parse_cookie(header).get(PINNING_COOKIE))


def pin_response(request, response, pinned: frozenset[str]) -> None:
    """Set the pinning cookie on ``response`` when ``request`` wrote to a replicated alias.

    ``pinned``: the aliases the request's scope ended with (returned ones and written
    ones); a write renews the window for all of them.
    """
    if request.method not in UNSAFE_METHODS:
        return
    replicated = replicas_by_alias()
    aliases = sorted(alias for alias in pinned if alias in replicated)
    if not aliases:
        return
    response.set_cookie(
        PINNING_COOKIE,
        signing.TimestampSigner(salt=_SALT).sign(_SEPARATOR.join(aliases)),
        max_age=settings.REPLICA_PINNING_SECONDS,
        httponly=True,
        samesite="Lax",
        secure=request.is_secure(),
    )
