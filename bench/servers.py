"""Benchmark: the project, the raw anchors and the FastAPI peer on each server, in one run.

Issue 26's table: every app below on every server it runs on, under wrk at the same
connection count (100), in interleaved rounds (each round measures every cell once, so a
machine that slows down mid-run slows every cell alike), with the same worker shape
(``--workers``, 4 by default, each with one Python thread):

- servers: Gunicorn as ``gunicorn.conf.py`` configures it (gthread, ``WEB_CONCURRENCY`` ×
  ``GUNICORN_THREADS`` = 1, as ``bench/lookup.py`` measures; ``--gunicorn-threads 1,2`` adds
  4×2), Granian WSGI (the project by ``python -m data_project.granian_server``, the anchors
  by Granian's CLI with the same backpressure, backlog and blocking threads), and for the
  ASGI peer uvicorn (``--loop uvloop --http httptools``) and Granian ASGI;
- ``hello``: ``anchors/raw_wsgi.py:hello`` alone, no database: the server's own ceiling;
- ``lookup``: ``type=get`` by random user id (``anchors/lua_random_user.lua``) — the
  project, ``raw_wsgi.py:lookup`` (SQLite) or ``raw_wsgi_pg_tuned.py:lookup`` (PostgreSQL),
  and on PostgreSQL ``peer_fastapi_pg.py`` (FastAPI + asyncpg + orjson, ``PEER_POOL``
  connections per worker: 10, so that 4 workers stay well inside PostgreSQL's default
  ``max_connections`` of 100 beside a test run);
- ``insert``: batches of ``--batch`` (10) new users with unique e-mails
  (``anchors/lua_insert_users.lua``) — the project against ``raw_wsgi_insert.py`` or
  ``raw_wsgi_insert_pg.py``. Each run counts the rows its e-mails stored: stored must equal
  the rows of the answered batches, plus at most one batch per connection in flight when
  wrk stopped (`bench.inserts.stored_as_answered`); the rows are deleted afterwards, so
  every round starts from the same table.

Each server must name itself in its first answer's ``Server`` header (`bench.lookup.gunicorn`)
before it is measured. Data: SQLite in ``--data-dir`` (``var/bench-servers``), PostgreSQL in
databases ``URL_PREFIX`` + ``users``/``products``/``orders`` (``default``, with the tokens,
an SQLite file in ``--data-dir``/``pg``), each generated with ``--users`` users on first use
(`bench.inserts.prepare`). ``--postgres URL_PREFIX`` names the databases; without it
PostgreSQL is measured when a server answers at 127.0.0.1:5432 (databases ``dp_servers_*``).
``--access`` as in ``bench/lookup.py``: ``tokens`` (the default) serves the project as
production does, with a ``read`` token for lookups and a ``write`` token for inserts; the
anchors and the peer ignore the header.

Prints one table, a row per (backend, workload, server, app): the median of the rounds'
req/s (for inserts, batches/s), p99 and server CPU µs per request, and each round's req/s;
then the ratios, medians of per-round ratios: project / raw anchor on the same server for
lookups (target >= 0.85) and inserts (target >= 0.7), and on PostgreSQL project lookups /
the peer on its best server (the one with the higher median; target >= 2). Exits 1 when a
request failed (the ratios then mean nothing) or an insert run stored other than it
answered. Needs wrk (``make wrk``). Usage: ``python bench/servers.py [--rounds 3]
[--seconds 10] [--only lookup,insert] [--postgres URL_PREFIX] [--sqlite-only |
--postgres-only] [--quick]``.
"""

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import NamedTuple

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from api.domain.stores import STORE_NAMES  # noqa: E402  (needs no settings)
from bench.inserts import (  # noqa: E402
    INSERT_PATH,
    prepare,
    serve_and_post,
    stored_as_answered,
    write_token,
)
from bench.lookup import (  # noqa: E402
    GUNICORN,
    PRODUCTION_ENV,
    PYTHON,
    bench_token,
    pg_table_size,
    serve_and_load,
    table_size,
)

