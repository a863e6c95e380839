"""The partitioned layout (``init-db --partition monthly``), on a real PostgreSQL: the same
immutability, grants and insert function as the plain table, on the parent and on every
partition; ``partitions ensure`` (idempotent, one transaction, clear refusals); converting
a plain table in place; partition pruning; and the app's key paths giving the same answers
as on the plain table. ``AUDIT_TEST_PARTITIONED=1`` runs the other modules on this layout.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, date, datetime

import psycopg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from conftest import SEED, a_busy_record, assert_answers_as_plain, sign_in
from test_integrity_verify import Log

from dashboard import context, db, queries
from dashboard.cli import main
from dashboard.db import libpq_url
from dashboard.filters import Cursor, EventFilter
from dashboard.partitions import plan, store
from dashboard.reports import csv_export
from dashboard.rules import derive_kind
from dashboard.schema import apply_schema
from dashboard.seed import REFERENCE_UNTIL, seed_events

EVENTS = 1500


def connect(url: str, **kwargs) -> psycopg.Connection:
    return psycopg.connect(libpq_url(url), **kwargs)


def seeded(make_database, prefix: str, *, partitioned: bool):
    urls = make_database(prefix, partitioned=partitioned)
    seed_events(urls.admin, events=EVENTS, seed=SEED, until=REFERENCE_UNTIL, method="copy")
    with connect(urls.admin, autocommit=True) as conn:
        conn.execute("ANALYZE audit_events")
    return urls


@pytest.fixture(scope="module")
def part_db(make_database):
    return seeded(make_database, "audit_part", partitioned=True)


@pytest.fixture(scope="module")
def plain_db(make_database):
    return seeded(make_database, "audit_part_plain", partitioned=False)


def partitions_of(url: str) -> list[str]:
    with connect(url) as conn:
        return [
            row[0]
            for row in conn.execute(
                "SELECT relid::regclass::text FROM pg_partition_tree('audit_events') "
                "WHERE level > 0 ORDER BY 1"
            )
        ]


def a_partition_with_rows(url: str) -> str:
    with connect(url) as conn:
        return conn.execute(
            "SELECT tableoid::regclass::text FROM audit_events ORDER BY created_at LIMIT 1"
        ).fetchone()[0]


def sqlstate_of(url: str, statement: str, params=(), *, role=None, read_write=False):
    with connect(url) as conn:
        if read_write:
            conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
            conn.commit()
        if role:
            conn.execute(f"SET ROLE {role}")  # a constant of the test
        try:
            conn.execute(statement, params)
        except psycopg.Error as exc:
            return exc.sqlstate
        finally:
            conn.rollback()
    return None


# --- Layout, immutability, grants ------------------------------------------------------------


def test_the_table_is_partitioned_by_month_with_the_seed_in_its_partitions(part_db):
    with connect(part_db.admin) as conn:
        key = conn.execute("SELECT pg_get_partkeydef('audit_events'::regclass)").fetchone()[0]
        empty_parent = conn.execute("SELECT count(*) FROM ONLY audit_events").fetchone()[0]
        total = conn.execute("SELECT count(*) FROM audit_events").fetchone()[0]
    assert key == "RANGE (created_at)"
    assert (empty_parent, total) == (0, EVENTS)
    names = partitions_of(part_db.admin)
    assert "audit_events_p2025_06" in names and len(names) > 24


@pytest.mark.parametrize("role", [None, "audit_owner"], ids=["superuser", "owner"])
@pytest.mark.parametrize(
    "statement",
    ["UPDATE {} SET event_type = 'CHANGED'", "DELETE FROM {}", "TRUNCATE {}"],
    ids=["update", "delete", "truncate"],
)
@pytest.mark.parametrize("target", ["parent", "partition"])
def test_events_cannot_be_changed_on_the_parent_or_a_partition(part_db, role, statement, target):
    table = "audit_events" if target == "parent" else a_partition_with_rows(part_db.admin)
    with connect(part_db.admin) as conn:
        if role:
            conn.execute("SET ROLE audit_owner")
        with pytest.raises(psycopg.Error, match="append-only") as caught:
            conn.execute(statement.format(table))
        assert caught.value.sqlstate == "42501"


def test_a_partition_made_by_hand_is_guarded_too(part_db):
    """The event trigger gives a partition anyone creates its TRUNCATE trigger and owner."""
    with connect(part_db.admin) as conn:
        conn.execute(
            "CREATE TABLE by_hand PARTITION OF audit_events "
            "FOR VALUES FROM ('2040-01-01') TO ('2040-02-01')"
        )
        conn.execute("GRANT INSERT ON by_hand TO audit_reader")
        conn.execute("ALTER TABLE audit_events DETACH PARTITION by_hand")
        conn.execute(
            "ALTER TABLE audit_events ATTACH PARTITION by_hand "
            "FOR VALUES FROM ('2040-01-01') TO ('2040-02-01')"
        )
        conn.execute(
            "INSERT INTO audit_events (aggregate_id, event_type, payload, created_at) "
            "VALUES (gen_random_uuid(), 'X_CREATED', '{}', '2040-01-02')"
        )
        owner, acl = conn.execute(
            "SELECT pg_get_userbyid(relowner), relacl::text FROM pg_class WHERE relname = 'by_hand'"
        ).fetchone()
        assert owner == "audit_owner" and (acl is None or "audit_reader" not in acl)
        with pytest.raises(psycopg.Error, match="append-only"):
            conn.execute("TRUNCATE by_hand")
        conn.rollback()


def test_readers_read_through_the_parent_only(part_db):
    partition = a_partition_with_rows(part_db.admin)
    assert sqlstate_of(part_db.reader, "SELECT count(*) FROM audit_events") is None
    assert sqlstate_of(part_db.reader, f"SELECT * FROM {partition}") == "42501"
    assert sqlstate_of(part_db.notary, f"SELECT * FROM {partition}") == "42501"
    insert = f"INSERT INTO {partition} (aggregate_id, event_type, payload) SELECT aggregate_id, event_type, payload FROM {partition} LIMIT 1"  # noqa: E501
    assert sqlstate_of(part_db.reader, insert, read_write=True) == "42501"
    assert sqlstate_of(part_db.writer, insert) == "42501"


def test_writer_inserts_through_the_function_into_this_months_partition(part_db):
    aggregate = uuid.uuid4()
    with connect(part_db.writer) as conn:
        event_id = conn.execute(
            "SELECT insert_audit_event(%s, 'USER_CREATED', %s::jsonb, NULL)",
            (aggregate, json.dumps({"name": "Zoë"})),
        ).fetchone()[0]
    now = datetime.now(UTC)
    with connect(part_db.admin) as conn:
        where, seq, top = conn.execute(
            "SELECT tableoid::regclass::text, seq, (SELECT max(seq) FROM audit_events) "
            "FROM audit_events WHERE event_id = %s",
            (event_id,),
        ).fetchone()
    assert where == plan.partition_name(plan.month_start(now))
    assert seq == top


def test_keys_include_created_at_and_an_event_outside_every_partition_is_refused(part_db):
    with connect(part_db.admin) as conn:
        event_id, created_at = conn.execute(
            "SELECT event_id, created_at FROM audit_events LIMIT 1"
        ).fetchone()
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "INSERT INTO audit_events (event_id, aggregate_id, event_type, payload, created_at)"
                " VALUES (%s, gen_random_uuid(), 'X_CREATED', '{}', %s)",
                (event_id, created_at),
            )
        conn.rollback()
        # No DEFAULT partition: the writer gets an error, the event is not filed silently.
        with pytest.raises(psycopg.errors.CheckViolation, match="no partition"):
            conn.execute(
                "INSERT INTO audit_events (aggregate_id, event_type, payload, created_at)"
                " VALUES (gen_random_uuid(), 'X_CREATED', '{}', '2099-01-01')"
            )


# --- partitions ensure -----------------------------------------------------------------------


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_ensure_is_idempotent(make_database):
    urls = make_database("audit_part_ensure", partitioned=True)
    before = partitions_of(urls.admin)
    first = run("partitions", "ensure", "--admin-url", urls.admin, "--months-ahead", "6")
    assert first.exit_code == 0, first.output
    made = sorted(set(partitions_of(urls.admin)) - set(before))
    assert len(made) == 3 and first.output.count("audit_events_p") == 3  # 3 ahead before
    again = run("partitions", "ensure", "--admin-url", urls.admin, "--months-ahead", "6")
    assert again.exit_code == 0 and "nothing to do" in again.output
    assert partitions_of(urls.admin) == sorted(before + made)
    for name in made:
        assert sqlstate_of(urls.admin, f"TRUNCATE {name}") == "42501"


def test_ensure_on_a_plain_table_names_the_conversion(plain_db):
    result = run("partitions", "ensure", "--admin-url", plain_db.admin)
    assert result.exit_code == 2
    assert "plain" in result.output and "init-db --admin-url URL --partition monthly" in (
        result.output.replace("\n", " ")
    )


def test_ensure_on_a_table_of_another_shape(cluster):
    name = "audit_part_list_" + uuid.uuid4().hex[:8]
    with connect(cluster.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        with connect(cluster.url(name)) as conn:
            conn.execute(
                "CREATE TABLE audit_events (event_id uuid, event_type text, created_at timestamptz)"
                " PARTITION BY LIST (event_type)"
            )
        result = run("partitions", "ensure", "--admin-url", cluster.url(name))
        assert result.exit_code == 2
        assert "LIST (event_type)" in result.output and "RANGE (created_at)" in result.output
    finally:
        cluster.drop_database(name)


def test_ensure_without_privileges(part_db):
    before = partitions_of(part_db.admin)
    result = run("partitions", "ensure", "--admin-url", part_db.reader, "--months-ahead", "9")
    assert result.exit_code == 2
    assert "'audit_reader' may not create partitions" in result.output
    assert partitions_of(part_db.admin) == before


def test_ensure_that_fails_half_way_leaves_nothing(make_database):
    urls = make_database("audit_part_half", partitioned=True)
    before = partitions_of(urls.admin)
    now = datetime.now(UTC)
    in_the_way = plan.partition_name(plan.add_months(plan.month_start(now), 6))
    with connect(urls.admin) as conn:
        conn.execute(f"CREATE TABLE {in_the_way} (x int)")  # a name the 6th month needs
    result = run("partitions", "ensure", "--admin-url", urls.admin, "--months-ahead", "8")
    assert result.exit_code == 2 and "Nothing was changed" in result.output
    assert partitions_of(urls.admin) == before  # months 4 and 5 were rolled back too


# --- Converting a plain table ----------------------------------------------------------------


def test_a_plain_table_is_converted_without_rewriting_it(make_database):
    urls = make_database("audit_part_convert", partitioned=False)
    seed_events(urls.admin, events=400, seed=3, until=REFERENCE_UNTIL, method="copy")

    def files(conn):
        return dict(
            conn.execute(
                "SELECT c.relname, c.relfilenode FROM pg_class c WHERE c.oid = "
                "'audit_events'::regclass OR c.oid IN (SELECT indexrelid FROM pg_index "
                "WHERE indrelid = 'audit_events'::regclass AND indisunique IS FALSE)"
            ).fetchall()
        )

    with connect(urls.admin) as conn:
        old = files(conn)
        last_seq = conn.execute("SELECT max(seq) FROM audit_events").fetchone()[0]
    apply_schema(urls.admin, partition="monthly")
    with connect(urls.admin) as conn:
        kept = dict(
            conn.execute(
                "SELECT relname, relfilenode FROM pg_class WHERE relname LIKE "
                "'audit\\_events\\_historical%%'"
            ).fetchall()
        )
        assert kept["audit_events_historical"] == old["audit_events"]  # the same file
        for name, filenode in old.items():
            if name != "audit_events":  # every index kept, renamed, attached to the parent's
                assert kept[plan.HISTORICAL + name[len(plan.PARENT) :]] == filenode, name
        assert conn.execute("SELECT count(*) FROM audit_events").fetchone()[0] == 400
    with connect(urls.writer) as conn:
        conn.execute("SELECT insert_audit_event(gen_random_uuid(), 'X_CREATED', '{}', NULL)")
    with connect(urls.admin) as conn:
        assert conn.execute("SELECT max(seq) FROM audit_events").fetchone()[0] == last_seq + 1
    assert sqlstate_of(urls.admin, "TRUNCATE audit_events_historical") == "42501"
    assert sqlstate_of(urls.admin, "DELETE FROM audit_events_historical") == "42501"
    assert sqlstate_of(urls.reader, "SELECT 1 FROM audit_events_historical") == "42501"
    apply_schema(urls.admin, partition="monthly")  # again: nothing to do
    apply_schema(urls.admin)  # and plain init-db keeps it partitioned
    assert "audit_events_historical" in partitions_of(urls.admin)


# --- Pruning -------------------------------------------------------------------------------


def scanned_partitions(conn: sa.Connection, statement) -> set[str]:
    document = conn.execute(queries._Explain(statement, analyze=False, as_json=True)).scalar()
    found: set[str] = set()

    def walk(node):
        if node.get("Relation Name", "").startswith("audit_events_p"):
            found.add(node["Relation Name"])
        for child in node.get("Plans", ()):
            walk(child)

    walk(document[0]["Plan"])
    return found


MONTH = (datetime(2025, 9, 1, tzinfo=UTC), datetime(2025, 10, 1, tzinfo=UTC))
TWO_MONTHS = (datetime(2026, 1, 15, tzinfo=UTC), datetime(2026, 3, 10, tzinfo=UTC))


@pytest.mark.parametrize(
    ("span", "expected"),
    [
        (MONTH, {"audit_events_p2025_09"}),
        (TWO_MONTHS, {f"audit_events_p2026_0{m}" for m in (1, 2, 3)}),
    ],
    ids=["month", "two-months"],
)
@pytest.mark.parametrize("types", [(), ("USER_UPDATED",)], ids=["all", "type"])
@pytest.mark.parametrize("order", ["desc", "asc"])
def test_a_search_over_a_time_range_reads_only_its_partitions(
    part_db, span, expected, types, order
):
    f = EventFilter(time_from=span[0], time_to=span[1], types=types, order=order)
    engine = db.make_engine(part_db.reader, pool_size=1)
    try:
        with engine.connect() as conn:
            table = db.inspect_table(conn)
            first = queries.select_events(f, table, limit=51)
            assert scanned_partitions(conn, first) == expected
            rows = list(conn.execute(first))
            assert rows, "the range holds events"
            cursor = Cursor.after(rows[min(len(rows), 50) - 1])
            following = queries.select_events(f, table, cursor=cursor, limit=51)
            assert scanned_partitions(conn, following) <= expected
    finally:
        engine.dispose()


def test_a_search_without_a_range_reads_every_partition(part_db):
    """The check can fail: without a time range nothing is pruned."""
    engine = db.make_engine(part_db.reader, pool_size=1)
    try:
        with engine.connect() as conn:
            statement = queries.select_events(
                EventFilter(types=("USER_UPDATED",)), db.inspect_table(conn), limit=51
            )
            assert len(scanned_partitions(conn, statement)) > 12
    finally:
        engine.dispose()


def kind_probe_loops(document) -> list[int]:
    """How often each Append over the kind probe's partitions (aliased first_event_N,
    maybe under a Result) ran, in an EXPLAIN (ANALYZE, FORMAT JSON) document."""

    def scans(node):
        yield node.get("Alias", "")
        if node["Node Type"] == "Result":
            for child in node.get("Plans", ()):
                yield from scans(child)

    def walk(node):
        children = node.get("Plans", ())
        if node["Node Type"] == "Append" and any(
            alias.startswith("first_event") for child in children for alias in scans(child)
        ):
            yield node["Actual Loops"]
        for child in children:
            yield from walk(child)

    return list(walk(document[0]["Plan"]))


UNDECLARED = (
    "CASE WHEN jsonb_typeof(metadata -> 'aggregate_type') = 'string'"
    " THEN NULLIF(metadata ->> 'aggregate_type', '') END IS NULL"
)


def test_the_exports_kind_probe_runs_for_undeclared_rows_only(part_db):
    """The CSV export's kind column probes a record's first event only for rows without
    metadata.aggregate_type. The probe of a partitioned table is an Append of one index
    scan per partition; the "undeclared" test must gate that Append, not be copied into
    each of its branches (then every exported row stepped through one branch per
    partition: twice the export's time at 39 partitions)."""
    f = EventFilter(time_from=MONTH[0], time_to=MONTH[1])
    engine = db.make_engine(part_db.reader, pool_size=1)
    try:
        with engine.connect() as conn:
            table = db.inspect_table(conn)
            mark = csv_export.high_water_mark(conn, table)
            create_types = queries.all_create_types(
                conn.execute(queries.select_event_types()).scalars()
            )
            statement = csv_export.csv_select(f, table, mark, create_types=create_types)
            document = conn.execute(
                queries._Explain(statement, analyze=True, as_json=True)
            ).scalar()
            rows, undeclared = conn.execute(
                sa.text(
                    f"SELECT count(*), count(*) FILTER (WHERE {UNDECLARED}) FROM audit_events"
                    " WHERE created_at >= :low AND created_at < :high"
                ),
                {"low": MONTH[0], "high": MONTH[1]},
            ).one()
    finally:
        engine.dispose()
    assert 0 < undeclared < rows, (undeclared, rows)  # so the check can fail
    loops = kind_probe_loops(document)
    assert loops, "the export reads its kinds through a probe of the partitions"
    assert all(count <= undeclared for count in loops), (loops, undeclared, rows)


def test_the_search_pages_kinds_come_from_a_probe_planned_once(part_db, make_app):
    """On a partitioned table a search page's statement reads only its month (no LATERAL
    over every partition, which each page would plan again: queries.with_first_event), and
    the kinds of its records that declare none come from queries.first_events: the same
    first events the LATERAL finds, from one statement prepared on the connection, kept
    across requests (the reader commits), run once a page for all its records and planned
    once for every page."""
    f = EventFilter(time_from=MONTH[0], time_to=MONTH[1])
    app = make_app(database_url=part_db.reader)
    with app.app_context():
        table = context.table_info()
        assert table.partitioned and queries.probes_first_events_apart(table)
        lateral = dataclasses.replace(table, partitioned=False)  # the plain table's way
        undeclared = set()
        for request_number in range(7):  # seven requests, one pooled connection
            with app.test_request_context():
                conn = context.connection()
                statement = queries.with_first_event(
                    queries.select_events(f, table, limit=51), table
                )
                if request_number == 0:
                    assert scanned_partitions(conn, statement) == {"audit_events_p2025_09"}
                    rows = conn.execute(statement).all()
                    undeclared = {
                        str(row.aggregate_id)
                        for row in rows
                        if derive_kind(None, row.metadata) is None
                    }
                    assert 0 < len(undeclared) < len(rows)  # so the checks can fail
                    assert all(row.first_event_type is None for row in rows)
                    expected = {
                        str(row.aggregate_id): (row.first_event_type, row.first_declared_kind)
                        for row in conn.execute(
                            queries.with_first_event(
                                queries.select_events(f, table, limit=51), lateral
                            )
                        )
                        if str(row.aggregate_id) in undeclared
                    }
                assert queries.first_events(conn, undeclared, table) == expected
                if request_number == 6:
                    prepared = conn.execute(
                        sa.text(
                            "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                            " WHERE statement LIKE '%first_event%'"
                        )
                    ).all()
                context.close_connection()
    # One statement, prepared once and kept, run once a request for all its records;
    # PostgreSQL plans it once for every set of records after its first five runs (a
    # custom plan each).
    assert len(prepared) == 1, prepared
    generic, custom = prepared[0]
    assert (custom, generic) == (5, 7 - 5), prepared[0]


def test_a_reader_prepares_nothing_by_itself(part_db, make_app):
    """psycopg prepares a statement run five times on a connection unless told otherwise;
    PostgreSQL may then plan it once for every value (a plan made for a common event type
    walks the time index to the end for a rare one). The reader prepares only what asks
    for it (queries.first_events), even now that its transactions end with COMMIT, which
    keeps prepared statements."""
    app = make_app(database_url=part_db.reader)
    f = EventFilter(types=("USER_UPDATED",))
    with app.app_context():
        table = context.table_info()
        for _ in range(8):
            with app.test_request_context():
                conn = context.connection()
                conn.execute(queries.select_events(f, table, limit=51)).all()
                prepared = conn.execute(
                    sa.text("SELECT count(*) FROM pg_prepared_statements")
                ).scalar()
                context.close_connection()
    assert prepared == 0


# --- The app on the partitioned table: the same answers as on the plain one --------------


@pytest.fixture
def clients(make_app, part_db, plain_db):
    """A signed-in auditor on each layout."""
    made = {}
    for name, urls in (("partitioned", part_db), ("plain", plain_db)):
        app = make_app(database_url=urls.reader, access_log_url=urls.logger)
        made[name] = sign_in(app.test_client(), "auditor")
    return made


def test_search_record_state_and_export_agree_with_the_plain_table(clients, part_db, plain_db):
    record = a_busy_record(part_db.admin)
    assert record == a_busy_record(plain_db.admin)
    assert_answers_as_plain(clients, "partitioned", record)


def test_seal_and_verify_on_the_partitioned_table(make_database, tmp_path):
    urls = make_database("audit_part_verify", partitioned=True)
    seed_events(urls.admin, events=300, seed=11, until=REFERENCE_UNTIL, method="copy")
    log = Log(urls, tmp_path)
    log.seal()
    result = log.verify()
    assert result.exit_code == 0, result.output
    # Tampering with a row in one partition (triggers off, as an attacker would) is found.
    with connect(urls.admin) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            "UPDATE audit_events SET payload = '{\"forged\": true}' WHERE seq = "
            "(SELECT min(seq) FROM audit_events)"
        )
    assert log.verify().exit_code == 1


