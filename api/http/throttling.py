"""Rates per client tier and throttle scope, counted in the cache every worker shares.

`TierRateThrottle` is a DRF throttle (a refusal is DRF's 429 with ``Retry-After``); its
rate is ``settings.THROTTLE_RATES[tier][scope]``: the client's tier (`Client.tier`, or
``anonymous`` per address as DRF's ``get_ident`` reads it) and the view's throttle scope
(``view.get_throttle_scope(request)``: `LOOKUP_SCOPE`, `INSERT_SCOPE`, `CREATE_SCOPE`).

Why not DRF's ``SimpleRateThrottle``: its request log costs two cache round trips per
request and two workers reading one log both allow. Here each fixed window is one atomic
counter (`shared_increment`), leased to workers a few permits at a time, so a limit of N
holds across every worker and host at one round trip per lease. A worker's first lease in
a window is one permit and each next one twice the last, up to ``N // LEASE_DIVISOR``: a
worker that exits (recycled, reloaded, killed) strands about what it spent in the window,
not a full lease (with fixed ``N // 100`` leases, a server recycling its workers every few
seconds leased a client's hourly limit away with a fraction of it spent). A dead cache
lets requests through after a bounded wait and is not asked again for
``CACHE_RETRY_SECONDS``: a throttle must not turn a cache failure into an outage.
"""

import functools
import logging
import math
import threading
import time

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.db import DatabaseCache
from django.core.signals import setting_changed
from django.db import connections, router, transaction
from django.dispatch import receiver
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle

from api.domain.addresses import in_networks, proxy_networks
from api.http.access import ANONYMOUS_TIER, Client
from api.metrics import THROTTLED

logger = logging.getLogger(__name__)

LOOKUP_SCOPE, INSERT_SCOPE, CREATE_SCOPE = "lookup", "insert", "create"
THROTTLE_SCOPES = (LOOKUP_SCOPE, INSERT_SCOPE, CREATE_SCOPE)
LEASE_DIVISOR = 100
CACHE_RETRY_SECONDS = 5.0
LOG_INTERVAL_SECONDS = 60.0
MAX_LOCAL_QUOTAS = 10_000  # (client, scope, window) triples a worker remembers


def parse_rate(rate: str | None) -> tuple[int, int] | None:
    """``"600/min"`` -> ``(600, 60)``: DRF's rate syntax; None for no limit."""
    if rate is None:
        return None
    return SimpleRateThrottle.parse_rate(None, rate)


@functools.cache
def rate_for(tier: str, scope: str) -> tuple[int, int] | None:
    """``(requests, period in seconds)`` for ``tier`` and ``scope``, or None (no limit).

    A tier ``THROTTLE_RATES`` does not name has the ``standard`` rates. Parsed once per
    pair (every request asks); forgotten when the setting changes.
    """
    rates = settings.THROTTLE_RATES
    return parse_rate(rates.get(tier, rates["standard"]).get(scope))


def shared_increment(key: str, delta: int, timeout: float) -> int:
    """Add ``delta`` to the shared counter ``key`` (created at 0, kept ``timeout`` s).

    Returns the new count. Redis's INCRBY is atomic; Django's database cache reads and
    writes, so its read and write run in one transaction of the cache's database: on
    SQLite an IMMEDIATE one, which holds the write lock; on PostgreSQL after a
    transaction-scoped advisory lock on the key.
    """
    cache = caches["default"]
    if not isinstance(cache, DatabaseCache):
        # Django's RedisCache.incr is EXISTS + INCRBY; the first lease of a window also
        # creates the key (SET NX with its timeout). A key is only ever raised within its
        # window, long before it expires, so INCRBY never recreates one without a timeout.
        try:
            return cache.incr(key, delta)
        except ValueError:
            cache.add(key, 0, timeout)
            return cache.incr(key, delta)
    alias = router.db_for_write(cache.cache_model_class)
    with transaction.atomic(using=alias):
        if connections[alias].vendor == "postgresql":
            with connections[alias].cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [key])
        count = cache.get(key, 0) + delta
        cache.set(key, count, timeout)
        return count


class LocalQuota:
    """One worker's permits for one client, throttle scope and window, and the size of
    its next lease."""

    __slots__ = ("exhausted", "next_lease", "remaining")

    def __init__(self) -> None:
        self.remaining = 0
        self.exhausted = False
        self.next_lease = 1


