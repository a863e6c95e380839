"""The access log: one entry per request, streamed exports, browsing, reasons, and the
logger role that can do nothing but append."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from bs4 import BeautifulSoup
from conftest import TEST_USERS, csrf_token_from, sign_in
from flask import Blueprint, Response, g, stream_with_context
from psycopg import errors as pg_errors

from dashboard import access_log, permissions
from dashboard.db import libpq_url

ANN = TEST_USERS["auditor"][0]
SUE = TEST_USERS["support"][0]


def _entries(seeded_db, where: str, params: tuple) -> list[dict]:
    """Entries as the admin sees them, oldest first."""
    with psycopg.connect(libpq_url(seeded_db.admin)) as conn:
        conn.row_factory = psycopg.rows.dict_row
        return conn.execute(
            f"SELECT * FROM audit_access_log WHERE {where} ORDER BY id", params
        ).fetchall()


@pytest.fixture(scope="module")
def aggregate_id(seeded_db) -> str:
    with psycopg.connect(libpq_url(seeded_db.admin)) as conn:
        return conn.execute("SELECT aggregate_id::text FROM audit_events LIMIT 1").fetchone()[0]


def _probe_blueprint(marker: str) -> Blueprint:
    """Views that use the access-log API the way record pages and exports do."""
    bp = Blueprint("probe", __name__)

    @bp.get("/probe/view/<aggregate_id>")
    def view(aggregate_id):
        refused = access_log.require_reason(aggregate_id)
        if refused is not None:
            return refused
        access_log.note(action="probe_view", aggregate_ids=[aggregate_id], row_count=3)
        access_log.note(aggregate_ids=[aggregate_id.upper()])  # same id, other spelling
        return "ok"

    @bp.get("/probe/export")
    def export():
        rows = [f"row {n}\n" for n in range(5)]

        def generate():
            digest = hashlib.sha256()
            for row in rows:
                digest.update(row.encode())
                yield row
            access_log.finish_export(
                "ok", row_count=len(rows), export_digest=digest.hexdigest(), may_withhold=False
            )

        access_log.start_export("probe_export", filters={"marker": marker})
        return Response(stream_with_context(generate()), mimetype="text/plain")

    @bp.get("/probe/failing-export")
    def failing_export():
        def generate():
            try:
                yield "partial\n"
                raise RuntimeError("disk full")
            except RuntimeError:
                access_log.finish_export("failed", may_withhold=False)

        access_log.start_export("probe_export", filters={"marker": marker})
        return Response(stream_with_context(generate()), mimetype="text/plain")

    @bp.get("/probe/silent-stream")
    def silent_stream():
        access_log.note(action="probe_silent", filters={"marker": marker})
        return Response(stream_with_context(iter(["a", "b"])), mimetype="text/plain")

    return bp


@pytest.fixture
def probe(make_app, monkeypatch):
    """An app with the probe views, and a marker that finds this test's entries."""
    marker = uuid.uuid4().hex
    for endpoint in ("view", "export", "failing_export", "silent_stream"):
        monkeypatch.setitem(
            permissions.ENDPOINT_PERMISSIONS, f"probe.{endpoint}", permissions.VIEW_RECORD
        )

    def make(**overrides):
        app = make_app(**overrides)
        app.register_blueprint(_probe_blueprint(marker))
        return app

    return make, marker


# --- what gets written --------------------------------------------------------------------


def test_page_view_is_recorded(client, login, seeded_db):
    login("auditor")
    marker = uuid.uuid4().hex
    assert client.get(f"/access-log?action={marker}").status_code == 200
    [entry] = _entries(seeded_db, "filters->>'action' = %s", (marker,))
    assert entry["username"] == ANN
    assert entry["role"] == "auditor"
    assert entry["action"] == "access_log.browse"
    assert entry["route"] == "/access-log"
    assert entry["outcome"] == "ok"
    assert entry["client_ip"] == "127.0.0.1"
    assert entry["row_count"] == 0


def test_view_records_aggregate_ids_once_in_canonical_form(probe, seeded_db, aggregate_id):
    make, _ = probe
    client = sign_in(make().test_client(), "support")
    assert client.get(f"/probe/view/{aggregate_id}").status_code == 200
    entries = _entries(seeded_db, "action = 'probe_view' AND username = %s", (SUE,))
    assert entries[-1]["aggregate_ids"] == [aggregate_id]
    assert entries[-1]["row_count"] == 3


