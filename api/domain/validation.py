"""Validation rules for every write path, in one place.

A record passes two stages, and every rejection carries a reason:

1. **Field rules** (`UserInput`, `ProductInput`, `OrderInput`): types, blanks, ranges,
   e-mail syntax, unknown keys. They need no database and run before any worker starts.
2. **Database rules** (`Taken.conflicts`, `order_reference_errors`): an
   explicit id that already exists, an e-mail already used (case-insensitively: e-mails are
   stored lower-cased), an order whose user or product does not exist. The insert service
   evaluates them inside each database's write transaction, against rows already stored
   and records accepted earlier in the same batch.

Error messages are module constants because tests, clients and the assignment fixture
compare them verbatim.

`check_fields` first tries the serializer's `FastAccept`: an exact shortcut for a record
the serializer would accept, built from the serializer's own fields, validators and
``validate_<field>`` methods. Anything it cannot decide (every rejection included) goes
through DRF, so every message still comes from the serializer.
"""

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from threading import local
from typing import Any, TypeVar

from django.core import validators as django_validators
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import ProhibitSurrogateCharactersValidator, empty
from rest_framework.settings import api_settings

from api.domain.limits import MAX_EXPLICIT_ID, MAX_ID
from api.models import Order, Product, User

NON_FIELD_ERRORS = api_settings.NON_FIELD_ERRORS_KEY
# Bounds that keep every accepted value inside the column types of SQLite and PostgreSQL
# (64-bit ids, 32-bit quantity, total = quantity × price within its 20 digits).
MAX_QUANTITY = 1_000_000

UNKNOWN_FIELD = "unknown field"
NOT_AN_OBJECT = "record must be a JSON object"
ID_INVALID = f"id must be an integer from 1 to {MAX_EXPLICIT_ID}"
ID_EXISTS = "id already exists"
NAME_REQUIRED = "name is required"
NAME_BLANK = "name is blank"
EMAIL_REQUIRED = "email is required"
EMAIL_INVALID = "email is not a valid address"
EMAIL_DUPLICATE = "duplicate email"
PRICE_REQUIRED = "price is required"
PRICE_INVALID = "price must be a number with at most 2 decimal places"
PRICE_NEGATIVE = "price is negative"
QUANTITY_REQUIRED = "quantity is required"
QUANTITY_INVALID = "quantity must be an integer"
QUANTITY_NOT_POSITIVE = "quantity must be > 0"
QUANTITY_TOO_LARGE = f"quantity must be <= {MAX_QUANTITY}"
REFERENCE_INVALID = "must be a positive integer id"
USER_MISSING = "user does not exist"
PRODUCT_MISSING = "product does not exist"
USER_AND_PRODUCT_MISSING = "user and product do not exist"
# A choice's message names the choices, never the value sent: DRF's echoes it as
# ``str(value)``, a Python repr for a nested one (``"{'a': 1}" is not a valid choice.``).
CHOICE_INVALID = "must be one of: {choices}"

Errors = dict[str, list[str]]

_ID_FIELD = {
    "required": False,
    "min_value": 1,
    "max_value": MAX_EXPLICIT_ID,
    "error_messages": {
        "invalid": ID_INVALID,
        "min_value": ID_INVALID,
        "max_value": ID_INVALID,
        "max_string_length": ID_INVALID,
        "null": ID_INVALID,
    },
}
_REFERENCE_FIELD = {
    "min_value": 1,
    "max_value": MAX_ID,
    "error_messages": {
        key: REFERENCE_INVALID
        for key in ("invalid", "min_value", "max_value", "max_string_length", "null")
    },
}
_NAME_MESSAGES = {"required": NAME_REQUIRED, "null": NAME_REQUIRED, "blank": NAME_BLANK}
_MONEY = {"min_value": 0}


class StrictCharField(serializers.CharField):
    """Text must be a JSON string: ``0`` or ``true`` is not silently turned into text.

    ``max_length`` holds for the text as sent, as the schema publishes it, not only once
    surrounding whitespace is trimmed.
    """

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        if self.max_length is not None and len(data) > self.max_length:
            self.fail("max_length", max_length=self.max_length)
        return super().to_internal_value(data)