def test_month_planning_is_pure():
    existing = [plan.Range(None, datetime(2026, 1, 1, tzinfo=UTC))]
    wanted = plan.missing_months(
        existing, first=datetime(2025, 11, 5, tzinfo=UTC), last=date(2026, 2, 1)
    )
    assert [name for name, _ in wanted] == ["audit_events_p2026_01", "audit_events_p2026_02"]
    assert plan.parse_bound("FOR VALUES FROM (MINVALUE) TO ('2027-01-01 00:00:00+00')") == (
        existing[0].__class__(None, datetime(2027, 1, 1, tzinfo=UTC))
    )
    with pytest.raises(plan.BoundError):
        plan.parse_bound("FOR VALUES IN ('a')")
    assert store.LOCK_TIMEOUT


def test_a_reader_that_can_write_to_one_partition_is_refused(part_db, make_app):
    from dashboard.db import WritableRole

    partition = a_partition_with_rows(part_db.admin)
    with connect(part_db.admin) as conn:
        conn.execute(f"GRANT INSERT ON {partition} TO audit_reader")
    try:
        with pytest.raises(WritableRole, match="INSERT"):
            make_app(database_url=part_db.reader, access_log_url=part_db.logger)
    finally:
        with connect(part_db.admin) as conn:
            conn.execute(f"REVOKE INSERT ON {partition} FROM audit_reader")


