"""The store API the dashboard will use (dashboard/integrity/store.py), and the grants and
triggers of sql/010_integrity.sql, on a real PostgreSQL."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid

import psycopg
import pytest
import sqlalchemy as sa
from conftest import as_attacker

from dashboard import db
from dashboard.integrity import check, heads_file, keys, merkle, store
from dashboard.integrity.notary import seal_once
from dashboard.seed import seed_events

SIZE = 1000  # not a power of two: the right edge of the tree is ragged


@pytest.fixture(scope="module")
def sealed(make_database, tmp_path_factory):
    urls = make_database("audit_store")
    tmp = tmp_path_factory.mktemp("store")
    keys.generate_keypair(tmp / "k.pem", tmp / "k.pub.pem")
    private = keys.load_private_key(tmp / "k.pem")
    engine = db.make_engine(urls.notary, pool_size=1)
    for count in (600, 1, SIZE - 601):
        seed_events(urls.admin, events=count, seed=count, method="copy")
        seal_once(engine, private, tmp / "heads.jsonl", settle=0, wait=0)
    engine.dispose()
    reader = db.make_engine(urls.reader, pool_size=1)
    yield urls, reader, tmp
    reader.dispose()


def leaf_hashes(conn):
    return [bytes(row.leaf_hash) for row in store.leaves_in_order(conn)]


def test_heads_and_latest_head(sealed):
    _urls, reader, tmp = sealed
    with reader.connect() as conn:
        all_heads = list(store.heads(conn))
        assert [h.number for h in all_heads] == [1, 2, 3]
        assert [h.tree_size for h in all_heads] == [600, 601, SIZE]
        assert store.latest_head(conn) == all_heads[-1]
        assert list(heads_file.read_heads(tmp / "heads.jsonl")) == all_heads
        assert store.head(conn, 2) == all_heads[1] and store.head(conn, 9) is None


def test_subtree_hash_is_the_merkle_tree_hash_of_any_range(sealed):
    _urls, reader, _tmp = sealed
    rng = random.Random(5)
    with reader.connect() as conn:
        hashes = leaf_hashes(conn)
        ranges = [(0, SIZE), (0, 512), (512, 1000), (37, 38), (16, 32), (992, 1000)]
        ranges += [tuple(sorted(rng.sample(range(SIZE + 1), 2))) for _ in range(40)]
        for start, end in ranges:
            assert store.subtree_hash(conn, start, end) == merkle.root_of(hashes[start:end])
        with pytest.raises(store.TreeDataMissing):
            store.subtree_hash(conn, 990, SIZE + 5)


def test_inclusion_proofs_check_against_the_signed_root(sealed):
    _urls, reader, _tmp = sealed
    with reader.connect() as conn:
        head = store.latest_head(conn)
        seqs = [row.seq for row in store.leaves_in_order(conn)][::37]
        reader_ = store.TreeReader(conn)
        proofs = store.inclusion_proofs(conn, seqs, head, reader_)
        assert sorted(proofs) == sorted(seqs)
        # A page's worth of proofs: one query for the leaves and nodes they rest on.
        assert reader_.queries == 1
        for _seq, (index, stored, proof) in proofs.items():
            assert merkle.verify_inclusion(stored, index, head.tree_size, proof, head.root)
        index, stored, proof = store.inclusion_proof(conn, seqs[0], head)
        assert merkle.verify_inclusion(stored, index, head.tree_size, proof, head.root)
        first = store.head(conn, 1)
        late = next(row.seq for row in store.leaves_in_order(conn, start=700, end=701))
        assert store.inclusion_proof(conn, late, first) is None  # not in head 1's tree


def test_proven_hashes_spare_the_reads_and_never_pass_a_changed_event(make_database, tmp_path):
    """A record page's proofs keep the hashes that reached the signed root; the next check
    of those events reads no tree hash, and a row changed since is still caught."""
    urls = make_database("audit_proven")
    keys.generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    seed_events(urls.admin, events=300, seed=3, method="copy")
    notary = db.make_engine(urls.notary, pool_size=1)
    seal_once(notary, keys.load_private_key(tmp_path / "k.pem"), tmp_path / "h", settle=0, wait=0)
    notary.dispose()
    config = check.load_key_config([tmp_path / "k.pub.pem"])
    reader = db.make_engine(urls.reader, pool_size=1)
    statements = []
    sa.event.listen(reader, "before_cursor_execute", lambda *args: statements.append(args[2]))
    with reader.connect() as conn:
        ids = [str(row[0]) for row in conn.execute(sa.text(
            "SELECT event_id FROM audit_events WHERE seq % 29 = 0 ORDER BY seq"))]  # fmt: skip

    def page():
        statements.clear()
        with reader.connect() as conn, conn.begin():
            return check.check_events(conn, ids, config)

    first = page()
    assert first.status == check.OK and first.verified == len(ids)
    assert any("audit_tree_nodes" in statement for statement in statements)
    assert len(config.proven) > 0
    again = page()
    assert again.status == check.OK and again.verified == len(ids)
    assert not any("audit_tree_nodes" in statement for statement in statements)
    as_attacker(urls, "UPDATE audit_events SET payload = '{\"x\": 2}' WHERE seq = 58")
    tampered = page()
    reader.dispose()
    assert tampered.status == check.FAILED
    assert [(f.kind, f.seq) for f in tampered.findings] == [(check.CONTENT_DIFFERS, 58)]


def test_seal_status_names_the_first_head_of_each_event(sealed):
    _urls, reader, _tmp = sealed
    with reader.connect() as conn:
        rows = list(store.leaves_in_order(conn))
        asked = [rows[0].seq, rows[599].seq, rows[600].seq, rows[-1].seq, 10**12]
        status = store.seal_status(conn, asked)
        heads_ = {h.number: h for h in store.heads(conn)}
    assert status[10**12] is None
    assert [status[s].head_number for s in asked[:4]] == [1, 1, 2, 3]
    assert status[rows[600].seq].leaf_index == 600
    assert status[rows[600].seq].sealed_at == heads_[2].sealed_at


# --- sql/010: grants and triggers ------------------------------------------------------------


def sqlstate(url, statement, *, read_write=False):
    with psycopg.connect(db.libpq_url(url)) as conn:
        if read_write:
            conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
            conn.commit()
        try:
            conn.execute(statement)
        except psycopg.Error as exc:
            return exc.sqlstate
        finally:
            conn.rollback()
    return None


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO audit_events (aggregate_id, event_type, payload) "
        "VALUES (gen_random_uuid(), 'X_CREATED', '{}')",
        "SELECT insert_audit_event(gen_random_uuid(), 'X_CREATED', '{}', NULL)",
        "SELECT nextval(pg_get_serial_sequence('audit_events', 'seq'))",
        "UPDATE audit_tree_heads SET key_id = 'x'",
        "DELETE FROM audit_tree_leaves",
        "TRUNCATE audit_tree_nodes",
        "SELECT * FROM audit_access_log",
    ],
)
def test_the_notary_may_do_nothing_else(sealed, statement):
    urls, _reader, _tmp = sealed
    assert sqlstate(urls.notary, statement) == "42501"


def test_the_reader_reads_the_tree_but_cannot_write_it(sealed):
    urls, _reader, _tmp = sealed
    assert sqlstate(urls.reader, "SELECT count(*) FROM audit_tree_nodes") is None
    statement = "INSERT INTO audit_tree_nodes VALUES (4, 999999, '\\x00')"
    assert sqlstate(urls.reader, statement, read_write=True) == "42501"


@pytest.mark.parametrize("table", ["audit_tree_heads", "audit_tree_leaves", "audit_tree_nodes"])
@pytest.mark.parametrize("verb", ["UPDATE {} SET {} = {}", "DELETE FROM {}", "TRUNCATE {}"])
def test_the_tree_tables_are_append_only_even_for_the_superuser(sealed, table, verb):
    urls, _reader, _tmp = sealed
    column = {"audit_tree_heads": "number", "audit_tree_leaves": "seq"}.get(table, "level")
    statement = verb.format(table, column, column)
    with psycopg.connect(db.libpq_url(urls.admin)) as conn:
        with pytest.raises(psycopg.Error, match="append-only") as caught:
            conn.execute(statement)
        assert caught.value.sqlstate == "42501"


def test_notary_every_stops_cleanly_on_sigterm(sealed):
    urls, _reader, tmp = sealed
    heads_path = tmp / "heads.jsonl"
    with psycopg.connect(db.libpq_url(urls.admin)) as conn:
        conn.execute(
            "INSERT INTO audit_events (aggregate_id, event_type, payload) "
            "VALUES (%s, 'X_CREATED', '{}')",
            (uuid.uuid4(),),
        )
    before = len(heads_path.read_text().splitlines())
    env = {
        **os.environ,
        "AUDIT_NOTARY_URL": urls.notary,
        "AUDIT_NOTARY_KEY_FILE": str(tmp / "k.pem"),
        "AUDIT_NOTARY_HEADS_FILE": str(heads_path),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "dashboard.cli", "notary", "--every", "1s", "--settle", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(heads_path.read_text().splitlines()) == before:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the notary sealed nothing in 60 s"
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "Sealed head #4" in out and "Notary stopped." in err and "Traceback" not in err
    with psycopg.connect(db.libpq_url(urls.admin)) as conn:
        count = conn.execute("SELECT count(*) FROM audit_tree_heads").fetchone()[0]
    assert count == len(heads_path.read_text().splitlines())


def test_sealed_through_is_the_newest_sealed_event_not_a_skipped_seq(make_database, tmp_path):
    """The export-with-proof mark: the newest head's last leaf, which is the newest sealed
    event even when the head ends on a rolled-back (skipped) seq; None before any seal."""
    urls = make_database("audit_sealed_through")
    keys.generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    private = keys.load_private_key(tmp_path / "k.pem")
    notary = db.make_engine(urls.notary, pool_size=1)
    reader = db.make_engine(urls.reader, pool_size=1)
    try:
        seed_events(urls.admin, events=10, seed=3, method="copy")
        with reader.connect() as conn:
            assert store.sealed_through(conn) is None
        seal_once(notary, private, tmp_path / "heads.jsonl", settle=0, wait=0)
        with psycopg.connect(db.libpq_url(urls.writer)) as conn:
            insert = "SELECT insert_audit_event(gen_random_uuid(), 'X_CREATED', '{}', NULL)"
            conn.execute(insert)
            conn.commit()
            conn.execute(insert)
            conn.rollback()  # its seq is skipped, after the committed one
        seal_once(notary, private, tmp_path / "heads.jsonl", settle=0, wait=0)
        with reader.connect() as conn:
            newest = store.latest_head(conn)
            highest = conn.execute(sa.text("SELECT max(seq) FROM audit_events")).scalar()
            assert newest.last_seq == highest + 1  # the head ends on the skipped seq
            assert store.sealed_through(conn) == highest
    finally:
        notary.dispose()
        reader.dispose()
