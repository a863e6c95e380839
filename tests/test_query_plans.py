"""The plan of every hot query: the index it must use and no sequential scan of
audit_events, so a plan that regresses fails CI without timing anything.

The statements are the app's own builders (:mod:`dashboard.queries`,
:func:`dashboard.reports.csv_export.csv_select`), explained with their own bound values on a
database of PLAN_EVENTS generated events (server-side ``generate_series``, then
``ANALYZE``): large enough that the planner's choices are the ones it makes at millions of
rows — sequential scans are *not* switched off here. Plans are read from
``EXPLAIN (FORMAT JSON)`` by walking the node tree, which has the same shape on
PostgreSQL 15 and 18 (text plans differ between them). On a partitioned table
(``AUDIT_TEST_PARTITIONED=1``) each partition and partition index is named by the parent
table or index it belongs to, so the same assertions hold on both layouts.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from conftest import EMPTY_PARTITION, PARTITIONED, partition_roots

from dashboard import db, queries
from dashboard.access_log.browsing import AccessLogQuery, browse_statement, rows_without_seqscan
from dashboard.db import libpq_url
from dashboard.filters import Cursor, EventFilter
from dashboard.reports.csv_export import csv_select, export_connection, high_water_mark

PLAN_EVENTS = 120_000
RECORDS = 12_000
BIG_RECORD_EVENTS = 3_000
BIG_RECORD = uuid.UUID("00000000-0000-4000-8000-00000000b16e")
START = datetime(2024, 1, 1, tzinfo=UTC)
SPAN_SECONDS = 365 * 86_400
CREATE_TYPES = ["ACCOUNT_CREATED", "ORDER_CREATED", "USER_CREATED"]

# Realistic mix: a record is created once, then updated; ten percent are "legacy" records
# whose events carry no metadata.aggregate_type (their kind comes from the create event).
GENERATE = """
INSERT INTO audit_events (aggregate_id, event_type, payload, metadata, created_at)
SELECT md5('record' || (i %% %(records)s))::uuid,
       CASE WHEN i <= %(records)s THEN kinds.kind || '_CREATED'
            WHEN i %% 250 = 17 THEN 'PASSWORD_RESET'  -- a rare type, 0.4%% of events
            ELSE kinds.kind || (ARRAY['_UPDATED', '_UPDATED', '_VIEWED', '_SHIPPED',
                                      '_ADJUSTED', '_DELETED'])[1 + i / 3 %% 6] END,
       jsonb_build_object('n', i, 'status', (ARRAY['new', 'paid', 'sent'])[1 + i %% 3]),
       jsonb_build_object('actor', 'user' || (i * 7919 %% 500), 'ip', '10.0.' || (i %% 200)
                          || '.1', 'request_id', 'req-' || (i / 3))
         || CASE WHEN i %% %(records)s %% 10 = 0 THEN '{}'::jsonb
                 ELSE jsonb_build_object('aggregate_type', kinds.kind) END,
       %(start)s::timestamptz + (i::float8 / %(events)s * %(span)s) * interval '1 second'
FROM generate_series(1, %(events)s) AS i
CROSS JOIN LATERAL (SELECT (ARRAY['USER', 'ACCOUNT', 'ORDER'])[1 + (i %% %(records)s) %% 3]
                    AS kind) AS kinds
"""
BIG = """
INSERT INTO audit_events (aggregate_id, event_type, payload, metadata, created_at)
SELECT %(id)s, CASE WHEN i = 1 THEN 'ORDER_CREATED' ELSE 'ORDER_UPDATED' END,
       jsonb_build_object('n', i), jsonb_build_object('actor', 'bulk', 'aggregate_type', 'ORDER'),
       %(start)s::timestamptz + i * interval '1 hour'
