"""Tamper evidence in the dashboard (issue 10, items 4-6): the record page's seal badges and
red banner, the integrity page and its JSON, event proofs, the PDF cover's section and the
proof download — each attack of the issue done as a superuser would, on a real PostgreSQL,
and named by the dashboard."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import uuid

import psycopg
import pytest
from bs4 import BeautifulSoup
from click.testing import CliRunner
from conftest import as_attacker, sign_in

from dashboard import db
from dashboard.cli import main
from dashboard.integrity import check as integrity_check
from dashboard.integrity import heads, keys, leaf, merkle
from dashboard.integrity.bundle import verify_bundle
from dashboard.integrity.notary import seal_once
from dashboard.seed import seed_events


def connect(url: str) -> psycopg.Connection:
    return psycopg.connect(db.libpq_url(url))


def one(urls, query, params=()):
    with connect(urls.admin) as conn:
        return conn.execute(query, params).fetchone()


class Log:
    """A database with sealed events, its keys and heads file."""

    def __init__(self, urls, tmp_path):
        self.urls = urls
        self.tmp = tmp_path
        self.private = tmp_path / "notary.pem"
        self.public = tmp_path / "notary.pub.pem"
        keys.generate_keypair(self.private, self.public)
        self.heads = tmp_path / "heads.jsonl"
        self.results = tmp_path / "verify-results.jsonl"
        self.engine = db.make_engine(urls.notary, pool_size=1)

    def seal(self):
        private = keys.load_private_key(self.private)
        return seal_once(self.engine, private, self.heads, settle=0, wait=0)

    def settings(self, **overrides):
        values = {
            "database_url": self.urls.reader,
            "access_log_url": self.urls.logger,
            "public_key_files": (self.public,),
            "notary_heads_file": self.heads,
            "verify_results_file": self.results,
        }
        values.update(overrides)
        return values

    def event(self, seq):
        """(event_id, aggregate_id) of the event at ``seq``."""
        row = one(
            self.urls,
            "SELECT event_id::text, aggregate_id::text FROM audit_events WHERE seq = %s",
            (seq,),
        )
        return row[0], row[1]


@pytest.fixture
def log(make_database, tmp_path):
    urls = make_database("audit_ui")
    seed_events(urls.admin, events=200, seed=21, method="copy")
    sealed = Log(urls, tmp_path)
    # A rolled-back insert leaves seq 201 skipped in head 1.
    with connect(urls.writer) as conn:
        conn.execute(
            "SELECT insert_audit_event(%s, 'ITEM_CREATED', '{\"x\": 1}', NULL)", (uuid.uuid4(),)
        )
        conn.rollback()
    seed_events(urls.admin, events=10, seed=22, method="copy")
    assert sealed.seal().head.number == 1
    yield sealed
    sealed.engine.dispose()


@pytest.fixture
def open_as(make_app, log):
    def make(role="auditor", **overrides):
        app = make_app(**log.settings(**overrides))
        return sign_in(app.test_client(), role)

    return make


def record_page(client, aggregate_id, **args):
    response = client.get(f"/aggregates/{aggregate_id}", query_string={"limit": 200, **args})
    assert response.status_code == 200, response.text
    return BeautifulSoup(response.text, "html.parser")


def banner(soup) -> str:
    found = soup.select_one("#integrity-banner")
    return " ".join(found.get_text(" ").split()) if found else ""


def seals(soup) -> dict[str, str]:
    return {
        item["id"].removeprefix("event-"): " ".join(item.select_one("dd.seal").get_text().split())
        for item in soup.select("li.timeline-event")
        if item.select_one("dd.seal")
    }


# --- Badges ---------------------------------------------------------------------------------


def test_an_untampered_sealed_record_says_sealed_in_head_1(log, open_as):
    event_id, aggregate_id = log.event(17)
    soup = record_page(open_as("support"), aggregate_id)
    badges = seals(soup)
    assert badges and set(badges) >= {event_id}
    assert all(text.startswith("sealed in head #1 at ") for text in badges.values()), badges
    assert "verified against signed tree head #1" in banner(soup)
    assert not soup.select(".integrity-failed")


def test_events_after_the_newest_head_say_not_yet_sealed(log, open_as):
    _event_id, aggregate_id = log.event(17)
    with connect(log.urls.writer) as conn:
        new_id = conn.execute(
            "SELECT insert_audit_event(%s, 'USER_UPDATED', '{\"late\": true}', NULL)",
            (aggregate_id,),
        ).fetchone()[0]
    soup = record_page(open_as(), aggregate_id)
    badges = seals(soup)
    assert badges[str(new_id)] == "not yet sealed"
    assert sum(text.startswith("sealed in head #1") for text in badges.values()) == len(badges) - 1
    assert "1 not yet sealed" in banner(soup)
    log.seal()
    badges = seals(record_page(open_as(), aggregate_id))
    assert badges[str(new_id)].startswith("sealed in head #2 at ")


def test_without_public_keys_no_badge_is_shown_and_the_page_says_so(log, open_as):
    _event_id, aggregate_id = log.event(17)
    soup = record_page(open_as(public_key_files=()), aggregate_id)
    assert seals(soup) == {}
    assert "Integrity not configured" in banner(soup)


@pytest.mark.parametrize(
    ("make_file", "expected"),
    [
        (lambda tmp: tmp / "absent.pem", "does not exist"),
        (lambda tmp: tmp / "notary.pem", "holds a private key"),
        (lambda tmp: tmp, "is a directory"),
    ],
    ids=["missing", "private-key", "directory"],
)
def test_misconfigured_keys_are_a_clear_message_not_a_500(log, open_as, make_file, expected):
    _event_id, aggregate_id = log.event(17)
    client = open_as(public_key_files=(make_file(log.tmp),))
    soup = record_page(client, aggregate_id)
    text = banner(soup)
    assert "Integrity could not be checked" in text and expected in text
    assert "AUDIT_PUBLIC_KEY_FILES" in text
    assert seals(soup) == {}
    page = client.get("/integrity")
    assert page.status_code == 200 and expected in page.text
    api = client.get("/api/integrity")
    assert api.status_code == 200
    assert api.json["status"] == "unavailable" and expected in api.json["message"]


def test_a_public_key_that_did_not_sign_the_heads_is_named(log, open_as, tmp_path):
    other = tmp_path / "other.pub.pem"
    keys.generate_keypair(tmp_path / "other.pem", other)
    _event_id, aggregate_id = log.event(17)
    soup = record_page(open_as(public_key_files=(other,)), aggregate_id)
    assert "head signature invalid" in banner(soup)
    assert "not among the configured public keys" in banner(soup)
    assert set(seals(soup).values()) == {"not verified: the newest head's signature is invalid"}


# --- Attacks on the record page -------------------------------------------------------------


def test_an_updated_payload_is_named_on_the_record_page(log, open_as):
    event_id, aggregate_id = log.event(17)
    as_attacker(log.urls, "UPDATE audit_events SET payload = '{\"tampered\": true}' WHERE seq = 17")
    soup = record_page(open_as("support"), aggregate_id)
    failed = soup.select_one(".integrity-failed")
    assert failed is not None and failed.get("role") == "alert"
    text = banner(soup)
    assert f"Event {event_id} , seq 17: content differs from what was sealed" in text
    assert seals(soup)[event_id] == "does not match the sealed log"


def test_a_backdated_insert_at_an_old_seq_is_named_on_the_record_page(log, open_as):
    _event_id, aggregate_id = log.event(17)
    forged = uuid.uuid4()
    as_attacker(
        log.urls,
        "INSERT INTO audit_events (event_id, aggregate_id, event_type, payload, seq, created_at) "
        f"OVERRIDING SYSTEM VALUE VALUES ('{forged}', '{aggregate_id}', 'USER_UPDATED', "
        "'{\"role\": \"admin\"}', 201, '2020-01-01')",
    )
    soup = record_page(open_as(), aggregate_id)
    assert f"Event {forged} , seq 201: missing from the sealed log" in banner(soup)


def test_rewritten_heads_without_the_key_are_named(log, open_as):
    """The attacker changes a payload, recomputes its leaf, the tree and the head's root, and
    cannot sign: the newest head's signature fails and no event is called sealed."""
    event_id, aggregate_id = log.event(17)
    as_attacker(
        log.urls,
        "UPDATE audit_tree_heads SET root = sha256('forged'::bytea) WHERE number = 1",
    )
    client = open_as()
    soup = record_page(client, aggregate_id)
    assert "head signature invalid" in banner(soup)
    assert "head #1" in banner(soup)
    assert event_id in seals(soup)
    assert not any(text.startswith("sealed") for text in seals(soup).values())
    api = client.get("/api/integrity").json
    assert api["status"] == "failed"
    assert any(p["kind"] == "head signature invalid" for p in api["problems"])
    assert api["newest_head"]["signature_valid"] is False