def test_streamed_export_is_recorded_as_started_then_with_its_digest(probe, seeded_db):
    make, marker = probe
    client = sign_in(make().test_client(), "support")
    response = client.get("/probe/export")
    body = response.get_data()
    response.close()
    started, done = _entries(seeded_db, "filters->>'marker' = %s", (marker,))
    assert (started["action"], started["outcome"], started["row_count"]) == (
        "probe_export",
        "started",
        None,
    )
    assert done["action"] == "probe_export"
    assert done["row_count"] == 5
    assert done["export_digest"] == hashlib.sha256(body).hexdigest()
    assert done["outcome"] == "ok"
    assert started["entry_uuid"] != done["entry_uuid"]


def test_failed_export_is_recorded_as_failed(probe, seeded_db):
    make, marker = probe
    client = sign_in(make().test_client(), "support")
    response = client.get("/probe/failing-export")
    response.get_data()
    response.close()
    outcomes = [e["outcome"] for e in _entries(seeded_db, "filters->>'marker' = %s", (marker,))]
    assert outcomes == ["started", "failed"]


def test_stream_without_explicit_record_is_written_before_it_starts(probe, seeded_db):
    make, marker = probe
    client = sign_in(make().test_client(), "support")
    response = client.get("/probe/silent-stream", buffered=False)
    [entry] = _entries(seeded_db, "filters->>'marker' = %s", (marker,))  # before any byte
    assert entry["action"] == "probe_silent"
    response.get_data()
    response.close()


def test_denied_request_is_recorded_as_denied(client, login, seeded_db):
    login("support")
    marker = uuid.uuid4().hex
    assert client.get(f"/access-log?user={marker}").status_code == 403
    [entry] = _entries(seeded_db, "filters->>'user' = %s", (marker,))
    assert (entry["username"], entry["outcome"]) == (SUE, "denied")


def test_sign_in_attempts_are_recorded(app, seeded_db):
    client = app.test_client()
    name = f"nobody-{uuid.uuid4().hex[:8]}"
    page = client.get("/login")
    client.post(
        "/login",
        data={"username": name, "password": "x" * 12, "csrf_token": csrf_token_from(page.text)},
    )
    [failed] = _entries(seeded_db, "username = %s", (name,))
    assert (failed["action"], failed["outcome"], failed["role"]) == ("sign_in", "failed", None)
    before = len(_entries(seeded_db, "username = %s AND action = 'sign_in'", (ANN,)))
    sign_in(client, "auditor")
    after = _entries(seeded_db, "username = %s AND action = 'sign_in'", (ANN,))
    assert len(after) == before + 1 and after[-1]["outcome"] == "ok"


def test_passwords_never_reach_the_access_log(app, seeded_db):
    client = app.test_client()
    secret = "pw-" + uuid.uuid4().hex
    page = client.get("/login")
    client.post(
        "/login",
        data={"username": ANN, "password": secret, "csrf_token": csrf_token_from(page.text)},
    )
    rows = _entries(seeded_db, "true", ())
    assert secret not in json.dumps(rows, default=str)


def test_static_and_health_are_not_logged(client, seeded_db):
    before = len(_entries(seeded_db, "route IN ('/healthz', '/static/style.css')", ()))
    client.get("/healthz")
    client.get("/static/style.css")
    assert len(_entries(seeded_db, "route IN ('/healthz', '/static/style.css')", ())) == before


# --- reading it back ----------------------------------------------------------------------


def test_auditor_browses_with_filters_and_pages(client, login, seeded_db):
    login("auditor")
    marker = uuid.uuid4().hex
    for n in range(3):
        client.get(f"/access-log?action={marker}&n={n}")
    first = client.get(
        "/access-log?user=ann.auditor&action=access_log.browse&limit=2",
        headers={"Accept": "application/json"},
    )
    page = first.get_json()
    assert len(page["entries"]) == 2
    assert page["entries"][0]["id"] > page["entries"][1]["id"]  # newest first
    assert page["next_cursor"] == str(page["entries"][1]["id"])
    second = client.get(
        f"/access-log?user=ann.auditor&action=access_log.browse&limit=2&cursor={page['next_cursor']}",
        headers={"Accept": "application/json"},
    ).get_json()
    assert second["entries"][0]["id"] < page["entries"][1]["id"]
    html = client.get("/access-log?user=ann.auditor&limit=2")
    soup = BeautifulSoup(html.text, "html.parser")
    assert len(soup.select("table.access-entries tbody tr")) == 2
    assert soup.find("a", rel="next") is not None


