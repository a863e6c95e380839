"""``audit-dashboard verify``, ``seal`` and ``keygen`` on a real PostgreSQL: each attack of
issue 10, done as a superuser would, is detected and named; a clean log verifies clean;
bad input is exit 2 with one message."""

from __future__ import annotations

import csv
import re
import uuid

import psycopg
import pytest
from click.testing import CliRunner
from conftest import as_attacker
from psycopg import sql

from dashboard import db
from dashboard.cli import main
from dashboard.integrity import keys, scan
from dashboard.seed import seed_events


def connect(url: str) -> psycopg.Connection:
    return psycopg.connect(db.libpq_url(url))


def admin_one(urls, query, params=()):
    with connect(urls.admin) as conn:
        return conn.execute(query, params).fetchone()


class Log:
    """A database with sealed events, its keys and heads file, and the CLI on it."""

    def __init__(self, urls, tmp_path):
        self.urls = urls
        self.private = tmp_path / "notary.pem"
        self.public = tmp_path / "notary.pub.pem"
        keys.generate_keypair(self.private, self.public)
        self.heads = tmp_path / "heads.jsonl"
        self.env = {
            "AUDIT_DATABASE_URL": urls.reader,
            "AUDIT_NOTARY_URL": urls.notary,
            "AUDIT_NOTARY_KEY_FILE": str(self.private),
            "AUDIT_NOTARY_HEADS_FILE": str(self.heads),
            "AUDIT_PUBLIC_KEY_FILES": str(self.public),
        }

    def run(self, *args, env=None):
        merged = {**self.env, **(env or {})}
        return CliRunner().invoke(main, list(args), env=merged, catch_exceptions=False)

    def seal(self):
        result = self.run("seal", "--settle", "0", "--wait", "0")
        assert result.exit_code == 0, result.output
        return result

    def verify(self, *args):
        return self.run("verify", "--quiet", *args)


@pytest.fixture
def log(make_database, tmp_path):
    urls = make_database("audit_verify")
    seed_events(urls.admin, events=300, seed=11, method="copy")
    sealed = Log(urls, tmp_path)
    sealed.seal()
    # A rolled-back insert leaves a skipped seq in the second head.
    with connect(urls.writer) as conn:
        conn.execute(
            "SELECT insert_audit_event(%s, 'ITEM_CREATED', '{\"x\": 1}', NULL)", (uuid.uuid4(),)
        )
        conn.rollback()
    seed_events(urls.admin, events=50, seed=12, method="copy")
    sealed.seal()
    return sealed


def event_at(log, seq):
    return admin_one(log.urls, "SELECT event_id FROM audit_events WHERE seq = %s", (seq,))[0]


def problems(result):
    return [line for line in result.stdout.splitlines() if line.startswith("seq ") or ":" in line]


def test_an_untampered_log_verifies_clean(log):
    result = log.verify()
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        "350 events in heads 1..2 verified (tree size 350, 1 skipped seqs)."
    )


def test_times_read_as_text_are_iso_utc_whatever_the_defaults(log, monkeypatch):
    """``verify`` reads ``created_at`` as PostgreSQL prints it; its sessions ask for ISO
    dates in UTC, so a database whose defaults print times otherwise still verifies clean,
    in one process and in workers."""
    with connect(log.urls.admin) as conn:
        name = conn.execute("SELECT current_database()").fetchone()[0]
        for setting in ("DateStyle = 'SQL, DMY'", "TimeZone = 'Asia/Kolkata'"):
            conn.execute(sql.SQL("ALTER DATABASE {} SET " + setting).format(sql.Identifier(name)))
        conn.commit()
    with connect(log.urls.reader) as conn:
        assert conn.execute("SHOW DateStyle").fetchone()[0] == "SQL, DMY"  # the default took
    one = log.verify()
    monkeypatch.setattr(scan, "PARALLEL_MIN_SEQS", 1)
    monkeypatch.setattr(scan, "SLICE_SEQS", 37)
    two = log.verify("--jobs", "2")
    assert one.exit_code == two.exit_code == 0, one.output + two.output
    assert (
        one.stdout
        == two.stdout
        == ("350 events in heads 1..2 verified (tree size 350, 1 skipped seqs).\n")
    )


