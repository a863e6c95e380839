"""The shape of a search: short ids pasted back, totals, facets and the activity chart.

A small database of hand-made events (two records sharing their first 8 digits, a burst)
beside the suite's seeded one; pages through the Flask test client, read with a parser.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from bs4 import BeautifulSoup

from dashboard import queries
from dashboard.db import libpq_url
from dashboard.filters import parse_aggregate_id, parse_id_prefix
from tests.conftest import sign_in

TWIN_A = uuid.UUID("abcdef12-0000-4000-8000-000000000001")
TWIN_B = uuid.UUID("abcdef12-0000-4000-8000-000000000002")
LONER = uuid.UUID("12345678-9abc-4def-8000-000000000003")
DAY = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday


def soup(response) -> BeautifulSoup:
    return BeautifulSoup(response.text, "html.parser")


@pytest.fixture(scope="module")
def shape_db(make_database):
    """Two records sharing a prefix, one other; one event an hour over a day, and a burst of
    30 events in the 03:00 hour."""
    urls = make_database("audit_shape")
    rows = []
    for record in (TWIN_A, TWIN_B, LONER):
        rows.append((uuid.uuid4(), record, "USER_CREATED", {"n": 0}, DAY))
    for hour in range(1, 24):
        rows.append((uuid.uuid4(), LONER, "USER_UPDATED", {"n": hour}, DAY + timedelta(hours=hour)))
    for minute in range(30):
        at = DAY + timedelta(hours=3, minutes=minute, seconds=5)
        rows.append((uuid.uuid4(), TWIN_A, "USER_UPDATED", {"m": minute}, at))
    with psycopg.connect(libpq_url(urls.admin)) as conn:
        for event_id, record, event_type, payload, at in rows:
            conn.execute(
                "INSERT INTO audit_events (event_id, aggregate_id, event_type, payload, metadata,"
                " created_at) VALUES (%s, %s, %s, %s, %s, %s)",
                (event_id, record, event_type, json.dumps(payload),
                 json.dumps({"actor": "ops@example.com", "aggregate_type": "USER"}), at),
            )  # fmt: skip
        conn.execute("ANALYZE audit_events")
    return urls


@pytest.fixture
def shape_client(make_app, shape_db):
    app = make_app(database_url=shape_db.reader, access_log_url=shape_db.logger)
    return sign_in(app.test_client(), "auditor")


# --- Id prefixes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "digits"),
    [
        ("abcdef12", "abcdef12"),
        (" ABCDEF12-00 ", "abcdef1200"),
        ("abcdef12-0000-4000-8000-00000000000", "abcdef12000040008000" + "0" * 11),
    ],
)
def test_a_prefix_of_eight_or_more_hex_digits_is_a_prefix(text, digits):
    prefix = parse_id_prefix(text)
    assert prefix is not None and prefix.text == digits
    assert str(prefix.low).replace("-", "") == digits.ljust(32, "0")
    assert str(prefix.high).replace("-", "") == digits.ljust(32, "f")


@pytest.mark.parametrize(
    "text", [None, "", "abcdef1", "abcdefgh", str(TWIN_A), "abcdef12 00", "x" * 100]
)
def test_anything_else_is_not_a_prefix(text):
    assert parse_id_prefix(text) is None


def test_ids_with_prefix_finds_records_and_events(app, shape_db):
    import sqlalchemy as sa

    engine = sa.create_engine(shape_db.reader)
    try:
        with engine.connect() as conn:
            twins = queries.ids_with_prefix(conn, "record", parse_id_prefix("abcdef12"))
            loner = queries.ids_with_prefix(conn, "record", parse_id_prefix("12345678-9a"))
            none = queries.ids_with_prefix(conn, "record", parse_id_prefix("00000000"))
            capped = queries.ids_with_prefix(conn, "record", parse_id_prefix("abcdef12"), limit=1)
            event_id = conn.execute(sa.text("SELECT event_id FROM audit_events LIMIT 1")).scalar()
            events = queries.ids_with_prefix(conn, "event", parse_id_prefix(str(event_id)[:13]))
    finally:
        engine.dispose()
    assert twins == [TWIN_A, TWIN_B]
    assert loner == [LONER] and none == []
    assert capped == [TWIN_A, TWIN_B]  # limit + 1: enough to know there are more
    assert events == [event_id]


def test_a_unique_prefix_searches_the_full_id(shape_client):
    response = shape_client.get("/search?aggregate_id=12345678&range=&order=asc")
    assert response.status_code == 303
    target = urlsplit(response.headers["Location"])
    assert target.path == "/search"
    assert parse_qs(target.query)["aggregate_id"] == [str(LONER)]
    assert parse_qs(target.query)["order"] == ["asc"]
    page = soup(shape_client.get(response.headers["Location"]))
    assert len(page.find("table", class_="events").find("tbody").find_all("tr")) == 24


def test_an_ambiguous_prefix_lists_the_candidates_as_links(shape_client):
    response = shape_client.get("/search?aggregate_id=ABCDEF12")
    assert response.status_code == 200
    section = soup(response).find("section", class_="id-candidates")
    assert "2 records start with abcdef12" in section.get_text(" ")
    links = [parse_qs(urlsplit(a["href"]).query)["aggregate_id"] for a in section.find_all("a")]
    assert links == [[str(TWIN_A)], [str(TWIN_B)]]


def test_an_unknown_prefix_says_so_by_the_field(shape_client):
    response = shape_client.get("/search?aggregate_id=00000000")
    assert response.status_code == 404
    error = soup(response).find(id="aggregate_id-error")
    assert "No record id starts with 00000000" in error.get_text(" ")


def test_the_api_keeps_to_full_ids(shape_client):
    response = shape_client.get("/api/events?aggregate_id=12345678")
    assert response.status_code == 400
    assert "is not a record id" in response.get_json()["error"]
    assert parse_aggregate_id(str(LONER)) == LONER


def test_copy_buttons_carry_full_ids_and_wait_for_the_script(shape_client):
    page = soup(shape_client.get(f"/search?aggregate_id={LONER}"))
    buttons = page.find_all("button", class_="copy-button")
    copied = {button["data-copy"] for button in buttons}
    assert str(LONER) in copied
    assert any(value.startswith("http") and "/search?" in value for value in copied)
    assert all(button.has_attr("hidden") for button in buttons)  # no JS, no dead button
