"""The compare page (issue 12): a changed string highlighted within, unchanged fields on
request, links to the full state at each end, full ids with copy buttons, one time zone
per page, masking kept, and bounded work on a 1 MB value."""

from __future__ import annotations

import json
import uuid
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from bs4 import BeautifulSoup
from conftest import sign_in

from dashboard.db import libpq_url
from dashboard.masking import MASK

RECORD = str(uuid.UUID("c0ba7e00-0000-4000-8000-000000000001"))
BIG_RECORD = str(uuid.UUID("c0ba7e00-0000-4000-8000-000000000002"))
DELETED_RECORD = str(uuid.UUID("c0ba7e00-0000-4000-8000-000000000003"))
MEGABYTE = "lorem ipsum " * 87_382  # about 1 MB

# (type, payload, time). The third event shares the second's time (one transaction).
EVENTS = [
    (
        "USER_CREATED",
        {
            "name": "zq46 Ada",
            "title": "Ada <b>Lovelace</b>",
            "depot": {"label": "Nørregade 4", "city": "København"},
            "address": {"street": "zq41 Vestergade 12"},
            "email": "zq42@example.com",
            "phone": "zq43",
            "plan": "basic",
        },
        "2025-09-02T10:00:00Z",
    ),
    (
        "USER_UPDATED",
        {
            "name": "zq47 Ada",
            "title": "Ada <i>Lovelace</i>",
            "depot": {"label": "Nørregade 86"},
            "address": {"street": "zq44 Vestergade 13"},
            "email": "zq45@example.com",
        },
        "2025-09-03T10:00:00Z",
    ),
    ("USER_UPDATED", {"plan": "pro"}, "2025-09-03T10:00:00Z"),
]
SENTINELS = ("zq41", "zq42", "zq43", "zq44", "zq45", "zq46", "zq47")


@pytest.fixture(scope="module")
def compare_db(make_database):
    urls = make_database("audit_compare")
    with psycopg.connect(libpq_url(urls.admin)) as conn:
        for event_type, payload, at in EVENTS:
            conn.execute(
                "INSERT INTO audit_events (aggregate_id, event_type, payload, metadata, "
                "created_at) VALUES (%s, %s, %s, %s, %s)",
                (RECORD, event_type, json.dumps(payload), '{"actor": "ops"}', at),
            )
        for record, event_type, payload, at in [
            (BIG_RECORD, "NOTE_CREATED", {"text": MEGABYTE + "Nørregade 4"}, "2025-09-02T10:00Z"),
            (BIG_RECORD, "NOTE_UPDATED", {"text": MEGABYTE + "Nørregade 86"}, "2025-09-03T10:00Z"),
            (DELETED_RECORD, "TAG_CREATED", {"label": "urgent", "plan": "x"}, "2025-09-02T10:00Z"),
            (DELETED_RECORD, "TAG_DELETED", {}, "2025-09-03T10:00Z"),
        ]:
            conn.execute(
                "INSERT INTO audit_events (aggregate_id, event_type, payload, created_at) "
                "VALUES (%s, %s, %s, %s)",
                (record, event_type, json.dumps(payload), at),
            )
        conn.commit()
        ids = {
            record: [
                row[0]
                for row in conn.execute(
                    "SELECT event_id::text FROM audit_events WHERE aggregate_id = %s ORDER BY seq",
                    (record,),
                )
            ]
            for record in (RECORD, BIG_RECORD, DELETED_RECORD)
        }
    return urls, ids


@pytest.fixture
def compare_app(make_app, compare_db):
    urls, _ = compare_db
    return make_app(database_url=urls.reader, access_log_url=urls.logger)


@pytest.fixture
def auditor(compare_app):
    return sign_in(compare_app.test_client(), "auditor")


@pytest.fixture
def support(compare_app):
    return sign_in(compare_app.test_client(), "support")


@pytest.fixture
def events(compare_db):
    return compare_db[1][RECORD]


def soup(response) -> BeautifulSoup:
    return BeautifulSoup(response.text, "html.parser")