def test_unreadable_tree_data_fails_closed(log, open_as):
    _event_id, aggregate_id = log.event(17)
    with connect(log.urls.admin) as conn:
        conn.execute("REVOKE SELECT ON audit_tree_leaves FROM audit_reader")
    try:
        client = open_as()
        soup = record_page(client, aggregate_id)
        text = banner(soup)
        assert "Integrity could not be checked" in text and "permission denied" in text
        assert seals(soup) == {}
        # The page's own transaction survived the failed statement (a savepoint).
        assert soup.select("li.timeline-event")
    finally:
        with connect(log.urls.admin) as conn:
            conn.execute("GRANT SELECT ON audit_tree_leaves TO audit_reader")


def test_a_search_page_survives_tree_data_made_unreadable_after_start(log, open_as):
    """The rows query carries the proof offer's high-water mark; when the tree tables the
    app could read at start-up are refused since (a REVOKE), the page still shows its rows,
    without the offer."""
    client = open_as("compliance")
    query = {"type": "USER_CREATED"}
    before = BeautifulSoup(client.get("/search", query_string=query).text, "html.parser")
    assert before.select_one("a.export-sealed-csv") is not None
    with connect(log.urls.admin) as conn:
        conn.execute("REVOKE SELECT ON audit_tree_leaves FROM audit_reader")
    try:
        shown = client.get("/search", query_string=query)
        assert shown.status_code == 200
        page = BeautifulSoup(shown.text, "html.parser")
        assert page.select_one("a.export-sealed-csv") is None
        rows = page.find("table", class_="events").find("tbody").find_all("tr")
        assert len(rows) == len(before.find("table", class_="events").find("tbody").find_all("tr"))
        # Why there is no proof: the tables cannot be read, not "nothing is sealed yet".
        assert "cannot be read" in page.select_one(".export-proof").get_text()
        # A page with no rows looks the high-water mark up alone: the same reason.
        empty = client.get("/search", query_string={"from": "2001-01-01", "to": "2001-01-02"})
        assert empty.status_code == 200
        reason = BeautifulSoup(empty.text, "html.parser").select_one(".export-proof")
        assert "cannot be read" in reason.get_text()
    finally:
        with connect(log.urls.admin) as conn:
            conn.execute("GRANT SELECT ON audit_tree_leaves TO audit_reader")


