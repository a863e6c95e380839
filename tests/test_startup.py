"""Start-up: settings, the refusal to serve with a writing role, and a database that is
missing, down or without ``seq`` — each answered with a message, never a traceback."""

from __future__ import annotations

import logging
import uuid

import psycopg
import pytest
from bs4 import BeautifulSoup
from click.testing import CliRunner

from dashboard import create_app
from dashboard.cli import main
from dashboard.config import ConfigError, Settings, load_settings
from dashboard.db import WritableRole, libpq_url

UNREACHABLE = "postgresql://audit_reader:x@127.0.0.1:1/nowhere"


def test_settings_are_typed_with_defaults():
    settings = load_settings(
        {"AUDIT_STATEMENT_TIMEOUT_MS": "1500", "AUDIT_ALLOW_WRITABLE_ROLE": "yes", "PATH": "/bin"}
    )
    assert settings.statement_timeout_ms == 1500
    assert settings.allow_writable_role is True
    assert settings.pdf_max_events == 100_000


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"AUDIT_STATEMENT_TIMEOUT_MS": "soon"}, "AUDIT_STATEMENT_TIMEOUT_MS"),
        ({"AUDIT_STATEMENT_TIMEOUT_MS": "-5"}, "AUDIT_STATEMENT_TIMEOUT_MS"),
        ({"AUDIT_ALLOW_WRITABLE_ROLE": "maybe"}, "AUDIT_ALLOW_WRITABLE_ROLE"),
        ({"AUDIT_DATABSE_URL": "postgresql://x"}, "AUDIT_DATABSE_URL"),
        ({"AUDIT_DISPLAY_TIMEZONE": "Mars/Olympus"}, "AUDIT_DISPLAY_TIMEZONE"),
    ],
)
def test_bad_settings_fail_naming_the_variable(environ, named):
    with pytest.raises(ConfigError, match=named):
        load_settings(environ)


def test_cli_reports_a_bad_setting_with_exit_code_2(monkeypatch):
    monkeypatch.setenv("AUDIT_FACET_TIMEOUT_MS", "fast")
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code == 2
    assert "AUDIT_FACET_TIMEOUT_MS" in result.output
    assert "Traceback" not in result.output


def test_refuses_to_serve_with_a_role_that_can_write(seeded_db, users_file):
    settings = Settings(database_url=seeded_db.admin, secret_key="k", users_file=users_file)
    with pytest.raises(WritableRole) as caught:
        create_app(settings)
    message = str(caught.value)
    for privilege in ("INSERT", "UPDATE", "DELETE", "TRUNCATE"):
        assert privilege in message
    assert "audit_reader" in message and "REVOKE" in message


def test_override_serves_a_writing_role_with_a_warning(seeded_db, users_file, caplog):
    settings = Settings(
        database_url=seeded_db.admin,
        secret_key="k",
        users_file=users_file,
        allow_writable_role=True,
    )
    with caplog.at_level(logging.WARNING):
        app = create_app(settings)
    assert "AUDIT_ALLOW_WRITABLE_ROLE" in caplog.text
    assert app.test_client().get("/healthz").status_code == 200


def test_healthz_is_public_and_says_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def _health_warnings(caplog) -> str:
    return " ".join(r.getMessage() for r in caplog.records if r.name == "dashboard.views.health")


def test_unreachable_database_is_503_with_a_message_in_the_log(make_app, caplog):
    """Anyone may ask /healthz, so it says only "unavailable"; the log says why."""
    app = make_app(database_url=UNREACHABLE, access_log_url=None)
    with caplog.at_level(logging.WARNING):
        response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.json == {"status": "unavailable"}
    assert "Cannot reach the database" in _health_warnings(caplog)
    assert "AUDIT_DATABASE_URL" in _health_warnings(caplog)


def test_wrong_password_is_503_naming_the_password_in_the_log(make_app, seeded_db, caplog):
    wrong = seeded_db.reader.replace("reader-pw-", "not-the-pw-")
    app = make_app(database_url=wrong)
    with caplog.at_level(logging.WARNING):
        response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.json == {"status": "unavailable"}  # no role, host or socket path
    assert "audit_reader" not in response.text
    assert "refused the password" in _health_warnings(caplog)
    assert "not-the-pw" not in caplog.text  # never echo secrets