def test_rows_dated_before_year_1_or_after_9999_are_named(log):
    """PostgreSQL keeps times Python's datetime cannot (44 BC, the year 12345); ``verify``
    reads them as text, so a forged or changed row with one is named, not a stop."""
    forged, changed = uuid.uuid4(), event_at(log, 302)
    as_attacker(
        log.urls,
        "INSERT INTO audit_events (event_id, aggregate_id, event_type, payload, seq, "
        f"created_at) OVERRIDING SYSTEM VALUE VALUES ('{forged}', gen_random_uuid(), "
        "'USER_CREATED', '{}', 301, '0044-03-15 12:00:00+00 BC')",
        "UPDATE audit_events SET created_at = '12345-01-01 00:00:00+00' WHERE seq = 302",
    )
    result = log.verify()
    assert result.exit_code == 1, result.output
    assert f"seq 301, event {forged}: inserted" in result.stdout
    assert f"seq 302, event {changed}: content changed" in result.stdout


def test_a_row_at_infinity_stops_verify_with_a_message_naming_it(log):
    as_attacker(
        log.urls,
        "UPDATE audit_events SET created_at = 'infinity' WHERE seq = 20",
    )
    event_id = event_at(log, 20)
    result = log.verify()
    assert result.exit_code == 2, result.output
    assert f"seq 20, event {event_id}: created_at None is not a time" in result.output
    assert "Traceback" not in result.output


def test_a_changed_payload_is_named(log):
    event_id = event_at(log, 17)
    as_attacker(log.urls, "UPDATE audit_events SET payload = '{\"tampered\": true}' WHERE seq = 17")
    result = log.verify()
    assert result.exit_code == 1
    assert f"seq 17, event {event_id}: content changed" in result.stdout
    assert "1 problem found checking 350 events in heads 1..2." in result.output


def test_a_deleted_row_is_named_missing(log):
    event_id = event_at(log, 40)
    as_attacker(log.urls, "DELETE FROM audit_events WHERE seq = 40")
    result = log.verify()
    assert result.exit_code == 1
    assert f"seq 40, event {event_id}: missing" in result.stdout


def test_a_backdated_insert_at_a_skipped_seq_is_named_inserted(log):
    skipped = 301  # the rolled-back insert's seq, recorded as skipped in head 2
    assert admin_one(log.urls, "SELECT count(*) FROM audit_events WHERE seq = 301")[0] == 0
    forged = uuid.uuid4()
    as_attacker(
        log.urls,
        "INSERT INTO audit_events (event_id, aggregate_id, event_type, payload, seq, created_at) "
        f"OVERRIDING SYSTEM VALUE VALUES ('{forged}', gen_random_uuid(), 'USER_CREATED', "
        f"'{{}}', {skipped}, '2025-01-01')",
    )
    result = log.verify()
    assert result.exit_code == 1
    assert f"seq {skipped}, event {forged}: inserted" in result.stdout


def test_swapped_rows_are_named_reordered(log):
    a, b = event_at(log, 10), event_at(log, 11)
    as_attacker(
        log.urls,
        "ALTER TABLE audit_events ALTER COLUMN seq SET GENERATED BY DEFAULT",
        "UPDATE audit_events SET seq = -1 WHERE seq = 10",
        "UPDATE audit_events SET seq = 10 WHERE seq = 11",
        "UPDATE audit_events SET seq = 11 WHERE seq = -1",
        "ALTER TABLE audit_events ALTER COLUMN seq SET GENERATED ALWAYS",
    )
    result = log.verify()
    assert result.exit_code == 1
    assert f"seq 11, event {a}: reordered: sealed at seq 10, now at seq 11" in result.stdout
    assert f"seq 10, event {b}: reordered: sealed at seq 11, now at seq 10" in result.stdout
    assert "content changed" not in result.stdout


def test_worker_processes_find_and_name_what_one_process_does(log, monkeypatch):
    """``verify --jobs 2`` recomputes the leaves in worker processes sharing the caller's
    snapshot; small slices here, so the slices' order and their seams are exercised."""
    changed, deleted = event_at(log, 17), event_at(log, 40)
    forged = uuid.uuid4()
    as_attacker(
        log.urls,
        "UPDATE audit_events SET payload = '{\"tampered\": true}' WHERE seq = 17",
        "DELETE FROM audit_events WHERE seq = 40",
        "INSERT INTO audit_events (event_id, aggregate_id, event_type, payload, seq, created_at) "
        f"OVERRIDING SYSTEM VALUE VALUES ('{forged}', gen_random_uuid(), 'USER_CREATED', "
        "'{}', 301, '2025-01-01')",
    )
    one = log.verify("--jobs", "1")
    calls = []
    parallel = scan._parallel
    monkeypatch.setattr(scan, "_parallel", lambda *a: calls.append(a) or parallel(*a))
    monkeypatch.setattr(scan, "PARALLEL_MIN_SEQS", 1)
    monkeypatch.setattr(scan, "SLICE_SEQS", 37)
    two = log.verify("--jobs", "2")
    assert len(calls) == 1
    assert two.exit_code == one.exit_code == 1
    assert two.stdout == one.stdout
    assert f"seq 17, event {changed}: content changed" in two.stdout
    assert f"seq 40, event {deleted}: missing" in two.stdout
    assert f"seq 301, event {forged}: inserted" in two.stdout
    assert "3 problems found checking 350 events in heads 1..2." in two.output


