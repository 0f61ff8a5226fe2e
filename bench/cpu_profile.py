"""Benchmark: a server worker's CPU per lookup by where it runs, sampled under wrk.

`bench/instructions.py` counts instructions, which the wall clock does not follow: on
Granian the project's lookups cost 0.8 of the raw anchor's instructions but ~0.7 of its
requests per second. This samples the time instead. Each app is served by one worker
with one Python thread (`bench.instructions.one_worker_server`: the project as it is
served, the raw anchor by the same server) and loaded by wrk (``--connections`` on one
thread, random user ids) while ``perf record -e cpu-clock`` samples every thread of the
worker for ``--seconds``. Samples are grouped by the object they ran in (the kernel,
``libpython``, Granian's Rust extension, libc, SQLite, ...) and printed as µs of CPU
per request (samples × the sampling period / the requests wrk counted in that window),
each app beside the raw anchor's. A server's own work in Python (all of Gunicorn's)
counts as ``libpython``; use Granian (the default) to see the server's share apart.

``--postgres URL_PREFIX`` profiles lookups on PostgreSQL instead (databases
``URL_PREFIX`` + ``users``/``products``/``orders``, ``--data-dir`` holding the SQLite
``default`` with the tokens, as ``bench/servers.py`` lays them out): the raw anchor is
``raw_wsgi_pg_tuned.py``, and the worker's PostgreSQL backends (found by the worker's
client ports in ``pg_stat_activity``) are sampled with it, their CPU a stage of its own.

Needs Debian's ``linux-perf`` (``make perf``), wrk and generated data (``--data-dir``,
``var/db`` by default). ``--access`` as in ``bench/lookup.py``. Usage: ``python
bench/cpu_profile.py [--server granian|gunicorn] [--apps project,raw] [--seconds 8]
[--postgres URL_PREFIX]``.
"""

import argparse
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import closing
from pathlib import Path

import psutil
import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from api.domain.stores import STORE_NAMES  # noqa: E402  (needs no settings)
from bench.instructions import connect, free_port, one_worker_server, the_worker  # noqa: E402
from bench.lookup import PRODUCTION_ENV, bench_token, parse_wrk  # noqa: E402