class StrictEmailField(serializers.EmailField, StrictCharField):
    pass


class StrictChoiceField(serializers.ChoiceField):
    """One of the choices, sent as a JSON string; refused with `CHOICE_INVALID`, which
    lists the choices and echoes nothing of the value."""

    def __init__(self, choices, **kwargs):
        super().__init__(choices, **kwargs)
        self.error_messages["invalid_choice"] = CHOICE_INVALID.format(
            choices=", ".join(self.choice_strings_to_values)
        )

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid_choice")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """Integers must be JSON integers, not ``"3"``, ``3.0`` or ``true``."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


@extend_schema_field(
    {"oneOf": [{"type": "number"}, {"type": "string", "format": "decimal"}]}, component_name=None
)
class MoneyField(serializers.DecimalField):
    """A JSON number (``12.5``) or a decimal string (``"12.50"``); never ``true``."""

    def to_internal_value(self, data):
        if isinstance(data, bool):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictInput(serializers.ModelSerializer):
    """Reject unknown keys and loosely typed values instead of coercing them."""

    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: StrictCharField,
        models.EmailField: StrictEmailField,
        models.IntegerField: StrictIntegerField,
        models.BigIntegerField: StrictIntegerField,
        models.BooleanField: StrictBooleanField,
        models.DecimalField: MoneyField,
    }
    serializer_choice_field = StrictChoiceField

    # DRF's to_internal_value visits every writable field; one the record leaves out that
    # is neither required nor has a default only raises SkipField there. Visiting the fields
    # the record has and those that act when absent gives the same result for a fraction of
    # the work (docs/performance.md, "Validated inserts"); False visits every field.
    VISIT_PRESENT_FIELDS_ONLY = True
    _record: Mapping | None = None

    def to_internal_value(self, data: Mapping) -> dict:
        unknown = {key: [UNKNOWN_FIELD] for key in data if key not in self.fields}
        self._record = data if self.VISIT_PRESENT_FIELDS_ONLY else None
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            raise serializers.ValidationError({**unknown, **exc.detail}) from exc
        finally:
            self._record = None
        if unknown:
            raise serializers.ValidationError(unknown)
        return value

    @property
    def _writable_fields(self):
        """DRF's writable fields, in order; while a record is validated, only those it
        names and those that act when absent (required, or with a default)."""
        record = self._record
        for field in super()._writable_fields:
            if record is None or field.field_name in record or _acts_when_absent(field):
                yield field


def _acts_when_absent(field: serializers.Field) -> bool:
    """Whether DRF does more than skip ``field`` when a record leaves it out."""
    return field.required or field.default is not empty


class UserInput(StrictInput):
    """A user as submitted; ``email`` comes out stripped and lower-cased."""

    id = StrictIntegerField(**_ID_FIELD)
    email = StrictEmailField(
        max_length=254,
        error_messages={
            "required": EMAIL_REQUIRED,
            "null": EMAIL_REQUIRED,
            "blank": EMAIL_REQUIRED,
            "invalid": EMAIL_INVALID,
        },
    )

    class Meta:
        model = User
        fields = [
            "id",
            "name",
            "email",
            "organization_id",
            "phone",
            "mobile",
            "country_code",
            "city",
            "credit_limit",
            "outstanding_amount",
            "total_sales",
            "customer_type",
            "segment_name",
            "segment_discount",
            "is_active",
        ]
        extra_kwargs = {
            "name": {"error_messages": _NAME_MESSAGES},
            "organization_id": {"min_value": 1, "max_value": MAX_ID},
            "credit_limit": _MONEY,
            "outstanding_amount": _MONEY,
            "total_sales": _MONEY,
            "segment_discount": {"min_value": 0, "max_value": 100},
        }

    def validate_email(self, value: str) -> str:
        return value.lower()


