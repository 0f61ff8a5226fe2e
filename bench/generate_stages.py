"""Benchmark: ``generate_data``'s PostgreSQL load stage by stage, one table at a time.

    DATABASE_URL_USERS=postgres://postgres@127.0.0.1:5432/copy_users ... \
    .venv/bin/python bench/generate_stages.py ROWS

Where the time of ``bench/generate.py --postgres`` goes (docs/performance.md). The three
databases must exist and be migrated; their tables are emptied.

Per table, in one process, sequentially (no overlap between tables or stages):
gen      build the row tuples (the generators, all batches, kept in memory)
gen_cpu  the same stage's CPU seconds (process_time): other processes on the machine do
         not count, so runs on a shared machine compare
enc_wr   encode them with psycopg's text formatter (write_row's own code, no I/O)
enc_own  encode them as COPY text lines in Python (join per row)
copy     COPY FROM STDIN of the pre-encoded bytes (32 KiB chunks), indexes dropped as
         the loader drops them, in the load's transaction
index    re-create the dropped indexes
analyze  ANALYZE
commit   COMMIT
psql     psql \\copy of the same bytes from a file, in one transaction with TRUNCATE,
         indexes in place (the anchor)
"""

import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.getcwd())
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "data_project.settings")
import django

django.setup()

from psycopg import _copy_base  # noqa: E402
from psycopg.adapt import Transformer  # noqa: E402

from api.domain.stores import STORE_NAMES  # noqa: E402
from api.services.generation import Counts  # noqa: E402
from api.services.generation.plan import plan_generation  # noqa: E402
from api.services.generation.runner import _job  # noqa: E402


def own_line(row):
    return "\t".join(
        r"\N" if v is None else ("t" if v is True else "f" if v is False else str(v)) for v in row
    )


def main():
    rows = int(sys.argv[1])
    only = sys.argv[2:] or STORE_NAMES
    plan = plan_generation(counts=Counts.split(rows), seed=1, batch_size=10_000, clear=True)
    for table in STORE_NAMES:
        if table not in only:
            continue
        job = _job(plan, table)
        loader = job.loader
        t = {}
        started, cpu = time.perf_counter(), time.process_time()
        batches = list(job.batches(loader))
        t["gen"] = time.perf_counter() - started
        t["gen_cpu"] = time.process_time() - cpu

        loader.begin(clear=True, first_id=1, stored=0, count=job.count)
        conn = loader.conn
        tx = Transformer(conn)
        fmt = _copy_base.TextFormatter(tx)
        started = time.perf_counter()
        chunks = []
        for batch in batches:
            for row in batch:
                data = fmt.write_row(row)
                if data:
                    chunks.append(bytes(data))
        chunks.append(bytes(fmt.end()))
        t["enc_wr"] = time.perf_counter() - started

        started = time.perf_counter()
        own = []
        for batch in batches:
            text = "\n".join([own_line(row) for row in batch])
            own.append((text + "\n").encode())
        t["enc_own"] = time.perf_counter() - started
        payload = b"".join(chunks)
        assert b"".join(own) == payload, table

        started = time.perf_counter()
        with conn.cursor().copy(loader.copy_sql) as copy:
            for chunk in chunks:
                copy.write(chunk)
        t["copy"] = time.perf_counter() - started
        started = time.perf_counter()
        dropped = list(loader.dropped)
        loader.dropped.clear()
        for definition, constraint in dropped:
            conn.execute(definition)
            if constraint:
                conn.execute(
                    f'ALTER TABLE {loader.relation} ADD CONSTRAINT "{constraint}"'
                    f' UNIQUE USING INDEX "{constraint}"'
                )
        t["index"] = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute(f"ANALYZE {loader.relation}")
        t["analyze"] = time.perf_counter() - started
        started = time.perf_counter()
        conn.commit()
        t["commit"] = time.perf_counter() - started
        loader.close()

        with tempfile.NamedTemporaryFile(suffix=".tsv") as f:
            f.write(payload)
            f.flush()
            url = os.environ[f"DATABASE_URL_{plan.tables[table].alias.upper()}"]
            script = (
                f"BEGIN;\nTRUNCATE {loader.relation};\n"
                f"\\copy {loader.relation} ({', '.join(loader.columns)}) from '{f.name}'\n"
                "COMMIT;\n"
            )
            started = time.perf_counter()
            subprocess.run(["psql", "-q", "-X", url], input=script, text=True, check=True)
            t["psql"] = time.perf_counter() - started
        n = job.count
        parts = "  ".join(f"{k} {v:6.2f}s" for k, v in t.items())
        server = t["copy"] + t["index"] + t["analyze"] + t["commit"]
        print(
            f"{table:9} {n:>8,} rows  {parts}  | server total {server:.2f}s "
            f"({n / server:,.0f} rows/s), MB {len(payload) / 1e6:.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
