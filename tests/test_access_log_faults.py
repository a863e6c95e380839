"""The access log fails closed: what cannot be recorded is not served, what could not be
written waits in a durable spool and reaches the log exactly once when it is back."""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from conftest import TEST_USERS, csrf_token_from, sign_in

from dashboard.access_log import EXTENSION_KEY, AccessEntry
from dashboard.access_log.sinks import LogStatementFailed, PostgresSink
from dashboard.db import libpq_url
from dashboard.spool import Spool
from dashboard.users import UserStore

ANN = TEST_USERS["auditor"][0]
CLOSED_PORT = "postgresql://audit_access_logger:x@127.0.0.1:1/nowhere"
BROKEN_LOGGERS = {
    "wrong password": (lambda urls: urls.logger.replace("logger-pw-", "wrong-pw-")),
    "closed port": (lambda urls: CLOSED_PORT),
}
PROBLEMS = {"wrong password": "password authentication failed", "closed port": "refused"}


def _entries(admin_url: str, where: str, params: tuple) -> list[dict]:
    with psycopg.connect(libpq_url(admin_url)) as conn:
        conn.row_factory = psycopg.rows.dict_row
        return conn.execute(
            f"SELECT * FROM audit_access_log WHERE {where} ORDER BY id", params
        ).fetchall()


@pytest.fixture(scope="module")
def aggregate_id(seeded_db) -> str:
    with psycopg.connect(libpq_url(seeded_db.admin)) as conn:
        return conn.execute("SELECT aggregate_id::text FROM audit_events LIMIT 1").fetchone()[0]


@pytest.fixture
def bearer(users_file) -> dict[str, str]:
    return {"Authorization": f"Bearer {UserStore(users_file).issue_token(ANN)}"}


def _spooled(app) -> list[dict]:
    return app.extensions[EXTENSION_KEY].spool.records()


# --- fail closed ---------------------------------------------------------------------------


@pytest.mark.parametrize("broken", list(BROKEN_LOGGERS))
def test_nothing_is_served_that_cannot_be_recorded(
    make_app, seeded_db, bearer, aggregate_id, broken, caplog
):
    app = make_app(access_log_url=BROKEN_LOGGERS[broken](seeded_db))
    client = app.test_client()
    with caplog.at_level(logging.ERROR, logger="dashboard.access_log"):
        page = client.get(f"/aggregates/{aggregate_id}", headers={**bearer, "Accept": "text/html"})
        api = client.get(f"/api/aggregates/{aggregate_id}/state", headers=bearer)
        csv = client.get("/export/events.csv", headers=bearer)
        pdf = client.get(f"/export/aggregates/{aggregate_id}.pdf", headers=bearer)

    assert page.status_code == 503
    assert page.mimetype == "text/html"
    assert "access log cannot be written" in page.text
    assert PROBLEMS[broken] in page.text.lower()
    assert "Content-Security-Policy" in page.headers  # the 503 is still a hardened page
    for response in (api, csv, pdf):
        assert response.status_code == 503, response.data[:200]
        assert response.mimetype == "application/json"  # nothing of the record or the file
        assert "access log cannot be written" in response.json["error"]
        assert PROBLEMS[broken] in response.json["error"].lower()
        assert "Content-Disposition" not in response.headers
    assert '"state"' not in api.text

    kept = _spooled(app)
    assert [e["outcome"] for e in kept] == ["withheld"] * 4
    assert {e["action"] for e in kept} >= {"export_csv", "export_record_pdf"}
    assert all(e["username"] == ANN for e in kept)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert sum("kept in" in m and ANN in m for m in errors) == 4  # said, never swallowed
    assert "wrong-pw" not in caplog.text  # the URL is shown without its password


def test_sign_in_that_cannot_be_recorded_does_not_happen(make_app, seeded_db):
    app = make_app(access_log_url=CLOSED_PORT)
    client = app.test_client()
    form = client.get("/login")
    name, password = TEST_USERS["auditor"]
    response = client.post(
        "/login",
        data={"username": name, "password": password, "csrf_token": csrf_token_from(form.text)},
    )
    assert response.status_code == 503
    assert "access log cannot be written" in response.text
    cookie = client.get_cookie("audit_session")
    session = app.session_interface.get_signing_serializer(app).loads(cookie.value)
    assert "user" not in session
    assert [(e["action"], e["outcome"]) for e in _spooled(app)] == [("sign_in", "withheld")]


