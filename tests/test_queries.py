"""Query builders: the SQL they compile to (every value bound, allow-listed identifiers,
keyset order) and what they return on the seeded PostgreSQL database."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from conftest import partition_roots
from sqlalchemy.dialects import postgresql
from werkzeug.datastructures import MultiDict

from dashboard import queries
from dashboard.db import TableInfo, make_engine
from dashboard.events import EVENT_FIELDS, Event
from dashboard.filters import Cursor, EventFilter, FilterError, parse_event_filter
from dashboard.timeline import RecordHistory

WITH_SEQ = TableInfo(has_seq=True, role="audit_reader", writable_privileges=(), has_access_log=True)
WITHOUT_SEQ = TableInfo(has_seq=False, role="r", writable_privileges=(), has_access_log=False)
RECORD = uuid.UUID("3f2b8c1e-0d4a-4e5f-9a7b-1c2d3e4f5a6b")
NASTY = "x'); DROP TABLE audit_events; --"


def compiled(statement):
    return statement.compile(dialect=postgresql.dialect())


def sql_of(statement) -> str:
    return " ".join(str(compiled(statement)).split())


def params_of(statement) -> dict:
    return compiled(statement).params


def test_every_filter_value_is_a_bound_parameter():
    f = parse_event_filter(
        MultiDict(
            [
                ("aggregate_id", str(RECORD)),
                ("type", NASTY),
                ("actor", NASTY),
                ("request_id", NASTY),
                ("field", NASTY),
                ("value", json.dumps(NASTY)),
                ("kind", NASTY),
                ("from", "2026-01-01"),
                ("to", "2026-02-01"),
            ]
        )
    )
    statement = queries.select_events(f, WITH_SEQ, limit=50)
    text = sql_of(statement)
    assert "DROP" not in text and NASTY not in text
    values = [value for value in params_of(statement).values()]
    assert RECORD in values
    assert NASTY in values
    flat = json.dumps([v for v in values if isinstance(v, dict)])
    assert "DROP TABLE" in flat  # the payload path is inside the bound JSON value


def test_json_keys_read_by_the_dashboard_are_in_the_sql_text_matching_the_indexes():
    f = EventFilter(actor="a", request_id="r")
    text = sql_of(queries.select_events(f, WITH_SEQ))
    # sql/006_indexes.sql: ((metadata ->> 'actor'), created_at, seq) and the coalesce(...)
    assert "(audit_events.metadata ->> 'actor') =" in text
    assert (
        "coalesce(audit_events.metadata ->> 'request_id', "
        "audit_events.metadata ->> 'correlation_id') =" in text
    )


def test_payload_filter_is_jsonb_containment():
    f = EventFilter(payload_path=("address", "city"), payload_value="Berlin")
    statement = queries.select_events(f, WITH_SEQ)
    assert "audit_events.payload @> %(param_1)s::JSONB" in sql_of(statement)
    assert params_of(statement)["param_1"] == {"address": {"city": "Berlin"}}


def test_order_and_keyset_with_seq():
    cursor = Cursor(datetime(2026, 1, 1, tzinfo=UTC), 10, RECORD)
    newest = sql_of(queries.select_events(EventFilter(), WITH_SEQ, cursor=cursor, limit=5))
    assert "ORDER BY audit_events.created_at DESC, audit_events.seq DESC" in newest
    assert "(audit_events.created_at, audit_events.seq) < (" in newest
    assert newest.endswith("LIMIT %(param_3)s::INTEGER")
    oldest = sql_of(queries.select_events(EventFilter(order="asc"), WITH_SEQ, cursor=cursor))
    assert "ORDER BY audit_events.created_at, audit_events.seq" in oldest
    assert "(audit_events.created_at, audit_events.seq) > (" in oldest
    back = sql_of(queries.select_events(EventFilter(), WITH_SEQ, cursor=cursor, backward=True))
    assert "(audit_events.created_at, audit_events.seq) > (" in back
    assert "ORDER BY audit_events.created_at, audit_events.seq" in back


def test_without_seq_orders_by_event_id_and_selects_null_seq():
    cursor = Cursor(datetime(2026, 1, 1, tzinfo=UTC), None, RECORD)
    text = sql_of(queries.select_events(EventFilter(), WITHOUT_SEQ, cursor=cursor))
    assert "CAST(NULL AS BIGINT) AS seq" in text
    assert "audit_events.seq" not in text
    assert "ORDER BY audit_events.created_at DESC, audit_events.event_id DESC" in text
    assert "(audit_events.created_at, audit_events.event_id) < (" in text


def test_a_cursor_without_seq_on_a_table_with_seq_is_refused():
    cursor = Cursor(datetime(2026, 1, 1, tzinfo=UTC), None, RECORD)
    with pytest.raises(FilterError):
        queries.select_events(EventFilter(), WITH_SEQ, cursor=cursor)


def test_aggregate_events_until_an_event_is_inclusive():
    until = Cursor(datetime(2026, 1, 1, tzinfo=UTC), 10, RECORD)
    text = sql_of(queries.select_aggregate_events(RECORD, WITH_SEQ, until=until))
    assert "audit_events.aggregate_id = " in text
    assert "(audit_events.created_at, audit_events.seq) <= (" in text
    assert text.endswith("ORDER BY audit_events.created_at, audit_events.seq")
    at = sql_of(queries.select_aggregate_events(RECORD, WITH_SEQ, until=until.created_at))
    assert "audit_events.created_at <= " in at


def test_facets_and_lists_are_bounded():
    f = EventFilter(time_from=datetime(2026, 1, 1, tzinfo=UTC))
    facet = queries.select_type_facet(f, limit=20)
    assert "GROUP BY audit_events.event_type" in sql_of(facet)
    assert 21 in params_of(facet).values()
    outline = queries.select_search_shape(f, width=timedelta(hours=1), limit=20)
    assert "GROUP BY GROUPING SETS" in sql_of(outline)
    assert 21 in params_of(outline).values()
    assert "WITH RECURSIVE types" in sql_of(queries.select_event_types())
    assert "WITH RECURSIVE kinds" in sql_of(queries.select_declared_kinds())
    with pytest.raises(ValueError):
        queries.select_events(f, WITH_SEQ, limit=5000)


def test_create_types_follow_the_rules():
    types = ["USER_CREATED", "USER_UPDATED", "ORDER_LINE_CREATED", "ORDER_CREATED"]
    assert queries.create_types_for_kind("USER", types) == ["USER_CREATED"]
    assert queries.create_types_for_kind("ORDER_LINE", types) == ["ORDER_LINE_CREATED"]
    assert queries.kinds_from_types(types) == ["ORDER", "ORDER_LINE", "USER"]


# --- On the seeded database -----------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(seeded_db):
    engine = make_engine(seeded_db.reader, pool_size=1)
    yield engine
    engine.dispose()


@pytest.fixture
def conn(engine):
    """A reader connection; its transaction (SQLAlchemy autobegins one) is rolled back."""
    with engine.connect() as connection:
        yield connection
        connection.rollback()


def test_keyset_pages_cover_every_row_once_in_order(conn):
    f = EventFilter(types=("USER_UPDATED",), order="desc")
    seen, cursor, pages = [], None, 0
    while True:
        page = queries.fetch_page(
            conn,
            queries.select_events(f, WITH_SEQ, cursor=cursor),
            100,
            has_previous=cursor is not None,
        )
        seen.extend((row.created_at, row.seq) for row in page.rows)
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    total = conn.execute(
        sa.text("SELECT count(*) FROM audit_events WHERE event_type = 'USER_UPDATED'")
    ).scalar()
    assert len(seen) == total == len(set(seen))
    assert seen == sorted(seen, reverse=True)
    assert pages == -(-total // 100) or pages == total // 100 + 1


@pytest.mark.parametrize("table", [WITH_SEQ, WITHOUT_SEQ], ids=["seq", "no seq"])
def test_a_pages_events_read_by_position_are_those_its_rows_name(conn, table):
    """Page.events reads event_columns() by position (the search page adds columns after
    them): the same events as Event.from_row's look-ups by name, in both table shapes."""
    whole = [column.name for column in queries.event_columns(table)]
    assert tuple(whole) == EVENT_FIELDS
    statement = queries.with_first_event(queries.select_events(EventFilter(), table), table)
    page = queries.fetch_page(conn, statement, 20)
    assert len(page.rows[0]) > len(whole)  # the kind's columns come after the event's
    by_name = [Event.from_row(row) for row in page.rows]
    assert page.events == by_name
    as_mappings = queries.Page(rows=[dict(row._mapping) for row in page.rows], next_cursor=None)
    assert as_mappings.events == by_name  # rows that are not SQLAlchemy's: read by name
    assert all(
        type(event.event_id) is str and type(event.aggregate_id) is str for event in page.events
    )
    assert (page.events[0].seq is None) == (not table.has_seq)


