"""The three stores: users, products and orders, each a model in a database of its own.

A store's ``name`` is at once its key in a batch (``{"users": [...]}``), its resource
(``/api/users/``), its table and its primary database alias, so one word names all four.
`STORES` is the one definition; settings read `STORE_NAMES` before any model loads.
"""

from dataclasses import dataclass
from functools import cached_property

from django.apps import apps
from django.db.models import Model


@dataclass(frozen=True)
class Store:
    """One store: ``name`` (``"users"``), its model's class name in the ``api`` app, and
    whether its rows are personal data (reading them needs the ``read`` token scope)."""

    name: str
    model_name: str
    personal_data: bool

    @property
    def alias(self) -> str:
        """The primary database alias: the store's name."""
        return self.name

    @cached_property
    def model(self) -> type[Model]:
        """The model class (`api.models.User`, ...); needs the app registry ready."""
        return apps.get_model("api", self.model_name)


USERS = Store("users", "User", personal_data=True)
PRODUCTS = Store("products", "Product", personal_data=False)
ORDERS = Store("orders", "Order", personal_data=True)
STORES: dict[str, Store] = {store.name: store for store in (USERS, PRODUCTS, ORDERS)}
STORE_NAMES: tuple[str, ...] = tuple(STORES)
