"""audit_events on a real Citus citus_cluster (``init-db --citus``): a coordinator and two workers
(``tests/citus.py``) for the module.

The layout (distributed by aggregate_id, keys, roles on the workers, triggers on every
shard, the writer's door on the coordinator only), clear refusals, the plans (a record and
state-at are single-shard router queries; a search fans out with ORDER BY/LIMIT pushed to
the workers), the app's answers equal to a plain table of the same events, sealing and
verifying (tampering with a shard row is found; the horizon rule waits for a worker's
prepared transaction; concurrent writers), and a worker that is down: a 503 naming it.

Skipped with a message when the Citus build is not installed in the venv's PostgreSQL;
``AUDIT_TEST_REQUIRE_CITUS=1`` (CI) makes that a failure instead.
"""

from __future__ import annotations

import os
import threading
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
import sqlalchemy as sa
from citus import CitusCluster, citus_installed
from click.testing import CliRunner
from conftest import (
    PASSWORDS,
    SEED,
    DatabaseUrls,
    a_busy_record,
    assert_answers_as_plain,
    sign_in,
)
from psycopg.types.json import Jsonb
from test_integrity_verify import Log

from dashboard import db, queries
from dashboard.cli import main
from dashboard.db import libpq_url
from dashboard.filters import EventFilter
from dashboard.integrity.notary import find_horizon
from dashboard.schema import apply_schema
from dashboard.seed import REFERENCE_UNTIL, seed_events

DATABASE = "audit"
EVENTS = 1500
SHARDS = 8  # citus.shard_count of the test citus_cluster (tests/citus.py)


@pytest.fixture(scope="module")
def citus_cluster():
    why_not = citus_installed()
    if why_not:
        message = f"Citus tests need the Citus build: {why_not}"
        if os.environ.get("AUDIT_TEST_REQUIRE_CITUS") == "1":
            pytest.fail(message + " (AUDIT_TEST_REQUIRE_CITUS=1)")
        pytest.skip(message)
    citus_cluster = CitusCluster(workers=2)
    try:
        citus_cluster.start()
        citus_cluster.create_database(DATABASE)
        yield citus_cluster
    finally:
        citus_cluster.stop()


def urls_of(citus_cluster: CitusCluster, database: str) -> DatabaseUrls:
    node = citus_cluster.coordinator

    def url(role: str) -> str:
        return node.url(database, role, PASSWORDS[role])

    return DatabaseUrls(
        name=database,
        admin=node.url(database),
        reader=url("audit_reader"),
        writer=url("audit_writer"),
        logger=url("audit_access_logger"),
        notary=url("audit_notary"),
    )


@pytest.fixture(scope="module")
def citus_db(citus_cluster) -> DatabaseUrls:
    urls = urls_of(citus_cluster, DATABASE)
    applied = apply_schema(urls.admin, passwords=PASSWORDS, citus=True)
    assert applied[0] == "citus/audit_events.sql" and applied[-1] == "citus/cluster.sql"
    seed_events(urls.admin, events=EVENTS, seed=SEED, until=REFERENCE_UNTIL, method="copy")
    citus_cluster.coordinator.execute("ANALYZE audit_events", DATABASE)
    return urls


@pytest.fixture(scope="module")
def plain_db(make_database) -> DatabaseUrls:
    urls = make_database("audit_citus_plain", partitioned=False)
    seed_events(urls.admin, events=EVENTS, seed=SEED, until=REFERENCE_UNTIL, method="copy")
    return urls


def connect(url: str, **kwargs) -> psycopg.Connection:
    return psycopg.connect(libpq_url(url), **kwargs)


def one(url: str, statement: str, params=()):
    with connect(url) as conn:
        return conn.execute(statement, params).fetchone()


def error_of(url: str, statement: str, params=(), *, setup=()) -> str | None:
    """The error message of ``statement`` (rolled back), None when it succeeds."""
    with connect(url) as conn:
        try:
            for command in setup:
                conn.execute(command)
            conn.execute(statement, params)
        except psycopg.Error as exc:
            return str(exc)
        finally:
            conn.rollback()
    return None


