"""Benchmark: ``type=get`` by random user id under wrk, against the anchors, in one run.

Serves three apps in turn with the project's own ``gunicorn.conf.py`` (same workers,
threads and keep-alive for all) and loads each with wrk at the same connection count:

- ``project``: ``data_project.wsgi`` over the million-row ``users`` database;
- ``raw``: ``anchors/raw_wsgi.py:lookup``, one sqlite3 point lookup, on the same file;
- ``naive``: ``anchors/naive/naive_app.py``, a seed-style Django + DRF ModelSerializer app,
  on its own million-row table built by ``anchors/make_users_db.py``, twice: deployed as
  the seeds deploy it (``gunicorn naive_app:application``, Gunicorn's defaults) and with
  the project's ``gunicorn.conf.py``.

Prints requests/s, p50, p99 and server CPU µs per request (Gunicorn master and workers,
recycled ones included) per app, the ratio project/raw per round and its median
(target >= 0.85), and project/naive (target >= 5, against the seed deployment; the
same-settings ratio is shown too). Needs wrk (``apt-get install wrk``) and generated data
(``manage.py generate_data``). Usage: ``python bench/lookup.py [--seconds 15]``.

``--access tokens`` (the default) serves the project as production does
(``DJANGO_ENV=production``: a token needed for personal data, throttles on the shared
cache) and wrk sends a ``read`` token of the ``benchmark`` tier made by
``manage.py create_token``; every app gets the same header, the anchors ignore it.
``--access open`` serves it as development does: no token, no throttles. ``--access both``
adds that as a third app, ``open``, in every round, and prints open/raw and project/open:
what the access policies cost, measured within one run. ``--metrics both`` likewise adds
``nometrics``, the project with ``METRICS=0``, and prints project/nometrics: what the
Prometheus metrics cost a lookup (target >= 0.97).

``--postgres URL_PREFIX`` (``make bench-lookup-pg``) serves the three routed aliases from
PostgreSQL databases ``URL_PREFIX`` + ``users``/``products``/``orders`` (``default``, with
the token, stays an SQLite file in ``--data-dir``), against
``anchors/raw_wsgi_pg.py:lookup`` (psycopg 3, one persistent connection per thread) on the
same ``users`` table; target >= 0.9. Load the databases first, e.g. ``DATA_DIR=var/pg
DATABASE_URL_USERS=URL_PREFIXusers ... manage.py generate_data --users 1000000``.
"""

import argparse
import os
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import closing, contextmanager, suppress
from pathlib import Path

import psutil
import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from api.domain.stores import STORE_NAMES  # noqa: E402  (needs no settings)

