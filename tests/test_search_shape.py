"""The shape of a search: short ids pasted back, totals, facets and the activity chart.

A small database of hand-made events (two records sharing their first 8 digits, a burst)
beside the suite's seeded one; pages through the Flask test client, read with a parser.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, unquote, urlsplit

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


# --- Totals and the activity chart ------------------------------------------------------------

ONE_DAY = "from=2026-03-02T00:00:00Z&to=2026-03-03T00:00:00Z"


def chart_bars(page: BeautifulSoup) -> list:
    return page.find("svg", class_="activity-chart").find_all("a", class_="bar")


def test_choose_bucket_keeps_bars_few_and_narrow():
    from dashboard.shape import MAX_BARS, bar_count, choose_bucket

    cases = {
        timedelta(minutes=90): "minute",
        timedelta(hours=1): "minute",
        timedelta(hours=3): "hour",
        timedelta(days=4): "hour",
        timedelta(days=30): "day",
        timedelta(days=400): "week",
    }
    for span, expected in cases.items():
        name, width = choose_bucket(DAY, DAY + span)
        assert name == expected, span
        assert bar_count(DAY, DAY + span, width) <= MAX_BARS or name == "week"


def test_a_burst_shows_as_the_tallest_bar_and_every_bar_narrows_to_its_hour(shape_client):
    page = soup(shape_client.get(f"/search?{ONE_DAY}&type=USER_UPDATED&type=USER_CREATED"))
    svg = page.find("svg", class_="activity-chart")
    # A group, not an img: its bars are links (axe: nested-interactive), named by its
    # title and description.
    assert svg["role"] == "group"
    assert svg["aria-labelledby"] == "activity-svg-title activity-svg-desc"
    assert svg.find("title").get_text() == "Events per hour"
    assert "busiest hour had 31 events" in svg.find("desc").get_text()
    bars = chart_bars(page)
    assert len(bars) == 24
    counts = [int(bar["data-count"]) for bar in bars]
    assert counts[3] == 31 and counts[0] == 3 and counts[1] == 1
    heights = [float(bar.find("rect", class_="fill")["height"]) for bar in bars]
    assert heights[3] == max(heights) and heights[3] > 10 * heights[1]
    query = parse_qs(urlsplit(bars[3]["href"]).query)
    assert query["from"] == ["2026-03-02T03:00:00+00:00"]
    assert query["to"] == ["2026-03-02T04:00:00+00:00"]
    assert query["type"] == ["USER_UPDATED", "USER_CREATED"]
    narrowed = soup(shape_client.get(bars[3]["href"]))
    assert narrowed.find(class_="search-total").get_text(" ", strip=True) == "31 events"
    assert len(chart_bars(narrowed)) == 60  # that hour, per minute
    # The same counts as a table, for screen readers and without SVG.
    table_rows = page.find("details", class_="activity-table").find("tbody").find_all("tr")
    assert len(table_rows) == 24 and table_rows[3].find("a")["href"] == bars[3]["href"]


def test_an_exact_total_is_labelled_plainly(shape_client):
    page = soup(shape_client.get(f"/search?{ONE_DAY}"))
    assert page.find(class_="search-total").get_text(" ", strip=True) == "56 events"
    page = soup(shape_client.get(f"/search?aggregate_id={LONER}"))
    assert page.find(class_="search-total").get_text(" ", strip=True) == "24 events"
    assert sum(int(bar["data-count"]) for bar in chart_bars(page)) == 24
    # A record's chart spans its own life, not the table's: TWIN_B has one event.
    page = soup(shape_client.get(f"/search?aggregate_id={TWIN_B}"))
    assert page.find("svg", class_="activity-chart").find("title").get_text() == (
        "Events per minute"
    )
    assert [bar["data-count"] for bar in chart_bars(page)] == ["1"]


def test_too_many_rows_give_an_estimate_and_sampled_counts_labelled_as_such(
    shape_client, monkeypatch
):
    monkeypatch.setattr(queries, "FACET_MAX_ROWS", 10)
    page = soup(shape_client.get(f"/search?{ONE_DAY}"))
    total = page.find(class_="search-total").get_text(" ", strip=True)
    assert total.startswith("About 56 events (an estimate")  # the planner's, after ANALYZE
    svg = page.find("svg", class_="activity-chart")
    assert "estimated from a sample" in svg.find("title").get_text()
    for facet in page.find_all("section", class_="facet"):
        assert "(estimated)" in facet.find("h3").get_text()


def test_a_shape_that_runs_out_of_time_says_not_counted_and_the_page_stands(
    shape_client, monkeypatch
):
    import sqlalchemy as sa

    real = queries.select_search_shape

    def slow(*args, **kwargs):
        return real(*args, **kwargs).where(sa.func.pg_sleep(1).is_not(None))

    monkeypatch.setattr(queries, "select_search_shape", slow)
    extension = shape_client.application.extensions["audit"]
    extension.settings = extension.settings.replace(facet_timeout_ms=100)
    response = shape_client.get(f"/search?{ONE_DAY}&actor=ops@example.com")
    assert response.status_code == 200
    page = soup(response)
    assert "counting took too long" in page.find(class_="activity-not-counted").get_text()
    assert page.find(class_="search-total").get_text(" ", strip=True).startswith("About ")
    for facet in page.find_all("section", class_="facet"):
        assert "Not counted: counting took too long" in facet.get_text(" ")
    assert len(page.find("table", class_="events").find("tbody").find_all("tr")) == 50


def test_counts_that_ran_out_of_time_are_not_tried_again_on_every_page(shape_client, monkeypatch):
    """Counts that cannot finish within the limit say "not counted", and the search's next
    pages, within the minute the counts are kept, say the same at once: they do not wait
    the whole limit again (a month's search on a 10M-event Citus table waited 0.9 s a page,
    every page)."""
    import sqlalchemy as sa

    real = queries.select_search_shape
    made: list[int] = []

    def slow(*args, **kwargs):
        made.append(1)
        return real(*args, **kwargs).where(sa.func.pg_sleep(1).is_not(None))

    monkeypatch.setattr(queries, "select_search_shape", slow)
    extension = shape_client.application.extensions["audit"]
    extension.settings = extension.settings.replace(facet_timeout_ms=100)
    search = f"/search?{ONE_DAY}&actor=ops@example.com&limit=10"
    first = soup(shape_client.get(search))
    assert "counting took too long" in first.find(class_="activity-not-counted").get_text()
    assert made == [1]
    older = first.find("a", class_="older")["href"]
    for path in (search, older):
        page = soup(shape_client.get(path))
        assert "counting took too long" in page.find(class_="activity-not-counted").get_text()
        assert page.find("table", class_="events").find("tbody").find_all("tr")
    assert made == [1], "the counts were tried again"


def test_facets_by_kind_and_day_on_any_search_link_to_narrow_it(shape_client):
    page = soup(shape_client.get("/search?order=desc"))  # unbounded: counted all the same
    kinds = page.find("section", class_="facet-kind")
    assert [a.get_text() for a in kinds.find_all("a")] == ["USER"]
    assert kinds.find(class_="count").get_text() == "56"
    assert parse_qs(urlsplit(kinds.find("a")["href"]).query)["kind"] == ["USER"]
    days = page.find("section", class_="facet-day")
    day_link = days.find("a", string="2026-03-02")
    query = parse_qs(urlsplit(day_link["href"]).query)
    assert query["from"] == ["2026-03-02T00:00:00+00:00"]
    assert query["to"] == ["2026-03-03T00:00:00+00:00"]
    types = page.find("section", class_="facet-type")
    assert {
        li.find("a").get_text(): li.find(class_="count").get_text() for li in types.find_all("li")
    } == {
        "USER_UPDATED": "53",
        "USER_CREATED": "3",
    }
    assert page.find(class_="search-total").get_text(" ", strip=True) == "56 events"


def test_the_day_facet_follows_the_search_zone(shape_client):
    # 23:00 UTC on March 2nd is March 3rd in Tokyo.
    page = soup(shape_client.get(f"/search?{ONE_DAY}&tz=Asia/Tokyo"))
    days = {a.get_text() for a in page.find("section", class_="facet-day").find_all("a")}
    assert days == {"2026-03-02", "2026-03-03"}


def test_the_page_counts_everything_in_one_scan_and_reuses_it(shape_client):
    import sqlalchemy as sa

    audit = shape_client.application.extensions["audit"]
    audit.facet_engine()  # the counts' own engine, made on first use
    engines = audit.engines()
    seen: list[str] = []

    def note(conn, cursor, statement, *args):
        seen.append(statement)

    for engine in engines:
        sa.event.listen(engine, "before_cursor_execute", note)
    try:
        shape_client.get(f"/search?{ONE_DAY}&actor=ops@example.com")
        first = list(seen)
        seen.clear()
        shape_client.get(f"/search?{ONE_DAY}&actor=ops@example.com")
        again = list(seen)
    finally:
        for engine in engines:
            sa.event.remove(engine, "before_cursor_execute", note)
    assert sum("GROUPING SETS" in statement for statement in first) == 1
    assert sum(statement.startswith("EXPLAIN") for statement in first) == 1
    assert not any("GROUPING SETS" in s or s.startswith("EXPLAIN") for s in again)


def test_counts_reused_behind_another_script_root_link_there(shape_client):
    # The chart and facet links are built once with the counts reused for a minute; an app
    # mounted under a prefix (SCRIPT_NAME) must not be sent links made for another root.
    url = f"/search?{ONE_DAY}&type=USER_UPDATED"
    plain = soup(shape_client.get(url))
    mounted = soup(shape_client.get(url, environ_overrides={"SCRIPT_NAME": "/audit"}))
    again = soup(shape_client.get(url))
    for page, root in ((plain, "/search?"), (mounted, "/audit/search?"), (again, "/search?")):
        links = [bar["href"] for bar in chart_bars(page)]
        links += [a["href"] for a in page.find("aside", class_="facets").find_all("a")]
        assert len(links) > 24
        assert all(link.startswith(root) for link in links), links
    assert [bar["href"] for bar in chart_bars(plain)] == [bar["href"] for bar in chart_bars(again)]


def test_the_chart_and_facets_are_drawn_once_per_cached_count(shape_client, monkeypatch):
    """The activity section and the facet lists are rendered with the counts and reused
    with them (a minute): the next pages of a search do not draw them again, a search in
    another zone (another cache key) does, and its intervals are in its zone."""
    from dashboard.views import search as search_view

    drawn = []
    real = search_view._drawn
    monkeypatch.setattr(
        search_view, "_drawn", lambda f, outline: drawn.append(1) or real(f, outline)
    )
    url = f"/search?{ONE_DAY}&type=USER_CREATED"
    first = soup(shape_client.get(url))
    again = soup(shape_client.get(url))
    assert len(drawn) == 1
    assert str(first.find("section", class_="activity")) == str(
        again.find("section", class_="activity")
    )
    assert first.find("aside", class_="facets").get_text() == (
        again.find("aside", class_="facets").get_text()
    )
    paris = soup(shape_client.get(url + "&tz=Europe/Paris"))
    assert len(drawn) == 2
    first_bar = paris.find("details", class_="activity-table").find("a")
    assert "from=2026-03-02T01:00:00+01:00" in unquote(first_bar["href"])
    assert first_bar.get_text() != first.find("details", class_="activity-table").find("a").text


def test_stored_markup_in_the_drawn_facets_and_chart_is_escaped(make_database, make_app):
    """The activity section and facets are rendered apart from the page: still autoescaped,
    so an event type or actor holding markup shows as text."""
    urls = make_database("audit_shape_markup")
    evil_type, evil_actor = "<script>alert(1)</script>", "<img src=x onerror=alert(2)>"
    with psycopg.connect(libpq_url(urls.admin)) as conn:
        conn.execute(
            "INSERT INTO audit_events (event_id, aggregate_id, event_type, payload, metadata,"
            " created_at) VALUES (gen_random_uuid(), gen_random_uuid(), %s, '{}', %s, %s)",
            (evil_type, json.dumps({"actor": evil_actor}), DAY + timedelta(hours=5)),
        )
    app = make_app(database_url=urls.reader, access_log_url=urls.logger)
    response = sign_in(app.test_client(), "auditor").get(f"/search?{ONE_DAY}")
    assert response.status_code == 200
    assert evil_type not in response.text and evil_actor not in response.text
    facets = soup(response).find("aside", class_="facets")
    assert evil_type in facets.find("section", class_="facet-type").get_text()
    assert evil_actor in facets.find("section", class_="facet-actor").get_text()
