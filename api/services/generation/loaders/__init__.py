"""Loaders: one class per backend, chosen by `loader_for` (interface: `base.Loader`).

`sqlite.SqliteLoader` (``executemany`` on the file), `postgresql.CopyLoader` (``COPY``),
`orm.OrmLoader` (``bulk_create``, any other backend or ``--portable``).
"""

from collections.abc import Sequence

from django.db import connections
from django.db.models import Model

from api.services.generation.loaders.base import Loader
from api.services.generation.loaders.orm import OrmLoader
from api.services.generation.loaders.postgresql import CopyLoader
from api.services.generation.loaders.sqlite import SqliteLoader

LOADERS: dict[str, type[Loader]] = {"sqlite": SqliteLoader, "postgresql": CopyLoader}


def loader_for(
    *, alias: str, model: type[Model], columns: Sequence[str], portable: bool = False
) -> Loader:
    """The fastest loader for the alias's backend; ``portable`` forces `OrmLoader`."""
    vendor = connections[alias].vendor
    cls = OrmLoader if portable else LOADERS.get(vendor, OrmLoader)
    return cls(alias=alias, model=model, columns=columns)
