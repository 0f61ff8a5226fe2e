"""Benchmark: CPU instructions per ``type=get`` lookup, in-process, against the raw anchor.

Wall-clock figures on the shared 2-core machine swing by ±15% between two runs of the
same server; instruction counts do not. Each app answers random lookups by user id
through its WSGI callable, in one process run under ``valgrind --tool=callgrind``, and
the count of a run with no lookups is subtracted, so start-up and warm-up (connections,
compiled queries) are left out:

- ``project``: ``data_project.wsgi.application``, the lookup fast path;
- ``django``: the same with ``LOOKUP_FAST_PATH=0``, Django's full request cycle;
- ``raw``: ``anchors/raw_wsgi.py:lookup`` on the same users file;
- ``nometrics`` (ask for it with ``--apps``): ``project`` with ``METRICS=0``, so that
  project/nometrics is what the Prometheus metrics cost a lookup. The project's apps
  record their metrics as served, in a ``PROMETHEUS_MULTIPROC_DIR`` of their own.

Prints instructions per lookup and each app's count relative to the raw anchor.
``--server gunicorn`` counts the same lookups in a Gunicorn worker instead (the project's
``gunicorn.conf.py``, 1 worker × 1 thread, the whole server under callgrind): the
worker's counters are zeroed after the warm-up (``callgrind_control -z``) and dumped after
the lookups, sent one after another on one kept-alive connection, so each count holds
Gunicorn's own work per request as well as the app's. ``--server granian`` does the same
in a Granian worker (1 worker, 1 blocking thread: ``python -m data_project.granian_server``
for the project, Granian's CLI for the raw anchor, as ``bench/servers.py`` serves them);
its Rust threads are counted with the Python one. ``--keep DIR`` keeps each server's
callgrind file there (``callgrind_annotate`` says where the instructions went). See
``bench/lookup.py`` (wrk) and ``bench/swarm.py`` (Locust) for requests per second. Needs
valgrind (``apt-get install valgrind``) and generated data. ``--access`` as in
``bench/lookup.py``: ``tokens`` (the default) serves the project as production does and
sends a token with every lookup; ``open`` as development does.
Usage: ``python bench/instructions.py [--lookups 1000] [--apps project,django,raw]
[--server gunicorn]``.
"""

import argparse
import http.client
import io
import os
import random
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.lookup import PRODUCTION_ENV, bench_token  # noqa: E402
from bench.servers import GRANIAN_SETTINGS  # noqa: E402

