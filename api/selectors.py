"""Read-only queries; each reads its model's own database through the router."""

from api.models import Order, Product, User


def row_counts() -> dict[str, int]:
    """Rows stored per model: ``{"users": int, "products": int, "orders": int}``.

    Raises `django.db.DatabaseError` when a database is unreachable or not migrated.
    """
    return {
        "users": User.objects.count(),
        "products": Product.objects.count(),
        "orders": Order.objects.count(),
    }
