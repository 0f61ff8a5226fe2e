"""The columns a record shows a client: the stored columns of its store's model.

The lookups select exactly these (`api.services.selectors`), and the resources' output
serializers (`api.http.outputs`) render exactly these, which that module checks when it
loads, so a lookup's row and a resource's record have the same fields in the same order.
"""

from functools import cache

from api.domain.stores import STORES

# Stored columns no client sees, by store name (none today): hiding one is this one edit,
# for the lookups and the resources alike.
HIDDEN_COLUMNS: dict[str, frozenset[str]] = {}


@cache
def output_columns(store: str) -> list[str]:
    """``["id", "name", ...]``: the concrete columns of ``store``'s model, in its order,
    but `HIDDEN_COLUMNS`."""
    hidden = HIDDEN_COLUMNS.get(store, frozenset())
    fields = STORES[store].model._meta.concrete_fields
    return [field.attname for field in fields if field.attname not in hidden]
