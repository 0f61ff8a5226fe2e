"""System checks: the lookup fast path starts only where it answers as Django would.

`api.fastpath.handler.FastPathHandler` reproduces a fixed set of middleware and
applies the DRF policies of its view that `api.fastpath.policies` can run
(`FAST_PATH_POLICIES`: the API's token authentication, scopes and throttles; no
versioning, JSON only). Settings that ask for anything else are a system-check error, reported by
``manage.py check`` and raised by the handler when Gunicorn builds it, so the server does
not start with a fast path that would skip a policy. ``LOOKUP_FAST_PATH=0`` turns the fast
path off instead, and with it these checks.
"""

from django.conf import settings
from django.core import checks
from django.urls import resolve, reverse
from rest_framework.permissions import AllowAny

from api.http.access import ScopedAccess, TokenAuthentication
from api.http.renderers import JSONOnlyNegotiation, ORJSONRenderer
from api.http.throttling import TierRateThrottle

# The middleware whose effect on a lookup or an insert the fast path reproduces:
# pinning scope and cookie, the route label of the request metrics, security headers,
# nothing (WhiteNoise answers only the paths of static files: /static/ and
# WHITENOISE_ROOT's few), host check and Content-Length, nothing
# (CSRF guards only unsafe methods, and DRF's views are exempt: the 415 of
# api.http.errors.require_json is the cross-site rule), X-Frame-Options.
REPRODUCED_MIDDLEWARE = frozenset(
    {
        "api.http.middleware.primary_pinning_middleware",
        "api.http.middleware.RouteLabelMiddleware",
        "django.middleware.security.SecurityMiddleware",
        "whitenoise.middleware.WhiteNoiseMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
    }
)
HINT = "reproduce it in api/fastpath, or set LOOKUP_FAST_PATH=0 and INSERT_FAST_PATH=0"
# The DRF policy classes `api.fastpath.policies` applies: each reads only what its
# PolicyRequest has (META, method, query_params, user, auth).
FAST_PATH_POLICIES = frozenset({TokenAuthentication, ScopedAccess, AllowAny, TierRateThrottle})


def lookup_view_class():
    """The DRF view class that ``/api/run-query/`` is routed to."""
    return resolve(reverse("run-query")).func.view_class


def unreproduced_policies(view_class) -> list[str]:
    """The DRF policies of ``view_class`` the fast path cannot apply, named; [] if none."""
    policies = [
        f"{kind} class {c.__module__}.{c.__name__}"
        for kind, classes in (
            ("authentication", view_class.authentication_classes),
            ("permission", view_class.permission_classes),
            ("throttle", view_class.throttle_classes),
        )
        for c in classes
        if c not in FAST_PATH_POLICIES
    ]
    if view_class.versioning_class is not None:
        policies.append(f"versioning class {view_class.versioning_class.__name__}")
    if view_class.content_negotiation_class is not JSONOnlyNegotiation:
        policies.append(f"content negotiation {view_class.content_negotiation_class.__name__}")
    if list(view_class.renderer_classes[:1]) != [ORJSONRenderer]:
        policies.append("a first renderer other than api.http.renderers.ORJSONRenderer")
    rest = settings.REST_FRAMEWORK
    if rest.get("UNAUTHENTICATED_USER", ...) is not None or rest.get("UNAUTHENTICATED_TOKEN"):
        policies.append("UNAUTHENTICATED_USER/TOKEN other than None")
    return policies


def fast_path_errors() -> list[checks.CheckMessage]:
    """Why the fast path cannot answer as Django and DRF would, as check errors."""
    if not (settings.LOOKUP_FAST_PATH or settings.INSERT_FAST_PATH):
        return []
    errors = [
        checks.Error(
            f"the fast path does not reproduce middleware {name}",
            hint=HINT,
            id="fastpath.E001",
        )
        for name in settings.MIDDLEWARE
        if name not in REPRODUCED_MIDDLEWARE
    ]
    if settings.PREPEND_WWW:
        errors.append(
            checks.Error(
                "the fast path does not reproduce PREPEND_WWW", hint=HINT, id="fastpath.E002"
            )
        )
    errors += [
        checks.Error(f"the fast path does not apply the {policy}", hint=HINT, id="fastpath.E003")
        for policy in unreproduced_policies(lookup_view_class())
    ]
    if settings.INSERT_FAST_PATH:
        errors += [
            checks.Error(
                f"the insert fast path does not run a request in one transaction "
                f"(ATOMIC_REQUESTS of {alias!r})",
                hint="set INSERT_FAST_PATH=0",
                id="fastpath.E004",
            )
            for alias, database in settings.DATABASES.items()
            if database.get("ATOMIC_REQUESTS")
        ]
    return errors
