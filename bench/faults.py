"""Benchmark: faults against a live server, and the latency of the requests they spare.

Serves the project with ``gunicorn.conf.py`` on generated data (``--data-dir``; a small
data set is generated into a temporary folder when none is given), or uses ``--url``
(a server already running on that data, e.g. behind a proxy), and runs a scenario of
`loadtest.faults`:

- ``locked`` (default): 8 lookup clients (users) and 16 insert clients (orders) for a
  before, a during and an after phase; the ``orders`` SQLite file's write lock is held
  during the middle one (with ``--postgres``: an ``ACCESS EXCLUSIVE`` lock on its
  ``orders`` table). Targets: lookups during the fault >= 95% under 1 s; inserts
  answered 503 + Retry-After within about REQUEST_DEADLINE_SECONDS.
- ``headers``, ``body``, ``unread``: 8 lookup clients, then 16 connections that trickle
  their headers or a body a byte a second, or ask for about 1 MB and never read it.
  Target: lookups no more than 100 ms slower.
- ``restart``: 4 lookup clients and 4 insert clients (batches of 2 users, a product and
  its order, each with an Idempotency-Key and sent again after a 503) while the
  PostgreSQL server of the stores is stopped (fast) and started again
  (`loadtest.faults.restarted_server`); the server is the throwaway one of
  ``deploy/faults_cluster.sh`` (port 5440, root; ``make bench-faults-restart``), its
  databases ``dp_faults_restart_*`` made anew. ``--seconds before,down,after``. Targets:
  503 + Retry-After while down, no 500, no acknowledged record lost, every request
  succeeding within 5 s of the server's return.

Prints, per phase and kind, requests, statuses, latency p50/p95/p99/max and the share
under 1 s. Extra Gunicorn settings come from the environment (``WEB_CONCURRENCY``,
``GUNICORN_THREADS``). Measured figures: docs/performance.md, "Faults".
``--postgres URL_PREFIX`` (``make bench-faults-pg``) serves the three routed stores from
PostgreSQL databases ``URL_PREFIX`` + ``users``/``products``/``orders`` (created and
generated unless ``--data-dir`` is given: then they hold the data already).
Usage: ``python bench/faults.py [--scenario locked|headers|body|unread|restart]
[--data-dir DIR] [--url URL] [--seconds 3,8,3] [--postgres URL_PREFIX]``.
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "data_project.settings")

import django  # noqa: E402

django.setup()

from loadtest import runner  # noqa: E402
from loadtest.faults import (  # noqa: E402
    SLOW_MODES,
    locked_store,
    restart_figures,
    restart_records,
    restarted_server,
    slow_clients,
    summarize,
)

RESTART_SCRIPT = str(REPO / "deploy" / "faults_cluster.sh")
RESTART_SERVER = "postgres://postgres@127.0.0.1:5440"
ROUTED = ("users", "products", "orders")


def generated(env: dict[str, str]) -> None:
    for command in (("migrate_all",), ("generate_data", "--rows", "30000", "--seed", "3")):
        subprocess.run(
            [sys.executable, "manage.py", *command, "--verbosity", "0"],
            cwd=REPO,
            env={**os.environ, **env},
            check=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=["locked", *SLOW_MODES, "restart"], default="locked")
    parser.add_argument("--data-dir")
    parser.add_argument("--url", help="a running server on --data-dir's data")
    parser.add_argument(
        "--seconds", help="before,during[,after] (default 3,8,3; restart: 2,3,6, down for the 3)"
    )
    parser.add_argument("--postgres", metavar="URL_PREFIX", help="stores on PostgreSQL")
    args = parser.parse_args()
    if args.scenario == "restart":
        return restart(tuple(float(s) for s in (args.seconds or "2,3,6").split(",")))
    args.seconds = args.seconds or "3,8,3"
    seconds = tuple(float(s) for s in args.seconds.split(","))
    stores = {
        f"DATABASE_URL_{alias.upper()}": f"{args.postgres}{alias}"
        for alias in ("users", "products", "orders")
        if args.postgres
    }

    def run(url: str, data_dir: str):
        if args.scenario == "locked":
            orders = stores.get("DATABASE_URL_ORDERS") or Path(data_dir) / "orders.sqlite3"
            return locked_store(url, orders, seconds=seconds)
        return slow_clients(url, args.scenario, seconds=seconds[:2])

    with tempfile.TemporaryDirectory() as scratch:
        data_dir = args.data_dir or scratch
        if args.url:
            samples = run(args.url, data_dir)
        else:
            env = {"DATA_DIR": data_dir, **stores}
            if not args.data_dir:
                generated(env)
            bind = f"127.0.0.1:{runner.free_port()}"
            with runner.serve(bind, env=env) as server:
                runner.wait_healthy(f"http://{bind}", server)
                samples = run(f"http://{bind}", data_dir)
    print(
        f"scenario {args.scenario}; {args.url or 'gunicorn.conf.py'}; "
        f"stores {'PostgreSQL ' + args.postgres if args.postgres else 'SQLite'}; "
        f"WEB_CONCURRENCY={os.environ.get('WEB_CONCURRENCY', 'default')} "
        f"GUNICORN_THREADS={os.environ.get('GUNICORN_THREADS', 'default')}; "
        f"phases {args.seconds} s"
    )
    print(
        f"{'phase':8} {'kind':7} {'requests':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'<1 s':>6}  statuses"
    )
    for phase, kinds in summarize(samples).items():
        for kind, figures in kinds.items():
            if not figures["requests"]:
                continue
            print(
                f"{phase:8} {kind:7} {figures['requests']:8} {figures['p50_s'] * 1000:8.0f} "
                f"{figures['p95_s'] * 1000:8.0f} {figures['p99_s'] * 1000:8.0f} "
                f"{figures['max_s'] * 1000:8.0f} {figures['under_1s']:6.1%}  {figures['statuses']}"
            )
    return 0


def cluster(command: str) -> None:
    subprocess.run([RESTART_SCRIPT, command], check=True, capture_output=True, timeout=120)


def restart(seconds: tuple[float, float, float]) -> int:
    """The ``restart`` scenario on the throwaway server; prints its figures."""
    cluster("start")
    urls = {alias: f"{RESTART_SERVER}/dp_faults_restart_{alias}" for alias in ROUTED}
    with psycopg.connect(f"{RESTART_SERVER}/postgres", autocommit=True) as admin:
        for url in urls.values():
            admin.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")
    with tempfile.TemporaryDirectory() as data_dir:
        env = {"DATA_DIR": data_dir, "GUNICORN_LOG_LEVEL": "critical"}
        env |= {f"DATABASE_URL_{alias.upper()}": url for alias, url in urls.items()}
        generated(env)
        bind = f"127.0.0.1:{runner.free_port()}"
        with runner.serve(bind, env=env) as server:
            runner.wait_healthy(f"http://{bind}", server)
            run = restarted_server(
                f"http://{bind}",
                f"{RESTART_SERVER}/postgres",
                lambda: cluster("stop"),
                lambda: cluster("start"),
                seconds=seconds,
            )
    figures, records = restart_figures(run), restart_records(run, urls)
    print(
        f"scenario restart; gunicorn.conf.py; stores PostgreSQL {RESTART_SERVER}; "
        f"WEB_CONCURRENCY={os.environ.get('WEB_CONCURRENCY', 'default')} "
        f"DATABASE_POOL={os.environ.get('DATABASE_POOL', '0')}; "
        f"{seconds[0]:g} s, then down {seconds[1]:g} s, then {seconds[2]:g} s"
    )
    print(f"statuses: {figures['statuses']}; while down: {figures['while_down']}")
    print(
        f"stop took {figures['stop_s']:.2f} s, start until a connection "
        f"{figures['start_s']:.2f} s; "
        f"first 503 sent {figures['first_503_s']:.2f} s after the stop, last answered "
        f"{figures['last_503_s']:.2f} s after the return"
    )
    first = {
        kind: f"{s:.2f} s" if s is not None else "none"
        for kind, s in figures["first_success_s"].items()
    }
    print(
        f"recovery: the last failure answered {figures['recovery_s']:.2f} s after the return; "
        f"first success: lookups {first['lookup']}, inserts {first['insert']}; "
        f"longest request: lookups {figures['max_s']['lookup']:.2f} s, "
        f"inserts {figures['max_s']['insert']:.2f} s; unanswered {figures['unanswered']}"
    )
    print(
        f"records: {records['sent']} sent, {records['acknowledged']} acknowledged, "
        f"{len(records['lost'])} lost, {len(records['stored_twice'])} stored twice; answered "
        f"failed: {len(records['failed_absent'])} absent, {len(records['failed_stored'])} stored"
    )
    return 0 if not records["lost"] and not records["stored_twice"] else 1


if __name__ == "__main__":
    sys.exit(main())
