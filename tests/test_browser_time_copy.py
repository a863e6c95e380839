"""Copy buttons and the browser's own time zone in a real browser (Playwright + Debian's
chromium; skipped without it, see conftest.py): a browser in Kathmandu is offered its
zone, the page then shows every time there, a 24-hour time typed in the box is read
there, and the copy buttons put full ids and the permalink on the clipboard.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from conftest import page_errors, sign_in_tab

from dashboard.db import libpq_url

pytestmark = pytest.mark.browser

# +05:45, not among the zones the forms list by default. Chromium (ICU) reports it by its
# older name, which zoneinfo knows too.
ZONE = "Asia/Kathmandu"
ZONE_NAMES = ("Asia/Kathmandu", "Asia/Katmandu")


@pytest.fixture
def page_in(browser, live_server):
    """``page_in(zone)``: a signed-in auditor in a browser in ``zone`` whose US locale would
    show a datetime-local box as 12-hour AM/PM; the clipboard may be read back."""
    contexts = []

    def open_page(zone: str):
        context = browser.new_context(locale="en-US", timezone_id=zone)
        contexts.append(context)
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server)
        context.set_default_timeout(15_000)
        return sign_in_tab(context.new_page(), live_server, "auditor")

    try:
        yield open_page
    finally:
        for context in contexts:
            context.close()


def test_the_browsers_zone_is_offered_and_copy_buttons_copy(page_in, live_server, seeded_db):
    page = page_in(ZONE)
    errors = page_errors(page)
    with psycopg.connect(libpq_url(seeded_db.admin)) as conn:
        record = conn.execute(
            "SELECT aggregate_id::text FROM audit_events "
            "WHERE event_type = 'USER_CREATED' ORDER BY seq LIMIT 1"
        ).fetchone()[0]
    page.goto(f"{live_server}/aggregates/{record}")

    # The zone select offers the browser's own zone (added by app.js), not selected.
    own = page.locator("#state-tz option.browser-zone")
    zone = own.get_attribute("value")
    assert zone in ZONE_NAMES
    assert own.inner_text() == f"{zone} (this browser)"
    assert page.locator("#state-tz").input_value() == "UTC"

    # Choose it and type a 24-hour time: the server reads it there, every time is there.
    page.select_option("#state-tz", zone)
    page.fill("#at", "2026-06-01 14:30")
    page.click("#state-at-form button[type=submit]")
    page.wait_for_load_state()
    args = parse_qs(urlsplit(page.url).query)
    assert args["tz"] == [zone]
    assert page.locator("#at").input_value() == "2026-06-01 14:30:00"
    assert page.locator("#state-tz").input_value() == zone
    assert page.locator("#state-tz option:checked").inner_text() == f"{zone} (this browser)"
    assert (
        page.locator("#state-tz option").evaluate_all(
            "options => options.filter(o => o.value === '" + zone + "').length"
        )
        == 1
    )
    summary_time = page.locator(".state-summary time")
    assert summary_time.inner_text() == "2026-06-01 14:30:00+05:45"
    assert datetime.fromisoformat(summary_time.get_attribute("datetime")) == datetime(
        2026, 6, 1, 8, 45, tzinfo=UTC
    )

    # Copy buttons: shown by app.js, each puts its full value on the clipboard.
    record_copy = page.locator(".record-header button.copy-button").first
    assert record_copy.is_visible()
    record_copy.click()
    assert page.evaluate("navigator.clipboard.readText()") == record
    assert record_copy.inner_text() == "Copied"
    first_event = page.locator("li.timeline-event").first
    event = first_event.get_attribute("id").removeprefix("event-")
    first_event.locator("button.copy-button").click()
    assert page.evaluate("navigator.clipboard.readText()") == event
    page.locator(".record-facts button.copy-button").click()
    permalink = page.locator(".record-facts a.permalink").get_attribute("href")
    assert page.evaluate("navigator.clipboard.readText()") == live_server + permalink
    assert not errors, errors


def test_a_listed_zone_under_another_name_is_labelled_not_repeated(page_in, live_server):
    # Chromium names Kolkata "Asia/Calcutta"; the forms list "Asia/Kolkata".
    page = page_in("Asia/Kolkata")
    page.goto(live_server + "/as-of")
    own = page.locator("#as-of-tz option.browser-zone")
    assert own.get_attribute("value") == "Asia/Kolkata"
    assert own.inner_text() == "Asia/Kolkata (this browser)"
    values = page.locator("#as-of-tz option").evaluate_all("options => options.map(o => o.value)")
    assert "Asia/Calcutta" not in values and values.count("Asia/Kolkata") == 1