def shard_of(citus_cluster: CitusCluster, aggregate_id) -> tuple[str, int]:
    """(shard table name, worker port) holding ``aggregate_id``'s events."""
    name, port = citus_cluster.coordinator.execute(
        "SELECT shard_name('audit_events'::regclass, s.shardid), p.nodeport "
        "FROM pg_dist_shard s JOIN pg_dist_placement pl USING (shardid) "
        "JOIN pg_dist_node p ON p.groupid = pl.groupid "
        "WHERE s.shardid = get_shard_id_for_distribution_column('audit_events', %s::uuid)",
        DATABASE,
        (str(aggregate_id),),
    )[0]
    return name, port


def worker_at(citus_cluster: CitusCluster, port: int):
    return next(w for w in citus_cluster.workers if w.port == port)


# --- The layout ------------------------------------------------------------------------------


def test_audit_events_is_distributed_by_aggregate_id_with_keys_that_include_it(
    citus_db, citus_cluster
):
    coordinator = citus_cluster.coordinator
    assert coordinator.execute(
        "SELECT column_to_column_name(logicalrelid, partkey), partmethod "
        "FROM pg_dist_partition WHERE logicalrelid = 'audit_events'::regclass",
        DATABASE,
    ) == [("aggregate_id", "h")]
    keys = dict(
        coordinator.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'audit_events'::regclass AND contype IN ('p', 'u')",
            DATABASE,
        )
    )
    assert keys == {
        "audit_events_pkey": "PRIMARY KEY (aggregate_id, event_id)",
        "audit_events_seq_key": "UNIQUE (aggregate_id, seq)",
    }
    # The tamper-evidence tree and the access log are plain tables of the coordinator.
    assert coordinator.execute(
        "SELECT count(*) FROM pg_dist_partition WHERE logicalrelid::text LIKE 'audit_%' "
        "AND logicalrelid <> 'audit_events'::regclass",
        DATABASE,
    ) == [(0,)]
    # Shards on both workers, each with both immutability triggers.
    rows = coordinator.execute(
        "SELECT nodeport, success, result FROM run_command_on_shards('audit_events', "
        "$$SELECT string_agg(tgname, ',' ORDER BY tgname) FROM pg_trigger "
        "WHERE tgrelid = '%s'::regclass AND NOT tgisinternal$$) "
        "JOIN pg_dist_placement USING (shardid) JOIN pg_dist_node USING (groupid)",
        DATABASE,
    )
    assert len(rows) == SHARDS
    assert {port for port, _, _ in rows} == {w.port for w in citus_cluster.workers}
    for _, success, result in rows:
        assert success, result
        assert [name.rsplit("_", 1)[0] for name in result.split(",")] == [
            "audit_events_no_truncate",
            "audit_events_no_update_delete",
        ]
    # Every role exists on every worker (Citus propagates CREATE ROLE and ALTER ROLE).
    for worker in citus_cluster.workers:
        assert worker.execute(
            "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname LIKE 'audit\\_%' ORDER BY 1",
            DATABASE,
        ) == [
            ("audit_access_logger", True),
            ("audit_notary", True),
            ("audit_owner", True),  # the coordinator reaches workers as it (insert function)
            ("audit_reader", True),
            ("audit_writer", True),
        ]


def test_init_db_citus_again_changes_nothing(citus_db, citus_cluster):
    def shape():
        return citus_cluster.coordinator.execute(
            "SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = 'audit_events'::regclass "
            "UNION ALL SELECT count(*) FROM audit_events "
            "UNION ALL SELECT max(seq) FROM audit_events",
            DATABASE,
        )

    before = shape()
    result = CliRunner().invoke(main, ["init-db", "--admin-url", citus_db.admin, "--citus"])
    assert result.exit_code == 0, result.output
    # A plain init-db keeps it distributed (as it keeps a partitioned table partitioned).
    result = CliRunner().invoke(main, ["init-db", "--admin-url", citus_db.admin])
    assert result.exit_code == 0, result.output
    assert "citus/distribute.sql" in result.output
    assert shape() == before


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET payload = '{}' WHERE seq = 1",
        "DELETE FROM audit_events WHERE seq = 1",
        "TRUNCATE audit_events",
    ],
)
def test_events_cannot_be_changed_as_the_owner_or_the_writer(citus_db, statement):
    as_owner = error_of(citus_db.admin, statement, setup=["SET ROLE audit_owner"])
    assert as_owner is not None and "append-only" in as_owner
    as_writer = error_of(citus_db.writer, statement)
    assert as_writer is not None and "permission denied" in as_writer


