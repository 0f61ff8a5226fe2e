"""A run's files are written aside and replace the previous run's only once it completes.

`staged_run` gives the run ``reports/.running/`` for Locust's files, the summary and the
page; `publish` then moves them into ``reports/`` in place of the previous run's
(`RUN_FILES`), leaving the folder's other contents (``bench/``, ``lookups/``,
``locust-ui/``, screenshots) alone. A run that is interrupted (Ctrl-C) or fails before its
report is written leaves ``reports/`` as it was: the previous run, complete, whose
index.html still matches its locust.html and CSVs.
"""

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STAGING = ".running"
# What one run writes into its folder (loadtest.runner.swarm, summary, report).
RUN_FILES = ("index.html", "summary.json", "summary.md", "locust.html", "locust.log")
RUN_FILES += ("locust.json", "locust_*.json", "locust_*.csv")
# loadtest.prometheus and loadtest.sampler: the server's side, and Prometheus's folder
# (its config, log and data).
RUN_FILES += ("server-metrics.json", "processes.json", "prometheus")


@contextmanager
def staged_run(reports: Path) -> Iterator[Path]:
    """An empty ``reports/.running/`` for the block, removed when it ends, however it ends
    (what `publish` moved out of it is kept)."""
    staged = Path(reports) / STAGING
    shutil.rmtree(staged, ignore_errors=True)  # left by a run that was killed
    staged.mkdir(parents=True)
    try:
        yield staged
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def run_files(folder: Path) -> list[Path]:
    """The files (and folders) of a run in ``folder`` (`RUN_FILES`)."""
    return sorted({path for pattern in RUN_FILES for path in Path(folder).glob(pattern)})


def publish(staged: Path, reports: Path) -> None:
    """Replace the run files in ``reports`` with those in ``staged``."""
    for path in run_files(reports):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    for path in run_files(staged):
        path.replace(Path(reports) / path.name)


def interrupted(reports: Path, previous: dict | None) -> str:
    """What an interrupted run says: nothing of it was kept, and what ``reports`` holds."""
    if previous:
        run = previous.get("run", {})
        held = f"the previous run ({run.get('finished_at', 'time unknown')}), unchanged"
    else:
        held = "no run" if not run_files(reports) else "the files it held, unchanged"
    return f"Interrupted: this run's measurements were discarded; {reports}/ holds {held}."
