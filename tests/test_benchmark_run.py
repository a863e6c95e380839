"""The newcomer's benchmark (benchmarks/run.py) still runs: a tiny build and every measure.

Not a speed test: the figures are printed, never asserted."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

from conftest import PASSWORDS

ROOT = Path(__file__).resolve().parent.parent


def run_py(cluster, name: str, *options: str) -> str:
    """benchmarks/run.py with the suite's audit_reader; its standard output."""
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--admin-url",
            cluster.admin_url,
            "--reader-url",
            cluster.url(name, "audit_reader", PASSWORDS["audit_reader"]),
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def run_benchmark(cluster, *options: str) -> str:
    """run.py on 2,000 events of a fresh database of its own; its standard output."""
    name = f"audit_run_smoke_{secrets.token_hex(4)}"  # unique on a shared server
    try:
        return run_py(cluster, name, "--events", "2000", "--quick", "--name", name, *options)
    finally:
        cluster.drop_database(name)


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


def test_the_benchmark_measures_datasettes_next_page_on_the_same_rows(cluster, empty_db, tmp_path):
    """Issue 11's JSON goal is "faster than Datasette's next page on the same rows": with
    --datasette the table is copied to SQLite once, Datasette serves the same page, and the
    row says whether both showed the same events; a second run reuses the copy."""
    del empty_db
    copy = tmp_path / "audit copy.sqlite"
    name = f"audit_run_smoke_{secrets.token_hex(4)}"
    try:
        output = run_py(
            cluster, name, "--events", "2000", "--quick", "--name", name,
            "--only", "next", "--datasette", str(copy),
        )  # fmt: skip
        made = copy.stat().st_mtime_ns
        again = run_py(
            cluster, name, "--reuse", name, "--quick", "--only", "next", "--datasette", str(copy)
        )
    finally:
        cluster.drop_database(name)
    for printed in (output, again):
        row = next(line for line in printed.splitlines() if "vs Datasette" in line)
        cells = [cell.strip() for cell in row.split("|")]
        assert cells[2].endswith(" ms") and cells[3].endswith("x Datasette"), row
        assert "the same 50 rows" in cells[5], row
    assert copy.stat().st_mtime_ns == made  # the copy still matched: reused, not rebuilt


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


def test_the_benchmark_compares_two_layouts_request_by_request(cluster, empty_db):
    """``--reuse A --against B``: the same events plain and partitioned, each measure's
    median on both and their ratio (issue 13's "within 10%" is read from this)."""
    del empty_db
    plain, part = (f"audit_run_smoke_{secrets.token_hex(4)}" for _ in range(2))
    try:
        for name, layout in ((plain, ()), (part, ("--partitioned",))):
            build = ("--events", "2000", "--quick", "--name", name, "--only", "record")
            run_py(cluster, name, *build, *layout)
        output = run_py(cluster, plain, "--reuse", plain, "--against", part, "--rounds", "1")
    finally:
        cluster.drop_database(plain)
        cluster.drop_database(part)
    lines = output.splitlines()
    header = next(line for line in lines if line.startswith("measure"))
    assert [cell.strip() for cell in header.split("|")] == ["measure", plain, part, "ratio"]
    for measure in ("record page", "state-at", "search page", "search next page", "JSON next"):
        row = next(line for line in lines if line.startswith(measure) or f" {measure}" in line)
        ratio = float(row.split("|")[3])
        assert ratio > 0, row
