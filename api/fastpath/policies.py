"""The run-query view's DRF policies, applied outside DRF's request cycle.

`ViewPolicies.enforce` runs the view's own authentication, permission and throttle
instances, in the order and with the exceptions of DRF's ``APIView.initial`` (after
content negotiation, which the fast path's view never refuses) and
``APIView.handle_exception`` (a 401's ``WWW-Authenticate``). Each policy gets a
`PolicyRequest`: what the classes `checks.FAST_PATH_POLICIES` allows read of DRF's
``Request`` (``META``, ``headers``, ``method``, ``query_params``, ``user``, ``auth``), so
the answer is theirs, not a copy of it. ``api/tests/test_fastpath_internals.py`` pins the
DRF code this mirrors.
"""

from rest_framework import exceptions

ENVIRON_KEYS = {"authorization": "HTTP_AUTHORIZATION"}  # what TokenAuthentication reads


class EnvironHeaders:
    """``request.headers.get(name)`` as Django's ``HttpHeaders`` answers it, read from the
    environ per call: building ``HttpHeaders`` copies every header of the request."""

    __slots__ = ("environ",)

    def __init__(self, environ: dict) -> None:
        self.environ = environ

    def get(self, name: str, default=None):
        key = ENVIRON_KEYS.get(name)
        if key is None:
            key = name.upper().replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = "HTTP_" + key
        return self.environ.get(key, default)


class PolicyRequest:
    """The part of DRF's ``Request`` the allowed policies read."""

    __slots__ = (
        "META",
        "auth",
        "headers",
        "method",
        "query_params",
        "successful_authenticator",
        "user",
    )

    def __init__(self, environ: dict, params, method: str) -> None:
        self.META = environ
        self.headers = EnvironHeaders(environ)
        self.method = method
        self.query_params = params
        self.user = None  # DRF's UNAUTHENTICATED_USER and _TOKEN (api.fastpath.checks)
        self.auth = None
        self.successful_authenticator = None


class ViewPolicies:
    """The authentication, permission and throttle policies of a DRF view."""

    def __init__(self, view_class) -> None:
        self.view = view_class()
        self.authenticators = [cls() for cls in view_class.authentication_classes]
        self.permissions = [cls() for cls in view_class.permission_classes]
        self.throttle_classes = list(view_class.throttle_classes)
        # What APIView.get_authenticate_header gives: the first authenticator's challenge.
        self.auth_header = (
            self.authenticators[0].authenticate_header(None) if self.authenticators else None
        )

    def enforce(self, environ: dict, params, method: str = "GET") -> None:
        """Raise the DRF exception the view would raise before its ``method`` handler;
        None if none. ``params``: the query string's parameters (`query_string`)."""
        request = PolicyRequest(environ, params, method)
        try:
            for authenticator in self.authenticators:
                user_auth = authenticator.authenticate(request)
                if user_auth is not None:
                    request.successful_authenticator = authenticator
                    request.user, request.auth = user_auth
                    break
            for permission in self.permissions:
                if not permission.has_permission(request, self.view):
                    if self.authenticators and request.successful_authenticator is None:
                        raise exceptions.NotAuthenticated()
                    raise exceptions.PermissionDenied(
                        detail=getattr(permission, "message", None),
                        code=getattr(permission, "code", None),
                    )
        except (exceptions.NotAuthenticated, exceptions.AuthenticationFailed) as exc:
            if self.auth_header:
                exc.auth_header = self.auth_header
            else:
                exc.status_code = 403
            raise
        if self.throttle_classes:
            waits = []
            for throttle_class in self.throttle_classes:
                throttle = throttle_class()
                if not throttle.allow_request(request, self.view):
                    waits.append(throttle.wait())
            if waits:
                raise exceptions.Throttled(max((w for w in waits if w is not None), default=None))
