"""Benchmark: insert batches of new users under wrk, against the raw insert anchor, in one run.

Serves two apps in turn with the project's own ``gunicorn.conf.py`` (same workers, threads
and keep-alive) and posts batches of ``--batch`` new users with unique e-mails to each with
``anchors/lua_insert_users.lua`` at the same connection count:

- ``project``: ``data_project.wsgi``, ``POST /api/run-query/?type=insert``;
- ``raw``: ``anchors/raw_wsgi_insert.py`` (SQLite; ``raw_wsgi_insert_pg.py`` with
  ``--postgres``), which checks each record and inserts the batch in one transaction, on
  the same users table.

Prints batches/s, rows/s, p50, p99 and server CPU µs per batch per app and round, the
rows/s ratio project/raw per round and its median (target >= 0.7), and the p99 ratio
(target <= 1.5). Each run then counts the rows its e-mails stored: stored must equal the
rows of the answered batches, plus at most one batch per connection still in flight when
wrk stopped. ``--access`` as in ``bench/lookup.py``: ``tokens`` (the default) serves the
project as production does, with a ``write`` token of the ``benchmark`` tier; ``open`` as
development does. Needs wrk. The data is a fresh ``--users`` table in a temporary folder.

``--mixed`` posts batches of users, products and orders (each order for a stored user and
product, so checked across databases) to the project alone: no anchor does that.
Usage: ``python bench/inserts.py [--postgres URL_PREFIX] [--batch 10] [--mixed]``.
"""

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from api.domain.stores import STORE_NAMES  # noqa: E402  (needs no settings)
from bench.lookup import GUNICORN, PRODUCTION_ENV, PYTHON, gunicorn, measured_wrk  # noqa: E402

INSERT_PATH = "/api/run-query/?type=insert"
SCRIPT = REPO / "bench" / "lua_insert_users_token.lua"
MIXED_SCRIPT = REPO / "bench" / "lua_insert_mixed.lua"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anchors", default=str(REPO.parent / "shared" / "anchors"))
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2, help="alternate project/raw this often")
    parser.add_argument("--batch", type=int, default=10, help="users per batch")
    parser.add_argument("--users", type=int, default=100_000, help="users stored beforehand")
    parser.add_argument("--access", choices=["tokens", "open"], default="tokens")
    parser.add_argument(
        "--mixed",
        action="store_true",
        help="the project alone, batches of --batch users, products and orders (each order "
        "for a stored user and product): no anchor does that",
    )
    parser.add_argument(
        "--postgres",
        metavar="URL_PREFIX",
        help="the routed aliases on PostgreSQL: URL_PREFIX{users,products,orders}",
    )
    args = parser.parse_args()
    anchors = Path(args.anchors).resolve()
    with tempfile.TemporaryDirectory(prefix="bench-inserts-") as folder:
        data_dir = Path(folder)
        env = {"DATA_DIR": str(data_dir)}
        if args.postgres:
            env |= {f"DATABASE_URL_{s.upper()}": args.postgres + s for s in STORE_NAMES}
        prepare(env, args.users)
        authorization = ""
        if args.access == "tokens":
            env |= PRODUCTION_ENV
            authorization = f"Token {write_token(env)}"
        users = (args.postgres + "users") if args.postgres else data_dir / "users.sqlite3"
        if args.postgres:
            raw = ("raw_wsgi_insert_pg:insert", {"ANCHOR_PG_URL": users, "ANCHOR_TABLE": "users"})
        else:
            raw = ("raw_wsgi_insert:insert", {"ANCHOR_DB": str(users), "ANCHOR_TABLE": "users"})
        apps = {
            "project": ([*GUNICORN, "data_project.wsgi"], REPO, env, INSERT_PATH, authorization),
            "raw": ([*GUNICORN, raw[0]], anchors, raw[1], "/", authorization),
        }
        if args.mixed:
            del apps["raw"]
        print(
            f"{'PostgreSQL' if args.postgres else 'SQLite'}: {args.users:,} users stored; "
            f"batches of {args.batch}, wrk {args.connections} connections, {args.seconds} s; "
            f"access: {args.access}"
        )
        results: dict[str, list[dict]] = {name: [] for name in apps}
        for round_number in range(args.rounds):
            for name, app in apps.items():
                run = f"{name}{round_number}-{int(time.time())}"
                results[name].append(serve_and_post(*app, anchors, args, run, users))
    return report(results, args)


def prepare(env: dict[str, str], users: int) -> None:
    """Migrate every alias and load ``users`` users (and a few products and orders)."""
    generate = ["generate_data", "--users", str(users), "--products", "100", "--orders", "100"]
    for command in (
        ["migrate_all", "--verbosity", "0"],
        [*generate, "--clear", "--verbosity", "0"],
    ):
        subprocess.run(
            [PYTHON, "manage.py", *command], cwd=REPO, env={**os.environ, **env}, check=True
        )