class ProductInput(StrictInput):
    """A product as submitted; ``price`` comes out as a two-place ``Decimal``."""

    id = StrictIntegerField(**_ID_FIELD)
    price = MoneyField(
        max_digits=12,
        decimal_places=2,
        min_value=0,
        error_messages={
            "required": PRICE_REQUIRED,
            "null": PRICE_REQUIRED,
            "invalid": PRICE_INVALID,
            "max_digits": PRICE_INVALID,
            "max_decimal_places": PRICE_INVALID,
            "max_whole_digits": PRICE_INVALID,
            "max_string_length": PRICE_INVALID,
            "min_value": PRICE_NEGATIVE,
        },
    )

    class Meta:
        model = Product
        fields = ["id", "name", "sku", "category", "price", "stock"]
        extra_kwargs = {
            "name": {"error_messages": _NAME_MESSAGES},
            "stock": {"min_value": 0, "max_value": 2**31 - 1},
        }


class OrderInput(StrictInput):
    """An order as submitted; ``unit_price`` and ``total`` are computed, never accepted."""

    id = StrictIntegerField(**_ID_FIELD)
    user_id = StrictIntegerField(**_REFERENCE_FIELD)
    product_id = StrictIntegerField(**_REFERENCE_FIELD)
    quantity = StrictIntegerField(
        min_value=1,
        max_value=MAX_QUANTITY,
        error_messages={
            "required": QUANTITY_REQUIRED,
            "null": QUANTITY_REQUIRED,
            "invalid": QUANTITY_INVALID,
            "max_string_length": QUANTITY_INVALID,
            "min_value": QUANTITY_NOT_POSITIVE,
            "max_value": QUANTITY_TOO_LARGE,
        },
    )

    class Meta:
        model = Order
        fields = ["id", "user_id", "product_id", "quantity", "status"]


_by_thread = local()
S = TypeVar("S", bound=StrictInput)


def input_serializer(cls: type[S]) -> S:
    """This thread's instance of ``cls``, built on first use and kept.

    A ModelSerializer builds its fields from the model when first asked for them, which
    costs more than validating a record (``docs/performance.md``). `check_fields`
    keeps no state on the instance between calls, and one thread uses it at a time.
    """
    cached = _by_thread.__dict__
    serializer = cached.get(cls)
    if serializer is None:
        serializer = cached[cls] = cls()
    return serializer


def check_fields(serializer: StrictInput, raw: Any) -> tuple[dict | None, Errors]:
    """Apply the field rules to one raw record.

    Returns ``(clean, {})`` on success, where ``clean`` holds Python values ready for the
    model, or ``(None, errors)`` mapping each field to its messages.
    """
    if not isinstance(raw, Mapping):
        return None, {NON_FIELD_ERRORS: [NOT_AN_OBJECT]}
    clean = fast_accept(serializer)(raw)
    if clean is not None:
        return clean, {}
    try:
        return dict(serializer.run_validation(raw)), {}
    except serializers.ValidationError as exc:
        detail = exc.detail if isinstance(exc.detail, dict) else {NON_FIELD_ERRORS: exc.detail}
        return None, {key: [str(msg) for msg in msgs] for key, msgs in detail.items()}


def check_records(
    serializer: StrictInput, raws: Iterable[Any]
) -> Iterator[tuple[dict | None, Errors]]:
    """`check_fields` of each raw record, in order; the serializer's `FastAccept` is
    looked up once for them all."""
    accept = fast_accept(serializer)
    for raw in raws:
        clean = accept(raw) if type(raw) is dict else None
        yield (clean, {}) if clean is not None else check_fields(serializer, raw)


# --- the fast accept ------------------------------------------------------------------

UNDECIDED = object()  # a field check's answer when DRF must decide
# Django validators whose rule is one comparison, and that comparison (BaseValidator's
# ``compare(clean(value), limit_value)``, true when the value fails).
COMPARED = {
    django_validators.MaxValueValidator: lambda value, limit: value > limit,
    django_validators.MinValueValidator: lambda value, limit: value < limit,
}
# Past this, DRF's IntegerField turns an int into text, which can fail (Python's limit
# on int-to-text digits); DRF decides.
INT_FAST_BOUND = 10**18