WORKLOADS = ("hello", "lookup", "insert")
# Away from bench/lookup.py's 18080 and bench/inserts.py's 18090: another benchmark running
# beside this one makes the server fail to start, not answer in its place.
PORT = 18180
DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/"
PEER_POOL = "10"
# Granian's CLI for the anchors with the settings data_project/granian_server.py gives the
# project (its defaults for GUNICORN_WORKER_CONNECTIONS and GUNICORN_BACKLOG).
GRANIAN_SETTINGS = ["--backpressure", "1000", "--backlog", "2048", "--log-level", "warning"]
HOST_PORT = ["--host", "127.0.0.1", "--port", str(PORT)]


class Server(NamedTuple):
    """A server and how it runs a WSGI or ASGI target.

    ``command(target, workers)`` is its command line for ``target`` (``module:name``, or
    ``None`` for the project), ``serving`` the keyword arguments of `bench.lookup.gunicorn`
    (how it is told its address, what its ``Server`` header says), ``env`` what it adds to
    the environment.
    """

    name: str
    command: Callable[[str | None, int], list[str]]
    serving: dict
    env: dict[str, str]


def gunicorn_server(workers: int, threads: int) -> Server:
    """Gunicorn with ``gunicorn.conf.py`` (gthread), ``threads`` threads per worker."""
    return Server(
        f"gunicorn {workers}x{threads}",
        lambda target, _workers: [*GUNICORN, target or "data_project.wsgi"],
        {},
        {"GUNICORN_THREADS": str(threads)},
    )


def granian_wsgi_command(target: str | None, workers: int) -> list[str]:
    """The project's launcher (it reads BIND, WEB_CONCURRENCY...), or Granian's CLI."""
    if target is None:
        return [PYTHON, "-m", "data_project.granian_server"]
    return [
        *(PYTHON, "-m", "granian", "--interface", "wsgi", "--workers", str(workers)),
        *("--blocking-threads", "1", *GRANIAN_SETTINGS, *HOST_PORT, target),
    ]


def granian_asgi_command(target: str | None, workers: int) -> list[str]:
    """Granian ASGI on uvloop, as uvicorn below."""
    return [
        *(PYTHON, "-m", "granian", "--interface", "asgi", "--loop", "uvloop"),
        *("--workers", str(workers), *GRANIAN_SETTINGS, *HOST_PORT, target),
    ]


def uvicorn_command(target: str | None, workers: int) -> list[str]:
    """uvicorn as the peer's docstring serves it (uvloop, httptools), a backlog as ours."""
    return [
        *(PYTHON, "-m", "uvicorn", target, "--workers", str(workers), "--loop", "uvloop"),
        *("--http", "httptools", "--no-access-log", "--log-level", "warning"),
        *("--backlog", "2048", *HOST_PORT),
    ]


GRANIAN = Server("granian", granian_wsgi_command, {"bind_args": [], "server": "granian"}, {})
ASGI_SERVERS = (
    Server("uvicorn", uvicorn_command, {"bind_args": [], "server": "uvicorn"}, {}),
    Server("granian asgi", granian_asgi_command, {"bind_args": [], "server": "granian"}, {}),
)


class Backend(NamedTuple):
    """Where the project's and the anchors' users live: ``env`` serves the project on it,
    ``users`` is the users table (an SQLite file, or a PostgreSQL URL), ``max_id`` its
    highest id before any insert run (the rows above it are the runs' and are deleted)."""

    name: str
    env: dict[str, str]
    users: Path | str
    max_id: int


