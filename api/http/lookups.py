"""The answer to a lookup, ``GET /api/run-query/?type=get``, on both paths.

DRF's view (`api.views.run_query`) and the fast path (`api.fastpath`) both answer with
`lookup_response_body`, so their bodies cannot drift apart. It raises the API errors the
exception handler maps to statuses (400, 404, 405) and `StoreUnavailable` (503).
"""

from time import perf_counter

from django.urls import reverse
from rest_framework.exceptions import NotFound

from api.domain.lookup_keys import Lookup
from api.http.errors import method_not_allowed
from api.http.pagination import KeysetPagination
from api.http.query_params import GET, INSERT, Params, parse_lookup, query_type
from api.services.selectors import UserOrders, lookup_rows, orders_with_products


def lookup_response_body(params: Params) -> dict:
    """The body for a GET: a lookup, or `MethodNotAllowed` for ``type=insert``.

    Raises `BadRequest` for malformed parameters and `NotFound` when nothing matches.
    """
    if query_type(params) == INSERT:
        raise method_not_allowed("GET", "POST", "type=insert writes: use POST")
    return lookup_body(parse_lookup(params))


def lookup_body(lookup: Lookup) -> dict:
    """The response body of a lookup; raises `NotFound` when nothing matches."""
    started = perf_counter()
    rows = lookup_rows(lookup)
    key = lookup.key
    if not rows:
        raise NotFound(f"no {key.store} with {key.name}={lookup.value}")
    if lookup.include_orders:
        included = orders_with_products([row["id"] for row in rows])
        for row in rows:
            row["orders"], row["orders_total"] = included.get(row["id"], NO_ORDERS)
            row["orders_next"] = (
                orders_page_after(row["id"], row["orders"][-1]["id"])
                if len(row["orders"]) < row["orders_total"]
                else None
            )
    return {
        "type": GET,
        "model": key.store,
        "key": key.name,
        "value": lookup.value,
        "count": lookup.count,
        "results": rows,
        "elapsed_ms": round((perf_counter() - started) * 1000, 3),
    }


NO_ORDERS = UserOrders([], 0)


def orders_page_after(user_id: int, order_id: int) -> str:
    """The path of ``user_id``'s orders page that starts after ``order_id`` (keyset cursor)."""
    cursor = KeysetPagination.cursor_after(order_id)
    return f"{reverse('user-orders', args=[user_id])}?cursor={cursor}"
