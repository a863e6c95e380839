"""How fast the investigation pages answer on a big table, next to raw PostgreSQL.

Measures, through the Flask test client signed in as an auditor (so "server time": the
whole request in-process, no network), the pages the dashboard's users wait for:

* the search page, first page and the next page (keyset cursor), unfiltered and filtered;
* the record page of the busiest record (10,000 events in the demo data);
* the record's state at a time (``/api/aggregates/<id>/state?at=``).

For each it also runs the same SQL directly through psycopg (the raw baseline: what the
database alone costs) and prints the ratio, and prints ``EXPLAIN (ANALYZE, BUFFERS)`` of
every query builder with the index it used. Targets: search p95 < 30 ms, record page
< 300 ms, state-at < 100 ms.

The database must hold ``audit-dashboard seed`` data; 10,000,000 events is the size the
indexes are checked at::

    audit-dashboard seed --database-url postgresql://ADMIN@HOST/DB --events 10000000

Run (a superuser or owner URL; the script gives audit_reader a throw-away password and
reads through it, as the dashboard does)::

    python benchmarks/bench_pages.py --admin-url postgresql://postgres@/audit_bench?host=/run
    python benchmarks/bench_pages.py --embedded /work/bench-pg/pgdata --database audit_bench

This is a script, not a test: it prints figures and exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from _database import add_database_arguments, admin_url_of
from bench_reports import prepare_reader
from bs4 import BeautifulSoup
from psycopg.types.json import Jsonb

from dashboard import create_app, queries
from dashboard.config import Settings
from dashboard.db import libpq_url, make_engine
from dashboard.filters import Cursor, EventFilter
from dashboard.users import UserStore

TARGETS_MS = {"search": 30.0, "record": 300.0, "state": 100.0}


@dataclass
class Timing:
    name: str
    samples_ms: list[float]

    @property
    def p50(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def p95(self) -> float:
        ordered = sorted(self.samples_ms)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def measure(name: str, action: Callable[[], Any], runs: int, warmup: int = 3) -> Timing:
    for _ in range(warmup):
        action()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return Timing(name, samples)


# --- set-up ---------------------------------------------------------------------------------


def find_targets(admin_url: str) -> dict[str, Any]:
    """The busiest record, a mid-history time of it, and a busy actor; from the data."""
    with psycopg.connect(libpq_url(admin_url)) as conn:
        total = conn.execute(
            "SELECT greatest(reltuples, 0)::bigint FROM pg_class "
            "WHERE oid = 'public.audit_events'::regclass"
        ).fetchone()[0]
        # One GROUP BY over the table (an index-only scan of audit_events_aggregate_idx):
        # a few seconds at 10M rows, set-up only.
        busiest, count = conn.execute(
            "SELECT aggregate_id, count(*) FROM audit_events GROUP BY 1 ORDER BY 2 DESC LIMIT 1"
        ).fetchone()
        first, last = conn.execute(
            "SELECT min(created_at), max(created_at) FROM audit_events WHERE aggregate_id = %s",
            (busiest,),
        ).fetchone()
        actor = conn.execute(
            "SELECT metadata->>'actor' FROM audit_events WHERE metadata->>'actor' LIKE '%%@%%' "
            "ORDER BY created_at DESC, seq DESC LIMIT 1"
        ).fetchone()[0]
        newest = conn.execute("SELECT max(created_at) FROM audit_events").fetchone()[0]
    return {
        "events": total,
        "busiest": busiest,
        "busiest_events": count,
        "mid": first + (last - first) / 2,
        "actor": actor,
        "newest": newest,
    }


def signed_in_client(app, name: str, password: str):
    client = app.test_client()
    page = BeautifulSoup(client.get("/login").text, "html.parser")
    token = page.find("input", attrs={"name": "csrf_token"})["value"]
    response = client.post(
        "/login", data={"username": name, "password": password, "csrf_token": token}
    )
    if response.status_code not in (302, 303):
        raise SystemExit(f"sign-in failed: {response.status_code}")
    return client


def get_ok(client, url: str):
    response = client.get(url)
    if response.status_code != 200:
        raise SystemExit(f"{url} answered {response.status_code}: {response.text[:300]}")
    return response


# --- raw baseline ---------------------------------------------------------------------------


def raw_sql(statement: sa.Select, dialect) -> tuple[str, dict[str, Any]]:
    """The builder's SQL and values, as psycopg takes them directly."""
    compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    params = {
        name: Jsonb(value) if isinstance(value, dict | list) else value
        for name, value in compiled.params.items()
    }
    return str(compiled), params