def test_browse_by_record_and_time(client, login, probe, seeded_db, aggregate_id):
    make, _ = probe
    support = sign_in(make().test_client(), "support")
    support.get(f"/probe/view/{aggregate_id}")
    login("auditor")
    page = client.get(
        f"/access-log?aggregate_id={aggregate_id.upper()}&from=2000-01-01&to=2999-01-01",
        headers={"Accept": "application/json"},
    ).get_json()
    assert page["entries"]
    assert all(aggregate_id in e["aggregate_ids"] for e in page["entries"])
    empty = client.get(
        f"/access-log?aggregate_id={aggregate_id}&to=2000-01-01",
        headers={"Accept": "application/json"},
    ).get_json()
    assert empty["entries"] == []


@pytest.mark.parametrize(
    "query",
    [
        "aggregate_id=not-a-uuid",
        "from=yesterday",
        "from=2024-02-01&to=2024-01-01",
        "limit=0",
        "cursor=abc",
    ],
)
def test_bad_browse_filters_are_400_with_a_message(client, login, query):
    login("auditor")
    response = client.get(f"/access-log?{query}")
    assert response.status_code == 400
    assert "Traceback" not in response.text


def test_viewers_of_a_record(app, probe, aggregate_id):
    from dashboard.auth import CurrentUser

    make, _ = probe
    sign_in(make().test_client(), "support").get(f"/probe/view/{aggregate_id}")
    with app.test_request_context("/"):
        g.user = CurrentUser(ANN, "auditor", "password")
        viewers = access_log.viewers_of(aggregate_id)
        assert viewers and viewers[0].username == SUE
        assert all(v.at >= w.at for v, w in itertools.pairwise(viewers))
        g.user = CurrentUser(SUE, "support", "password")
        assert access_log.viewers_of(aggregate_id) == []  # not for roles without the permission


def test_record_page_shows_who_viewed_it(client, login, aggregate_id):
    if "records.record" not in {rule.endpoint for rule in client.application.url_map.iter_rules()}:
        pytest.skip("the record page is not registered")
    login("support")
    assert client.get(f"/aggregates/{aggregate_id}").status_code == 200
    login("auditor")
    page = client.get(f"/aggregates/{aggregate_id}")
    assert SUE in page.text


# --- reasons for access -------------------------------------------------------------------


def test_support_must_give_a_reason_when_configured(probe, seeded_db, aggregate_id):
    make, _ = probe
    app = make(require_access_reason=True)
    client = sign_in(app.test_client(), "support")
    response = client.get(f"/probe/view/{aggregate_id}")
    assert response.status_code == 303
    form_url = response.headers["Location"]
    assert form_url.startswith("/access-reason?")
    form = client.get(form_url)
    assert form.status_code == 200
    token = csrf_token_from(form.text)
    too_short = client.post(form_url, data={"csrf_token": token, "reason": "x"})
    assert too_short.status_code == 400
    ticket = f"SUP-{uuid.uuid4().hex[:6]}"
    given = client.post(form_url, data={"csrf_token": token, "reason": ticket})
    assert given.status_code == 303
    assert given.headers["Location"] == f"/probe/view/{aggregate_id}"
    assert client.get(given.headers["Location"]).status_code == 200  # remembered now
    entries = _entries(seeded_db, "reason = %s AND action = 'probe_view'", (ticket,))
    assert entries and entries[-1]["aggregate_ids"] == [aggregate_id]


def test_reason_in_the_url_or_header_works_for_scripts(probe, seeded_db, aggregate_id):
    make, _ = probe
    client = sign_in(make(require_access_reason=True).test_client(), "support")
    assert client.get(f"/probe/view/{aggregate_id}?reason=INC-77").status_code == 200
    assert (
        client.get(f"/probe/view/{aggregate_id}", headers={"X-Access-Reason": "INC-78"}).status_code
        == 200
    )
    assert _entries(seeded_db, "reason = 'INC-78'", ())


def test_roles_that_search_need_no_reason(probe, aggregate_id):
    make, _ = probe
    client = sign_in(make(require_access_reason=True).test_client(), "compliance")
    assert client.get(f"/probe/view/{aggregate_id}").status_code == 200


# --- the file backend ---------------------------------------------------------------------


