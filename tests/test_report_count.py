"""The compliance report form's period presets and its count before generating
(dashboard/views/reports.py, dashboard/queries.py count_events) on the seeded database."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import psycopg
import pytest
from bs4 import BeautifulSoup

from dashboard import queries
from dashboard.db import libpq_url
from dashboard.filters import parse_event_filter
from dashboard.periods import PERIODS, period_bounds


def _soup(response) -> BeautifulSoup:
    return BeautifulSoup(response.text, "html.parser")


def _sql_count(seeded_db, where: str, params: dict) -> int:
    with psycopg.connect(libpq_url(seeded_db.admin)) as conn:
        query = f"SELECT count(*) FROM audit_events WHERE {where}"
        return conn.execute(query, params).fetchone()[0]


def _count_text(response) -> str:
    status = _soup(response).find(id="report-count")
    assert status is not None, "no count on the page"
    return " ".join(status.get_text().split())


def test_form_offers_every_period_preset_in_the_chosen_zone(login):
    response = login("compliance").get("/reports?tz=Asia/Tokyo&type=USER_CREATED&actor=x@y.z")
    assert response.status_code == 200
    links = {
        a["id"].removeprefix("period-"): a["href"]
        for a in _soup(response).select("ul.period-presets a")
    }
    assert set(links) == set(PERIODS)
    args = parse_qs(urlsplit(links["last-year"]).query)
    # Whole local days in the form's zone, the other fields kept, and counted at once.
    tokyo = ZoneInfo("Asia/Tokyo")
    start, end = period_bounds("last-year", datetime.now(UTC), tokyo)
    assert args["from"] == [start.astimezone(tokyo).strftime("%Y-01-01 00:00:00")]
    assert args["to"] == [end.astimezone(tokyo).strftime("%Y-01-01 00:00:00")]
    assert args["tz"] == ["Asia/Tokyo"]
    assert args["type"] == ["USER_CREATED"] and args["actor"] == ["x@y.z"]
    assert args["count"] == ["1"]
    assert urlsplit(links["last-year"]).path == "/reports"


def test_a_preset_link_fills_the_form_marks_itself_and_counts_exactly(login, seeded_db):
    client = login("compliance")
    form = _soup(client.get("/reports?tz=Europe/Berlin"))
    link = form.find("a", id="period-last-quarter")["href"]
    response = client.get(link)
    assert response.status_code == 200
    soup = _soup(response)
    assert soup.find("a", id="period-last-quarter")["aria-current"] == "true"
    assert soup.find("a", id="period-last-month").get("aria-current") is None
    args = parse_qs(urlsplit(link).query)
    assert soup.find("input", id="r-from")["value"] == args["from"][0]
    assert soup.find("input", id="r-to")["value"] == args["to"][0]
    berlin = ZoneInfo("Europe/Berlin")
    start = datetime.fromisoformat(args["from"][0]).replace(tzinfo=berlin)
    end = datetime.fromisoformat(args["to"][0]).replace(tzinfo=berlin)
    expected = _sql_count(
        seeded_db, "created_at >= %(start)s AND created_at < %(end)s", {"start": start, "end": end}
    )
    text = _count_text(response)
    assert f"This report would hold {expected:,} event" in text
    assert "about" not in text and "estimate" not in text


def test_count_button_counts_the_filter_exactly_without_javascript(login, seeded_db):
    client = login("compliance")
    form = _soup(client.get("/reports")).find("form", id="report-form")
    button = form.find("button", id="report-count-button")
    assert (button["formaction"], button["name"], button["value"]) == ("/reports", "count", "1")
    response = client.get(
        "/reports?from=2025-06-01T00:00&to=2025-09-01T00:00&tz=UTC&type=USER_UPDATED&count=1"
    )
    assert response.status_code == 200
    expected = _sql_count(
        seeded_db,
        "created_at >= '2025-06-01Z' AND created_at < '2025-09-01Z' "
        "AND event_type = 'USER_UPDATED'",
        {},
    )
    assert expected > 0
    text = _count_text(response)
    assert f"would hold {expected:,} events" in text
    assert "of type USER_UPDATED from 2025-06-01 00:00:00+00:00" in text
    # The form comes back filled in, ready for the PDF.
    soup = _soup(response)
    assert soup.find("input", id="r-from")["value"] == "2025-06-01T00:00"
    assert soup.find("option", value="USER_UPDATED").has_attr("selected")


def test_count_of_a_broad_period_is_the_planners_estimate_labelled(login, monkeypatch):
    monkeypatch.setattr(queries, "COUNT_MAX_ROWS", 10)
    response = login("compliance").get("/reports?from=2025-01-01&to=2027-01-01&count=1")
    assert response.status_code == 200
    text = _count_text(response)
    assert text.startswith("This report would hold about ")
    assert "(estimate from the database's statistics: too many to count quickly)" in text


def test_count_of_an_open_ended_period_is_an_estimate(login):
    text = _count_text(login("compliance").get("/reports?from=2025-01-01&count=1"))
    assert "about" in text and "the period is open-ended" in text


def test_count_with_a_bad_field_shows_the_form_with_the_reason(login):
    response = login("compliance").get("/reports?from=yesterday-ish&count=1")
    assert response.status_code == 400
    soup = _soup(response)
    assert soup.find(id="report-count") is None
    assert "is not a date or time" in response.text
    assert soup.select("ul.period-presets a")  # the presets still offered


def test_count_events_exact_estimate_and_stopped(app, monkeypatch):
    with app.app_context():
        engine = app.extensions["audit"].engine
        with engine.connect() as conn:
            conn.begin()
            bounded = parse_event_filter(
                {"from": "2025-06-01", "to": "2025-09-01", "type": "USER_UPDATED"}
            )
            exact = queries.count_events(conn, bounded, timeout_ms=5000, restore_timeout_ms=5000)
            assert exact.how == "exact" and exact.exact and exact.value > 3
            # The planner's figure is used as is when it is over the limit.
            broad = queries.count_events(
                conn, bounded, timeout_ms=5000, restore_timeout_ms=5000, estimate=10**9
            )
            assert (broad.value, broad.how) == (10**9, "estimate")
            # The planner underestimated: the exact count stops one past the limit.
            monkeypatch.setattr(queries, "COUNT_MAX_ROWS", 3)
            stopped = queries.count_events(
                conn, bounded, timeout_ms=5000, restore_timeout_ms=5000, estimate=1
            )
            assert (stopped.value, stopped.how) == (3, "at_least")
            # The transaction is still usable and its own limit restored.
            assert conn.execute(queries.sa.text("SHOW statement_timeout")).scalar() == "5s"


@pytest.mark.parametrize("name", sorted(PERIODS))
def test_every_preset_link_is_a_valid_report_filter(login, name):
    client = login("compliance")
    link = _soup(client.get("/reports?tz=America/New_York")).find("a", id=f"period-{name}")
    response = client.get(link["href"])
    assert response.status_code == 200
    assert _soup(response).find("a", id=f"period-{name}")["aria-current"] == "true"


def test_with_javascript_a_preset_takes_the_fields_as_typed(browser_login, live_server):
    page = browser_login("compliance")
    page.goto(live_server + "/reports?tz=UTC")
    page.select_option("#r-tz", "Asia/Tokyo")
    page.fill("#r-actor", "someone@example.com")
    page.click("#period-last-year")
    page.wait_for_selector("#report-count")
    args = parse_qs(urlsplit(page.url).query)
    assert args["tz"] == ["Asia/Tokyo"] and args["actor"] == ["someone@example.com"]
    assert args["count"] == ["1"] and args["from"][0].endswith("-01-01 00:00:00")
    assert page.get_attribute("#period-last-year", "aria-current") == "true"
