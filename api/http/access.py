"""Who may do what: API tokens, the scopes a request needs, and the docs' gate.

**Tokens**: a client sends ``Authorization: Token <key>``, as DRF's
``TokenAuthentication`` reads it; ``manage.py create_token`` shows a new key once and
``revoke_token`` deletes it. Only the key's digest is stored (`api.models.ApiToken`): a
request's key is hashed and looked up. A token belongs to a Django user; its **scopes**
are that user's Django permissions, granted by ``create_token --scope``:

- ``read``: ``api.view_user``, ``api.view_order``: personal data (users, and orders,
  which name a user). Products are a public catalogue: reading them needs no scope.
- ``write``: ``api.add_user``, ``api.add_product``, ``api.add_order``: inserts.
- ``metrics``: ``api.view_metrics``: ``GET /metrics``, for a Prometheus server
  (`api.views.metrics`).

With ``API_TOKENS_REQUIRED`` (on by ``DJANGO_ENV=production``) an anonymous request that
needs a scope is a 401 and a token without it a 403. Without it (development) an anonymous
client has every scope, so a laptop works with no set-up; a token sent is still checked.

What a worker read about a token is kept for ``TOKEN_CACHE_SECONDS`` (`TokenCache`): a
revoked token works for at most that long after ``revoke_token``. Both the DRF views and
the lookup fast path (`api.fastpath`) decide with the classes here.
"""

import functools
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.signals import setting_changed
from django.dispatch import receiver
from rest_framework import authentication, exceptions, permissions

from api.domain.lookup_keys import LOOKUP_KEYS
from api.domain.stores import ORDERS, STORES
from api.models import ApiToken

# Django's permission to read a store's rows, for the stores of personal data (products
# need none), and to add to each store.
READ_PERMISSION = {
    store.name: f"api.view_{store.model_name.lower()}"
    for store in STORES.values()
    if store.personal_data
}
WRITE_PERMISSION = {store.name: f"api.add_{store.model_name.lower()}" for store in STORES.values()}
METRICS_PERMISSION = "api.view_metrics"
READ, WRITE, METRICS = "read", "write", "metrics"
TOKEN_SCOPES: dict[str, frozenset[str]] = {
    READ: frozenset(READ_PERMISSION.values()),
    WRITE: frozenset(WRITE_PERMISSION.values()),
    METRICS: frozenset({METRICS_PERMISSION}),
}
ALL_PERMISSIONS = frozenset().union(*TOKEN_SCOPES.values())
NO_PERMISSIONS: frozenset[str] = frozenset()
TIER_GROUP_PREFIX = "tier:"
STANDARD_TIER, ANONYMOUS_TIER = "standard", "anonymous"
TOKEN_CACHE_SECONDS_NOTE = (
    "Workers that read the token less than TOKEN_CACHE_SECONDS ago accept it until then."
)
MAX_CACHED_TOKENS = 10_000  # distinct keys a worker remembers; a flood of bad keys is not kept


@dataclass(frozen=True)
class Client:
    """A token's holder as a worker knows it: DRF's ``request.auth``.

    ``user_id`` keys its throttles and idempotency keys; ``permissions`` are its Django
    permissions (``"api.view_user"``, ...); ``tier`` names its rates in
    ``settings.THROTTLE_RATES``.
    """

    user_id: int
    permissions: frozenset[str]
    tier: str

    @functools.cached_property
    def ident(self) -> str:
        """Whom its requests are counted against (`api.http.throttling`): ``"user:<id>"``."""
        return f"user:{self.user_id}"


def load_client(key: str) -> tuple[AbstractBaseUser, Client] | None:
    """The user and `Client` of token ``key`` from the default database, or None.

    None for an unknown key or an inactive user (DRF's ``TokenAuthentication`` refuses
    both). Three queries: the token (by the key's digest) with its user, the permissions,
    the tier group.
    """
    try:
        token = ApiToken.objects.select_related("user").get(digest=ApiToken.digest_of(key))
    except ApiToken.DoesNotExist:
        return None
    user = token.user
    if not user.is_active:
        return None
    tiers = sorted(
        name.removeprefix(TIER_GROUP_PREFIX)
        for name in user.groups.filter(name__startswith=TIER_GROUP_PREFIX).values_list(
            "name", flat=True
        )
    )
    client = Client(
        user_id=user.pk,
        permissions=frozenset(user.get_all_permissions()),
        tier=tiers[0] if tiers else STANDARD_TIER,
    )
    return user, client


