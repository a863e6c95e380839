"""The entry a page writes ahead (``access_log.write_ahead``): written while the page renders,
still exactly once, still before the page leaves, and still fail closed."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from bs4 import BeautifulSoup
from conftest import TEST_USERS, sign_in

from dashboard import db
from dashboard.access_log import EXTENSION_KEY
from dashboard.users import UserStore
from dashboard.views import search

ANN = TEST_USERS["auditor"][0]
CLOSED_PORT = "postgresql://audit_access_logger:x@127.0.0.1:1/nowhere"
SEED_RANGE = "from=2025-05-01&to=2026-11-01"


def _entries(admin_url: str, marker: str) -> list[tuple[str, str, int | None]]:
    """(route, outcome, row_count) of the entries whose filters name ``marker``."""
    with psycopg.connect(db.libpq_url(admin_url)) as conn:
        return conn.execute(
            "SELECT route, outcome, row_count FROM audit_access_log "
            "WHERE filters->>'request_id' = %s ORDER BY id",
            (marker,),
        ).fetchall()


def _request_id_of_some_events(admin_url: str) -> str:
    with psycopg.connect(db.libpq_url(admin_url)) as conn:
        return conn.execute(
            "SELECT metadata->>'request_id' FROM audit_events "
            "WHERE metadata ? 'request_id' GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()[0]


@pytest.fixture
def bearer(users_file) -> dict[str, str]:
    return {"Authorization": f"Bearer {UserStore(users_file).issue_token(ANN)}"}


def test_a_search_page_and_an_api_page_are_each_recorded_exactly_once(client, bearer, seeded_db):
    request_id = _request_id_of_some_events(seeded_db.admin)
    sign_in(client, "auditor")
    page = client.get(f"/search?request_id={request_id}&{SEED_RANGE}")
    assert page.status_code == 200
    shown = BeautifulSoup(page.text, "html.parser").find("table", class_="events")
    rows = shown.find("tbody").find_all("tr")
    api = client.get(f"/api/events?request_id={request_id}", headers=bearer)
    assert api.status_code == 200
    # Both were in the log before they left (the write is waited for, not fire-and-forget).
    assert _entries(seeded_db.admin, request_id) == [
        ("/search", "ok", len(rows)),
        ("/api/events", "ok", len(api.json["events"])),
    ]


def test_a_page_whose_entry_cannot_be_written_is_not_shown(make_app, bearer, seeded_db):
    request_id = _request_id_of_some_events(seeded_db.admin)
    app = make_app(access_log_url=CLOSED_PORT)
    client = app.test_client()
    page = client.get(
        f"/search?request_id={request_id}&{SEED_RANGE}", headers={**bearer, "Accept": "text/html"}
    )
    api = client.get(f"/api/events?request_id={request_id}", headers=bearer)
    assert page.status_code == 503
    assert "access log cannot be written" in page.text
    assert BeautifulSoup(page.text, "html.parser").find("table", class_="events") is None
    assert api.status_code == 503
    assert set(api.json) == {"error"}  # no events
    assert "access log cannot be written" in api.json["error"]
    kept = app.extensions[EXTENSION_KEY].spool.records()
    assert [(e["route"], e["outcome"]) for e in kept] == [
        ("/search", "withheld"),
        ("/api/events", "withheld"),
    ]
    assert all(e["filters"]["request_id"] == request_id for e in kept)


def test_fail_open_serves_a_page_written_ahead_and_keeps_its_entry(make_app, bearer, seeded_db):
    request_id = _request_id_of_some_events(seeded_db.admin)
    app = make_app(access_log_url=CLOSED_PORT, access_log_fail_open=True)
    api = app.test_client().get(f"/api/events?request_id={request_id}", headers=bearer)
    assert api.status_code == 200 and api.json["events"]
    kept = app.extensions[EXTENSION_KEY].spool.records()
    assert [(e["route"], e["outcome"]) for e in kept] == [("/api/events", "ok")]


def test_a_page_that_fails_after_its_entry_was_written_says_so_in_a_second_entry(
    client, seeded_db, monkeypatch
):
    """The entry went ahead saying "ok" (what was read); the page then failed, and the log
    says that too instead of leaving a view that never reached the user."""
    marker = f"ahead-{uuid.uuid4().hex}"

    def counts_fail(*args, **kwargs):
        def outline():
            raise db.DatabaseUnavailable("the counts' database went away")

        return outline

    monkeypatch.setattr(search, "_start_outline", counts_fail)
    sign_in(client, "auditor")
    page = client.get(f"/search?request_id={marker}&{SEED_RANGE}")
    assert page.status_code == 503
    assert [(route, outcome) for route, outcome, _ in _entries(seeded_db.admin, marker)] == [
        ("/search", "ok")
    ]
    # A 503 says the database is not answering: its entry waits in the spool, as any 503's
    # does, and reaches the log before the next request.
    kept = client.application.extensions[EXTENSION_KEY].spool.records()
    assert [(e["route"], e["outcome"]) for e in kept] == [("/search", "error")]
    client.get("/lookup")
    assert [(route, outcome) for route, outcome, _ in _entries(seeded_db.admin, marker)] == [
        ("/search", "ok"),
        ("/search", "error"),
    ]
