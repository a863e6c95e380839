"""Load: many clients at once on ``audit-dashboard serve`` (gunicorn), over loopback.

Starts the production server (2 workers x 4 threads by default) on a seeded database and
runs, for each client count (default 8 and 50), a bounded thread-pool client for
``--seconds`` (default 60): every client loops over the pages investigators wait for —
the search page (newest first, one type, one actor), a record's page and a record's state
through the API — each on a keep-alive connection, signed in with an API token. Prints
p50/p95/p99 latency, requests per second, errors (any status but 200, or a failed
connection) and the resident memory of each gunicorn worker (peak while the scenario ran).

The database must hold ``audit-dashboard seed`` data (see bench_pages.py for how to make
one); like the other benchmarks it gives audit_reader a throw-away password and reads
through it. The access log goes to PostgreSQL as audit_access_logger (a throw-away
password too), as ``serve`` runs in production; ``--access-log file`` writes a JSON-lines
file in a temporary directory instead (what figures before 2026-12 used)::

    python benchmarks/bench_load.py --embedded /work/bench-pg/pgdata --database audit_bench
    python benchmarks/bench_load.py --admin-url postgresql://postgres@/audit_bench?host=/run \\
        --seconds 10 --clients 8

This is a script, not a test: it prints figures (exit 1 only when the server fails to start).
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psutil
import psycopg
from _database import add_database_arguments, admin_url_of
from bench_pages import find_targets
from bench_reports import prepare_reader

from dashboard.db import libpq_url
from dashboard.users import UserStore

HOST = "127.0.0.1"  # loopback only


@dataclass
class Outcome:
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)


def percentile(ordered: list[float], share: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def pick_urls(admin_url: str, targets: dict) -> list[str]:
    """The mix every client cycles through: 3 searches, 1 record page, 1 state (several
    records, so the folded-history cache does not answer everything)."""
    with psycopg.connect(libpq_url(admin_url)) as conn:
        records = [
            str(row[0])
            for row in conn.execute(
                "SELECT aggregate_id FROM (SELECT aggregate_id FROM audit_events "
                "ORDER BY created_at DESC, seq DESC LIMIT 5000) recent "
                "GROUP BY aggregate_id ORDER BY count(*) DESC LIMIT 20"
            )
        ]
        event_type = conn.execute(
            "SELECT event_type FROM audit_events ORDER BY created_at DESC, seq DESC LIMIT 1"
        ).fetchone()[0]
    urls = []
    for record in records:
        urls += [
            "/search?order=desc",
            f"/search?type={quote(event_type)}",
            f"/search?actor={quote(targets['actor'])}",
            f"/aggregates/{record}",
            f"/api/aggregates/{record}/state",
        ]
    return urls


def kind_urls(urls: list[str]) -> dict[str, list[str]]:
    """Issue 11's throughput goals, one kind of request each: ``/healthz`` (the server's
    own ceiling), the search page (HTML) and the search as JSON (``/api/events``)."""
    searches = [url for url in urls if url.startswith("/search")][:3]
    return {
        "healthz": ["/healthz"],
        "search page": searches,
        "search JSON": ["/api/events" + url.removeprefix("/search") for url in searches],
    }


def start_server(
    reader: str, logger: str | None, users: Path, work: Path, args
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIT_")}
    env.update(
        AUDIT_DATABASE_URL=reader,
        AUDIT_SECRET_KEY=secrets.token_hex(16),
        AUDIT_USERS_FILE=str(users),
        AUDIT_ACCESS_LOG_SPOOL_DIR=str(work / "access-log-spool"),
    )
    if logger:
        env["AUDIT_ACCESS_LOG_URL"] = logger
    else:
        env["AUDIT_ACCESS_LOG_FILE"] = str(work / "access.jsonl")
    command = [sys.executable, "-m", "dashboard.cli", "serve", "--host", HOST]
    command += ["--port", str(port), "--workers", str(args.workers), "--threads", str(args.threads)]
    log = (work / "serve.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited: see {work / 'serve.log'}")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=5)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return process, f"{HOST}:{port}"
        except OSError:
            pass
        time.sleep(0.3)  # polling interval while the server starts
    process.terminate()
    raise SystemExit("the server did not answer /healthz within 60 s")


def free_port() -> int:
    """A free loopback port (closed again before the server binds it)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def run_scenario(address: str, token: str, urls: list[str], clients: int, seconds: float):
    host, port = address.split(":")
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {token}"}

    def client(number: int) -> Outcome:
        outcome = Outcome()
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        for url in itertools.islice(itertools.cycle(urls), number * 7, None):
            if time.monotonic() >= deadline:
                break
            started = time.perf_counter()
            try:
                conn.request("GET", url, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                outcome.errors[type(exc).__name__] += 1
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=60)
                continue
            outcome.latencies_ms.append((time.perf_counter() - started) * 1000)
            if status != 200:
                outcome.errors[str(status)] += 1
        conn.close()
        return outcome

    with ThreadPoolExecutor(max_workers=clients) as pool:
        outcomes = list(pool.map(client, range(clients)))
    merged = Outcome()
    for outcome in outcomes:
        merged.latencies_ms += outcome.latencies_ms
        merged.errors.update(outcome.errors)
    return merged