def write_token(env: dict[str, str]) -> str:
    """A new ``write`` token of the ``benchmark`` tier (client ``bench-inserts``)."""
    command = [PYTHON, "manage.py", "create_token", "bench-inserts", "--scope", "write"]
    command += ["--tier", "benchmark"]
    done = subprocess.run(
        command, cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def serve_and_post(
    command, cwd, env, path, authorization, anchors, args, run, users, port=18090, **serving
) -> dict:
    """One app served by `bench.lookup.gunicorn` on ``port`` (``serving``: its keyword
    arguments) under wrk: `measured_wrk`'s figures, ``answered`` (rows in 2xx batches),
    ``stored`` (rows its e-mails stored) and ``in_flight`` (rows wrk may have sent
    unanswered when it stopped)."""
    with gunicorn(command, cwd, env, port, **serving) as master:
        url = f"http://127.0.0.1:{port}"
        script = MIXED_SCRIPT if args.mixed else SCRIPT
        wrk = ["wrk", "-t2", f"-c{args.connections}", "-s", str(script), url]
        wrk_env = {
            **os.environ,
            "ANCHOR_SCRIPT": str(anchors / "lua_insert_users.lua"),
            "AUTHORIZATION": authorization,  # the anchors ignore it
            "BATCH": str(args.batch),
            "INSERT_PATH": path,
            "USERS": str(args.users),
            "PRODUCTS": "100",
        }
        warm = {**wrk_env, "RUN": f"warm-{run}"}
        subprocess.run([*wrk, "-d2s"], env=warm, capture_output=True, check=True)
        result = measured_wrk(master, wrk, {**wrk_env, "RUN": run}, args.seconds)
    out = result.pop("out")
    non_2xx = sum(int(line.split(":")[1]) for line in out.splitlines() if "Non-2xx" in line)
    result["answered"] = (result["requests"] - non_2xx) * args.batch
    result["stored"] = stored_rows(users, f"b{run}-%")
    result["in_flight"] = args.connections * args.batch
    return result


def stored_rows(users, pattern: str) -> int:
    """Rows of the users table whose e-mail is like ``pattern``."""
    if isinstance(users, Path):
        with closing(sqlite3.connect(users)) as conn:
            sql = "SELECT count(*) FROM users WHERE email LIKE ?"
            return conn.execute(sql, [pattern]).fetchone()[0]
    with psycopg.connect(users) as conn:
        sql = "SELECT count(*) FROM users WHERE email LIKE %s"
        return conn.execute(sql, [pattern]).fetchone()[0]


def stored_as_answered(run: dict) -> bool:
    """Whether a `serve_and_post` run stored every answered row and no more than those plus
    the rows still in flight when wrk stopped (answered, then cut off, or never answered)."""
    return run["answered"] <= run["stored"] <= run["answered"] + run["in_flight"]


def report(results: dict[str, list[dict]], args) -> int:
    rows_per_batch = 3 * args.batch if args.mixed else args.batch
    print(
        f"\n{'app':<8} {'batches/s':>10} {'rows/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'cpu us/batch':>13} {'stored':>8} {'answered':>9}  errors"
    )
    lost = []
    for name, runs in results.items():
        for run in runs:
            print(
                f"{name:<8} {run['rps']:>10.0f} {run['rps'] * rows_per_batch:>8.0f} "
                f"{run['p50']:>8.2f} {run['p99']:>8.2f} {run['cpu_us']:>13.0f} "
                f"{run['stored']:>8} {run['answered']:>9}  {run['errors']}"
            )
            if not stored_as_answered(run):
                lost.append(name)
    if args.mixed:
        rows = [run["rps"] * rows_per_batch for run in results["project"]]
        print(f"\nmixed batches, rows/s (users + products + orders): {statistics.median(rows):.0f}")
        return 1 if lost or any(run["errors"] != "none" for run in results["project"]) else 0
    pairs = list(zip(results["project"], results["raw"], strict=True))
    ratios = [ours["rps"] / theirs["rps"] for ours, theirs in pairs]
    p99s = [ours["p99"] / theirs["p99"] for ours, theirs in pairs]
    print(f"\nproject / raw rows/s per round: {', '.join(f'{r:.2f}' for r in ratios)}")
    print(f"project / raw rows/s = {statistics.median(ratios):.2f} median  (target >= 0.7)")
    print(f"project / raw p99    = {statistics.median(p99s):.2f} median  (target <= 1.5)")
    failed = [name for name, runs in results.items() if any(r["errors"] != "none" for r in runs)]
    if failed:
        print(f"requests failed: {', '.join(failed)}: the ratios above mean nothing")
        return 1
    if lost:
        print(f"stored != answered (beyond what was in flight): {', '.join(lost)}")
        return 1
    print("stored = answered (plus at most the batches in flight when wrk stopped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
