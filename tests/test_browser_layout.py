"""Every page as every role, at a laptop's width (1366 px) and a phone's (390 px), in a real
browser (Playwright + Debian's chromium): nothing runs past the right edge, the columns that
are the point of a view are on screen, and axe-core finds no accessibility violation of
any impact.

One browser, one context per role (signed in once), one tab reused for every page; each
page is loaded once per width and checked there. axe runs at both widths as the auditor
(who sees every page) and at the laptop width as the other roles (masked values, fewer
links: the same markup otherwise), which keeps the module near a minute on an idle machine.
Skipped without /usr/bin/chromium unless AUDIT_TEST_REQUIRE_BROWSER=1 (see conftest.py).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

import psycopg
import pytest
from axe_playwright_python.sync_playwright import Axe
from conftest import TEST_USERS, sign_in_tab

from dashboard.db import libpq_url

pytestmark = pytest.mark.browser

WIDTHS = {"wide": (1366, 800), "phone": (390, 844)}
# A value with no place to break a line, a long array of objects, a long key name.
UNBROKEN = "x" * 3_000
ITEMS = [{"sku": f"SKU-{n:05d}", "name": f"Item number {n}", "qty": n % 7} for n in range(65)]
LONG_KEY = "a_rather_long_field_name_that_someone_chose_for_a_nested_setting_" * 2


@dataclass
class Layout:
    urls: object
    record: str = field(default_factory=lambda: str(uuid.uuid4()))
    events: list[str] = field(default_factory=list)
    order: str = ""
    request_id: str = ""


@pytest.fixture(scope="module")
def layout_db(make_database) -> Layout:
    """A small demo world plus one record with awkward values, in a database of its own."""
    from dashboard.seed import REFERENCE_UNTIL, seed_events

    data = Layout(make_database("audit_layout"))
    seed_events(data.urls.admin, events=400, seed=3, until=REFERENCE_UNTIL)
    payloads = [
        {
            "email": "long.values@example.com",
            "bio": UNBROKEN,
            "items": ITEMS,
            "settings": {LONG_KEY: {"deeper": ["a", "b"], "note": "short"}},
        },
        {"bio": UNBROKEN[:-1] + "y", "items": ITEMS[:-3], "nickname": "z" * 400},
    ]
    for event_type, payload in zip(("USER_CREATED", "USER_UPDATED"), payloads, strict=True):
        metadata = {"actor": "layout@example.com", "request_id": "req-" + "r" * 120}
        with psycopg.connect(libpq_url(data.urls.writer)) as conn:
            data.events.append(
                conn.execute(
                    "SELECT insert_audit_event(%s, %s, %s::jsonb, %s::jsonb)::text",
                    (data.record, event_type, json.dumps(payload), json.dumps(metadata)),
                ).fetchone()[0]
            )
    with psycopg.connect(libpq_url(data.urls.admin)) as conn:
        data.order = conn.execute(
            "SELECT aggregate_id::text FROM audit_events WHERE event_type = 'ORDER_UPDATED'"
            " GROUP BY aggregate_id ORDER BY count(*) DESC, aggregate_id LIMIT 1"
        ).fetchone()[0]
    data.request_id = metadata["request_id"]
    return data


@pytest.fixture
def app(make_app, layout_db):
    return make_app(database_url=layout_db.urls.reader, access_log_url=layout_db.urls.logger)


def pages(data: Layout) -> list[tuple[str, str, str | None]]:
    """(name, path, permission) of every page an investigator lands on."""
    record = f"/aggregates/{data.record}"
    first, second = data.events
    return [
        ("home", "/", None),
        ("search, first visit", "/search", "search"),
        ("search results", "/search?order=desc", "search"),
        (
            "search narrowed",
            "/search?type=USER_UPDATED&type=ORDER_UPDATED&from=2026-01-01T00:00:00Z"
            "&to=2026-11-01T00:00:00Z&order=asc&limit=25",
            "search",
        ),
        ("search error", "/search?aggregate_id=nonsense", "search"),
        ("lookup", "/lookup", "view_record"),
        ("record", record, "view_record"),
        ("record, field history", f"{record}?field=/bio", "view_record"),
        ("record, array history", f"{record}?field=/items", "view_record"),
        ("record as of a time", f"{record}?at=2000-01-01T00:00:00Z", "view_record"),
        ("order record", f"/aggregates/{data.order}", "view_record"),
        ("diff", f"/diff?from={first}&to={second}", "view_record"),
        ("as of, form", "/as-of", "search"),
        ("as of, users", "/as-of?kind=USER&at=2026-11-01T00:00:00", "search"),
        ("as of, orders", "/as-of?kind=ORDER&at=2026-11-01T00:00:00", "search"),
        ("request", f"/requests/{data.request_id}", "search"),
        ("reports form", "/reports", "export"),
        ("access log", "/access-log", "view_access_log"),
        ("integrity", "/integrity", "view_integrity"),
    ]


# The columns a view is for, which must be on screen at the laptop width.
KEY_COLUMNS = {
    "record, field history": [f"table.field-changes thead th:nth-child({n})" for n in (5, 6)],
    "record, array history": [f"table.field-changes thead th:nth-child({n})" for n in (5, 6)],
    "search results": ["table.events thead th:last-child"],
    # As many columns as the kind has fields: the table scrolls in its own box.
    "as of, users": ["table.as-of thead th:nth-child(3)"],
    "diff": ["table.changes thead th:last-child"],
}

# Only when the page is too wide: the first few elements past the edge, to say why.
OVERFLOW = """() => {
  const width = window.innerWidth;
  const wide = [];
  if (document.documentElement.scrollWidth <= width) return {scroll: width, inner: width};
  for (const el of document.body.querySelectorAll('*')) {
    const box = el.getBoundingClientRect();
    if (box.width && box.right > width + 0.5 && el.closest('[data-scrolls]') === null) {
      wide.push(el.tagName.toLowerCase() + (el.className ? '.' + el.className : '') +
                ' right=' + Math.round(box.right));
    }
  }
  return {scroll: document.documentElement.scrollWidth, inner: width, wide: wide.slice(0, 5)};
}"""


def _sign_in(context, live_server: str, role: str):
    return sign_in_tab(context.new_page(), live_server, role)


def _violations(results) -> list[str]:
    return [
        f"{item['id']} ({item['impact']}): {node['target']} — {node['failureSummary'][:160]}"
        for item in results.response["violations"]
        for node in item["nodes"][:3]
    ]


@pytest.mark.parametrize("role", sorted(TEST_USERS))
def test_every_page_fits_and_passes_axe(browser, live_server, layout_db, role):
    from dashboard.permissions import ROLE_PERMISSIONS

    allowed = ROLE_PERMISSIONS[role]
    axe = Axe()
    context = browser.new_context(locale="en-GB", timezone_id="UTC")
    context.set_default_timeout(15_000)
    problems: list[str] = []
    timings: list[tuple[float, str]] = []
    try:
        if role == "auditor":  # the sign-in page, once
            signed_out = context.new_page()
            for width, height in WIDTHS.values():
                signed_out.set_viewport_size({"width": width, "height": height})
                signed_out.goto(live_server + "/login")
                fit = signed_out.evaluate(OVERFLOW)
                if fit["scroll"] > fit["inner"]:
                    problems.append(f"login at {width} px: {fit['scroll']} px wide")
                found = _violations(axe.run(signed_out))
                problems.extend(f"login at {width} px: axe {line}" for line in found)
            signed_out.close()
        tab = _sign_in(context, live_server, role)
        for name, path, permission in pages(layout_db):
            if permission is not None and permission not in allowed:
                continue
            for width_name, (width, height) in WIDTHS.items():
                tab.set_viewport_size({"width": width, "height": height})
                response = tab.goto(live_server + path)
                assert response is not None
                where = f"{name} ({path}) at {width} px as {role}"
                if response.status >= 500:
                    problems.append(f"{where}: HTTP {response.status}")
                    continue
                # Checked unfolded: what a <details> shows on request must fit too.
                tab.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
                fit = tab.evaluate(OVERFLOW)
                if fit["scroll"] > fit["inner"]:
                    problems.append(f"{where}: {fit['scroll']} px wide: {fit['wide']}")
                if width_name == "wide":
                    for selector in KEY_COLUMNS.get(name, []):
                        box = tab.locator(selector).first.bounding_box()
                        if box is None or box["x"] + box["width"] > width:
                            problems.append(f"{where}: {selector} is off screen: {box}")
                if role != "auditor" and width_name != "wide":
                    continue  # same markup as the auditor's at this width; saves a minute
                started = time.monotonic()
                found = _violations(axe.run(tab))
                timings.append((time.monotonic() - started, where))
                problems.extend(f"{where}: axe {line}" for line in found)
    finally:
        context.close()
        print("slowest axe runs:", sorted(timings, reverse=True)[:3])
    assert not problems, "\n".join(problems)


def test_the_search_form_folds_on_a_phone_and_opens_on_a_laptop(browser, live_server):
    context = browser.new_context(locale="en-GB", timezone_id="UTC")
    try:
        tab = _sign_in(context, live_server, "auditor")
        for (width, height), is_open in ((WIDTHS["phone"], False), (WIDTHS["wide"], True)):
            tab.set_viewport_size({"width": width, "height": height})
            tab.goto(live_server + "/search?order=desc")
            folded = tab.locator("details.search-options")
            assert (folded.get_attribute("open") is not None) is is_open, width
            # Results start within the first screen on a phone, after the folded form.
            first = tab.locator("table.events tbody tr").first.bounding_box()
            assert first is not None
            if not is_open:
                assert first["y"] < height * 1.5, first
                folded.locator("summary").click()
                assert tab.locator("#f-actor").is_visible()
    finally:
        context.close()


def test_the_access_reason_prompt_and_a_missing_page_fit_and_pass_axe(browser, make_app, layout_db):
    """Pages the walk above does not reach: the reason prompt (an app that requires one)
    and the answer to an unknown record."""
    import threading

    from werkzeug.serving import make_server

    app = make_app(
        database_url=layout_db.urls.reader,
        access_log_url=layout_db.urls.logger,
        require_access_reason=True,
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    context = browser.new_context(locale="en-GB", timezone_id="UTC")
    problems: list[str] = []
    try:
        tab = _sign_in(context, base, "support")
        for path, expected in (
            (f"/aggregates/{layout_db.record}", "/access-reason"),
            (f"/aggregates/{uuid.uuid4()}", None),
        ):
            for width, height in WIDTHS.values():
                tab.set_viewport_size({"width": width, "height": height})
                tab.goto(base + path)
                if expected is not None:
                    assert tab.url.startswith(base + expected), tab.url
                fit = tab.evaluate(OVERFLOW)
                if fit["scroll"] > fit["inner"]:
                    problems.append(f"{tab.url} at {width} px: {fit['scroll']} px wide")
                found = _violations(Axe().run(tab))
                problems.extend(f"{tab.url} at {width} px: axe {line}" for line in found)
    finally:
        context.close()
        server.shutdown()
        thread.join(timeout=10)
    assert not problems, "\n".join(problems)