FROM generate_series(1, %(n)s) AS i
"""


@pytest.fixture(scope="module")
def plan_db(make_database):
    urls = make_database("audit_plans")
    with psycopg.connect(libpq_url(urls.admin)) as conn:
        conn.execute(
            GENERATE,
            {"records": RECORDS, "events": PLAN_EVENTS, "start": START, "span": SPAN_SECONDS},
        )
        conn.execute(BIG, {"id": BIG_RECORD, "start": START, "n": BIG_RECORD_EVENTS})
    with psycopg.connect(libpq_url(urls.admin), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE audit_events")
    return urls


@pytest.fixture
def conn(plan_db) -> Iterator[sa.Connection]:
    engine = db.make_engine(plan_db.reader, pool_size=1)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


@pytest.fixture
def table(conn) -> db.TableInfo:
    return db.inspect_table(conn)


def plan_nodes(conn: sa.Connection, statement: sa.Select) -> list[dict[str, Any]]:
    """Every node of the statement's plan (EXPLAIN (FORMAT JSON), values bound as run)."""
    document = conn.execute(queries._Explain(statement, analyze=False, as_json=True)).scalar()
    nodes: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> None:
        nodes.append(node)
        for child in node.get("Plans", ()):
            walk(child)

    walk(document[0]["Plan"])
    _name_partitions_by_their_parents(conn, nodes)
    return nodes


def _name_partitions_by_their_parents(conn: sa.Connection, nodes: list[dict[str, Any]]) -> None:
    """audit_events_p2024_03 -> audit_events, and each partition's index -> the parent's."""
    keys = ("Relation Name", "Index Name")
    roots = partition_roots(conn, (node[key] for node in nodes for key in keys if key in node))
    for node in nodes:
        for key in keys:
            if key in node:
                node[key] = roots[node[key]]


def assert_plan(
    conn: sa.Connection, statement: sa.Select, *indexes: str | tuple[str, ...]
) -> list[dict[str, Any]]:
    """No Seq Scan on audit_events, and each index used (a tuple: one of them)."""
    nodes = plan_nodes(conn, statement)
    described = [
        (node["Node Type"], node.get("Relation Name"), node.get("Index Name")) for node in nodes
    ]
    seq_scans = [
        node
        for node in nodes
        if node["Node Type"] == "Seq Scan" and node.get("Relation Name") == "audit_events"
    ]
    assert not seq_scans, described
    used = {node["Index Name"] for node in nodes if "Index Name" in node}
    for index in indexes:
        assert used & ({index} if isinstance(index, str) else set(index)), (index, described)
    return nodes


def _cursor_in_the_middle(conn: sa.Connection, f: EventFilter, table) -> Cursor:
    """The last row of a first page, as the page's "next" link would carry it."""
    rows = list(conn.execute(queries.select_events(f, table, limit=51)))
    return Cursor.after(rows[-1])


MONTH = EventFilter(time_from=START + timedelta(days=120), time_to=START + timedelta(days=151))
WEEK = EventFilter(time_from=START + timedelta(days=200), time_to=START + timedelta(days=207))
BY_TYPE = EventFilter(types=("PASSWORD_RESET",))
BY_ACTOR = EventFilter(actor="user42")

SEARCHES = {
    "newest": (EventFilter(), "audit_events_time_idx"),
    "type": (BY_TYPE, "audit_events_type_time_idx"),
    "actor": (BY_ACTOR, "audit_events_actor_time_idx"),
    "time": (MONTH, "audit_events_time_idx"),
    "type+time": (
        EventFilter(types=("PASSWORD_RESET",), time_from=MONTH.time_from, time_to=MONTH.time_to),
        "audit_events_type_time_idx",
    ),
}


@pytest.mark.parametrize("name", list(SEARCHES))
@pytest.mark.parametrize("order", ["desc", "asc"])
def test_search_first_and_next_page(conn, table, name, order):
    f, index = SEARCHES[name]
    f = dataclasses.replace(f, order=order)
    assert_plan(conn, queries.select_events(f, table, limit=51), index)
    cursor = _cursor_in_the_middle(conn, f, table)
    assert_plan(conn, queries.select_events(f, table, cursor=cursor, limit=51), index)
    # "previous": the rows before the cursor, read the other way along the same index.
    assert_plan(
        conn, queries.select_events(f, table, cursor=cursor, backward=True, limit=51), index
    )


