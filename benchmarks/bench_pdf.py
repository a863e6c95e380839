"""How fast and how lean the compliance PDF is, at several sizes: time, CPU and peak memory.

Each size runs ``audit-dashboard report --format pdf`` for a period holding that many events
(taken from the middle of the table), in its own child process, so that its peak RSS
(``ru_maxrss``) and CPU time are its own; the PDF is then read back (page count, and the
text of its last page). Targets (issue 11, on a 2-core machine): 10,000 events in 3 s,
100,000 in 30 s, peak RSS at most 150 MB at any size. On a shared machine compare the CPU
figures: the wall clock also counts the time other processes held the cores.

The database is one ``benchmarks/run.py`` built (or any seeded one)::

    python benchmarks/run.py --events 300k --embedded /tmp/pg --name audit_pdf --only pdf
    python benchmarks/bench_pdf.py --embedded /tmp/pg --database audit_pdf --events 10k,100k

A script, not a test: it prints figures and exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from _database import add_database_arguments, admin_url_of
from bench_reports import prepare_reader
from run import parse_size

from dashboard.db import libpq_url

TARGET_SECONDS = {10_000: 3.0, 100_000: 30.0}
TARGET_RSS_MB = 150.0


def bounds(admin_url: str, events: int) -> tuple[str, str, int]:
    """``from`` and ``to`` (exclusive) around ``events`` events mid-table; the exact count."""
    with psycopg.connect(libpq_url(admin_url)) as conn:
        total = conn.execute("SELECT count(*) FROM audit_events").fetchone()[0]
        if total <= events:
            raise SystemExit(
                f"the database holds {total:,} events; a report of {events:,} needs more"
            )
        start = max(0, (total - events) // 2)
        low, high = (
            conn.execute(
                "SELECT created_at FROM audit_events ORDER BY created_at, seq OFFSET %s LIMIT 1",
                (offset,),
            ).fetchone()[0]
            for offset in (start, start + events)
        )
        count = conn.execute(
            "SELECT count(*) FROM audit_events WHERE created_at >= %s AND created_at < %s",
            (low, high),
        ).fetchone()[0]
    return low.isoformat(), high.isoformat(), count


def child(reader: str, low: str, high: str) -> dict[str, Any]:
    """One report, in this (child) process: its wall and CPU time and peak RSS."""
    from pypdf import PdfReader

    from dashboard.cli import main

    with tempfile.TemporaryDirectory(prefix="bench-pdf-") as tmp:
        os.environ.update(
            {
                "AUDIT_DATABASE_URL": reader,
                "AUDIT_ACCESS_LOG_FILE": str(Path(tmp) / "access.jsonl"),
            }
        )
        output = Path(tmp) / "report.pdf"
        args = ["report", "--from", low, "--to", high, "--format", "pdf"]
        args += ["--output", str(output), "--quiet"]
        loaded_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        started, cpu = time.perf_counter(), time.process_time()
        try:
            main(args, standalone_mode=False)
        finally:
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        reader_pdf = PdfReader(str(output))
        last_page = reader_pdf.pages[-1].extract_text()
        return {
            "seconds": seconds,
            "cpu": cpu,
            "rss_mb": rss_mb,
            "loaded_mb": loaded_mb,
            "pages": len(reader_pdf.pages),
            "bytes": output.stat().st_size,
            "last_page_has_text": "seq" in last_page,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = add_database_arguments(parser)
    where.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--events", default="10k", help="comma-separated sizes, e.g. 10k,100k")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    sizes = [parse_size(size) for size in args.events.split(",")]
    missed = []
    with admin_url_of(args) as admin_url:
        reader = prepare_reader(admin_url)
        for size in sizes:
            low, high, count = bounds(admin_url, size)
            done = subprocess.run(
                [sys.executable, __file__, "--child", reader, low, high],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise SystemExit(f"the {size:,}-event report failed:\n{done.stderr}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            load = os.getloadavg()
            print(
                f"PDF of {count:>7,} events: {result['seconds']:6.2f} s wall, "
                f"{result['cpu']:6.2f} s CPU, peak RSS {result['rss_mb']:6.1f} MB "
                f"(loaded: {result['loaded_mb']:.1f} MB), {result['pages']:,} pages, "
                f"{result['bytes'] / 1e6:.1f} MB; load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
            )
            target = TARGET_SECONDS.get(size)
            if target is not None and result["cpu"] > target:
                missed.append(f"{size:,} events: {result['cpu']:.1f} s CPU > {target} s")
            if result["rss_mb"] > TARGET_RSS_MB:
                missed.append(f"{size:,} events: peak RSS {result['rss_mb']:.1f} MB")
            if not result["last_page_has_text"]:
                missed.append(f"{size:,} events: the last page has no listing text")
    for problem in missed:
        print(f"MISSED: {problem}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
