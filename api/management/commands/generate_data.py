"""``manage.py generate_data``: fill the three databases with realistic rows, fast.

By default 1,000,000 rows: 30% users, 10% products, 60% orders (``--rows``), or explicit
counts (``--users/--products/--orders``; those not given are 0 unless ``--rows`` is also
given). The same ``--seed`` gives the same rows. Without ``--clear`` rows are appended with
fresh ids after the stored ones. The work is `api.services.generation`; this command reads
the options, plans, runs the plan and prints the summary. Progress goes to stderr: one bar
per database on a terminal, plain lines (no carriage returns, no escape codes) when
stderr is a file or a pipe.

Into a table that starts empty (or with ``--clear``), a large load drops the table's
indexes but the primary key, the unique e-mail index included, and builds them after
the rows, in the same transaction, so its time grows with the rows, not faster: 10M
users load at about the rows/s of 1M (``docs/performance.md``). Rebuilding the unique
index checks every e-mail: a duplicate fails the run, and the table keeps its rows and
indexes. Appending to stored users keeps the unique index (the new e-mails are checked
against the stored ones through it), so an append slows as the table grows.

Exit status: 0 when every table committed; 2 for bad options; 1 when a database failed,
130 when interrupted (Ctrl-C). In both of those cases the message lists each table's state:
the databases commit together, so normally every table was rolled back, and a partial
load is never reported as complete.
"""

import argparse
import sys
import time
from typing import IO

from django.core.checks import Tags
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from api.domain.stores import STORE_NAMES
from api.services.generation import PROCESSES, THREADS, Counts, PlanError
from api.services.generation.plan import plan_generation
from api.services.generation.progress import Progress, ProgressBars, ProgressLines
from api.services.generation.runner import RunResult, run_plan
from api.services.generation.worker import Event

DEFAULT_ROWS = 1_000_000
DEFAULT_SEED = 1
DEFAULT_BATCH_SIZE = 10_000
MAX_BATCH_SIZE = 200_000
USAGE_ERROR, FAILURE, INTERRUPTED = 2, 1, 130


def count(text: str) -> int:
    """An argparse type: a non-negative integer (``1000000`` or ``1_000_000``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def batch_size(text: str) -> int:
    """An argparse type: rows per batch, 1 to `MAX_BATCH_SIZE` (memory grows with it)."""
    value = count(text)
    if not 1 <= value <= MAX_BATCH_SIZE:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_BATCH_SIZE:,}")
    return value


class Command(BaseCommand):
    help = "Generate realistic users, products and orders in their three databases."
    # The model checks only: the command serves no URL, template or static file, and the
    # URL checks import every view (DRF included), a noticeable share of a run's start-up.
    requires_system_checks = [Tags.models]

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--rows",
            type=count,
            help=f"total rows, split 30/10/60%% users/products/orders (default {DEFAULT_ROWS:,})",
        )
        for table in STORE_NAMES:
            parser.add_argument(
                f"--{table}", type=count, help=f"{table} to generate (replaces its share)"
            )
        parser.add_argument(
            "--seed", type=int, default=DEFAULT_SEED, help="same seed, same rows (default 1)"
        )
        parser.add_argument(
            "--batch-size",
            type=batch_size,
            default=DEFAULT_BATCH_SIZE,
            help=f"rows per insert batch (default {DEFAULT_BATCH_SIZE:,})",
        )
        parser.add_argument(
            "--clear", action="store_true", help="empty the three tables first (ids from 1)"
        )
        parser.add_argument(
            "--parallel",
            choices=(PROCESSES, THREADS),
            default=PROCESSES,
            help="one worker per database as processes (default, faster) or threads",
        )

    def handle(self, *args, **options) -> None:
        _check_keyword_options(options)
        counts = counts_from(options)
        if not counts.total and not options["clear"]:
            raise CommandError("nothing to generate: every count is 0", returncode=USAGE_ERROR)
        verbose = options["verbosity"] > 0
        started = time.perf_counter()
        try:
            plan = plan_generation(
                counts=counts,
                seed=options["seed"],
                batch_size=options["batch_size"],
                clear=options["clear"],
            )
        except PlanError as exc:
            raise CommandError(str(exc), returncode=USAGE_ERROR) from exc
        except DatabaseError as exc:
            raise CommandError(
                f"cannot read the databases ({exc}); run manage.py migrate_all first?"
            ) from exc
        except KeyboardInterrupt:
            raise CommandError(
                "generate_data interrupted while planning: nothing was written",
                returncode=INTERRUPTED,
            ) from None
        progress = _progress(getattr(self.stderr, "_out", sys.stderr)) if verbose else None
        result = run_plan(plan, parallel=options["parallel"], progress=progress)
        seconds = time.perf_counter() - started
        if result.complete:
            if verbose:
                self.stdout.write(render_summary(result, seconds=seconds, seed=options["seed"]))
            return
        raise CommandError(
            render_failure(result), returncode=INTERRUPTED if result.interrupted else FAILURE
        )


def _progress(stream: IO[str]) -> Progress:
    """Bars for a terminal; in a log (file, pipe) redrawn bars are noise: plain lines."""
    return ProgressBars(stream) if stream.isatty() else ProgressLines(stream)


def _check_keyword_options(options: dict) -> None:
    """Apply the parser's rules to values given as keywords to `call_command` (unparsed)."""
    rules = {name: count for name in ("rows", *STORE_NAMES)}
    for name, rule in {**rules, "batch_size": batch_size}.items():
        if options[name] is None:
            continue
        try:
            rule(str(options[name]))
        except argparse.ArgumentTypeError as exc:
            option = name.replace("_", "-")
            raise CommandError(f"--{option}: {exc}", returncode=USAGE_ERROR) from None