@pytest.mark.parametrize("name", list(SEARCHES))
def test_the_search_pages_kinds_come_from_each_records_first_index_entry(conn, table, name):
    """The HTML page reads its records' kinds in its own statement (a LATERAL per row that
    declares no kind): the first entry of audit_events_aggregate_idx, never a sort or a
    scan of a record."""
    f, index = SEARCHES[name]
    statement = queries.with_first_event(queries.select_events(f, table, limit=51), table)
    nodes = assert_plan(conn, statement, index, "audit_events_aggregate_idx")
    lateral = [node for node in nodes if node.get("Index Name") == "audit_events_aggregate_idx"]
    assert all(node["Node Type"] in ("Index Scan", "Index Only Scan") for node in lateral)


def test_one_records_events_and_state_at(conn, table):
    at = START + timedelta(days=30)
    for statement in (
        queries.select_aggregate_events(BIG_RECORD, table, limit=51),
        queries.select_aggregate_events(BIG_RECORD, table, slim=True),
        queries.select_aggregate_events(BIG_RECORD, table, until=at, slim=True),
        queries.select_aggregate_summary(BIG_RECORD, table),
    ):
        assert_plan(conn, statement, "audit_events_aggregate_idx")


def test_the_pdf_reports_replay_of_a_batch_of_records(conn, table):
    """What each listed event changed: the histories of REPLAY_BATCH records at a time."""
    from dashboard.reports.builder import REPLAY_BATCH, replay_select

    ids = list(
        conn.execute(
            sa.select(queries.audit_events.c.aggregate_id)
            .where(queries.audit_events.c.created_at >= START + timedelta(days=100))
            .group_by(queries.audit_events.c.aggregate_id)
            .limit(REPLAY_BATCH)
        ).scalars()
    )
    mark = high_water_mark(conn, table)
    statement = replay_select(table, ids, mark, START + timedelta(days=200))
    assert_plan(conn, statement, "audit_events_aggregate_idx")


@pytest.mark.parametrize(
    ("f", "index", "ordered"),
    # A month (8% of this small table): PostgreSQL 15 still prefers a bitmap scan and a
    # sort of ~10k rows here; PostgreSQL 18 reads the index in order.
    [(MONTH, "audit_events_time_idx", False), (BY_TYPE, "audit_events_type_time_idx", True)],
    ids=["month", "type"],
)
def test_the_exports_select(plan_db, table, f, index, ordered):
    """On the export's own connection (its planner settings), as exports run it."""
    engine = db.make_engine(plan_db.reader, pool_size=1)
    try:
        with export_connection(engine, 30_000) as conn:
            mark = high_water_mark(conn, table)
            statement = csv_select(f, table, mark, create_types=CREATE_TYPES)
            nodes = assert_plan(conn, statement, index, "audit_events_aggregate_idx")
    finally:
        engine.dispose()
    # The rows come in index order: an ordered Index Scan, no bitmap scan and sort of
    # the selection (at 10M events a month took 2.4 s that way instead of 0.4 s).
    # (On the partitioned table (AUDIT_TEST_PARTITIONED=1) each partition of this small
    # table chooses for itself, index order or a bitmap scan and a sort of its few rows;
    # tests/test_partitions.py and the benchmark look at that layout's plans.)
    if ordered and not PARTITIONED:
        selection = [n for n in nodes if n.get("Index Name") == index]
        assert [n["Node Type"] for n in selection] == ["Index Scan"], selection
        assert not [n for n in nodes if n["Node Type"] == "Sort"], [n["Node Type"] for n in nodes]
    # The kind of a record: its first event, one entry of audit_events_aggregate_idx in
    # index order -- never a bitmap scan of the record followed by a sort.
    # (Partitioned: one such Index Scan per partition, aliased first_event_1, _2 ...)
    first_event = [
        node
        for node in nodes
        if re.fullmatch(r"first_event(_\d+)?", node.get("Alias", ""))
        and node["Node Type"] != "Result"
        and node.get("Relation Name") != EMPTY_PARTITION  # a month to come: any index will do
    ]
    assert first_event, [n.get("Alias") for n in nodes]
    assert {node["Node Type"] for node in first_event} == {"Index Scan"}, first_event
    assert {node["Index Name"] for node in first_event} == {"audit_events_aggregate_idx"}