WARM_UP = 200
# The child's header: every app gets it (the raw anchor ignores it).
AUTHORIZATION = (
    {"HTTP_AUTHORIZATION": f"Token {os.environ['BENCH_TOKEN']}"}
    if os.environ.get("BENCH_TOKEN")
    else {}
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR", str(REPO / "var/db")))
    parser.add_argument("--anchors", default=str(REPO.parent / "shared" / "anchors"))
    parser.add_argument("--lookups", type=int, default=1000)
    parser.add_argument("--apps", default="project,django,raw")
    parser.add_argument("--access", choices=["tokens", "open"], default="tokens")
    parser.add_argument("--server", choices=["none", "gunicorn", "granian"], default="none")
    parser.add_argument("--keep", metavar="DIR", help="keep the servers' callgrind files here")
    parser.add_argument(
        "--cache-sim",
        action="store_true",
        help="with --server: also simulate the caches and branch predictor, and print misses",
    )
    parser.add_argument("--child", nargs=2, metavar=("APP", "LOOKUPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    users_db = Path(args.data_dir).resolve() / "users.sqlite3"
    if args.child:
        return run_lookups(args.child[0], int(args.child[1]), users_db, Path(args.anchors))
    if not shutil.which("valgrind"):
        sys.exit("valgrind not found: apt-get install valgrind")
    if not users_db.exists():
        sys.exit(f"{users_db} is missing: run `manage.py generate_data` first")

    args.env = {}
    if args.access == "tokens":
        # Under callgrind a lookup takes ~50 times as long, so a worker would reload the
        # token (three queries) every few hundred lookups instead of every few thousand:
        # a cost per lookup that only the slowdown makes visible.
        args.env = {
            **PRODUCTION_ENV,
            "BENCH_TOKEN": bench_token(users_db.parent),
            "TOKEN_CACHE_SECONDS": "3600",
        }
    counts = {}
    for app in args.apps.split(","):
        if args.server != "none":
            counts[app] = count_in_server(app, args) / args.lookups
            continue
        empty, full = (count(app, lookups, args) for lookups in (0, args.lookups))
        counts[app] = (full - empty) / args.lookups
    where = f"in a {args.server.capitalize()} worker" if args.server != "none" else "in-process"
    print(f"\n{args.lookups} lookups by random user id {where}, {users_db}, access: {args.access}")
    print(f"{'app':<9} {'instructions':>13} {'x raw':>6}")
    for app, per_lookup in counts.items():
        ratio = f"{per_lookup / counts['raw']:>6.2f}" if "raw" in counts else ""
        print(f"{app:<9} {per_lookup:>13,.0f} {ratio}")
    if "nometrics" in counts and "project" in counts:
        extra, ratio = (
            counts["project"] - counts["nometrics"],
            counts["project"] / counts["nometrics"],
        )
        print(f"metrics: {extra:,.0f} instructions a lookup, x{ratio:.3f}")
    return 0


def count(app: str, lookups: int, args) -> int:
    """Instructions of one child process answering ``lookups`` lookups, per callgrind."""
    command = [
        *("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"),
        *(sys.executable, __file__, "--data-dir", args.data_dir, "--anchors", args.anchors),
        *("--child", app, str(lookups)),
    ]
    env = {**os.environ, **args.env, "LOOKUP_FAST_PATH": "0" if app == "django" else "1"}
    env["METRICS"] = "0" if app == "nometrics" else "1"
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as metrics_dir:
        env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # as a server's workers write them
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode or not found:
        sys.exit(f"{app}: the child failed\n{done.stderr[-2000:]}")
    return int(found.group(1))


def count_in_server(app: str, args) -> int:
    """Instructions of a worker of ``args.server`` (1 worker, 1 Python thread) answering
    ``args.lookups`` lookups after `WARM_UP` more, per callgrind; its start-up and warm-up
    are not counted."""
    port = free_port()
    serve, cwd, env = one_worker_server(app, args, port)
    env["GUNICORN_TIMEOUT"] = "600"  # a worker under callgrind is ~50 times slower
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as out:
        simulate = ["--cache-sim=yes", "--branch-sim=yes"] if args.cache_sim else []
        command = [
            *("valgrind", "--tool=callgrind", "--trace-children=yes", *simulate),
            f"--callgrind-out-file={out}/callgrind.%p",
            *serve,
        ]
        server = subprocess.Popen(command, cwd=cwd, env=env, stderr=subprocess.DEVNULL)
        try:
            connection = connect(port, server)
            users_db = Path(args.data_dir) / "users.sqlite3"
            with closing(sqlite3.connect(users_db)) as db:
                (max_id,) = db.execute("SELECT max(id) FROM users").fetchone()
            ids = random.Random(7).choices(range(1, max_id + 1), k=WARM_UP + args.lookups)
            token = args.env.get("BENCH_TOKEN")
            headers = {"Authorization": f"Token {token}"} if token else {}
            send(connection, ids[:WARM_UP], headers)
            worker = the_worker(server)
            callgrind_control("-z", worker.pid)
            send(connection, ids[WARM_UP:], headers)
            callgrind_control("-d", worker.pid)
            dump = Path(out, f"callgrind.{worker.pid}.1").read_text()
            if args.keep:
                Path(args.keep).mkdir(parents=True, exist_ok=True)
                kept = Path(args.keep, f"callgrind.{args.server}.{app}")
                kept.write_text(dump)
        finally:
            server.terminate()
            server.wait(timeout=120)
    events = re.search(r"^events: (.+)$", dump, re.M).group(1).split()
    totals = re.search(r"^(?:totals|summary): (.+)$", dump, re.M).group(1).split()
    if args.cache_sim:  # per lookup: L1 and last-level misses, mispredicted branches
        counts = dict(zip(events, map(int, totals), strict=True))
        misses = ("I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw", "Bcm", "Bim")
        shown = (f"{e} {counts[e] / args.lookups:,.0f}" for e in misses if e in counts)
        print(f"{app} misses a lookup: {', '.join(shown)}")
    return int(totals[0])


def one_worker_server(app: str, args, port: int) -> tuple[list[str], Path, dict]:
    """``(command, cwd, env)`` of ``args.server`` (``gunicorn`` or ``granian``) serving
    ``app`` (``project``, ``nometrics``, ``django`` or ``raw``) with 1 worker × 1 Python
    thread on 127.0.0.1:``port``: the project by ``gunicorn.conf.py`` or
    ``data_project.granian_server``, the raw anchor by the same Gunicorn config or Granian's
    CLI with `bench.servers.GRANIAN_SETTINGS`. ``args``: ``data_dir``, ``anchors``,
    ``env`` (added to the environment), ``server``, and optionally ``postgres`` (a URL
    prefix: the raw anchor is then ``raw_wsgi_pg_tuned.py`` on its ``users`` database)."""
    data_dir = Path(args.data_dir).resolve()  # the raw anchor runs in the anchors' directory
    env = {
        **os.environ,
        **args.env,
        "LOOKUP_FAST_PATH": "0" if app == "django" else "1",
        "METRICS": "0" if app == "nometrics" else "1",
        "DATA_DIR": str(data_dir),
        "BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "1",
        "GUNICORN_THREADS": "1",
        "GUNICORN_MAX_REQUESTS": "0",  # no recycling in the middle of a measurement
        "GUNICORN_LOG_LEVEL": "warning",
    }
    cwd, target = REPO, "data_project.wsgi"
    postgres = getattr(args, "postgres", None)  # URL prefix of the databases, if any
    if app == "raw" and postgres:
        cwd, target = Path(args.anchors), "raw_wsgi_pg_tuned:lookup"
        env.update(ANCHOR_PG_URL=postgres + "users", ANCHOR_TABLE="users")
    elif app == "raw":
        cwd, target = Path(args.anchors), "raw_wsgi:lookup"
        env.update(ANCHOR_DB=str(data_dir / "users.sqlite3"), ANCHOR_TABLE="users")
    if args.server == "gunicorn":
        serve = [sys.executable, "-m", "gunicorn", "-c", str(REPO / "gunicorn.conf.py"), target]
    elif app == "raw":  # Granian's CLI with the project's settings, as bench/servers.py has it
        serve = [
            *(sys.executable, "-m", "granian", "--interface", "wsgi", "--workers", "1"),
            *("--blocking-threads", "1", *GRANIAN_SETTINGS),
            *("--host", "127.0.0.1", "--port", str(port), target),
        ]
    else:
        serve = [sys.executable, "-m", "data_project.granian_server"]
    return serve, cwd, env


def the_worker(server: subprocess.Popen) -> psutil.Process:
    """The one worker process of ``server``, Gunicorn's or Granian's; exits unless there is
    exactly one (multiprocessing's resource tracker, a child too, is told apart by its
    command line)."""
    workers = [
        child
        for child in psutil.Process(server.pid).children()
        if "resource_tracker" not in " ".join(child.cmdline())
    ]
    if len(workers) != 1:
        sys.exit(f"expected one worker, found {[w.cmdline() for w in workers]}")
    return workers[0]


def callgrind_control(option: str, pid: int) -> None:
    """``callgrind_control option pid``: ``-z`` zeroes its counters, ``-d`` dumps them."""
    subprocess.run(["callgrind_control", option, str(pid)], check=True, capture_output=True)


def free_port() -> int:
    with closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def connect(port: int, server: subprocess.Popen) -> http.client.HTTPConnection:
    """A connection to the server on ``port`` once it answers (up to 5 minutes)."""
    deadline = time.monotonic() + 300
    while True:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        try:
            connection.connect()
            return connection
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the server on port {port} did not start")
            time.sleep(0.5)


def send(connection: http.client.HTTPConnection, ids: list[int], headers: dict) -> None:
    """Look up ``ids`` one after another on ``connection`` with ``headers``; exits unless
    each is answered 200."""
    for user_id in ids:
        url = f"/api/run-query/?count=1&type=get&user_id={user_id}"
        connection.request("GET", url, headers=headers)
        answer = connection.getresponse()
        body = answer.read()
        if answer.status != 200:
            sys.exit(f"lookup {url} answered {answer.status}: {body[:300]!r}")


def run_lookups(app: str, lookups: int, users_db: Path, anchors: Path) -> int:
    """In the child: warm up, then answer ``lookups`` random lookups; 1 if one failed."""
    if app == "raw":
        os.environ.update(ANCHOR_DB=str(users_db), ANCHOR_TABLE="users")
        sys.path.insert(0, str(anchors.resolve()))
        from raw_wsgi import lookup as application
    else:
        os.environ["DATA_DIR"] = str(users_db.parent)
        sys.path.insert(0, str(REPO))
        from data_project.wsgi import application

    with sqlite3.connect(users_db) as connection:
        (max_id,) = connection.execute("SELECT max(id) FROM users").fetchone()
    ids = random.Random(7).choices(range(1, max_id + 1), k=WARM_UP + lookups)
    statuses = []

    def start_response(status, headers, exc_info=None):
        statuses.append(status)

    for user_id in ids:
        b"".join(application(environ(user_id), start_response))
    return 0 if set(statuses) == {"200 OK"} else 1


def environ(user_id: int) -> dict:
    """A WSGI environ as Gunicorn builds it for the anchors' lookup URL."""
    return {
        **AUTHORIZATION,
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/api/run-query/",
        "QUERY_STRING": f"count=1&type=get&user_id={user_id}",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
    }


if __name__ == "__main__":
    sys.exit(main())