def counts_from(options: dict) -> Counts:
    """``--rows`` split, then each explicit count in place of its share."""
    explicit = {t: options[t] for t in STORE_NAMES if options[t] is not None}
    rows = options["rows"]
    if rows is None:
        rows = 0 if explicit else DEFAULT_ROWS
    split = Counts.split(rows)
    return Counts(
        explicit.get("users", split.users),
        explicit.get("products", split.products),
        explicit.get("orders", split.orders),
    )


def render_summary(result: RunResult, *, seconds: float, seed: int) -> str:
    """The closing report: rows, ids, seconds and rows/s per table, then the total."""
    total = result.loaded
    lines = [
        f"Generated {total:,} rows in {seconds:.2f} s ({_rate(total, seconds)} rows/s), "
        f"seed {seed}, one worker per database ({result.parallel}):"
    ]
    for t in result.tables.values():
        ids = f"ids {t.first_id:,}–{t.first_id + t.planned - 1:,}" if t.planned else "no rows"
        note = f"  appended after {t.stored:,} stored rows" if t.stored else ""
        lines.append(
            f"  {t.table:<9} {t.loaded:>11,} rows  {ids:<26} {t.seconds:7.2f} s "
            f"{_rate(t.loaded, t.seconds):>10} rows/s{note}"
        )
    return "\n".join(lines)


def render_failure(result: RunResult) -> str:
    """What was loaded, table by table, when the run did not complete."""
    what = "interrupted" if result.interrupted else "failed"
    lines = [f"generate_data {what}: the load is NOT complete; {result.loaded:,} rows stored."]
    for t in result.tables.values():
        state = {
            Event.COMMITTED: f"committed {t.planned:,} rows",
            Event.ROLLED_BACK: "rolled back, unchanged",
            Event.FAILED: "failed and rolled back, unchanged",
        }.get(t.status, t.status)
        lines.append(f"  {t.table:<9} {state}")
    lines.extend(f"  error in {error}" for error in result.errors)
    return "\n".join(lines)


def _rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:,.0f}" if seconds > 0 else "-"
