"""The database router: each model lives in exactly one database alias.

Django consults every class in ``settings.DATABASE_ROUTERS`` for reads, writes, relations
and migrations. `DatabaseRouter` maps the three `api` models to their own aliases and keeps
everything else (Django's contrib apps) in ``default``, so each table exists only in the
database that owns it.
"""

from django.db.models import Model

DEFAULT_ALIAS = "default"


class DatabaseRouter:
    """Route `api.User` to ``users``, `api.Product` to ``products``, `api.Order` to ``orders``."""

    route_app_labels = {"api"}
    model_aliases = {"user": "users", "product": "products", "order": "orders"}

    def _alias_for(self, app_label: str, model_name: str | None) -> str | None:
        if app_label in self.route_app_labels:
            return self.model_aliases.get(model_name or "")
        return None

    def db_for_read(self, model: type[Model], **hints) -> str | None:
        """Read a routed model from its own alias."""
        return self._alias_for(model._meta.app_label, model._meta.model_name)

    def db_for_write(self, model: type[Model], **hints) -> str | None:
        """Write a routed model to its own alias."""
        return self._alias_for(model._meta.app_label, model._meta.model_name)

    def allow_relation(self, obj1: Model, obj2: Model, **hints) -> bool | None:
        """Allow relations only between objects that live in the same database."""
        alias1 = self._alias_for(obj1._meta.app_label, obj1._meta.model_name)
        alias2 = self._alias_for(obj2._meta.app_label, obj2._meta.model_name)
        if alias1 is None and alias2 is None:
            return None
        return (alias1 or DEFAULT_ALIAS) == (alias2 or DEFAULT_ALIAS)

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints):
        """Create a routed model's table only in its alias, everything else only in default."""
        if app_label in self.route_app_labels:
            alias = self._alias_for(app_label, model_name)
            return alias is not None and db == alias
        return db == DEFAULT_ALIAS
