"""The database router: each model lives in exactly one database alias.

Django consults every class in ``settings.DATABASE_ROUTERS`` for reads, writes, relations
and migrations. `DatabaseRouter` maps the three `api` models to their own aliases and keeps
everything else (Django's contrib apps, `api.IdempotencyKey`) in ``default``, so each
table exists only in the database that owns it.

With read replicas (``settings.DATABASE_REPLICAS``, from ``DATABASE_REPLICA_URLS_<ALIAS>``)
reads go to a random replica of the model's alias, writes to the primary, and once the
current request (or any other `primary_pinning` scope) has asked to write to an alias,
its later reads of that alias go to the primary too, so it reads its own writes despite
replication lag.

A read that fails on a replica is read again on its primary in the same request
(`read_with_fallback`, and `api.db.compiled.CompiledQuery.fetch`), and the replica leaves
the rotation (`api.db.replicas.ReplicaMonitor.failed`): its failure never reaches a client.
"""

import logging
import random
from collections.abc import Callable
from contextvars import ContextVar
from functools import cache
from typing import TypeVar

from django.conf import settings
from django.core.signals import setting_changed
from django.db import DatabaseError, connections, router
from django.db.models import Model
from django.dispatch import receiver

from api.db.replicas import MONITOR
from api.domain.stores import STORES

DEFAULT_ALIAS = "default"
logger = logging.getLogger(__name__)
T = TypeVar("T")

# The aliases written in the current scope. A scope sets it to an empty set and resets
# its token on the way out (`primary_pinning`, or the lookup fast path directly).
PINNED_ALIASES: ContextVar[frozenset[str]] = ContextVar("primary_pinned", default=frozenset())


class primary_pinning:  # lower case, like contextlib.suppress: used as a function
    """A scope (one request) whose reads follow its writes to the primary.

    ``with primary_pinning(): ...``. A class rather than a ``@contextmanager`` generator,
    for its cost on every request (``docs/performance.md``).
    """

    __slots__ = ("_token",)

    def __enter__(self) -> None:
        self._token = PINNED_ALIASES.set(frozenset())

    def __exit__(self, *exc_info) -> None:
        PINNED_ALIASES.reset(self._token)


@cache
def replicas_by_alias() -> dict[str, list[str]]:
    """``settings.DATABASE_REPLICAS``: ``{alias: [replica alias, ...]}``, read once.

    Every read asks for it, and each attribute read of ``settings`` (a `LazyObject`) is a
    Python call; the cache is dropped when the setting changes (``override_settings``).
    """
    return getattr(settings, "DATABASE_REPLICAS", {})


@cache
def primaries_by_replica() -> dict[str, str]:
    """``{replica alias: its primary alias}``, from `replicas_by_alias`."""
    return {
        replica: alias for alias, replicas in replicas_by_alias().items() for replica in replicas
    }


@receiver(setting_changed)
def _forget_replicas(*, setting: str, **kwargs) -> None:
    if setting == "DATABASE_REPLICAS":
        replicas_by_alias.cache_clear()
        primaries_by_replica.cache_clear()


def primary_after_failure(alias: str, exc: DatabaseError) -> str | None:
    """The primary to read instead, when ``alias`` is a replica whose read failed with
    ``exc`` (the replica leaves the rotation: `ReplicaMonitor.failed`); None when ``alias``
    is no replica, and the failure is the caller's to raise."""
    primary = primaries_by_replica().get(alias)
    if primary is None:
        return None
    kind = MONITOR.failed(alias, exc)
    connection = connections[alias]
    if not connection.in_atomic_block:
        connection.close()  # the next read on it connects afresh
    connection.errors_occurred = False  # handled here: `read_again_on_primary` looks at it
    logger.info("read on replica %r failed (%s): read again on %r", alias, kind, primary)
    return primary


