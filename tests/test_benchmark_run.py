"""The newcomer's benchmark (benchmarks/run.py) still runs: a tiny build and every measure.

Not a speed test: the figures are printed, never asserted."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

from conftest import PASSWORDS

ROOT = Path(__file__).resolve().parent.parent


def run_benchmark(cluster, *options: str) -> str:
    """run.py on 2,000 events of a fresh database of its own; its standard output."""
    name = f"audit_run_smoke_{secrets.token_hex(4)}"  # unique on a shared server
    try:
        done = subprocess.run(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "run.py"),
                "--events",
                "2000",
                "--quick",
                "--admin-url",
                cluster.admin_url,
                "--reader-url",
                cluster.url(name, "audit_reader", PASSWORDS["audit_reader"]),
                "--name",
                name,
                *options,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        cluster.drop_database(name)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_benchmark_builds_and_prints_its_table(cluster, empty_db):
    # empty_db: the audit roles exist with the suite's passwords (they are cluster-wide).
    del empty_db
    output = run_benchmark(cluster)
    lines = output.splitlines()
    assert "2,000 events, " in output
    header = next(line for line in lines if line.startswith("measure"))
    assert [cell.strip() for cell in header.split("|")][:5] == [
        "measure",
        "dashboard",
        "raw PostgreSQL",
        "ratio",
        "load",
    ]
    for measure in ("CSV export", "PDF report", "record page", "state-at", "next page", "healthz"):
        row = next(line for line in lines if measure in line)
        assert "raw" in row.split("|")[3], row  # a ratio was computed


def test_the_partitioned_benchmark_prints_the_partitions_each_plan_reads(cluster, empty_db):
    """Issue 13: the big record spans 24 monthly partitions, and the printed plans show
    the month search pruned to its one partition, the record page reading them all."""
    del empty_db
    output = run_benchmark(cluster, "--partitioned", "--only", "record")
    lines = output.splitlines()
    assert "partitioned by month" in output
    record = next(line for line in lines if "record page, cold" in line)
    assert "its rows in 24 of " in record, record
    start = next(n for n, line in enumerate(lines) if line.startswith("partitions each"))
    every = lines[start]
    listed = lines[start + 1 : lines.index("", start)]
    # "  <statement>: <how many> (<first> .. <last>)"
    read = {line.split(": ")[0].strip(): line.split(": ")[1].split(" (")[0] for line in listed}
    assert read["search page, type + month, first page"] == "1", read
    assert read["its next page"] == "1", read
    record_reads = read["record page and state-at, its events"]
    assert every.endswith(f"(of {record_reads}):"), every