def raw_runner(conn: psycopg.Connection, statement: sa.Select, dialect) -> Callable[[], Any]:
    sql, params = raw_sql(statement, dialect)

    def run():
        with conn.cursor() as cursor:
            cursor.execute(sql, params)  # type: ignore[arg-type]  # compiled by SQLAlchemy
            return cursor.fetchall()

    return run


# --- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_database_arguments(parser)
    parser.add_argument("--runs", type=int, default=50, help="measured requests per page")
    args = parser.parse_args(argv)

    with admin_url_of(args) as admin_url:
        return run(admin_url, args.runs)


def run(admin_url: str, runs: int) -> int:
    targets = find_targets(admin_url)
    print(
        f"audit_events: ~{targets['events']:,} events; busiest record {targets['busiest']} "
        f"({targets['busiest_events']:,} events); actor {targets['actor']}"
    )
    reader = prepare_reader(admin_url)
    with tempfile.TemporaryDirectory(prefix="bench-pages-") as tmp:
        users = Path(tmp) / "users.toml"
        password = secrets.token_urlsafe(12)
        UserStore(users).add("bench.auditor", "auditor", password)
        app = create_app(
            Settings(
                database_url=reader,
                secret_key=secrets.token_hex(16),
                users_file=users,
                access_log_file=Path(tmp) / "access.jsonl",
            )
        )
        client = signed_in_client(app, "bench.auditor", password)
        return run_measurements(app, client, reader, targets, runs)


