"""A batch of records as submitted: ``{"users": [...], "products": [...], "orders": [...]}``.

The same shape arrives as a JSON body (``POST /api/run-query/?type=insert``) and as a file
(``manage.py insert_data --file``, the assignment fixture). `parse_batch` checks the shape
only; each record's own rules are `api.domain.validation`'s.
"""

import json
from pathlib import Path
from typing import Any

from api.domain.stores import STORE_NAMES

ASSIGNMENT_FILE = Path(__file__).resolve().parent.parent / "fixtures" / "assignment.json"
MAX_BATCH_RECORDS = 1000


class InvalidBatch(ValueError):
    """The document is not shaped like a batch; ``details`` maps keys to messages."""

    def __init__(self, message: str, details: dict[str, list[str]] | None = None):
        super().__init__(message)
        self.details = details or {}


def parse_batch(
    document: Any, *, strict: bool = True, max_records: int | None = MAX_BATCH_RECORDS
) -> dict[str, list]:
    """Return ``{"users": [...], "products": [...], "orders": [...]}`` from ``document``.

    ``strict`` rejects keys other than the three lists (a file may carry notes such as
    the fixture's ``expected``). Raises `InvalidBatch` for a non-object, a value that is
    not a list, an unknown key, or more than ``max_records`` records in all.
    """
    if not isinstance(document, dict):
        raise InvalidBatch(f"expected a JSON object with {', '.join(STORE_NAMES)}")
    unknown = sorted(set(document) - set(STORE_NAMES)) if strict else []
    if unknown:
        raise InvalidBatch(
            f"unknown key: {', '.join(unknown)}", {key: ["unknown key"] for key in unknown}
        )
    batch = {key: document.get(key, []) for key in STORE_NAMES}
    not_lists = {
        key: ["must be a list of records"] for key, v in batch.items() if not isinstance(v, list)
    }
    if not_lists:
        raise InvalidBatch("users, products and orders must be lists", not_lists)
    total = sum(map(len, batch.values()))
    if max_records is not None and total > max_records:
        raise InvalidBatch(
            f"{total} records: at most {max_records} per batch",
            {"records": [f"{total} > {max_records}"]},
        )
    return batch


def read_batch(path: Path | str = ASSIGNMENT_FILE) -> dict[str, list]:
    """Read a batch file; extra top-level keys are ignored and its size is not capped.

    Raises `InvalidBatch` naming the file when it is unreadable, not JSON or misshapen.
    """
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidBatch(f"cannot read {path}: {exc.strerror}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidBatch(f"{path} is not valid JSON: {exc}") from exc
    try:
        return parse_batch(document, strict=False, max_records=None)
    except InvalidBatch as exc:
        raise InvalidBatch(f"{path}: {exc}", exc.details) from exc