@pytest.mark.parametrize(
    "attack",
    [
        ["UPDATE audit_events SET payload = '{\"tampered\": true}' WHERE seq IN (17, 299)"],
        ["DELETE FROM audit_events WHERE seq IN (40, 302)"],
        [
            "INSERT INTO audit_events (event_id, aggregate_id, event_type, payload, seq, "
            "created_at) OVERRIDING SYSTEM VALUE VALUES (gen_random_uuid(), "
            "gen_random_uuid(), 'USER_CREATED', '{}', 301, '2025-01-01')"
        ],
        [
            "ALTER TABLE audit_events ALTER COLUMN seq SET GENERATED BY DEFAULT",
            "UPDATE audit_events SET seq = -1 WHERE seq = 10",
            "UPDATE audit_events SET seq = 10 WHERE seq = 11",
            "UPDATE audit_events SET seq = 11 WHERE seq = -1",
        ],
        ["UPDATE audit_tree_leaves SET leaf_hash = sha256(leaf_hash) WHERE seq IN (8, 320)"],
        ["DELETE FROM audit_tree_leaves WHERE seq = 100"],
        ["UPDATE audit_tree_leaves SET leaf_index = leaf_index + 1000 WHERE leaf_index = 100"],
        ["UPDATE audit_tree_leaves SET seq = seq + 1000 WHERE seq = 150"],
        ["UPDATE audit_tree_nodes SET hash = sha256(hash) WHERE level = 4 AND node_index = 3"],
    ],
    ids=[
        "changed",
        "deleted",
        "inserted",
        "reordered",
        "leaf-hash",
        "leaf-gone",
        "leaf-index",
        "leaf-seq",
        "node",
    ],
)
def test_clean_slices_taken_whole_find_what_a_row_walk_finds(log, monkeypatch, attack):
    """``verify`` takes a slice whose rows all match their stored leaves as one run (no
    row-by-row walk). With slices of 7 seqs, clean runs sit beside tampered slices and
    across the heads' seam (head 1 ends at seq 300): the result must be the row walk's,
    which one slice holding everything gives here."""
    as_attacker(log.urls, *attack)
    whole = log.verify()
    assert whole.exit_code == 1, whole.output
    monkeypatch.setattr(scan, "SLICE_SEQS", 7)
    sliced = log.verify()
    assert (sliced.exit_code, sliced.stdout) == (whole.exit_code, whole.stdout)


def test_workers_that_cannot_connect_exit_2_with_one_message(log, monkeypatch):
    """A worker that cannot start (here: the reader's connection limit leaves it no
    connection) is a plain message and exit 2, not a traceback; nothing is concluded."""
    monkeypatch.setattr(scan, "PARALLEL_MIN_SEQS", 1)
    with connect(log.urls.admin) as conn:
        conn.execute("ALTER ROLE audit_reader CONNECTION LIMIT 1")
        conn.commit()
    try:
        result = log.verify("--jobs", "2")
    finally:
        with connect(log.urls.admin) as conn:
            conn.execute("ALTER ROLE audit_reader CONNECTION LIMIT 20")
            conn.commit()
    assert result.exit_code == 2, result.output
    assert "Verification could not finish: a worker process stopped" in result.output
    assert "Traceback" not in result.output


def test_triggers_turned_off_or_dropped_do_not_help(log):
    as_attacker(
        log.urls,
        "ALTER TABLE audit_events DISABLE TRIGGER ALL",
        "UPDATE audit_events SET event_type = 'USER_DELETED' WHERE seq = 5",
        "ALTER TABLE audit_events ENABLE TRIGGER ALL",
        "DROP TRIGGER audit_events_no_update_delete ON audit_events",
        "DELETE FROM audit_events WHERE seq = 6",
    )
    result = log.verify()
    assert result.exit_code == 1
    assert "seq 5, event" in result.stdout and "content changed" in result.stdout
    assert "seq 6, event" in result.stdout and "missing" in result.stdout