# --- The history cache cannot hide a change ----------------------------------------------------


def test_the_history_cache_cannot_hide_an_updated_payload(log, open_as):
    """A record of 1,000+ events is kept folded between requests; a superuser UPDATE of a
    payload must show at once (new value and the red banner), not the cached past."""
    big = uuid.uuid4()
    with connect(log.urls.admin) as conn:
        conn.execute(
            "INSERT INTO audit_events (aggregate_id, event_type, payload, created_at) "
            "SELECT %s, CASE WHEN n = 1 THEN 'ITEM_CREATED' ELSE 'ITEM_UPDATED' END, "
            "jsonb_build_object('counter', n, 'note', 'original'), "
            "now() - interval '1 hour' + n * interval '1 ms' "
            "FROM generate_series(1, 1050) AS n ORDER BY n",
            (big,),
        )
    log.seal()
    client = open_as()
    first = record_page(client, big, limit=20)
    assert '"original"' in first.select_one("table.state").get_text()
    seq, event_id = one(
        log.urls,
        "SELECT seq, event_id::text FROM audit_events WHERE aggregate_id = %s "
        "ORDER BY seq DESC LIMIT 1",
        (big,),
    )
    as_attacker(
        log.urls,
        f'UPDATE audit_events SET payload = payload || \'{{"note": "TAMPERED"}}\' '
        f"WHERE seq = {seq}",
    )
    again = record_page(client, big, limit=20)
    state = again.select_one("table.state").get_text()
    assert "TAMPERED" in state, "the record page served the cached, pre-tamper state"
    assert f"Event {event_id} , seq {seq}: content differs from what was sealed" in banner(again)
    api = client.get(f"/api/aggregates/{big}/state").json
    assert api["state"]["note"] == "TAMPERED"


