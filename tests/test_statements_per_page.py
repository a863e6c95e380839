"""How many SQL statements a page costs (issue 11: a search page in at most 6, a next page
of the JSON API in as few as possible).

Counted where every statement of the app passes: psycopg's ``Cursor.execute`` (server-side
cursors too), on the reader's and the access log's connections alike, and the access
log's ``PostgresSink._send`` (what it sends through libpq's asynchronous calls). A
SQLAlchemy ``before_cursor_execute`` listener would miss the pool's liveness pings and the
statements that :func:`dashboard.queries.iter_events` runs on the driver connection itself;
both are round trips a page waits for. Counted, not timed: the figures that need a clock live in
``benchmarks/run.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import psycopg
import pytest
import sqlalchemy as sa
from bs4 import BeautifulSoup
from conftest import TEST_USERS
from flask import request

from dashboard import context, queries
from dashboard.access_log.sinks import PostgresSink
from dashboard.users import UserStore

SEARCH_PAGE_STATEMENTS = 6  # issue 11's bound, a first page with its counts not yet made
# A next page reuses the counts: the session check, the rows (which carry how far a proof
# can go), the entry.
SEARCH_NEXT_PAGE_STATEMENTS = 3
API_NEXT_PAGE_STATEMENTS = 2  # the page's query and its access-log entry
SEED_RANGE = "from=2025-05-01&to=2026-11-01"


class Statements:
    def __init__(self) -> None:
        self.texts: list[str] = []

    @contextmanager
    def counting(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
        texts: list[str] = []
        for cls, name in (
            (psycopg.Cursor, "execute"),
            (psycopg.ServerCursor, "execute"),
            # What the access log sends through libpq's asynchronous calls (entries written
            # ahead, sign-out checks): round trips too, though not through a cursor.
            (PostgresSink, "_send"),
        ):
            real = getattr(cls, name)

            def counted(target, query, *args, _real=real, **kwargs):
                texts.append(query if isinstance(query, str) else repr(query))
                return _real(target, query, *args, **kwargs)

            monkeypatch.setattr(cls, name, counted)
        try:
            yield texts
        finally:
            monkeypatch.undo()


def _said(texts: list[str]) -> str:
    return "\n".join(f"{n}. {' '.join(text.split())[:160]}" for n, text in enumerate(texts, 1))


def _next_link(html: str) -> str:
    link = BeautifulSoup(html, "html.parser").find("a", class_="older")
    assert link is not None, "the first page has no next page"
    parts = urlsplit(link["href"])
    return f"{parts.path}?{parts.query}"


@pytest.fixture
def auditor(login):
    return login("auditor")


def _warm(client, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, response.data[:300]
    return response.text


@pytest.mark.parametrize(
    "query",
    [
        f"type=USER_EMAIL_CHANGED&limit=10&{SEED_RANGE}",  # a type and a time range
        "kind=USER&limit=25",  # a kind, no range: the chart spans the table
    ],
)
def test_a_search_page_takes_at_most_six_statements_and_its_next_page_three(
    auditor, monkeypatch, query
):
    # What a process reads once a minute, not per page: the form's lists, and the table's
    # bounds and size (a search without a range charts the whole table).
    _warm(auditor, "/search?type=USER_CREATED")
    auditor.application.extensions.pop("audit_facet_cache", None)  # a first page is cold
    counter = Statements()
    with counter.counting(monkeypatch) as first:
        response = auditor.get("/search?" + query)
    assert response.status_code == 200
    assert len(first) <= SEARCH_PAGE_STATEMENTS, _said(first)
    with counter.counting(monkeypatch) as following:
        page = auditor.get(_next_link(response.text))
    assert page.status_code == 200
    assert len(following) <= SEARCH_NEXT_PAGE_STATEMENTS, _said(following)


def test_the_json_next_page_takes_its_query_and_its_access_log_entry(app, users_file, monkeypatch):
    token = UserStore(users_file).issue_token(TEST_USERS["auditor"][0])
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    first = client.get("/api/events?type=USER_EMAIL_CHANGED&limit=10", headers=headers)
    cursor = first.json["next_cursor"]
    assert cursor
    counter = Statements()
    with counter.counting(monkeypatch) as texts:
        response = client.get(
            f"/api/events?type=USER_EMAIL_CHANGED&limit=10&cursor={cursor}", headers=headers
        )
    assert response.status_code == 200
    assert len(texts) <= API_NEXT_PAGE_STATEMENTS, _said(texts)
    assert any("log_access" in text for text in texts), _said(texts)  # the entry is counted


def test_the_search_pages_read_without_begin_and_commit(auditor, monkeypatch, seeded_db):
    """The search page and its JSON read in autocommit: their statements stand alone, so
    no BEGIN and COMMIT round trips; the record page (server-side cursors) still reads in
    a transaction."""
    statuses: dict[str, list] = {}
    real = queries.fetch_page

    def fetch_page(conn, *args, **kwargs):
        page = real(conn, *args, **kwargs)
        statuses.setdefault(request.path, []).append(
            conn.connection.driver_connection.info.transaction_status
        )
        return page

    monkeypatch.setattr(queries, "fetch_page", fetch_page)
    for path in ("/search?type=USER_CREATED", "/api/events?type=USER_CREATED&limit=5"):
        assert auditor.get(path).status_code == 200, path
    idle = psycopg.pq.TransactionStatus.IDLE
    assert statuses == {"/search": [idle], "/api/events": [idle]}


def test_a_request_that_needs_a_transaction_after_autocommit_gets_one(app):
    """A request whose connection was left in autocommit and then needs a transaction (a
    SAVEPOINT, a server-side cursor) gets one from the next plain connection() call; the
    pool hands the connection on as it was."""
    with app.test_request_context("/search"):
        conn = context.connection(single_statements=True)
        conn.execute(sa.text("SELECT 1"))
        driver = conn.connection.driver_connection
        assert driver.autocommit
        assert context.connection() is conn
        assert not driver.autocommit and conn.in_transaction()
        with conn.begin_nested():
            conn.execute(sa.text("SELECT 1"))
        assert driver.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        context.close_connection()
    with app.test_request_context("/search"):
        conn = context.connection(single_statements=True)
        conn.execute(sa.text("SELECT 1"))
        driver = conn.connection.driver_connection
        assert driver.autocommit
        context.close_connection()
        assert not driver.autocommit  # back in the pool as the engine made it
