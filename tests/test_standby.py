"""The dashboard reading from a real hot standby, the access log on the primary.

One primary and one streaming replica (``tests/replication.py``) for the module: pages and
exports work on the replica, every page says how fresh its data is, reports record the
replica's position, a replica far behind or not streaming is flagged, a writable role is
refused there too, a replica given as the access log is refused at start, and a sign-out
takes effect at once even while the replica lags.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import secrets
import subprocess
import sys
import time

import pytest
from bs4 import BeautifulSoup
from click.testing import CliRunner
from conftest import PASSWORDS, TEST_USERS, csrf_token_from
from pypdf import PdfReader
from replication import ReplicationPair

from dashboard import db
from dashboard.config import ConfigError
from dashboard.schema import apply_schema

DATABASE = "audit"
EVENTS = 400


@pytest.fixture(scope="module")
def pair():
    pair = ReplicationPair()
    try:
        pair.start()
        from dashboard.seed import REFERENCE_UNTIL, seed_events

        pair.primary.execute(f'CREATE DATABASE "{DATABASE}"')
        admin = pair.primary.url(DATABASE)
        apply_schema(admin, passwords=PASSWORDS)
        seed_events(admin, events=EVENTS, seed=7, until=REFERENCE_UNTIL)
        pair.wait_for_replay()
        yield pair
    finally:
        pair.stop()


def _reader(pair) -> str:
    return pair.replica.url(DATABASE, "audit_reader", PASSWORDS["audit_reader"])


def _logger(node) -> str:
    return node.url(DATABASE, "audit_access_logger", PASSWORDS["audit_access_logger"])


@pytest.fixture
def replica_app(pair, users_file, tmp_path):
    """Factory: an app reading from the replica and logging on the primary."""
    from dashboard import create_app
    from dashboard.config import Settings

    apps = []
    secret = "test-secret-" + secrets.token_hex(8)

    def make(**overrides):
        values = {
            "database_url": _reader(pair),
            "access_log_url": _logger(pair.primary),
            "secret_key": secret,
            "users_file": users_file,
            "login_rate_limit": "1000 per minute",
            "access_log_spool_dir": tmp_path / f"spool-{len(apps)}",
        }
        values.update(overrides)
        app = create_app(Settings(**values))
        app.config["TESTING"] = True
        apps.append(app)
        return app

    yield make
    for made in apps:
        made.extensions["audit"].engine.dispose()
        made.extensions["audit_access_log"].dispose()


def _signed_in(app, role: str = "auditor"):
    client = app.test_client()
    name, password = TEST_USERS[role]
    page = client.get("/login")
    response = client.post(
        "/login",
        data={"username": name, "password": password, "csrf_token": csrf_token_from(page.text)},
    )
    assert response.status_code == 303, response.text
    return client


def _freshness(html: str):
    return BeautifulSoup(html, "html.parser").find("p", class_="freshness")


def _an_aggregate(pair) -> str:
    return str(
        pair.primary.execute("SELECT aggregate_id FROM audit_events LIMIT 1", DATABASE)[0][0]
    )


def _write_on_primary(pair) -> None:
    pair.primary.execute(
        "SELECT insert_audit_event(gen_random_uuid(), 'USER_CREATED', "
        """'{"name": "late"}'::jsonb, '{"actor": "standby-test"}'::jsonb)""",
        DATABASE,
    )


def test_pages_and_exports_work_on_a_replica_and_say_how_fresh(pair, replica_app):
    client = _signed_in(replica_app())
    aggregate_id = _an_aggregate(pair)
    for url in ("/search?from=2025-01-01", f"/aggregates/{aggregate_id}"):
        response = client.get(url)
        assert response.status_code == 200, url
        freshness = _freshness(response.text)
        assert freshness is not None, url
        assert re.search(r"Data as of \d\d:\d\d:\d\d, \d+ s behind the primary", freshness.text)
        assert freshness["role"] == "status"
    api = client.get(f"/api/aggregates/{aggregate_id}/state")
    assert api.status_code == 200 and api.json["exists"] in (True, False)
    export = client.get("/export/events.csv?from=2025-01-01")
    assert export.status_code == 200
    rows = list(csv.reader(io.StringIO(export.data.decode("utf-8"))))
    ((expected,),) = pair.primary.execute(
        "SELECT count(*) FROM audit_events WHERE created_at >= '2025-01-01'", DATABASE
    )
    assert len(rows) - 1 == expected > 0
    position = export.headers["X-Audit-Replica-Position"]
    assert position.startswith("hot standby, replayed up to WAL ")
    # The access log went to the primary: the export's entries are there.
    outcomes = pair.primary.execute(
        "SELECT outcome, row_count FROM audit_access_log WHERE route = '/export/events.csv' "
        "ORDER BY id",
        DATABASE,
    )
    assert [tuple(row) for row in outcomes][-2:] == [("started", None), ("ok", expected)]


def test_pdf_report_records_the_replica_position(replica_app):
    client = _signed_in(replica_app())
    response = client.get("/reports/events.pdf?from=2025-05-01&to=2025-07-01")
    assert response.status_code == 200
    text = re.sub(r"\s+", " ", PdfReader(io.BytesIO(response.data)).pages[0].extract_text())
    assert "Read from" in text
    assert re.search(r"hot standby, replayed up to WAL [0-9A-F]+/[0-9A-F]+", text)
    assert "behind the primary" in text


def test_a_primary_says_nothing_about_freshness(make_app, login):
    response = login("auditor").get("/search?from=2025-01-01")
    assert response.status_code == 200
    assert _freshness(response.text) is None


def test_a_replica_far_behind_is_flagged(pair, replica_app):
    pair.pause_replay()
    try:
        _write_on_primary(pair)  # received, not replayed: the replica falls behind
        time.sleep(1.2)
        client = _signed_in(replica_app(replica_max_lag_s=1))
        response = client.get("/search?from=2025-01-01")
        assert response.status_code == 200
        freshness = _freshness(response.text)
        assert freshness is not None and freshness["role"] == "alert"
        assert "behind the primary — more than the 1 s allowed" in freshness.text
        assert "AUDIT_REPLICA_MAX_LAG_S" in freshness.text
    finally:
        pair.resume_replay()
        pair.wait_for_replay()


def test_a_standby_that_is_not_streaming_is_flagged(pair, replica_app, caplog):
    pair.stop_streaming()
    try:
        with caplog.at_level(logging.WARNING, logger="dashboard.context"):
            app = replica_app()
        assert any("not streaming" in r.getMessage() for r in caplog.records)  # at start
        client = _signed_in(app)
        response = client.get("/search?from=2025-01-01")
        assert response.status_code == 200
        freshness = _freshness(response.text)
        assert freshness is not None and freshness["role"] == "alert"
        assert "not streaming from the primary" in freshness.text
        assert "primary_conninfo" in freshness.text
    finally:
        pair.resume_streaming()
        pair.wait_for_replay()


def test_a_writable_role_is_refused_on_a_replica_too(pair, replica_app):
    # The replica is read-only for everyone, but the role's privileges are what decide: a
    # role that could write on the primary is refused on its replica.
    pair.primary.execute(
        "DO $$ BEGIN CREATE ROLE standby_rw LOGIN PASSWORD 'rw-pw'; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    )
    pair.primary.execute("GRANT SELECT, INSERT ON audit_events TO standby_rw", DATABASE)
    pair.wait_for_replay()
    with pytest.raises(db.WritableRole, match="INSERT"):
        replica_app(database_url=pair.replica.url(DATABASE, "standby_rw", "rw-pw"))


def test_a_replica_as_the_access_log_is_refused_at_start(pair, replica_app):
    with pytest.raises(ConfigError) as refused:  # AccessLogOnStandby
        replica_app(access_log_url=_logger(pair.replica))
    message = str(refused.value)
    assert "hot standby" in message and "AUDIT_ACCESS_LOG_URL" in message
    assert "primary" in message


def test_the_report_command_refuses_a_replica_as_the_access_log(pair, tmp_path):
    from dashboard.cli import main

    result = CliRunner().invoke(
        main,
        [
            *("report", "--from", "2025-05-01", "--to", "2025-06-01", "--format", "csv"),
            *("--output", str(tmp_path / "r.csv")),
        ],
        env={
            "AUDIT_DATABASE_URL": _reader(pair),
            "AUDIT_ACCESS_LOG_URL": _logger(pair.replica),
            "AUDIT_ACCESS_LOG_SPOOL_DIR": str(tmp_path / "spool"),
        },
    )
    assert result.exit_code == 2, result.output
    assert "hot standby" in result.output and "AUDIT_ACCESS_LOG_URL" in result.output
    assert not (tmp_path / "r.csv").exists()


def test_serve_refuses_a_replica_as_the_access_log(pair, users_file, tmp_path):
    env = {
        **os.environ,
        "AUDIT_DATABASE_URL": _reader(pair),
        "AUDIT_ACCESS_LOG_URL": _logger(pair.replica),
        "AUDIT_SECRET_KEY": "test-secret-" + secrets.token_hex(8),
        "AUDIT_USERS_FILE": str(users_file),
        "AUDIT_ACCESS_LOG_SPOOL_DIR": str(tmp_path / "spool"),
    }
    # Refused before gunicorn starts; were it not, the timeout would end it (and the test).
    done = subprocess.run(
        [sys.executable, "-m", "dashboard.cli", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "points at a hot standby" in done.stderr
    assert "AUDIT_ACCESS_LOG_URL to audit_access_logger on the primary" in done.stderr


def test_the_report_command_reads_the_replica_and_logs_on_the_primary(pair, tmp_path):
    from dashboard.cli import main

    output = tmp_path / "r.pdf"
    result = CliRunner().invoke(
        main,
        [
            *("report", "--from", "2025-05-01", "--to", "2025-07-01", "--format", "pdf"),
            *("--output", str(output), "--quiet"),
        ],
        env={
            "AUDIT_DATABASE_URL": _reader(pair),
            "AUDIT_ACCESS_LOG_URL": _logger(pair.primary),
            "AUDIT_ACCESS_LOG_SPOOL_DIR": str(tmp_path / "spool"),
        },
    )
    assert result.exit_code == 0, result.output
    text = re.sub(r"\s+", " ", PdfReader(output).pages[0].extract_text())
    assert re.search(r"Read from hot standby, replayed up to WAL [0-9A-F]+/[0-9A-F]+", text)
    logged = pair.primary.execute(
        "SELECT outcome FROM audit_access_log WHERE action = 'report_pdf'", DATABASE
    )
    assert [row[0] for row in logged] == ["ok"]


def test_sign_out_ends_the_session_everywhere_while_the_replica_lags(pair, replica_app):
    first, second = replica_app(), replica_app()
    client = _signed_in(first)
    other = second.test_client()
    other.set_cookie("audit_session", client.get_cookie("audit_session").value)
    assert other.get("/search?from=2025-01-01").status_code == 200
    pair.pause_replay()
    try:
        page = client.get("/search?from=2025-01-01")
        response = client.post("/logout", data={"csrf_token": csrf_token_from(page.text)})
        assert response.status_code == 303
        # The sign-out is on the primary, not yet on the replica: still refused everywhere.
        assert other.get("/search?from=2025-01-01").status_code == 302
    finally:
        pair.resume_replay()
        pair.wait_for_replay()
