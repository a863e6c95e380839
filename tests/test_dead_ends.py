"""No dead ends: no link a role cannot follow, error pages in the app's own layout, every
bad field of a form reported at once, and a favicon."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit

import psycopg
import pytest
from bs4 import BeautifulSoup
from conftest import sign_in

from dashboard.db import libpq_url
from dashboard.filters import FilterError, parse_aggregate_id, parse_event_id

# --- Favicon ------------------------------------------------------------------------------------


def test_favicon_is_answered_to_anyone_and_linked_from_every_page(client):
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200
    assert icon.mimetype == "image/svg+xml"
    assert b"<svg" in icon.data
    login = BeautifulSoup(client.get("/login").text, "html.parser")
    link = login.find("link", rel="icon")
    assert link is not None
    linked = client.get(link["href"])
    assert linked.status_code == 200 and linked.mimetype == "image/svg+xml"


# --- Error pages --------------------------------------------------------------------------------


def _in_layout(response) -> BeautifulSoup:
    page = BeautifulSoup(response.text, "html.parser")
    assert page.find("header", class_="topbar") is not None, response.text
    assert page.find("link", rel="stylesheet") is not None
    return page


def test_unknown_page_is_a_styled_404_in_plain_words(login):
    client = login("support")
    response = client.get("/no-such-page")
    assert response.status_code == 404
    page = _in_layout(response)
    assert page.h1.get_text() == "Page not found"
    assert "requested URL" not in response.text  # not the framework's words
    assert page.find("a", string="Start page") is not None


def test_wrong_method_is_a_styled_405(login):
    client = login("auditor")
    response = client.get("/logout")  # sign-out is a POST form
    assert response.status_code == 405
    page = _in_layout(response)
    assert page.h1.get_text() == "Not available this way"
    assert "does not answer GET requests" in page.get_text()


def test_api_errors_stay_json(login):
    client = login("auditor")
    response = client.get("/api/no-such-endpoint")
    assert response.status_code == 404
    assert response.is_json and set(response.get_json()) == {"error"}


# --- Wording ------------------------------------------------------------------------------------


def test_id_messages_choose_their_article():
    with pytest.raises(FilterError) as event:
        parse_event_id("x")
    assert "is not an event id; an event id is a UUID" in event.value.message
    with pytest.raises(FilterError) as record:
        parse_aggregate_id("x")
    assert "is not a record id; a record id is a UUID" in record.value.message


# --- Every bad field at once --------------------------------------------------------------------

BAD_SEARCH = {
    "aggregate_id": "not-an-id",
    "from": "yesterday",
    "tz": "Mars/Olympus",
    "limit": "0",
    "value": "alice",  # not JSON, and no field for it
}
BAD_SEARCH_FIELDS = {"aggregate_id", "from", "tz", "limit", "value", "field"}


def _field_errors(response) -> dict[str, str]:
    page = BeautifulSoup(response.text, "html.parser")
    return {
        tag["id"].removesuffix("-error"): tag.get_text()
        for tag in page.find_all(class_="field-error")
    }


def test_search_page_reports_every_bad_field(login):
    response = login("auditor").get("/search", query_string=BAD_SEARCH)
    assert response.status_code == 400
    shown = _field_errors(response)
    assert set(shown) == BAD_SEARCH_FIELDS, shown
    assert "not a record id" in shown["aggregate_id"] and "ISO 8601" in shown["from"]
    page = BeautifulSoup(response.text, "html.parser")
    invalid = {tag["name"] for tag in page.find_all(attrs={"aria-invalid": "true"})}
    assert {"aggregate_id", "from", "value", "field"} <= invalid  # the text boxes


def test_api_400_lists_every_bad_field_and_keeps_error(login):
    response = login("auditor").get("/api/events", query_string=BAD_SEARCH)
    assert response.status_code == 400
    body = response.get_json()
    assert isinstance(body["error"], str) and "not a record id" in body["error"]
    assert {p["field"] for p in body["problems"]} == BAD_SEARCH_FIELDS
    assert all(p["message"] for p in body["problems"])


def test_one_bad_field_is_still_one_message(login):
    response = login("auditor").get("/api/events", query_string={"limit": "0"})
    assert response.status_code == 400
    assert response.get_json()["problems"] == [
        {"field": "limit", "message": response.get_json()["error"]}
    ]


@pytest.mark.parametrize(
    ("url", "fields"),
    [
        ("/reports/events.pdf?from=soon&to=later&tz=Nowhere", {"from", "to", "tz"}),
        ("/as-of?at=noon&tz=Nowhere", {"kind", "at", "tz"}),
        ("/diff?from=x&to=y", {"from", "to"}),
        ("/search?range=5y&actor=" + "a" * 400, {"range", "actor"}),
    ],
)
def test_forms_report_every_bad_field(login, url, fields):
    response = login("auditor").get(url)
    assert response.status_code == 400
    assert set(_field_errors(response)) == fields, response.text


def test_access_log_and_record_page_report_every_bad_argument(login, sample_record):
    client = login("auditor")
    response = client.get("/api/as-of?at=noon&limit=0")
    assert {p["field"] for p in response.get_json()["problems"]} == {"kind", "at", "limit"}
    response = client.get("/access-log?from=x&to=y&limit=0")
    assert response.status_code == 400
    assert "is not a date" in response.text and "limit must be" in response.text.lower()
    page = client.get(f"/aggregates/{sample_record}?at=noon&order=up&fields_from=x")
    assert page.status_code == 400
    assert {"at"} <= set(_field_errors(page))
    assert "Order must be" in page.text and "fields_from must be" in page.text


# --- No link a role cannot follow -------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    record: str
    first_event: str
    last_event: str
    request_id: str


@pytest.fixture(scope="module")
def sample(seeded_db) -> Sample:
    """A record with several events, some of them in a request (so its page has every kind
    of link: request, event, diff, field history)."""
    with psycopg.connect(libpq_url(seeded_db.admin)) as conn:
        record = conn.execute(
            "SELECT aggregate_id::text FROM audit_events WHERE metadata ? 'request_id' "
            "GROUP BY aggregate_id HAVING count(*) BETWEEN 5 AND 50 "
            "ORDER BY count(*) DESC, aggregate_id LIMIT 1"
        ).fetchone()[0]
        events = conn.execute(
            "SELECT event_id::text, metadata->>'request_id' FROM audit_events "
            "WHERE aggregate_id = %s ORDER BY created_at, seq",
            (record,),
        ).fetchall()
    request_id = next(request for _, request in events if request)
    return Sample(record, events[0][0], events[-1][0], request_id)


@pytest.fixture(scope="module")
def sample_record(sample) -> str:
    return sample.record


def _start_pages(sample: Sample) -> list[str]:
    """The main pages, with the seeded data (the seed ends on 2026-10-31)."""
    week = "from=2026-10-01T00:00:00Z&to=2026-10-08T00:00:00Z"
    record = sample.record
    return [
        "/",
        "/search",
        f"/search?{week}",
        f"/search?aggregate_id={record}",
        "/lookup",
        f"/aggregates/{record}",
        f"/aggregates/{record}?order=asc",
        f"/diff?from={sample.first_event}&to={sample.last_event}",
        f"/requests/{sample.request_id}",
        "/as-of",
        "/as-of?kind=USER&at=2026-10-01T00:00:00Z",
        "/reports",
        "/integrity",
        "/access-log",
    ]


SAME_SHAPE_LIMIT = 1  # links that differ only in ids or values: follow one of each


def _shape(href: str) -> tuple[str, tuple[str, ...]]:
    parts = urlsplit(href)
    path = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "<id>", parts.path)
    path = re.sub(r"/requests/[^/]+", "/requests/<id>", path)
    names = tuple(sorted({pair.split("=")[0] for pair in parts.query.split("&") if pair}))
    return path, names


def _links(html: str) -> list[str]:
    page = BeautifulSoup(html, "html.parser")
    found = []
    for anchor in page.find_all("a", href=True):
        href = anchor["href"].split("#")[0]
        parts = urlsplit(href)
        if not href or parts.scheme not in ("", "http") or parts.netloc not in ("", "localhost"):
            continue
        found.append(parts.path + (f"?{parts.query}" if parts.query else ""))
    return found


@pytest.mark.parametrize("role", ["auditor", "compliance", "support"])
def test_no_page_offers_a_link_its_reader_cannot_follow(app, sample, role):
    """Every same-site link on the main pages, as each role: none answers 403 (a link the
    role may not follow should not be shown), 404 or 5xx."""
    client = sign_in(app.test_client(), role)
    seen: set[str] = set()
    shapes: Counter = Counter()
    to_follow: list[tuple[str, str]] = []
    for start in _start_pages(sample):
        response = client.get(start)
        if response.status_code in (302, 303, 403):
            continue  # a page the role cannot open is not a page it sees links on
        assert response.status_code == 200, f"{start}: {response.status_code}"
        for href in _links(response.text):
            shape = _shape(href)
            if href in seen or shapes[shape] >= SAME_SHAPE_LIMIT:
                continue
            seen.add(href)
            shapes[shape] += 1
            to_follow.append((start, href))
    assert len(to_follow) > 10, to_follow  # the walk did reach the pages' links
    broken = []
    for start, href in to_follow:
        response = client.get(href)
        response.get_data()  # run a streamed export to its end
        response.close()
        if response.status_code in (403, 404) or response.status_code >= 500:
            broken.append(f"{start} -> {href}: {response.status_code}")
    assert not broken, f"{role} is offered links it cannot follow:\n" + "\n".join(broken)