def main() -> int:
    """Parse the options, prepare the data, measure every cell per round, print the table:
    the exit code of `report`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(REPO / "var" / "bench-servers"))
    parser.add_argument("--anchors", default=str(REPO.parent / "shared" / "anchors"))
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=10, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4, help="per server")
    parser.add_argument(
        "--gunicorn-threads", default="1", help="Gunicorn shapes to measure: 1 (4×1), 1,2 ..."
    )
    parser.add_argument("--users", type=int, default=1_000_000, help="users in each table")
    parser.add_argument("--batch", type=int, default=10, help="users per insert batch")
    parser.add_argument("--access", choices=["tokens", "open"], default="tokens")
    parser.add_argument("--only", default=",".join(WORKLOADS), help="e.g. lookup,insert")
    parser.add_argument(
        "--postgres",
        metavar="URL_PREFIX",
        help=f"PostgreSQL databases URL_PREFIX{{users,products,orders}} (default: "
        f"{DEFAULT_PG}dp_servers_ when that server answers)",
    )
    only_backend = parser.add_mutually_exclusive_group()
    only_backend.add_argument("--sqlite-only", action="store_true")
    only_backend.add_argument("--postgres-only", action="store_true")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: one round of 2 s measurements"
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 2
    workloads = args.only.split(",")
    if unknown := set(workloads) - set(WORKLOADS):
        parser.error(f"--only: unknown workloads {sorted(unknown)}; known: {WORKLOADS}")
    args.mixed = False  # bench.inserts.serve_and_post's option: users only
    anchors = Path(args.anchors).resolve()
    data_dir = Path(args.data_dir).resolve()
    shapes = args.gunicorn_threads.split(",")
    servers = [gunicorn_server(args.workers, int(threads)) for threads in shapes] + [GRANIAN]

    postgres = None if args.sqlite_only else args.postgres or default_postgres()
    if args.postgres_only and not postgres:
        sys.exit("--postgres-only: no PostgreSQL server answers")
    backends = []
    if {"lookup", "insert"} & set(workloads):
        if not args.postgres_only:
            backends.append(backend("sqlite", {"DATA_DIR": str(data_dir)}, data_dir, args))
        if postgres:
            env = {"DATA_DIR": str(data_dir / "pg")}
            env |= {f"DATABASE_URL_{s.upper()}": postgres + s for s in STORE_NAMES}
            backends.append(backend("postgresql", env, postgres + "users", args))
    print(
        f"wrk {args.connections} connections, {args.seconds} s per run after a warm-up, "
        f"{args.rounds} rounds; {args.workers} workers per server, one Python thread each "
        f"unless named (gunicorn WxT); inserts: batches of "
        f"{args.batch} (req/s = batches/s); access: {args.access}"
    )
    for each in backends:
        print(f"{each.name}: {each.users}, max id {each.max_id}")

    cells = build_cells(workloads, servers, backends, anchors, args)
    results: dict[tuple, list[dict]] = {key: [] for key, _ in cells}
    for round_number in range(args.rounds):
        for index, (key, measure) in enumerate(cells):
            print(f"round {round_number + 1}: {' / '.join(key)}", file=sys.stderr, flush=True)
            results[key].append(measure(f"r{round_number}c{index}t{int(time.time())}"))
    return report(results, servers, args)


def default_postgres() -> str | None:
    """``DEFAULT_PG`` + ``dp_servers_`` when a PostgreSQL server answers there, else None."""
    try:
        psycopg.connect(DEFAULT_PG + "postgres", connect_timeout=3).close()
    except psycopg.Error:
        print(f"PostgreSQL at {DEFAULT_PG} unreachable: SQLite only")
        return None
    return DEFAULT_PG + "dp_servers_"


def backend(name: str, env: dict[str, str], users: Path | str, args) -> Backend:
    """The backend's data, generated (`bench.inserts.prepare`) when its users table holds
    fewer than ``args.users`` rows; for SQLite ``users`` is the data folder."""
    if isinstance(users, Path):
        users.mkdir(parents=True, exist_ok=True)
        users = users / "users.sqlite3"
    size = table_size if isinstance(users, Path) else pg_table_size
    Path(env["DATA_DIR"]).mkdir(parents=True, exist_ok=True)
    if size(users)[0] < args.users:
        print(f"{name}: generating {args.users:,} users (once)", flush=True)
        prepare(env, args.users)
    else:  # loaded before, perhaps from another checkout: default (the tokens) may be new
        migrate = [PYTHON, "manage.py", "migrate_all", "--verbosity", "0"]
        subprocess.run(migrate, cwd=REPO, env={**os.environ, **env}, check=True)
    return Backend(name, env, users, size(users)[1])


def build_cells(workloads, servers, backends, anchors: Path, args) -> list[tuple]:
    """``[(key, measure)]`` in the order a round runs them: ``key`` is ``(backend,
    workload, server, app)``; ``measure(run)`` serves and loads that cell once (``run``, a
    short alphanumeric tag, keeps insert runs' e-mails apart) and returns
    `bench.lookup.measured_wrk`'s figures (inserts: `bench.inserts.serve_and_post`'s)."""
    shape = {"WEB_CONCURRENCY": str(args.workers), "GUNICORN_THREADS": "1"}

    def lookup(server: Server, target, cwd: Path, env: dict, max_id: int, run_args):
        command = server.command(target, args.workers)
        env = {**shape, **server.env, **env}
        return lambda _run: serve_and_load(
            command, cwd, env, max_id, anchors, run_args, port=PORT, **server.serving
        )

    def insert(server: Server, target, cwd: Path, env: dict, path: str, auth: str, data):
        command = server.command(target, args.workers)
        env = {**shape, **server.env, **env}

        def measure(run: str) -> dict:
            result = serve_and_post(
                command, cwd, env, path, auth, anchors, args, run, data.users,
                port=PORT, **server.serving,
            )  # fmt: skip
            forget_inserts(data)  # the next round starts from the same table
            return result

        return measure

    cells = []
    if "hello" in workloads:
        hello_args = argparse.Namespace(**vars(args), headers=[])
        for server in servers:
            measure = lookup(server, "raw_wsgi:hello", anchors, {}, 1, hello_args)
            cells.append((("-", "hello", server.name, "raw"), measure))
    for data in backends:
        project_env = dict(data.env)
        lookup_args = argparse.Namespace(**vars(args), headers=[])
        authorization = ""
        if args.access == "tokens":
            project_env |= PRODUCTION_ENV
            token = bench_token(Path(data.env["DATA_DIR"]))
            lookup_args.headers = ["-H", f"Authorization: Token {token}"]
            authorization = f"Token {write_token(project_env)}"
        if data.name == "sqlite":
            anchor_env = {"ANCHOR_DB": str(data.users), "ANCHOR_TABLE": "users"}
            raw_lookup, raw_insert = "raw_wsgi:lookup", "raw_wsgi_insert:insert"
        else:
            anchor_env = {"ANCHOR_PG_URL": data.users, "ANCHOR_TABLE": "users"}
            raw_lookup, raw_insert = "raw_wsgi_pg_tuned:lookup", "raw_wsgi_insert_pg:insert"
        apps = (("project", REPO, project_env), ("raw", anchors, anchor_env))
        if "lookup" in workloads:
            for server in servers:
                for app, cwd, env in apps:
                    target = raw_lookup if app == "raw" else None
                    measure = lookup(server, target, cwd, env, data.max_id, lookup_args)
                    cells.append(((data.name, "lookup", server.name, app), measure))
            if data.name == "postgresql":
                peer_env = {**anchor_env, "PEER_POOL": PEER_POOL}
                for server in ASGI_SERVERS:
                    target = "peer_fastapi_pg:app"
                    measure = lookup(server, target, anchors, peer_env, data.max_id, lookup_args)
                    cells.append(((data.name, "lookup", server.name, "peer"), measure))
        if "insert" in workloads:
            for server in servers:
                for app, cwd, env in apps:
                    target, path = (raw_insert, "/") if app == "raw" else (None, INSERT_PATH)
                    measure = insert(server, target, cwd, env, path, authorization, data)
                    cells.append(((data.name, "insert", server.name, app), measure))
    return cells


def forget_inserts(data: Backend) -> None:
    """Delete the users an insert run added: every id above ``data.max_id``."""
    sql = "DELETE FROM users WHERE id > {}"
    if isinstance(data.users, Path):
        with closing(sqlite3.connect(data.users)) as conn, conn:
            conn.execute(sql.format("?"), [data.max_id])
    else:
        with psycopg.connect(data.users) as conn:
            conn.execute(sql.format("%s"), [data.max_id])


def median_of(runs: list[dict], field: str) -> float:
    """The median of ``field`` over a cell's runs."""
    return statistics.median(run[field] for run in runs)