# --- The integrity page and its JSON ------------------------------------------------------------


def test_the_integrity_page_shows_the_newest_head_lag_and_skipped_seqs(log, open_as):
    with connect(log.urls.writer) as conn:
        conn.execute(
            "SELECT insert_audit_event(%s, 'ITEM_CREATED', '{\"x\": 2}', NULL)", (uuid.uuid4(),)
        )
    client = open_as("compliance")
    page = client.get("/integrity")
    assert page.status_code == 200
    soup = BeautifulSoup(page.text, "html.parser")
    text = " ".join(soup.get_text(" ").split())
    assert "#1, sealed" in text and "210 events, up to seq 211" in text
    assert "1 event not yet sealed; the oldest (seq 212)" in text
    assert "head #1: 201" in text
    assert soup.select_one(".integrity-ok") is not None
    api = client.get("/api/integrity").json
    assert api["status"] == "ok"
    assert api["newest_head"]["number"] == 1 and api["newest_head"]["signature_valid"]
    assert api["notary_lag"]["unsealed_events"] == 1
    assert api["notary_lag"]["oldest_unsealed_seq"] == 212
    assert api["skipped_seqs"] == [{"head": 1, "from": 201, "to": 201}]
    assert api["problems"] == []
    assert "no verification recorded" in api["last_verification_note"]


def test_the_integrity_page_is_for_auditors_and_compliance_only(log, open_as):
    assert open_as("support").get("/integrity").status_code == 403
    assert open_as("support").get("/api/integrity").status_code == 403


def test_a_deleted_row_is_named_by_verify_on_the_integrity_page_and_by_the_proof_api(log, open_as):
    event_id, _aggregate_id = log.event(40)
    as_attacker(log.urls, "DELETE FROM audit_events WHERE seq = 40")
    client = open_as()
    proof = client.get(f"/api/events/{event_id}/proof")
    assert proof.status_code == 200
    assert proof.json["status"] == "deleted"
    assert (
        f"event {event_id}, seq 40: sealed, but deleted from audit_events"
        in (proof.json["message"])
    )
    env = {
        "AUDIT_DATABASE_URL": log.urls.reader,
        "AUDIT_PUBLIC_KEY_FILES": str(log.public),
        "AUDIT_NOTARY_HEADS_FILE": str(log.heads),
        "AUDIT_VERIFY_RESULTS_FILE": str(log.results),
    }
    result = CliRunner().invoke(main, ["verify", "--quiet"], env=env)
    assert result.exit_code == 1
    api = client.get("/api/integrity").json
    verification = api["last_verification"]
    assert verification["clean"] is False
    assert any(
        p["kind"] == "missing" and p["seq"] == 40 and p["event_id"] == event_id
        for p in verification["problems"]
    ), verification
    page = BeautifulSoup(client.get("/integrity").text, "html.parser")
    shown = " ".join(page.select_one("#verification-title").parent.get_text(" ").split())
    assert "1 problem found" in shown
    assert f"seq 40, event {event_id} : missing" in shown