PYTHON = sys.executable
GUNICORN = [PYTHON, "-m", "gunicorn", "-c", str(REPO / "gunicorn.conf.py")]
LOOKUP = "/api/run-query/?count=1&type=get&user_id=1"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR", str(REPO / "var/db")))
    parser.add_argument("--anchors", default=str(REPO.parent / "shared" / "anchors"))
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2, help="alternate project/raw this often")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--access", choices=["tokens", "open", "both"], default="tokens")
    parser.add_argument("--metrics", choices=["on", "both"], default="on")
    parser.add_argument(
        "--postgres",
        metavar="URL_PREFIX",
        help="serve the routed aliases from URL_PREFIX{users,products,orders} on PostgreSQL",
    )
    parser.add_argument(
        "--shapes",
        help="compare Gunicorn shapes instead, e.g. gthread:2x4,gthread:4x1,sync:4,gevent:2",
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install wrk")

    anchors = Path(args.anchors).resolve()
    users_db = Path(args.data_dir).resolve() / "users.sqlite3"
    store = args.postgres + "users" if args.postgres else users_db
    rows, max_id = pg_table_size(store) if args.postgres else table_size(users_db)
    if rows < 1000:
        sys.exit(f"{store} holds {rows} users: run `manage.py generate_data` first")
    print(
        f"users: {rows} rows, max id {max_id}; wrk {args.connections} connections, "
        f"{args.seconds} s; WEB_CONCURRENCY={os.environ.get('WEB_CONCURRENCY', 'default')} "
        f"GUNICORN_THREADS={os.environ.get('GUNICORN_THREADS', 'default')}"
    )

    open_env = {"DATA_DIR": str(users_db.parent)}
    raw = (
        [*GUNICORN, "raw_wsgi:lookup"],
        anchors,
        {"ANCHOR_DB": str(users_db), "ANCHOR_TABLE": "users"},
    )
    if args.postgres:
        open_env.update(
            (f"DATABASE_URL_{alias.upper()}", args.postgres + alias) for alias in STORE_NAMES
        )
        raw = (
            [*GUNICORN, "raw_wsgi_pg:lookup"],
            anchors,
            {"ANCHOR_PG_URL": args.postgres + "users", "ANCHOR_TABLE": "users"},
        )
    args.headers = []
    if args.access != "open":
        args.headers = ["-H", f"Authorization: Token {bench_token(users_db.parent)}"]
    print(f"access: {args.access}")

    project = [*GUNICORN, "data_project.wsgi"]
    apps = {
        "project": (project, REPO, {**open_env, **PRODUCTION_ENV} if args.headers else open_env),
        "raw": raw,
    }
    if args.access == "both":  # the project as development serves it, sent no token
        apps["open"] = (project, REPO, {**open_env, NO_HEADERS: "1"})
    if args.metrics == "both":  # the project as served, its metrics off
        apps["nometrics"] = (project, REPO, {**apps["project"][2], "METRICS": "0"})
    if args.shapes:
        return sweep(args.shapes.split(","), apps, max_id, anchors, args)
    results: dict[str, list[dict]] = {name: [] for name in apps}
    for round_ in range(args.rounds):
        # Every other round in the reverse order (A B C, C B A, ...), so that no app is
        # always the one measured after the same other.
        order = list(apps.items())[:: -1 if round_ % 2 else 1]
        for name, (command, cwd, env) in order:
            results[name].append(serve_and_load(command, cwd, env, max_id, anchors, args))
    if not (args.skip_naive or args.postgres):
        naive_db = Path("/tmp/anchor_users.sqlite3")
        if table_size(naive_db)[0] < 1_000_000:
            subprocess.run([PYTHON, str(anchors / "make_users_db.py"), str(naive_db)], check=True)
        naive_env = {"ANCHOR_DB": str(naive_db)}
        for name, config in (("naive", []), ("naive*", GUNICORN[3:5])):
            command = [PYTHON, "-m", "gunicorn", *config, "naive_app:application"]
            results[name] = [
                serve_and_load(command, anchors / "naive", naive_env, 1_000_000, anchors, args)
            ]

    print("\nnaive = seed deployment (Gunicorn defaults); naive* = the project's gunicorn.conf.py")
    print(f"{'app':<8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'cpu us/req':>11}  errors")
    best = {}
    for name, runs in results.items():
        for run in runs:
            rps, p50, p99, cpu = run["rps"], run["p50"], run["p99"], run["cpu_us"]
            print(f"{name:<8} {rps:>9.0f} {p50:>8.2f} {p99:>8.2f} {cpu:>11.0f}  {run['errors']}")
        best[name] = max(run["rps"] for run in runs)
    # Rounds alternate project and raw: a ratio per round, then their median, since the
    # shared machine swings by more than the difference between two rounds.
    pairs = list(zip(results["project"], results["raw"], strict=True))
    ratios = [ours["rps"] / theirs["rps"] for ours, theirs in pairs]
    print(f"\nproject / raw per round: {', '.join(f'{ratio:.2f}' for ratio in ratios)}")
    target = 0.9 if args.postgres else 0.85
    print(f"project / raw   = {statistics.median(ratios):.2f} median  (target >= {target})")
    if "open" in results:
        for label, side in (("open / raw", "raw"), ("project / open", "open")):
            ratios = [
                (ours if side == "raw" else project)["rps"] / theirs["rps"]
                for project, ours, theirs in zip(
                    results["project"], results["open"], results[side], strict=True
                )
            ]
            print(
                f"{label:<15} = {statistics.median(ratios):.2f} median  "
                f"({', '.join(f'{ratio:.2f}' for ratio in ratios)})"
            )
    if "nometrics" in results:
        ratios = [
            ours["rps"] / theirs["rps"]
            for ours, theirs in zip(results["project"], results["nometrics"], strict=True)
        ]
        print(
            f"project / nometrics = {statistics.median(ratios):.3f} median  (target >= 0.97; "
            f"{', '.join(f'{ratio:.3f}' for ratio in ratios)})"
        )
    # Server CPU per request tracks the 1000-user swarm, where Locust takes the cores the
    # server leaves, better than in-process instruction counts (bench/instructions.py).
    cpu = [theirs["cpu_us"] / ours["cpu_us"] for ours, theirs in pairs]
    print(f"raw / project server CPU per request = {statistics.median(cpu):.2f} median")
    print(f"best / best     = {best['project'] / best['raw']:.2f}")
    if "naive" in best:
        print(f"project / naive = {best['project'] / best['naive']:.2f}  (target >= 5)")
        print(f"project / naive*= {best['project'] / best['naive*']:.2f}  (same Gunicorn settings)")
    return 0


def sweep(shapes: list[str], apps: dict, max_id: int, anchors: Path, args) -> int:
    """Project and raw anchor under each ``class:workers[xthreads]`` shape, one table."""
    rows = []
    for shape in shapes:
        worker_class, _, size = shape.partition(":")
        workers, _, threads = size.partition("x")
        env = {
            "GUNICORN_WORKER_CLASS": worker_class,
            "WEB_CONCURRENCY": workers,
            "GUNICORN_THREADS": threads or "1",
        }
        runs = {
            name: serve_and_load(command, cwd, {**app_env, **env}, max_id, anchors, args)
            for name, (command, cwd, app_env) in apps.items()
        }
        rows.append((shape, runs["project"], runs["raw"]))
    print(f"\n{'shape':<14} {'project':>8} {'p99 ms':>8} {'raw':>8} {'p99 ms':>8} {'ratio':>6}")
    for shape, project, raw in rows:
        print(
            f"{shape:<14} {project['rps']:>8.0f} {project['p99']:>8.1f} {raw['rps']:>8.0f} "
            f"{raw['p99']:>8.1f} {project['rps'] / raw['rps']:>6.2f}"
        )
    return 0


NO_HEADERS = "BENCH_NO_HEADERS"  # in an app's env: wrk sends it no Authorization

# Production on one host behind a TLS-terminating proxy (manage.py loadtest's env).
PRODUCTION_ENV = {
    "DJANGO_ENV": "production",
    "DJANGO_SECRET_KEY": "bench-" + "k" * 50,
    "DJANGO_SECURE_SSL_REDIRECT": "0",
}


def bench_token(data_dir: Path) -> str:
    """A new ``read`` token of the ``benchmark`` tier (client ``bench``) in ``data_dir``."""
    command = [PYTHON, "manage.py", "create_token", "bench", "--scope", "read"]
    command += ["--tier", "benchmark"]
    env = {**os.environ, "DATA_DIR": str(data_dir)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def pg_table_size(url: str) -> tuple[int, int]:
    """``(rows, max id)`` of the users table in the PostgreSQL database at ``url``."""
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            return conn.execute("SELECT count(*), coalesce(max(id), 0) FROM users").fetchone()
    except psycopg.Error:
        return 0, 0


def table_size(path: Path) -> tuple[int, int]:
    if not path.exists():
        return 0, 0
    with closing(sqlite3.connect(path)) as conn:
        try:
            return conn.execute("SELECT count(*), coalesce(max(id), 0) FROM users").fetchone()
        except sqlite3.OperationalError:
            return 0, 0


@contextmanager
def gunicorn(
    command: list[str],
    cwd: Path,
    env: dict[str, str],
    port: int,
    *,
    bind_args: list[str] | None = None,
    server: str = "gunicorn",
):
    """Run ``command`` (a server's command line) in ``cwd`` on 127.0.0.1:``port`` until the
    block ends; yields its main process (Gunicorn's arbiter, Granian's or uvicorn's main
    process: the workers are its children).

    ``BIND`` in the environment is ``127.0.0.1:port``; ``bind_args`` are appended to
    ``command`` to say the same (``--bind 127.0.0.1:port`` unless given: ``[]`` for a server
    that reads ``BIND``, ``--host``/``--port`` for Granian's or uvicorn's CLI). The first
    answer's ``Server`` header must name ``server`` (case-insensitive), so that a benchmark
    never measures another server than it says. Raises `RuntimeError` when ``port`` is
    taken already, or the server does not answer within 30 s, dies, or names another server.
    """
    bind = f"127.0.0.1:{port}"
    # One thread per worker unless asked: the shape every figure here was measured with
    # (gunicorn.conf.py gives a server with no proxy in front 16).
    environment = {
        "GUNICORN_THREADS": "1",
        **os.environ,
        **env,
        "BIND": bind,
        "GUNICORN_LOG_LEVEL": "warning",
    }
    bind_args = ["--bind", bind] if bind_args is None else bind_args
    # Something already on the port (another benchmark) would answer the probe below
    # in this server's place.
    with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        raise RuntimeError(f"{bind} is taken: another server is listening there")
    process = subprocess.Popen([*command, *bind_args], cwd=cwd, env=environment)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{LOOKUP}", timeout=2) as r:
                    r.read()
                    answered_as = r.headers.get("Server", "")
                break
            except urllib.error.HTTPError as error:  # an answer all the same
                answered_as = error.headers.get("Server", "")
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"{command} did not start") from None
                time.sleep(0.2)
        if server.lower() not in answered_as.lower():
            raise RuntimeError(f"{command} answered as Server: {answered_as!r}, not {server}")
        yield process
    finally:
        process.terminate()
        process.wait(timeout=40)


def server_cpu_seconds(master: subprocess.Popen) -> float:
    """CPU seconds of a Gunicorn master and its workers, live or already recycled.

    A recycled worker's time is in the master's ``children_*`` once it was reaped.
    """
    process = psutil.Process(master.pid)
    times = process.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for worker in process.children(recursive=True):
        with suppress(psutil.NoSuchProcess):
            times = worker.cpu_times()
            total += times.user + times.system
    return total


def serve_and_load(command, cwd, env, max_id, anchors, args, port: int = 18080, **serving) -> dict:
    """``command`` served by `gunicorn` (``serving``: its keyword arguments) under wrk with
    random user ids up to ``max_id``, warmed 3 s first: `measured_wrk`'s figures."""
    with gunicorn(command, cwd, env, port, **serving) as master:
        url = f"http://127.0.0.1:{port}"
        headers = [] if env.get(NO_HEADERS) else args.headers
        wrk = ["wrk", "-t2", f"-c{args.connections}", *headers]
        wrk += ["-s", str(anchors / "lua_random_user.lua"), url]
        wrk_env = {**os.environ, "ANCHOR_N": str(max_id)}
        subprocess.run([*wrk, "-d3s"], env=wrk_env, capture_output=True, check=True)
        return measured_wrk(master, wrk, wrk_env, args.seconds)


def measured_wrk(master: subprocess.Popen, wrk: list[str], env: dict, seconds: int) -> dict:
    """`parse_wrk`'s figures of ``wrk`` run ``seconds`` against ``master``'s server, with
    ``cpu_us``, the server's CPU µs per request, and wrk's output as ``out``."""
    cpu_before = server_cpu_seconds(master)
    command = [*wrk, f"-d{seconds}s", "--latency"]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    cpu = server_cpu_seconds(master) - cpu_before
    result = parse_wrk(out)
    result["cpu_us"] = cpu * 1e6 / max(result["requests"], 1)
    result["out"] = out
    return result


def parse_wrk(out: str) -> dict:
    def latency(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = " ".join(
        line.strip() for line in out.splitlines() if "Non-2xx" in line or "Socket errors" in line
    )
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "p50": latency("50"),
        "p99": latency("99"),
        "errors": errors or "none",
    }


if __name__ == "__main__":
    sys.exit(main())
