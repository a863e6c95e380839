"""Hostile and awkward data written through the real writer role: every page, API answer
and export that reads it answers 200 with the event shown for what it is, never a 500.

- JSON nested deeper than the dashboard walks (PostgreSQL 18 with its default 2 MB
  ``max_stack_depth`` stores 10,000 levels and refuses 20,000; we write 1,200 and 5,000):
  shown as "nested too deep to display — N levels", every other row keeps working.
- JSON nested exactly :data:`~dashboard.jsonlimits.MAX_JSON_DEPTH` deep: shown in full.
- A record deleted and re-created: each diff's RFC 6902 patch turns the "from" state of the
  state API into its "to" state (checked with the ``jsonpatch`` reference implementation).
"""

from __future__ import annotations

import io
import json
import re
import uuid

import jsonpatch
import psycopg
import pytest
from bs4 import BeautifulSoup
from conftest import sign_in
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pypdf import PdfReader

from dashboard.db import libpq_url
from dashboard.jsonlimits import (
    MAX_JSON_DEPTH,
    TOO_DEEP_KEY,
    json_depth,
    load_json_bytes,
    loads_within_depth,
)


def nested_object(levels: int, leaf) -> dict:
    value = leaf
    for _ in range(levels):
        value = {"a": value}
    return value


def nested_text(levels: int, leaf: str = "1") -> str:
    """``{"a": {"a": ... leaf ...}}`` as text: Python's own json cannot write 5,000 levels."""
    return '{"a": ' * levels + leaf + "}" * levels


class Hostile:
    """Ids of the records and events written by :func:`hostile_db`."""

    def __init__(self, urls):
        self.urls = urls
        self.deep = str(uuid.uuid4())  # created fine, then a 1,200-deep update, then fine
        self.deeper = str(uuid.uuid4())  # created 5,000 deep
        self.at_limit = str(uuid.uuid4())  # exactly MAX_JSON_DEPTH deep, changed inside
        self.deep_metadata = str(uuid.uuid4())  # metadata 1,200 deep
        self.lifecycle = str(uuid.uuid4())  # created, updated, deleted, re-created, updated
        self.events: dict[str, list[str]] = {}

    def write(self, record: str, event_type: str, payload: str, metadata: str | None = None):
        with psycopg.connect(libpq_url(self.urls.writer)) as conn:
            event_id = conn.execute(
                "SELECT insert_audit_event(%s, %s, %s::jsonb, %s::jsonb)::text",
                (record, event_type, payload, metadata or '{"actor": "hostile@example.com"}'),
            ).fetchone()[0]
        self.events.setdefault(record, []).append(event_id)
        return event_id


@pytest.fixture(scope="module")
def hostile(make_database) -> Hostile:
    data = Hostile(make_database("audit_hostile"))
    data.write(data.deep, "USER_CREATED", '{"name": "Before", "plan": "basic"}')
    data.write(data.deep, "USER_UPDATED", json.dumps({"blob": None}))
    data.write(data.deep, "USER_UPDATED", nested_text(1200))
    data.write(data.deep, "USER_UPDATED", '{"plan": "pro"}')
    data.write(data.deeper, "USER_CREATED", nested_text(5000))
    limit = json.dumps({"x": 1, "deep": nested_object(MAX_JSON_DEPTH - 1, 1)})
    data.write(data.at_limit, "USER_CREATED", limit)
    changed = json.dumps({"deep": nested_object(MAX_JSON_DEPTH - 1, 2)})
    data.write(data.at_limit, "USER_UPDATED", changed)
    data.write(
        data.deep_metadata,
        "USER_CREATED",
        '{"name": "Meta"}',
        '{"actor": ' + nested_text(1200, '"x"') + "}",
    )
    data.write(data.lifecycle, "ORDER_CREATED", '{"status": "new", "lines": [{"id": 1}]}')
    data.write(data.lifecycle, "ORDER_UPDATED", '{"status": "paid"}')
    data.write(data.lifecycle, "ORDER_DELETED", "{}")
    data.write(data.lifecycle, "ORDER_CREATED", '{"status": "again"}')
    data.write(data.lifecycle, "ORDER_UPDATED", '{"note": "x"}')
    return data


@pytest.fixture
def hostile_client(make_app, hostile):
    app = make_app(database_url=hostile.urls.reader, access_log_url=hostile.urls.logger)
    return sign_in(app.test_client(), "auditor")


def marker_levels(value) -> int | None:
    if isinstance(value, dict) and set(value) == {TOO_DEEP_KEY}:
        return value[TOO_DEEP_KEY]["levels"]
    return None


