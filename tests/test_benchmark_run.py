"""The newcomer's benchmark (benchmarks/run.py) still runs: a tiny build and every measure.

Not a speed test: the figures are printed, never asserted."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

from conftest import PASSWORDS

ROOT = Path(__file__).resolve().parent.parent


def test_the_benchmark_builds_and_prints_its_table(cluster, empty_db):
    # empty_db: the audit roles exist with the suite's passwords (they are cluster-wide).
    del empty_db
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
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        cluster.drop_database(name)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert "2,000 events, " in done.stdout
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