def test_going_back_returns_the_previous_page(conn):
    f = EventFilter()
    first = queries.fetch_page(conn, queries.select_events(f, WITH_SEQ), 10)
    second = queries.fetch_page(
        conn, queries.select_events(f, WITH_SEQ, cursor=first.next_cursor), 10, has_previous=True
    )
    assert second.prev_cursor is not None
    back = queries.fetch_page(
        conn,
        queries.select_events(f, WITH_SEQ, cursor=second.prev_cursor, backward=True),
        10,
        backward=True,
    )
    assert [row.event_id for row in back.rows] == [row.event_id for row in first.rows]
    assert back.prev_cursor is None  # nothing newer than the first page


def test_filters_match_what_they_say(conn):
    row = conn.execute(
        sa.text(
            "SELECT aggregate_id, metadata->>'actor' AS actor, "
            "coalesce(metadata->>'request_id', metadata->>'correlation_id') AS request_id "
            "FROM audit_events WHERE metadata ? 'request_id' ORDER BY seq LIMIT 1 OFFSET 100"
        )
    ).one()
    by_actor = conn.execute(queries.select_events(EventFilter(actor=row.actor), WITH_SEQ, limit=20))
    assert {r.metadata["actor"] for r in by_actor} == {row.actor}
    by_request = list(conn.execute(queries.select_request_events(row.request_id, WITH_SEQ)))
    assert by_request and all(
        (r.metadata.get("request_id") or r.metadata.get("correlation_id")) == row.request_id
        for r in by_request
    )
    city = EventFilter(payload_path=("address", "city"), payload_value="Berlin")
    matches = list(conn.execute(queries.select_events(city, WITH_SEQ, limit=50)))
    assert matches and all(r.payload["address"]["city"] == "Berlin" for r in matches)


