"""Sealing on a real PostgreSQL: the notary role, the horizon rule, skipped seqs, the heads
file, and refusals (dashboard/integrity/notary.py)."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest
import sqlalchemy as sa
from conftest import as_attacker

from dashboard import db
from dashboard.integrity import heads_file, keys, merkle, store
from dashboard.integrity.heads import head_hash, verify_signature
from dashboard.integrity.notary import NotaryError, find_horizon, seal_once
from dashboard.writer import record_event


def connect(url: str, **kwargs) -> psycopg.Connection:
    return psycopg.connect(db.libpq_url(url), **kwargs)


def write_events(urls, count: int) -> list[int]:
    """Commit ``count`` events through insert_audit_event; return their seqs."""
    with connect(urls.writer) as conn:
        ids = [
            record_event(
                conn,
                uuid.uuid4(),
                "ITEM_CREATED",
                {"n": n, "name": f"item {n}"},
                {"actor": "tester"},
            )
            for n in range(count)
        ]
    return seqs_of(urls.admin, ids)


def seqs_of(url: str, ids) -> list[int]:
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT seq FROM audit_events WHERE event_id = ANY(%s) ORDER BY seq", (list(ids),)
        ).fetchall()
    return [row[0] for row in rows]


@pytest.fixture
def keypair(tmp_path):
    private, public = tmp_path / "notary.pem", tmp_path / "notary.pub.pem"
    keys.generate_keypair(private, public)
    return keys.load_private_key(private), keys.load_public_keys([public])


@pytest.fixture
def notary_db(make_database):
    urls = make_database("audit_notary")
    engine = db.make_engine(urls.notary, pool_size=1)
    yield urls, engine
    engine.dispose()


def seal(engine, keypair, path, **kwargs):
    kwargs.setdefault("settle", 0)
    kwargs.setdefault("wait", 0)
    return seal_once(engine, keypair[0], path, **kwargs)


def test_seal_writes_a_signed_head_to_the_table_and_the_file(notary_db, keypair, tmp_path):
    urls, engine = notary_db
    path = tmp_path / "heads.jsonl"
    seqs = write_events(urls, 40)
    result = seal(engine, keypair, path)
    head = result.head
    assert head is not None and head.number == 1
    assert head.tree_size == 40 and head.last_seq == seqs[-1]
    assert verify_signature(head, keypair[1])
    with engine.connect() as conn:
        assert store.latest_head(conn) == head
        leaves = list(store.leaves_in_order(conn))
        assert [row.seq for row in leaves] == seqs
        assert merkle.root_of([bytes(row.leaf_hash) for row in leaves]) == head.root
    assert heads_file.last_head(path) == head

    more = write_events(urls, 30)
    second = seal(engine, keypair, path).head
    assert second.number == 2 and second.tree_size == 70 and second.last_seq == more[-1]
    assert second.previous_hash == head_hash(head)
    assert list(heads_file.read_heads(path)) == [head, second]


def test_a_pass_with_no_new_events_writes_nothing(notary_db, keypair, tmp_path):
    urls, engine = notary_db
    path = tmp_path / "heads.jsonl"
    write_events(urls, 3)
    assert seal(engine, keypair, path).head is not None
    again = seal(engine, keypair, path)
    assert again.head is None and "Nothing written" in again.message
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM audit_tree_heads")).scalar() == 1
    assert len(list(heads_file.read_heads(path))) == 1


def open_insert(urls) -> tuple[psycopg.Connection, int]:
    """An insert through insert_audit_event in a transaction left open; returns its seq."""
    conn = connect(urls.writer)
    event_id = record_event(conn, uuid.uuid4(), "ITEM_CREATED", {"open": True})
    # The writer cannot read the table: ask the admin which seq the open row drew (it is the
    # sequence's last value, since nothing else inserts meanwhile).
    with connect(urls.admin) as admin:
        seq = admin.execute(
            "SELECT pg_sequence_last_value(pg_get_serial_sequence('audit_events', 'seq'))"
        ).fetchone()[0]
    assert event_id
    return conn, seq


def test_horizon_stops_below_a_seq_whose_transaction_is_still_open(notary_db, keypair, tmp_path):
    urls, engine = notary_db
    path = tmp_path / "heads.jsonl"
    before = write_events(urls, 2)
    open_conn, n = open_insert(urls)  # txn A: seq n, not committed
    try:
        (later,) = write_events(urls, 1)  # txn B: seq n + 1, committed
        assert later == n + 1
        head = seal(engine, keypair, path).head
        assert head.last_seq == n - 1 == before[-1]
        assert head.tree_size == 2 and head.skipped_seqs == ()
        open_conn.commit()  # A commits after all
    finally:
        open_conn.close()
    head = seal(engine, keypair, path).head
    assert head.number == 2 and head.last_seq == n + 1
    assert head.tree_size == 4 and head.skipped_seqs == ()
    with engine.connect() as conn:
        assert [row.seq for row in store.leaves_in_order(conn)] == [*before, n, n + 1]


def test_horizon_sees_an_open_writer_that_no_snapshot_lists(notary_db, keypair, tmp_path):
    """The open transaction is the newest one: no transaction after it has finished, so its
    xid is at or above the snapshot's xmax and missing from the snapshot's running list."""
    urls, engine = notary_db
    path = tmp_path / "heads.jsonl"
    before = write_events(urls, 1)
    open_conn, n = open_insert(urls)
    try:
        result = seal(engine, keypair, path)
        # Sealing n as "skipped" would be wrong: it may still commit (and it does below).
        assert result.head.last_seq == before[-1] == n - 1
        open_conn.commit()
    finally:
        open_conn.close()
    head = seal(engine, keypair, path).head
    assert head.last_seq == n and head.skipped_seqs == ()


def test_horizon_ignores_writers_elsewhere_and_direct_inserts_count(
    notary_db, make_database, keypair, tmp_path
):
    """A long transaction in another database of the cluster (it has an xid, so it is in
    every snapshot) must not hold the horizon back: a gap left by a rolled-back insert is
    sealed as skipped at once. Under the full suite the earlier, snapshot-based rule stopped
    at the gap whenever any test elsewhere kept a transaction open."""
    urls, engine = notary_db
    path = tmp_path / "heads.jsonl"
    other = make_database("audit_elsewhere")
    elsewhere = connect(other.admin)
    try:
        elsewhere.execute("CREATE TEMP TABLE busy (n int)")
        elsewhere.execute("INSERT INTO busy VALUES (1)")  # an xid, kept open
        first = write_events(urls, 1)
        rolled_back, n = open_insert(urls)
        rolled_back.rollback()
        rolled_back.close()
        direct = connect(urls.admin)  # the owner's own INSERT, not the function
        direct.execute(
            "INSERT INTO audit_events (aggregate_id, event_type, payload) "
            "VALUES (gen_random_uuid(), 'NOTE', '{}')"
        )
        try:
            result = seal(engine, keypair, path, wait=0.3)
            assert result.head.last_seq == first[-1]  # the direct insert is still open
        finally:
            direct.commit()
            direct.close()
        head = seal(engine, keypair, path, wait=0.3).head
        assert head.skipped_seqs == ((n, n),) and head.last_seq == n + 1
    finally:
        elsewhere.rollback()
        elsewhere.close()


def test_a_rolled_back_insert_is_recorded_as_skipped(notary_db, keypair, tmp_path):
    urls, engine = notary_db
    path = tmp_path / "heads.jsonl"
    first = write_events(urls, 2)
    open_conn, n = open_insert(urls)
    open_conn.rollback()
    open_conn.close()
    last = write_events(urls, 2)
    head = seal(engine, keypair, path).head
    assert last[0] == n + 1
    assert head.skipped_seqs == ((n, n),) and head.skipped(n)
    assert head.tree_size == 4 and head.last_seq == last[-1] and first[-1] == n - 1


def test_a_rolled_back_tail_is_skipped_once_its_transaction_ended(notary_db, keypair, tmp_path):
    urls, engine = notary_db
    path = tmp_path / "heads.jsonl"
    write_events(urls, 1)
    open_conn, n = open_insert(urls)
    open_conn.rollback()
    open_conn.close()
    head = seal(engine, keypair, path).head
    # Every transaction that drew a seq has ended: the horizon is the sequence's last value.
    assert head.last_seq == n and head.skipped_seqs == ((n, n),)


def test_the_pass_waits_for_an_open_writer_up_to_its_limit(notary_db, keypair, tmp_path):
    urls, engine = notary_db
    path = tmp_path / "heads.jsonl"
    write_events(urls, 1)
    open_conn, n = open_insert(urls)
    timer = threading.Timer(0.5, open_conn.commit)
    timer.start()
    try:
        head = seal(engine, keypair, path, wait=30).head
    finally:
        timer.join()
        open_conn.close()
    assert head.last_seq == n and head.tree_size == 2


def test_find_horizon_refuses_a_cached_sequence(notary_db):
    urls, engine = notary_db
    with connect(urls.admin) as conn:
        conn.execute("ALTER TABLE audit_events ALTER COLUMN seq SET CACHE 20")
    try:
        with engine.connect() as conn, pytest.raises(NotaryError, match="CACHE 1"):
            find_horizon(conn, settle=0, wait=0)
    finally:
        with connect(urls.admin) as conn:
            conn.execute("ALTER TABLE audit_events ALTER COLUMN seq SET CACHE 1")


def test_two_notaries_at_once_never_write_a_head_twice(notary_db, keypair, tmp_path):
    urls, engine = notary_db
    path = tmp_path / "heads.jsonl"
    write_events(urls, 50)
    other = db.make_engine(urls.notary, pool_size=1)
    results, errors = [], []

    def run(engine_):
        try:
            results.append(seal(engine_, keypair, path, settle=0.2))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in (engine, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    other.dispose()
    assert errors == []
    written = [r.head for r in results if r.head is not None]
    assert len(written) == 1 and written[0].tree_size == 50
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM audit_tree_heads")).scalar() == 1
    assert len(list(heads_file.read_heads(path))) == 1


def test_the_notary_refuses_to_extend_heads_rolled_back_in_the_database(
    notary_db, keypair, tmp_path
):
    urls, engine = notary_db
    path = tmp_path / "heads.jsonl"
    write_events(urls, 3)
    seal(engine, keypair, path)
    write_events(urls, 3)
    seal(engine, keypair, path)
    as_attacker(
        urls,
        "DELETE FROM audit_tree_heads WHERE number = 2",
        "DELETE FROM audit_tree_leaves WHERE leaf_index >= 3",
    )
    with pytest.raises(NotaryError, match="rolled back"):
        seal(engine, keypair, path)


def test_the_notary_refuses_without_the_heads_file_that_holds_the_heads(
    notary_db, keypair, tmp_path
):
    urls, engine = notary_db
    write_events(urls, 3)
    seal(engine, keypair, tmp_path / "heads.jsonl")
    write_events(urls, 1)
    with pytest.raises(NotaryError, match="holds none"):
        seal(engine, keypair, tmp_path / "other.jsonl")


def test_the_notary_catches_up_a_head_the_file_missed(notary_db, keypair, tmp_path):
    urls, engine = notary_db
    path = tmp_path / "heads.jsonl"
    write_events(urls, 3)
    first = seal(engine, keypair, path).head
    write_events(urls, 3)
    second = seal(engine, keypair, path).head
    path.write_text(path.read_text().splitlines()[0] + "\n")  # as if the append had failed
    write_events(urls, 1)
    third = seal(engine, keypair, path).head
    assert list(heads_file.read_heads(path)) == [first, second, third]


def test_the_notary_refuses_an_altered_frontier(notary_db, keypair, tmp_path):
    urls, engine = notary_db
    path = tmp_path / "heads.jsonl"
    write_events(urls, 3)
    seal(engine, keypair, path)
    as_attacker(
        urls,
        "UPDATE audit_tree_heads SET frontier = jsonb_build_array(repeat('ab', 32), "
        "repeat('cd', 32))",
    )
    write_events(urls, 1)
    with pytest.raises(NotaryError, match="frontier"):
        seal(engine, keypair, path)


def test_stored_nodes_are_the_subtrees_of_the_leaves(notary_db, keypair, tmp_path):
    urls, engine = notary_db
    path = tmp_path / "heads.jsonl"
    for count in (37, 1, 300):  # three passes, so nodes complete across passes too
        write_events(urls, count)
        seal(engine, keypair, path)
    with engine.connect() as conn:
        hashes = [bytes(row.leaf_hash) for row in store.leaves_in_order(conn)]
        for level in (4, 8):
            nodes = list(store.nodes_in_order(conn, level))
            assert len(nodes) == len(hashes) >> level
            for row in nodes:
                start = row.node_index << level
                assert bytes(row.hash) == merkle.root_of(hashes[start : start + (1 << level)])