class RssSampler:
    """Peak resident memory of each gunicorn worker, sampled every half second."""

    def __init__(self, master_pid: int):
        self.master = psutil.Process(master_pid)
        self.peak: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for worker in self.master.children():
                try:
                    rss = worker.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
                self.peak[worker.pid] = max(self.peak.get(worker.pid, 0), rss)
            self._stop.wait(0.5)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_database_arguments(parser)
    parser.add_argument("--seconds", type=float, default=60, help="per scenario")
    parser.add_argument("--clients", default="8,50", help="comma-separated client counts")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument(
        "--access-log",
        choices=("postgres", "file"),
        default="postgres",
        help="where serve writes its access log (default: PostgreSQL, as in production)",
    )
    args = parser.parse_args(argv)
    counts = [int(count) for count in args.clients.split(",")]

    with admin_url_of(args) as admin_url:
        targets = find_targets(admin_url)
        urls = pick_urls(admin_url, targets)
        reader = prepare_reader(admin_url)
        logger = None
        if args.access_log == "postgres":
            logger = prepare_reader(admin_url, "audit_access_logger")
        with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
            work = Path(tmp)
            users = work / "users.toml"
            store = UserStore(users)
            store.add("bench.auditor", "auditor", secrets.token_urlsafe(12))
            token = store.issue_token("bench.auditor")
            process, address = start_server(reader, logger, users, work, args)
            try:
                print(
                    f"audit_events: ~{targets['events']:,} events; serve: {args.workers} workers "
                    f"x {args.threads} threads on {address}; {len(urls)} URLs "
                    f"(search x3, record page, state API); access log: {args.access_log}"
                )
                run_scenario(address, token, urls, 4, min(5.0, args.seconds))  # warm-up
                header = (
                    f"{'clients':>7} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} "
                    f"{'p99 ms':>8} {'errors':>7}  worker RSS peak (MB)"
                )
                print(header)
                for clients in counts:
                    with RssSampler(process.pid) as rss:
                        started = time.monotonic()
                        outcome = run_scenario(address, token, urls, clients, args.seconds)
                        elapsed = time.monotonic() - started
                    ordered = sorted(outcome.latencies_ms)
                    errors = sum(outcome.errors.values())
                    peaks = " ".join(f"{peak / 2**20:.0f}" for peak in sorted(rss.peak.values()))
                    print(
                        f"{clients:>7} {len(ordered):>9,} {len(ordered) / elapsed:>8.1f} "
                        f"{statistics.median(ordered) if ordered else float('nan'):>8.1f} "
                        f"{percentile(ordered, 0.95):>8.1f} {percentile(ordered, 0.99):>8.1f} "
                        f"{errors:>7}  {peaks}" + (f"  ({dict(outcome.errors)})" if errors else "")
                    )
                print(
                    f"\none kind of request at a time, {counts[0]} clients, {args.seconds:.0f} s "
                    "each (goals: search page >= 30% of /healthz, JSON >= 50%):"
                )
                rates = {}
                for kind, kind_list in kind_urls(urls).items():
                    started = time.monotonic()
                    outcome = run_scenario(address, token, kind_list, counts[0], args.seconds)
                    rates[kind] = len(outcome.latencies_ms) / (time.monotonic() - started)
                    ordered = sorted(outcome.latencies_ms)
                    errors = sum(outcome.errors.values())
                    share = rates[kind] / rates["healthz"] if rates.get("healthz") else 1.0
                    print(
                        f"  {kind:<12} {rates[kind]:>8.1f} req/s  p50 "
                        f"{statistics.median(ordered) if ordered else float('nan'):>6.1f} ms  "
                        f"p95 {percentile(ordered, 0.95):>6.1f} ms  {share:>4.0%} of /healthz"
                        + (f"  errors {dict(outcome.errors)}" if errors else "")
                    )
            finally:
                process.terminate()
                process.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