def test_the_as_of_query(conn, table):
    at = START + timedelta(days=200)
    ids_statement = queries.select_kind_aggregates(
        "ORDER", at, limit=101, create_types=["ORDER_CREATED"]
    )
    assert_plan(
        conn, ids_statement, "audit_events_aggregate_type_idx", "audit_events_undeclared_kind_idx"
    )
    ids = list(conn.execute(ids_statement).scalars())[:100]
    assert len(ids) == 100
    assert_plan(
        conn,
        queries.select_aggregates_events(ids, table, until=at, slim=True),
        "audit_events_aggregate_idx",
    )


@pytest.mark.parametrize("builder", [queries.select_type_facet, queries.select_actor_facet])
def test_facets_over_a_week(conn, builder):
    # The range of audit_events_time_idx; PostgreSQL 18 may instead skip-scan
    # audit_events_type_time_idx index-only (one range per event type).
    assert_plan(conn, builder(WEEK), ("audit_events_time_idx", "audit_events_type_time_idx"))
    typed = EventFilter(types=("PASSWORD_RESET",), time_from=WEEK.time_from, time_to=WEEK.time_to)
    assert_plan(conn, builder(typed), "audit_events_type_time_idx")


def test_a_sequential_scan_is_caught(conn):
    """The check can fail: an unindexed condition over the whole table is a Seq Scan."""
    statement = sa.select(queries.audit_events.c.event_id).where(
        queries.audit_events.c.payload["n"].astext == "7"
    )
    with pytest.raises(AssertionError):
        assert_plan(conn, statement)


# The access log of a busy dashboard: a record viewed a few times long ago, then many newer
# entries of search pages of 60 records each (arrays stored out of line, as a page's are),
# another record in one entry in 25 of them.
BUSY_LOG_ENTRIES = 25_000
RARELY_VIEWED = "00000000-0000-4000-8000-0000000a11ce"
OFTEN_VIEWED = "00000000-0000-4000-8000-00000000f00d"


@pytest.fixture(scope="module")
def busy_access_log(plan_db):
    with psycopg.connect(libpq_url(plan_db.admin)) as conn:
        conn.execute(
            "INSERT INTO audit_access_log (username, action, aggregate_ids, entry_uuid)"
            " SELECT 'auditor', 'record_view', ARRAY[%s], gen_random_uuid()"
            " FROM generate_series(1, 3)",
            (RARELY_VIEWED,),
        )
        conn.execute(
            "INSERT INTO audit_access_log (username, action, aggregate_ids, entry_uuid)"
            " SELECT 'auditor', 'search',"
            "        ARRAY(SELECT gen_random_uuid()::text"  # random: they do not compress
            "              FROM generate_series(1, 60) AS j WHERE i > 0)"
            "        || CASE WHEN i %% 25 = 0 THEN ARRAY[%s] ELSE ARRAY[]::text[] END,"
            "        gen_random_uuid()"
            " FROM generate_series(1, %s) AS i",
            (OFTEN_VIEWED, BUSY_LOG_ENTRIES),
        )
        conn.execute(  # long ago: a rare visitor, an export, a refusal; then a busy colleague
            "INSERT INTO audit_access_log (username, action, outcome, entry_uuid)"
            " SELECT CASE WHEN i <= 2 THEN 'rare.visitor' ELSE 'busy.auditor' END,"
            "        CASE WHEN i IN (3, 4) THEN 'export_csv' ELSE 'search' END,"
            "        CASE WHEN i IN (5, 6) THEN 'denied' ELSE 'ok' END,"
            "        gen_random_uuid()"
            " FROM generate_series(1, 20000) AS i"
        )
    with psycopg.connect(libpq_url(plan_db.admin), autocommit=True) as conn:
        # ANALYZE, not VACUUM: the newest entries wait in the GIN index's pending list, as
        # they do in a log written all day between two autovacuums. The planner prices
        # the index dearer then and, left to itself, reads every entry's ids instead.
        conn.execute("ANALYZE audit_access_log")