def test_healthz_fails_when_the_access_log_cannot_be_written(make_app, caplog):
    """Without the access log every page answers 503, so the app is not healthy."""
    closed = "postgresql://audit_access_logger:x@127.0.0.1:1/nowhere"
    with caplog.at_level(logging.WARNING):
        response = make_app(access_log_url=closed).test_client().get("/healthz")
        assert response.status_code == 503
        assert response.json == {"status": "unavailable"}
        assert "access log" in _health_warnings(caplog)
        open_app = make_app(access_log_url=closed, access_log_fail_open=True)
        assert open_app.test_client().get("/healthz").status_code == 200


def test_cli_serve_refuses_an_unreachable_database(monkeypatch):
    monkeypatch.setenv("AUDIT_DATABASE_URL", UNREACHABLE)
    monkeypatch.setenv("AUDIT_SECRET_KEY", "k")
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code == 2
    assert "Cannot reach the database" in result.output
    assert "Traceback" not in result.output


def test_cli_serve_needs_a_secret_key(monkeypatch):
    monkeypatch.delenv("AUDIT_SECRET_KEY", raising=False)
    monkeypatch.setenv("AUDIT_DATABASE_URL", UNREACHABLE)
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code == 2
    assert "AUDIT_SECRET_KEY" in result.output


def test_cli_init_db_with_a_bad_url_exits_2():
    result = CliRunner().invoke(main, ["init-db", "--admin-url", UNREACHABLE])
    assert result.exit_code == 2
    assert "Cannot reach the database" in result.output


def test_cli_init_db_is_idempotent(make_database):
    urls = make_database("audit_cli_init")
    runner = CliRunner()
    for _ in range(2):
        result = runner.invoke(main, ["init-db", "--admin-url", urls.admin])
        assert result.exit_code == 0, result.output
        assert "Applied" in result.output


