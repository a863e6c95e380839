"""The search page through the Flask test client, HTML read with a real parser."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
import sqlalchemy as sa
from bs4 import BeautifulSoup

from dashboard import queries
from dashboard.db import libpq_url
from dashboard.errors import TOO_BROAD

SEED_RANGE = "from=2025-05-01&to=2026-11-01"


def soup(response) -> BeautifulSoup:
    return BeautifulSoup(response.text, "html.parser")


def text_of(node) -> str:
    return " ".join(node.get_text(" ").split())


def result_rows(page: BeautifulSoup) -> list:
    table = page.find("table", class_="events")
    return table.find("tbody").find_all("tr") if table else []


def row_times(page: BeautifulSoup) -> list[datetime]:
    return [datetime.fromisoformat(row.find("time")["datetime"]) for row in result_rows(page)]


@pytest.fixture
def auditor(login):
    return login("auditor")


def test_home_sends_searchers_to_search_and_support_to_lookup(client, login):
    login("auditor")
    assert urlsplit(client.get("/").headers["Location"]).path == "/search"
    client.post("/logout", data={"csrf_token": _csrf(client)})
    login("support")
    assert urlsplit(client.get("/").headers["Location"]).path == "/lookup"


def _csrf(client) -> str:
    page = soup(client.get("/lookup"))
    return page.find("form", class_="sign-out").find("input", attrs={"name": "csrf_token"})["value"]


def test_first_visit_says_what_to_do_and_runs_no_search(auditor, seeded_db):
    response = auditor.get("/search")
    assert response.status_code == 200
    page = soup(response)
    assert page.find("section", class_="first-visit") is not None
    assert page.find("table", class_="events") is None
    # The event-type multi-select lists the types that exist, sorted.
    options = [o["value"] for o in page.find("select", attrs={"name": "type"}).find_all("option")]
    with psycopg.connect(libpq_url(seeded_db.admin)) as conn:
        existing = [r[0] for r in conn.execute("SELECT DISTINCT event_type FROM audit_events")]
    assert options == sorted(existing)
    nav = [a.get_text() for a in page.find("header").find_all("a")]
    assert {"Search", "Look up a record", "As of", "Access log"} <= set(nav)


def test_search_by_type_shows_matching_rows_newest_first_with_a_description(auditor):
    response = auditor.get("/search?type=USER_EMAIL_CHANGED&" + SEED_RANGE)
    assert response.status_code == 200
    page = soup(response)
    rows = result_rows(page)
    assert 0 < len(rows) <= 50
    for row in rows:
        assert row.find(class_="event-type").get_text() == "USER_EMAIL_CHANGED"
        assert row.find("a", class_="record-link")["href"].startswith("/aggregates/")
        cells = row.find_all("td")
        assert "email" in text_of(cells[-1])  # the fields it changed
        assert "+00:00" in row.find("time").get_text()  # UTC with offset
        assert row.find(class_="relative").get_text().endswith("ago")
    times = row_times(page)
    assert times == sorted(times, reverse=True)
    description = text_of(page.find(class_="description"))
    assert description == (
        "events of type USER_EMAIL_CHANGED from 2025-05-01 00:00:00+00:00 to "
        "2026-11-01 00:00:00+00:00, newest first"
    )
    chips = [text_of(li) for li in page.find("ul", class_="chips").find_all("li")]
    assert any("USER_EMAIL_CHANGED" in chip for chip in chips)
    # The form shows the search again.
    selected = page.find("select", attrs={"name": "type"}).find_all("option", selected=True)
    assert [o["value"] for o in selected] == ["USER_EMAIL_CHANGED"]


def test_order_toggle_and_keyset_pages(auditor):
    first = soup(auditor.get("/search?limit=25&" + SEED_RANGE))
    assert len(result_rows(first)) == 25
    older = first.find("a", class_="older")["href"]
    assert first.find("a", class_="newer") is None
    second = soup(auditor.get(older))
    first_times, second_times = row_times(first), row_times(second)
    assert len(second_times) == 25
    assert max(second_times) <= min(first_times)
    first_ids = {r["data-event-id"] for r in result_rows(first)}
    assert not first_ids & {r["data-event-id"] for r in result_rows(second)}
    # "Newer" from the second page is the first page again.
    back = soup(auditor.get(second.find("a", class_="newer")["href"]))
    assert [r["data-event-id"] for r in result_rows(back)] == [
        r["data-event-id"] for r in result_rows(first)
    ]
    flipped = soup(auditor.get(first.find("a", class_="flip-order")["href"]))
    times = row_times(flipped)
    assert times == sorted(times)
    assert "oldest first" in text_of(flipped.find(class_="description"))


def test_facets_count_a_bounded_filter_and_link_to_narrow_it(auditor, seeded_db):
    page = soup(auditor.get("/search?" + SEED_RANGE))
    types = page.find("section", class_="facet-type")
    counts = {
        li.find("a").get_text(): int(li.find(class_="count").get_text().replace(",", ""))
        for li in types.find_all("li")
    }
    with psycopg.connect(libpq_url(seeded_db.admin)) as conn:
        expected = dict(
            conn.execute("SELECT event_type, count(*) FROM audit_events GROUP BY 1").fetchall()
        )
    assert counts == expected
    link = types.find("a", string="USER_CREATED")["href"]
    assert parse_qs(urlsplit(link).query)["type"] == ["USER_CREATED"]
    actors = page.find("section", class_="facet-actor")
    assert actors.find("li") is not None


def test_facets_of_an_unbounded_search_are_counted_too(auditor, monkeypatch):
    page = soup(auditor.get("/search?order=desc"))
    assert {facet["class"][1] for facet in page.find_all("section", class_="facet")} == {
        "facet-type",
        "facet-actor",
        "facet-kind",
        "facet-day",
    }
    for facet in page.find_all("section", class_="facet"):
        assert facet.find("li") is not None and "(estimated)" not in text_of(facet)
    # Too broad to count in time: estimated from a sample, and labelled so.
    monkeypatch.setattr(queries, "FACET_MAX_ROWS", 100)
    page = soup(auditor.get("/search?order=asc"))
    for facet in page.find_all("section", class_="facet"):
        assert "(estimated)" in text_of(facet.find("h3"))


def test_empty_result_tells_what_to_do(auditor):
    response = auditor.get("/search?actor=nobody%40example.com")
    assert response.status_code == 200
    empty = soup(response).find(class_="empty-state")
    assert "No events match" in text_of(empty)
    assert "by nobody@example.com" in text_of(empty)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("aggregate_id=not-a-uuid", "aggregate_id"),
        ("from=yesterday", "from"),
        ("from=2026-02-01&to=2026-01-01", "to"),
        ("limit=5000", "limit"),
        ("field=address.city&value=Berlin", "value"),
        ("tz=Nowhere%2FLand", "tz"),
        ("range=2w", "range"),
        ("cursor=tampered", "cursor"),
    ],
)
def test_bad_input_shows_the_form_again_with_the_message_by_the_field(auditor, query, field):
    response = auditor.get("/search?" + query)
    assert response.status_code == 400
    page = soup(response)
    assert page.find("form", id="search-form") is not None
    if field == "cursor":  # no form field of its own: the message tops the form
        message = page.find("form", id="search-form").find(class_="error-message")
    else:
        message = page.find(id=f"{field}-error")
    assert message is not None and message.get_text().strip()
    assert page.find("table", class_="events") is None


def test_bad_input_keeps_what_was_typed(auditor):
    page = soup(auditor.get("/search?field=address.city&value=Berlin&actor=alice"))
    assert page.find("input", attrs={"name": "value"})["value"] == "Berlin"
    assert page.find("input", attrs={"name": "actor"})["value"] == "alice"
    assert "not a JSON value" in page.find(id="value-error").get_text()


def test_unknown_filter_name_is_400_naming_it(auditor):
    response = auditor.get("/search?colour=red")
    assert response.status_code == 400
    assert "Unknown filter 'colour'" in soup(response).find(class_="error-message").get_text()


def test_payload_field_filter(auditor):
    page = soup(auditor.get('/search?field=address.city&value="Berlin"&' + SEED_RANGE))
    rows = result_rows(page)
    assert rows
    assert 'address.city = "Berlin"' in text_of(page.find(class_="description"))


def test_a_preset_range_and_its_permalink(auditor):
    page = soup(auditor.get("/search?range=30d"))
    permalink = page.find("a", class_="permalink")["href"]
    args = parse_qs(urlsplit(permalink).query)
    start, end = datetime.fromisoformat(args["from"][0]), datetime.fromisoformat(args["to"][0])
    assert (end - start).days == 30
    assert "range" not in args
    # The preset stays chosen in the form; the permalink opens the same, pinned search.
    checked = page.find("input", attrs={"name": "range", "checked": True})
    assert checked["value"] == "30d"
    assert auditor.get(permalink).status_code == 200


def test_times_in_a_chosen_zone(auditor):
    page = soup(auditor.get("/search?from=2026-01-10T09:00&to=2026-01-11T09:00&tz=Europe/Berlin"))
    description = text_of(page.find(class_="description"))
    assert "from 2026-01-10 09:00:00+01:00 (Europe/Berlin)" in description
    for row in result_rows(page):
        assert row.find("time").get_text().endswith("+01:00")
    assert page.find("input", attrs={"name": "from"})["value"] == "2026-01-10 09:00:00"


def test_a_statement_timeout_says_too_broad_not_500(auditor, monkeypatch):
    def slow(*args, **kwargs):
        return sa.select(*queries.event_columns(kwargs.get("table") or args[1])).where(
            sa.func.pg_sleep(2).is_not(None)
        )

    monkeypatch.setattr(queries, "select_events", slow)
    auditor.application.extensions["audit"].settings = auditor.application.extensions[
        "audit"
    ].settings.replace(statement_timeout_ms=200)
    response = auditor.get("/search?actor=x")
    assert response.status_code == 503
    page = soup(response)
    assert TOO_BROAD in text_of(page.find(class_="error-message"))
    assert page.find("form", id="search-form") is not None


def test_search_needs_the_search_permission(client, login):
    login("support")
    assert client.get("/search").status_code == 403


def test_the_search_is_in_the_access_log(auditor, seeded_db):
    auditor.get("/search?type=USER_DELETED&" + SEED_RANGE)
    with psycopg.connect(libpq_url(seeded_db.admin)) as conn:
        action, filters, ids, count = conn.execute(
            "SELECT action, filters, aggregate_ids, row_count FROM audit_access_log "
            "WHERE route = '/search' ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert action == "search"
    assert filters["type"] == "USER_DELETED"
    assert ids and count == len(ids)
