"""Small value builders shared by the row generators: money, timestamps, weighted picks.

Rows are tuples of database-ready values, in the model's column order, so the SQLite
loader can hand them straight to ``executemany``: money is a two-place decimal string
(what Django itself sends for a ``DecimalField``), timestamps are naive UTC strings
``YYYY-MM-DD HH:MM:SS`` (what Django stores in SQLite with ``USE_TZ``). Loaders for other
backends convert from there (`api.services.generation.loaders`). For PostgreSQL's
``COPY`` each generator also writes its rows as lines of ``COPY``'s text format
(``copy_text=True``), the same values, with the pools' text escaped once (`copy_escape`).

Dates fall in a fixed window ending at `WINDOW_END`, not at "now", so that the same seed
gives the same rows on any day. Inside the window, rows are spread evenly in id order with
random jitter: a higher id is (almost always) a later row, as with real auto-increment ids.
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from time import gmtime, strftime

WINDOW_END = datetime(2026, 1, 1, tzinfo=UTC)
WINDOW_DAYS = 3 * 365
WINDOW_END_TS = int(WINDOW_END.timestamp())
WINDOW_START_TS = WINDOW_END_TS - WINDOW_DAYS * 86_400


def money(cents: int) -> str:
    """``12345`` → ``"123.45"``: a non-negative amount of cents as a two-place decimal."""
    return f"{cents // 100}.{CENTS[cents % 100]}"


# The ``:02d`` format spec cost as much as the rest of `money` together.
CENTS = tuple(f"{c:02d}" for c in range(100))


def window_step(count: int) -> float:
    """Seconds per row when ``count`` new rows share the window.

    The k-th row's time is ``WINDOW_START_TS + (k + random()) * step``: in id order, with
    jitter, inside the window. Generators compute it inline, as they do its text:
    ``day_texts()[s // 86_400] + time_texts()[s % 86_400]`` for ``s`` the time's whole
    seconds, the text Django stores for ``DateTimeField``. Two lookups instead of
    ``strftime`` (``docs/performance.md``); inline because a function call per row cost
    more than the lookups themselves.
    """
    return (WINDOW_END_TS - WINDOW_START_TS) / max(count, 1)


@cache
def day_texts() -> dict[int, str]:
    """Day number (Unix seconds // 86,400) → ``"YYYY-MM-DD "``, for every day of the window.

    A dict, not a list offset by the first day: a time outside the window fails loudly.
    """
    first, last = WINDOW_START_TS // 86_400, WINDOW_END_TS // 86_400
    return {day: strftime("%Y-%m-%d ", gmtime(day * 86_400)) for day in range(first, last + 1)}


@cache
def time_texts() -> tuple[str, ...]:
    """Second of the day → ``"HH:MM:SS"``, all 86,400 of them."""
    minutes = [f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60)]
    return tuple(f"{minute}{s:02d}" for minute in minutes for s in range(60))


def slots(weighted: Sequence[tuple[object, int]]) -> tuple:
    """A lookup table for weighted picks: ``table[int(random() * len(table))]``.

    Each value appears as many times as its weight: one multiplication and one index per
    pick, several times cheaper than `random.choices`.
    """
    return tuple(value for value, weight in weighted for _ in range(weight))


COPY_NULL = "\\N"
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_escape(value: str) -> str:
    """``value`` as a field of ``COPY``'s text format: backslash, tab, newline and
    carriage return escaped with a backslash."""
    return value.translate(_COPY_ESCAPES)
