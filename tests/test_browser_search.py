"""The search page's activity chart in a real browser: it renders, a bar click narrows.

Skipped without /usr/bin/chromium unless AUDIT_TEST_REQUIRE_BROWSER=1 (see conftest.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

pytestmark = pytest.mark.browser


def test_the_activity_chart_renders_and_a_bar_click_narrows_the_search(
    page, live_server, browser_login
):
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    browser_login("auditor")
    page.goto(
        live_server + "/search?type=USER_UPDATED&from=2026-10-01T00:00:00Z&to=2026-11-01T00:00:00Z"
    )
    chart = page.locator("svg.activity-chart")
    assert chart.is_visible()
    box = chart.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 100
    bars = page.locator("svg.activity-chart a.bar")
    assert bars.count() == 31  # one per day of October
    counts = [int(bars.nth(i).get_attribute("data-count")) for i in range(31)]
    busiest = counts.index(max(counts))
    fill = bars.nth(busiest).locator("rect.fill").bounding_box()
    assert fill is not None and fill["height"] > 50  # the tallest bar is drawn tall
    total = page.locator(".search-total").inner_text()
    assert total == f"{sum(counts):,} events"

    bars.nth(busiest).click()
    page.wait_for_load_state()
    query = parse_qs(urlsplit(page.url).query)
    start = datetime.fromisoformat(query["from"][0])
    assert datetime.fromisoformat(query["to"][0]) - start == timedelta(days=1)
    assert start == datetime.fromisoformat("2026-10-01T00:00:00+00:00") + timedelta(days=busiest)
    assert query["type"] == ["USER_UPDATED"]
    assert page.locator(".search-total").inner_text() == f"{max(counts):,} events"
    assert page.locator("svg.activity-chart a.bar").count() == 24  # that day, per hour
    assert page.locator("table.events tbody tr").count() == min(50, max(counts))
    # The copy buttons appear once the script runs (127.0.0.1 is a secure context).
    assert page.locator("button.copy-button").first.is_visible()
    assert errors == []
