"""Small value builders shared by the row generators: money, timestamps, weighted picks.

Rows are tuples of database-ready values, in the model's column order, so the SQLite
loader can hand them straight to ``executemany``: money is a two-place decimal string
(what Django itself sends for a ``DecimalField``), timestamps are naive UTC strings
``YYYY-MM-DD HH:MM:SS`` (what Django stores in SQLite with ``USE_TZ``). Loaders for other
backends convert from there (`api.services.generation.loaders`).

Dates fall in a fixed window ending at `WINDOW_END`, not at "now", so that the same seed
gives the same rows on any day. Inside the window, rows are spread evenly in id order with
random jitter: a higher id is (almost always) a later row, as with real auto-increment ids.
"""

import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import cache
from time import gmtime, strftime

WINDOW_END = datetime(2026, 1, 1, tzinfo=UTC)
WINDOW_DAYS = 3 * 365
WINDOW_END_TS = int(WINDOW_END.timestamp())
WINDOW_START_TS = WINDOW_END_TS - WINDOW_DAYS * 86_400


def money(cents: int) -> str:
    """``12345`` → ``"123.45"``: a non-negative amount of cents as a two-place decimal."""
    return f"{cents // 100}.{cents % 100:02d}"


def timestamp_formatter() -> Callable[[float], str]:
    """A function: Unix seconds → the naive UTC text Django stores for ``DateTimeField``.

    Two table lookups (the day's date, cached as met, and the time of day from a table of
    all 86,400) instead of ``strftime`` (``docs/performance.md``).
    """
    clock, days = _clock(), {}

    def text(seconds: float) -> str:
        day, second = divmod(int(seconds), 86_400)
        date = days.get(day)
        if date is None:
            date = days[day] = strftime("%Y-%m-%d ", gmtime(day * 86_400))
        return date + clock[second]

    return text


@cache
def _clock() -> tuple[str, ...]:
    minutes = [f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60)]
    return tuple(f"{minute}{s:02d}" for minute in minutes for s in range(60))


def spread(*, count: int, rng: random.Random) -> Callable[[int], float]:
    """A function mapping the k-th of ``count`` new rows to a Unix time inside the window."""
    step = (WINDOW_END_TS - WINDOW_START_TS) / max(count, 1)
    r = rng.random
    return lambda k: WINDOW_START_TS + (k + r()) * step


def slots(weighted: Sequence[tuple[object, int]]) -> tuple:
    """A lookup table for weighted picks: ``table[int(random() * len(table))]``.

    Each value appears as many times as its weight: one multiplication and one index per
    pick, several times cheaper than `random.choices`.
    """
    return tuple(value for value, weight in weighted for _ in range(weight))
