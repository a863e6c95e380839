"""The demo-data generator (dashboard.seed) and the application-side writer (dashboard.writer).

Everything that touches the database runs on the real PostgreSQL of the fixtures: COPY as
the owner, ``insert_audit_event()`` as audit_writer, reads as audit_reader.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import errors as pg_errors
from sqlalchemy.orm import Session

from dashboard.db import libpq_url
from dashboard.seed import (
    BUSIEST_EVENTS,
    PERIOD,
    REFERENCE_UNTIL,
    DemoData,
    SeedError,
    busiest_event_count,
    seed_events,
)
from dashboard.writer import record_event

ROWS_SQL = (
    "SELECT event_id, aggregate_id, event_type, payload, metadata, created_at "
    "FROM audit_events ORDER BY seq"
)
COPY_EVENTS = 2_500
STAFF_ACTOR = "alice.martin@example.com"


def fetch_rows(url: str) -> list[tuple]:
    with psycopg.connect(libpq_url(url)) as conn:
        return conn.execute(ROWS_SQL).fetchall()


def scalar(url: str, query: str, params: tuple = ()) -> Any:
    with psycopg.connect(libpq_url(url)) as conn:
        row = conn.execute(query, params).fetchone()
        return row[0] if row else None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396, written out here so the checks below do not trust the code under test."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --------------------------------------------------------------------------------------
# The generator alone: no database.


@pytest.mark.parametrize("events", [1, 7, 19, 20, 150, 999, 1_000, 2_500])
def test_generator_yields_exactly_the_requested_number_in_time_order(events):
    data = DemoData(events, seed=3, until=REFERENCE_UNTIL)
    rows = list(data)
    assert len(rows) == events
    times = [row.created_at for row in rows]
    assert times == sorted(times)
    start = REFERENCE_UNTIL - PERIOD
    assert start.isoformat() <= times[0] and times[-1] < REFERENCE_UNTIL.isoformat()
    per_record = Counter(row.aggregate_id for row in rows)
    busiest, count = per_record.most_common(1)[0]
    assert busiest == data.busiest_aggregate_id
    assert count == data.busiest_events == busiest_event_count(events)
    assert sorted(per_record.values())[-2:-1] < [count]  # strictly the busiest
    assert all(uuid.UUID(row.event_id).version == 4 for row in rows)
    assert len({row.event_id for row in rows}) == events


def test_busiest_rule():
    assert busiest_event_count(1) == 1
    assert busiest_event_count(15) == 15  # all of a tiny data set
    assert busiest_event_count(100) == 20
    assert busiest_event_count(3_000) == 300
    assert busiest_event_count(19_999) == 1_999
    assert busiest_event_count(20_000) == BUSIEST_EVENTS == 10_000
    assert busiest_event_count(10_000_000) == 10_000


def test_generator_is_reproducible_and_seed_dependent():
    until = datetime(2026, 3, 4, 15, 16, 17, tzinfo=UTC)
    first = list(DemoData(1_200, seed=5, until=until))
    assert first == list(DemoData(1_200, seed=5, until=until))
    other = list(DemoData(1_200, seed=6, until=until))
    assert {row.event_id for row in first}.isdisjoint(row.event_id for row in other)


@pytest.mark.parametrize(
    "until",
    [
        REFERENCE_UNTIL,
        datetime(2026, 3, 4, 15, 16, 17, 123456, tzinfo=UTC),
        datetime(2027, 1, 9, 23, 59, tzinfo=UTC),
        datetime(2026, 6, 30, 0, 30),  # naive: read as UTC
    ],
)
@pytest.mark.parametrize("events", [150, 2_000])
def test_data_ends_in_the_hour_before_until(until, events):
    aware = until if until.tzinfo else until.replace(tzinfo=UTC)
    times = [datetime.fromisoformat(row.created_at) for row in DemoData(events, 4, until=until)]
    assert aware - PERIOD <= times[0]
    assert aware - timedelta(hours=1) <= times[-1] < aware
    # Quiet nights stay on the UTC clock whatever time of day the period ends.
    by_hour = Counter(t.hour for t in times)
    assert sum(by_hour[h] for h in range(1, 5)) < sum(by_hour[h] for h in range(10, 14))


def test_until_moves_the_data_but_not_its_shape():
    early = list(DemoData(300, seed=8, until=REFERENCE_UNTIL))
    later = list(DemoData(300, seed=8, until=REFERENCE_UNTIL + timedelta(days=7)))
    assert [row.event_id for row in early] == [row.event_id for row in later]
    assert early[-1].created_at < later[-1].created_at


def test_default_until_is_now():
    before = datetime.now(UTC)
    data = DemoData(50, seed=9)
    assert before <= data.until <= datetime.now(UTC)
    last = datetime.fromisoformat(list(data)[-1].created_at)
    assert data.until - timedelta(hours=1) <= last < data.until


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"events": 0}, "positive"),
        ({"events": 10, "method": "bulk"}, "method"),
        ({"events": 10, "until": "2026-11-01"}, "until must be a datetime"),
    ],
)
def test_seed_events_rejects_bad_arguments_before_connecting(kwargs, message):
    with pytest.raises(ValueError, match=message):
        seed_events("postgresql://nobody@/nowhere?host=/nonexistent", **kwargs)


# --------------------------------------------------------------------------------------
# COPY: determinism, order, exact counts.


@pytest.fixture(scope="module")
def copy_runs(make_database):
    """Seed 11 twice into two fresh databases and seed 12 into a third, all by COPY."""
    runs = {}
    for label, seed in (("a", 11), ("b", 11), ("other", 12)):
        urls = make_database(f"audit_seed_{label}")
        result = seed_events(
            urls.admin, events=COPY_EVENTS, seed=seed, method="copy", until=REFERENCE_UNTIL
        )
        runs[label] = (urls, result)
    return runs


def test_copy_is_deterministic(copy_runs):
    (urls_a, result_a), (urls_b, result_b) = copy_runs["a"], copy_runs["b"]
    rows_a = fetch_rows(urls_a.admin)
    assert len(rows_a) == COPY_EVENTS
    assert rows_a == fetch_rows(urls_b.admin)
    assert result_a.counts == result_b.counts
    assert result_a.busiest_aggregate_id == result_b.busiest_aggregate_id


def test_a_different_seed_gives_different_data(copy_runs):
    rows_a = fetch_rows(copy_runs["a"][0].admin)
    rows_other = fetch_rows(copy_runs["other"][0].admin)
    assert rows_a != rows_other
    assert {row[0] for row in rows_a}.isdisjoint(row[0] for row in rows_other)
    assert copy_runs["a"][1].busiest_aggregate_id != copy_runs["other"][1].busiest_aggregate_id


def test_copy_result_matches_the_table(copy_runs):
    urls, result = copy_runs["a"]
    assert result.method == "copy"
    assert result.events == sum(result.counts.values()) == COPY_EVENTS
    with psycopg.connect(libpq_url(urls.reader)) as conn:
        in_table = dict(
            conn.execute("SELECT event_type, count(*) FROM audit_events GROUP BY 1").fetchall()
        )
        # seq (COPY order) and created_at agree, so either order reads the same history.
        out_of_order = conn.execute(
            "SELECT count(*) FROM (SELECT created_at, lag(created_at) OVER (ORDER BY seq) AS prev"
            " FROM audit_events) s WHERE created_at < prev"
        ).fetchone()
        # ANALYZE ran: the planner knows the table is not empty.
        reltuples = conn.execute(
            "SELECT reltuples FROM pg_class WHERE oid = 'public.audit_events'::regclass"
        ).fetchone()
    assert in_table == dict(result.counts)
    assert out_of_order == (0,)
    assert reltuples is not None and reltuples[0] > 0


def test_seeding_the_same_seed_twice_is_refused(copy_runs):
    urls, _ = copy_runs["a"]
    with pytest.raises(SeedError, match="already in this database"):
        seed_events(urls.admin, events=COPY_EVENTS, seed=11)
    assert scalar(urls.admin, "SELECT count(*) FROM audit_events") == COPY_EVENTS


def test_busiest_user_has_exactly_ten_thousand_events_at_twenty_thousand(make_database):
    urls = make_database("audit_seed_busy")
    seen = []
    result = seed_events(
        urls.admin, events=20_000, seed=2, progress=lambda done, total: seen.append((done, total))
    )
    assert result.method == "copy"  # auto: the admin may INSERT
    assert seen[-1] == (20_000, 20_000)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    with psycopg.connect(libpq_url(urls.reader)) as conn:
        top = conn.execute(
            "SELECT aggregate_id, count(*) FROM audit_events GROUP BY 1 ORDER BY 2 DESC LIMIT 2"
        ).fetchall()
        first = conn.execute(
            "SELECT event_type FROM audit_events WHERE aggregate_id = %s "
            "ORDER BY created_at, seq LIMIT 1",
            (result.busiest_aggregate_id,),
        ).fetchone()
    assert top[0] == (result.busiest_aggregate_id, 10_000)
    assert top[1][1] < 10_000
    assert first == ("USER_CREATED",)


# --------------------------------------------------------------------------------------
# The function path, and what the writer role may do.


def test_function_path_as_writer(make_database):
    urls = make_database("audit_seed_fn")
    seen = []
    result = seed_events(
        urls.writer, events=300, seed=5, progress=lambda done, total: seen.append((done, total))
    )
    assert result.method == "function"  # auto: audit_writer may not INSERT
    assert seen[-1] == (300, 300)
    with psycopg.connect(libpq_url(urls.reader)) as conn:
        assert conn.execute("SELECT count(*) FROM audit_events").fetchone() == (300,)
        in_table = dict(
            conn.execute("SELECT event_type, count(*) FROM audit_events GROUP BY 1").fetchall()
        )
        # One transaction per request: its events share now(), whatever record they touch.
        split = conn.execute(
            "SELECT count(*) FROM (SELECT metadata->>'request_id' FROM audit_events "
            "WHERE metadata ? 'request_id' GROUP BY 1 HAVING count(DISTINCT created_at) > 1) s"
        ).fetchone()
        grouped = conn.execute(
            "SELECT count(*) FROM (SELECT metadata->>'request_id' FROM audit_events "
            "WHERE metadata ? 'request_id' GROUP BY 1 HAVING count(DISTINCT aggregate_id) > 1) s"
        ).fetchone()
    assert in_table == dict(result.counts)
    assert split == (0,)
    assert grouped is not None and grouped[0] > 0


def test_writer_cannot_insert_directly(empty_db):
    with (
        psycopg.connect(libpq_url(empty_db.writer)) as conn,
        pytest.raises(pg_errors.InsufficientPrivilege) as caught,
    ):
        conn.execute(
            "INSERT INTO audit_events (aggregate_id, event_type, payload) "
            "VALUES (gen_random_uuid(), 'USER_CREATED', '{}')"
        )
    assert caught.value.sqlstate == "42501"


def test_roles_that_can_do_neither_are_refused(empty_db):
    with pytest.raises(SeedError, match="insert_audit_event"):
        seed_events(empty_db.reader, events=10)
    with pytest.raises(SeedError, match="INSERT"):
        seed_events(empty_db.writer, events=10, method="copy")


# --------------------------------------------------------------------------------------
# record_event inside the application's transaction.


@pytest.fixture(scope="module")
def writer_db(make_database):
    return make_database("audit_writer_tx")


def events_of(urls, aggregate_id: uuid.UUID) -> list[tuple]:
    with psycopg.connect(libpq_url(urls.reader)) as conn:
        return conn.execute(
            "SELECT event_id, event_type, payload, metadata FROM audit_events "
            "WHERE aggregate_id = %s ORDER BY created_at, seq",
            (aggregate_id,),
        ).fetchall()


def test_record_event_rolls_back_and_commits_with_the_psycopg_transaction(writer_db):
    rolled_back, committed = uuid.uuid4(), uuid.uuid4()
    payload = {"name": "Zoë Ørsted", "address": {"city": "東京"}, "tags": [1, 2.5, None]}
    metadata = {"actor": STAFF_ACTOR, "request_id": str(uuid.uuid4()), "aggregate_type": "USER"}
    with psycopg.connect(libpq_url(writer_db.writer)) as conn:
        with pytest.raises(RuntimeError, match="business change failed"), conn.transaction():
            record_event(conn, rolled_back, "USER_CREATED", payload, metadata)
            raise RuntimeError("business change failed")
        with conn.transaction():
            event_id = record_event(conn, str(committed), "USER_CREATED", payload, metadata)
    assert isinstance(event_id, uuid.UUID)
    assert events_of(writer_db, rolled_back) == []
    assert events_of(writer_db, committed) == [(event_id, "USER_CREATED", payload, metadata)]


def test_record_event_accepts_a_cursor(writer_db):
    aggregate = uuid.uuid4()
    with psycopg.connect(libpq_url(writer_db.writer)) as conn, conn.cursor() as cur:
        first = record_event(cur, aggregate, "ORDER_CREATED", {"items": [{"id": "L1"}]})
        second = record_event(cur, aggregate, "ORDER_UPDATED", {"items": []}, None)
        conn.rollback()
        third = record_event(cur, aggregate, "ORDER_CREATED", {"items": []})
    assert first != second
    assert [row[0] for row in events_of(writer_db, aggregate)] == [third]


def test_record_event_accepts_sqlalchemy_connection_and_session(writer_db):
    engine = sa.create_engine(writer_db.writer)
    try:
        kept, dropped, via_session = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        with engine.begin() as conn:
            event_id = record_event(conn, kept, "ACCOUNT_CREATED", {"balance": 0})
        with engine.connect() as conn:
            record_event(conn, dropped, "ACCOUNT_CREATED", {"balance": 0})
            conn.rollback()
        with Session(engine) as session, session.begin():
            record_event(
                session, via_session, "ACCOUNT_SNAPSHOT", {"balance": 1.5}, {"actor": "system:x"}
            )
    finally:
        engine.dispose()
    assert events_of(writer_db, kept) == [(event_id, "ACCOUNT_CREATED", {"balance": 0}, None)]
    assert events_of(writer_db, dropped) == []
    assert [row[1:] for row in events_of(writer_db, via_session)] == [
        ("ACCOUNT_SNAPSHOT", {"balance": 1.5}, {"actor": "system:x"})
    ]


@pytest.fixture
def closed_connection(writer_db):
    """A psycopg connection that fails on any use: proof that validation sent nothing."""
    conn = psycopg.connect(libpq_url(writer_db.writer))
    conn.close()
    return conn


@pytest.mark.parametrize(
    "event_type",
    ["", "user_created", "USER-CREATED", "USER CREATED", "1_USER", "_USER", "A" * 51, None, 7],
)
def test_record_event_rejects_bad_event_types_before_touching_the_database(
    closed_connection, event_type
):
    with pytest.raises(ValueError, match="event_type"):
        record_event(closed_connection, uuid.uuid4(), event_type, {"a": 1})


def test_a_valid_event_does_reach_the_closed_connection(closed_connection):
    # The counterpart of the test above: valid input gets as far as the database.
    with pytest.raises(psycopg.OperationalError):
        record_event(closed_connection, uuid.uuid4(), "A" * 50, {"a": 1})


@pytest.mark.parametrize(
    ("aggregate_id", "payload", "metadata", "message"),
    [
        ("not-a-uuid", {}, None, "aggregate_id"),
        (uuid.uuid4(), {"when": object()}, None, "not JSON-serialisable"),
        (uuid.uuid4(), {"ratio": float("nan")}, None, "not JSON-serialisable"),
        (uuid.uuid4(), ["a", "list"], None, "JSON object"),
        (uuid.uuid4(), {"name": "nul\x00byte"}, None, "NUL"),
        (uuid.uuid4(), {"name": "\ud800"}, None, "Unicode"),
        (uuid.uuid4(), {}, {"actor": {1, 2}}, "metadata"),
        (uuid.uuid4(), {}, "actor=alice", "metadata must be a JSON object"),
    ],
)
def test_record_event_rejects_bad_values_before_touching_the_database(
    closed_connection, aggregate_id, payload, metadata, message
):
    with pytest.raises(ValueError, match=message):
        record_event(closed_connection, aggregate_id, "USER_UPDATED", payload, metadata)


def test_record_event_names_an_unknown_connection_type():
    with pytest.raises(TypeError, match="psycopg 3 Connection"):
        record_event(object(), uuid.uuid4(), "USER_UPDATED", {})


# --------------------------------------------------------------------------------------
# Realism of the shared seeded database (conftest: seeded by COPY as the admin).


@pytest.fixture(scope="module")
def seeded_rows(seeded_db) -> list[tuple]:
    return fetch_rows(seeded_db.reader)


@pytest.fixture(scope="module")
def timelines(seeded_rows) -> dict[uuid.UUID, list[tuple]]:
    by_record: dict[uuid.UUID, list[tuple]] = defaultdict(list)
    for row in seeded_rows:  # ordered by seq, which is also created_at order
        by_record[row[1]].append(row)
    return by_record


def test_kinds_and_event_types(seeded_rows, timelines):
    tagged = {
        row[4]["aggregate_type"] for row in seeded_rows if row[4] and "aggregate_type" in row[4]
    }
    assert {"USER", "ORDER", "ACCOUNT"} <= tagged
    types = {row[2] for row in seeded_rows}
    assert len(types) >= 8
    assert {"USER_CREATED", "USER_DELETED", "ACCOUNT_SNAPSHOT", "ORDER_UPDATED"} <= types
    # Records whose events never carry aggregate_type: the kind comes from the create type.
    untagged = [
        events
        for events in timelines.values()
        if not any(row[4] and "aggregate_type" in row[4] for row in events)
    ]
    assert untagged
    assert {events[0][2].rsplit("_", 1)[0] for events in untagged} <= {"USER", "ORDER", "ACCOUNT"}
    assert any(row[4] is None for row in seeded_rows)  # a few legacy events have no metadata


def test_every_record_starts_with_its_create_and_stays_deleted(timelines):
    after_delete = []
    for aggregate_id, events in timelines.items():
        assert events[0][2].endswith("_CREATED"), aggregate_id
        assert not any(row[2].endswith("_CREATED") for row in events[1:]), aggregate_id
        assert [row[5] for row in events] == sorted(row[5] for row in events)
        deleted = [i for i, row in enumerate(events) if row[2].endswith("_DELETED")]
        if deleted and deleted[0] < len(events) - 1:
            after_delete.append(events[deleted[0] + 1 :])
    # Exactly one deliberate anomaly, and it says so.
    assert len(after_delete) == 1
    assert all("ANOMALY" in row[4]["reason"] for row in after_delete[0])


def test_merge_patches_remove_keys_with_null(seeded_rows):
    removals = Counter(
        (row[2], key)
        for row in seeded_rows
        if not row[2].endswith(("_CREATED", "_SNAPSHOT"))
        for key, value in row[3].items()
        if value is None
    )
    assert removals[("USER_UPDATED", "phone")] > 0
    assert len(removals) >= 3


def test_orders_replace_item_arrays_with_ids(timelines):
    changed_ids = 0
    for events in timelines.values():
        if events[0][2] != "ORDER_CREATED":
            continue
        state = events[0][3]
        for row in events[1:]:
            before = {item["id"] for item in state["items"]}
            state = merge_patch(state, row[3])
            after = [item["id"] for item in state["items"]]
            assert len(after) == len(set(after))
            assert all({"id", "sku", "qty", "price"} <= item.keys() for item in state["items"])
            changed_ids += before != set(after)
    assert changed_ids > 0  # items were added or removed, not only edited


def test_snapshots_drop_keys_the_previous_state_had(timelines):
    dropped = Counter()
    for events in timelines.values():
        state = None
        for row in events:
            if row[2].endswith("_SNAPSHOT"):
                dropped.update(set(state) - set(row[3]))
                state = row[3]
            elif row[2].endswith("_CREATED"):
                state = row[3]
            else:
                state = merge_patch(state, row[3])
    assert dropped["last_adjustment"] > 0


def test_one_request_touches_several_records_at_one_instant(seeded_rows):
    requests: dict[str, list[tuple]] = defaultdict(list)
    for row in seeded_rows:
        if row[4] and "request_id" in row[4]:
            requests[row[4]["request_id"]].append(row)
    shared = [rows for rows in requests.values() if len({row[1] for row in rows}) > 1]
    assert shared
    assert all(len({row[5] for row in rows}) == 1 for rows in requests.values())
    assert any(
        {row[2] for row in rows} == {"ORDER_CREATED", "ACCOUNT_BALANCE_ADJUSTED", "USER_UPDATED"}
        for rows in shared
    )


def test_actors_and_request_metadata(seeded_rows):
    metadata = [row[4] for row in seeded_rows if row[4]]
    actors = Counter(m["actor"] for m in metadata)
    assert STAFF_ACTOR in actors
    assert any(actor.startswith("system:") for actor in actors)
    assert all("ip" in m and "user_agent" in m for m in metadata)
    with_reason = sum("reason" in m for m in metadata)
    assert 0 < with_reason < len(metadata)
    assert any("correlation_id" in m for m in metadata)


def test_personal_data_is_non_ascii_and_nested(seeded_rows):
    users = [row[3] for row in seeded_rows if row[2] == "USER_CREATED"]
    assert all({"name", "email", "address"} <= user.keys() for user in users)
    assert all(
        {"street", "city", "postcode", "country"} <= user["address"].keys() for user in users
    )
    assert any("phone" in user for user in users)
    text = json.dumps([row[3] for row in seeded_rows], ensure_ascii=False)
    assert any(ch in text for ch in "ëŁøéü")  # Latin letters beyond ASCII
    assert any("\u4e00" <= ch <= "\u9fff" for ch in text)  # and kanji (東京, 山田 太郎)


def test_history_spans_eighteen_months_and_has_one_very_busy_record(seeded_db, timelines):
    spread = scalar(seeded_db.reader, "SELECT max(created_at) - min(created_at) FROM audit_events")
    assert spread >= timedelta(days=17 * 30)
    sizes = sorted((len(events) for events in timelines.values()), reverse=True)
    total = sum(sizes)
    assert sizes[0] == busiest_event_count(total)
    assert sizes[1] >= 100  # a few more records with hundreds of events
    busiest = max(timelines.values(), key=len)
    assert busiest[0][2] == "USER_CREATED"


# --------------------------------------------------------------------------------------
# The seed command: data that ends when it is seeded, or at --until.


def test_seed_command_data_ends_now_so_the_last_day_has_events(make_database):
    from click.testing import CliRunner

    from dashboard.cli import main

    urls = make_database("audit_seed_now")
    result = CliRunner().invoke(main, ["seed", "--database-url", urls.admin, "--events", "300"])
    assert result.exit_code == 0, result.output
    last_day = scalar(
        urls.reader,
        "SELECT count(*) FROM audit_events WHERE created_at > now() - interval '1 day'",
    )
    newest = scalar(urls.reader, "SELECT now() - max(created_at) FROM audit_events")
    assert last_day > 0
    assert timedelta(0) <= newest < timedelta(hours=1, minutes=5)


def test_seed_command_until_pins_the_period(make_database):
    from click.testing import CliRunner

    from dashboard.cli import main

    urls = make_database("audit_seed_until")
    args = ["seed", "--database-url", urls.admin, "--events", "300", "--seed", "7"]
    result = CliRunner().invoke(main, [*args, "--until", "2026-01-02T03:04:05Z"])
    assert result.exit_code == 0, result.output
    until = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    low, high = scalar(
        urls.reader, "SELECT array[min(created_at), max(created_at)] FROM audit_events"
    )
    assert until - PERIOD <= low and until - timedelta(hours=1) <= high < until
    expected = [row.event_id for row in DemoData(300, seed=7, until=until)]
    assert [str(row[0]) for row in fetch_rows(urls.reader)] == expected
    bad = CliRunner().invoke(main, [*args, "--until", "yesterday"])
    assert bad.exit_code == 2 and "--until" in bad.output