def test_kind_filter_covers_declared_and_legacy_records(conn):
    types = list(conn.execute(queries.select_event_types()).scalars())
    assert "USER_CREATED" in types and types == sorted(types)
    kinds = queries.known_kinds(conn, types)
    assert {"USER", "ORDER", "ACCOUNT"} <= set(kinds)
    create_types = queries.create_types_for_kind("USER", types)
    rows = list(
        conn.execute(
            queries.select_events(
                EventFilter(kind="USER"), WITH_SEQ, limit=200, create_types=create_types
            )
        )
    )
    assert rows and all(r.event_type.startswith("USER_") for r in rows)


def shape_of(conn, f, **kwargs):
    kwargs.setdefault("timeout_ms", 5000)
    return queries.count_search_shape(
        conn,
        f,
        width=timedelta(days=7),
        restore_timeout_ms=5000,
        kind_create_types=["USER_CREATED", "ORDER_CREATED", "ACCOUNT_CREATED"],
        **kwargs,
    )


def test_facets_count_every_search_even_unbounded_and_agree_with_sql(conn):
    unbounded = shape_of(conn, EventFilter())
    assert not unbounded.estimated and unbounded.bars
    types = dict(unbounded.facets.types.values)
    expected = dict(
        conn.execute(sa.text("SELECT event_type, count(*) FROM audit_events GROUP BY 1")).all()
    )
    assert types == expected
    assert sum(count for _, count in unbounded.bars) == sum(expected.values())
    # Kinds: declared ones, and legacy records' kinds from their create events; the same
    # counts as the kind filter finds.
    kinds = dict(unbounded.facets.kinds.values)
    assert set(kinds) == {"USER", "ORDER", "ACCOUNT"}
    for kind, count in kinds.items():
        filtered = conn.execute(
            sa.select(sa.func.count()).select_from(
                queries.select_events(
                    EventFilter(kind=kind), WITH_SEQ, create_types=[f"{kind}_CREATED"]
                ).subquery()
            )
        ).scalar()
        assert count == filtered, kind
    days = unbounded.facets.days.values
    assert len(days) == queries.FACET_SIZE and unbounded.facets.days.truncated
    assert [n for _, n in days] == sorted((n for _, n in days), reverse=True)


def test_a_shape_that_times_out_says_not_counted_and_leaves_the_transaction_usable(
    conn, monkeypatch
):
    real = queries.select_search_shape

    def sleepy(*args, **kwargs):  # sleeps past its 50 ms limit
        return real(*args, **kwargs).where(sa.func.pg_sleep(0.5).is_not(None))

    monkeypatch.setattr(queries, "select_search_shape", sleepy)
    counted = shape_of(conn, EventFilter(), timeout_ms=50)
    assert counted.bars is None
    assert all(not facet.counted and "too long" in facet.reason for facet in counted.facets)
    assert conn.execute(sa.text("SHOW statement_timeout")).scalar() == "5s"


