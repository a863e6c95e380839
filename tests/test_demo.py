"""The README's first command: ``audit-dashboard demo`` serves a working dashboard on its own."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, timeout: float = 120, log=None) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            said = log.read_text(errors="replace")[-3000:] if log is not None else ""
            raise AssertionError(f"demo exited early with {process.returncode}:\n{said}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310  # localhost
                return response.status
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def signed_in_record_page(base: str, password: str) -> str:
    """Sign in as the demo auditor (CSRF form, cookie jar) and open one record's page."""
    import http.cookiejar
    import json
    import urllib.parse

    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    login = opener.open(base + "/login", timeout=10).read().decode()
    token = re.search(r'name="csrf_token" value="([^"]+)"', login)[1]
    form = urllib.parse.urlencode(
        {"username": "auditor", "password": password, "csrf_token": token}
    ).encode()
    opener.open(base + "/login", data=form, timeout=10).read()
    events = json.loads(opener.open(base + "/api/events?limit=1", timeout=30).read())
    aggregate_id = events["events"][0]["aggregate_id"]
    return opener.open(f"{base}/aggregates/{aggregate_id}", timeout=30).read().decode()


@pytest.fixture
def demo_env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIT_")}
    env["HOME"] = str(tmp_path)  # the default data dir must not touch the real user's
    return env


def test_demo_serves_seeds_and_stops_its_database(tmp_path, demo_env):
    port = free_port()
    data_dir = tmp_path / "pg"
    command = [
        sys.executable,
        "-m",
        "dashboard.cli",
        "demo",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--events",
        "2000",
    ]
    log_path = tmp_path / "demo.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=demo_env)
        try:
            assert wait_for(f"http://127.0.0.1:{port}/healthz", process, log=log_path) == 200
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=5) as page:
                assert page.status == 200
            password = re.search(r"user auditor\s+password (\S+)", log_path.read_text())[1]
            record_page = signed_in_record_page(f"http://127.0.0.1:{port}", password)
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)
    output = log_path.read_text()
    assert f"http://127.0.0.1:{port}/" in output
    for role in ("auditor", "compliance", "support"):
        assert re.search(rf"user {role}\s+password \S+", output), output
    assert "Seeding 2,000 demo events" in output
    assert "Sealed head #1: 2,000 new events" in output
    # The badges show out of the box: the demo sealed its data and configured the key.
    assert "sealed in head #1 at " in record_page
    assert "integrity-failed" not in record_page and "Integrity not configured" not in record_page
    assert not (Path(data_dir) / "postmaster.pid").exists(), "the embedded server was left running"
