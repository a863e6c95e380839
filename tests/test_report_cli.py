"""``audit-dashboard report``: exit codes, messages, atomic output, progress, reproducibility."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys

import psycopg
import pytest
from click.testing import CliRunner
from pypdf import PdfReader

from dashboard.cli import main
from dashboard.db import libpq_url
from dashboard.reports import builder

PERIOD = ["--from", "2025-09-01", "--to", "2025-10-01"]


@pytest.fixture
def env(seeded_db, tmp_path) -> dict[str, str]:
    return {
        "AUDIT_DATABASE_URL": seeded_db.reader,
        "AUDIT_ACCESS_LOG_URL": seeded_db.logger,
        "AUDIT_USERS_FILE": str(tmp_path / "users.toml"),
    }


def _run(env, *args):
    return CliRunner().invoke(main, ["report", *args], env=env, catch_exceptions=False)


def _leftovers(directory) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if path.name.startswith("."))


def test_csv_report_is_written_and_matches_the_web_export(env, tmp_path, login):
    output = tmp_path / "september.csv"
    result = _run(
        env, *PERIOD, "--type", "USER_CREATED", "--format", "csv", "--output", str(output)
    )
    assert result.exit_code == 0, result.output
    data = output.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert f"CSV SHA-256 {digest}" in result.stdout
    mark = result.stdout.split("high-water mark seq ")[1].split(",")[0]
    web = login("auditor").get(
        f"/export/events.csv?type=USER_CREATED&from=2025-09-01&to=2025-10-01&through_seq={mark}"
    )
    assert web.data == data  # cron and the dashboard make the same file
    assert data.startswith(b"created_at,seq,event_id,")
    again = tmp_path / "again.csv"
    result = _run(
        env,
        *PERIOD,
        "--type",
        "USER_CREATED",
        "--through-seq",
        mark,
        "--format",
        "csv",
        "--output",
        str(again),
        "--quiet",
    )
    assert again.read_bytes() == data
    assert _leftovers(tmp_path) == []


def test_pdf_report_carries_the_csv_digest(env, tmp_path):
    csv_file, pdf_file = tmp_path / "r.csv", tmp_path / "r.pdf"
    assert _run(env, *PERIOD, "--format", "csv", "--output", str(csv_file)).exit_code == 0
    result = _run(env, *PERIOD, "--format", "pdf", "--output", str(pdf_file))
    assert result.exit_code == 0, result.output
    digest = hashlib.sha256(csv_file.read_bytes()).hexdigest()
    assert digest in result.stdout
    reader = PdfReader(io.BytesIO(pdf_file.read_bytes()))
    text = " ".join(page.extract_text() for page in reader.pages)
    assert digest in text and "(audit-dashboard report)" in text
    assert "listing:" in result.stderr  # progress on stderr, never on stdout
    assert "listing" not in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2025-10-01", "--to", "2025-09-01"], "--to: 'To' must be later"),
        (["--from", "last tuesday", "--to", "2025-09-01"], "--from: 'last tuesday' is not a date"),
        ([*PERIOD, "--through-seq", "999999999"], "--through-seq: through_seq 999999999 is beyond"),
        ([*PERIOD, "--tz", "Mars/Olympus"], "--tz:"),
        (  # every bad option at once, each named by its flag
            ["--from", "soon", "--to", "2025-09-01", "--tz", "Mars/Olympus"],
            "is not a known time zone; use an IANA name such as UTC, Europe/Berlin or "
            "America/New_York. --from: 'soon' is not a date",
        ),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(env, tmp_path, args, message):
    output = tmp_path / "out.csv"
    result = _run(env, *args, "--format", "csv", "--output", str(output))
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert not output.exists() and _leftovers(tmp_path) == []


def test_missing_database_url_is_explained(tmp_path):
    result = CliRunner().invoke(
        main,
        ["report", *PERIOD, "--format", "csv", "--output", str(tmp_path / "x.csv")],
        env={"AUDIT_DATABASE_URL": ""},
    )
    assert result.exit_code == 2 and "AUDIT_DATABASE_URL is not set" in result.stderr


def test_failure_mid_write_keeps_the_old_file_and_leaves_no_partial(env, tmp_path, monkeypatch):
    output = tmp_path / "nightly.csv"
    output.write_bytes(b"yesterday's complete report\n")
    real = builder.events_csv

    class Breaking:
        """The real stream, which loses its database after the first chunk."""

        def __init__(self, stream):
            self.stream, self.rows = stream, 0

        def __iter__(self):
            iterator = iter(self.stream)
            yield next(iterator)
            raise psycopg.OperationalError("server closed the connection unexpectedly")

    def breaking(conn, scope, f, mark):
        return Breaking(real(conn, scope, f, mark))

    monkeypatch.setattr(builder, "events_csv", breaking)
    result = _run(
        env,
        "--from",
        "2025-05-01",
        "--to",
        "2026-11-01",
        "--format",
        "csv",
        "--output",
        str(output),
    )
    assert result.exit_code == 1
    assert "The report failed and was not written" in result.stderr
    assert "server closed the connection unexpectedly" in result.stderr
    assert output.read_bytes() == b"yesterday's complete report\n"
    assert _leftovers(tmp_path) == []


def test_database_timeout_fails_cleanly(env, tmp_path, seeded_db):
    output = tmp_path / "slow.pdf"
    result = _run(
        {**env, "AUDIT_EXPORT_TIMEOUT_MS": "1"},
        "--from",
        "2025-05-01",
        "--to",
        "2026-11-01",
        "--format",
        "pdf",
        "--output",
        str(output),
    )
    assert result.exit_code == 1
    assert "time limit" in result.stderr
    assert not output.exists() and _leftovers(tmp_path) == []
    with psycopg.connect(libpq_url(seeded_db.admin)) as conn:
        outcome = conn.execute(
            "SELECT outcome FROM audit_access_log WHERE action = 'report_pdf' "
            "ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert outcome == ("failed",)


def test_empty_period_is_a_report(env, tmp_path):
    output = tmp_path / "empty.pdf"
    result = _run(
        env,
        "--from",
        "2001-01-01",
        "--to",
        "2001-01-02",
        "--format",
        "pdf",
        "--output",
        str(output),
    )
    assert result.exit_code == 0
    assert "0 events" in result.stdout
    text = PdfReader(io.BytesIO(output.read_bytes())).pages[0].extract_text()
    assert "Events" in text


def test_the_real_console_script_exit_codes(env, tmp_path):
    """Through a subprocess, as cron runs it."""
    script = os.path.join(os.path.dirname(sys.executable), "audit-dashboard")
    full_env = {**os.environ, **env}
    ok = subprocess.run(
        [script, "report", *PERIOD, "--format", "csv", "--output", str(tmp_path / "ok.csv")],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(
        [
            script,
            "report",
            "--from",
            "2025-10-01",
            "--to",
            "2025-09-01",
            "--format",
            "csv",
            "--output",
            str(tmp_path / "bad.csv"),
        ],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "--to:" in bad.stderr and not (tmp_path / "bad.csv").exists()


def test_every_search_filter_has_a_flag_and_the_report_says_how_to_rerun(env, tmp_path, login):
    """The PDF's "same CSV from the command line" uses the URL arguments as flags."""
    import shlex

    from dashboard.filters import parse_event_filter
    from dashboard.reports.builder import _reproduce_rows
    from dashboard.reports.csv_export import HighWaterMark

    f = parse_event_filter(
        {
            "from": "2025-05-01",
            "to": "2026-11-01",
            "type": ["USER_UPDATED"],
            "field": "address.city",
            "value": '"Berlin"',
            "tz": "Europe/Berlin",
        }
    )
    rows = dict(_reproduce_rows(f, HighWaterMark(3000, None), "x.csv"))
    command = shlex.split(rows["Same CSV from the command line"])
    assert command[:2] == ["audit-dashboard", "report"]
    output = tmp_path / "berlin.csv"
    flags = command[2 : command.index("--format")]
    result = _run(env, *flags, "--format", "csv", "--output", str(output))
    assert result.exit_code == 0, result.output
    web = login("auditor").get(rows["Same CSV from the web"])
    assert web.status_code == 200 and web.data == output.read_bytes()
    assert b"Berlin" in web.data
    unbounded = dict(_reproduce_rows(parse_event_filter({}), HighWaterMark(3000, None), "x.csv"))
    assert "Same CSV from the command line" not in unbounded  # the command needs a period