@pytest.mark.parametrize("order", ["desc", "asc"])
def test_a_next_page_reads_no_month_its_cursor_has_passed(part_db, order):
    """A keyset cursor (a row comparison, which PostgreSQL cannot prune by) carries the
    plain created_at bound it implies, so pages deep in an unbounded search skip the
    months already read: all of them before (asc) or after (desc) the cursor's month."""
    engine = db.make_engine(part_db.reader, pool_size=1)
    try:
        with engine.connect() as conn:
            table = db.inspect_table(conn)
            middle = conn.execute(
                sa.text(
                    "SELECT event_id, seq, created_at FROM audit_events WHERE created_at "
                    ">= '2026-01-10' ORDER BY created_at, seq LIMIT 1"
                )
            ).one()
            cursor = Cursor.after(middle)
            f = EventFilter(order=order)
            for backward in (False, True):
                scanned = scanned_partitions(
                    conn,
                    queries.select_events(f, table, cursor=cursor, backward=backward, limit=51),
                )
                later = order == "asc" if not backward else order == "desc"
                passed = {
                    name
                    for name in partitions_of(part_db.admin)
                    if name.startswith("audit_events_p")
                    and (
                        name > "audit_events_p2026_01"
                        if not later
                        else name < "audit_events_p2026_01"
                    )
                }
                assert scanned and not (scanned & passed), (order, backward, sorted(scanned))
    finally:
        engine.dispose()