@pytest.fixture(scope="module")
def database_without_table(cluster):
    name = "audit_notable_" + uuid.uuid4().hex[:8]
    with psycopg.connect(libpq_url(cluster.admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield name
    cluster.drop_database(name)


def test_missing_table_is_503_telling_to_run_init_db(
    make_app, cluster, database_without_table, caplog
):
    from conftest import PASSWORDS

    url = cluster.url(database_without_table, "audit_reader", PASSWORDS["audit_reader"])
    app = make_app(database_url=url, access_log_url=None)
    with caplog.at_level(logging.WARNING):
        response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert "init-db" in _health_warnings(caplog)


@pytest.fixture(scope="module")
def database_without_seq(cluster):
    """The original write-up's table, as another team might have created it: no seq."""
    from conftest import PASSWORDS

    name = "audit_noseq_" + uuid.uuid4().hex[:8]
    with psycopg.connect(libpq_url(cluster.admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(libpq_url(cluster.url(name))) as conn:
        conn.execute(
            "CREATE TABLE audit_events (event_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),"
            " aggregate_id UUID NOT NULL, event_type VARCHAR(50) NOT NULL,"
            " payload JSONB NOT NULL, metadata JSONB,"
            " created_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        aggregate = uuid.uuid4()
        conn.execute(
            "INSERT INTO audit_events (aggregate_id, event_type, payload, metadata) VALUES "
            '(%s, \'USER_CREATED\', \'{"name": "Ann"}\', \'{"actor": "ops"}\'),'
            '(%s, \'USER_UPDATED\', \'{"name": "Anne"}\', \'{"actor": "ops"}\')',
            (aggregate, aggregate),
        )
        conn.execute("GRANT SELECT ON audit_events TO audit_reader")
    yield cluster.url(name, "audit_reader", PASSWORDS["audit_reader"])
    cluster.drop_database(name)


def test_table_without_seq_still_serves_with_a_notice(make_app, database_without_seq):
    app = make_app(database_url=database_without_seq, access_log_url=None)
    client = app.test_client()
    health = client.get("/healthz")
    assert health.status_code == 200
    from conftest import sign_in

    sign_in(client, "auditor")
    page = client.get("/", follow_redirects=True)
    assert page.status_code == 200
    notice = BeautifulSoup(page.text, "html.parser").find(class_="notice")
    assert notice is not None
    assert "has no seq column" in " ".join(notice.get_text().split())


def test_empty_table_says_no_events_yet(make_app, empty_db):
    from conftest import sign_in

    app = make_app(database_url=empty_db.reader, access_log_url=empty_db.logger)
    client = app.test_client()
    sign_in(client, "auditor")
    page = client.get("/", follow_redirects=True)
    assert page.status_code == 200
    assert "No events yet" in page.text


def test_every_setting_is_documented_and_defaults_agree():
    """The README's table and the Settings dataclass must not drift from SETTINGS."""
    from dashboard.config import SETTINGS
    from dashboard.paths import ROOT

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    defaults = Settings()
    for setting in SETTINGS:
        assert f"`{setting.env_name}`" in readme, f"{setting.env_name} missing from README"
        assert getattr(defaults, setting.name) == setting.default, setting.name


def test_a_database_whose_dates_print_otherwise_still_serves(make_database, make_app):
    """psycopg reads times only in ISO style; a database whose default DateStyle is
    another ('SQL, DMY', as some postgresql.conf set it) must not break every page that
    shows a time: the dashboard's sessions ask for ISO."""
    from conftest import sign_in

    from dashboard.seed import seed_events

    urls = make_database("audit_datestyle")
    seed_events(urls.admin, events=20, seed=5, method="copy")
    with psycopg.connect(libpq_url(urls.admin), autocommit=True) as conn:
        name = conn.execute("SELECT current_database()").fetchone()[0]
        conn.execute(f"ALTER DATABASE \"{name}\" SET DateStyle = 'SQL, DMY'")
        record = conn.execute("SELECT aggregate_id FROM audit_events LIMIT 1").fetchone()[0]
    client = sign_in(
        make_app(database_url=urls.reader, access_log_url=urls.logger).test_client(), "auditor"
    )
    assert client.get("/api/events?limit=5").status_code == 200
    page = client.get(f"/aggregates/{record}")
    assert page.status_code == 200, page.text[:300]
    assert client.get("/search").status_code == 200


def test_the_dashboards_sessions_never_compile_with_jit(make_database, make_app):
    """JIT compilation cost a month's CSV export 200-275 ms of its 510 ms on PostgreSQL 15
    (docs/scale-out.md): every session the dashboard opens (pages, exports, the CLI's)
    turns it off, whatever the server or the database says."""
    from dashboard import context
    from dashboard.db import make_engine
    from dashboard.reports.csv_export import export_connection

    urls = make_database("audit_jit")
    with psycopg.connect(libpq_url(urls.admin), autocommit=True) as conn:
        name = conn.execute("SELECT current_database()").fetchone()[0]
        conn.execute(f'ALTER DATABASE "{name}" SET jit = on')
        conn.execute(f'ALTER DATABASE "{name}" SET jit_above_cost = 0')
    with psycopg.connect(libpq_url(urls.reader)) as conn:  # the database's default took
        assert conn.execute("SHOW jit").fetchone()[0] == "on"

    def jit(conn) -> str:
        return conn.exec_driver_sql("SHOW jit").scalar()

    app = make_app(database_url=urls.reader, access_log_url=urls.logger)
    with app.test_request_context():
        assert jit(context.connection()) == "off"
        with export_connection(context.app_context().engine, 10_000) as conn:
            assert jit(conn) == "off"
    cli_engine = make_engine(urls.admin, pool_size=1)
    try:
        with cli_engine.connect() as conn:
            assert jit(conn) == "off"
    finally:
        cli_engine.dispose()


def test_cli_serve_freezes_the_start_up_heap_before_forking_workers(
    monkeypatch, seeded_db, users_file, tmp_path
):
    # Workers are forked with the app built; their collector should not walk it every
    # full collection (see cli.serve). Checked where gunicorn would start forking.
    import gc

    from gunicorn.app.base import BaseApplication

    frozen_at_run: list[int] = []
    monkeypatch.setattr(
        BaseApplication, "run", lambda self: frozen_at_run.append(gc.get_freeze_count())
    )
    for name, value in {
        "AUDIT_DATABASE_URL": seeded_db.reader,
        "AUDIT_ACCESS_LOG_URL": seeded_db.logger,
        "AUDIT_SECRET_KEY": "k" * 32,
        "AUDIT_USERS_FILE": str(users_file),
        "AUDIT_ACCESS_LOG_SPOOL_DIR": str(tmp_path / "spool"),
    }.items():
        monkeypatch.setenv(name, value)
    assert gc.get_freeze_count() == 0
    try:
        result = CliRunner().invoke(main, ["serve", "--port", "0"])
    finally:
        gc.unfreeze()  # the rest of the suite runs in this process
    assert result.exit_code == 0, result.output
    assert frozen_at_run and frozen_at_run[0] > 0