@pytest.mark.parametrize(
    "statement",
    ["UPDATE {shard} SET payload = '{{}}'", "DELETE FROM {shard}", "TRUNCATE {shard}"],
)
def test_a_shard_cannot_be_changed_on_its_worker_either(citus_db, citus_cluster, statement):
    aggregate = one(citus_db.admin, "SELECT aggregate_id FROM audit_events LIMIT 1")[0]
    shard, port = shard_of(citus_cluster, aggregate)
    worker = worker_at(citus_cluster, port)
    url = worker.url(DATABASE)
    message = error_of(
        url,
        statement.format(shard=shard),
        setup=["SET citus.enable_manual_changes_to_shards = on"],  # past Citus's own guard
    )
    assert message is not None and "append-only" in message, message


def test_the_writer_draws_seq_on_the_coordinator_in_one_order(citus_db, citus_cluster):
    (before,) = one(citus_db.admin, "SELECT max(seq) FROM audit_events")
    ids, ports = [], []
    while len(ids) < 6:  # three records on each worker, in turn
        candidate = uuid.uuid4()
        port = shard_of(citus_cluster, candidate)[1]
        if ports.count(port) < 3 and (not ports or port != ports[-1]):
            ids.append(candidate)
            ports.append(port)
    with connect(citus_db.writer) as conn:
        for aggregate in ids:  # aggregates on both workers, one transaction (two-phase commit)
            conn.execute(
                "SELECT insert_audit_event(%s, 'ITEM_CREATED', '{\"x\": 1}', NULL)", (aggregate,)
            )
    seqs = [
        one(citus_db.admin, "SELECT seq FROM audit_events WHERE aggregate_id = %s", (a,))[0]
        for a in ids
    ]
    assert seqs == list(range(before + 1, before + 7))
    # On a worker the function refuses: its sequence is another range (group id << 48).
    message = error_of(
        citus_cluster.workers[0].url(DATABASE),
        "SELECT insert_audit_event(gen_random_uuid(), 'ITEM_CREATED', '{}', NULL)",
    )
    assert message is not None and "coordinator only" in message


# --- Refusals --------------------------------------------------------------------------------


def test_citus_on_a_server_without_the_extension_is_refused(make_database):
    urls = make_database("audit_no_citus")  # the suite's own server: no Citus there
    with connect(urls.admin, autocommit=True) as conn:
        conn.execute("CREATE DATABASE audit_citus_none")
    try:
        # By URL parts: a server named by AUDIT_TEST_ADMIN_URL has no "?host=" after the name.
        admin = sa.engine.make_url(urls.admin).set(database="audit_citus_none")
        admin = admin.render_as_string(hide_password=False)
        result = CliRunner().invoke(main, ["init-db", "--admin-url", admin, "--citus"])
        assert result.exit_code == 2
        assert "needs the citus extension" in result.output
        assert one(admin, "SELECT to_regclass('public.audit_events')") == (None,)
    finally:
        with connect(urls.admin, autocommit=True) as conn:
            conn.execute("DROP DATABASE audit_citus_none")


def test_citus_with_partition_is_refused(citus_db):
    result = CliRunner().invoke(
        main, ["init-db", "--admin-url", citus_db.admin, "--citus", "--partition", "monthly"]
    )
    assert result.exit_code == 2
    assert "do not go together" in result.output
    result = CliRunner().invoke(
        main, ["init-db", "--admin-url", citus_db.admin, "--partition", "monthly"]
    )
    assert result.exit_code == 2
    assert "distributed by Citus" in result.output