def rows_by_path(page: BeautifulSoup) -> dict:
    return {row.find("code")["title"]: row for row in page.select("table.changes tbody tr")}


def test_a_changed_string_is_highlighted_within_and_escaped(auditor, events):
    response = auditor.get("/diff", query_string={"from": events[0], "to": events[1]})
    assert response.status_code == 200
    rows = rows_by_path(soup(response))
    street = rows["/depot/label"]
    assert street.select_one("td.old code").get_text() == '"Nørregade 4"'
    assert [d.get_text() for d in street.select("td.old del")] == ["4"]
    assert [i.get_text() for i in street.select("td.new ins")] == ["86"]
    # Markup in a value stays text: only the differing word is marked, nothing is a tag.
    title = rows["/title"]
    assert title.select_one("td.old code").get_text() == '"Ada <b>Lovelace</b>"'
    assert [d.get_text() for d in title.select("td.old del")] == ["b", "b"]
    assert [i.get_text() for i in title.select("td.new ins")] == ["i", "i"]
    assert title.find("b") is None and title.find("i") is None
    assert "&lt;<del>b</del>&gt;Lovelace&lt;/<del>b</del>&gt;" in response.text


def test_support_sees_highlights_but_never_a_masked_character(support, events):
    for args in ({}, {"unchanged": "1"}):
        response = support.get("/diff", query_string={"from": events[0], "to": events[1], **args})
        assert response.status_code == 200
        leaked = [sentinel for sentinel in SENTINELS if sentinel in response.text]
        assert not leaked, (args, leaked)
        rows = rows_by_path(soup(response))
        # The visible field is highlighted for support too ...
        assert [i.get_text() for i in rows["/depot/label"].select("td.new ins")] == ["86"]
        # ... the masked ones show the mask on both sides and nothing marked inside.
        for path in ("/email", "/address/street", "/name"):
            row = rows[path]
            assert row.select_one("td.old code").get_text() == f'"{MASK}"'
            assert row.select_one("td.new code").get_text() == f'"{MASK}"'
            assert not row.select("del, ins")
    rows = rows_by_path(soup(response))
    assert rows["/phone"].select_one("td.new code").get_text() == f'"{MASK}"'


def test_unchanged_fields_are_shown_on_request(auditor, events):
    base = {"from": events[0], "to": events[2]}
    page = soup(auditor.get("/diff", query_string=base))
    changed = [row.find("code")["title"] for row in page.select("table.changes tbody tr")]
    assert "change-unchanged" not in str(page.select("table.changes tbody tr"))
    toggle = page.find("a", class_="toggle-unchanged")
    assert parse_qs(urlsplit(toggle["href"]).query) == {
        "from": [events[0]],
        "to": [events[2]],
        "unchanged": ["1"],
    }
    response = auditor.get(toggle["href"])
    assert response.status_code == 200
    page = soup(response)
    rows = page.select("table.changes tbody tr")
    paths = [row.find("code")["title"] for row in rows]
    # The state's order, changes in their places; unchanged fields the same on both sides.
    # (PostgreSQL's jsonb orders keys by length, then bytes.)
    assert paths == [
        "/name",
        "/plan",
        "/depot/city",
        "/depot/label",
        "/email",
        "/phone",
        "/title",
        "/address/street",
    ]
    assert [
        p for p, row in zip(paths, rows, strict=True) if "change-unchanged" not in row["class"]
    ] == changed
    city = rows[paths.index("/depot/city")]
    assert "change-unchanged" in city["class"]
    assert (
        city.select_one("td.old").get_text()
        == city.select_one("td.new").get_text()
        == '"København"'
    )
    assert page.find("a", class_="toggle-unchanged").get_text() == "Hide unchanged fields"
    # The swap and the permalink keep the choice.
    swap = parse_qs(urlsplit(page.find("a", class_="swap")["href"]).query)
    assert swap["unchanged"] == ["1"] and swap["from"] == [events[2]]
    assert "unchanged=1" in page.find("a", class_="permalink")["href"]