def test_file_backend_says_so_and_works(make_app, tmp_path, caplog, aggregate_id, monkeypatch):
    path = tmp_path / "access.jsonl"
    with caplog.at_level(logging.WARNING, logger="dashboard.access_log"):
        app = make_app(access_log_url=None, access_log_file=path)
    assert any(
        "AUDIT_ACCESS_LOG_URL is not set" in r.getMessage() and str(path) in r.getMessage()
        for r in caplog.records
    )
    monkeypatch.setitem(permissions.ENDPOINT_PERMISSIONS, "probe.view", permissions.VIEW_RECORD)
    app.register_blueprint(_probe_blueprint("file"))
    support = sign_in(app.test_client(), "support")
    support.get(f"/probe/view/{aggregate_id}")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["action"] for line in lines] == ["sign_in", "probe_view"]
    assert lines[1]["aggregate_ids"] == [aggregate_id]
    assert oct(path.stat().st_mode & 0o777) == "0o600"

    auditor = sign_in(app.test_client(), "auditor")
    page = auditor.get("/access-log?limit=2", headers={"Accept": "application/json"}).get_json()
    assert [e["action"] for e in page["entries"]] == ["sign_in", "probe_view"]  # newest first
    older = auditor.get(
        f"/access-log?limit=2&cursor={page['next_cursor']}", headers={"Accept": "application/json"}
    ).get_json()
    assert [e["action"] for e in older["entries"]] == ["sign_in"]
    assert older["next_cursor"] is None
    by_record = auditor.get(
        f"/access-log?aggregate_id={aggregate_id}", headers={"Accept": "application/json"}
    ).get_json()
    assert [e["username"] for e in by_record["entries"]] == [SUE]


def test_file_backend_skips_a_malformed_line(make_app, tmp_path):
    path = tmp_path / "access.jsonl"
    app = make_app(access_log_url=None, access_log_file=path)
    client = sign_in(app.test_client(), "auditor")
    with path.open("a") as handle:
        handle.write("{not json\n")
    page = client.get("/access-log", headers={"Accept": "application/json"}).get_json()
    assert [e["action"] for e in page["entries"]] == ["sign_in"]


def test_file_backend_reads_backwards_across_chunks(tmp_path):
    from dashboard.access_log.browsing import newest_first
    from dashboard.access_log.sinks import FileSink

    sink = FileSink(tmp_path / "big.jsonl")
    for n in range(3000):
        sink.write(
            access_log.AccessEntry(
                id=None, at=datetime.now(UTC), username=f"u{n}", role=None, action="x" * 40
            )
        )
    names = [entry["username"] for _, entry in newest_first(sink.path, None)]
    assert names == [f"u{n}" for n in reversed(range(3000))]


# --- the logger role ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM audit_events LIMIT 1",
        "SELECT * FROM audit_access_log LIMIT 1",
        "INSERT INTO audit_access_log (username, action) VALUES ('x', 'forged')",
        "UPDATE audit_access_log SET reason = 'x'",
        "DELETE FROM audit_access_log",
        "INSERT INTO audit_events (aggregate_id, event_type, payload) "
        "VALUES (gen_random_uuid(), 'X', '{}')",
        "CREATE TABLE public.sneaky (x int)",
    ],
)
def test_logger_role_can_do_nothing_else(seeded_db, statement):
    with (
        psycopg.connect(libpq_url(seeded_db.logger)) as conn,
        pytest.raises(pg_errors.InsufficientPrivilege) as caught,
    ):
        conn.execute(statement)
    assert caught.value.sqlstate == "42501"


def test_logger_role_can_append_through_log_access(seeded_db):
    marker = uuid.uuid4().hex
    with psycopg.connect(libpq_url(seeded_db.logger), autocommit=True) as conn:
        new_id = conn.execute(
            "SELECT log_access(%s, NULL, 'probe', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
            (marker,),
        ).fetchone()[0]
    [entry] = _entries(seeded_db, "username = %s", (marker,))
    assert entry["id"] == new_id and entry["outcome"] == "ok"


def test_log_access_stores_an_entry_once_with_its_own_time(seeded_db):
    """The spool's replay sends an entry again after a crash: stored once, at its time."""
    marker, entry_uuid = uuid.uuid4().hex, uuid.uuid4()
    call = (
        "SELECT log_access(%s, NULL, 'probe', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
        "%s, %s, NULL)"
    )
    happened = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    with psycopg.connect(libpq_url(seeded_db.logger), autocommit=True) as conn:
        first = conn.execute(call, (marker, entry_uuid, happened)).fetchone()[0]
        again = conn.execute(call, (marker, entry_uuid, happened)).fetchone()[0]
        with pytest.raises(psycopg.errors.RaiseException):
            conn.execute(call, (marker, None, None))
    assert first is not None and again is None
    [entry] = _entries(seeded_db, "username = %s", (marker,))
    assert entry["at"] == happened
    assert entry["logged_at"] > happened


def test_entries_cannot_be_changed_even_by_the_owner(seeded_db):
    with psycopg.connect(libpq_url(seeded_db.admin)) as conn:
        with pytest.raises(psycopg.Error):
            conn.execute("UPDATE audit_access_log SET reason = 'rewritten'")
        conn.rollback()
        with pytest.raises(psycopg.Error):
            conn.execute("DELETE FROM audit_access_log")
