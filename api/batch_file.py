"""Reading a batch of records from a JSON file, such as the assignment fixture.

The file is an object with optional ``users``, ``products`` and ``orders`` lists of
records; other keys (the fixture's ``source`` and ``expected``) are ignored.
"""

import json
from pathlib import Path

ASSIGNMENT_FILE = Path(__file__).resolve().parent / "fixtures" / "assignment.json"
BATCH_KEYS = ("users", "products", "orders")


class BatchFileError(ValueError):
    """The file is missing, not JSON, or not shaped like a batch."""


def read_batch(path: Path | str = ASSIGNMENT_FILE) -> dict[str, list]:
    """Return ``{"users": [...], "products": [...], "orders": [...]}`` read from ``path``.

    Raises `BatchFileError` with a message naming the file and what is wrong.
    """
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise BatchFileError(f"cannot read {path}: {exc.strerror}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BatchFileError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise BatchFileError(f"{path}: expected a JSON object with {', '.join(BATCH_KEYS)}")
    batch = {key: document.get(key, []) for key in BATCH_KEYS}
    for key, records in batch.items():
        if not isinstance(records, list):
            raise BatchFileError(f"{path}: {key!r} must be a list of records")
    return batch
