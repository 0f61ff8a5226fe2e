"""Bulk generation of realistic users, products and orders (``manage.py generate_data``).

A run has three steps, each in its own module:

1. **Plan** (`plan`): counts per table, the first free id of each table (appending never
   reuses an id), and what orders may reference: stored users and products as well as the
   new ones, with every product's price.
2. **Generate** (`users`, `products`, `orders`, from `pools`, `catalog` and `values`):
   streams of row batches. Faker is called only to fill seeded pools; each row is a few
   microseconds of `random.Random` picks, so a million rows take seconds, not minutes, and
   the same seed gives the same rows. Memory stays flat: one batch per table at a time.
3. **Load** (`runner`, `worker`, `loaders`): one worker per database, in parallel, each
   writing its table in one transaction through the fastest loader for its backend; the
   three commit together once all are ready, or all roll back.

`data_generate` runs the three steps; the command adds options, progress and the summary.
"""

from api.services.generation.plan import Counts, PlanError, plan_generation
from api.services.generation.progress import Progress
from api.services.generation.runner import PROCESSES, THREADS, RunResult, run_plan

__all__ = ["PROCESSES", "THREADS", "Counts", "PlanError", "RunResult", "data_generate"]


def data_generate(
    *,
    counts: Counts,
    seed: int,
    batch_size: int,
    clear: bool = False,
    parallel: str = PROCESSES,
    portable: bool = False,
    progress: Progress | None = None,
) -> RunResult:
    """Plan and load ``counts`` new rows; the result says what was committed.

    ``portable`` loads through Django's ``bulk_create`` on every backend (the SQLite fast
    path is skipped). Raises `PlanError` when the request cannot be met.
    """
    plan = plan_generation(
        counts=counts, seed=seed, batch_size=batch_size, clear=clear, portable=portable
    )
    return run_plan(plan, parallel=parallel, progress=progress)