def test_a_record_page_reads_only_the_records_own_months(part_db, make_app, monkeypatch):
    """An id names no partition. The record page folds the record from slim rows bounded by
    its first and last time (its summary), so they come from the record's months only; then
    it reads the events it shows whole by id and by their own first and last time, so from
    their months only. Without the bounds, every partition was probed."""
    with connect(part_db.admin) as conn:
        record, months = conn.execute(
            "SELECT aggregate_id, count(DISTINCT tableoid) FROM audit_events"
            " GROUP BY aggregate_id ORDER BY count(DISTINCT tableoid) DESC, aggregate_id LIMIT 1"
        ).fetchone()
        first, last = conn.execute(
            "SELECT min(created_at), max(created_at) FROM audit_events WHERE aggregate_id = %s",
            (record,),
        ).fetchone()
        spanned = {
            row[0]
            for row in conn.execute(
                "SELECT relid::text FROM pg_partition_tree('audit_events') WHERE isleaf"
                " AND relid::text IN (SELECT format('audit_events_p%%s', to_char(m, 'YYYY_MM'))"
                " FROM generate_series(date_trunc('month', %s::timestamptz AT TIME ZONE 'UTC'),"
                " %s::timestamptz AT TIME ZONE 'UTC', interval '1 month') AS m)",
                (first, last),
            )
        }
        newest = conn.execute(
            "SELECT DISTINCT tableoid::regclass::text FROM (SELECT tableoid FROM audit_events"
            " WHERE aggregate_id = %s ORDER BY created_at DESC, seq DESC LIMIT 2) AS shown",
            (record,),
        ).fetchall()
    assert months >= 3, "a record spread over several months"
    assert len(spanned) < len(partitions_of(part_db.admin)), "some months hold none of it"
    made: dict[str, list[sa.Select]] = {"select_aggregate_events": [], "select_events_by_id": []}
    for name, kept in made.items():
        real = getattr(queries, name)

        def keep(*args, _real=real, _kept=kept, **kwargs):
            _kept.append(_real(*args, **kwargs))
            return _kept[-1]

        monkeypatch.setattr(queries, name, keep)
    app = make_app(database_url=part_db.reader)
    client = sign_in(app.test_client(), "auditor")
    page = client.get(f"/aggregates/{record}?limit=2")
    assert page.status_code == 200, page.text[:500]
    assert len(made["select_aggregate_events"]) == len(made["select_events_by_id"]) == 1
    engine = db.make_engine(part_db.reader, pool_size=1)
    try:
        with engine.connect() as conn:
            fold = made["select_aggregate_events"][0]
            assert scanned_partitions(conn, fold) == spanned
            with connect(part_db.admin) as admin:
                count = admin.execute(
                    "SELECT count(*) FROM audit_events WHERE aggregate_id = %s", (record,)
                ).fetchone()[0]
            assert len(conn.execute(fold).all()) == count
            whole = made["select_events_by_id"][0]
            assert scanned_partitions(conn, whole) == {row[0] for row in newest}
            assert len(conn.execute(whole).all()) == 2
    finally:
        engine.dispose()