def _passes(validator, field: serializers.Field) -> Callable[[Any], bool]:
    """Whether a value passes ``validator`` as DRF's ``Field.run_validators`` runs it."""
    compare = COMPARED.get(type(validator))
    if compare is not None and not callable(validator.limit_value):
        limit = validator.limit_value
        return lambda value: not compare(value, limit)
    if type(validator) is django_validators.EmailValidator:
        return _email_passes(validator)
    return _calls(validator, field)


def _email_passes(validator: django_validators.EmailValidator) -> Callable[[str], bool]:
    """``EmailValidator.__call__``'s steps (pinned in test_fastpath_internals), with each
    domain's verdict remembered: a batch's addresses share a few domains, and the domain
    check (its regular expression, then an IP literal or IDNA attempt) is most of it."""
    user_match, allowlist = validator.user_regex.match, validator.domain_allowlist
    domain_passes = lru_cache(maxsize=1024)(validator.validate_domain_part)

    def passes(value: str) -> bool:
        if not value or "@" not in value or len(value) > 320:
            return False
        user_part, domain_part = value.rsplit("@", 1)
        return bool(user_match(user_part)) and (
            domain_part in allowlist or bool(domain_passes(domain_part))
        )

    return passes


def _calls(validator, field: serializers.Field) -> Callable[[Any], bool]:
    context = getattr(validator, "requires_context", False)

    def passes(value) -> bool:
        try:
            validator(value, field) if context else validator(value)
        except (DjangoValidationError, serializers.ValidationError):
            return False
        return True

    return passes


def _text_check(field: StrictCharField, validate_method) -> Callable[[Any], Any]:
    """`_field_check` of a text field, its usual validators (length, NUL, surrogates)
    folded into one function: text is most of a record."""
    max_length, trim = field.max_length, field.trim_whitespace
    longest, shortest, no_nul, surrogates, others = None, None, False, None, []
    for validator in field.validators:
        kind, limit = type(validator), getattr(validator, "limit_value", None)
        if kind is django_validators.MaxLengthValidator and not callable(limit):
            longest = limit if longest is None else min(longest, limit)
        elif kind is django_validators.MinLengthValidator and not callable(limit):
            shortest = limit if shortest is None else max(shortest, limit)
        elif kind is django_validators.ProhibitNullCharactersValidator:
            no_nul = True
        elif kind is ProhibitSurrogateCharactersValidator and surrogates is None:
            surrogates = _calls(validator, field)
        else:
            others.append(_passes(validator, field))

    def check(value):
        # StrictCharField.to_internal_value, then CharField's: blank text is DRF's (its
        # own message, or '' where blank is allowed).
        if type(value) is not str or (max_length is not None and len(value) > max_length):
            return UNDECIDED
        text = value.strip() if trim else value
        if (
            not text
            or (longest is not None and len(text) > longest)
            or (shortest is not None and len(text) < shortest)
            or (no_nul and "\x00" in text)
            # ASCII text has no surrogates; other text is checked by the validator itself.
            or (surrogates is not None and not text.isascii() and not surrogates(text))
        ):
            return UNDECIDED
        for value_passes in others:
            if not value_passes(text):
                return UNDECIDED
        return text if validate_method is None else validate_method(text)

    return check


def _field_check(field: serializers.Field, validate_method) -> Callable[[Any], Any] | None:
    """The value DRF's ``run_validation`` (then the serializer's ``validate_<field>``)
    gives a present, non-null ``value`` of ``field``, or `UNDECIDED`; None when this
    field's kind is not compiled (DRF decides every record that has it)."""
    if isinstance(field, StrictCharField):
        return _text_check(field, validate_method)
    passes = [_passes(v, field) for v in field.validators]
    if isinstance(field, StrictIntegerField):

        def convert(value):
            if type(value) is not int or not -INT_FAST_BOUND < value < INT_FAST_BOUND:
                return UNDECIDED
            return value

    elif isinstance(field, StrictBooleanField):

        def convert(value):
            return value if type(value) is bool else UNDECIDED

    elif isinstance(field, MoneyField | serializers.ChoiceField):
        # DRF's own conversion (decimal text and places, the choices' mapping), without
        # the layers of run_validation around it.
        to_internal_value = field.to_internal_value

        def convert(value):
            try:
                return to_internal_value(value)
            except serializers.ValidationError:
                return UNDECIDED

    else:
        return None

    def check(value):
        value = convert(value)
        if value is UNDECIDED:
            return UNDECIDED
        for value_passes in passes:
            if not value_passes(value):
                return UNDECIDED
        return value if validate_method is None else validate_method(value)

    return check


