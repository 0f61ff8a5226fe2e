"""A run's progress, table by table: bars on a terminal, plain lines anywhere else.

On a terminal `ProgressBars` draws one tqdm bar per database and redraws them in place.
Written to a file or a pipe (CI, ``make demo > log 2>&1``) that redrawing is a stream of
carriage returns and cursor movements with the bars running into each other, so
`ProgressLines` writes plain lines instead, each whole and flushed: one when a table
starts, one per tenth of its rows, and one for each later step (indexing, ready, then
committed, rolled back or failed). tqdm's own ``disable=None`` would only switch the bars
off there, leaving a log without progress. The caller picks one by its stream's
``isatty()``; the runner only calls `start`, `advance`, `state` and `close`.
"""

import time
from dataclasses import dataclass
from typing import IO, Protocol

from tqdm import tqdm

STEPS = 10  # ProgressLines writes a line per tenth of a table's rows


class Progress(Protocol):
    """Where the runner reports each table's rows and steps."""

    def start(self, table: str, *, label: str, total: int) -> None: ...

    def advance(self, table: str, rows: int) -> None: ...

    def state(self, table: str, state: str) -> None: ...

    def close(self) -> None: ...


class ProgressBars:
    """One tqdm bar per table, stacked in the order the tables start: for a terminal."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream, self.bars = stream, {}

    def start(self, table: str, *, label: str, total: int) -> None:
        self.bars[table] = tqdm(
            total=total,
            desc=f"{label:<9}",
            position=len(self.bars),
            unit=" rows",
            unit_scale=True,
            file=self.stream,
            leave=True,
            dynamic_ncols=True,
        )

    def advance(self, table: str, rows: int) -> None:
        self.bars[table].update(rows)

    def state(self, table: str, state: str) -> None:
        self.bars[table].set_postfix_str(state)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


class ProgressLines:
    """Plain log lines, no control characters: for a file or a pipe.

    ``users     300,000/1,000,000 rows (30%)  12.3 s``, the seconds counted from the
    table's start.
    """

    def __init__(self, stream: IO[str]) -> None:
        self.stream, self.tables = stream, {}

    def start(self, table: str, *, label: str, total: int) -> None:
        self.tables[table] = _Table(label, total, time.perf_counter())
        self._write(table, f"started: {total:,} rows")

    def advance(self, table: str, rows: int) -> None:
        shown = self.tables[table]
        shown.done += rows
        step = shown.done * STEPS // shown.total if shown.total else 0
        if step > shown.step:  # one line, however many tenths one batch crossed
            shown.step = step
            width = len(f"{shown.total:,}")
            percent = shown.done * 100 // shown.total
            self._write(table, f"{shown.done:>{width},}/{shown.total:,} rows ({percent}%)")

    def state(self, table: str, state: str) -> None:
        self._write(table, state)

    def close(self) -> None:
        self.stream.flush()

    def _write(self, table: str, text: str) -> None:
        shown = self.tables[table]
        seconds = time.perf_counter() - shown.started
        self.stream.write(f"{shown.label:<9} {text}  {seconds:.1f} s\n")
        self.stream.flush()  # a pipe read while the run goes on sees each line at once


@dataclass
class _Table:
    label: str
    total: int
    started: float
    done: int = 0
    step: int = 0


class Quiet:
    """No progress at all (``-v 0``)."""

    def start(self, table: str, *, label: str, total: int) -> None:
        pass

    def advance(self, table: str, rows: int) -> None:
        pass

    def state(self, table: str, state: str) -> None:
        pass

    def close(self) -> None:
        pass
