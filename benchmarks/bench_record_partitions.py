"""What each partition adds to one record's read: the record page's rows query
(``WHERE aggregate_id = ... ORDER BY created_at, seq``, which no time bound prunes) for 300
ten-event records, p50, on each database named, planning included (each query sent
unprepared, as the app sends it); and EXPLAIN ANALYZE's planning and execution times.

Compare a plain and a partitioned database of the same events (``benchmarks/run.py``'s,
which hold records ``md5('record' || r)``)::

    python benchmarks/run.py --scale 1M --embedded /tmp/pg                  # audit_run_1000000
    python benchmarks/run.py --scale 1M --embedded /tmp/pg --partitioned    # ..._part
    python benchmarks/bench_record_partitions.py --embedded /tmp/pg \\
        audit_run_1000000 audit_run_1000000_part

(per partition) = (partitioned p50 - plain p50) / partitions. A script, not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import psycopg
import sqlalchemy as sa
from _database import add_database_arguments, admin_url_of

from dashboard.db import libpq_url

RECORD_ROWS = (
    "SELECT event_id, seq, aggregate_id, event_type, payload, metadata, created_at"
    " FROM audit_events WHERE aggregate_id = %s ORDER BY created_at, seq"
)
RECORDS = "SELECT md5('record' || r)::uuid FROM generate_series(100, 99000, 330) AS r"


def measure(url: str) -> str:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        ids = [row[0] for row in conn.execute(RECORDS)]
        partitions = conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'audit_events'::regclass"
        ).fetchone()[0]
        for record in ids[:30]:  # caches warm
            conn.execute(RECORD_ROWS, (record,), prepare=False).fetchall()
        times, rows = [], []
        for record in ids:
            started = time.perf_counter()
            rows.append(len(conn.execute(RECORD_ROWS, (record,), prepare=False).fetchall()))
            times.append(time.perf_counter() - started)
        planning, execution = [], []
        for record in ids[:100]:
            document = conn.execute(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + RECORD_ROWS, (record,), prepare=False
            ).fetchone()[0][0]
            planning.append(document["Planning Time"])
            execution.append(document["Execution Time"])
    return (
        f"{partitions} partitions, {statistics.mean(rows):.1f} rows a record: query p50 "
        f"{statistics.median(times) * 1000:.2f} ms; planning p50 {statistics.median(planning):.3f}"
        f" ms, execution p50 {statistics.median(execution):.3f} ms; "
        f"load {os.getloadavg()[0]:.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_database_arguments(parser)
    parser.add_argument("names", nargs="+", help="databases built by benchmarks/run.py")
    args = parser.parse_args(argv)
    with admin_url_of(args) as admin:
        for name in args.names:
            url = sa.engine.make_url(admin).set(database=name)
            print(f"{name}: {measure(url.render_as_string(hide_password=False))}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