@pytest.mark.parametrize("record", [RARELY_VIEWED, OFTEN_VIEWED], ids=["rarely", "often"])
def test_who_viewed_a_record_is_found_by_its_entries_not_by_reading_the_log(
    conn, busy_access_log, record
):
    """The record page's "who viewed it" panel (and the access-log page's record filter):
    through the GIN index of aggregate_ids, as browse() runs it. Neither the primary key
    walked backwards testing every newer entry (the whole log, for a record seen fewer
    times than a page holds) nor a scan of every entry's ids (which the planner prices as
    cheap, for a record in a few per cent of the entries)."""
    del busy_access_log
    statement = browse_statement(AccessLogQuery(aggregate_id=record, limit=20))
    with conn.begin():
        (explained,) = rows_without_seqscan(
            conn, queries._Explain(statement, analyze=False, as_json=True)
        )
    nodes: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> None:
        nodes.append(node)
        for child in node.get("Plans", ()):
            walk(child)

    walk(next(iter(explained.values()))[0]["Plan"])
    described = [
        (node["Node Type"], node.get("Index Name"), node.get("Index Cond")) for node in nodes
    ]
    assert any(node.get("Index Name") == "audit_access_log_aggregate_idx" for node in nodes), (
        described
    )
    reads = [  # a scan of every entry, or the primary key walked without a bound
        node
        for node in nodes
        if node.get("Relation Name") == "audit_access_log"
        and (
            node["Node Type"] == "Seq Scan"
            or (node.get("Index Name") == "audit_access_log_pkey" and "Index Cond" not in node)
        )
    ]
    assert not reads, described
    with conn.begin():
        rows = rows_without_seqscan(conn, statement)
        setting = conn.execute(sa.text("SHOW enable_seqscan")).scalar()
    assert setting == "on"  # put back for the rest of the request
    assert all(record in row["aggregate_ids"] for row in rows)
    assert len(rows) == (3 if record == RARELY_VIEWED else 21)
    assert [row["id"] for row in rows] == sorted((row["id"] for row in rows), reverse=True)


@pytest.mark.parametrize(
    ("field", "value", "index"),
    [
        ("user", "rare.visitor", "audit_access_log_user_idx"),
        ("action", "export_csv", "audit_access_log_action_idx"),
        ("outcome", "denied", "audit_access_log_outcome_idx"),
    ],
)
def test_a_filtered_access_log_page_is_read_from_its_index_not_by_walking_the_log(
    conn, busy_access_log, field, value, index
):
    """The access-log page filtered by user, action or outcome: the newest matching entries
    from that field's index (sql/013), not the primary key walked backwards testing every
    newer entry (the whole log, when fewer entries match than a page holds)."""
    del busy_access_log
    statement = browse_statement(AccessLogQuery(**{field: value, "limit": 50}))
    nodes = plan_nodes(conn, statement)
    described = [
        (node["Node Type"], node.get("Index Name"), node.get("Index Cond")) for node in nodes
    ]
    assert any(node.get("Index Name") == index for node in nodes), described
    assert not [
        node
        for node in nodes
        if node.get("Relation Name") == "audit_access_log"
        and (node["Node Type"] == "Seq Scan" or "Index Cond" not in node)
        and node["Node Type"] != "Bitmap Heap Scan"
    ], described
    rows = conn.execute(statement).all()
    column = {"user": "username"}.get(field, field)
    assert [getattr(row, column) for row in rows] == [value] * 2
    assert rows[0].id > rows[1].id