def test_a_rolled_back_head_is_named_against_the_heads_file(log, open_as):
    with connect(log.urls.writer) as conn:
        conn.execute(
            "SELECT insert_audit_event(%s, 'ITEM_CREATED', '{\"x\": 3}', NULL)", (uuid.uuid4(),)
        )
    log.seal()
    as_attacker(
        log.urls,
        "DELETE FROM audit_tree_heads WHERE number = 2",
    )
    api = open_as().get("/api/integrity").json
    assert api["status"] == "failed"
    messages = [p["detail"] for p in api["problems"] if p["kind"] == "head missing or rolled back"]
    assert any("holds head #2 but audit_tree_heads ends at #1" in m for m in messages), api


# --- Event proofs an outsider can check ----------------------------------------------------------


def test_an_event_proof_checks_with_the_pure_core(log, open_as):
    event_id, _aggregate_id = log.event(33)
    body = open_as("compliance").get(f"/api/events/{event_id}/proof").json
    assert body["status"] == "sealed" and body["seq"] == 33
    head = heads.head_from_json(body["head"])
    assert heads.verify_signature(head, keys.load_public_keys([log.public]))
    row = one(
        log.urls,
        "SELECT event_id, aggregate_id, event_type, payload::text, metadata::text, created_at, "
        "seq FROM audit_events WHERE seq = 33",
    )
    recomputed = merkle.leaf_hash(
        leaf.leaf_bytes(
            event_id=row[0],
            aggregate_id=row[1],
            event_type=row[2],
            payload=row[3],
            metadata=row[4],
            created_at=row[5],
            seq=row[6],
        )
    )
    assert recomputed.hex() == body["leaf_hash"]
    proof = [bytes.fromhex(node) for node in body["inclusion_proof"]]
    assert merkle.verify_inclusion(recomputed, body["leaf_index"], head.tree_size, proof, head.root)


def test_the_proof_api_names_a_changed_event_and_404s_an_unknown_one(log, open_as):
    event_id, _aggregate_id = log.event(50)
    as_attacker(log.urls, "UPDATE audit_events SET event_type = 'FORGED' WHERE seq = 50")
    client = open_as()
    body = client.get(f"/api/events/{event_id}/proof").json
    assert body["status"] == "problem"
    assert "content differs from what was sealed" in body["message"]
    missing = client.get(f"/api/events/{uuid.uuid4()}/proof")
    assert missing.status_code == 404 and "error" in missing.json
    assert client.get("/api/events/not-a-uuid/proof").status_code == 400


# --- The PDF cover --------------------------------------------------------------------------


def pdf_cover(response) -> str:
    from pypdf import PdfReader

    assert response.status_code == 200, response.text
    text = PdfReader(io.BytesIO(response.data)).pages[0].extract_text()
    return " ".join(text.split())


def test_the_pdf_cover_names_the_head_and_the_check(log, open_as):
    _event_id, aggregate_id = log.event(17)
    client = open_as()
    query = "SELECT count(*) FROM audit_events WHERE aggregate_id = %s"
    count = one(log.urls, query, (aggregate_id,))[0]
    cover = pdf_cover(client.get(f"/export/aggregates/{aggregate_id}.pdf"))
    head = json.loads(log.heads.read_text().splitlines()[-1])
    assert "Tamper evidence" in cover
    assert "Signed tree head #1, sealed" in cover
    assert head["root"] in cover.replace(" ", "")
    assert head["key_id"] in cover
    assert head["signature"] in cover.replace(" ", "")
    assert f"{count} of {count} listed events verified against head #1" in cover


def test_the_pdf_cover_names_a_changed_event(log, open_as):
    event_id, aggregate_id = log.event(17)
    as_attacker(log.urls, "UPDATE audit_events SET payload = '{\"tampered\": true}' WHERE seq = 17")
    cover = pdf_cover(open_as().get(f"/export/aggregates/{aggregate_id}.pdf"))
    assert "PROBLEM: 1 finding" in cover
    assert f"event {event_id}, seq 17: content differs from what was sealed" in cover


