"""What each store's worker runs inside its transaction: the database rules, then the rows.

`store_users` and `store_products` reject ids and e-mails already taken, store the rest and
read which of the users / products the batch's orders refer to exist (with the products'
prices). `store_orders` waits for both, checks each order's references and stores the
valid ones. Each runs in ``atomic_within_deadline(alias)`` on its store's worker
(`api.db.bulkheads`); `api.services.batch_insert` hands them their records.
"""

from collections.abc import Set
from concurrent.futures import Future
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

from django.db import DatabaseError, IntegrityError, connections
from django.db.models import Model

from api.db.compiled_inserts import CompiledInsert
from api.db.deadlines import atomic_within_deadline
from api.db.failures import failure_kind, unavailable_reason
from api.db.routers import DatabaseRouter
from api.domain.results import ALREADY_STORED, FAILED, INSERTED, REJECTED, RecordResult
from api.domain.validation import Errors, Taken, order_reference_errors, reason
from api.models import Order, Product, User


class Candidate(NamedTuple):
    """A record that passed the field rules; ``data`` holds model-ready values.

    A tuple: one is made per record, and a frozen dataclass costs several times more."""

    index: int
    data: dict


@dataclass(frozen=True)
class Stored:
    """A worker's outcome: its results, and the referenced ids known to exist.

    ``known`` maps id → price for products; for users the values are ``None``.
    """

    results: list[RecordResult]
    known: dict[int, Decimal | None]


def store_users(alias: str, candidates: list[Candidate], referenced: set[int]) -> Stored:
    if not candidates and not referenced:
        return Stored([], {})
    with atomic_within_deadline(alias):
        results = _store(User, alias, candidates)
        # Read inside the transaction, after the insert: batch members count as existing.
        known = dict.fromkeys(_existing_ids(User, alias, referenced))
    return Stored(results, known)


def store_products(alias: str, candidates: list[Candidate], referenced: set[int]) -> Stored:
    if not candidates and not referenced:
        return Stored([], {})
    with atomic_within_deadline(alias):
        results = _store(Product, alias, candidates)
        prices = {}
        if referenced:
            rows = Product.objects.using(alias).filter(id__in=referenced)
            prices = dict(rows.values_list("id", "price"))
    return Stored(results, prices)


def store_orders(
    alias: str, candidates: list[Candidate], users_future: Future, products_future: Future
) -> Stored:
    if not candidates:
        return Stored([], {})
    try:
        referenced = User
        user_ids = users_future.result().known
        referenced = Product
        prices = products_future.result().known
    except DatabaseError as exc:  # logged by the part that raised it (`batch_insert`)
        store = getattr(exc, "store", None) or DatabaseRouter.model_alias(referenced)
        kind = failure_kind(exc)
        return Stored([failed(c, store, kind, references=True) for c in candidates], {})

    results, valid = [], []
    for c in candidates:
        errors = order_reference_errors(c.data, user_ids=user_ids, product_ids=prices)
        if errors:
            results.append(rejected(c.index, c.data.get("id"), errors))
            continue
        price = prices[c.data["product_id"]]
        total = price * c.data["quantity"]
        valid.append(Candidate(c.index, {**c.data, "unit_price": price, "total": total}))

    with atomic_within_deadline(alias):
        results += _store(Order, alias, valid)
    return Stored(results, {})


INSERTS = {model: CompiledInsert(model) for model in (User, Product, Order)}