def test_heads_rewritten_without_the_private_key_fail_their_signature(log):
    # The attacker changes an event, then rewrites the leaves and the heads' roots so the
    # tree adds up again: without the key the signatures cannot follow.
    as_attacker(
        log.urls,
        "UPDATE audit_events SET payload = '{\"tampered\": true}' WHERE seq = 3",
        "UPDATE audit_tree_heads SET root = sha256(root)",
    )
    result = log.verify()
    assert result.exit_code == 1
    assert "head signature invalid: head #1 does not carry a valid signature" in result.stdout
    assert "heads differ from the file copy: head #1 in audit_tree_heads differs" in result.stdout


def test_deleted_or_truncated_heads_are_caught_by_the_file_copy(log):
    as_attacker(log.urls, "TRUNCATE audit_tree_heads")
    result = log.verify()
    assert result.exit_code == 1
    assert "head missing or rolled back: head #1 (tree size 300" in result.stdout
    assert "head missing or rolled back: head #2" in result.stdout


def test_an_older_head_replayed_as_the_newest_is_caught(log):
    """The database is put back to how it looked at head 1 (head 2 and its leaves deleted,
    and the events after it): only the copy outside the database remembers head 2."""
    as_attacker(
        log.urls,
        "DELETE FROM audit_tree_heads WHERE number = 2",
        "DELETE FROM audit_tree_leaves WHERE leaf_index >= 300",
        "DELETE FROM audit_events WHERE seq > 300",
    )
    result = log.verify()
    assert result.exit_code == 1
    assert "head missing or rolled back: head #2" in result.stdout
    # The notary will not extend the rolled-back tree either.
    refused = log.run("seal", "--settle", "0", "--wait", "0")
    assert refused.exit_code == 1 and "rolled back" in refused.output


def test_a_head_deleted_from_the_middle_breaks_the_chain(log):
    seed_events(log.urls.admin, events=5, seed=13, method="copy")
    log.seal()
    as_attacker(log.urls, "DELETE FROM audit_tree_heads WHERE number = 2")
    result = log.verify()
    assert result.exit_code == 1
    assert "head missing or rolled back: head #2 is missing from audit_tree_heads" in result.stdout


def test_altered_stored_leaves_are_told_apart_from_altered_events(log):
    as_attacker(
        log.urls, "UPDATE audit_tree_leaves SET leaf_hash = sha256(leaf_hash) WHERE seq = 8"
    )
    result = log.verify()
    assert result.exit_code == 1
    assert "tree data altered: the stored leaves of head #1" in result.stdout
    assert "content changed" not in result.stdout


def test_since_head_checks_from_that_head_on(log):
    result = log.verify("--since-head", "2")
    assert result.exit_code == 0, result.output
    assert "50 events in head 2 verified" in result.stdout
    as_attacker(log.urls, "UPDATE audit_events SET payload = '{}' WHERE seq = 320")
    assert "seq 320" in log.verify("--since-head", "2").stdout
    bad = log.verify("--since-head", "9")
    assert bad.exit_code == 2 and "there is no head #9" in bad.output


def test_a_seal_with_no_new_events_writes_nothing_and_says_so(log):
    result = log.seal()
    assert "No new events since head #2" in result.stdout
    assert admin_one(log.urls, "SELECT count(*) FROM audit_tree_heads")[0] == 2
    assert len(log.heads.read_text().splitlines()) == 2


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda log, tmp: tmp / "absent.pem", "does not exist"),
        (lambda log, tmp: tmp, "is a directory"),
        (lambda log, tmp: log.private, "holds a private key"),
        (lambda log, tmp: _write(tmp / "junk.pem", b"not a key"), "is not a PEM public key"),
        (lambda log, tmp: _other_key(tmp), "signed none of the heads"),
    ],
)
def test_bad_public_keys_exit_2_with_one_message(log, tmp_path, setup, message):
    path = setup(log, tmp_path)
    result = log.verify("--public-key", str(path))
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output


def _write(path, data):
    path.write_bytes(data)
    return path


def _other_key(tmp):
    keys.generate_keypair(tmp / "other.pem", tmp / "other.pub.pem")
    return tmp / "other.pub.pem"


@pytest.mark.parametrize(
    "env, message",
    [
        ({"AUDIT_NOTARY_KEY_FILE": "/nonexistent/key.pem"}, "does not exist"),
        ({"AUDIT_NOTARY_KEY_FILE": ""}, "AUDIT_NOTARY_KEY_FILE is not set"),
        ({"AUDIT_NOTARY_URL": ""}, "AUDIT_NOTARY_URL is not set"),
        ({"AUDIT_NOTARY_HEADS_FILE": ""}, "AUDIT_NOTARY_HEADS_FILE is not set"),
    ],
)
def test_seal_configuration_problems_exit_2(log, env, message):
    result = log.run("seal", env=env)
    assert result.exit_code == 2 and message in result.stderr, result.output


