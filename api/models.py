"""Users, Products and Orders: three models, each stored in its own database.

The router (`api.db.routers`) places `User` in the ``users`` alias, `Product` in ``products``
and `Order` in ``orders``. Because the three live in different databases, an order's
``user_id`` and ``product_id`` are plain indexed integers, not foreign keys: Django cannot
join or enforce a constraint across databases, so `api.domain.validation` checks them.

Validation rules live in application code (`api.domain.validation`), never in CHECK constraints,
which is why no ``Positive*Field`` is used (those add CHECKs). The one database-level
guard is the unique index on ``User.email``, the final word between concurrent writers.
Money is ``Decimal`` with two places.

`IdempotencyKey` and `ApiToken` are bookkeeping, not shop data: they live in ``default``
with Django's own tables. `IdempotencyKey`'s unique ``(owner, key)`` decides which of
concurrent requests runs; an `ApiToken` holds a digest of its key, never the key.
"""

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone


class User(models.Model):
    """A customer. ``email`` is stored lower-cased, so uniqueness is case-insensitive."""

    class CustomerType(models.TextChoices):
        INDIVIDUAL = "individual"
        BUSINESS = "business"
        ENTERPRISE = "enterprise"
        GOVERNMENT = "government"

    name = models.CharField(max_length=200)
    email = models.EmailField(max_length=254)
    organization_id = models.BigIntegerField(null=True, blank=True, db_index=True)

    phone = models.CharField(max_length=32, blank=True, default="")
    mobile = models.CharField(max_length=32, blank=True, default="")
    country_code = models.CharField(
        max_length=8, blank=True, default="", help_text="E.164 calling code, e.g. '+44'."
    )
    city = models.CharField(max_length=100, blank=True, default="")

    credit_limit = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    outstanding_amount = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    total_sales = models.DecimalField(max_digits=16, decimal_places=2, default=0)

    customer_type = models.CharField(
        max_length=16, choices=CustomerType.choices, default=CustomerType.INDIVIDUAL
    )
    segment_name = models.CharField(max_length=64, blank=True, default="")
    segment_discount = models.DecimalField(
        max_digits=5, decimal_places=2, default=0, help_text="Percent, 0 to 100."
    )

    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "users"
        # A unique *index*, not ``unique=True``: on SQLite that is a UNIQUE clause inside
        # CREATE TABLE, whose index cannot be dropped, so every row of a bulk load was a
        # random insert into it. Written as an expression (a bare column: the same index
        # as a column list) because Django emits a column-list constraint inline too. Bulk
        # loads drop it and build it after the rows, in their transaction (generate_data).
        constraints = [models.UniqueConstraint(models.F("email"), name="users_email_key")]

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"


class Product(models.Model):
    """An item for sale; ``price`` is a non-negative Decimal in the shop currency."""

    name = models.CharField(max_length=200)
    sku = models.CharField(max_length=64, blank=True, default="")
    category = models.CharField(max_length=64, blank=True, default="", db_index=True)
    price = models.DecimalField(max_digits=12, decimal_places=2)
    stock = models.IntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "products"

    def __str__(self) -> str:
        return self.name


class Order(models.Model):
    """One product bought by one user. ``total`` is ``quantity × unit_price``.

    ``unit_price`` is copied from the product when the order is accepted, so later price
    changes do not rewrite history.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        PAID = "paid"
        SHIPPED = "shipped"
        DELIVERED = "delivered"
        CANCELLED = "cancelled"

    user_id = models.BigIntegerField(db_index=True)
    product_id = models.BigIntegerField(db_index=True)
    quantity = models.IntegerField()
    unit_price = models.DecimalField(max_digits=12, decimal_places=2)
    total = models.DecimalField(max_digits=20, decimal_places=2)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "orders"

    def __str__(self) -> str:
        return f"order {self.pk}: user {self.user_id} × product {self.product_id}"


class IdempotencyKey(models.Model):
    """A client's ``Idempotency-Key`` and the response it got (`api.http.idempotency`).

    Stored in ``default`` (the router routes only the three shop models). ``owner`` is
    ``"user:<id>"`` for a token client, ``"anonymous"`` otherwise; ``fingerprint`` the
    sha256 hex of the request (method, path, query, canonical JSON body). ``status`` is
    null while the first request runs; then ``status``, ``body`` (the rendered JSON) and
    ``headers`` (the ones a replay repeats, such as ``Retry-After``) are its response.
    """

    owner = models.CharField(max_length=64)
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    status = models.SmallIntegerField(null=True, blank=True)  # no CHECK: see above
    body = models.BinaryField(default=b"")
    headers = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        db_table = "idempotency_keys"
        constraints = [
            models.UniqueConstraint(fields=["owner", "key"], name="idempotency_key_per_owner")
        ]

    def __str__(self) -> str:
        return f"{self.owner} {self.key!r} ({self.status or 'running'})"


class ApiToken(models.Model):
    """A client's API token, stored as the SHA-256 digest of its key (`api.http.access`).

    The key (40 hex characters: 160 random bits, the shape of DRF's keys) is shown once,
    by ``manage.py create_token``, and never stored: a request's key is hashed and looked
    up by its digest, so whoever reads this table, a backup of it or a log of its queries
    learns no key. An unsalted fast hash is enough for a random key of 160 bits (no
    dictionary to try, and 2^160 keys to hash), and keeps the lookup one indexed query.
    ``prefix``, the key's first 8 characters, tells a client's tokens apart in listings.
    """

    digest = models.CharField(max_length=64, primary_key=True)
    prefix = models.CharField(max_length=8)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_token"
    )
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "api_tokens"
        # The token scope ``metrics`` (api.http.access): reading GET /metrics.
        permissions = [("view_metrics", "Can read the Prometheus metrics at /metrics")]

    def __str__(self) -> str:
        return f"token {self.prefix}… of user {self.user_id}"

    @staticmethod
    def digest_of(key: str) -> str:
        """The stored form of ``key``: its SHA-256, 64 hex characters."""
        return hashlib.sha256(key.encode()).hexdigest()

    @classmethod
    def issue(cls, user, *, using: str | None = None) -> tuple["ApiToken", str]:
        """A new token for ``user``, replacing any it had: ``(token, key)``. The key is
        returned once, here; only its digest is saved."""
        key = secrets.token_hex(20)
        cls.objects.using(using).filter(user=user).delete()
        token = cls.objects.using(using).create(
            digest=cls.digest_of(key), prefix=key[:8], user=user
        )
        return token, key