def report(results: dict[tuple, list[dict]], servers: list[Server], args) -> int:
    """Print the table and the ratios; 0, or 1 when a request failed or an insert run
    stored other than it answered."""
    print(
        f"\n{'backend':<10} {'workload':<8} {'server':<13} {'app':<8} {'req/s':>8} "
        f"{'p99 ms':>7} {'cpu us':>7}  {'req/s per round':<22} checks"
    )
    failed = []
    for key, runs in results.items():
        backend_name, workload, server, app = key
        checks = [run["errors"] for run in runs if run["errors"] != "none"]
        if workload == "insert":
            lost = [run for run in runs if not stored_as_answered(run)]
            checks.append(
                f"stored != answered in {len(lost)} runs" if lost else "stored = answered"
            )
        else:
            lost = []
        if lost or any(run["errors"] != "none" for run in runs):
            failed.append(" / ".join(key))
        rounds = ", ".join(f"{run['rps']:.0f}" for run in runs)
        print(
            f"{backend_name:<10} {workload:<8} {server:<13} {app:<8} "
            f"{median_of(runs, 'rps'):>8.0f} {median_of(runs, 'p99'):>7.1f} "
            f"{median_of(runs, 'cpu_us'):>7.0f}  {rounds:<22} {'; '.join(checks) or 'ok'}"
        )

    if len(results) > 1:
        print("\nratios (median of per-round ratios of req/s):")
    targets = {"lookup": 0.85, "insert": 0.7}
    for backend_name in dict.fromkeys(key[0] for key in results if key[0] != "-"):
        for workload, target in targets.items():
            for server in servers:
                project = results.get((backend_name, workload, server.name, "project"))
                raw = results.get((backend_name, workload, server.name, "raw"))
                if project and raw:
                    print(
                        f"  {backend_name} {workload}s, {server.name}: project / raw = "
                        f"{ratio(project, raw)}  (target >= {target})"
                    )
        peers = {
            server.name: results[key]
            for server in ASGI_SERVERS
            if (key := (backend_name, "lookup", server.name, "peer")) in results
        }
        if peers:
            best = max(peers, key=lambda name: median_of(peers[name], "rps"))
            for server in servers:
                project = results.get((backend_name, "lookup", server.name, "project"))
                if project:
                    print(
                        f"  {backend_name} lookups, {server.name}: project / peer on {best} = "
                        f"{ratio(project, peers[best])}  (target >= 2)"
                    )
    if failed:
        print(f"\nfailed (requests failed or stored != answered): {'; '.join(failed)}")
        print("their ratios mean nothing")
        return 1
    return 0


def ratio(ours: list[dict], theirs: list[dict]) -> str:
    """``"0.62 (0.60, 0.64)"``: the median of the per-round ratios of req/s, then each."""
    ratios = [a["rps"] / b["rps"] for a, b in zip(ours, theirs, strict=True)]
    each = ", ".join(f"{r:.2f}" for r in ratios)
    return f"{statistics.median(ratios):.2f}" + (f" ({each})" if len(ratios) > 1 else "")


if __name__ == "__main__":
    sys.exit(main())