def test_fail_open_serves_warns_at_start_and_spools(make_app, bearer, aggregate_id, caplog):
    with caplog.at_level(logging.WARNING, logger="dashboard.access_log"):
        app = make_app(access_log_url=CLOSED_PORT, access_log_fail_open=True)
    assert any(
        r.levelno == logging.WARNING and "AUDIT_ACCESS_LOG_FAIL_OPEN" in r.getMessage()
        for r in caplog.records
    )
    client = app.test_client()
    assert client.get(f"/api/aggregates/{aggregate_id}/state", headers=bearer).status_code == 200
    csv = client.get("/export/events.csv", headers=bearer)
    assert csv.status_code == 200 and csv.mimetype == "text/csv"
    assert csv.get_data().startswith(b"created_at,")
    csv.close()
    outcomes = [(e["action"], e["outcome"]) for e in _spooled(app)]
    assert outcomes == [("api_state", "ok"), ("export_csv", "started"), ("export_csv", "ok")]


# --- the spool reaches the log when it is back ------------------------------------------


@pytest.fixture
def own_database(make_database):
    """A database of its own: its CONNECT privilege can be taken away without touching the
    other tests' databases (roles are shared by the whole cluster, grants on a database
    are not)."""
    return make_database("audit_spool")


def _logger_cut_off(admin_url: str, name: str, *, cut: bool) -> None:
    """Only the reader (and superusers) may connect while ``cut``; the logger's sessions end."""
    with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
        if cut:
            conn.execute(f'REVOKE CONNECT ON DATABASE "{name}" FROM PUBLIC')
            conn.execute(f'GRANT CONNECT ON DATABASE "{name}" TO audit_reader')
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND usename = 'audit_access_logger'",
                (name,),
            )
        else:
            conn.execute(f'GRANT CONNECT ON DATABASE "{name}" TO PUBLIC')


def test_what_the_log_missed_is_written_once_when_it_is_back(make_app, own_database):
    urls = own_database
    app = make_app(database_url=urls.reader, access_log_url=urls.logger)
    client = sign_in(app.test_client(), "auditor")
    marker = "spool-" + uuid.uuid4().hex
    page = f"/api/events?actor={marker}"
    try:
        _logger_cut_off(urls.admin, urls.name, cut=True)
        before = datetime.now(UTC)
        assert client.get(page).status_code == 503
        [kept] = _spooled(app)
        assert kept["outcome"] == "withheld"
    finally:
        _logger_cut_off(urls.admin, urls.name, cut=False)

    assert client.get(page + "&limit=2").status_code == 200  # the spool goes first
    rows = _entries(urls.admin, "filters->>'actor' = %s", (marker,))
    assert [r["outcome"] for r in rows] == ["withheld", "ok"]
    late = rows[0]
    assert str(late["entry_uuid"]) == kept["entry_uuid"]
    assert before <= late["at"] < late["logged_at"]  # its own time, and when it arrived
    assert _spooled(app) == []
    assert client.get(page + "&limit=3").status_code == 200
    assert len(_entries(urls.admin, "filters->>'actor' = %s", (marker,))) == 3


def test_an_entry_written_just_before_a_crash_is_not_stored_twice(make_app, seeded_db):
    """The crash between the database's commit and the spool's truncation: the entry is
    sent again at the next delivery, and log_access() ignores its UUID the second time."""
    app = make_app()
    logger = app.extensions[EXTENSION_KEY]
    marker = "crash-" + uuid.uuid4().hex
    entry = AccessEntry(id=None, at=datetime.now(UTC), username=marker, role=None, action="x")
    logger.spool.append(entry.to_json())
    logger.sink.write(entry, keep_time=True)  # committed; then the process died
    assert logger.deliver_spooled(force=True) == 1
    assert logger.spool.records() == []
    assert len(_entries(seeded_db.admin, "username = %s", (marker,))) == 1


def test_the_spool_is_written_at_start(make_app, seeded_db, tmp_path):
    marker = "start-" + uuid.uuid4().hex
    happened = datetime.now(UTC) - timedelta(hours=3)
    spool = Spool(tmp_path / "access-log-spool", "access-log")
    for action in ("export_csv", "sign_out"):
        spool.append(
            AccessEntry(
                id=None, at=happened, username=marker, role="auditor", action=action
            ).to_json()
        )
    make_app(access_log_spool_dir=tmp_path / "access-log-spool")
    rows = _entries(seeded_db.admin, "username = %s", (marker,))
    assert [r["action"] for r in rows] == ["export_csv", "sign_out"]
    assert all(r["at"] == happened for r in rows)
    assert spool.records() == []


