"""Benchmark: one store locked, the others' latency; printed per phase, from one run.

Serves the project with ``gunicorn.conf.py`` on generated data (``--data-dir``; a small
data set is generated into a temporary folder when none is given), runs 8 lookup clients
(users) and 16 insert clients (orders) for a before, a during and an after phase, and
holds the ``orders`` SQLite file's write lock during the middle one
(`api.loadtest.faults.locked_store`). Prints, per phase and kind, requests, statuses and
latency p50/p95/p99/max and the share under 1 s. Targets (docs/performance.md): lookups
during the fault >= 95% under 1 s; inserts during it answered 503 + Retry-After within
about REQUEST_DEADLINE_SECONDS. Extra Gunicorn settings come from the environment
(``WEB_CONCURRENCY``, ``GUNICORN_THREADS``).
Usage: ``python bench/faults.py [--data-dir DIR] [--seconds 3,8,3]``.
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "data_project.settings")

import django  # noqa: E402

django.setup()

from api.loadtest import runner  # noqa: E402
from api.loadtest.faults import PHASES, locked_store, summarize  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def generated(data_dir: str) -> None:
    for command in (("migrate_all",), ("generate_data", "--rows", "30000", "--seed", "3")):
        subprocess.run(
            [sys.executable, "manage.py", *command, "--verbosity", "0"],
            cwd=REPO,
            env={**os.environ, "DATA_DIR": data_dir},
            check=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--seconds", default="3,8,3", help="before,during,after")
    args = parser.parse_args()
    seconds = tuple(float(s) for s in args.seconds.split(","))
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = args.data_dir or scratch
        if not args.data_dir:
            generated(data_dir)
        bind = f"127.0.0.1:{free_port()}"
        with runner.serve(bind, env={"DATA_DIR": data_dir}) as server:
            runner.wait_healthy(f"http://{bind}", server)
            samples = locked_store(
                f"http://{bind}", Path(data_dir) / "orders.sqlite3", seconds=seconds
            )
    print(
        f"locked orders store; WEB_CONCURRENCY={os.environ.get('WEB_CONCURRENCY', 'default')} "
        f"GUNICORN_THREADS={os.environ.get('GUNICORN_THREADS', 'default')}; "
        f"phases {args.seconds} s"
    )
    print(
        f"{'phase':8} {'kind':7} {'requests':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'<1 s':>6}  statuses"
    )
    for phase, kinds in summarize(samples).items():
        for kind, figures in kinds.items():
            print(
                f"{phase:8} {kind:7} {figures['requests']:8} {figures['p50_s'] * 1000:8.0f} "
                f"{figures['p95_s'] * 1000:8.0f} {figures['p99_s'] * 1000:8.0f} "
                f"{figures['max_s'] * 1000:8.0f} {figures['under_1s']:6.1%}  {figures['statuses']}"
            )
    assert set(PHASES) == set(summarize(samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