def test_as_of_lists_records_of_a_kind_in_id_order(conn):
    at = datetime(2026, 11, 1, tzinfo=UTC)
    ids = list(conn.execute(queries.select_kind_aggregates("USER", at, limit=10)).scalars())
    assert ids == sorted(ids) and len(ids) == 10
    more = list(
        conn.execute(queries.select_kind_aggregates("USER", at, after=ids[4], limit=5)).scalars()
    )
    assert more == ids[5:]
    rows = list(conn.execute(queries.select_aggregates_events(ids, WITH_SEQ, until=at)))
    assert {row.aggregate_id for row in rows} == set(ids)


def test_records_without_a_declared_kind_count_by_their_create_type(conn):
    legacy = conn.execute(
        sa.text(
            "SELECT aggregate_id FROM audit_events WHERE event_type = 'USER_CREATED' "
            "AND NOT coalesce(metadata ? 'aggregate_type', false) ORDER BY aggregate_id LIMIT 1"
        )
    ).scalar()
    assert legacy is not None, "the seed has legacy records"
    at = datetime(2026, 11, 1, tzinfo=UTC)
    declared_only = set(
        conn.execute(queries.select_kind_aggregates("USER", at, limit=1000)).scalars()
    )
    both = list(
        conn.execute(
            queries.select_kind_aggregates("USER", at, limit=1000, create_types=["USER_CREATED"])
        ).scalars()
    )
    assert legacy not in declared_only and legacy in both
    assert both == sorted(both) and declared_only < set(both)
    # Paging through the merge gives the same ids, once each.
    paged, after = [], None
    while True:
        page = list(
            conn.execute(
                queries.select_kind_aggregates(
                    "USER", at, after=after, limit=7, create_types=["USER_CREATED"]
                )
            ).scalars()
        )
        if not page:
            break
        paged.extend(page)
        after = page[-1]
    assert paged == both
    # The kind filter of a search finds the legacy record's events too.
    events = list(
        conn.execute(
            queries.select_events(
                EventFilter(kind="USER", aggregate_id=legacy),
                WITH_SEQ,
                create_types=["USER_CREATED"],
            )
        )
    )
    assert events and all(not (row.metadata or {}).get("aggregate_type") for row in events)
    orders = queries.select_events(
        EventFilter(kind="ORDER", aggregate_id=legacy), WITH_SEQ, create_types=["ORDER_CREATED"]
    )
    assert list(conn.execute(orders)) == []


def test_streamed_fold_matches_the_api_shape(conn):
    busiest = conn.execute(
        sa.text(
            "SELECT aggregate_id FROM audit_events GROUP BY aggregate_id "
            "ORDER BY count(*) DESC LIMIT 1"
        )
    ).scalar()
    history = RecordHistory(
        queries.iter_events(conn, queries.select_aggregate_events(busiest, WITH_SEQ))
    )
    assert len(history) > 100
    assert history.final.version == len(history)


def test_plans_use_the_named_indexes(conn):
    """Loose: on 3,000 rows the planner may prefer a sequential scan for broad queries, so
    only the selective ones are checked, with sequential scans switched off."""
    record = conn.execute(sa.text("SELECT aggregate_id FROM audit_events LIMIT 1")).scalar()
    conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
    for statement, index in (
        (queries.select_aggregate_events(record, WITH_SEQ), "audit_events_aggregate_idx"),
        (queries.select_events(EventFilter(), WITH_SEQ, limit=50), "audit_events_time_idx"),
        (
            queries.select_events(EventFilter(types=("USER_DELETED",)), WITH_SEQ, limit=50),
            "audit_events_type_time_idx",
        ),
        (
            queries.select_events(EventFilter(actor="x"), WITH_SEQ, limit=50),
            "audit_events_actor_time_idx",
        ),
        (queries.select_request_events("x", WITH_SEQ), "audit_events_request_idx"),
        (
            queries.select_events(
                EventFilter(payload_path=("a",), payload_value=1), WITH_SEQ, limit=50
            ),
            "audit_events_payload_idx",
        ),
    ):
        plan = queries.explain(conn, statement)
        used = partition_roots(conn, queries.indexes_in_plan(plan)).values()
        assert index in used, (index, plan)