def test_a_sign_out_while_the_log_is_down_ends_the_session_once_it_is_back(make_app, own_database):
    urls = own_database
    app = make_app(database_url=urls.reader, access_log_url=urls.logger)
    client = sign_in(app.test_client(), "auditor")
    saved = client.get_cookie("audit_session").value
    token = csrf_token_from(client.get("/search").text)
    try:
        _logger_cut_off(urls.admin, urls.name, cut=True)
        response = client.post("/logout", data={"csrf_token": token}, follow_redirects=True)
        assert response.status_code == 200  # signing out always works
        assert "ends the session everywhere once it is back" in response.text
    finally:
        _logger_cut_off(urls.admin, urls.name, cut=False)
    thief = app.test_client()
    thief.set_cookie("audit_session", saved)
    assert thief.get("/search").status_code == 302  # to the sign-in form


# --- the spool on its own (no database) ---------------------------------------------------


def test_spool_delivers_in_order_and_keeps_what_failed(tmp_path):
    spool = Spool(tmp_path / "spool")
    for n in range(5):
        spool.append({"n": n})
    delivered = []

    def flaky(record):
        if record["n"] == 3:
            raise ConnectionError("down")
        delivered.append(record["n"])

    with pytest.raises(ConnectionError):
        spool.deliver(flaky)
    assert delivered == [0, 1, 2]
    assert [r["n"] for r in spool.records()] == [3, 4]  # nothing lost, nothing repeated
    spool.append({"n": 5})
    assert spool.deliver(lambda r: delivered.append(r["n"])) == 3
    assert delivered == [0, 1, 2, 3, 4, 5]
    assert spool.records() == [] and spool.pending_bytes() == 0
    assert spool.path.stat().st_size == 0


def test_spool_delivers_in_batches(tmp_path):
    spool = Spool(tmp_path / "spool")
    for n in range(7):
        spool.append({"n": n})
    seen: list[int] = []
    assert spool.deliver(lambda r: seen.append(r["n"]), batch=3) == 3
    assert spool.deliver(lambda r: seen.append(r["n"]), batch=3) == 3
    assert spool.deliver(lambda r: seen.append(r["n"]), batch=3) == 1
    assert seen == list(range(7))
    assert spool.pending_bytes() == 0


