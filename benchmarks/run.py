"""One benchmark a newcomer can run: the dashboard against raw PostgreSQL, same run.

Builds a database of ``--events`` events on the server (``INSERT ... SELECT
generate_series``: realistic event types, actors and kinds, one record in ten "legacy"
without ``metadata.aggregate_type``, two years of time (2024-2025), among them one
10,000-event record, so that partitioned by month it spans 24 partitions), then
prints ONE table: each measure with the dashboard's figure, raw PostgreSQL's figure for the
same rows in the same run, their ratio and the load average while it ran::

    python benchmarks/run.py --events 1000000                      # embedded, temp dir
    python benchmarks/run.py --events 1000000 --embedded /tmp/pg   # embedded, kept
    python benchmarks/run.py --events 1000000 --admin-url postgresql://postgres@/postgres?host=/run
    python benchmarks/run.py --reuse postgresql://postgres@/audit_run_1000000?host=/run
    python benchmarks/run.py --scale 100k,1M                       # growth between sizes
    python benchmarks/run.py --events 1M --partitioned             # audit_events by month

With ``--partitioned`` (or ``--reuse`` of a partitioned database) it also prints which
partitions the plans of the search page (first and next), the record page and state-at
read: partition pruning, or its absence, in the benchmark's own output.

Two layouts of the same events (built with the same ``--events``, one ``--partitioned``)
are compared request by request in turn, so that a busy moment of the machine weighs on
both alike, with ``--against``::

    python benchmarks/run.py --admin-url URL --reuse audit_run_10000000 \
        --against audit_run_10000000_part --rounds 25

The measures (issue 11's table, without the search page):

* CSV export of one month (``GET /export/events.csv``) vs ``COPY (SELECT the same columns)
  TO STDOUT`` of the same rows; ratio = export throughput / COPY throughput;
* PDF report of 10,000 events (``GET /reports/events.pdf``) vs reading those rows;
* the 10,000-event record, cold (a fresh history cache each time): its page
  (``GET /aggregates/<id>``) and its state half-way (``GET /api/aggregates/<id>/state?at=``)
  vs reading its rows in order;
* JSON next page (``GET /api/events?type=...&cursor=...``, p50 and p95) vs the same keyset
  query; with ``--datasette FILE``, also vs Datasette's next page of the same rows on a
  SQLite copy of the table (benchmarks/_datasette.py), issue 11's reference for it;
* the search page (HTML) for one type over one month: its first page (counts reused, as
  for a minute after the first load), its first page with the counts made anew, and its
  next page, p50 and p95, vs the page's own rows query; with the SQL statements each
  request sends (every psycopg execute: reader, counts and access log);
* ``/healthz`` requests a second, one client in-process, vs ``SELECT 1`` round trips.

The app runs in this process through Flask's test client as audit_reader (no network), so
the figures are the server-side cost of each request; its access log is written to
PostgreSQL as audit_access_logger, as ``serve`` runs. A script, not a test (a smoke test
runs it with ``--events 2000 --quick``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg
import sqlalchemy as sa
from _database import admin_url_of
from bench_reports import _app, prepare_reader
from psycopg import sql

from dashboard.access_log.sinks import PostgresSink
from dashboard.db import libpq_url
from dashboard.reports.csv_export import EXPORT_RANDOM_PAGE_COST
from dashboard.schema import apply_schema

BIG_RECORD = uuid.UUID("00000000-0000-4000-8000-00000000b16e")
BIG_RECORD_EVENTS = 10_000
PDF_EVENTS = 10_000
# Two years, so that the big record (spread evenly over them like every other record)
# spans 24 monthly partitions: issue 13's record page "on a 10,000-event record spread over
# 24 partitions". Every month holds many records: a month holding only a few misleads the
# planner's per-partition estimates (see docs/scale-out.md).
START = datetime(2024, 1, 1, tzinfo=UTC)
SPAN = datetime(2026, 1, 1, tzinfo=UTC) - START
# The month the search, its next page and the CSV export read: one partition.
MONTH = (datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 6, 1, tzinfo=UTC))
EVENTS_PER_RECORD = 10
NEXT_PAGE_TYPE = "ACCOUNT_UPDATED"

# One record in EVENTS_PER_RECORD events on average; its first event is its create, the
# others spread over the year. Kinds USER/ACCOUNT/ORDER; one record in ten is "legacy"
# (no aggregate_type); actors skewed (a few busy ones, a long tail of 5,000).
GENERATE = """
INSERT INTO audit_events (aggregate_id, event_type, payload, metadata, created_at)
SELECT md5('record' || r)::uuid,
       CASE WHEN i <= %(records)s THEN kind || '_CREATED'
            WHEN i %% 500 = 7 THEN kind || '_DELETED'
            ELSE kind || (ARRAY['_UPDATED', '_UPDATED', '_UPDATED', '_VIEWED', '_SHIPPED',
                                '_ADJUSTED'])[1 + (i / 7) %% 6] END,
       jsonb_build_object('status', (ARRAY['new', 'active', 'paid', 'closed'])[1 + i %% 4],
                          'amount', (i * 37) %% 10000, 'note', 'event ' || i,
                          'email', 'person' || r || '@example.org'),
       jsonb_build_object('actor', 'user' || floor(5000 * power((abs(hashint4(i)) %% 10000)
                                                                / 10000.0, 3))::int,
                          'ip', '10.' || (i %% 250) || '.' || (r %% 250) || '.1',
                          'request_id', 'req-' || (i / 3))
         || CASE WHEN r %% 10 = 0 THEN '{}'::jsonb
                 ELSE jsonb_build_object('aggregate_type', kind) END,
       %(start)s::timestamptz + (i::float8 / %(events)s) * %(span)s::interval
