"""Record, look-up, compare, as-of, request and event pages through the Flask test client."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from bs4 import BeautifulSoup

from dashboard.db import libpq_url
from dashboard.masking import MASK


def soup(response) -> BeautifulSoup:
    return BeautifulSoup(response.text, "html.parser")


def text_of(node) -> str:
    return " ".join(node.get_text(" ").split())


def timeline_ids(page: BeautifulSoup) -> list[str]:
    return [li["id"].removeprefix("event-") for li in page.select("li.timeline-event")]


@dataclass(frozen=True)
class Samples:
    busiest: str
    busiest_count: int
    user: str  # a USER with an email change
    user_events: list[tuple[str, datetime]]  # (event_id, created_at) in order
    deleted: str
    other: str  # a record other than `user`
    request_id: str
    request_records: int
    anomaly: str | None


@pytest.fixture(scope="module")
def samples(seeded_db) -> Samples:
    with psycopg.connect(libpq_url(seeded_db.admin)) as conn:
        busiest, busiest_count = conn.execute(
            "SELECT aggregate_id::text, count(*) FROM audit_events GROUP BY 1 "
            "ORDER BY 2 DESC LIMIT 1"
        ).fetchone()
        user = conn.execute(
            "SELECT aggregate_id::text FROM audit_events WHERE event_type = 'USER_EMAIL_CHANGED' "
            "AND aggregate_id IN (SELECT aggregate_id FROM audit_events "
            "WHERE event_type = 'USER_CREATED') "
            "GROUP BY 1 ORDER BY 1 LIMIT 1"
        ).fetchone()[0]
        user_events = conn.execute(
            "SELECT event_id::text, created_at FROM audit_events WHERE aggregate_id = %s "
            "ORDER BY created_at, seq",
            (user,),
        ).fetchall()
        deleted = conn.execute(
            "SELECT aggregate_id::text FROM audit_events WHERE event_type LIKE '%%_DELETED' "
            "ORDER BY seq LIMIT 1"
        ).fetchone()[0]
        other = conn.execute(
            "SELECT aggregate_id::text FROM audit_events WHERE aggregate_id <> %s LIMIT 1",
            (user,),
        ).fetchone()[0]
        request_id, request_records = conn.execute(
            "SELECT metadata->>'request_id', count(DISTINCT aggregate_id) FROM audit_events "
            "WHERE metadata ? 'request_id' GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1"
        ).fetchone()
        anomaly = conn.execute(
            "SELECT d.aggregate_id::text FROM audit_events d JOIN audit_events u "
            "ON u.aggregate_id = d.aggregate_id AND (u.created_at, u.seq) > (d.created_at, d.seq) "
            "WHERE d.event_type LIKE '%%_DELETED' LIMIT 1"
        ).fetchone()
    return Samples(
        busiest,
        busiest_count,
        user,
        list(user_events),
        deleted,
        other,
        request_id,
        request_records,
        anomaly[0] if anomaly else None,
    )


@pytest.fixture
def auditor(login):
    return login("auditor")


def test_record_page_header_state_and_timeline(auditor, samples):
    response = auditor.get(f"/aggregates/{samples.user}")
    assert response.status_code == 200
    page = soup(response)
    header = page.find("header", class_="record-header")
    assert header.find(class_="kind").get_text() == "USER"
    assert header.find(class_="record-id").get_text() == samples.user
    assert header.find(class_="event-count").get_text() == str(len(samples.user_events))
    # Timeline: newest first, each event with its metadata and field-level changes.
    ids = timeline_ids(page)
    assert ids == [event_id for event_id, _ in reversed(samples.user_events)][:50]
    email_change = next(
        li
        for li in page.select("li.timeline-event")
        if li.find(class_="event-type").get_text() == "USER_EMAIL_CHANGED"
    )
    assert email_change.find("dl", class_="event-meta").find("dt", string="Actor")
    changed = {
        row.find("th").get_text(): (
            row.find(class_="op").get_text(),
            row.find(class_="new").get_text(),
        )
        for row in email_change.select("table.changes tbody tr")
    }
    assert changed["email"][0] == "replace" and "@" in changed["email"][1]
    # Compare pickers on every event.
    assert len(page.select("input[name=from]")) == len(ids) == len(page.select("input[name=to]"))
    # State with provenance: each field names the event that set it.
    fields = page.select("table.state tbody tr")
    assert fields
    email_row = next(row for row in fields if row.find("th").get_text() == "email")
    set_by = email_row.find(class_="provenance").find("a")
    assert set_by.get_text() in ("USER_EMAIL_CHANGED", "USER_CREATED", "USER_UPDATED")
    assert email_row.find("a", class_="field-history-link")["href"].endswith("#field-history")


def test_a_deleted_record_has_a_badge(auditor, samples):
    page = soup(auditor.get(f"/aggregates/{samples.deleted}"))
    assert (
        page.find("header", class_="record-header").find(class_="badge-deleted").get_text()
        == "deleted"
    )


def test_a_busy_record_is_paginated_and_every_event_appears_once(auditor, samples):
    seen: list[str] = []
    url = f"/aggregates/{samples.busiest}?limit=100"
    while url:
        page = soup(auditor.get(url))
        ids = timeline_ids(page)
        assert len(ids) <= 100
        seen.extend(ids)
        older = page.find("a", class_="older")
        url = older["href"] if older else None
    assert len(seen) == samples.busiest_count == len(set(seen))


def test_newer_link_goes_back(auditor, samples):
    first = soup(auditor.get(f"/aggregates/{samples.busiest}"))
    second = soup(auditor.get(first.find("a", class_="older")["href"]))
    back = soup(auditor.get(second.find("a", class_="newer")["href"]))
    assert timeline_ids(back) == timeline_ids(first)


def test_event_permalink_opens_its_page_at_the_event(auditor, samples, seeded_db):
    with psycopg.connect(libpq_url(seeded_db.admin)) as conn:
        event_id = conn.execute(
            "SELECT event_id::text FROM audit_events WHERE aggregate_id = %s "
            "ORDER BY created_at, seq OFFSET 17 LIMIT 1",
            (samples.busiest,),
        ).fetchone()[0]
    response = auditor.get(f"/events/{event_id}")
    assert response.status_code == 303
    location = response.headers["Location"]
    assert location.endswith(f"#event-{event_id}")
    assert urlsplit(location).path == f"/aggregates/{samples.busiest}"
    page = soup(auditor.get(location))
    assert timeline_ids(page)[0] == event_id
    assert auditor.get("/events/00000000-0000-4000-8000-000000000000").status_code == 404
    assert auditor.get("/events/nope").status_code == 400


def test_state_at_a_time_matches_the_api(auditor, samples):
    _, second_time = samples.user_events[1]
    at = (second_time + timedelta(microseconds=1)).isoformat()
    page = soup(auditor.get(f"/aggregates/{samples.user}", query_string={"at": at}))
    summary = text_of(page.find(class_="state-summary"))
    assert "after 2 events" in summary
    state = auditor.get(f"/api/aggregates/{samples.user}/state", query_string={"at": at}).json
    assert state["version"] == 2
    shown = {row.find("th").get_text() for row in page.select("table.state tbody tr")}
    assert shown == {path.lstrip("/").replace("/", ".") for path in state["provenance"]}
    # Before the first event the record did not exist.
    _, first_time = samples.user_events[0]
    before = (first_time - timedelta(seconds=1)).isoformat()
    early = soup(auditor.get(f"/aggregates/{samples.user}", query_string={"at": before}))
    assert "did not exist yet" in text_of(early.find(class_="state-summary"))


def test_state_at_a_local_time_and_the_permalink(auditor, samples):
    page = soup(
        auditor.get(
            f"/aggregates/{samples.user}",
            query_string={"at": "2026-06-01T12:00", "tz": "Europe/Berlin"},
        )
    )
    assert page.find("input", id="at")["value"] == "2026-06-01 12:00:00"
    permalink = page.find("a", class_="permalink")["href"]
    args = parse_qs(urlsplit(permalink).query)
    assert datetime.fromisoformat(args["at"][0]) == datetime(2026, 6, 1, 10, tzinfo=UTC)


def test_field_history(auditor, samples):
    page = soup(auditor.get(f"/aggregates/{samples.user}", query_string={"field": "/email"}))
    section = page.find("section", id="field-history")
    assert "email" in section.find("h2").get_text()
    rows = section.select("tbody tr")
    assert len(rows) >= 2  # created, then changed
    assert rows[0].find_all("td")[3].get_text() == "add"
    assert any(row.find_all("td")[3].get_text() == "replace" for row in rows)


def test_bad_record_arguments_show_the_page_with_the_message(auditor, samples):
    response = auditor.get(f"/aggregates/{samples.user}", query_string={"at": "not a time"})
    assert response.status_code == 400
    page = soup(response)
    assert page.find(id="at-error") is not None
    assert page.find("section", class_="state-panel") is not None
    unknown = auditor.get(f"/aggregates/{samples.user}", query_string={"when": "x"})
    assert unknown.status_code == 400
    assert "Unknown argument 'when'" in text_of(soup(unknown).find(class_="error-message"))
    pointer = auditor.get(f"/aggregates/{samples.user}", query_string={"field": "email"})
    assert pointer.status_code == 400


def test_malformed_and_unknown_record_ids(auditor):
    bad = auditor.get("/aggregates/not-a-uuid")
    assert bad.status_code == 400
    assert soup(bad).find(id="aggregate_id-error") is not None
    missing = auditor.get("/aggregates/00000000-0000-4000-8000-000000000000")
    assert missing.status_code == 404
    assert "No events for record" in soup(missing).find(id="aggregate_id-error").get_text()


def test_support_sees_a_masked_record_and_no_viewers(client, login, samples):
    login("support")
    page = soup(client.get(f"/aggregates/{samples.user}"))
    email_row = next(
        row for row in page.select("table.state tbody tr") if row.find("th").get_text() == "email"
    )
    assert email_row.find("td").get_text() == f'"{MASK}"'
    assert "@example" not in " ".join(
        td.get_text() for td in page.select("li.timeline-event table.changes td.new")
    )
    assert page.find("section", class_="viewers") is None


def test_auditors_see_who_viewed_the_record(client, login, samples):
    login("compliance")
    client.get(f"/aggregates/{samples.other}")
    client.post("/logout", data={"csrf_token": _csrf(client)})
    login("auditor")
    page = soup(client.get(f"/aggregates/{samples.other}"))
    viewers = page.find("section", class_="viewers")
    assert "carl.compliance" in text_of(viewers)


def _csrf(client) -> str:
    page = soup(client.get("/lookup"))
    return page.find("form", class_="sign-out").find("input", attrs={"name": "csrf_token"})["value"]


def test_record_views_are_in_the_access_log(client, login, samples, seeded_db):
    login("support")
    client.get(f"/aggregates/{samples.user}")
    with psycopg.connect(libpq_url(seeded_db.admin)) as conn:
        username, action, ids, count = conn.execute(
            "SELECT username, action, aggregate_ids, row_count FROM audit_access_log "
            "WHERE route = %s ORDER BY id DESC LIMIT 1",
            (f"/aggregates/{samples.user}",),
        ).fetchone()
    assert (username, action, ids) == ("sue.support", "view_record", [samples.user])
    assert count == min(50, len(samples.user_events))


def test_an_anomaly_is_pointed_out(auditor, samples):
    if samples.anomaly is None:
        pytest.skip("the seed has no anomaly at this size")
    page = soup(auditor.get(f"/aggregates/{samples.anomaly}"))
    assert "update after delete" in text_of(page.find(class_="anomalies"))


# --- Look-up ----------------------------------------------------------------------------------


def test_lookup(client, login, samples):
    login("support")
    form = soup(client.get("/lookup"))
    assert form.find("input", attrs={"name": "aggregate_id"}) is not None
    found = client.get("/lookup", query_string={"aggregate_id": samples.user.upper()})
    assert found.status_code == 303
    assert urlsplit(found.headers["Location"]).path == f"/aggregates/{samples.user}"
    bad = client.get("/lookup", query_string={"aggregate_id": "12345"})
    assert bad.status_code == 400
    assert "is not a record id" in soup(bad).find(id="aggregate_id-error").get_text()
    assert soup(bad).find("input", attrs={"name": "aggregate_id"})["value"] == "12345"
    unknown = client.get(
        "/lookup", query_string={"aggregate_id": "00000000-0000-4000-8000-000000000000"}
    )
    assert unknown.status_code == 404
    nav = [a.get_text() for a in soup(client.get("/lookup")).find("header").find_all("a")]
    assert "Search" not in nav and "Look up a record" in nav


# --- Compare ----------------------------------------------------------------------------------


def test_compare_two_events(auditor, samples):
    first, last = samples.user_events[0][0], samples.user_events[-1][0]
    response = auditor.get("/diff", query_string={"from": first, "to": last})
    assert response.status_code == 200
    page = soup(response)
    rows = page.select("table.changes tbody tr")
    api = auditor.get("/api/diff", query_string={"from": first, "to": last}).json
    assert len(rows) == len(api["changes"])
    assert {row.find("code")["title"] for row in rows} == {c["path"] for c in api["changes"]}
    swap = page.find("a", class_="swap")["href"]
    assert parse_qs(urlsplit(swap).query) == {"from": [last], "to": [first]}


def test_compare_form_first_visit_and_errors(auditor, samples):
    assert auditor.get("/diff").status_code == 200
    first = samples.user_events[0][0]
    cases = [
        ({"from": first}, "to", "Give the event id"),
        ({"from": "x", "to": first}, "from", "is not an event id"),
        ({"from": first, "to": "00000000-0000-4000-8000-000000000000"}, "to", "no event"),
    ]
    for args, field, words in cases:
        response = auditor.get("/diff", query_string=args)
        assert response.status_code == 400, args
        assert words in soup(response).find(id=f"{field}-error").get_text()


def test_compare_events_of_two_records_is_400(auditor, samples, seeded_db):
    with psycopg.connect(libpq_url(seeded_db.admin)) as conn:
        other_event = conn.execute(
            "SELECT event_id::text FROM audit_events WHERE aggregate_id = %s LIMIT 1",
            (samples.other,),
        ).fetchone()[0]
    response = auditor.get(
        "/diff", query_string={"from": samples.user_events[0][0], "to": other_event}
    )
    assert response.status_code == 400
    assert "different records" in soup(response).find(id="to-error").get_text()


# --- As of -----------------------------------------------------------------------------------


def test_as_of_lists_a_kind_with_fields_and_deleted_markers(auditor):
    first = auditor.get("/as-of")
    assert first.status_code == 200
    assert soup(first).find("table", class_="as-of") is None
    response = auditor.get("/as-of", query_string={"kind": "USER", "at": "2026-11-01T00:00"})
    assert response.status_code == 200
    page = soup(response)
    headers = [th.get_text() for th in page.select("table.as-of thead th")]
    assert headers[:2] == ["Record", "Status"] and "email" in headers
    rows = page.select("table.as-of tbody tr")
    assert len(rows) == 50
    ids = [row.find("code").get_text() for row in rows]
    assert ids == sorted(ids)
    following = soup(auditor.get(page.find("a", class_="older")["href"]))
    next_ids = [row.find("code").get_text() for row in following.select("table.as-of tbody tr")]
    assert next_ids and next_ids[0] > ids[-1]
    every = []
    url = "/as-of?kind=USER&at=2026-11-01T00:00&limit=1000"
    page = soup(auditor.get(url))
    every = page.select("table.as-of tbody tr")
    assert any(row.find(class_="badge-deleted") for row in every)


def test_as_of_errors(auditor):
    for args, field in (
        ({"kind": "SPACESHIP"}, "kind"),
        ({"kind": "USER", "at": "soon"}, "at"),
        ({"kind": "USER", "tz": "Atlantis"}, "tz"),
        ({"at": "2026-01-01"}, "kind"),
    ):
        response = auditor.get("/as-of", query_string=args)
        assert response.status_code == 400, args
        assert soup(response).find(id=f"{field}-error") is not None, args


# --- Request ---------------------------------------------------------------------------------


def test_request_page_lists_every_event_of_one_request(auditor, samples):
    response = auditor.get(f"/requests/{samples.request_id}")
    assert response.status_code == 200
    page = soup(response)
    rows = page.select("table.events tbody tr")
    records = {row.find("a", class_="record-link")["href"] for row in rows}
    assert len(records) == samples.request_records
    missing = auditor.get("/requests/no-such-request")
    assert missing.status_code == 404
    assert "No events for this request" in text_of(soup(missing).find(class_="empty-state"))


def test_record_pages_need_their_permissions(client, login, samples):
    login("support")
    assert client.get(f"/aggregates/{samples.user}").status_code == 200
    assert client.get("/as-of").status_code == 403
    assert client.get(f"/requests/{samples.request_id}").status_code == 403


# --- A table without seq --------------------------------------------------------------------


@pytest.fixture(scope="module")
def table_without_seq(cluster):
    """The original write-up's table (no seq), with events that share created_at: written in
    one transaction, they are ordered by event id, and the pages must say so."""
    import uuid

    from conftest import PASSWORDS

    name = "audit_noseq_ui_" + uuid.uuid4().hex[:8]
    with psycopg.connect(libpq_url(cluster.admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # generated name, not input
    record = uuid.uuid4()
    with psycopg.connect(libpq_url(cluster.url(name))) as conn:
        conn.execute(
            "CREATE TABLE audit_events (event_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),"
            " aggregate_id UUID NOT NULL, event_type VARCHAR(50) NOT NULL,"
            " payload JSONB NOT NULL, metadata JSONB,"
            " created_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        conn.execute(
            "INSERT INTO audit_events (aggregate_id, event_type, payload, metadata) VALUES "
            '(%s, \'USER_CREATED\', \'{"name": "Ann", "city": "Oslo"}\', \'{"actor": "ops"}\')',
            (record,),
        )
        conn.commit()
        for index in range(5):  # five updates in one transaction: one created_at
            conn.execute(
                "INSERT INTO audit_events (aggregate_id, event_type, payload, metadata) "
                "VALUES (%s, 'USER_UPDATED', %s, '{\"actor\": \"ops\"}')",
                (record, f'{{"visits": {index}}}'),
            )
        conn.commit()
        conn.execute("GRANT SELECT ON audit_events TO audit_reader")
        conn.commit()
    yield cluster.url(name, "audit_reader", PASSWORDS["audit_reader"]), str(record)
    cluster.drop_database(name)


def test_pages_work_on_a_table_without_seq(make_app, table_without_seq):
    from conftest import sign_in

    url, record = table_without_seq
    app = make_app(database_url=url, access_log_url=None)
    client = app.test_client()
    sign_in(client, "auditor")
    page = soup(client.get(f"/aggregates/{record}?limit=2"))
    assert "has no seq column" in text_of(page.find(class_="notice"))
    seen = timeline_ids(page)
    while (older := page.find("a", class_="older")) is not None:
        page = soup(client.get(older["href"]))
        seen.extend(timeline_ids(page))
    assert len(seen) == len(set(seen)) == 6
    events = client.get(f"/api/aggregates/{record}/events?limit=2").json
    assert events["events"][0]["seq"] is None
    ids = [e["event_id"] for e in events["events"]]
    while events["next_cursor"]:
        events = client.get(
            f"/api/aggregates/{record}/events",
            query_string={"limit": 2, "cursor": events["next_cursor"]},
        ).json
        ids.extend(e["event_id"] for e in events["events"])
    assert ids == list(reversed(seen))
    state = client.get(f"/api/aggregates/{record}/state").json
    assert state["version"] == 6 and state["state"]["name"] == "Ann"
    diff = client.get("/api/diff", query_string={"from": ids[0], "to": ids[-1]}).json
    assert {c["path"] for c in diff["changes"]} == {"/visits"}
    search = soup(client.get("/search?order=asc"))
    assert "has no seq column" in text_of(search.find(class_="notice"))
    assert len(search.select("table.events tbody tr")) == 6


# --- The folded-history cache ---------------------------------------------------------------


def test_a_folded_record_is_reused_until_an_event_is_added(make_app, make_database, monkeypatch):
    """On a database of its own: the events it writes must not show up in other tests."""
    import uuid

    from conftest import sign_in

    from dashboard import history, queries

    urls = make_database("audit_cache")
    client = make_app(database_url=urls.reader, access_log_url=urls.logger).test_client()
    sign_in(client, "auditor")
    monkeypatch.setattr(history, "HISTORY_CACHE_MIN_EVENTS", 1)
    folds = []
    original = queries.iter_events

    def counting(conn, statement, **options):
        if len(statement.selected_columns) == 8:  # the slim columns of a fold
            folds.append(statement)
        return original(conn, statement, **options)

    monkeypatch.setattr(queries, "iter_events", counting)
    record = uuid.uuid4()

    def write(event_type, payload):
        with psycopg.connect(libpq_url(urls.writer)) as conn:
            conn.execute(
                "SELECT insert_audit_event(%s, %s, %s, %s)",
                (record, event_type, payload, '{"actor": "cache-test"}'),
            )

    write("GADGET_CREATED", '{"size": 1}')
    write("GADGET_UPDATED", '{"size": 2}')
    first = soup(client.get(f"/aggregates/{record}"))
    assert len(timeline_ids(first)) == 2 and len(folds) == 1
    again = soup(client.get(f"/aggregates/{record}"))
    assert timeline_ids(again) == timeline_ids(first)
    assert client.get(f"/api/aggregates/{record}/state").json["state"] == {"size": 2}
    assert len(folds) == 1  # read and folded once
    write("GADGET_UPDATED", '{"size": 3}')
    after = soup(client.get(f"/aggregates/{record}"))
    assert len(timeline_ids(after)) == 3 and len(folds) == 2
    assert client.get(f"/api/aggregates/{record}/state").json["state"] == {"size": 3}


# --- Arrays and long values in the state table -----------------------------------------------


def test_arrays_are_one_state_row_and_stay_masked_inside(make_app, make_database):
    """An array is one row, "array of N items", unfolding to its items; personal data inside
    the items is masked for support as it is everywhere else; a cut value unfolds."""
    import json
    import uuid

    from conftest import sign_in

    from dashboard.views import present

    urls = make_database("audit_arrays")
    record = str(uuid.uuid4())
    payload = {
        "contacts": [{"email": "zq90@example.com", "kind": "home"}, {"kind": "work"}],
        "tags": [f"tag-{n}" for n in range(65)],
        "bio": "b" * 3_000,
        "name": "Ann",
    }
    with psycopg.connect(libpq_url(urls.writer)) as conn:
        conn.execute(
            "SELECT insert_audit_event(%s, 'USER_CREATED', %s::jsonb, '{\"actor\": \"t\"}')",
            (record, json.dumps(payload)),
        )
    app = make_app(database_url=urls.reader, access_log_url=urls.logger)
    # A state at a later time: "now" is cut to the second, and the event is from this one.
    later = f"/aggregates/{record}?at=2100-01-01T00:00:00Z"
    pages = {
        role: soup(sign_in(app.test_client(), role).get(later)) for role in ("auditor", "support")
    }
    rows = {
        row.select_one("th code")["title"]: row
        for row in pages["auditor"].select("table.state tbody tr")
    }
    assert sorted(rows) == ["/bio", "/contacts", "/name", "/tags"]  # jsonb orders keys
    tags = rows["/tags"].select_one("details.array-items")
    assert tags.select_one("summary").get_text() == "array of 65 items"
    assert [li.get_text() for li in tags.select("ol li")] == [f'"tag-{n}"' for n in range(65)]
    assert tags.select_one(".cut-note") is None  # all 65 are shown
    assert (
        rows["/tags"]
        .select_one("a.field-history-link")["href"]
        .endswith("field=%2Ftags#field-history")
    )
    contacts = rows["/contacts"].select("details.array-items ol li")
    assert "zq90@example.com" in contacts[0].get_text()
    bio = rows["/bio"].select_one("details.fold")
    assert len(bio.select_one(".preview").get_text()) == present.VALUE_PREVIEW
    assert len(bio.select_one(".unfolded").get_text()) == present.VALUE_UNFOLDED
    assert rows["/name"].select_one("details") is None
    auditor = sign_in(app.test_client(), "auditor")
    history = soup(auditor.get(f"{later}&field=/bio"))
    (change,) = history.select("table.field-changes tbody tr")
    new = change.find_all("td")[5].select_one("details.fold")
    assert new.select_one(".preview").get_text() == '"' + "b" * (present.VALUE_PREVIEW - 2) + "…"
    assert len(new.select_one(".unfolded").get_text()) == present.VALUE_UNFOLDED
    masked = pages["support"]
    assert "zq90" not in str(masked)
    support_rows = {
        row.select_one("th code")["title"]: row for row in masked.select("table.state tbody tr")
    }
    items = support_rows["/contacts"].select("details.array-items ol li")
    assert MASK in items[0].get_text() and "home" in items[0].get_text()