class RateLimiter:
    """Leased fixed-window counters (see the module docstring); one per process."""

    def __init__(self, clock=time.time) -> None:
        self.clock = clock  # seconds since the epoch: windows line up across hosts
        self._quotas: dict[tuple, LocalQuota] = {}
        self._lock = threading.Lock()
        self._cache_down_until = 0.0
        self._logged_at = -math.inf

    def admit(self, ident: str, tier: str, scope: str) -> float | None:
        """None when the request may go on, else the seconds until the client may retry."""
        rate = rate_for(tier, scope)
        if rate is None:
            return None
        limit, period = rate
        now = self.clock()
        window = int(now // period)
        retry_after = (window + 1) * period - now  # a subtraction: cheaper than a branch
        key = (ident, tier, scope, window)
        with self._lock:
            quota = self._quotas.get(key)
            if quota is None:
                if len(self._quotas) >= MAX_LOCAL_QUOTAS:
                    self._quotas.clear()
                quota = self._quotas[key] = LocalQuota()
            if quota.remaining > 0:
                quota.remaining -= 1
                return None
            if quota.exhausted:
                return retry_after
            if time.monotonic() < self._cache_down_until:
                return None
            lease = min(quota.next_lease, max(1, limit // LEASE_DIVISOR))
            quota.next_lease = lease * 2
        # The cache round trip runs unlocked: other clients' requests need not wait on it.
        try:
            # The rate is part of the key: servers deployed with another rate count apart.
            shared_key = f"throttle:{tier}:{scope}:{limit}/{period}:{ident}:{window}"
            count = shared_increment(shared_key, lease, period * 2)
        except Exception as exc:  # any cache failure: see the module docstring
            self._cache_failed(exc)
            return None
        granted = min(lease, limit - (count - lease))
        with self._lock:
            if granted <= 0:
                quota.exhausted = True
                return retry_after
            quota.remaining += granted - 1
            return None

    def _cache_failed(self, exc: Exception) -> None:
        self._cache_down_until = time.monotonic() + CACHE_RETRY_SECONDS
        if time.monotonic() - self._logged_at >= LOG_INTERVAL_SECONDS:
            self._logged_at = time.monotonic()
            logger.error("throttle: the shared cache failed, requests pass unthrottled: %s", exc)

    def reset(self) -> None:
        """Forget every local quota and cache failure (tests, settings changes)."""
        with self._lock:
            self._quotas.clear()
            self._cache_down_until = 0.0


LIMITER = RateLimiter()


@receiver(setting_changed)
def _forget_quotas(*, setting: str, **kwargs) -> None:
    if setting in {"THROTTLE_RATES", "CACHES"}:
        LIMITER.reset()
        rate_for.cache_clear()


def throttle_ident(request) -> str:
    """Whom a request is counted against: its token's user, else its address (the
    connection's; the client's in ``X-Forwarded-For`` only when the connection comes
    from a proxy of ``FORWARDED_ALLOW_IPS``, which no client can forge)."""
    client = request.auth
    if isinstance(client, Client):
        return client.ident
    remote = request.META.get("REMOTE_ADDR", "")
    if not trusted_proxy(remote):
        return f"addr:{remote}"
    return f"addr:{_IDENT.get_ident(request)}"


_IDENT = BaseThrottle()  # DRF's get_ident: REMOTE_ADDR, or X-Forwarded-For by NUM_PROXIES


@functools.lru_cache(maxsize=1024)
def trusted_proxy(address: str) -> bool:
    """Whether ``address`` is one of ``settings.FORWARDED_ALLOW_IPS`` (addresses or networks)."""
    return in_networks(address, proxy_networks(settings.FORWARDED_ALLOW_IPS))


@receiver(setting_changed)
def _forget_proxies(*, setting: str, **kwargs) -> None:
    if setting == "FORWARDED_ALLOW_IPS":
        trusted_proxy.cache_clear()


class TierRateThrottle(SimpleRateThrottle):
    """DRF throttle: the view's ``get_throttle_scope(request)`` at its client's tier's rate.

    A view without ``get_throttle_scope`` (or returning None) is not throttled.
    """

    def __init__(self) -> None:  # the rate depends on the request, not the class
        self.retry_after: float | None = None

    def allow_request(self, request, view) -> bool:
        scope = view.get_throttle_scope(request) if hasattr(view, "get_throttle_scope") else None
        if scope is None:
            return True
        client = request.auth
        tier = client.tier if isinstance(client, Client) else ANONYMOUS_TIER
        if rate_for(tier, scope) is None:  # before the ident, which costs more
            return True
        self.retry_after = LIMITER.admit(throttle_ident(request), tier, scope)
        if self.retry_after is None:
            return True
        THROTTLED.labels(scope).inc()
        return False

    def wait(self) -> float | None:
        return self.retry_after