FROM generate_series(1, %(events)s) AS i,
     LATERAL (SELECT i %% %(records)s AS r) AS record,
     LATERAL (SELECT (ARRAY['USER', 'ACCOUNT', 'ORDER'])[1 + r %% 3] AS kind) AS kinds
"""
GENERATE_BIG = """
INSERT INTO audit_events (aggregate_id, event_type, payload, metadata, created_at)
SELECT %(id)s, CASE WHEN j = 1 THEN 'ORDER_CREATED' ELSE 'ORDER_UPDATED' END,
       jsonb_build_object('status', (ARRAY['new', 'active', 'paid'])[1 + j %% 3],
                          'line_' || (j %% 200), j, 'total', j * 3),
       jsonb_build_object('actor', 'bulk.loader', 'aggregate_type', 'ORDER'),
       %(start)s::timestamptz + ((j - 1)::float8 / %(n)s) * %(span)s::interval
FROM generate_series(1, %(n)s) AS j
"""


# --- building the data ----------------------------------------------------------------------


def parse_size(text: str) -> int:
    """``2000``, ``100k``, ``1M``, ``10m`` -> an event count."""
    text = text.strip().lower().replace("_", "").replace(",", "")
    factor = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    number = text[:-1] if factor > 1 else text
    try:
        value = int(float(number) * factor)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 100k, 1M)") from None
    if value < 1000:
        raise argparse.ArgumentTypeError(f"at least 1000 events, got {value}")
    return value


def big_record_size(events: int) -> int:
    return min(BIG_RECORD_EVENTS, max(100, events // 4))


def build(
    server_admin: str,
    events: int,
    say: Callable[[str], None],
    name: str | None,
    partitioned: bool = False,
    citus: bool = False,
) -> str:
    """A fresh database (``audit_run_<events>`` unless named) on the server; its admin URL.
    ``partitioned``: audit_events by month (``init-db --partition monthly``) from the
    data's first month on to now. ``citus``: the database of ``server_admin`` itself, a Citus
    coordinator's with its workers added and no audit_events yet (``init-db --citus``)."""
    if citus:
        url = server_admin
        with psycopg.connect(libpq_url(url)) as conn:
            if conn.execute("SELECT to_regclass('public.audit_events')").fetchone()[0]:
                raise SystemExit("--citus needs a Citus database without audit_events yet")
        layout: dict[str, Any] = {"citus": True}
    else:
        name = name or f"audit_run_{events}" + ("_part" if partitioned else "")
        with psycopg.connect(libpq_url(server_admin), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        url = sa.engine.make_url(server_admin).set(database=name)
        url = url.render_as_string(hide_password=False)
        layout = {"partition": "monthly", "partition_start": START.date()} if partitioned else {}
    apply_schema(url, **layout)
    started = time.perf_counter()
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        # Indexes are built once after the rows are in: much faster than maintained per row.
        indexes = [
            row[0]
            for row in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'audit_events' "
                "AND indexname NOT IN ('audit_events_pkey', 'audit_events_seq_key')"
            )
        ]
        for index in indexes:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(index)))
        big = big_record_size(events)
        span = f"{int(SPAN.total_seconds())} seconds"
        conn.execute(
            GENERATE,
            {
                "events": events - big,
                "records": max(1, (events - big) // EVENTS_PER_RECORD),
                "start": START,
                "span": span,
            },
        )
        conn.execute(GENERATE_BIG, {"id": BIG_RECORD, "n": big, "start": START, "span": span})
    say(f"  {events:,} events written in {time.perf_counter() - started:.1f} s; indexing")
    apply_schema(url, **layout)  # idempotent: recreates the indexes
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE audit_events")
    say(f"  built in {time.perf_counter() - started:.1f} s")
    return url


# --- measuring ------------------------------------------------------------------------------


@dataclass
class Row:
    measure: str
    dashboard: float
    raw: float
    unit: str  # "s", "ms", "MB/s", "req/s"
    load: float
    note: str = ""
    versus: str = "raw"  # what the "raw" column holds, for the ratio

    @property
    def ratio(self) -> str:
        if not self.raw or not self.dashboard:
            return "-"
        if self.unit in ("MB/s", "req/s"):
            return f"{self.dashboard / self.raw:.0%} of {self.versus}"
        return f"{self.dashboard / self.raw:.2f}x {self.versus}"


def _figure(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "s":
        return f"{value:.2f} s" if value >= 0.1 else f"{value * 1000:.1f} ms"
    return f"{value:,.1f} {unit}" if value < 100 else f"{value:,.0f} {unit}"


def _timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _best(action: Callable[[], Any], repeat: int) -> float:
    return min(_timed(action) for _ in range(repeat))


def _p50(action: Callable[[], Any], repeat: int) -> float:
    return statistics.median(_timed(action) for _ in range(repeat))


def _p50_p95(action: Callable[[], Any], repeat: int) -> tuple[float, float]:
    return _median_p95([_timed(action) for _ in range(repeat)])


def _median_p95(times: list[float]) -> tuple[float, float]:
    times = sorted(times)
    return statistics.median(times), times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]


@contextmanager
def counted_statements() -> Iterator[list[str]]:
    """Every statement psycopg sends in the block (the pool's pings and the driver-level
    cursors included) and every one the access log sends through libpq's asynchronous
    calls (its entries and sign-out checks), as tests/test_statements_per_page.py counts
    them."""
    texts: list[str] = []
    saved: list[tuple[type, str, Any]] = []
    for cls, name in (
        (psycopg.Cursor, "execute"),
        (psycopg.ServerCursor, "execute"),
        (PostgresSink, "_send"),
    ):
        real = getattr(cls, name)
        saved.append((cls, name, real))

        def counted(target, query, *args, _real=real, **kwargs):
            texts.append(query.decode() if isinstance(query, bytes) else str(query))
            return _real(target, query, *args, **kwargs)

        setattr(cls, name, counted)
    try:
        yield texts
    finally:
        for cls, name, real in saved:
            setattr(cls, name, real)


class Bench:
    def __init__(
        self,
        admin: str,
        quick: bool,
        reader: str | None,
        logger: str | None = None,
        datasette: Path | None = None,
    ):
        self.admin = admin
        self.quick = quick
        self.datasette = datasette
        # Without a reader URL, audit_reader gets a fresh password (roles are cluster-wide:
        # never do that on a server others are using; pass --reader-url there).
        self.reader = reader or prepare_reader(admin)
        if not reader:
            logger = prepare_reader(admin, "audit_access_logger")
        self.tmp = tempfile.TemporaryDirectory(prefix="bench-run-")
        self.app, self.client = _app(self.reader, Path(self.tmp.name), access_log_url=logger)
        self.raw = psycopg.connect(libpq_url(self.reader), autocommit=True)
        self.raw.execute("SET statement_timeout = 0")
        # The export's planner setting and the dashboard's "no JIT" (dashboard.db), so the
        # raw figures come from the same plans and pay no compilation the app does not.
        self.raw.execute(
            sql.SQL("SET random_page_cost = {}").format(sql.Literal(EXPORT_RANDOM_PAGE_COST))
        )
        self.raw.execute("SET jit = off")

    def close(self) -> None:
        self.raw.close()
        self.tmp.cleanup()

    def get(self, path: str, **args: Any) -> Any:
        url = path + ("?" + urlencode(args, doseq=True) if args else "")
        response = self.client.get(url, buffered=False)
        size = 0
        for chunk in response.response:
            size += len(chunk)
        response.close()
        assert response.status_code == 200, (url, response.status_code)
        return size

    def nth_time(self, offset: int) -> datetime:
        return self.raw.execute(
            "SELECT created_at FROM audit_events ORDER BY created_at, seq OFFSET %s LIMIT 1",
            (offset,),
        ).fetchone()[0]

    # Each returns one Row.

    def csv_export(self) -> Row:
        low, high = MONTH
        copy = sql.SQL(
            "COPY (SELECT created_at, seq, event_id, aggregate_id,"
            " metadata ->> 'aggregate_type', event_type, metadata ->> 'actor',"
            " metadata ->> 'ip', metadata ->> 'reason', metadata ->> 'request_id',"
            " payload, metadata FROM audit_events"
            " WHERE created_at >= {low} AND created_at < {high} ORDER BY created_at, seq)"
            " TO STDOUT WITH (FORMAT csv, HEADER true)"
        ).format(low=sql.Literal(low), high=sql.Literal(high))
        raw_size = 0

        def raw_copy() -> None:
            nonlocal raw_size
            raw_size = 0
            with self.raw.cursor() as cursor, cursor.copy(copy) as stream:
                for data in stream:
                    raw_size += len(data)

        size = 0

        def export() -> None:
            nonlocal size
            size = self.get(
                "/export/events.csv", **{"from": low.isoformat(), "to": high.isoformat()}
            )

        repeat = 1 if self.quick else 2
        raw_seconds = _best(raw_copy, repeat)
        seconds = _best(export, repeat)
        rows = self.raw.execute(
            "SELECT count(*) FROM audit_events WHERE created_at >= %s AND created_at < %s",
            (low, high),
        ).fetchone()[0]
        return Row(
            "CSV export, one month",
            size / seconds / 1e6,
            raw_size / raw_seconds / 1e6,
            "MB/s",
            os.getloadavg()[0],
            f"{rows:,} rows, {_figure(seconds, 's')} vs COPY {_figure(raw_seconds, 's')}",
        )

    def pdf(self, events: int) -> Row:
        wanted = min(PDF_EVENTS, max(50, events // 10))
        middle = events // 2
        low, high = self.nth_time(middle), self.nth_time(middle + wanted)

        def rows() -> None:
            self.raw.execute(
                "SELECT * FROM audit_events WHERE created_at >= %s AND created_at < %s"
                " ORDER BY created_at, seq",
                (low, high),
            ).fetchall()

        self.get("/reports")  # fonts and templates loaded before the clock starts
        raw_seconds = _best(rows, 2)
        seconds = _timed(
            lambda: self.get(
                "/reports/events.pdf", **{"from": low.isoformat(), "to": high.isoformat()}
            )
        )
        return Row(f"PDF report, {wanted:,} events", seconds, raw_seconds, "s", os.getloadavg()[0])

    def _record_rows(self) -> None:
        self.raw.execute(
            "SELECT * FROM audit_events WHERE aggregate_id = %s ORDER BY created_at, seq",
            (BIG_RECORD,),
        ).fetchall()

    def _cold(self, path: str, **args: Any) -> Callable[[], None]:
        def run() -> None:
            self.app.extensions.pop("audit_history_cache", None)
            self.get(path, **args)

        return run

    def record_page(self, events: int) -> Row:
        repeat = 3 if self.quick else 7
        raw_seconds = _p50(self._record_rows, repeat)
        seconds = _p50(self._cold(f"/aggregates/{BIG_RECORD}"), repeat)
        spans, partitions = self.raw.execute(
            "SELECT count(DISTINCT tableoid),"
            " (SELECT count(*) FROM pg_inherits WHERE inhparent = 'audit_events'::regclass)"
            " FROM audit_events WHERE aggregate_id = %s",
            (BIG_RECORD,),
        ).fetchone()
        return Row(
            f"{big_record_size(events):,}-event record page, cold",
            seconds * 1000,
            raw_seconds * 1000,
            "ms",
            os.getloadavg()[0],
            f"its rows in {spans} of {partitions} partitions" if partitions else "",
        )

    def state_at(self, events: int) -> Row:
        repeat = 3 if self.quick else 7
        at = (START + SPAN / 2).isoformat()
        raw_seconds = _p50(self._record_rows, repeat)
        seconds = _p50(self._cold(f"/api/aggregates/{BIG_RECORD}/state", at=at), repeat)
        return Row(
            f"{big_record_size(events):,}-event record state-at, cold",
            seconds * 1000,
            raw_seconds * 1000,
            "ms",
            os.getloadavg()[0],
            "raw: all its rows",
        )

    def next_page(self) -> list[Row]:
        first = self.client.get("/api/events?" + urlencode({"type": NEXT_PAGE_TYPE}))
        assert first.status_code == 200, first.status_code
        cursor = first.json["next_cursor"]
        assert cursor, "the first page has no next page"
        last = first.json["events"][-1]
        limit = len(first.json["events"])
        position = self.raw.execute(
            "SELECT created_at, seq FROM audit_events WHERE event_id = %s", (last["event_id"],)
        ).fetchone()

        def raw_page() -> None:
            self.raw.execute(
                "SELECT event_id, aggregate_id, event_type, payload, metadata, created_at, seq"
                " FROM audit_events WHERE event_type = %s AND (created_at, seq) < (%s, %s)"
                " ORDER BY created_at DESC, seq DESC LIMIT %s",
                (NEXT_PAGE_TYPE, *position, limit + 1),
            ).fetchall()

        repeat = 20 if self.quick else 200
        raw_seconds, raw_p95 = _p50_p95(raw_page, repeat)
        seconds, p95 = _p50_p95(
            lambda: self.get("/api/events", type=NEXT_PAGE_TYPE, cursor=cursor), repeat
        )
        with counted_statements() as sent:
            self.get("/api/events", type=NEXT_PAGE_TYPE, cursor=cursor)
        rows = [
            Row(
                "JSON next page (p50)",
                seconds * 1000,
                raw_seconds * 1000,
                "ms",
                os.getloadavg()[0],
                f"p95 {p95 * 1000:.1f} ms vs {raw_p95 * 1000:.1f} ms; {len(sent)} statements",
            )
        ]
        if self.datasette is not None:
            rows.append(self.next_page_against_datasette(cursor, limit, repeat))
        return rows

    def next_page_against_datasette(self, cursor: str, limit: int, repeat: int) -> Row:
        """Datasette's next page of the same type on a SQLite copy of the table (made once,
        then reused), in the "raw" column, against the dashboard's JSON next page: in turn,
        a third of the requests at a time, so that both come from the same minutes;
        Datasette in a process of its own."""
        import _datasette

        version = _datasette.available()
        if version is None:
            return Row(
                "  vs Datasette's next page", 0, 0, "ms", os.getloadavg()[0],
                "not measured: pip install -e '.[bench]' brings Datasette",
            )  # fmt: skip
        copy = _datasette.sqlite_copy(self.raw, self.datasette, _say)
        path = "/api/events?" + urlencode({"type": NEXT_PAGE_TYPE, "cursor": cursor})
        ours: list[float] = []
        theirs: list[float] = []
        for _ in range(3):
            times, shown = _datasette.next_page_in_child(
                copy, NEXT_PAGE_TYPE, limit, max(1, repeat // 3)
            )
            theirs.extend(times)
            ours.extend(_timed(lambda: self.get(path)) for _ in range(max(1, repeat // 3)))
        page = self.client.get(path)
        same = [event["event_id"] for event in page.json["events"]] == shown
        (seconds, p95), (their_seconds, their_p95) = _median_p95(ours), _median_p95(theirs)
        return Row(
            "  vs Datasette's next page (p50)",
            seconds * 1000,
            their_seconds * 1000,
            "ms",
            os.getloadavg()[0],
            f"raw column: Datasette {version}, SQLite copy, no count/facets, in turn;"
            f" p95 {p95 * 1000:.1f} vs {their_p95 * 1000:.1f} ms;"
            f" {'the same' if same else 'NOT the same'} {len(shown)} rows",
            versus="Datasette",
        )

    def search_pages(self) -> list[Row]:
        """The search page for one type over one month: first page, first page counted
        anew, next page; each against the page's own rows query."""
        low, high = MONTH
        limit = 10 if self.quick else 50  # the page's default; the smoke test has few rows
        args = {
            "type": NEXT_PAGE_TYPE,
            "from": low.isoformat(),
            "to": high.isoformat(),
            "limit": str(limit),
        }
        first = self.client.get("/search?" + urlencode(args))
        assert first.status_code == 200, first.status_code
        from bs4 import BeautifulSoup

        page = BeautifulSoup(first.text, "html.parser")
        older = page.find("a", class_="older")
        last_id = page.find("table", class_="events").find("tbody").find_all("tr")[-1]
        position = self.raw.execute(
            "SELECT created_at, seq FROM audit_events WHERE event_id = %s",
            (last_id["data-event-id"],),
        ).fetchone()

        def raw_rows(keyset: bool) -> Callable[[], None]:
            where = " AND (created_at, seq) < (%s, %s)" if keyset else ""
            query = (
                "SELECT event_id, seq, aggregate_id, event_type, payload, metadata, created_at"
                " FROM audit_events WHERE event_type = %s AND created_at >= %s"
                f" AND created_at < %s{where} ORDER BY created_at DESC, seq DESC LIMIT %s"
            )
            values = (NEXT_PAGE_TYPE, low, high, *(position if keyset else ()), limit + 1)
            return lambda: self.raw.execute(query, values).fetchall()

        def page_get(path: str) -> Callable[[], None]:
            def run() -> None:
                response = self.client.get(path)
                assert response.status_code == 200, response.status_code
                response.close()

            return run

        def cold(path: str) -> Callable[[], None]:
            def run() -> None:
                self.app.extensions.pop("audit_facet_cache", None)
                page_get(path)()

            return run

        first_path = "/search?" + urlencode(args)
        repeat = 20 if self.quick else 200
        rows = []
        measures = [
            ("search page, type + month (p50)", page_get(first_path), raw_rows(False), repeat),
            ("  same, counts made anew (p50)", cold(first_path), raw_rows(False), repeat // 4),
        ]
        if older is not None:
            measures.append(
                ("search next page (p50)", page_get(older["href"]), raw_rows(True), repeat)
            )
        for name, action, raw, times in measures:
            raw_seconds, raw_p95 = _p50_p95(raw, times)
            seconds, p95 = _p50_p95(action, times)
            with counted_statements() as sent:
                action()
            rows.append(
                Row(
                    name,
                    seconds * 1000,
                    raw_seconds * 1000,
                    "ms",
                    os.getloadavg()[0],
                    f"p95 {p95 * 1000:.1f} ms vs {raw_p95 * 1000:.1f} ms; {len(sent)} statements",
                )
            )
        return rows

    def healthz(self) -> Row:
        duration = 0.5 if self.quick else 3.0

        def rate(action: Callable[[], Any]) -> float:
            done, started = 0, time.perf_counter()
            while time.perf_counter() - started < duration:
                action()
                done += 1
            return done / (time.perf_counter() - started)

        raw = rate(lambda: self.raw.execute("SELECT 1").fetchone())
        served = rate(lambda: self.get("/healthz"))
        return Row(
            "/healthz, one client", served, raw, "req/s", os.getloadavg()[0], "raw: SELECT 1"
        )


MEASURES = ("csv", "pdf", "record", "state", "next", "search", "healthz")


def measure(
    admin: str,
    events: int,
    quick: bool,
    reader: str | None,
    only: tuple[str, ...] = MEASURES,
    datasette: Path | None = None,
) -> list[Row]:
    if reader:
        reader = sa.engine.make_url(reader).set(database=sa.engine.make_url(admin).database)
        reader = reader.render_as_string(hide_password=False)
    bench = Bench(admin, quick, reader, datasette=datasette)
    steps: dict[str, Callable[[], Row | list[Row]]] = {
        "csv": bench.csv_export,
        "pdf": lambda: bench.pdf(events),
        "record": lambda: bench.record_page(events),
        "state": lambda: bench.state_at(events),
        "next": bench.next_page,
        "search": bench.search_pages,
        "healthz": bench.healthz,
    }
    rows: list[Row] = []
    try:
        for name in MEASURES:
            if name in only:
                made = steps[name]()
                rows.extend(made if isinstance(made, list) else [made])
        return rows
    finally:
        bench.close()


def _on(url: str, database: str | None) -> str:
    return sa.engine.make_url(url).set(database=database).render_as_string(hide_password=False)


def compare(
    first: str, second: str, rounds: int, reader: str | None
) -> list[tuple[str, float, float]]:
    """Two databases of the same events (say plain and partitioned) on one server, measured
    request by request in turn: ``rounds`` times each request on one, then on the other
    (which one goes first alternates), so that a busy moment of the machine weighs on both.
    The record page and state-at of the big record cold, the month search's first and next
    page, and the JSON next page of a type without a time range. Returns (measure, median
    ms on ``first``, median ms on ``second``)."""
    if reader:
        readers = {url: _on(reader, sa.engine.make_url(url).database) for url in (first, second)}
        loggers: dict[str, str | None] = {first: None, second: None}
    else:  # one password for both (the roles are cluster-wide)
        made, logger = prepare_reader(first), prepare_reader(first, "audit_access_logger")
        readers = {url: _on(made, sa.engine.make_url(url).database) for url in (first, second)}
        loggers = {url: _on(logger, sa.engine.make_url(url).database) for url in (first, second)}
    benches = {url: Bench(url, True, readers[url], loggers[url]) for url in (first, second)}
    try:
        low, high = MONTH
        search = "/search?" + urlencode(
            {"type": NEXT_PAGE_TYPE, "from": low.isoformat(), "to": high.isoformat()}
        )
        at = urlencode({"at": (START + SPAN / 2).isoformat()})
        paths: dict[str, dict[str, tuple[str, bool, int]]] = {}
        from bs4 import BeautifulSoup

        size = (
            benches[first]
            .raw.execute("SELECT count(*) FROM audit_events WHERE aggregate_id = %s", (BIG_RECORD,))
            .fetchone()[0]
        )

        for url, bench in benches.items():
            page = BeautifulSoup(bench.client.get(search).text, "html.parser")
            older = page.find("a", class_="older")
            cursor = bench.client.get("/api/events?" + urlencode({"type": NEXT_PAGE_TYPE}))
            next_json = urlencode({"type": NEXT_PAGE_TYPE, "cursor": cursor.json["next_cursor"]})
            # (path, cold: the history cache emptied first, requests a round)
            paths[url] = {
                f"{size:,}-event record page, cold": (f"/aggregates/{BIG_RECORD}", True, 1),
                f"{size:,}-event record state-at, cold": (
                    f"/api/aggregates/{BIG_RECORD}/state?{at}",
                    True,
                    1,
                ),
                "search page, type + month": (search, False, 10),
                "search next page": (older["href"] if older else search, False, 10),
                "JSON next page, no time range": (f"/api/events?{next_json}", False, 10),
            }
        times: dict[tuple[str, str], list[float]] = {}
        for round_number in range(rounds + 1):  # the first round warms up, untimed
            order = (first, second) if round_number % 2 else (second, first)
            for name in paths[first]:
                for url in order:
                    path, cold, repeat = paths[url][name]
                    bench = benches[url]
                    for _ in range(repeat):
                        if cold:
                            bench.app.extensions.pop("audit_history_cache", None)
                        seconds = _timed(lambda: bench.get(path))  # noqa: B023
                        if round_number:
                            times.setdefault((url, name), []).append(seconds)
        return [
            (
                name,
                statistics.median(times[(first, name)]) * 1000,
                statistics.median(times[(second, name)]) * 1000,
            )
            for name in paths[first]
        ]
    finally:
        for bench in benches.values():
            bench.close()


def print_comparison(first: str, second: str, rows: list[tuple[str, float, float]]) -> None:
    names = [sa.engine.make_url(url).database or "?" for url in (first, second)]
    print(f"request by request in turn, load {os.getloadavg()[0]:.2f}; median ms")
    width = max(len(name) for name, *_ in rows)
    cell = max(12, *(len(name) for name in names))
    print(f"{'measure':{width}} | {names[0]:>{cell}} | {names[1]:>{cell}} | ratio")
    print(f"{'-' * width} | {'-' * cell} | {'-' * cell} | -----")
    for name, one, other in rows:
        print(
            f"{name:{width}} | {f'{one:.1f} ms':>{cell}} | {f'{other:.1f} ms':>{cell}}"
            f" | {other / one:.2f}"
        )


def is_partitioned(url: str) -> bool:
    with psycopg.connect(libpq_url(url)) as conn:
        kind = conn.execute("SELECT relkind FROM pg_class WHERE oid = 'audit_events'::regclass")
        return kind.fetchone()[0] == "p"


def print_search_plan(admin: str) -> None:
    """The plan of a one-month search page (the app's own statement): on a partitioned
    table only that month's partition appears (partition pruning)."""
    from dashboard import db, queries
    from dashboard.filters import EventFilter

    month = EventFilter(time_from=MONTH[0], time_to=MONTH[1])
    engine = db.make_engine(admin, pool_size=1)
    try:
        with engine.connect() as conn:
            statement = queries.select_events(month, db.inspect_table(conn), limit=51)
            plan = conn.execute(queries._Explain(statement, analyze=False, as_json=False))
            print(f"\nplan of a one-month search page ({month.time_from:%Y-%m-%d} on):")
            for (line,) in plan:
                print("  " + line)
    finally:
        engine.dispose()


def print_plans(admin: str) -> None:
    """Partition pruning in the app's own statements (EXPLAIN, no ANALYZE): which
    partitions the one-month search page (first and next), the record page and state-at
    read, then the whole plan of the first search page. A time range prunes at plan time;
    the record page cannot (aggregate_id is not the partition key): one index probe of
    audit_events_aggregate_idx per partition."""
    from dashboard import db, queries
    from dashboard.filters import Cursor, EventFilter

    search = EventFilter(
        types=(NEXT_PAGE_TYPE,),
        time_from=MONTH[0],
        time_to=MONTH[1],
    )
    engine = db.make_engine(admin, pool_size=1)
    try:
        with engine.connect() as conn:
            table = db.inspect_table(conn)
            partitions = {
                name
                for (name,) in conn.execute(
                    sa.text(
                        "SELECT inhrelid::regclass::text FROM pg_inherits"
                        " WHERE inhparent = 'audit_events'::regclass"
                    )
                )
            }

            def read(statement: sa.Select) -> list[str]:
                document = conn.execute(
                    queries._Explain(statement, analyze=False, as_json=True)
                ).scalar()
                found: set[str] = set()

                def walk(node: dict) -> None:
                    if node.get("Relation Name") in partitions:
                        found.add(node["Relation Name"])
                    for child in node.get("Plans", ()):
                        walk(child)

                walk(document[0]["Plan"])
                return sorted(found)

            first = queries.select_events(search, table, limit=51)
            rows = list(conn.execute(first))
            statements = [("search page, type + month, first page", first)]
            if rows:
                cursor = Cursor.after(rows[min(len(rows), 50) - 1])
                statements.append(
                    (
                        "  its next page",
                        queries.select_events(search, table, cursor=cursor, limit=51),
                    )
                )
            # The record page and state-at both fold the record's whole history (one read,
            # kept by the history cache), so they read the same partitions.
            statements.append(
                (
                    "record page and state-at, its events",
                    queries.select_aggregate_events(BIG_RECORD, table, slim=True),
                )
            )
            statements.append(
                ("  its summary (count, last seq)", queries.select_aggregate_summary(BIG_RECORD))
            )
            print(f"\npartitions each statement's plan reads (of {len(partitions)}):")
            for name, statement in statements:
                names = read(statement)
                shown = ", ".join(names) if len(names) <= 3 else f"{names[0]} .. {names[-1]}"
                print(f"  {name}: {len(names)} ({shown})")
            plan = conn.execute(queries._Explain(first, analyze=False, as_json=False))
            print(f"\nplan of the search page ({search.time_from:%Y-%m}, one type):")
            for (line,) in plan:
                print("  " + line)
    finally:
        engine.dispose()


def print_table(title: str, rows: list[Row]) -> None:
    print(f"\n{title}")
    header = ("measure", "dashboard", "raw PostgreSQL", "ratio", "load", "note")
    cells = [
        (
            row.measure,
            _figure(row.dashboard, row.unit),
            _figure(row.raw, row.unit),
            row.ratio,
            f"{row.load:.2f}",
            row.note,
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    for line in [header, tuple("-" * w for w in widths), *cells]:
        print(" | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))


def print_growth(results: dict[int, list[Row]]) -> None:
    sizes = sorted(results)
    print(f"\ngrowth, {sizes[0]:,} -> {sizes[-1]:,} events (dashboard figure; flat = 1.00)")
    for position, row in enumerate(results[sizes[0]]):
        figures = [results[size][position] for size in sizes]
        values = "  ".join(_figure(r.dashboard, r.unit) for r in figures)
        change = figures[-1].dashboard / figures[0].dashboard if figures[0].dashboard else 0
        print(f"  {row.measure}: {values}  (x{change:.2f})")


@contextmanager
def server(args: argparse.Namespace) -> Iterator[str]:
    """The superuser URL of the server to build on: --admin-url, --embedded, or a temp one."""
    if args.admin_url or args.embedded:
        with admin_url_of(args) as url:
            yield url
        return
    with tempfile.TemporaryDirectory(prefix="bench-run-pg-") as tmp:
        args.embedded = Path(tmp) / "pgdata"
        args.database = "postgres"
        with admin_url_of(args) as url:
            yield url


@contextmanager
def reused(args: argparse.Namespace) -> Iterator[str]:
    """The URL of the --reuse database (a name is looked up on --embedded/--admin-url)."""
    if "://" in args.reuse:
        yield args.reuse
        return
    if not (args.admin_url or args.embedded):
        raise SystemExit("--reuse NAME needs --embedded DIR or --admin-url URL")
    with admin_url_of(args) as admin:
        url = sa.engine.make_url(admin).set(database=args.reuse)
        yield url.render_as_string(hide_password=False)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--admin-url", help="superuser URL of a server to build the data on")
    where.add_argument("--embedded", type=Path, help="data directory of an embedded server")
    parser.add_argument(
        "--reuse",
        help="measure a database built before: its owner/superuser URL, or its name on the "
        "--embedded/--admin-url server",
    )
    parser.add_argument("--database", default="postgres", help=argparse.SUPPRESS)
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--events", type=parse_size, default=1_000_000, help="e.g. 1M")
    sizes.add_argument("--scale", help="comma-separated sizes, e.g. 100k,1M: prints growth")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke test)")
    parser.add_argument(
        "--reader-url",
        help="audit_reader's URL on that server (its database is replaced); without it the "
        "script sets a new audit_reader password",
    )
    parser.add_argument("--name", help="the database to (re)build; default audit_run_<events>")
    parser.add_argument(
        "--partitioned",
        action="store_true",
        help="build audit_events partitioned by month (init-db --partition monthly) and "
        "print which partitions the search, record page and state-at plans read",
    )
    parser.add_argument(
        "--citus",
        action="store_true",
        help="build on the Citus coordinator database of --admin-url (citus extension and "
        "workers set up, no audit_events yet; init-db --citus) and print a search's plan",
    )
    parser.add_argument(
        "--only", help=f"comma-separated measures among {','.join(MEASURES)} (default: all)"
    )
    parser.add_argument(
        "--against",
        help="with --reuse: another database of the same events on the same server (its "
        "owner/superuser URL or its name); measures the record and search pages on both, "
        "request by request in turn, and prints their ratio",
    )
    parser.add_argument(
        "--datasette",
        type=Path,
        metavar="FILE",
        help="also measure Datasette's next page on the same rows (pip install -e "
        "'.[bench]'), from a SQLite copy of the table at FILE: made when missing or stale "
        "(about 2 minutes at 10M events), reused otherwise",
    )
    parser.add_argument(
        "--rounds", type=int, default=25, help="with --against: requests of each (default 25)"
    )
    args = parser.parse_args(argv)
    if args.citus and (not args.admin_url or args.partitioned or args.scale):
        parser.error("--citus needs --admin-url (the coordinator) and one --events size")

    say = _say
    only = tuple(args.only.split(",")) if args.only else MEASURES
    if unknown := set(only) - set(MEASURES):
        parser.error(f"unknown measure(s) {', '.join(sorted(unknown))}; choose from {MEASURES}")
    if args.against and not args.reuse:
        parser.error("--against compares with the --reuse database")
    if args.reuse:
        with reused(args) as url:
            if args.against:
                against = args.against if "://" in args.against else _on(url, args.against)
                compared = compare(url, against, args.rounds, args.reader_url)
                print_comparison(url, against, compared)
                return 0
            with psycopg.connect(libpq_url(url)) as conn:
                events = conn.execute("SELECT count(*) FROM audit_events").fetchone()[0]
            rows = measure(url, events, args.quick, args.reader_url, only, args.datasette)
            print_table(f"{events:,} events (reused database), {os.cpu_count()} cores", rows)
            if is_partitioned(url):
                print_plans(url)
        return 0
    scale = [parse_size(size) for size in args.scale.split(",")] if args.scale else [args.events]
    results: dict[int, list[Row]] = {}
    with server(args) as admin:
        for events in scale:
            say(f"building {events:,} events")
            name = f"{args.name}_{events}" if args.name and len(scale) > 1 else args.name
            url = build(admin, events, say, name, args.partitioned, args.citus)
            say("measuring")
            results[events] = measure(
                url, events, args.quick, args.reader_url, only, args.datasette
            )
            layout = "partitioned by month" if args.partitioned else "plain table"
            layout = "Citus, distributed by aggregate_id" if args.citus else layout
            print_table(f"{events:,} events, {layout}, {os.cpu_count()} cores", results[events])
            if args.partitioned:
                print_plans(url)
            elif args.citus:
                print_search_plan(url)
    if len(results) > 1:
        print_growth(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