def test_citus_on_an_existing_plain_table_is_refused_and_changes_nothing(citus_cluster):
    name = "audit_plain_first"
    citus_cluster.create_database(name)
    urls = urls_of(citus_cluster, name)
    apply_schema(urls.admin)  # a plain table on the coordinator
    result = CliRunner().invoke(main, ["init-db", "--admin-url", urls.admin, "--citus"])
    assert result.exit_code == 2
    assert "already exists as a plain table" in result.output
    assert citus_cluster.coordinator.execute("SELECT count(*) FROM pg_dist_partition", name) == [
        (0,)
    ]
    assert citus_cluster.coordinator.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'audit_events_pkey'",
        name,
    ) == [("PRIMARY KEY (event_id)",)]


# --- Plans -----------------------------------------------------------------------------------


def explain(url: str, statement: sa.Select) -> str:
    engine = db.make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            return "\n".join(queries.explain(conn, statement))
    finally:
        engine.dispose()


def table_info(url: str) -> db.TableInfo:
    engine = db.make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            return db.inspect_table(conn)
    finally:
        engine.dispose()


def test_a_record_and_its_state_at_are_single_shard_router_queries(citus_db):
    table = table_info(citus_db.reader)
    record = uuid.UUID(a_busy_record(citus_db.admin))
    for statement in (
        queries.select_aggregate_events(record, table, limit=101),
        queries.select_aggregate_events(record, table, until=datetime(2026, 1, 1, tzinfo=UTC)),
    ):
        plan = explain(citus_db.reader, statement)
        # One task, and nothing above it on the coordinator: the whole query, its ORDER BY
        # and LIMIT included, runs on the one worker holding the record's shard (router).
        assert plan.startswith("Custom Scan (Citus Adaptive)"), plan
        assert "Task Count: 1" in plan, plan
        assert "aggregate_id = '" in plan, plan


def test_a_search_by_time_fans_out_with_its_order_and_limit_on_the_workers(citus_db):
    table = table_info(citus_db.reader)
    f = EventFilter(
        time_from=datetime(2025, 9, 1, tzinfo=UTC), time_to=datetime(2026, 2, 1, tzinfo=UTC)
    )
    plan = explain(citus_db.reader, queries.select_events(f, table, limit=51))
    assert f"Task Count: {SHARDS}" in plan, plan
    coordinator, _, workers = plan.partition("Tasks Shown")
    # The coordinator merges the workers' first rows; each worker sorts (by its time index)
    # and stops at the limit.
    assert "Limit" in coordinator and "Sort" in coordinator, plan
    assert "Limit" in workers and "Sort Key: created_at DESC, seq DESC" in workers, plan


# --- The app on Citus: the same answers as on the plain table ---------------------------------


@pytest.fixture
def clients(make_app, citus_db, plain_db):
    made = {}
    for name, urls in (("citus", citus_db), ("plain", plain_db)):
        app = make_app(database_url=urls.reader, access_log_url=urls.logger)
        made[name] = sign_in(app.test_client(), "auditor")
    return made


def test_search_record_state_and_export_agree_with_the_plain_table(clients, citus_db, plain_db):
    record = a_busy_record(citus_db.admin)
    assert record == a_busy_record(plain_db.admin)
    assert_answers_as_plain(clients, "citus", record)


