"""The real production server: ``audit-dashboard serve`` (gunicorn, 2 workers x 4 threads).

What only a forking server shows: connections opened in the master must not be shared by
the workers it forks (after a start, a restart or a respawned worker), and gunicorn itself
must trust forwarded headers only from AUDIT_TRUSTED_PROXIES.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from conftest import TEST_USERS

from dashboard.db import libpq_url
from dashboard.users import UserStore

BURST = 24  # concurrent requests, three per worker thread
BURSTS_PER_START = 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``audit-dashboard serve`` in a subprocess; stopped (SIGTERM, then SIGKILL) by stop()."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.env = env
        self.log_path = log_path
        self.port = _free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> Server:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dashboard.cli",
                "serve",
                "--port",
                str(self.port),
                "--workers",
                "2",
                "--threads",
                "4",
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text(errors="replace")
            if len(self.workers()) == 2 and _get(self.port, "/healthz")[0] == 200:
                return self
            time.sleep(0.1)
        raise AssertionError("the server did not start:\n" + self.log_path.read_text())

    def workers(self) -> list[int]:
        assert self.process is not None
        pid = self.process.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except FileNotFoundError:
            return []
        return [int(child) for child in children]

    def kill_a_worker(self) -> None:
        before = self.workers()
        os.kill(before[0], signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            now = self.workers()
            if len(now) == 2 and before[0] not in now and _get(self.port, "/healthz")[0] == 200:
                return
            time.sleep(0.1)
        raise AssertionError("the killed worker was not replaced")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def _get(port: int, path: str, headers: dict[str, str] | None = None):
    """``(status, headers)`` of a GET on the local server; status -1 when it is not there."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        response.read()
        return response.status, response.headers
    except OSError:
        return -1, None
    finally:
        connection.close()


@pytest.fixture
def server_env(seeded_db, users_file) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIT_")}
    env.update(
        AUDIT_DATABASE_URL=seeded_db.reader,
        AUDIT_ACCESS_LOG_URL=seeded_db.logger,
        AUDIT_SECRET_KEY="serve-test-" + uuid.uuid4().hex,
        AUDIT_USERS_FILE=str(users_file),
    )
    return env


@pytest.fixture
def server(server_env, tmp_path):
    made = Server(server_env, tmp_path / "server.log")
    try:
        yield made
    finally:
        made.stop()


def _logged(admin_url: str, marker: str) -> int:
    with psycopg.connect(libpq_url(admin_url)) as conn:
        return conn.execute(
            "SELECT count(*) FROM audit_access_log WHERE filters->>'actor' = %s", (marker,)
        ).fetchone()[0]


def test_workers_never_share_connections(server, seeded_db, users_file):
    """Bursts right after a start, a respawned worker and a restart: no 5xx, every request
    in the access log. Before each worker opened its own connections, the pooled ones the
    master opened at start-up were shared by both workers and the burst broke."""
    token = UserStore(users_file).issue_token(TEST_USERS["auditor"][0])
    headers = {"Authorization": f"Bearer {token}"}
    marker = "burst-" + uuid.uuid4().hex
    sent = 0
    failures: list[tuple[str, int]] = []

    def burst(stage: str) -> None:
        nonlocal sent
        path = f"/api/events?limit=5&actor={marker}&order=desc"
        with ThreadPoolExecutor(BURST) as pool:
            answers = list(pool.map(lambda _: _get(server.port, path, headers), range(BURST)))
        statuses = [status for status, _ in answers]
        sent += len(statuses)
        failures.extend((stage, status) for status in statuses if status != 200)

    for stage in ("start", "respawn", "restart"):
        if stage == "start":
            server.start()
        elif stage == "respawn":
            server.kill_a_worker()
        else:
            server.stop()
            server.start()
        for _ in range(BURSTS_PER_START):
            burst(stage)
    server.stop()
    log = server.log_path.read_text(errors="replace")
    assert failures == [], f"failed requests {failures}; server log:\n{log[-4000:]}"
    assert _logged(seeded_db.admin, marker) == sent, log[-4000:]


def test_gunicorn_trusts_forwarded_headers_only_from_trusted_proxies(server):
    """Without AUDIT_TRUSTED_PROXIES nobody may say the request came over HTTPS: gunicorn's
    own default trusted 127.0.0.1, so a local client got HSTS and Secure cookies."""
    server.start()
    status, headers = _get(server.port, "/login", {"X-Forwarded-Proto": "https"})
    assert status == 200
    assert "Strict-Transport-Security" not in headers
    cookies = headers.get_all("Set-Cookie") or []
    assert not any("Secure" in cookie for cookie in cookies), cookies


def test_gunicorn_trusts_forwarded_headers_from_a_trusted_proxy(server_env, tmp_path):
    server_env["AUDIT_TRUSTED_PROXIES"] = "127.0.0.0/8"
    server = Server(server_env, tmp_path / "server.log")
    try:
        server.start()
        status, headers = _get(server.port, "/login", {"X-Forwarded-Proto": "https"})
        assert status == 200
        assert headers["Strict-Transport-Security"]
    finally:
        server.stop()
