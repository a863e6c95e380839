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
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)
    output = log_path.read_text()
    assert f"http://127.0.0.1:{port}/" in output
    for role in ("auditor", "compliance", "support"):
        assert re.search(rf"user {role}\s+password \S+", output), output
    assert "Seeding 2,000 demo events" in output
    assert not (Path(data_dir) / "postmaster.pid").exists(), "the embedded server was left running"