class TokenCache:
    """Token key -> ``(user, Client)`` or None, each read kept ``TOKEN_CACHE_SECONDS``.

    A request otherwise costs three queries of the default database before its own; a
    lookup costs one. Unknown keys are kept too, so that a client guessing keys costs
    one query per key per interval, not per request. Shared by a process's threads: dict
    reads and writes are atomic, and two threads loading the same key both store a
    correct answer.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, tuple | None]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[AbstractBaseUser, Client] | None:
        """``(user, Client)`` for ``key``, or None when no active token has it."""
        entry = self._entries.get(key)
        now = time.monotonic()
        if entry is not None and entry[0] > now:
            return entry[1]
        found = load_client(key)
        with self._lock:
            if len(self._entries) >= MAX_CACHED_TOKENS:
                self._entries = {k: e for k, e in self._entries.items() if e[0] > now}
                if len(self._entries) >= MAX_CACHED_TOKENS:
                    self._entries.clear()
            self._entries[key] = (now + settings.TOKEN_CACHE_SECONDS, found)
        return found

    def clear(self) -> None:
        self._entries.clear()


TOKENS = TokenCache()


@receiver(setting_changed)
def _forget_tokens(**kwargs) -> None:
    TOKENS.clear()
    anonymous_permissions.cache_clear()


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's ``TokenAuthentication`` (``Authorization: Token <key>``), read through `TOKENS`
    from `ApiToken`'s digests (DRF's own reads ``rest_framework.authtoken``'s plain keys).

    ``request.user`` is the token's user, ``request.auth`` its `Client`. A bad header or an
    unknown or revoked key is DRF's 401 ``AuthenticationFailed``.
    """

    def authenticate_credentials(self, key: str):
        found = TOKENS.get(key)
        if found is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        return found


@functools.cache
def anonymous_permissions() -> frozenset[str]:
    """What a request without a token may do: everything unless tokens are required.

    Read once (every request asks); forgotten when settings change.
    """
    return NO_PERMISSIONS if settings.API_TOKENS_REQUIRED else ALL_PERMISSIONS


class ScopedAccess(permissions.BasePermission):
    """Allow a request when its client holds every permission the view says it needs.

    The view's ``required_permissions(request) -> frozenset[str]`` names them (none when
    it has no such method). Refused: 401 (DRF's ``NotAuthenticated``) without a token,
    403 with one.
    """

    message = "this token lacks a scope the request needs"

    def has_permission(self, request, view) -> bool:
        required = getattr(view, "required_permissions", None)
        required = required(request) if required is not None else NO_PERMISSIONS
        if not required:
            return True
        client = request.auth
        held = client.permissions if isinstance(client, Client) else anonymous_permissions()
        return required <= held


class DocsAccess(permissions.BasePermission):
    """``/api/docs/`` and ``/api/schema/``: public with ``API_DOCS_PUBLIC``, else a token."""

    def has_permission(self, request, view) -> bool:
        return settings.API_DOCS_PUBLIC or isinstance(request.auth, Client)


@functools.lru_cache(maxsize=256)
def _lookup_permissions(param_names: tuple[str, ...]) -> frozenset[str]:
    needed = {
        READ_PERMISSION[LOOKUP_KEYS[name].store]
        for name in param_names
        if name in LOOKUP_KEYS and LOOKUP_KEYS[name].store in READ_PERMISSION
    }
    if "include" in param_names:
        needed.add(READ_PERMISSION[ORDERS.name])
    return frozenset(needed)


def lookup_permissions(param_names) -> frozenset[str]:
    """What a ``type=get`` query with these parameter names needs: reading the model of
    each lookup key named (users, orders) and, for ``include``, orders. Remembered per
    tuple of names (a query string has few shapes)."""
    return _lookup_permissions(tuple(param_names))