def read_again_on_primary(read: Callable[[], T]) -> T:
    """``read()``; when it fails after a replica's connection in this thread failed (Django
    flags it: ``errors_occurred``), those replicas leave the rotation and ``read()`` runs
    once more with their stores' reads pinned to the primaries. For reads whose queries
    are not one alias's (a DRF view's list or detail); raises what the second run raises.
    """
    try:
        return read()
    except DatabaseError as exc:
        primaries = set()
        for replica in primaries_by_replica():
            connection = connections[replica]
            if connection.errors_occurred:
                primaries.add(primary_after_failure(replica, exc))
        if not primaries:
            raise
    token = PINNED_ALIASES.set(PINNED_ALIASES.get() | primaries)
    try:
        return read()
    finally:
        PINNED_ALIASES.reset(token)


def read_with_fallback(model: type[Model], read: Callable[[str], T]) -> T:
    """``read(alias)`` on the alias the router picks for reading ``model``; when that is a
    replica and the read fails, ``read(primary)`` once. Raises `django.db.DatabaseError`
    when the primary's read fails (``read`` must evaluate its query, e.g. ``list(...)``)."""
    alias = router.db_for_read(model)
    try:
        return read(alias)
    except DatabaseError as exc:
        primary = primary_after_failure(alias, exc)
        if primary is None:
            raise
    return read(primary)


def pinned_aliases() -> frozenset[str]:
    """Aliases written in the current scope: their reads go to the primary."""
    return PINNED_ALIASES.get()


class DatabaseRouter:
    """Route `api.User` to ``users``, `api.Product` to ``products``, `api.Order` to ``orders``."""

    route_app_labels = {"api"}
    model_aliases = {store.model_name.lower(): store.alias for store in STORES.values()}

    @classmethod
    def _alias_for(cls, app_label: str, model_name: str | None) -> str | None:
        if app_label in cls.route_app_labels:
            return cls.model_aliases.get(model_name or "")
        return None

    @classmethod
    @cache  # per model class: every read asks, and a model's alias never changes
    def model_alias(cls, model: type[Model]) -> str | None:
        """The primary alias of ``model`` (``users`` for `api.User`), or None."""
        return cls._alias_for(model._meta.app_label, model._meta.model_name)

    def db_for_read(self, model: type[Model], **hints) -> str | None:
        """Read from a replica of the model's alias that is healthy and not lagging
        (`api.db.replicas`), or from its primary: once written to, or when none is."""
        alias = self.model_alias(model)
        replicas = replicas_by_alias().get(alias)
        if not replicas or alias in PINNED_ALIASES.get():
            return alias
        usable = MONITOR.usable(replicas)
        return random.choice(usable) if usable else alias

    def db_for_write(self, model: type[Model], **hints) -> str | None:
        """Write to the model's primary alias, and pin the scope's reads of it there."""
        alias = self.model_alias(model)
        if alias is not None and alias not in PINNED_ALIASES.get():
            PINNED_ALIASES.set(PINNED_ALIASES.get() | {alias})
        return alias

    def allow_relation(self, obj1: Model, obj2: Model, **hints) -> bool | None:
        """Allow relations only between objects that live in the same database."""
        alias1 = self._alias_for(obj1._meta.app_label, obj1._meta.model_name)
        alias2 = self._alias_for(obj2._meta.app_label, obj2._meta.model_name)
        if alias1 is None and alias2 is None:
            return None
        return (alias1 or DEFAULT_ALIAS) == (alias2 or DEFAULT_ALIAS)

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints):
        """Create a routed model's table only in its alias, everything else only in default.

        Replica aliases get nothing: they copy their primary.
        """
        if app_label in self.route_app_labels:
            if model_name is None:  # an operation on no model (RunSQL without hints): nowhere
                return False
            # An `api` model without an alias (`api.IdempotencyKey`) is bookkeeping: default.
            return db == (self._alias_for(app_label, model_name) or DEFAULT_ALIAS)
        return db == DEFAULT_ALIAS
