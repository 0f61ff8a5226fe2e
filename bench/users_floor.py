r"""The like-for-like floor for ``generate_data --users N``: the same rows, a raw driver.

    .venv/bin/python bench/users_floor.py sqlite FILE ROWS [--seed 1] [--batch-size 10000]
    .venv/bin/python bench/users_floor.py postgres URL ROWS [--seed 1] [--batch-size 10000]

Fills the project's own ``users`` table, as its migrations created it (run ``migrate_all``
first; the table is emptied here), with exactly the rows ``generate_data --users ROWS
--seed S`` stores: the rows come from the project's generator
(`api.services.generation.users.user_batches`, the same value pools). What it leaves out
is the project's machinery: no Django connection, no plan, no worker process, no queue,
no progress; one process, one transaction, the plainest fast load each driver allows:

- **sqlite**: ``sqlite3``'s ``executemany`` per batch, with the durability the project
  keeps (WAL, ``synchronous=NORMAL``, so the rows are written to the WAL and then
  checkpointed into the file) and the same 16 MB page cache; every ``CREATE INDEX`` index
  dropped first and re-created after the rows, ``ANALYZE``, ``COMMIT``, checkpoint.
- **postgres**: psycopg's ``COPY ... FROM STDIN`` of the generator's ``COPY`` text lines
  (``copy_text``, as `CopyLoader` gets them), ``TRUNCATE``, every index but the primary
  key dropped first and re-created after, ``ANALYZE``, the id sequence set past the rows,
  ``COMMIT``.

Prints one JSON line: rows, seconds per stage (``setup``: imports and Django's start-up,
timed from the module's first line; ``rows``: the value pools, building and storing the
rows; ``index``; ``analyze``; ``commit``, on SQLite with the checkpoint) and their total.
``bench/generate.py --growth`` times the whole process beside ``generate_data``
(docs/performance.md).
"""

import argparse
import json
import os
import sqlite3
import sys
import time
from pathlib import Path

STARTED = time.perf_counter()
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "data_project.settings")

import django  # noqa: E402

django.setup()

import psycopg  # noqa: E402

from api.services.generation.loaders.sqlite import SQLITE_CACHE_KIB  # noqa: E402
from api.services.generation.users import USER_COLUMNS, user_batches  # noqa: E402

TABLE = "users"
NAMES = ", ".join(f'"{c}"' for c in USER_COLUMNS)


def load_sqlite(path: str, *, rows: int, seed: int, batch_size: int) -> dict[str, float]:
    """Empty ``users`` in the SQLite file ``path`` and load ``rows`` users; stage seconds."""
    times, mark = {}, _marker()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(f"DELETE FROM {TABLE}")
    conn.execute("DELETE FROM sqlite_sequence WHERE name = ?", [TABLE])
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?"
        " AND sql IS NOT NULL ORDER BY name",
        [TABLE],
    ).fetchall()
    for name, _ in indexes:
        conn.execute(f'DROP INDEX "{name}"')
    insert = f"INSERT INTO {TABLE} ({NAMES}) VALUES ({', '.join('?' * len(USER_COLUMNS))})"
    for batch in user_batches(seed=seed, first_id=1, count=rows, batch_size=batch_size):
        conn.executemany(insert, batch)
    times["rows"] = mark()
    for _, sql in indexes:
        conn.execute(sql)
    times["index"] = mark()
    conn.execute(f"ANALYZE {TABLE}")
    times["analyze"] = mark()
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    times["commit"] = mark()
    return times


def load_postgres(url: str, *, rows: int, seed: int, batch_size: int) -> dict[str, float]:
    """Empty ``users`` in the database at ``url`` and COPY ``rows`` users; stage seconds."""
    times, mark = {}, _marker()
    with psycopg.connect(url) as conn:
        conn.execute("SET TIME ZONE 'UTC'")  # the generator's timestamps are naive UTC
        conn.execute(f"TRUNCATE {TABLE} RESTART IDENTITY")
        rebuild = _drop_postgres_indexes(conn)
        encoding = conn.info.encoding
        with conn.cursor().copy(f"COPY {TABLE} ({NAMES}) FROM STDIN") as copy:
            batches = user_batches(
                seed=seed, first_id=1, count=rows, batch_size=batch_size, copy_text=True
            )
            for batch in batches:
                copy.write(b"".join([line.encode(encoding) for line in batch]))
        times["rows"] = mark()
        for statement in rebuild:
            conn.execute(statement)
        times["index"] = mark()
        conn.execute(f"ANALYZE {TABLE}")
        times["analyze"] = mark()
        conn.execute(f"SELECT setval(pg_get_serial_sequence('{TABLE}', 'id'), {max(rows, 1)})")
    times["commit"] = mark()  # the connection's block committed
    return times


def _drop_postgres_indexes(conn: psycopg.Connection) -> list[str]:
    """Drop every index but the primary key; return the statements that restore them."""
    indexes = conn.execute(
        "SELECT c.relname, pg_get_indexdef(c.oid),"
        " (SELECT k.conname FROM pg_constraint AS k WHERE k.conindid = c.oid)"
        " FROM pg_index AS x JOIN pg_class AS c ON c.oid = x.indexrelid"
        " WHERE x.indrelid = %s::regclass AND NOT x.indisprimary ORDER BY c.relname",
        [TABLE],
    ).fetchall()
    rebuild = []
    for name, definition, constraint in indexes:
        if constraint:
            conn.execute(f'ALTER TABLE {TABLE} DROP CONSTRAINT "{constraint}"')
            add = f'ALTER TABLE {TABLE} ADD CONSTRAINT "{constraint}" UNIQUE USING INDEX "{name}"'
            rebuild += [definition, add]
        else:
            conn.execute(f'DROP INDEX "{name}"')
            rebuild.append(definition)
    return rebuild


def _marker():
    last = [time.perf_counter()]

    def mark() -> float:
        now = time.perf_counter()
        seconds, last[0] = now - last[0], now
        return seconds

    return mark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backend", choices=("sqlite", "postgres"))
    parser.add_argument("target", help="the SQLite users file, or the PostgreSQL users URL")
    parser.add_argument("rows", type=int)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=10_000)
    args = parser.parse_args()
    setup = time.perf_counter() - STARTED
    load = load_sqlite if args.backend == "sqlite" else load_postgres
    times = load(args.target, rows=args.rows, seed=args.seed, batch_size=args.batch_size)
    times = {"setup": setup, **times}
    print(json.dumps({"rows": args.rows, "seconds": times, "total": sum(times.values())}))


if __name__ == "__main__":
    main()