def test_every_page_api_and_export_answers_on_citus_as_on_the_plain_table(
    clients, citus_db, plain_db
):
    record = a_busy_record(citus_db.admin)
    first, last = (
        str(row[0])
        for row in (
            one(
                citus_db.admin,
                f"SELECT event_id FROM audit_events WHERE aggregate_id = %s "
                f"ORDER BY created_at {order}, seq {order} LIMIT 1",
                (record,),
            )
            for order in ("ASC", "DESC")
        )
    )
    (request_id,) = one(
        citus_db.admin,
        "SELECT metadata ->> 'request_id' FROM audit_events "
        "WHERE metadata ? 'request_id' ORDER BY seq LIMIT 1",
    )
    same_json = [
        f"/api/events/{last}",
        f"/api/events/{last}/changes",
        f"/api/diff?from={first}&to={last}",
        "/api/as-of?kind=USER&at=2026-01-01T00:00:00Z",
        "/api/as-of?kind=ORDER&at=2026-06-01T00:00:00Z",
        f"/api/events?aggregate_id={record}&limit=20",
        "/api/events?kind=ACCOUNT&from=2025-09-01&to=2026-02-01&limit=30",
        "/api/events?actor=alice&limit=30",
    ]
    for path in same_json:
        answers = [clients[name].get(path) for name in ("citus", "plain")]
        assert [a.status_code for a in answers] == [200, 200], (path, answers[0].text[:500])
        assert answers[0].get_json() == answers[1].get_json(), path
    same_bytes = [
        "/export/as-of.csv?kind=USER&at=2026-01-01T00:00:00Z",
        f"/export/aggregates/{record}.csv",
        "/export/events.csv?kind=ORDER&from=2025-06-01&to=2026-06-01",
    ]
    for path in same_bytes:
        exports = []
        for name in ("citus", "plain"):
            response = clients[name].get(path)
            exports.append((response.status_code, response.data))
        assert [status for status, _ in exports] == [200, 200], (path, exports[0][1][:500])
        assert exports[0][1] == exports[1][1], path
    pages = [
        "/",
        "/search?type=USER_UPDATED&kind=USER",
        f"/aggregates/{record}?at=2026-01-01T00:00:00Z",
        f"/events/{last}",
        f"/diff?from={first}&to={last}",
        "/as-of?kind=USER&at=2026-01-01T00:00:00Z",
        f"/requests/{request_id}",
        f"/lookup?aggregate_id={record}",
        f"/search?aggregate_id={record[:8]}",
        "/reports",
        "/integrity",
        "/access-log",
        f"/export/aggregates/{record}.pdf",
        "/reports/events.pdf?from=2025-09-01&to=2025-10-01",
    ]
    for path in pages:
        response = clients["citus"].get(path)
        assert response.status_code in (200, 303), (path, response.text[:1500])


# --- Tamper evidence -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def log(citus_db, tmp_path_factory):
    """The notary's keys and heads file for the Citus database (one tree for the module)."""
    return Log(citus_db, tmp_path_factory.mktemp("citus-notary"))


def test_seal_and_verify_and_a_tampered_shard_row_is_found(citus_db, citus_cluster, log):
    sealed = log.seal()
    assert "Sealed head #1" in sealed.output
    result = log.verify()
    assert result.exit_code == 0, result.output
    # An attacker with the superuser of one worker: triggers off, Citus's guard off.
    seq, aggregate = one(
        citus_db.admin, "SELECT seq, aggregate_id FROM audit_events ORDER BY seq LIMIT 1 OFFSET 7"
    )
    shard, port = shard_of(citus_cluster, aggregate)
    worker = worker_at(citus_cluster, port)

    def set_payload(payload):  # as an attacker with a worker's superuser: every guard off
        with connect(worker.url(DATABASE)) as conn:
            conn.execute("SET session_replication_role = replica")
            conn.execute("SET citus.enable_manual_changes_to_shards = on")
            conn.execute(
                f"UPDATE {shard} SET payload = %s WHERE seq = %s",  # shard: from the catalog
                (Jsonb(payload), seq),
            )

    (original,) = one(citus_db.admin, "SELECT payload FROM audit_events WHERE seq = %s", (seq,))
    set_payload({"forged": True})
    try:
        tampered = log.verify()
        assert tampered.exit_code == 1, tampered.output
        assert f"seq {seq}" in tampered.output, tampered.output
    finally:
        set_payload(original)  # the other tests read this row
    assert log.verify().exit_code == 0


def test_the_horizon_waits_for_a_prepared_transaction_on_a_worker(citus_db, citus_cluster):
    """Step 4b: a worker's prepared transaction (a two-phase commit the coordinator could not
    finish) may still commit a row; the coordinator holds no lock for it any more."""
    aggregate = one(citus_db.admin, "SELECT aggregate_id FROM audit_events LIMIT 1")[0]
    shard, port = shard_of(citus_cluster, aggregate)
    worker = worker_at(citus_cluster, port)
    notary = db.make_engine(citus_db.notary, pool_size=1)
    try:
        with notary.connect() as conn:
            assert find_horizon(conn, wait=0).final
        with connect(worker.url(DATABASE)) as held:
            held.execute("SET citus.enable_manual_changes_to_shards = on")
            held.execute(f"LOCK TABLE {shard} IN ROW EXCLUSIVE MODE")  # shard: from the catalog
            held.execute("PREPARE TRANSACTION 'audit_test_pending'")
        try:
            with notary.connect() as conn:
                horizon = find_horizon(conn, wait=0)
            assert not horizon.final and horizon.waited_for == 1
        finally:
            worker.execute("ROLLBACK PREPARED 'audit_test_pending'", DATABASE)
        with notary.connect() as conn:
            assert find_horizon(conn, wait=0).final
    finally:
        notary.dispose()


