"""How fast and how lean the reports are: the streamed CSV against raw COPY, and the PDF.

Measures, each in its own child process so that its peak RSS (``ru_maxrss``) is its own:

* **raw COPY**: ``COPY (SELECT * FROM audit_events WHERE <the same rows> ORDER BY
  created_at, seq) TO STDOUT WITH (FORMAT csv)`` read through psycopg and thrown away —
  what the database and the driver alone cost for those rows;
* **CSV export**: ``GET /export/events.csv`` for the same 1,000,000 rows through the Flask
  app (test client, signed in as an auditor, streamed: the whole server-side path of a
  download, without the network), read chunk by chunk and thrown away;
* **PDF report**: ``GET /reports/events.pdf`` for a period holding 10,000 events.

Targets (the issue's): CSV throughput at least half of raw COPY's, measured in the same
run; the export's peak RSS under 150 MB; the 10,000-event PDF under 10 s.

The database must hold at least 1,000,000 ``audit-dashboard seed`` events::

    audit-dashboard seed --database-url postgresql://ADMIN@HOST/DB --events 1000000

Run (a superuser or owner URL; the script gives audit_reader a throw-away password and
reads through it, as the dashboard does)::

    python benchmarks/bench_reports.py --admin-url postgresql://postgres@/audit_bench?host=/run
    python benchmarks/bench_reports.py --embedded /work/bench-pg/pgdata --database audit_bench

This is a script, not a test: it prints figures and exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from _database import add_database_arguments, admin_url_of
from psycopg import sql

from dashboard.db import libpq_url

CSV_ROWS = 1_000_000
PDF_ROWS = 10_000
TARGET_RATIO = 0.5
TARGET_RSS_MB = 150.0
TARGET_PDF_SECONDS = 10.0
READER = "audit_reader"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# --- set-up ---------------------------------------------------------------------------------


def prepare_reader(admin_url: str, role: str = READER) -> str:
    """Give ``role`` (audit_reader) a fresh password and return its URL."""
    password = secrets.token_urlsafe(16)
    with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))
        )
    url = sa.engine.make_url(admin_url).set(username=role, password=password)
    return url.render_as_string(hide_password=False)


def boundaries(admin_url: str) -> dict[str, Any]:
    """Time bounds selecting the first CSV_ROWS events, and PDF_ROWS events mid-table.

    ``to`` is exclusive, so the bounds are the created_at of the first row *after* each
    range; the exact row counts are measured, not assumed (several events share a time).
    """
    with psycopg.connect(libpq_url(admin_url)) as conn:

        def nth(offset: int):
            row = conn.execute(
                "SELECT created_at FROM audit_events ORDER BY created_at, seq OFFSET %s LIMIT 1",
                (offset,),
            ).fetchone()
            return row[0] if row else None

        total = conn.execute("SELECT count(*) FROM audit_events").fetchone()[0]
        if total < CSV_ROWS:
            raise SystemExit(
                f"The database holds {total:,} events; seed at least {CSV_ROWS:,} "
                "(audit-dashboard seed --events 1000000)."
            )
        start = nth(0)
        csv_end = nth(CSV_ROWS)  # None when the table has exactly CSV_ROWS events
        pdf_start = nth(total // 2)
        pdf_end = nth(total // 2 + PDF_ROWS)

        def count(low, high) -> int:
            if high is None:
                return conn.execute(
                    "SELECT count(*) FROM audit_events WHERE created_at >= %s", (low,)
                ).fetchone()[0]
            return conn.execute(
                "SELECT count(*) FROM audit_events WHERE created_at >= %s AND created_at < %s",
                (low, high),
            ).fetchone()[0]

        return {
            "total": total,
            "csv_from": start.isoformat(),
            "csv_to": csv_end.isoformat() if csv_end else None,
            "csv_rows": count(start, csv_end),
            "pdf_from": pdf_start.isoformat(),
            "pdf_to": pdf_end.isoformat(),
            "pdf_rows": count(pdf_start, pdf_end),
        }


# --- children ---------------------------------------------------------------------------------


def child_raw_copy(reader: str, bounds: dict[str, Any]) -> dict[str, Any]:
    query = "SELECT * FROM audit_events WHERE created_at >= {low}"
    values = [bounds["csv_from"]]
    if bounds["csv_to"]:
        query += " AND created_at < {high}"
        values.append(bounds["csv_to"])
    statement = sql.SQL("COPY (" + query + " ORDER BY created_at, seq) TO STDOUT WITH (FORMAT csv)")
    placeholders = {"low": sql.Literal(values[0])}
    if len(values) > 1:
        placeholders["high"] = sql.Literal(values[1])
    with psycopg.connect(libpq_url(reader)) as conn:
        conn.execute("SET statement_timeout = 0")
        started = time.perf_counter()
        size = rows = 0
        with conn.cursor() as cursor, cursor.copy(statement.format(**placeholders)) as copy:
            for data in copy:
                size += len(data)
                rows += 1
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "bytes": size, "rows": rows, "rss_mb": _rss_mb()}


def _app(reader: str, tmp: Path, access_log_url: str | None = None):
    """The app as ``reader``, signed in as an auditor; the access log in PostgreSQL when
    ``access_log_url`` is given (as ``serve`` runs), else in a file under ``tmp``."""
    from dashboard import create_app
    from dashboard.config import Settings
    from dashboard.users import UserStore

    users = tmp / "users.toml"
    password = secrets.token_urlsafe(12)
    UserStore(users).add("bench.auditor", "auditor", password)
    app = create_app(
        Settings(
            database_url=reader,
            secret_key=secrets.token_hex(16),
            users_file=users,
            access_log_url=access_log_url,
            access_log_file=tmp / "access.jsonl",
            access_log_spool_dir=tmp / "spool",
            login_rate_limit="1000 per minute",
        )
    )
    client = app.test_client()
    page = client.get("/login")
    from bs4 import BeautifulSoup

    token = BeautifulSoup(page.text, "html.parser").find("input", attrs={"name": "csrf_token"})
    response = client.post(
        "/login",
        data={"username": "bench.auditor", "password": password, "csrf_token": token["value"]},
    )
    assert response.status_code in (302, 303), response.status_code
    return app, client


def child_export(reader: str, bounds: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-reports-") as tmp:
        _app_object, client = _app(reader, Path(tmp))
        query = f"from={bounds['csv_from']}"
        if bounds["csv_to"]:
            query += f"&to={bounds['csv_to']}"
        query = query.replace("+", "%2B")
        baseline_rss = _rss_mb()
        started = time.perf_counter()
        response = client.get(f"/export/events.csv?{query}", buffered=False)
        assert response.status_code == 200, response.status_code
        size = lines = 0
        for chunk in response.response:
            size += len(chunk)
            lines += chunk.count(b"\r\n")
        response.close()
        seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "bytes": size,
        "rows": lines - 1,
        "rss_mb": _rss_mb(),
        "rss_before_mb": baseline_rss,
    }


def child_pdf(reader: str, bounds: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-reports-") as tmp:
        _app_object, client = _app(reader, Path(tmp))
        query = f"from={bounds['pdf_from']}&to={bounds['pdf_to']}".replace("+", "%2B")
        client.get("/reports")  # fonts and templates loaded before the clock starts
        started = time.perf_counter()
        cpu = time.process_time()
        response = client.get(f"/reports/events.pdf?{query}")
        seconds = time.perf_counter() - started
        assert response.status_code == 200, response.text[:500]
        from pypdf import PdfReader

        pages = len(PdfReader(io.BytesIO(response.data)).pages)
    return {
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu,
        "bytes": len(response.data),
        "pages": pages,
        "rss_mb": _rss_mb(),
    }


CHILDREN = {"raw": child_raw_copy, "export": child_export, "pdf": child_pdf}


def run_child(kind: str, reader: str, bounds: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", kind],
        input=json.dumps({"reader": reader, "bounds": bounds}),
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    if done.returncode != 0:
        raise SystemExit(f"The {kind} measurement failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = add_database_arguments(parser)
    where.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each CSV measurement")
    args = parser.parse_args(argv)

    if args.child:
        payload = json.loads(sys.stdin.read())
        print(json.dumps(CHILDREN[args.child](payload["reader"], payload["bounds"])))
        return 0

    with admin_url_of(args) as admin_url:
        return run(admin_url, args.repeat)


def run(admin_url: str, repeat: int) -> int:
    bounds = boundaries(admin_url)
    reader = prepare_reader(admin_url)
    print(
        f"audit_events: {bounds['total']:,} events; CSV of {bounds['csv_rows']:,} rows, "
        f"PDF of {bounds['pdf_rows']:,} events; {os.cpu_count()} CPUs"
    )
    missed = []
    # Alternate raw and export so that both see the same cache and machine load.
    raws, exports = [], []
    for _ in range(max(1, repeat)):
        raws.append(run_child("raw", reader, bounds))
        exports.append(run_child("export", reader, bounds))
    raw = min(raws, key=lambda result: result["seconds"])
    export = min(exports, key=lambda result: result["seconds"])
    raw_rate = raw["rows"] / raw["seconds"]
    export_rate = export["rows"] / export["seconds"]
    ratio = export_rate / raw_rate
    print(
        f"raw COPY     {raw['rows']:>9,} rows {raw['bytes'] / 1e6:8.1f} MB "
        f"{raw['seconds']:6.2f} s {raw_rate:>10,.0f} rows/s  peak RSS {raw['rss_mb']:6.1f} MB"
    )
    print(
        f"CSV export   {export['rows']:>9,} rows {export['bytes'] / 1e6:8.1f} MB "
        f"{export['seconds']:6.2f} s {export_rate:>10,.0f} rows/s  peak RSS "
        f"{export['rss_mb']:6.1f} MB (app loaded: {export['rss_before_mb']:.1f} MB)"
    )
    print(f"export / raw throughput: {ratio:.2f} (target >= {TARGET_RATIO})")
    if export["rows"] != raw["rows"]:
        missed.append(f"the export wrote {export['rows']:,} rows, raw COPY {raw['rows']:,}")
    if ratio < TARGET_RATIO:
        missed.append(f"throughput ratio {ratio:.2f} < {TARGET_RATIO}")
    if export["rss_mb"] > TARGET_RSS_MB:
        missed.append(f"export peak RSS {export['rss_mb']:.1f} MB > {TARGET_RSS_MB} MB")

    report = run_child("pdf", reader, bounds)
    print(
        f"PDF report   {bounds['pdf_rows']:>9,} events {report['pages']:,} pages "
        f"{report['bytes'] / 1e6:.1f} MB in {report['seconds']:.2f} s "
        f"(CPU {report['cpu_seconds']:.2f} s)  peak RSS {report['rss_mb']:.1f} MB"
    )
    if report["seconds"] > TARGET_PDF_SECONDS:
        missed.append(f"PDF took {report['seconds']:.1f} s > {TARGET_PDF_SECONDS} s")
    load = os.getloadavg()
    print(f"load average during the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for problem in missed:
        print(f"MISSED: {problem}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
