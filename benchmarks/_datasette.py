"""Datasette's next page on the same rows: the reference of issue 11's JSON next-page goal
("faster than Datasette's next page on the same rows"), measured in the same run.

:func:`sqlite_copy` copies ``audit_events`` (every row, the columns the JSON API shows) into
a SQLite file with an index on (event_type, created_at, seq), the one Datasette's filtered,
sorted next page walks; a copy that still matches the table (its row count and highest
``seq``) is reused. :func:`next_page_in_child` asks Datasette for the second page of one
event type, newest first, in a process of its own, through Datasette's in-process client
(``ds.client``, as the dashboard is measured through Flask's test client): the same rows as
the dashboard's JSON next page. Its row count, facets and facet suggestions are switched
off (``_nocount``, ``_nofacet``, ``_nosuggest``): the cheapest next page Datasette serves,
and the one closest to the dashboard's (which counts nothing on a JSON page).

Datasette is not a dependency of the dashboard: ``pip install -e '.[bench]'`` brings it.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

import psycopg

SCHEMA = """
CREATE TABLE audit_events (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    metadata TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE copied_from (events INTEGER NOT NULL, max_seq INTEGER NOT NULL);
"""
# ISO 8601 in UTC with microseconds: as text, it sorts as the times do.
COPY_QUERY = """
SELECT seq, event_id::text, aggregate_id::text, event_type, payload::text, metadata::text,
       to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')
FROM audit_events
"""
BATCH = 100_000


def available() -> str | None:
    """Datasette's version, or None when it is not installed."""
    try:
        import datasette.version
    except ImportError:
        return None
    return datasette.version.__version__


def _source(raw: psycopg.Connection) -> tuple[int, int]:
    count, max_seq = raw.execute("SELECT count(*), max(seq) FROM audit_events").fetchone()
    return int(count), int(max_seq or 0)


def sqlite_copy(raw: psycopg.Connection, path: Path, say: Callable[[str], None]) -> Path:
    """``path`` holding a copy of the table ``raw`` reads: made now unless one that still
    matches it is there. Returns ``path``."""
    source = _source(raw)
    if path.exists():
        with sqlite3.connect(path) as db:
            try:
                found = db.execute("SELECT events, max_seq FROM copied_from").fetchone()
            except sqlite3.DatabaseError:
                found = None
        if found == source:
            return path
        path.unlink()
    say(f"  copying {source[0]:,} events to {path} for Datasette")
    started = time.perf_counter()
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    db = sqlite3.connect(partial)
    try:
        db.executescript("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;" + SCHEMA)
        # A server-side cursor lives in a transaction (``raw`` is in autocommit).
        with raw.transaction(), raw.cursor(name="datasette_copy") as cursor:
            cursor.execute(COPY_QUERY)
            while rows := cursor.fetchmany(BATCH):
                db.executemany("INSERT INTO audit_events VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        db.execute(
            "CREATE INDEX audit_events_type_time ON audit_events (event_type, created_at, seq)"
        )
        db.execute("INSERT INTO copied_from VALUES (?, ?)", source)
        db.commit()
        db.execute("ANALYZE")
    finally:
        db.close()
    partial.rename(path)
    say(f"  copied in {time.perf_counter() - started:.0f} s")
    return path


def next_page_times(
    path: Path, event_type: str, size: int, repeat: int
) -> tuple[list[float], list[str]]:
    """Datasette's second page of ``event_type``, newest first, ``size`` rows a page,
    ``repeat`` times in this process: each time in seconds, and the event ids it shows."""
    from datasette.app import Datasette

    ds = Datasette([str(path)], immutables=[], settings={"sql_time_limit_ms": 10_000})
    name = next(name for name in ds.databases if name != "_internal")
    base = (
        ds.urls.table(name, "audit_events", format="json")
        + "?"
        + urlencode(
            {
                "event_type": event_type,
                "_sort_desc": "created_at",
                "_size": size,
                "_nocount": 1,
                "_nofacet": 1,
                "_nosuggest": 1,
                "_shape": "objects",
            }
        )
    )

    async def run() -> tuple[list[float], list[str]]:
        await ds.invoke_startup()
        first = await ds.client.get(base)
        if first.status_code != 200:
            raise RuntimeError(f"Datasette answered {first.status_code}: {first.text[:200]}")
        url = base + "&" + urlencode({"_next": first.json()["next"]})
        page = await ds.client.get(url)
        shown = [row["event_id"] for row in page.json()["rows"]]
        for _ in range(max(5, repeat // 10)):  # warm, as the dashboard's is
            await ds.client.get(url)
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            answer = await ds.client.get(url)
            times.append(time.perf_counter() - started)
            if answer.status_code != 200:
                raise RuntimeError(f"Datasette answered {answer.status_code}")
        return times, shown

    return asyncio.run(run())


def next_page_in_child(
    path: Path, event_type: str, size: int, repeat: int
) -> tuple[list[float], list[str]]:
    """:func:`next_page_times` in a process of its own, so that Datasette's threads and
    objects weigh neither on the dashboard's figures nor it on Datasette's."""
    done = subprocess.run(
        [sys.executable, __file__, str(path), event_type, str(size), str(repeat)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"measuring Datasette failed: {done.stderr[-2000:]}")
    answer = json.loads(done.stdout)
    return answer["times"], answer["shown"]


if __name__ == "__main__":
    times, shown = next_page_times(
        Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    )
    print(json.dumps({"times": times, "shown": shown}))
