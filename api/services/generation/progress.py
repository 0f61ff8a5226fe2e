"""A run's progress, table by table: `ProgressBars` draws one tqdm bar per database.

The runner only calls `start`, `advance`, `state` and `close`; `Quiet` shows nothing.
"""

from typing import IO, Protocol

from tqdm import tqdm


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
