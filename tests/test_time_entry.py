"""Time entry and time zones on the pages (issue 12): 24-hour ISO text boxes everywhere,
any IANA zone accepted and an unknown one refused with a 400, one zone per page."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from bs4 import BeautifulSoup
from conftest import sign_in

from dashboard.db import libpq_url
from dashboard.views.present import input_time

ZONE = "Asia/Kathmandu"  # +05:45, and not among the zones the forms list by default


def soup(response) -> BeautifulSoup:
    return BeautifulSoup(response.text, "html.parser")


@pytest.fixture(scope="module")
def record(seeded_db) -> str:
    with psycopg.connect(libpq_url(seeded_db.admin)) as conn:
        return conn.execute(
            "SELECT aggregate_id::text FROM audit_events WHERE event_type = 'USER_CREATED' "
            "ORDER BY seq LIMIT 1"
        ).fetchone()[0]


def test_input_time_is_24_hour_iso_with_a_space():
    moment = datetime(2026, 6, 1, 17, 5, 9, tzinfo=UTC)
    assert input_time(moment, "UTC") == "2026-06-01 17:05:09"
    assert input_time(moment, ZONE) == "2026-06-01 22:50:09"
    assert input_time(moment.replace(microsecond=250_000), "UTC") == "2026-06-01 17:05:09.250"


def test_every_time_box_is_iso_text_read_in_the_pages_zone(login, record):
    auditor = login("auditor")
    pages = {
        f"/aggregates/{record}": ("at", "at"),
        "/as-of?kind=USER": ("as-of-at", "at"),
        "/search?range=custom": ("f-from", "from"),
        "/reports": ("r-from", "from"),
    }
    for url, (box_id, _) in pages.items():
        page = soup(auditor.get(url) if url != "/reports" else login("compliance").get(url))
        box = page.find("input", id=box_id)
        assert box is not None, url
        assert box["type"] == "text", url  # not datetime-local: the locale's 12-hour format
        assert box["placeholder"] == "YYYY-MM-DD HH:MM:SS", url
        assert page.find("input", type="datetime-local") is None, url
    # A 24-hour time with a space, read in the chosen zone (any IANA zone), and shown back
    # the same way.
    response = auditor.get(
        f"/aggregates/{record}", query_string={"at": "2026-06-01 14:30", "tz": ZONE}
    )
    assert response.status_code == 200
    page = soup(response)
    assert page.find("input", id="at")["value"] == "2026-06-01 14:30:00"
    assert page.find("select", id="state-tz").find("option", selected=True)["value"] == ZONE
    permalink = parse_qs(urlsplit(page.find("a", class_="permalink")["href"]).query)
    assert datetime.fromisoformat(permalink["at"][0]) == datetime(2026, 6, 1, 8, 45, tzinfo=UTC)
    response = auditor.get(
        "/as-of", query_string={"kind": "USER", "at": "2026-06-01 14:30:05", "tz": ZONE}
    )
    assert response.status_code == 200
    assert soup(response).find("input", id="as-of-at")["value"] == "2026-06-01 14:30:05"
    # The zone lists are only a choice: any IANA zone is accepted, an unknown one refused.
    for url in (f"/aggregates/{record}?", "/as-of?kind=USER&", "/search?", "/diff?from=&to=&"):
        response = auditor.get(url + "tz=Mars/Olympus")
        assert response.status_code == 400, url
        assert "'Mars/Olympus' is not a known time zone" in soup(response).get_text(), url


def test_the_record_page_shows_every_time_in_its_zone(client, login, record, app):
    # Someone else opens the record first, so "who viewed" has an entry.
    sign_in(app.test_client(), "compliance").get(f"/aggregates/{record}")
    auditor = login("auditor")
    page = soup(auditor.get(f"/aggregates/{record}", query_string={"tz": ZONE}))
    viewers = page.select("section.viewers time")
    assert viewers, "the compliance officer's visit is listed"
    assert all(t.get_text().endswith("+05:45") for t in viewers)
    times = page.select("time")
    assert times and all(t.get_text().endswith("+05:45") for t in times if t.get_text()[:2] == "20")
    # Comparing from the timeline keeps the page's zone.
    form = page.find("form", id="compare-form")
    assert form.find("input", attrs={"name": "tz", "type": "hidden"})["value"] == ZONE
    default = soup(auditor.get(f"/aggregates/{record}"))
    assert default.find("form", id="compare-form").find("input", attrs={"name": "tz"}) is None