def test_facets_are_sampled_when_the_planner_expects_too_many_rows(conn, monkeypatch):
    f = EventFilter(
        time_from=datetime(2000, 1, 1, tzinfo=UTC), time_to=datetime(2100, 1, 1, tzinfo=UTC)
    )
    assert queries.estimated_rows(conn, f) > 1000
    monkeypatch.setattr(queries, "FACET_MAX_ROWS", 1000)
    counted = shape_of(conn, f)
    assert counted.estimated and 0 < counted.sample_fraction < 1
    assert all(facet.counted and facet.estimated for facet in counted.facets)
    statement = queries.select_search_shape(f, width=timedelta(days=1), sample_percent=5.0)
    assert "TABLESAMPLE system" in sql_of(statement)
    assert "FROM audit_events AS sampled" in sql_of(statement)


# --- Errors from the driver's own cursors --------------------------------------------------


def test_a_statement_cancelled_while_streaming_is_a_sqlalchemy_error(conn):
    """iter_events reads through psycopg's cursors; a cancelled statement (or a lost
    connection) must come out as SQLAlchemy's error, which the app answers with a 503, not
    as psycopg's, which it would answer with a 500."""
    table = queries.db.inspect_table(conn)
    slow = queries.select_events(EventFilter(), table, limit=5).where(
        sa.literal_column("pg_sleep(0.5) IS NOT NULL")
    )
    conn.execute(sa.text("SELECT set_config('statement_timeout', '50', true)"))
    with pytest.raises(sa.exc.OperationalError) as caught:
        list(queries.iter_events(conn, slow))
    assert queries.db.is_query_canceled(caught.value)


def test_first_events_fail_as_sqlalchemy_errors(conn):
    table = queries.db.inspect_table(conn)
    record = conn.execute(sa.text("SELECT aggregate_id::text FROM audit_events LIMIT 1")).scalar()
    assert queries.first_events(conn, [record], table)[record][0].endswith("_CREATED")
    with pytest.raises(sa.exc.DataError):
        conn.execute(sa.text("SELECT 1 / 0"))
    with pytest.raises(sa.exc.DBAPIError):  # the transaction is aborted
        queries.first_events(conn, [record], table)


def test_the_record_digest_changes_with_any_column_of_any_row(make_database):
    """The history cache serves a fold only while this digest is unchanged
    (dashboard.history): an in-place change of any column of any of the record's rows,
    by a superuser with the triggers off, must change it; so must a NULL metadata
    becoming ``{}`` (both print as nothing to a careless join), and another record's rows
    must not count."""
    import psycopg
    from conftest import as_attacker

    from dashboard.db import libpq_url

    urls = make_database("audit_digest")
    record, other = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(libpq_url(urls.admin)) as conn:
        for aggregate_id in (record, other):
            conn.execute(
                "INSERT INTO audit_events (aggregate_id, event_type, payload, metadata) "
                "SELECT %s, 'ITEM_UPDATED', jsonb_build_object('n', n), "
                'CASE WHEN n = 2 THEN NULL ELSE \'{"actor": "a"}\'::jsonb END '
                "FROM generate_series(1, 3) AS n ORDER BY n",
                (aggregate_id,),
            )
        middle = conn.execute(
            "SELECT seq FROM audit_events WHERE aggregate_id = %s ORDER BY seq OFFSET 1 LIMIT 1",
            (record,),
        ).fetchone()[0]
    engine = make_engine(urls.reader, pool_size=1)

    def digest() -> bytes:
        with engine.connect() as conn:
            return bytes(conn.execute(queries.select_aggregate_digest(record)).scalar_one())

    try:
        seen = [digest()]
        assert digest() == seen[0]  # a function of the rows
        as_attacker(
            urls, f"UPDATE audit_events SET payload = '{{\"n\": 9}}' WHERE aggregate_id = '{other}'"
        )
        assert digest() == seen[0]
        for change in (
            "event_type = 'ITEM_CREATED'",
            'payload = payload || \'{"note": "x"}\'',
            "metadata = '{}'",  # it was NULL
            "created_at = created_at + interval '1 microsecond'",
            "event_id = gen_random_uuid()",
        ):
            as_attacker(urls, f"UPDATE audit_events SET {change} WHERE seq = {middle}")
            changed = digest()
            assert changed not in seen, change
            seen.append(changed)
    finally:
        engine.dispose()
