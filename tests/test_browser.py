"""The investigation flow in a real browser (Playwright + Debian's chromium): sign in,
search, open a record, compare two events, pick a "state at" time, follow a permalink.

Skipped without /usr/bin/chromium unless AUDIT_TEST_REQUIRE_BROWSER=1 (see conftest.py).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import page_errors

pytestmark = pytest.mark.browser


def test_search_open_a_record_compare_and_state_at(page, live_server, browser_login):
    errors = page_errors(page)
    browser_login("auditor")
    # Signed in, the home page sends an auditor to the search page.
    assert urlsplit(page.url).path == "/search"
    assert page.locator(".first-visit").is_visible()

    # Search: pick a type and a custom time range in the form.
    page.select_option("#f-type", ["USER_UPDATED"])
    page.fill("#f-from", "2025-06-01T00:00:00")
    page.fill("#f-to", "2026-11-01T00:00:00")
    assert page.locator("input[name=range][value=custom]").is_checked()
    page.click("#search-form button[type=submit]")
    page.wait_for_load_state()
    args = parse_qs(urlsplit(page.url).query)
    assert args["type"] == ["USER_UPDATED"] and args["range"] == ["custom"]
    assert "aggregate_id" not in args  # empty fields are not sent
    rows = page.locator("table.events tbody tr")
    assert rows.count() > 0
    assert page.locator(".description").inner_text().startswith("events of type USER_UPDATED")

    # Open the record of the first result.
    page.locator("a.record-link").first.click()
    page.wait_for_load_state()
    assert re.fullmatch(r"/aggregates/[0-9a-f-]{36}", urlsplit(page.url).path)
    events = page.locator("li.timeline-event")
    assert events.count() >= 2

    # Compare two events: the button waits for a "from" and a different "to".
    button = page.locator("#compare-button")
    assert button.is_disabled()
    events.nth(events.count() - 1).locator("input[name=from]").check()
    assert button.is_disabled()
    events.nth(0).locator("input[name=to]").check()
    assert button.is_enabled()
    record_url = page.url
    button.click()
    page.wait_for_load_state()
    assert urlsplit(page.url).path == "/diff"
    assert page.locator("table.changes tbody tr").count() >= 1
    assert "change" in page.locator(".comparison h3").last.inner_text()

    # Back on the record, pick a "state at" time before its first event.
    page.goto(record_url)
    first_time = page.locator("li.timeline-event").last.locator("time").first
    iso = first_time.get_attribute("datetime")
    year = int(iso[:4])
    page.fill("#at", f"{year - 1}-01-01T00:00:00")
    page.select_option("#state-tz", "Europe/Berlin")
    page.click("#state-at-form button[type=submit]")
    page.wait_for_load_state()
    args = parse_qs(urlsplit(page.url).query)
    assert args["tz"] == ["Europe/Berlin"]
    assert "did not exist yet" in page.locator(".state-summary").inner_text()
    # ... and the state after its latest event, with provenance.
    page.fill("#at", "2026-11-01T00:00:00")
    page.click("#state-at-form button[type=submit]")
    page.wait_for_load_state()
    assert page.locator("table.state tbody tr").count() > 0
    assert page.locator("table.state .provenance a").first.is_visible()

    # Follow the permalink: it opens the same view.
    summary = page.locator(".state-summary").inner_text()
    permalink = page.locator("a.permalink").get_attribute("href")
    page.goto(live_server + permalink)
    assert page.locator(".state-summary").inner_text() == summary
    assert not errors, errors


def test_event_permalink_and_search_permalink(page, live_server, browser_login):
    browser_login("auditor")
    page.goto(live_server + "/search?range=30d")
    page.goto(live_server + "/search?type=ORDER_CREATED&order=desc")
    page.locator("a.event-link").first.click()
    page.wait_for_load_state()
    fragment = urlsplit(page.url).fragment
    assert fragment.startswith("event-")
    target = page.locator(f"li#{fragment}")
    assert target.is_visible()
    assert target.locator(".event-type").inner_text() == "ORDER_CREATED"

    page.goto(live_server + "/search?type=ORDER_CREATED&order=desc")
    page.locator("a.older").click()
    page.wait_for_load_state()
    ids = page.locator("table.events tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.eventId)"
    )
    permalink = page.locator("a.permalink").get_attribute("href")
    page.goto(live_server + permalink)
    again = page.locator("table.events tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.eventId)"
    )
    assert again == ids


def test_support_looks_up_a_record(page, live_server, browser_login, seeded_db):
    import psycopg

    from dashboard.db import libpq_url

    with psycopg.connect(libpq_url(seeded_db.admin)) as conn:
        record = conn.execute("SELECT aggregate_id::text FROM audit_events LIMIT 1").fetchone()[0]
    browser_login("support")
    assert urlsplit(page.url).path == "/lookup"
    page.fill("#aggregate_id", "not an id")
    page.click(".lookup-form button[type=submit]")
    page.wait_for_load_state()
    assert "is not a record id" in page.locator("#aggregate_id-error").inner_text()
    page.fill("#aggregate_id", record)
    page.click(".lookup-form button[type=submit]")
    page.wait_for_load_state()
    assert urlsplit(page.url).path == f"/aggregates/{record}"
    assert page.locator(".record-id").inner_text() == record
