"""The JSON API: DESIGN.md's "HTTP contracts" shapes, key for key, and its error bodies."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import jsonpatch
import psycopg
import pytest

from dashboard.db import libpq_url
from dashboard.masking import MASK

EVENT_KEYS = {"event_id", "seq", "aggregate_id", "event_type", "payload", "metadata", "created_at"}
STATE_KEYS = {
    "aggregate_id",
    "at",
    "exists",
    "deleted",
    "state",
    "version",
    "last_event_id",
    "provenance",
}
UNKNOWN = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def api(login):
    return login("auditor")


@pytest.fixture(scope="module")
def user_record(seeded_db):
    """A USER with several events at distinct times, and those events in order."""
    with psycopg.connect(libpq_url(seeded_db.admin)) as conn:
        record = conn.execute(
            "SELECT aggregate_id::text FROM audit_events GROUP BY 1 "
            "HAVING count(*) BETWEEN 5 AND 40 AND bool_or(event_type = 'USER_CREATED') "
            "AND count(DISTINCT created_at) = count(*) ORDER BY 1 LIMIT 1"
        ).fetchone()[0]
        events = conn.execute(
            "SELECT event_id::text, created_at FROM audit_events WHERE aggregate_id = %s "
            "ORDER BY created_at, seq",
            (record,),
        ).fetchall()
    return record, events


def assert_error(response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.is_json and set(response.json) <= {"error", "problems"}
    assert isinstance(response.json["error"], str) and response.json["error"]
    if "problems" in response.json:  # bad input: each bad argument, with its field
        assert status == 400
        assert all(problem["message"] for problem in response.json["problems"])
    return response.json["error"]


def assert_event_shape(event: dict) -> None:
    assert set(event) == EVENT_KEYS
    assert isinstance(event["seq"], int)
    assert datetime.fromisoformat(event["created_at"]).utcoffset() == timedelta(0)
    assert event["created_at"].endswith("+00:00")


def test_events_shape_and_pages(api):
    first = api.get("/api/events?limit=20")
    assert first.status_code == 200 and set(first.json) == {"events", "next_cursor"}
    events = first.json["events"]
    assert len(events) == 20
    for event in events:
        assert_event_shape(event)
    times = [(e["created_at"], e["seq"]) for e in events]
    assert times == sorted(times, reverse=True)
    second = api.get("/api/events", query_string={"limit": 20, "cursor": first.json["next_cursor"]})
    assert second.json["events"][0]["seq"] < events[-1]["seq"]
    assert not {e["event_id"] for e in events} & {e["event_id"] for e in second.json["events"]}


def test_events_filters(api):
    both = api.get(
        "/api/events",
        query_string=[
            ("type", "USER_CREATED"),
            ("type", "USER_DELETED"),
            ("limit", "1000"),
            ("from", "2025-06-01T00:00:00"),
            ("to", "2025-09-01T00:00:00+00:00"),
            ("order", "asc"),
        ],
    ).json
    assert both["events"]
    assert {e["event_type"] for e in both["events"]} <= {"USER_CREATED", "USER_DELETED"}
    assert all("2025-06-01" <= e["created_at"] < "2025-09-01" for e in both["events"])
    keys = [(e["created_at"], e["seq"]) for e in both["events"]]
    assert keys == sorted(keys)
    record = both["events"][0]["aggregate_id"]
    one = api.get("/api/events", query_string={"aggregate_id": record}).json["events"]
    assert one and {e["aggregate_id"] for e in one} == {record}
    actor = both["events"][0]["metadata"]["actor"]
    by_actor = api.get("/api/events", query_string={"actor": actor}).json["events"]
    assert {e["metadata"]["actor"] for e in by_actor} == {actor}


def test_last_page_has_no_cursor(api):
    page = api.get("/api/events", query_string={"type": "USER_DELETED", "limit": 1000}).json
    assert page["next_cursor"] is None


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=1001",
        "limit=abc",
        "aggregate_id=123",
        "from=2026-13-01",
        "from=2026-02-01&to=2026-01-01",
        "colour=red",
        "cursor=bogus",
        "order=sideways",
        "field=a&value=not-json",
    ],
)
def test_events_bad_input_is_400_json(api, query):
    assert_error(api.get("/api/events?" + query), 400)


@pytest.mark.parametrize(
    ("path", "query", "says"),
    [
        ("/api/events", "field=a&value=1e999", "too large"),
        ("/api/events", "field=a&value=%22%5Cu0000%22", "cannot store"),
        ("/api/events", "field=a&value=%7B%22k%5Cu0000%22%3A1%7D", "cannot store"),
        ("/api/events", "field=a%00b&value=1", "NUL"),
        ("/export/events.csv", "field=a&value=-1e999", "too large"),
        ("/export/events.csv", "field=a&value=%22%5Cud800%22", "cannot store"),
    ],
)
def test_values_postgresql_cannot_hold_are_400_not_500(api, path, query, says):
    assert says in assert_error(api.get(f"{path}?{query}"), 400)


def test_a_request_with_nul_in_its_arguments_is_still_access_logged(api, seeded_db):
    marker = uuid.uuid4().hex
    assert_error(api.get(f"/api/events?actor=%00{marker}"), 400)
    with psycopg.connect(libpq_url(seeded_db.admin)) as conn:
        [(outcome, actor)] = conn.execute(
            "SELECT outcome, filters->>'actor' FROM audit_access_log "
            "WHERE filters->>'actor' LIKE %s",
            (f"%{marker}",),
        ).fetchall()
    assert outcome == "rejected"
    assert actor == "\N{REPLACEMENT CHARACTER}" + marker


def test_aggregate_events_oldest_first_and_paginated(api, user_record):
    record, events = user_record
    page = api.get(f"/api/aggregates/{record}/events", query_string={"limit": 3}).json
    assert set(page) == {"events", "next_cursor"}
    assert [e["event_id"] for e in page["events"]] == [e for e, _ in events[:3]]
    rest = api.get(
        f"/api/aggregates/{record}/events", query_string={"cursor": page["next_cursor"]}
    ).json
    assert [e["event_id"] for e in rest["events"]] == [e for e, _ in events[3:]]
    assert rest["next_cursor"] is None
    assert_error(api.get(f"/api/aggregates/{UNKNOWN}/events"), 404)
    assert_error(api.get("/api/aggregates/xyz/events"), 400)


def test_state_shape_provenance_and_time(api, user_record):
    record, events = user_record
    now = api.get(f"/api/aggregates/{record}/state").json
    assert set(now) == STATE_KEYS
    assert now["aggregate_id"] == record and now["version"] == len(events)
    assert now["last_event_id"] == events[-1][0]
    assert now["exists"] is True and now["deleted"] is False
    for path, source in now["provenance"].items():
        assert path.startswith("/")
        assert set(source) == {"event_id", "created_at", "actor"}
    at = events[1][1].isoformat()
    then = api.get(f"/api/aggregates/{record}/state", query_string={"at": at}).json
    assert then["version"] == 2 and then["last_event_id"] == events[1][0]
    assert datetime.fromisoformat(then["at"]) == events[1][1]
    before = (events[0][1] - timedelta(days=1)).isoformat()
    nothing = api.get(f"/api/aggregates/{record}/state", query_string={"at": before}).json
    assert nothing["exists"] is False and nothing["state"] is None
    assert nothing["version"] == 0 and nothing["last_event_id"] is None
    assert nothing["provenance"] == {}
    assert_error(api.get(f"/api/aggregates/{UNKNOWN}/state"), 404)
    assert_error(api.get(f"/api/aggregates/{record}/state?at=tomorrow"), 400)


def test_a_naive_time_is_utc(api, user_record):
    record, events = user_record
    naive = events[1][1].replace(tzinfo=None).isoformat()
    state = api.get(f"/api/aggregates/{record}/state", query_string={"at": naive}).json
    assert state["version"] == 2


def test_changes_of_one_event_apply_as_a_json_patch(api, user_record):
    record, events = user_record
    created = api.get(f"/api/events/{events[0][0]}/changes").json
    assert set(created) == {"changes", "patch"}
    assert [c["op"] for c in created["changes"]] == ["add"]
    assert created["changes"][0]["path"] == "" and created["changes"][0]["old"] is None
    for index in range(1, len(events)):
        event_id, created_at = events[index]
        body = api.get(f"/api/events/{event_id}/changes").json
        for change in body["changes"]:
            assert set(change) == {"path", "op", "old", "new"}
        before = api.get(
            f"/api/aggregates/{record}/state", query_string={"at": events[index - 1][1].isoformat()}
        ).json["state"]
        after = api.get(
            f"/api/aggregates/{record}/state", query_string={"at": created_at.isoformat()}
        ).json["state"]
        assert jsonpatch.apply_patch(before, body["patch"]) == after
    assert_error(api.get(f"/api/events/{UNKNOWN}/changes"), 404)
    assert_error(api.get("/api/events/1/changes"), 400)


def test_diff_between_two_events(api, user_record, seeded_db):
    record, events = user_record
    first, last = events[0], events[-1]
    body = api.get("/api/diff", query_string={"from": first[0], "to": last[0]}).json
    assert set(body) == {"changes", "patch"}
    before = api.get(
        f"/api/aggregates/{record}/state", query_string={"at": first[1].isoformat()}
    ).json["state"]
    after = api.get(f"/api/aggregates/{record}/state").json["state"]
    assert jsonpatch.apply_patch(before, body["patch"]) == after
    same = api.get("/api/diff", query_string={"from": last[0], "to": last[0]}).json
    assert same == {"changes": [], "patch": []}
    with psycopg.connect(libpq_url(seeded_db.admin)) as conn:
        elsewhere = conn.execute(
            "SELECT event_id::text FROM audit_events WHERE aggregate_id <> %s LIMIT 1", (record,)
        ).fetchone()[0]
    message = assert_error(
        api.get("/api/diff", query_string={"from": first[0], "to": elsewhere}), 400
    )
    assert "different records" in message
    assert_error(api.get("/api/diff", query_string={"from": first[0], "to": UNKNOWN}), 400)
    assert_error(api.get("/api/diff", query_string={"from": first[0]}), 400)


def test_as_of_shape_and_pages(api):
    first = api.get("/api/as-of", query_string={"kind": "ORDER", "at": "2026-01-01", "limit": 5})
    assert first.status_code == 200
    body = first.json
    assert set(body) == {"kind", "at", "aggregates", "next_cursor"}
    assert body["kind"] == "ORDER" and body["at"] == "2026-01-01T00:00:00+00:00"
    assert len(body["aggregates"]) == 5
    for item in body["aggregates"]:
        assert set(item) == {
            "aggregate_id",
            "exists",
            "deleted",
            "state",
            "version",
            "last_event_id",
        }
        assert item["version"] >= 1
    ids = [item["aggregate_id"] for item in body["aggregates"]]
    assert ids == sorted(ids)
    second = api.get(
        "/api/as-of",
        query_string={
            "kind": "ORDER",
            "at": "2026-01-01",
            "limit": 5,
            "cursor": body["next_cursor"],
        },
    ).json
    assert second["aggregates"][0]["aggregate_id"] > ids[-1]
    assert_error(api.get("/api/as-of"), 400)
    assert_error(api.get("/api/as-of?kind=SPACESHIP"), 400)
    assert_error(api.get("/api/as-of?kind=USER&cursor=zzz"), 400)


def test_support_gets_masked_json_and_no_search(client, login, user_record):
    login("support")
    record, events = user_record
    state = client.get(f"/api/aggregates/{record}/state").json
    assert state["state"]["email"] == MASK
    assert state["state"]["address"] == MASK
    events_body = client.get(f"/api/aggregates/{record}/events").json
    created = events_body["events"][0]
    assert created["payload"]["email"] == MASK and created["metadata"]["ip"] == MASK
    changes = client.get(f"/api/events/{events[0][0]}/changes").json
    assert changes["changes"][0]["new"]["email"] == MASK
    assert changes["patch"][0]["value"]["email"] == MASK
    assert_error(client.get("/api/events"), 403)
    assert_error(client.get("/api/as-of?kind=USER"), 403)


def test_anonymous_api_calls_get_401_json(client):
    assert_error(client.get("/api/events"), 401)