# --- depth -------------------------------------------------------------------------------


def test_depth_is_measured_outside_strings_and_deep_documents_are_not_decoded() -> None:
    assert json_depth('{"a": "[[[[{{{{", "b": [1, {"c": []}]}') == 4
    assert json_depth('"\\"[["') == 0
    assert loads_within_depth(nested_text(MAX_JSON_DEPTH)) == nested_object(MAX_JSON_DEPTH, 1)
    marker = loads_within_depth(nested_text(1200))
    assert marker_levels(marker) == 1200
    assert marker[TOO_DEEP_KEY]["message"] == "nested too deep to display — 1,200 levels"
    assert marker_levels(loads_within_depth("[" * 50_000 + "]" * 50_000)) == 50_000
    wide = json.dumps([[i] for i in range(5000)])  # many brackets, shallow
    assert loads_within_depth(wide) == json.loads(wide)


def same_json(a, b) -> bool:
    """Equal with JSON types: ``1``, ``1.0`` and ``True`` differ (NaN equals NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_json(a[key], b[key]) for key in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same_json, a, b))
    return a == b or (a != a and b != b)


JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),  # past 64 bits too
        st.integers(-(2**70), 2**70).map(lambda n: n * 10**12),
        st.floats(allow_nan=False),
        st.text(),  # unpaired surrogates too
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON_VALUES, st.booleans())
def test_the_json_loader_reads_what_the_json_module_reads(value, ascii_only: bool) -> None:
    """The loader of every connection takes orjson's fast path for most documents; what it
    returns is always what ``json.loads`` returns, types included."""
    text = json.dumps(value, ensure_ascii=ascii_only, separators=(", ", ": "))
    assert same_json(load_json_bytes(text.encode("utf-8", "surrogatepass")), json.loads(text))


@pytest.mark.parametrize(
    "text",
    [
        "123456789012345678901234567890",  # orjson alone would read a float
        '{"n": -98765432109876543210, "s": "x"}',
        "18446744073709551616",
        "-9223372036854775809",  # found by the property test: 19 digits, past int64
        '"\\ud800"',  # an unpaired surrogate escape
        '{"a": 1, "a": 2.0}',
        "1e400",
        "[-0, -0.0, 1.0, 1E2, 0.30000000000000004441]",
        '{"deep": ' + "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1) + "}",
    ],
)
def test_the_json_loader_agrees_on_the_edges(text: str) -> None:
    assert same_json(load_json_bytes(text.encode()), json.loads(text))


def test_the_json_loader_still_refuses_deep_documents() -> None:
    assert marker_levels(load_json_bytes(nested_text(1200).encode())) == 1200


def test_postgresql_stores_both_depths_we_test(hostile) -> None:
    with psycopg.connect(libpq_url(hostile.urls.admin)) as conn:
        texts = conn.execute(
            "SELECT payload::text FROM audit_events WHERE aggregate_id IN (%s, %s)",
            (hostile.deep, hostile.deeper),
        ).fetchall()
    assert sorted(json_depth(text) for (text,) in texts if json_depth(text) > 100) == [1200, 5000]


# --- every output answers ------------------------------------------------------------------


def test_the_newest_events_page_shows_deep_events_as_markers(hostile_client, hostile) -> None:
    response = hostile_client.get("/api/events?limit=100")
    assert response.status_code == 200, response.text
    by_id = {event["event_id"]: event for event in response.json["events"]}
    assert len(by_id) == sum(len(ids) for ids in hostile.events.values())
    assert marker_levels(by_id[hostile.events[hostile.deep][2]]["payload"]) == 1200
    assert marker_levels(by_id[hostile.events[hostile.deeper][0]]["payload"]) == 5000
    # The whole document is replaced: {"actor": <1,200 levels>} is 1,201 deep.
    assert marker_levels(by_id[hostile.events[hostile.deep_metadata][0]]["metadata"]) == 1201
    assert by_id[hostile.events[hostile.deep][3]]["payload"] == {"plan": "pro"}
    at_limit = by_id[hostile.events[hostile.at_limit][0]]["payload"]
    assert at_limit == {"x": 1, "deep": nested_object(MAX_JSON_DEPTH - 1, 1)}


def test_search_and_record_pages_say_the_event_is_too_deep(hostile_client, hostile) -> None:
    search = hostile_client.get("/search?limit=100")
    assert search.status_code == 200
    text = BeautifulSoup(search.text, "html.parser").get_text(" ")
    assert "nested too deep to display — 1,200 levels" in text
    assert "nested too deep to display — 5,000 levels" in text
    for record in (hostile.deep, hostile.deeper, hostile.deep_metadata, hostile.at_limit):
        page = hostile_client.get(f"/aggregates/{record}")
        assert page.status_code == 200, record
    deep = BeautifulSoup(hostile_client.get(f"/aggregates/{hostile.deep}").text, "html.parser")
    rows = deep.select("li.timeline-event")
    assert len(rows) == 4
    assert "nested too deep to display — 1,200 levels" in rows[1].get_text(" ")
    assert "too deep" not in rows[0].get_text(" ") + rows[2].get_text(" ")
    field = hostile_client.get(f"/aggregates/{hostile.at_limit}?field=/x")
    assert field.status_code == 200


def test_state_changes_and_diff_answer_with_the_marker(hostile_client, hostile) -> None:
    state = hostile_client.get(f"/api/aggregates/{hostile.deep}/state")
    assert state.status_code == 200
    # The unreadable update is merged as the one member it has; later updates still apply.
    assert state.json["state"]["plan"] == "pro"
    assert marker_levels({TOO_DEEP_KEY: state.json["state"][TOO_DEEP_KEY]}) == 1200
    deeper = hostile_client.get(f"/api/aggregates/{hostile.deeper}/state").json
    assert marker_levels(deeper["state"]) == 5000
    for record, ids in hostile.events.items():
        for event_id in ids:
            changes = hostile_client.get(f"/api/events/{event_id}/changes")
            assert changes.status_code == 200, (record, event_id)
        diff = hostile_client.get("/api/diff", query_string={"from": ids[0], "to": ids[-1]})
        assert diff.status_code == 200, record
    limit = hostile.events[hostile.at_limit]
    diff = hostile_client.get("/api/diff", query_string={"from": limit[0], "to": limit[1]}).json
    deepest = "/deep" + "/a" * (MAX_JSON_DEPTH - 2)
    assert diff["patch"] == [{"op": "replace", "path": deepest + "/a", "value": 2}]


def test_csv_exports_answer(hostile_client, hostile, make_app) -> None:
    everything = hostile_client.get("/export/events.csv")
    assert everything.status_code == 200
    assert b"Before" in everything.data and everything.data.count(b'{""a"": {""a"": ') >= 2
    support = sign_in(
        make_app(
            database_url=hostile.urls.reader, access_log_url=hostile.urls.logger
        ).test_client(),
        "support",
    )
    for record in (hostile.deep, hostile.deeper, hostile.deep_metadata):
        masked = support.get(f"/export/aggregates/{record}.csv")  # through Python: masked
        assert masked.status_code == 200
        assert b"too deep" in masked.data


def test_pdf_reports_answer(make_app, hostile) -> None:
    app = make_app(database_url=hostile.urls.reader, access_log_url=hostile.urls.logger)
    client = sign_in(app.test_client(), "compliance")
    report = client.get("/reports/events.pdf")
    assert report.status_code == 200, report.text[:500]
    text = re.sub(r"\s+", " ", pdf_text(report.data))
    assert "nested too deep to display — 1,200 levels" in text
    for record in (hostile.deep, hostile.deeper, hostile.deep_metadata, hostile.at_limit):
        one = client.get(f"/export/aggregates/{record}.pdf")
        assert one.status_code == 200, record


def pdf_text(data: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


# --- deletes -------------------------------------------------------------------------------


def test_every_diff_of_a_deleted_and_recreated_record_applies_to_its_from_state(
    hostile_client, hostile
) -> None:
    ids = hostile.events[hostile.lifecycle]
    events = hostile_client.get(f"/api/aggregates/{hostile.lifecycle}/events").json["events"]
    at = {event["event_id"]: event["created_at"] for event in events}

    def state(event_id):
        body = hostile_client.get(
            f"/api/aggregates/{hostile.lifecycle}/state", query_string={"at": at[event_id]}
        ).json
        return body["state"], body["deleted"]

    deleted_state, deleted = state(ids[2])
    assert deleted and deleted_state == {"status": "paid", "lines": [{"id": 1}]}
    for first in ids:
        for second in ids:
            body = hostile_client.get("/api/diff", query_string={"from": first, "to": second})
            assert body.status_code == 200
            patched = jsonpatch.apply_patch(state(first)[0], body.json["patch"])
            assert patched == state(second)[0], (ids.index(first), ids.index(second))
    deletion = hostile_client.get(f"/api/events/{ids[2]}/changes").json
    assert deletion["patch"] == []
    assert deletion["changes"] == [
        {"path": "", "op": "remove", "old": deleted_state, "new": None},
    ]