def test_the_events_pdf_cover_verifies_every_listed_event(log, open_as):
    cover = pdf_cover(
        open_as("compliance").get(
            "/reports/events.pdf", query_string={"from": "2000-01-01", "to": "2100-01-01"}
        )
    )
    assert "210 of 210 listed events verified against head #1." in cover


def test_the_events_pdf_cover_without_keys_says_not_configured(log, open_as):
    cover = pdf_cover(
        open_as(public_key_files=()).get(
            "/reports/events.pdf", query_string={"from": "2000-01-01", "to": "2100-01-01"}
        )
    )
    assert "Not checked: integrity not configured" in cover


# --- The proof download ---------------------------------------------------------------------


def test_the_search_page_offers_a_proof_that_verifies_its_csv(log, open_as):
    client = open_as("compliance")
    search = client.get("/search", query_string={"type": "USER_CREATED"})
    page = BeautifulSoup(search.text, "html.parser")
    csv_link = page.select_one("a.export-sealed-csv")["href"]
    proof_link = page.select_one("a.export-proof-json")["href"]
    assert "through_seq=211" in csv_link and "through_seq=211" in proof_link
    exported = client.get(csv_link)
    proof = client.get(proof_link)
    assert proof.status_code == 200, proof.text
    assert proof.headers["Content-Disposition"].split("filename=")[1].startswith('"audit-events')
    assert ".proof.json" in proof.headers["Content-Disposition"]
    bundle = proof.json

    rows = list(csv.DictReader(io.StringIO(exported.data.decode("utf-8"))))
    assert rows and bundle["rows"] == len(rows)
    problems = verify_bundle(
        rows,
        bundle,
        keys.load_public_keys([log.public]),
        csv_sha256=hashlib.sha256(exported.data).hexdigest(),
    )
    assert problems == []


def test_the_proof_offer_comes_with_the_rows_or_without_them(log, open_as, monkeypatch):
    """The page's rows query carries how far a proof can go (no statement of its own); a
    page with no rows still offers it, looked up alone."""
    client = open_as("compliance")
    looked_up = []
    real = integrity_check.provable_through
    monkeypatch.setattr(
        integrity_check,
        "provable_through",
        lambda *args, **kwargs: looked_up.append(1) or real(*args, **kwargs),
    )
    for query, alone in (({"type": "USER_CREATED"}, []), ({"actor": "nobody-at-all"}, [1])):
        looked_up.clear()
        page = BeautifulSoup(client.get("/search", query_string=query).text, "html.parser")
        assert "through_seq=211" in page.select_one("a.export-sealed-csv")["href"], query
        assert looked_up == alone, query


def test_a_proof_for_unsealed_rows_is_refused_with_the_seq_to_use(log, open_as):
    with connect(log.urls.writer) as conn:
        conn.execute(
            "SELECT insert_audit_event(%s, 'ITEM_CREATED', '{\"x\": 4}', NULL)", (uuid.uuid4(),)
        )
    response = open_as().get("/export/events.proof.json")
    assert response.status_code == 409
    assert "not sealed yet" in response.json["error"]
    assert "through_seq=211, the newest sealed event" in response.json["error"]


# --- In a browser --------------------------------------------------------------------------------


@pytest.fixture
def app(make_app, log):
    """The app the browser fixtures (live_server) serve: on this test's sealed log."""
    return make_app(**log.settings())


@pytest.mark.browser
def test_the_red_banner_in_a_browser(log, page, live_server, browser_login):
    event_id, aggregate_id = log.event(17)
    as_attacker(log.urls, "UPDATE audit_events SET payload = '{\"tampered\": true}' WHERE seq = 17")
    browser_login("support")
    page.goto(f"{live_server}/aggregates/{aggregate_id}")
    alert = page.get_by_role("alert")
    assert alert.is_visible()
    text = alert.inner_text()
    assert event_id in text and "seq 17" in text and "content differs from what was sealed" in text
    colour = alert.evaluate("element => getComputedStyle(element).borderLeftColor")
    assert colour == "rgb(164, 22, 26)"  # --danger
    badge = page.locator(f"#event-{event_id} dd.seal")
    assert badge.inner_text() == "does not match the sealed log"
