"""Per-record outcomes of a batch insert.

Every submitted record gets exactly one `RecordResult`:

- ``inserted``: stored; ``id`` is its primary key.
- ``rejected``: a validation rule refused it; ``errors`` maps fields to messages and
  ``reason`` is the same in one line. Resubmitting it unchanged gives the same answer.
  ``code`` is ``ALREADY_STORED`` when its explicit id belongs to a row stored before this
  batch (the batch ran before, or other data holds the id), else empty.
- ``failed``: the database could not take it (down, locked past its timeout); nothing of
  it was written and the same request may be retried. When a database fails, every record
  bound for it that passed the field rules is ``failed`` (its database rules could not be
  completed), and so is every order when the users or products database fails. Its
  ``store`` is the store that failed and ``code`` the kind of failure
  (`api.db.failures.KINDS`); ``reason`` says both in one line, and nothing else: the
  driver's message goes to the log only.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

from api.domain.stores import STORE_NAMES

INSERTED = "inserted"
REJECTED = "rejected"
FAILED = "failed"
STATUSES = (INSERTED, REJECTED, FAILED)
ALREADY_STORED = "already_stored"  # `RecordResult.code` of a record whose id is stored
NO_ERRORS = MappingProxyType({})  # a stored or failed record's ``errors``: read-only


class RecordResult(NamedTuple):
    """The outcome of one record; ``index`` is its position in the submitted list.

    A tuple: one is made per record, and a frozen dataclass's ``__init__`` costs three
    times as much (docs/performance.md, "Validated inserts")."""

    index: int
    status: str
    id: int | None
    reason: str = ""
    errors: Mapping[str, list[str]] = NO_ERRORS
    code: str = ""
    store: str = ""  # of a failed record: the store that failed

    def as_dict(self) -> dict:
        """The API's record: ``index``, ``status``, ``id``, ``reason``, ``errors``."""
        # Not ``_asdict``: ``code`` is for the /run/ page; the API's clients read ``errors``.
        return {
            "index": self.index,
            "status": self.status,
            "id": self.id,
            "reason": self.reason,
            "errors": self.errors or {},
        }


@dataclass(frozen=True)
class BatchResult:
    """Results per model, each list in submission order."""

    users: list[RecordResult]
    products: list[RecordResult]
    orders: list[RecordResult]

    def by_model(self) -> dict[str, list[RecordResult]]:
        return {name: getattr(self, name) for name in STORE_NAMES}

    def summary(self) -> dict[str, dict[str, int]]:
        """``{"users": {"inserted": 8, "rejected": 2, "failed": 0}, ...}``."""
        summary = {}
        for name, results in self.by_model().items():
            counts = summary[name] = dict.fromkeys(STATUSES, 0)
            for result in results:
                counts[result.status] += 1
        return summary

    def summary_lines(self) -> dict[str, str]:
        """``{"users": "Users: 8 inserted, 2 rejected, 0 failed", ...}``: `summary` as
        ``manage.py insert_data`` and the ``/run/`` page print it."""
        return {
            name: f"{name.capitalize()}: {counts[INSERTED]} inserted, "
            f"{counts[REJECTED]} rejected, {counts[FAILED]} failed"
            for name, counts in self.summary().items()
        }

    @property
    def has_failures(self) -> bool:
        """True when any database failed a record: the caller should report it / exit 1."""
        return any(r.status == FAILED for results in self.by_model().values() for r in results)

    @property
    def has_inserts(self) -> bool:
        """True when any record was stored: a failure elsewhere is then a partial commit."""
        return any(r.status == INSERTED for results in self.by_model().values() for r in results)
