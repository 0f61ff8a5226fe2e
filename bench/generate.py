r"""Benchmark ``manage.py generate_data`` against the anchors, in one run on one machine.

    .venv/bin/python bench/generate.py [--rows 1000000] [--rounds 2] [--anchors DIR]
    .venv/bin/python bench/generate.py --postgres postgres://postgres@127.0.0.1:5432/bench_
    .venv/bin/python bench/generate.py --growth [--postgres URL_PREFIX] [--sizes 1000000,...]
    .venv/bin/python bench/generate.py --quick [--postgres URL_PREFIX]

Each round, in a fresh temporary DATA_DIR: ``manage.py migrate_all``, then the timed
``manage.py generate_data --rows N`` (wall time of the whole command, Django start-up
included; memory sampled over the command's process tree: the peak of the summed PSS
(every 200 ms), the tree's real footprint with pages shared after fork counted once, the
peak of the summed RSS (every 20 ms), which counts those shared pages once per process,
and the largest single process's peak RSS as the kernel reports it), then the raw-sqlite3 anchor
``make_users_db.py FILE N``, timed the same way. Once per run, the seed-style anchor
``naive/naive_generate.py DIR 20000`` (Faker per row + ``bulk_create``), extrapolated
linearly to N rows. The anchors are run from ``--anchors`` (default ``../shared/anchors``
beside the repository), never copied.

Targets (DESIGN.md): 1M rows ≤ 20 s wall, ≤ 500 MB peak RSS, ≤ 2.5 × the raw anchor.
Timings on a shared 2-core machine are noisy: the load average is printed with each
round; compare ratios from the same round. ``--max-load X`` waits before each round until
the 1-minute load average is below X.

With ``--postgres URL_PREFIX`` the three routed aliases are PostgreSQL databases instead,
at ``URL_PREFIX`` + ``users``/``products``/``orders`` (``default`` stays an SQLite file in
the temporary folder). Databases missing on the server are created and dropped again at
the end (``--keep`` keeps them); existing ones are used, and their three tables emptied.
Each round runs ``migrate_all`` and the timed ``generate_data --rows N --clear`` (the
``COPY`` loader), and prints seconds and rows/s against the target of ≥ 150,000 rows/s
(the ``bulk_create`` path it replaces loads about 13–14k rows/s). Memory is the client's
process tree only; the server's backends are not counted. The SQLite anchors are not run;
a fixed pure-Python loop is timed before each round (the host's speed varies), and after
our load the PostgreSQL anchor: the rows just loaded, exported to files (untimed), are
loaded again by ``psql \copy``, one ``psql`` per database in parallel, each in one
transaction that leaves the same end state as ``generate_data --clear``: ``TRUNCATE``, the
secondary indexes and the unique e-mail index dropped, ``\copy``, indexes re-created,
``ANALYZE``, ``COMMIT``. That is the server's own work for the load with no row built in
Python; the ratio (our seconds over its seconds, same round) says what the rest costs.

``--growth`` prints the growth table instead (issue 32): for each size N (default 1M, 2M,
5M, 10M users; ``--quick``: 10k, 20k, 50k, well under a minute), one timed
``generate_data --users N`` on freshly migrated SQLite files (``--clear`` on the
PostgreSQL databases), then one timed run of the like-for-like floor,
``bench/users_floor.py`` (the same rows into the same table with the raw driver, one
process), and on PostgreSQL ``psql \copy`` of the users just loaded, from a file. Per
size: wall seconds and rows/s of the whole command, that rate against the first size's,
the users table's own rate (the worker's seconds, from the summary), CPU seconds of the
process tree, the seconds it waited for a core (other work on the shared machine), peak
summed RSS; the floor's; their ratio. Every timed run starts settled: dirty pages written
back (``sync``) and, on PostgreSQL, a ``CHECKPOINT`` done, so that no run pays for the
writes of the one before it. A size whose runs waited for a core more than a
tenth of their time is shown, marked "disturbed", and run again (``--reruns``, 2). Then
the verdicts: the last size's rows/s against
the first's (target >= 0.9), ours over the floor at both ends (>= 0.8), peak RSS
(<= 500 MB), and on PostgreSQL ours over ``psql \copy`` (>= 0.7). ``--quick`` also checks
at every size that the floor stored exactly the rows ``generate_data`` stored. Files are
deleted after each size (10M SQLite users take 2.3 GB).
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import closing, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from api.domain.stores import STORE_NAMES  # noqa: E402  (needs no settings)

TARGET_SECONDS, TARGET_RSS_MB, TARGET_RATIO = 20.0, 500.0, 2.5
GROWTH_SIZES = (1_000_000, 2_000_000, 5_000_000, 10_000_000)
QUICK_SIZES = (10_000, 20_000, 50_000)
TARGET_GROWTH, TARGET_FLOOR, TARGET_PSQL = 0.9, 0.8, 0.7
DISTURBED = 0.1  # of a run's wall time spent waiting for a core: run the size again
FLOOR = REPO / "bench" / "users_floor.py"
TARGET_POSTGRES_ROWS_PER_S = 150_000
LOAD_POLL_S = 5
CPU_REFERENCE_LOOPS = 5_000_000
NAIVE_ROWS = 20_000
SAMPLE_S = 0.02  # RSS (cheap: /proc/<pid>/status) every 20 ms
PSS_EVERY = 10  # PSS (smaps_rollup, ~2 ms per 150 MB process) every 10th sample only


@dataclass
class Measured:
    """One timed process: wall seconds; peak memory of its tree and of its largest process.

    ``cpu_seconds``: user + system time of the process and the descendants it waited for;
    ``waited_seconds``: time its processes were ready to run but waited for a core (the
    kernel's run-queue delay, ``/proc/<pid>/schedstat``): on the shared machine, what other
    work took from this run.
    """

    seconds: float
    tree_pss_mb: float
    tree_rss_mb: float
    max_process_rss_mb: float
    stdout: str
    cpu_seconds: float = 0.0
    waited_seconds: float = 0.0


def measure(command: list[str], *, env: dict | None = None, cwd: Path = REPO) -> Measured:
    """Run ``command`` to completion; fail loudly on a non-zero exit."""
    peak, waits = [0, 0], {}
    started = time.perf_counter()
    proc = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    done = threading.Event()
    sampler = threading.Thread(target=_sample, args=(proc.pid, peak, waits, done), daemon=True)
    sampler.start()
    reader = {}
    threads = [
        threading.Thread(target=lambda name=name: reader.update({name: getattr(proc, name).read()}))
        for name in ("stdout", "stderr")
    ]
    for thread in threads:
        thread.start()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    for thread in (*threads, sampler):
        thread.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{reader['stderr']}")
    pss, rss = peak[0] / 1024, peak[1] / 1024
    cpu = usage.ru_utime + usage.ru_stime
    waited = sum(waits.values()) / 1e9
    return Measured(
        seconds,
        pss,
        rss,
        usage.ru_maxrss / 1024,
        reader["stdout"],
        cpu_seconds=cpu,
        waited_seconds=waited,
    )


def _sample(pid: int, peak: list[int], waits: dict[int, int], done: threading.Event) -> None:
    """Track the largest summed PSS and RSS (KiB) of ``pid`` and its descendants, and the
    run-queue delay (ns) each of them had accumulated when last seen.

    Reading PSS walks the processes' page tables; sampling it every 20 ms cost the measured
    command a quarter of a core, so it is read less often than RSS.
    """
    samples = 0
    while not done.wait(SAMPLE_S):
        tree = _tree(pid)
        peak[1] = max(peak[1], sum(_field_kib(f"/proc/{p}/status", "VmRSS") for p in tree))
        for p in tree:
            with suppress(OSError, ValueError, IndexError):
                waits[p] = int(Path(f"/proc/{p}/schedstat").read_text().split()[1])
        if samples % PSS_EVERY == 0:
            pss = sum(_field_kib(f"/proc/{p}/smaps_rollup", "Pss") for p in tree)
            peak[0] = max(peak[0], pss)
        samples += 1


def _tree(pid: int) -> list[int]:
    pids, stack = [], [pid]
    while stack:
        current = stack.pop()
        pids.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return pids


def _field_kib(path: str, field: str) -> int:
    """One ``<field>: <n> kB`` line of a /proc file; 0 once the process is gone."""
    try:
        for line in Path(path).read_text().splitlines():
            key, _, value = line.partition(":")
            if key == field:
                return int(value.split()[0])
    except (OSError, ValueError):
        pass
    return 0


def one_round(*, rows: int, anchors: Path, parallel: str, workdir: Path) -> dict:
    """migrate_all, generate_data (timed) and the raw anchor (timed) in a fresh folder."""
    data_dir = workdir / "data"
    env = {**os.environ, "DATA_DIR": str(data_dir)}
    manage = [sys.executable, str(REPO / "manage.py")]
    subprocess.run([*manage, "migrate_all", "-v", "0"], cwd=REPO, env=env, check=True)
    load = os.getloadavg()[0]
    ours = measure([*manage, "generate_data", "--rows", str(rows), "--parallel", parallel], env=env)
    anchor = measure(
        [sys.executable, str(anchors / "make_users_db.py"), str(workdir / "anchor.db"), str(rows)]
    )
    return {
        "load_average_1m": load,
        "ours": asdict(ours),
        "raw_anchor": asdict(anchor),
        "ratio_vs_raw": ours.seconds / anchor.seconds,
        "ours_rows_per_s": rows / ours.seconds,
    }


def naive_round(*, rows: int, anchors: Path, workdir: Path) -> dict:
    """The seed-style generator on `NAIVE_ROWS` rows, extrapolated to ``rows``."""
    folder = workdir / "naive"
    folder.mkdir()
    run = measure(
        [sys.executable, str(anchors / "naive" / "naive_generate.py"), str(folder), str(NAIVE_ROWS)]
    )
    reported = float(re.search(r"seconds=([\d.]+)", run.stdout).group(1))
    return {
        "rows": NAIVE_ROWS,
        "seconds": reported,
        "wall_seconds": run.seconds,
        "extrapolated_seconds": reported * rows / NAIVE_ROWS,
    }


def cpu_reference() -> float:
    """Seconds for a fixed pure-Python loop (median of 3): how fast the host is right now.

    On the shared 2-core machine this swung from 0.31 to 0.52 s within a minute, idle:
    a slow round with a slow reference is the host, not the code.
    """
    times = []
    for _ in range(3):
        started, x = time.perf_counter(), 0
        for i in range(CPU_REFERENCE_LOOPS):
            x += i * i % 7
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def wait_for_quiet(max_load: float | None) -> None:
    """Sleep until the 1-minute load average is below ``max_load`` (if given)."""
    while max_load is not None and os.getloadavg()[0] >= max_load:
        time.sleep(LOAD_POLL_S)


def postgres_round(*, rows: int, prefix: str, parallel: str, workdir: Path) -> dict:
    """migrate_all and the timed ``generate_data --clear`` on the PostgreSQL databases."""
    servers = ("DATABASE_URL_", "DATABASE_REPLICA_URLS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(servers)}
    env["DATA_DIR"] = str(workdir / "data")
    env.update({f"DATABASE_URL_{alias.upper()}": prefix + alias for alias in STORE_NAMES})
    manage = [sys.executable, str(REPO / "manage.py")]
    subprocess.run([*manage, "migrate_all", "-v", "0"], cwd=REPO, env=env, check=True)
    load, reference = os.getloadavg()[0], cpu_reference()
    command = [*manage, "generate_data", "--rows", str(rows), "--clear", "--parallel", parallel]
    ours = measure(command, env=env)
    anchor = psql_anchor(prefix=prefix, workdir=workdir)
    return {
        "load_average_1m": load,
        "cpu_reference_s": reference,
        "ours": asdict(ours),
        "ours_rows_per_s": rows / ours.seconds,
        "psql_anchor_s": anchor,
        "psql_anchor_rows_per_s": rows / anchor,
        "ratio_vs_psql": ours.seconds / anchor,
    }


def psql_anchor(
    *, prefix: str, workdir: Path, tables: tuple[str, ...] = STORE_NAMES, settled: bool = False
) -> float:
    """Seconds for ``psql \\copy`` to load the stored rows again, all databases at once.

    Each table is exported to a file first (untimed); then one ``psql`` per database runs
    a transaction that empties the table, drops what `CopyLoader` drops on an empty table
    (every index but the primary key, the unique e-mail index included), copies the file in,
    re-creates the indexes from their definitions and analyzes, so the three tables end
    exactly as ``generate_data --clear`` left them.
    """
    scripts = [_anchor_script(prefix + alias, alias, workdir) for alias in tables]
    if settled:
        settle(prefix)  # the exported files and the load before, written back
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            ["psql", "--quiet", "--no-psqlrc", "--set", "ON_ERROR_STOP=1", url],
            stdin=subprocess.PIPE,
            text=True,
        )
        for url, _ in scripts
    ]
    for proc, (_, script) in zip(procs, scripts, strict=True):
        proc.stdin.write(script)
        proc.stdin.close()
    if any(proc.wait() for proc in procs):
        raise SystemExit("the psql \\copy anchor failed")
    return time.perf_counter() - started


def _anchor_script(url: str, table: str, workdir: Path) -> tuple[str, str]:
    """Export ``table`` to a file; return the psql script that loads it back."""
    path = workdir / f"{table}.tsv"
    relation = sql.Identifier(table)
    with psycopg.connect(url) as conn:
        with (
            path.open("wb") as out,
            conn.cursor().copy(sql.SQL("COPY {} TO STDOUT").format(relation)) as copy,
        ):
            for block in copy:
                out.write(block)
        indexes = conn.execute(
            "SELECT c.relname, pg_get_indexdef(c.oid),"
            " (SELECT k.conname FROM pg_constraint AS k"
            "  WHERE k.conindid = c.oid AND k.contype = 'u')"
            " FROM pg_index AS x JOIN pg_class AS c ON c.oid = x.indexrelid"
            " WHERE x.indrelid = %s::regclass AND NOT x.indisprimary ORDER BY c.relname",
            [table],
        ).fetchall()
        name = relation.as_string(conn)
    drop, create = [], []
    for index, definition, constraint in indexes:
        if constraint:
            drop.append(f'ALTER TABLE {name} DROP CONSTRAINT "{constraint}";')
            create += [
                f"{definition};",
                f'ALTER TABLE {name} ADD CONSTRAINT "{constraint}" UNIQUE USING INDEX "{index}";',
            ]
        else:
            drop.append(f'DROP INDEX "{index}";')
            create.append(f"{definition};")
    lines = [
        "BEGIN;",
        f"TRUNCATE {name};",
        *drop,
        f"\\copy {name} FROM '{path}'",
        *create,
        f"ANALYZE {name};",
        "COMMIT;",
    ]
    return url, "\n".join(lines) + "\n"


# The growth table (issue 32): ``generate_data --users N`` at growing N, beside the floor.


def sqlite_env(data_dir: Path) -> dict[str, str]:
    """The environment for ``manage.py`` on SQLite files in ``data_dir``."""
    servers = ("DATABASE_URL_", "DATABASE_REPLICA_URLS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(servers)}
    return {**env, "DATA_DIR": str(data_dir)}


def postgres_env(prefix: str, data_dir: Path) -> dict[str, str]:
    """The environment for ``manage.py`` with the routed aliases at ``prefix`` + alias."""
    env = sqlite_env(data_dir)
    env.update({f"DATABASE_URL_{alias.upper()}": prefix + alias for alias in STORE_NAMES})
    return env


def migrate(env: dict[str, str]) -> None:
    manage = [sys.executable, str(REPO / "manage.py")]
    subprocess.run([*manage, "migrate_all", "-v", "0"], cwd=REPO, env=env, check=True)


def users_digest(connect) -> str:
    """SHA-256 of every ``users`` row in id order, as the driver returns it."""
    digest = hashlib.sha256()
    with closing(connect()) as conn:
        for row in conn.execute("SELECT * FROM users ORDER BY id"):
            digest.update(f"{tuple(row)!r}\n".encode())
    return digest.hexdigest()


def table_seconds(stdout: str, table: str = "users") -> float:
    """The worker's own seconds for ``table`` from ``generate_data``'s summary."""
    match = re.search(rf"^\s+{table}\s+[\d,]+ rows\s.*?([\d.]+) s\s", stdout, re.MULTILINE)
    if not match:
        raise SystemExit(f"no {table} line in the summary:\n{stdout}")
    return float(match.group(1))


def settle(prefix: str | None = None) -> None:
    """Start a timed run with nothing left to write back from the runs before it.

    A big load leaves gigabytes dirty in the page cache, and on PostgreSQL a checkpoint
    under way (``max_wal_size``), which would slow whatever runs next: the next run waits
    for the operating system's write-back and the server's ``CHECKPOINT`` instead.
    """
    if prefix:
        with psycopg.connect(_maintenance_url(prefix), autocommit=True) as conn:
            conn.execute("CHECKPOINT")
    os.sync()


def _floor(
    backend: str, target: str, users: int, prefix: str | None = None
) -> tuple[Measured, dict]:
    settle(prefix)
    run = measure([sys.executable, str(FLOOR), backend, target, str(users)])
    return run, json.loads(run.stdout.splitlines()[-1])


def growth_sqlite(*, users: int, workdir: Path, check: bool) -> dict:
    """``generate_data --users N`` and the floor, each on freshly migrated files."""
    manage = [sys.executable, str(REPO / "manage.py")]
    result = {"users": users, "load_average_1m": os.getloadavg()[0]}
    ours_env, floor_env = sqlite_env(workdir / "ours"), sqlite_env(workdir / "floor")
    migrate(ours_env)
    settle()
    ours = measure([*manage, "generate_data", "--users", str(users)], env=ours_env)
    result.update(ours=asdict(ours), ours_table_s=table_seconds(ours.stdout))
    path = workdir / "ours" / "users.sqlite3"
    digest = users_digest(lambda: sqlite3.connect(path)) if check else None
    shutil.rmtree(workdir / "ours")  # 10M users are 2.3 GB: one copy on disk at a time
    migrate(floor_env)
    path = workdir / "floor" / "users.sqlite3"
    floor, stages = _floor("sqlite", str(path), users)
    result.update(floor=asdict(floor), floor_stages=stages)
    if check and users_digest(lambda: sqlite3.connect(path)) != digest:
        raise SystemExit(f"{users:,} users: the floor stored other rows than generate_data")
    shutil.rmtree(workdir / "floor")
    return result


def growth_postgres(*, users: int, prefix: str, workdir: Path, check: bool) -> dict:
    """``generate_data --users N --clear``, ``psql \\copy`` of its rows, then the floor."""
    manage = [sys.executable, str(REPO / "manage.py")]
    env = postgres_env(prefix, workdir / "data")
    result = {"users": users, "load_average_1m": os.getloadavg()[0]}
    command = [*manage, "generate_data", "--users", str(users), "--clear"]
    settle(prefix)
    ours = measure(command, env=env)
    result.update(ours=asdict(ours), ours_table_s=table_seconds(ours.stdout))
    url = prefix + "users"
    digest = users_digest(lambda: psycopg.connect(url)) if check else None
    result["psql_anchor_s"] = psql_anchor(
        prefix=prefix, workdir=workdir, tables=("users",), settled=True
    )
    (workdir / "users.tsv").unlink()
    floor, stages = _floor("postgres", url, users, prefix)
    result.update(floor=asdict(floor), floor_stages=stages)
    if check and users_digest(lambda: psycopg.connect(url)) != digest:
        raise SystemExit(f"{users:,} users: the floor stored other rows than generate_data")
    return result


def run_growth(args: argparse.Namespace) -> dict:
    """One run per size, smallest first; the PostgreSQL databases are migrated once.

    A size whose generate_data or floor waited for a core more than `DISTURBED` of its
    wall time (other work on the shared machine took it) is shown, marked, and run again,
    at most ``args.reruns`` times; the last run counts.
    """
    sizes = args.sizes or (QUICK_SIZES if args.quick else GROWTH_SIZES)
    backend = "postgresql" if args.postgres else "sqlite"
    results = {"backend": backend, "cpus": os.cpu_count(), "sizes": [], "disturbed": []}
    created = create_databases(args.postgres) if args.postgres else []
    try:
        with tempfile.TemporaryDirectory(prefix="bench_growth_") as tmp:
            if args.postgres:
                migrate(postgres_env(args.postgres, Path(tmp) / "data"))
            for users in sizes:
                for attempt in range(args.reruns + 1):
                    wait_for_quiet(args.max_load)
                    with tempfile.TemporaryDirectory(prefix="size_", dir=tmp) as workdir:
                        if args.postgres:
                            size = growth_postgres(
                                users=users,
                                prefix=args.postgres,
                                workdir=Path(workdir),
                                check=args.quick,
                            )
                        else:
                            size = growth_sqlite(
                                users=users, workdir=Path(workdir), check=args.quick
                            )
                    first = results["sizes"][0] if results["sizes"] else size
                    row = render_growth_row(size, first, backend)
                    if not _disturbed(size) or attempt == args.reruns:
                        break
                    results["disturbed"].append(size)
                    print(f"{row}  disturbed: run again", flush=True)
                results["sizes"].append(size)
                print(row, flush=True)
    finally:
        if created and not args.keep:
            drop_databases(args.postgres, created)
    print(render_growth_summary(results))
    return results


def _disturbed(size: dict) -> bool:
    """Whether other work took a core from the size's runs for long (`DISTURBED`)."""
    runs = (size["ours"], size["floor"])
    return any(run["waited_seconds"] > DISTURBED * run["seconds"] for run in runs)


def _rate(rows: int, seconds: float) -> float:
    return rows / seconds if seconds > 0 else 0.0


def render_growth_header(backend: str) -> str:
    psql = "  psql \\copy s    rows/s  ours/psql" if backend == "postgresql" else ""
    return (
        f"generate_data --users N on {backend} beside the floor (bench/users_floor.py: the"
        " same rows, raw driver), one run per size\n"
        "       users | ours s     rows/s  x1st  table rows/s   CPU s  waited s  RSS MB"
        f" | floor s     rows/s  x1st  RSS MB | ours/floor{psql}"
    )


def render_growth_row(r: dict, first: dict, backend: str) -> str:
    n, ours, floor = r["users"], r["ours"], r["floor"]
    rate, floor_rate = _rate(n, ours["seconds"]), _rate(n, floor["seconds"])
    first_rate = _rate(first["users"], first["ours"]["seconds"])
    first_floor = _rate(first["users"], first["floor"]["seconds"])
    line = (
        f"{n:>12,} | {ours['seconds']:6.2f} {rate:>10,.0f} {rate / first_rate:5.2f} "
        f"{_rate(n, r['ours_table_s']):>13,.0f} {ours['cpu_seconds']:7.1f} "
        f"{ours['waited_seconds']:9.1f} {ours['tree_rss_mb']:7.0f} | {floor['seconds']:7.2f} "
        f"{floor_rate:>10,.0f} {floor_rate / first_floor:5.2f} {floor['tree_rss_mb']:7.0f} | "
        f"{rate / floor_rate:10.2f}"
    )
    if backend == "postgresql":
        psql_rate = _rate(n, r["psql_anchor_s"])
        line += f" {r['psql_anchor_s']:13.2f} {psql_rate:>9,.0f} {rate / psql_rate:10.2f}"
    return line + f"   (load {r['load_average_1m']:.1f})"


def render_growth_summary(results: dict) -> str:
    sizes = results["sizes"]
    first, last = sizes[0], sizes[-1]

    def rate(r, key="ours"):
        return _rate(r["users"], r[key]["seconds"])

    growth = rate(last) / rate(first)
    table_growth = _rate(last["users"], last["ours_table_s"]) / _rate(
        first["users"], first["ours_table_s"]
    )
    floor_ratios = [rate(r) / rate(r, "floor") for r in (first, last)]
    rss = max(r["ours"]["tree_rss_mb"] for r in sizes)
    lines = [
        f"growth {last['users']:,} vs {first['users']:,} users: generate_data keeps "
        f"{growth:.2f}x its rows/s (the users table alone {table_growth:.2f}x; the floor "
        f"{rate(last, 'floor') / rate(first, 'floor'):.2f}x) "
        f"[target >= {TARGET_GROWTH}: {_verdict(growth >= TARGET_GROWTH)}]",
        f"generate_data / floor: {floor_ratios[0]:.2f}x at {first['users']:,}, "
        f"{floor_ratios[1]:.2f}x at {last['users']:,} "
        f"[target >= {TARGET_FLOOR}: {_verdict(min(floor_ratios) >= TARGET_FLOOR)}]",
        f"peak memory of generate_data's process tree: {rss:.0f} MB RSS "
        f"[target <= {TARGET_RSS_MB:.0f} MB: {_verdict(rss <= TARGET_RSS_MB)}]",
    ]
    if results["backend"] == "postgresql":
        psql = [rate(r) / _rate(r["users"], r["psql_anchor_s"]) for r in (first, last)]
        lines.append(
            f"generate_data / psql \\copy of a ready file: {psql[0]:.2f}x at "
            f"{first['users']:,}, {psql[1]:.2f}x at {last['users']:,} "
            f"[target >= {TARGET_PSQL}: {_verdict(min(psql) >= TARGET_PSQL)}]"
        )
    return "\n".join(lines)


def _verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def create_databases(prefix: str) -> list[str]:
    """Create the routed aliases' databases missing on the server; return their names."""
    names = [urlsplit(prefix + alias).path.lstrip("/") for alias in STORE_NAMES]
    with psycopg.connect(_maintenance_url(prefix), autocommit=True) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", [names])
        existing = {name for (name,) in rows}
        missing = [name for name in names if name not in existing]
        for name in missing:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return missing


def drop_databases(prefix: str, names: list[str]) -> None:
    with psycopg.connect(_maintenance_url(prefix), autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def _maintenance_url(prefix: str) -> str:
    """The server's ``postgres`` database, to create and drop the others from."""
    return urlunsplit(urlsplit(prefix + "x")._replace(path="/postgres"))


def run_rounds(args: argparse.Namespace, results: dict, one_round_in, render) -> None:
    """``args.rounds`` rounds of ``one_round_in(workdir)``, each once the load settles.

    Appends each result to ``results["rounds"]`` and prints ``render(number, result)``.
    """
    for number in range(1, args.rounds + 1):
        wait_for_quiet(args.max_load)
        with tempfile.TemporaryDirectory(prefix="bench_generate_") as tmp:
            result = one_round_in(Path(tmp))
        results["rounds"].append(result)
        print(render(number, result, rows=args.rows), flush=True)


def run_postgres(args: argparse.Namespace) -> dict:
    results = {"rows": args.rows, "parallel": args.parallel, "cpus": os.cpu_count()}
    results.update(backend="postgresql", rounds=[])
    created = create_databases(args.postgres)
    try:
        run_rounds(
            args,
            results,
            lambda workdir: postgres_round(
                rows=args.rows, prefix=args.postgres, parallel=args.parallel, workdir=workdir
            ),
            render_postgres_round,
        )
    finally:
        if created and not args.keep:
            drop_databases(args.postgres, created)
    print(render_postgres_summary(results))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--parallel", choices=("processes", "threads"), default="processes")
    parser.add_argument("--anchors", type=Path, default=REPO.parent / "shared" / "anchors")
    parser.add_argument("--no-naive", action="store_true", help="skip the slow seed anchor")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--max-load", type=float, help="before each round, wait until the load average is below"
    )
    parser.add_argument(
        "--postgres",
        metavar="URL_PREFIX",
        help="load PostgreSQL databases URL_PREFIX+users/products/orders instead of SQLite",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the PostgreSQL databases this run created"
    )
    parser.add_argument(
        "--growth",
        action="store_true",
        help="the growth table: generate_data --users N beside the floor, N from --sizes",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"the growth table at {', '.join(f'{n:,}' for n in QUICK_SIZES)} users, each "
        "load checked to store the floor's rows",
    )
    parser.add_argument(
        "--reruns",
        type=int,
        default=2,
        help="growth: run a size again this often at most when other work disturbed it",
    )
    parser.add_argument(
        "--sizes",
        type=lambda text: tuple(int(n) for n in text.split(",")),
        help=f"users per growth step (default {','.join(str(n) for n in GROWTH_SIZES)})",
    )
    args = parser.parse_args()
    if args.postgres and shutil.which("psql") is None:
        parser.error("--postgres needs psql (the anchor): apt-get install postgresql-client")
    if args.growth or args.quick or args.sizes:
        print(render_growth_header("postgresql" if args.postgres else "sqlite"), flush=True)
        results = run_growth(args)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return
    if args.postgres:
        results = run_postgres(args)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return
    if not (args.anchors / "make_users_db.py").exists():
        parser.error(f"no anchors in {args.anchors} (use --anchors)")

    results = {"rows": args.rows, "parallel": args.parallel, "cpus": os.cpu_count(), "rounds": []}
    run_rounds(
        args,
        results,
        lambda workdir: one_round(
            rows=args.rows, anchors=args.anchors, parallel=args.parallel, workdir=workdir
        ),
        render_round,
    )
    if not args.no_naive:
        with tempfile.TemporaryDirectory(prefix="bench_naive_") as tmp:
            results["naive"] = naive_round(rows=args.rows, anchors=args.anchors, workdir=Path(tmp))
    print(render_summary(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def render_round(number: int, r: dict, *, rows: int) -> str:
    ours, anchor = r["ours"], r["raw_anchor"]
    return (
        f"round {number} (load avg {r['load_average_1m']:.2f}): generate_data {rows:,} rows "
        f"{ours['seconds']:.2f} s wall = {r['ours_rows_per_s']:,.0f} rows/s, "
        f"peak memory {ours['tree_pss_mb']:.0f} MB PSS / {ours['tree_rss_mb']:.0f} MB RSS "
        f"(process tree), {ours['max_process_rss_mb']:.0f} MB largest process; "
        f"make_users_db.py {anchor['seconds']:.2f} s; "
        f"ratio {r['ratio_vs_raw']:.2f}x"
    )


def _memory_verdict(pss: float, rss: float) -> str:
    if rss <= TARGET_RSS_MB:
        return "ok, even counting shared pages once per process (RSS)"
    return (
        "ok by PSS (RSS counts pages shared after fork per process)"
        if pss <= TARGET_RSS_MB
        else "MISSED"
    )


def render_summary(results: dict) -> str:
    rounds = results["rounds"]
    seconds = statistics.median(r["ours"]["seconds"] for r in rounds)
    pss = max(r["ours"]["tree_pss_mb"] for r in rounds)
    rss = max(r["ours"]["tree_rss_mb"] for r in rounds)
    ratio = statistics.median(r["ratio_vs_raw"] for r in rounds)
    lines = [
        f"median generate_data: {seconds:.2f} s ({results['rows'] / seconds:,.0f} rows/s) "
        f"[target <= {TARGET_SECONDS:.0f} s: {'ok' if seconds <= TARGET_SECONDS else 'MISSED'}]",
        f"max peak memory (process tree): {pss:.0f} MB PSS, {rss:.0f} MB RSS "
        f"[target <= {TARGET_RSS_MB:.0f} MB: {_memory_verdict(pss, rss)}]",
        f"median ratio vs make_users_db.py: {ratio:.2f}x "
        f"[target <= {TARGET_RATIO}x: {'ok' if ratio <= TARGET_RATIO else 'MISSED'}]",
    ]
    naive = results.get("naive")
    if naive:
        lines.append(
            f"naive_generate.py: {naive['rows']:,} rows in {naive['seconds']:.2f} s "
            f"({naive['rows'] / naive['seconds']:,.0f} rows/s) -> "
            f"{naive['extrapolated_seconds']:.0f} s for {results['rows']:,} rows; "
            f"generate_data is {naive['extrapolated_seconds'] / seconds:.1f}x faster"
        )
    return "\n".join(lines)


def render_postgres_round(number: int, r: dict, *, rows: int) -> str:
    ours = r["ours"]
    tables = [line for line in ours["stdout"].splitlines() if line.startswith("  ")]
    return "\n".join(
        [
            f"round {number} (load avg {r['load_average_1m']:.2f}, CPU reference "
            f"{r['cpu_reference_s']:.2f} s): generate_data {rows:,} rows "
            f"on PostgreSQL {ours['seconds']:.2f} s wall = {r['ours_rows_per_s']:,.0f} rows/s, "
            f"client peak memory {ours['tree_pss_mb']:.0f} MB PSS / {ours['tree_rss_mb']:.0f} MB "
            "RSS (process tree)",
            *tables,
            f"  psql \\copy anchor {r['psql_anchor_s']:.2f} s = "
            f"{r['psql_anchor_rows_per_s']:,.0f} rows/s; ratio {r['ratio_vs_psql']:.2f}x",
        ]
    )


def render_postgres_summary(results: dict) -> str:
    seconds = statistics.median(r["ours"]["seconds"] for r in results["rounds"])
    rate = results["rows"] / seconds
    verdict = "ok" if rate >= TARGET_POSTGRES_ROWS_PER_S else "MISSED"
    anchor = statistics.median(r["psql_anchor_s"] for r in results["rounds"])
    ratio = statistics.median(r["ratio_vs_psql"] for r in results["rounds"])
    return (
        f"median generate_data on PostgreSQL: {seconds:.2f} s ({rate:,.0f} rows/s) "
        f"[target >= {TARGET_POSTGRES_ROWS_PER_S:,} rows/s: {verdict}]\n"
        f"median psql \\copy anchor: {anchor:.2f} s ({results['rows'] / anchor:,.0f} rows/s); "
        f"median ratio generate_data / anchor (same round): {ratio:.2f}x"
    )


if __name__ == "__main__":
    main()