def _store(model: type[Model], alias: str, candidates: list[Candidate]) -> list[RecordResult]:
    """Insert the candidates, reject those whose id or e-mail is taken; inside ``atomic``.

    The rows go in with ``INSERT ... ON CONFLICT DO NOTHING RETURNING id``
    (`api.db.compiled_inserts`), in submission order: the unique indexes decide, and a
    refused row aborts nothing. The rules (`Taken`) then explain each refusal, read in the
    same transaction: an id or e-mail stored before the batch, by another writer meanwhile
    (possible under PostgreSQL's READ COMMITTED; SQLite's IMMEDIATE transactions serialise
    writers), or by a record earlier in the batch. So the usual batch, all of it new,
    costs the insert alone. A refusal no rule explains raises `IntegrityError`.

    A batch that mixes records with and without an explicit id is inserted as two
    statements, automatic ids first; its records are checked first, against the rows
    stored and the records accepted before them, so that the earlier record in the
    batch still wins.
    """
    if not candidates:
        return []
    explicit = [c.data.get("id") is not None for c in candidates]
    if any(explicit) and not all(explicit):
        results, accepted = _checked_first(model, alias, candidates)
    else:
        results, accepted = [], candidates

    ids = INSERTS[model].insert(alias, [c.data for c in accepted])
    inserted, refused = [], []
    for c, new_id in zip(accepted, ids, strict=True):
        if new_id is None:
            refused.append(c)
        else:
            inserted.append((c, new_id))
    if refused:
        now = _taken(model, alias, [c.data for c in refused])
        stored_before = now.ids - set(ids)  # not the batch's own
        for c in refused:
            errors = now.conflicts(c.data)
            if not errors:
                raise IntegrityError(f"{model._meta.label}: a unique index refused {c.data!r}")
            results.append(rejected(c.index, c.data.get("id"), errors, stored_before))

    _advance_sequence(model, alias, [c.data["id"] for c, _ in inserted if c.data.get("id")])
    return results + [RecordResult(c.index, INSERTED, new_id) for c, new_id in inserted]


def _checked_first(
    model: type[Model], alias: str, candidates: list[Candidate]
) -> tuple[list[RecordResult], list[Candidate]]:
    """``(rejected, accepted)``: each candidate checked against the rows stored and the
    candidates accepted before it (`Taken.claim`)."""
    taken = _taken(model, alias, [c.data for c in candidates])
    stored_ids = frozenset(taken.ids)  # before `claim` adds the batch's own
    results, accepted = [], []
    for c in candidates:
        errors = taken.conflicts(c.data)
        if errors:
            results.append(rejected(c.index, c.data.get("id"), errors, stored_ids))
        else:
            taken.claim(c.data)
            accepted.append(c)
    return results, accepted


def _advance_sequence(model: type[Model], alias: str, explicit_ids: list[int]) -> None:
    """Move PostgreSQL's id sequence past explicit ids, so later automatic ids skip them.

    PostgreSQL's sequence ignores ids given explicitly (SQLite's AUTOINCREMENT does not);
    without this the next automatic id could be one just stored. Never moves it backwards.
    """
    connection = connections[alias]
    if not explicit_ids or connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT setval(s::regclass,"
            " GREATEST(%s, COALESCE(pg_sequence_last_value(s::regclass), 0)))"
            " FROM pg_get_serial_sequence(%s, 'id') AS s",
            [max(explicit_ids), model._meta.db_table],
        )


def _taken(model: type[Model], alias: str, records: list[dict]) -> Taken:
    """The ids (and e-mails, for users) among ``records`` that are already stored."""
    ids = _existing_ids(model, alias, {r.get("id") for r in records})
    if model is not User:
        return Taken(ids)
    emails = [r["email"] for r in records]
    taken = User.objects.using(alias).filter(email__in=emails).values_list("email", flat=True)
    return Taken(ids, set(taken))


def _existing_ids(model: type[Model], alias: str, ids: Set[int | None]) -> set[int]:
    ids = {pk for pk in ids if pk is not None}
    if not ids:
        return set()
    return set(model.objects.using(alias).filter(id__in=ids).values_list("id", flat=True))


def rejected(
    index: int, submitted_id: Any, errors: Errors, stored_ids: Set[int] = frozenset()
) -> RecordResult:
    """``stored_ids``: ids stored before the batch; a record with one is `ALREADY_STORED`."""
    valid_id = isinstance(submitted_id, int) and not isinstance(submitted_id, bool)
    record_id = submitted_id if valid_id else None
    code = ALREADY_STORED if record_id in stored_ids else ""
    return RecordResult(index, REJECTED, record_id, reason(errors), errors, code)


def failed(
    candidate: Candidate, store: str, kind: str, *, references: bool = False
) -> RecordResult:
    """``candidate`` failed because ``store`` did (``kind``: `api.db.failures.KINDS`);
    ``references``: it is an order whose user or product could not be read there. The
    reason is `unavailable_reason`'s, never an exception's text."""
    reason = unavailable_reason(store, kind)
    if references:
        reason = f"cannot check references: {reason}"
    return RecordResult(
        candidate.index, FAILED, candidate.data.get("id"), reason, code=kind, store=store
    )