def test_a_bad_unchanged_value_is_a_400_with_the_form(auditor, events):
    response = auditor.get(
        "/diff", query_string={"from": events[0], "to": events[1], "unchanged": "yes"}
    )
    assert response.status_code == 400
    assert "unchanged is 1 (show) or 0 (hide)" in response.text


def test_links_to_the_full_state_at_from_and_at_to(auditor, events):
    page = soup(
        auditor.get(
            "/diff", query_string={"from": events[0], "to": events[1], "tz": "Asia/Kathmandu"}
        )
    )
    at_from = page.find("a", class_="state-at-from")["href"]
    at_to = page.find("a", class_="state-at-to")["href"]
    assert urlsplit(at_from).fragment == "state"
    assert parse_qs(urlsplit(at_to).query)["tz"] == ["Asia/Kathmandu"]
    for url, street in ((at_from, '"Nørregade 4"'), (at_to, '"Nørregade 86"')):
        record = soup(auditor.get(url))
        state = {
            row.find("th").get_text(): row.find("td").get_text()
            for row in record.select("table.state tbody tr")
        }
        assert state["depot.label"] == street
        assert record.select_one(".state-summary time").get_text().endswith("+05:45")
    # "To" shares its time with a later event: the page says the state then includes it.
    sides = page.select(".compare-side")
    assert sides[0].find(class_="shared-time") is None
    assert sides[1].find(class_="shared-time") is not None
    as_of = parse_qs(urlsplit(page.find("a", class_="as-of-from")["href"]).query)
    assert as_of["kind"] == ["USER"] and as_of["tz"] == ["Asia/Kathmandu"]
    # Every time on the page is in the page's zone.
    assert all(t.get_text().endswith("+05:45") for t in page.select(".compare-side time"))


def test_full_ids_with_copy_buttons_on_the_compare_and_record_pages(auditor, events):
    page = soup(auditor.get("/diff", query_string={"from": events[0], "to": events[1]}))
    copies = [button["data-copy"] for button in page.select("button.copy-button")]
    assert RECORD in copies and events[0] in copies and events[1] in copies
    assert {code.get_text() for code in page.select("code.full-id")} >= {RECORD, *events[:2]}
    permalink = page.find("a", class_="permalink")["href"]
    assert f"http://localhost{permalink}" in copies
    # Buttons stay hidden without JavaScript (static/app.js shows them): the id is text.
    assert all(button.has_attr("hidden") for button in page.select("button.copy-button"))

    record = soup(auditor.get(f"/aggregates/{RECORD}"))
    copies = [button["data-copy"] for button in record.select("button.copy-button")]
    assert RECORD in copies
    assert set(events) <= set(copies)
    assert {code.get_text() for code in record.select(".timeline-event code.full-id")} == set(
        events
    )
    permalink = record.find("a", class_="permalink")["href"]
    assert f"http://localhost{permalink}" in copies


def test_a_one_megabyte_value_is_compared_within_the_budget(auditor, compare_db):
    big = compare_db[1][BIG_RECORD]
    for args in ({}, {"unchanged": "1"}):
        response = auditor.get("/diff", query_string={"from": big[0], "to": big[1], **args})
        assert response.status_code == 200
        text = rows_by_path(soup(response))["/text"]
        # The page shows a preview of each side; the cut previews are what is compared.
        assert len(text.select_one("td.new code").get_text()) < 200


def test_a_deleted_record_keeps_its_fields_beside_the_deletion(auditor, compare_db):
    created, deleted = compare_db[1][DELETED_RECORD]
    response = auditor.get("/diff", query_string={"from": created, "to": deleted, "unchanged": "1"})
    assert response.status_code == 200
    rows = [
        (row.find("code")["title"], row.select_one("td.op").get_text())
        for row in soup(response).select("table.changes tbody tr")
    ]
    assert rows == [("", "remove"), ("/plan", "unchanged"), ("/label", "unchanged")]