FREQUENCY_HZ = 4999  # samples a second per thread (odd, so as not to beat with timers)
WARM_UP_S = 3
# Shared objects by the stage they stand for; anything else is "other".
STAGES = {
    "[kernel.kallsyms]": "kernel",
    "libpython": "Python interpreter",
    "_granian": "Granian (Rust)",
    "libc.so": "libc",
    "libsqlite3": "SQLite",
    "_sqlite3": "SQLite",
    "psycopg": "psycopg / libpq",
    "libpq": "psycopg / libpq",
    "orjson": "orjson / json",
    "_json": "orjson / json",
    "_decimal": "decimal",
    "libmpdec": "decimal",
}
BACKEND = "PostgreSQL backend"  # the stage of every sample in the worker's backends


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR", str(REPO / "var/db")))
    parser.add_argument("--anchors", default=str(REPO.parent / "shared" / "anchors"))
    parser.add_argument("--server", choices=["gunicorn", "granian"], default="granian")
    parser.add_argument("--apps", default="project,raw")
    parser.add_argument("--access", choices=["tokens", "open"], default="tokens")
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--postgres", metavar="URL_PREFIX", help="e.g. postgres://.../dp_servers_")
    args = parser.parse_args()
    for tool in ("perf", "wrk"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: make {tool}")
    data_dir = Path(args.data_dir).resolve()
    args.env, args.headers = {}, []
    if args.postgres:
        with psycopg.connect(args.postgres + "users") as db:
            (args.max_id,) = db.execute("SELECT max(id) FROM users").fetchone()
        args.env = {f"DATABASE_URL_{s.upper()}": args.postgres + s for s in STORE_NAMES}
    else:
        users_db = data_dir / "users.sqlite3"
        if not users_db.exists():
            sys.exit(f"{users_db} is missing: run `manage.py generate_data` first")
        with closing(sqlite3.connect(users_db)) as db:
            (args.max_id,) = db.execute("SELECT max(id) FROM users").fetchone()
    if args.access == "tokens":
        args.env |= {**PRODUCTION_ENV, "TOKEN_CACHE_SECONDS": "3600"}
        args.headers = ["-H", f"Authorization: Token {bench_token(data_dir)}"]

    profiles = {app: profile(app, args) for app in args.apps.split(",")}
    print(
        f"\nCPU µs per lookup in one {args.server} worker (1 Python thread), perf cpu-clock "
        f"at {FREQUENCY_HZ} Hz over {args.seconds} s, wrk {args.connections} connections, "
        f"access: {args.access}, {'PostgreSQL' if args.postgres else 'SQLite'}"
    )
    apps = list(profiles)
    print(f"{'stage':<22}" + "".join(f"{app:>12}" for app in apps))
    first = profiles[apps[0]]["us"]
    stages = {stage for p in profiles.values() for stage in p["us"]} - {"total", "other"}
    stages = [*sorted(stages, key=lambda stage: -first.get(stage, 0.0)), "other"]
    for stage in [*stages, "total"]:
        row = (profiles[app]["us"].get(stage, 0.0) for app in apps)
        print(f"{stage:<22}" + "".join(f"{us:>12.1f}" for us in row))
    print(f"{'req/s under perf':<22}" + "".join(f"{profiles[a]['rps']:>12,.0f}" for a in apps))
    if "raw" in profiles:
        for app in apps:
            if app != "raw":
                ratio = profiles["raw"]["us"]["total"] / profiles[app]["us"]["total"]
                print(f"raw / {app} CPU per lookup: {ratio:.2f}")
    return 0


def profile(app: str, args) -> dict:
    """``{"us": {stage: µs per request, "total": ...}, "rps": req/s}`` of ``app``."""
    port = free_port()
    serve, cwd, env = one_worker_server(app, args, port)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    server = subprocess.Popen(serve, cwd=cwd, env=env, **quiet)
    try:
        connect(port, server).close()
        worker = the_worker(server)
        url = f"http://127.0.0.1:{port}/api/run-query/"
        script = str(Path(args.anchors) / "lua_random_user.lua")
        seconds = WARM_UP_S + args.seconds + 2
        wrk = ["wrk", "-t1", f"-c{args.connections}", f"-d{seconds}s", "--latency"]
        wrk += args.headers
        loader = subprocess.Popen(
            [*wrk, "-s", script, url],
            env={**os.environ, "ANCHOR_N": str(args.max_id)},
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(WARM_UP_S)
        backends = backend_pids(worker, args.postgres) if args.postgres else []
        pids = ",".join(map(str, [worker.pid, *backends]))
        with tempfile.TemporaryDirectory(prefix="bench-perf-") as out:
            data = f"{out}/perf.data"
            record = ["perf", "record", "-e", "cpu-clock", "-F", str(FREQUENCY_HZ), "-o", data]
            record += ["-p", pids, "--", "sleep", str(args.seconds)]
            subprocess.run(record, check=True, capture_output=True)
            report = subprocess.run(
                ["perf", "report", "-i", data, "--stdio", "-n", "--sort", "pid,dso", "-g", "none"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        output = loader.communicate()[0]
    finally:
        server.terminate()
        server.wait(timeout=60)
    figures = parse_wrk(output)
    if figures["errors"] != "none":
        sys.exit(f"{app}: wrk saw failed requests\n{output}")
    rps = figures["rps"]
    samples: Counter[str] = Counter()
    for line in report.splitlines():
        found = re.match(r"\s+[\d.]+%\s+(\d+)\s+(\d+):\S*\s+(\S+)", line)
        if found:
            count, pid, dso = int(found.group(1)), int(found.group(2)), found.group(3)
            if pid in backends:
                stage = BACKEND
            else:
                stage = next((s for key, s in STAGES.items() if key in dso), "other")
            samples[stage] += count
    requests = rps * args.seconds
    us = {stage: n * 1e6 / FREQUENCY_HZ / requests for stage, n in samples.items()}
    us["total"] = sum(us.values())
    return {"us": us, "rps": rps}


def backend_pids(worker: psutil.Process, url_prefix: str) -> list[int]:
    """The PostgreSQL backends serving ``worker``: those whose client port is one of the
    worker's TCP connections (``pg_stat_activity.client_port``)."""
    ports = [c.laddr.port for c in worker.net_connections(kind="tcp") if c.raddr]
    with psycopg.connect(url_prefix + "users") as db:
        rows = db.execute(
            "SELECT pid FROM pg_stat_activity WHERE client_port = ANY(%s)", (ports,)
        ).fetchall()
    if not rows:
        sys.exit(f"no PostgreSQL backend serves worker {worker.pid}")
    return [pid for (pid,) in rows]


if __name__ == "__main__":
    sys.exit(main())