def run_measurements(app, client, reader: str, targets: dict[str, Any], runs: int) -> int:
    busiest = targets["busiest"]
    mid = targets["mid"].astimezone(UTC)
    week_end = targets["newest"]
    week = (week_end - timedelta(days=7)).isoformat()
    table = app.extensions["audit"].probe()

    # --- the pages ------------------------------------------------------------------------------
    searches = {
        "search, newest first": "/search?order=desc",
        "search, one type": "/search?type=USER_EMAIL_CHANGED",
        "search, actor": f"/search?actor={targets['actor']}",
        "search, type + 7 days (facets)": (
            f"/search?type=ORDER_CREATED&from={week}&to={week_end.isoformat()}"
        ),
        "api/events, newest first": "/api/events?limit=50",
    }
    timings: list[tuple[str, Timing, str]] = []
    for label, url in searches.items():
        url = url.replace("+", "%2B")
        timings.append(
            (
                label + " — first page",
                measure(label, lambda u=url: get_ok(client, u), runs),
                "search",
            )
        )
        if url.startswith("/api/"):
            cursor = get_ok(client, url).json["next_cursor"]
            following = f"{url}&cursor={cursor}"
        else:
            older = BeautifulSoup(get_ok(client, url).text, "html.parser").find("a", class_="older")
            if older is None:  # one page only
                continue
            following = older["href"]
        timings.append(
            (
                label + " — next page",
                measure(label, lambda u=following: get_ok(client, u), runs),
                "search",
            )
        )

    # The record pages, cold (the folded-history cache emptied before each request: the
    # record is read and folded in full) and warm (folded by an earlier request).
    def cold(url):
        def run():
            app.extensions.pop("audit_history_cache", None)
            return get_ok(client, url)

        return run

    def warm(url):
        return lambda: get_ok(client, url)

    mid_at = mid.isoformat().replace("+", "%2B")
    record = f"/aggregates/{busiest}"
    older_page = BeautifulSoup(get_ok(client, record).text, "html.parser").find("a", class_="older")
    pages = {
        f"record page ({targets['busiest_events']:,} events)": (record, "record"),
        "record page, state at mid-history": (f"{record}?at={mid_at}", "record"),
        "record page, second timeline page": (older_page["href"], "record"),
        "state at mid-history (API)": (f"/api/aggregates/{busiest}/state?at={mid_at}", "state"),
        "state now (API)": (f"/api/aggregates/{busiest}/state", "state"),
    }
    record_runs = max(5, runs // 4)
    for label, (url, kind) in pages.items():
        timings.append((label + ", cold", measure(label, cold(url), record_runs), kind))
        timings.append((label + ", warm", measure(label, warm(url), runs), kind))

    # --- the builders' SQL: raw psycopg and EXPLAIN ---------------------------------------------
    engine = make_engine(reader, pool_size=1)
    dialect = engine.dialect
    start, end = datetime.fromisoformat(week), week_end
    first_page = get_ok(client, "/api/events?limit=50").json["next_cursor"]
    cursor = Cursor.decode(first_page)
    builders = {
        "search, newest first": queries.select_events(EventFilter(), table, limit=51),
        "search, newest first, next page": queries.select_events(
            EventFilter(), table, cursor=cursor, limit=51
        ),
        "search, one type": queries.select_events(
            EventFilter(types=("USER_EMAIL_CHANGED",)), table, limit=51
        ),
        "search, actor": queries.select_events(
            EventFilter(actor=targets["actor"]), table, limit=51
        ),
        "search, type + 7 days": queries.select_events(
            EventFilter(types=("ORDER_CREATED",), time_from=start, time_to=end), table, limit=51
        ),
        "facet by type, type + 7 days": queries.select_type_facet(
            EventFilter(types=("ORDER_CREATED",), time_from=start, time_to=end)
        ),
        "facet by actor, 7 days": queries.select_actor_facet(
            EventFilter(time_from=start, time_to=end)
        ),
        "search, payload field": queries.select_events(
            EventFilter(payload_path=("address", "city"), payload_value="Kraków"), table, limit=51
        ),
        "event types (skip scan)": queries.select_event_types(),
        "declared kinds (skip scan)": queries.select_declared_kinds(),
        # What the record pages run to fold a record (slim metadata, see event_columns).
        "record events (replay)": queries.select_aggregate_events(busiest, table, slim=True),
        "record events until mid (state at)": queries.select_aggregate_events(
            busiest, table, until=mid, slim=True
        ),
        "record summary": queries.select_aggregate_summary(busiest),
        "as-of: USER ids": queries.select_kind_aggregates("USER", mid, limit=51),
        "request events": queries.select_request_events(_a_request_id(engine), table),
    }
    raw: dict[str, Timing] = {}
    with psycopg.connect(libpq_url(reader)) as conn:
        conn.execute("SET statement_timeout = '30s'")
        for label, statement in builders.items():
            raw[label] = measure(label, raw_runner(conn, statement, dialect), max(5, runs // 2))

    print("\nPages (Flask test client, server time) vs the same SQL through psycopg")
    print(f"{'page':58} {'p50 ms':>8} {'p95 ms':>8}  {'target':>7}")
    failures = 0
    for label, timing, kind in timings:
        target = TARGETS_MS[kind]
        ok = timing.p95 < target
        failures += not ok
        print(
            f"{label:58} {timing.p50:8.1f} {timing.p95:8.1f}  < {target:5.0f} "
            f"{'ok' if ok else 'MISSED'}"
        )
    baseline = {
        "search, newest first — first page": "search, newest first",
        "search, newest first — next page": "search, newest first, next page",
        "search, one type — first page": "search, one type",
        "search, actor — first page": "search, actor",
        "search, type + 7 days (facets) — first page": "search, type + 7 days",
        "api/events, newest first — first page": "search, newest first",
        "api/events, newest first — next page": "search, newest first, next page",
        f"record page ({targets['busiest_events']:,} events), cold": "record events (replay)",
        "state at mid-history (API), cold": "record events (replay)",
        "state now (API), cold": "record events (replay)",
    }
    print("\nRatio page p95 / raw SQL p95 (the dashboard's own cost above the database)")
    for label, timing, _ in timings:
        if label in baseline:
            base = raw[baseline[label]]
            print(f"{label:58} {timing.p95:8.1f} / {base.p95:7.1f} = {timing.p95 / base.p95:5.1f}x")

    print("\nQuery builders: raw psycopg p95, EXPLAIN (ANALYZE, BUFFERS) time, index used")
    with engine.connect() as conn:
        conn.execute(sa.text("SET statement_timeout = '60s'"))
        for label, statement in builders.items():
            plan = queries.explain(conn, statement, analyze=True)
            indexes = ", ".join(queries.indexes_in_plan(plan)) or "(no index: " + _top(plan) + ")"
            executed = next((line for line in plan if line.startswith("Execution Time")), "")
            print(f"{label:40} raw p95 {raw[label].p95:8.1f} ms  {executed:28} {indexes}")
        conn.rollback()
    print("\nPlans:")
    with engine.connect() as conn:
        for label, statement in builders.items():
            print(f"-- {label}")
            for line in queries.explain(conn, statement, analyze=True):
                print("   " + line)
        conn.rollback()
    engine.dispose()
    print(json.dumps({label: round(t.p95, 1) for label, t, _ in timings}, ensure_ascii=False))
    return 1 if failures else 0


def _a_request_id(engine) -> str:
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT metadata->>'request_id' FROM audit_events "
                "ORDER BY created_at DESC, seq DESC LIMIT 1"
            )
        ).scalar() or str(uuid.uuid4())


def _top(plan: list[str]) -> str:
    return plan[0].split("(")[0].strip() if plan else "?"


if __name__ == "__main__":
    sys.exit(main())
