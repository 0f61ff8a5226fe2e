"""Benchmark: the 1000-user Locust swarm against the project and against the raw anchor.

Runs, in one session and on the same data (the project's million-row ``users`` file):

1. the project's lookup-only swarm: ``manage.py loadtest --tags user_id`` (Gunicorn with
   ``gunicorn.conf.py``, the lookup-by-id task alone, body checks on);
2. the anchor: ``anchors/raw_wsgi.py:lookup`` served with the same ``gunicorn.conf.py`` and
   swarmed by ``anchors/locust_anchor.py`` with the same users, spawn rate and duration;
3. optionally (``--mixed``) the project's default mixed swarm.

The users file is read once first, so that neither side pays for a cold page cache, and
``--rounds N`` alternates project and anchor N times, and which of them goes first: on the
shared 2-core machine one pair of runs swung by ±15%. Prints RPS, p95, p99 and failures of
every run, and the ratio project/anchor per round and its median (target >= 0.9).
Usage: ``python bench/swarm.py [--users 1000] [--run-time 60s] [--rounds 3] [--mixed]``.

``--postgres URL_PREFIX`` (``make bench-swarm-pg``) swarms the project with its three
routed aliases on PostgreSQL (``URL_PREFIX`` + ``users``/``products``/``orders``, loaded as
``manage.py loadtest`` loads them) against ``anchors/raw_wsgi_pg.py:lookup`` on the same
``users`` table.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.domain.stores import STORE_NAMES
from bench.lookup import GUNICORN, PYTHON, REPO, gunicorn
from loadtest.summary import read_stats, summarize


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR", str(REPO / "var/db")))
    parser.add_argument("--anchors", default=str(REPO.parent / "shared" / "anchors"))
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--spawn-rate", type=int, default=100)
    parser.add_argument("--run-time", default="60s")
    parser.add_argument("--reports", default=str(REPO / "reports" / "bench"))
    parser.add_argument("--rounds", type=int, default=3, help="project/anchor pairs to run")
    parser.add_argument("--mixed", action="store_true", help="also run the default mixed swarm")
    parser.add_argument("--postgres", metavar="URL_PREFIX", help="the routed aliases' databases")
    args = parser.parse_args()
    reports = Path(args.reports).resolve()  # the anchor runs from its own folder
    swarm = ["--users", str(args.users), "--spawn-rate", str(args.spawn_rate)]
    env = {**os.environ, "DATA_DIR": args.data_dir}
    if args.postgres:
        env.update((f"DATABASE_URL_{s.upper()}", args.postgres + s) for s in STORE_NAMES)
    else:
        warm_page_cache(Path(args.data_dir) / "users.sqlite3")
    runs: list[tuple[str, dict]] = []
    ratios = []
    for number in range(1, args.rounds + 1):
        sides = {
            "ours": partial(
                project, ["--tags", "user_id"], reports / f"lookups-{number}", swarm, args, env
            ),
            "theirs": partial(anchor, reports / f"anchor-{number}", swarm, args),
        }
        # Who goes first alternates: the first swarm of a round ran slower in most runs.
        order = list(sides) if number % 2 else list(reversed(sides))
        totals = {side: sides[side]() for side in order}
        ours, theirs = totals["ours"], totals["theirs"]
        runs += [(f"project (lookups) {number}", ours), (f"anchor (raw) {number}", theirs)]
        ratios.append(ours["rps"] / theirs["rps"])
    if args.mixed:
        runs.append(("project (mixed)", project([], reports / "mixed", swarm, args, env)))

    print(f"\n{args.users} users, spawn {args.spawn_rate}/s, {args.run_time}")
    print(f"{'swarm':<22} {'req/s':>8} {'p95 ms':>8} {'p99 ms':>8} {'failures':>9}")
    for name, total in runs:
        print(
            f"{name:<22} {total['rps']:>8.0f} {total['p95_ms']:>8} {total['p99_ms']:>8} "
            f"{total['failures']:>9}"
        )
    print(f"\nproject lookups / anchor per round: {', '.join(f'{r:.2f}' for r in ratios)}")
    print(f"median {statistics.median(ratios):.2f}  (target >= 0.9)")
    return 0


def warm_page_cache(path: Path) -> None:
    """Read ``path`` once so that the first swarm does not pay for a cold page cache."""
    with path.open("rb") as file:
        while file.read(1 << 20):
            pass


def project(extra: list[str], reports: Path, swarm: list[str], args, env) -> dict:
    command = [PYTHON, "manage.py", "loadtest", *swarm, "--run-time", args.run_time, *extra]
    subprocess.run([*command, "--reports", str(reports)], cwd=REPO, env=env, check=False)
    return json.loads((reports / "summary.json").read_text())["total"]


def anchor(reports: Path, swarm: list[str], args) -> dict:
    anchors = Path(args.anchors).resolve()
    users_db = str(Path(args.data_dir).resolve() / "users.sqlite3")
    reports.mkdir(parents=True, exist_ok=True)
    app, env = "raw_wsgi:lookup", {"ANCHOR_DB": users_db, "ANCHOR_TABLE": "users"}
    if args.postgres:
        app, env = "raw_wsgi_pg:lookup", {"ANCHOR_PG_URL": args.postgres + "users"}
    with gunicorn([*GUNICORN, app], anchors, {**env, "ANCHOR_TABLE": "users"}, 18080):
        subprocess.run(
            [
                *(PYTHON, "-m", "locust", "-f", str(anchors / "locust_anchor.py")),
                *("--headless", *swarm, "--run-time", args.run_time, "--only-summary"),
                *("--json-file", str(reports / "locust"), "--html", str(reports / "locust.html")),
            ],
            cwd=anchors,
            check=False,
        )
    entries = read_stats(reports / "locust.json")
    return summarize(entries, users=args.users)["total"]


if __name__ == "__main__":
    sys.exit(main())