class FastAccept:
    """``accept(record)``: the clean values the serializer's ``run_validation`` would give
    ``record``, or None when DRF must decide (a rejection, an unknown key, a field left
    out that is required or has a default, a value of a kind not compiled).

    Built once per serializer instance from its writable fields; a serializer with its own
    ``validate`` or serializer-level validators is never shortcut.
    """

    def __init__(self, serializer: StrictInput) -> None:
        compilable = (
            type(serializer).validate is serializers.Serializer.validate
            and not serializer.validators
            and not serializer._read_only_defaults()
        )
        self.checks: dict[str, Callable[[Any], Any] | None] = {}
        self.acts_when_absent: tuple[str, ...] = ()
        if not compilable:
            self.checks = None
            return
        absent = []
        for field in serializer._writable_fields:
            name = field.field_name
            if field.source != name:  # a dotted or renamed source: DRF's to place
                self.checks[name] = None
                continue
            self.checks[name] = _field_check(field, getattr(serializer, f"validate_{name}", None))
            if _acts_when_absent(field):
                absent.append(name)
        self.acts_when_absent = tuple(absent)

    def __call__(self, record: Mapping) -> dict | None:
        checks = self.checks
        if checks is None:
            return None
        for name in self.acts_when_absent:
            if name not in record:
                return None
        clean = {}
        for name, value in record.items():
            check = checks.get(name)
            if check is None or value is None:  # unknown, not compiled, or null: DRF's
                return None
            value = check(value)
            if value is UNDECIDED:
                return None
            clean[name] = value
        return clean


def fast_accept(serializer: StrictInput) -> FastAccept:
    """The serializer's `FastAccept`, built on first use and kept on the instance (one
    per thread, `input_serializer`)."""
    accept = serializer.__dict__.get("_fast_accept")
    if accept is None:
        accept = serializer.__dict__["_fast_accept"] = FastAccept(serializer)
    return accept


@dataclass
class Taken:
    """Ids (and, for users, e-mails) a new record may not reuse.

    Filled with what the database already stores, then `claim` adds each record accepted
    earlier in the same batch. ``emails`` is ``None`` for models without an e-mail rule.
    """

    ids: set[int]
    emails: set[str] | None = None

    def conflicts(self, record: Mapping) -> Errors:
        """An explicit id already taken, an e-mail already used (records are lower-cased)."""
        errors = {}
        if record.get("id") is not None and record["id"] in self.ids:
            errors["id"] = [ID_EXISTS]
        if self.emails is not None and record["email"] in self.emails:
            errors["email"] = [EMAIL_DUPLICATE]
        return errors

    def claim(self, record: Mapping) -> None:
        """Reserve an accepted record's id and e-mail for the rest of the batch."""
        if record.get("id") is not None:
            self.ids.add(record["id"])
        if self.emails is not None:
            self.emails.add(record["email"])


def order_reference_errors(
    record: Mapping, *, user_ids: set[int], product_ids: set[int] | Mapping[int, Any]
) -> Errors:
    """An order must name an existing user and an existing product."""
    user_missing = record["user_id"] not in user_ids
    product_missing = record["product_id"] not in product_ids
    if user_missing and product_missing:
        return {NON_FIELD_ERRORS: [USER_AND_PRODUCT_MISSING]}
    if user_missing:
        return {NON_FIELD_ERRORS: [USER_MISSING]}
    if product_missing:
        return {NON_FIELD_ERRORS: [PRODUCT_MISSING]}
    return {}


def reason(errors: Errors) -> str:
    """One line for people: each message, prefixed with its field unless it names it."""
    parts = []
    for key, messages in errors.items():
        for message in messages:
            named = key == NON_FIELD_ERRORS or key.split("_")[0] in message
            parts.append(message if named else f"{key}: {message}")
    return "; ".join(parts)