def test_sealing_while_writers_write_on_both_workers(citus_db, log):
    """Writers insert through the coordinator (single-shard and two-worker transactions,
    some rolled back) while the notary seals; every committed event ends up in the tree and
    verify is clean."""
    log.seal()
    stop = threading.Event()
    errors: list[BaseException] = []

    def write(worker_number: int) -> None:
        try:
            with connect(citus_db.writer) as conn:
                for i in range(40):
                    if stop.is_set():
                        return
                    for _ in range(1 + i % 3):  # 2 or 3 records: often on both workers
                        conn.execute(
                            "SELECT insert_audit_event(%s, 'ITEM_CREATED', %s, NULL)",
                            (uuid.uuid4(), f'{{"writer": {worker_number}, "i": {i}}}'),
                        )
                    if i % 5 == 4:
                        conn.rollback()
                    else:
                        conn.commit()
        except BaseException as exc:  # the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(4):
            result = log.run("seal", "--settle", "0", "--wait", "0.2")
            assert result.exit_code == 0, result.output
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not errors, [str(e) for e in errors]
    final = log.run("seal", "--settle", "0", "--wait", "5")
    assert final.exit_code == 0, final.output
    result = log.verify()
    assert result.exit_code == 0, result.output
    (total,) = one(citus_db.admin, "SELECT count(*) FROM audit_events")
    assert f"{total:,} events" in result.output, result.output


def test_integrity_pages_and_proofs_read_the_tree_on_the_coordinator(clients, citus_db, log):
    log.seal()
    event_id, through = one(
        citus_db.admin,
        "SELECT event_id, (SELECT max(seq) FROM audit_events "
        "                  WHERE seq <= (SELECT max(last_seq) FROM audit_tree_heads)) "
        "FROM audit_events ORDER BY seq LIMIT 1 OFFSET 3",
    )
    client = clients["citus"]
    for path in (
        "/integrity",
        "/api/integrity",
        f"/api/events/{event_id}/proof",
        f"/export/events.proof.json?from=2025-06-01&to=2026-06-01&through_seq={through}",
        f"/export/events.csv?from=2025-06-01&to=2026-06-01&through_seq={through}",
    ):
        response = client.get(path)
        assert response.status_code == 200, (path, response.text[:1500])
        response.close()


# --- A worker that is down -------------------------------------------------------------------


def test_a_worker_that_is_down_is_a_503_naming_it(make_app, citus_db, citus_cluster, log):
    app = make_app(database_url=citus_db.reader, access_log_url=citus_db.logger)
    client = sign_in(app.test_client(), "auditor")
    assert client.get("/api/events?limit=5").status_code == 200
    log.seal()
    down = citus_cluster.workers[1]
    elsewhere = next(  # a record on the worker that stays up
        str(aggregate)
        for (aggregate,) in citus_cluster.coordinator.execute(
            "SELECT DISTINCT aggregate_id FROM audit_events LIMIT 50", DATABASE
        )
        if shard_of(citus_cluster, aggregate)[1] != down.port
    )
    down.stop()
    try:
        assert client.get(f"/api/aggregates/{elsewhere}/events").status_code == 200
        checked = log.verify()
        assert checked.exit_code == 2, checked.output
        assert f"127.0.0.1:{down.port}" in checked.output, checked.output
        response = client.get("/api/events?from=2025-09-01&to=2026-02-01&limit=5")
        assert response.status_code == 503, response.text
        message = response.get_json()["error"]
        assert f"127.0.0.1:{down.port}" in message, message
        assert "Citus worker" in message, message
        page = client.get("/search?from=2025-09-01&to=2026-02-01")
        assert page.status_code == 503
        assert f"127.0.0.1:{down.port}" in page.text
    finally:
        down.start()
    assert client.get("/api/events?limit=5").status_code == 200