def test_spool_keeps_a_line_that_is_not_json_aside(tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.append({"n": 1})
    with spool.path.open("ab") as handle:
        handle.write(b"{torn\n")
    spool.append({"n": 2})
    seen: list[int] = []
    assert spool.deliver(lambda r: seen.append(r["n"])) == 2
    assert seen == [1, 2]
    assert spool.rejected_path.read_bytes() == b"{torn\n"


def _append_many(directory: str, worker: int) -> None:
    spool = Spool(directory)
    for n in range(200):
        spool.append({"worker": worker, "n": n, "pad": "x" * 500})


def test_spool_appends_from_many_processes_never_interleave(tmp_path):
    directory = str(tmp_path / "spool")
    processes = [
        multiprocessing.get_context("fork").Process(target=_append_many, args=(directory, w))
        for w in range(4)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    records = Spool(directory).records()
    assert len(records) == 800
    for worker in range(4):
        assert [r["n"] for r in records if r["worker"] == worker] == list(range(200))
    assert oct((tmp_path / "spool" / "spool.jsonl").stat().st_mode & 0o777) == "0o600"


def test_a_failed_log_statement_says_why_and_a_connection_the_server_ended_is_dropped(
    seeded_db, caplog
):
    """Every statement of the log leaves through one path (sent, then collected): a failure
    comes back as the server's message and SQLSTATE (a missing function: the reader is then
    asked about sign-outs), the connection stays usable after an error, and one the server
    ended mid-statement is dropped quietly, never handed out again."""
    sink = PostgresSink(seeded_db.logger)
    try:
        value, failure = sink._send(b"SELECT public.no_such_function($1::text)", ["a"]).collect()
        assert value is None
        assert failure.missing_function
        assert failure.problem == "function public.no_such_function(text) does not exist"
        assert sink.ask_revoked("0" * 64).collect() == ("f", None)  # still usable
        pid, _ = sink._send(b"SELECT pg_backend_pid()", []).collect()
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            _, ended = sink._send(b"SELECT pg_terminate_backend(pg_backend_pid())", []).collect()
            assert ended is not None and ended.sqlstate == "57P01"
            assert sink._send(b"SELECT pg_backend_pid()", []).collect()[0] != pid
        # Before, the pool's reset met the dead connection and logged an ERROR with a
        # traceback ("Exception during reset or similar").
        assert not [
            r
            for r in caplog.records
            if r.levelno >= logging.WARNING and r.name.startswith(("sqlalchemy", "dashboard"))
        ]
        assert sink.ask_revoked("0" * 64).collect() == ("f", None)
    finally:
        sink.dispose()


def test_a_direct_write_fails_with_the_problem_a_sent_one_gives(seeded_db):
    """write() is send-then-collect: a failure raises LogStatementFailed worded as the sent
    statement's problem (what the spool and a withheld page say), SQLSTATE kept."""
    sink = PostgresSink(seeded_db.logger)
    entry = AccessEntry(
        id=None, at=datetime.now(UTC), username="ann.auditor", role="auditor", action="x"
    )
    broken = dataclasses.replace(entry, entry_uuid="not-a-uuid")
    try:
        with pytest.raises(LogStatementFailed) as raised:
            sink.write(broken)
        assert raised.value.failure.sqlstate == "22P02"  # invalid_text_representation
        assert str(raised.value) == sink.send(broken).problem()
        assert str(raised.value).startswith("invalid input syntax for type uuid")
        sink.write(entry)  # the pool is fine after it
    finally:
        sink.dispose()


def _stored(admin_url: str, entry_uuid: str) -> dict:
    with psycopg.connect(libpq_url(admin_url)) as conn:
        conn.row_factory = psycopg.rows.dict_row
        row = conn.execute(
            "SELECT username, role, action, route, filters, aggregate_ids, row_count, "
            "export_digest, outcome, client_ip, reason, revokes_session, "
            "logged_at - at AS waited FROM audit_access_log WHERE entry_uuid = %s",
            (entry_uuid,),
        ).fetchone()
    assert row is not None, entry_uuid
    return row


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"aggregate_ids": (), "filters": None, "row_count": None, "client_ip": None},
        {"filters": {"note": "ünïcode ✓ 'quoted' \"double\" \\ back", "list": ["a", "b"]}},
        {"reason": "ticket 'X-1'; DROP TABLE audit_access_log; --", "export_digest": "ab" * 32},
    ],
)
def test_an_entry_sent_ahead_is_stored_as_one_written_directly(seeded_db, changes):
    """The write sent ahead (text values, ids as JSON) stores exactly what the direct write
    stores, field for field, ids in their order; the database stamps its time."""
    sink = PostgresSink(seeded_db.logger)
    ids = tuple(str(uuid.UUID(int=n)) for n in (9, 3, 7))
    base = AccessEntry(
        id=None,
        at=datetime(2020, 1, 1, tzinfo=UTC),
        username="ann.auditor",
        role="auditor",
        action="api_search",
        route="/api/events",
        filters={"type": "USER_CREATED"},
        aggregate_ids=ids,
        row_count=3,
        client_ip="192.0.2.5",
    )
    try:
        direct = dataclasses.replace(base, entry_uuid=str(uuid.uuid4()), **changes)
        sent = dataclasses.replace(direct, entry_uuid=str(uuid.uuid4()))
        sink.write(direct)
        assert sink.send(sent).problem() is None
        stored = _stored(seeded_db.admin, sent.entry_uuid)
        assert stored == _stored(seeded_db.admin, direct.entry_uuid)
        assert stored["waited"] < timedelta(minutes=1)  # not the entry's own (2020) time
        if "aggregate_ids" not in changes:
            assert [str(i) for i in stored["aggregate_ids"]] == list(ids)
    finally:
        sink.dispose()


def test_an_entry_sent_ahead_fails_closed(seeded_db):
    """A value libpq would cut at a NUL is refused, a log that does not answer in time is a
    problem (the statement timeout), and neither leaves a connection that cannot be used."""
    sink = PostgresSink(seeded_db.logger)
    entry = AccessEntry(
        id=None, at=datetime.now(UTC), username="ann.auditor", role="auditor", action="x"
    )
    try:
        with pytest.raises(ValueError, match="NUL"):
            sink.send(dataclasses.replace(entry, route="/search\x00hidden"))
        with psycopg.connect(libpq_url(seeded_db.admin)) as admin:
            admin.execute("LOCK TABLE audit_access_log IN ACCESS EXCLUSIVE MODE")
            problem = sink.send(entry).problem()
        assert problem is not None and "statement timeout" in problem
        # Worded as a direct write's problem: the message, not libpq's "ERROR:  " prefix.
        assert problem.startswith("canceling statement due to statement timeout"), problem
        assert sink.send(dataclasses.replace(entry, entry_uuid=str(uuid.uuid4()))).problem() is None
    finally:
        sink.dispose()
