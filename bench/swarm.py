"""Benchmark: the 1000-user Locust swarm against the project and against the raw anchor.

Runs, in one session and on the same data (the project's million-row ``users`` file):

1. the project's lookup-only swarm: ``manage.py loadtest --tags user_id`` (Gunicorn with
   ``gunicorn.conf.py``, the lookup-by-id task alone, body checks on);
2. the anchor: ``anchors/raw_wsgi.py:lookup`` served with the same ``gunicorn.conf.py`` and
   swarmed by ``anchors/locust_anchor.py`` with the same users, spawn rate and duration;
3. optionally (``--mixed``) the project's default mixed swarm.

Prints RPS, p95, p99 and failures of each and the ratio project/anchor (target >= 0.9).
Usage: ``python bench/swarm.py [--users 1000] [--run-time 60s] [--mixed]``.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.loadtest.summary import read_stats, summarize
from bench.lookup import GUNICORN, PYTHON, REPO, gunicorn


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR", str(REPO / "var/db")))
    parser.add_argument("--anchors", default=str(REPO.parent / "shared" / "anchors"))
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--spawn-rate", type=int, default=100)
    parser.add_argument("--run-time", default="60s")
    parser.add_argument("--reports", default=str(REPO / "reports" / "bench"))
    parser.add_argument("--mixed", action="store_true", help="also run the default mixed swarm")
    args = parser.parse_args()
    reports = Path(args.reports)
    swarm = ["--users", str(args.users), "--spawn-rate", str(args.spawn_rate)]
    env = {**os.environ, "DATA_DIR": args.data_dir}

    results = {
        "project (lookups)": project(["--tags", "user_id"], reports / "lookups", swarm, args, env)
    }
    results["anchor (raw)"] = anchor(reports / "anchor", swarm, args)
    if args.mixed:
        results["project (mixed)"] = project([], reports / "mixed", swarm, args, env)

    print(f"\n{args.users} users, spawn {args.spawn_rate}/s, {args.run_time}")
    print(f"{'swarm':<20} {'req/s':>8} {'p95 ms':>8} {'p99 ms':>8} {'failures':>9}")
    for name, total in results.items():
        print(
            f"{name:<20} {total['rps']:>8.0f} {total['p95_ms']:>8} {total['p99_ms']:>8} "
            f"{total['failures']:>9}"
        )
    ratio = results["project (lookups)"]["rps"] / results["anchor (raw)"]["rps"]
    print(f"\nproject lookups / anchor = {ratio:.2f}  (target >= 0.9)")
    return 0


def project(extra: list[str], reports: Path, swarm: list[str], args, env) -> dict:
    command = [PYTHON, "manage.py", "loadtest", *swarm, "--run-time", args.run_time, *extra]
    subprocess.run([*command, "--reports", str(reports)], cwd=REPO, env=env, check=False)
    return json.loads((reports / "summary.json").read_text())["total"]


def anchor(reports: Path, swarm: list[str], args) -> dict:
    anchors = Path(args.anchors).resolve()
    users_db = str(Path(args.data_dir).resolve() / "users.sqlite3")
    reports.mkdir(parents=True, exist_ok=True)
    env = {"ANCHOR_DB": users_db, "ANCHOR_TABLE": "users"}
    with gunicorn([*GUNICORN, "raw_wsgi:lookup"], anchors, env, 18080):
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
    return summarize(entries, users=args.users, duration_s=0)["total"]


if __name__ == "__main__":
    sys.exit(main())