def test_a_public_key_given_as_the_private_one_is_refused(log):
    result = log.run("seal", env={"AUDIT_NOTARY_KEY_FILE": str(log.public)})
    assert result.exit_code == 2 and "is not a PEM private key" in result.stderr


def test_an_unreachable_database_exits_2(log):
    result = log.verify("--database-url", "postgresql://nobody:x@127.0.0.1:1/none")
    assert result.exit_code == 2 and "Cannot reach the database" in result.stderr


def test_keygen_writes_a_pair_and_never_overwrites(tmp_path):
    private, public = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    first = CliRunner().invoke(main, ["keygen", "--private", str(private), "--public", str(public)])
    assert first.exit_code == 0 and re.search(r"Wrote key [0-9a-f]{16}", first.stdout)
    assert private.stat().st_mode & 0o777 == 0o600
    again = CliRunner().invoke(main, ["keygen", "--private", str(private), "--public", str(public)])
    assert again.exit_code == 2 and "not overwriting" in again.stderr


# --- Evidence that travels: report --proof and verify-export (no database) -----------------


def export_with_proof(log, tmp_path, name="events", *extra):
    csv_path, proof = tmp_path / f"{name}.csv", tmp_path / f"{name}.proof.json"
    result = log.run(
        "report", "--from", "2000-01-01", "--to", "2100-01-01", "--format", "csv",
        "--output", str(csv_path), "--proof", str(proof), "--quiet", *extra,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return csv_path, proof, result


def verify_export(log, csv_path, proof):
    # No database settings at all: the check is offline.
    return CliRunner().invoke(
        main,
        ["verify-export", str(csv_path), "--proof", str(proof), "--public-key", str(log.public)],
        env={"AUDIT_DATABASE_URL": None, "AUDIT_NOTARY_URL": None},
        catch_exceptions=False,
    )


def test_an_export_with_its_proof_verifies_offline(log, tmp_path):
    seed_events(log.urls.admin, events=7, seed=14, method="copy")  # newer, not yet sealed
    csv_path, proof, result = export_with_proof(log, tmp_path)
    assert "proof of 350 rows against head #2" in result.stdout  # stops at the sealed events
    checked = verify_export(log, csv_path, proof)
    assert checked.exit_code == 0, checked.output
    assert checked.stdout.strip() == f"350 rows of {csv_path.name} verified against head #2 " + (
        f"(key {keys.key_id(keys.load_public_key(log.public))})."
    )


def test_one_edited_cell_is_detected_and_its_row_named(log, tmp_path):
    csv_path, proof, _ = export_with_proof(log, tmp_path)
    with csv_path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames, list(reader)
    rows[4]["event_type"] = "ACCOUNT_CLOSED"  # the fifth data row, one cell
    with csv_path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
    checked = verify_export(log, csv_path, proof)
    assert checked.exit_code == 1
    named = [line for line in checked.stdout.splitlines() if "content changed" in line]
    assert named == [
        f"row 5, seq {rows[4]['seq']}, event {rows[4]['event_id']}: content changed: "
        "this row differs from the event that was sealed"
    ]


def test_a_proof_for_another_export_is_detected(log, tmp_path):
    _csv_all, proof_all, _ = export_with_proof(log, tmp_path, "all")
    csv_one, _proof_one, _ = export_with_proof(log, tmp_path, "one", "--type", "USER_CREATED")
    checked = verify_export(log, csv_one, proof_all)
    assert checked.exit_code == 1
    assert "digest" in checked.stdout and "row count" in checked.stdout


def test_verify_export_bad_input_exits_2(log, tmp_path):
    csv_path, proof, _ = export_with_proof(log, tmp_path)
    junk = _write(tmp_path / "junk.json", b'{"format": "something else"}')
    result = verify_export(log, csv_path, junk)
    assert result.exit_code == 2 and "not a proof bundle" in result.stderr
    result = verify_export(log, tmp_path / "absent.csv", proof)
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_proof_refuses_a_masked_or_pdf_report(log, tmp_path):
    result = log.run(
        "report", "--from", "2000-01-01", "--to", "2100-01-01", "--format", "pdf",
        "--output", str(tmp_path / "r.pdf"), "--proof", str(tmp_path / "r.proof.json"),
    )  # fmt: skip
    assert result.exit_code == 2 and "--proof goes with --format csv" in result.stderr
