"""The CSV export: exact bytes, OWASP CSV-injection neutralisation, reproducibility, and the
streaming contract (bounded memory, client disconnect, a database error mid-stream)."""

from __future__ import annotations

import csv
import hashlib
import http.client
import io
import json
import shutil
import socket
import subprocess
import threading
import time
import tracemalloc
from datetime import UTC, datetime

import psycopg
import pytest
import sqlalchemy as sa
from conftest import TEST_USERS, sign_in

from dashboard import db
from dashboard.access_log import EXTENSION_KEY
from dashboard.config import Settings
from dashboard.db import libpq_url
from dashboard.filters import EventFilter, parse_event_filter
from dashboard.masking import MASK, NO_MASKING, masker_for
from dashboard.reports import builder
from dashboard.reports.csv_export import CsvStream, csv_select, export_connection, high_water_mark
from dashboard.reports.csv_format import (
    CSV_COLUMNS,
    EncodedCsv,
    content_disposition,
    csv_field,
    csv_record,
    event_csv_cells,
    export_filename,
    neutralise_formula,
)
from dashboard.rules import DEFAULT_RULES
from dashboard.users import UserStore

# --- Pure format rules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("a=1", "a=1"),
        (" =1", " =1"),
        ("", ""),
        (None, None),
        ('{"a": 1}', '{"a": 1}'),
        # The escape itself is escaped, so stripping one leading ' restores any cell.
        ("'=1", "''=1"),
        ("'quoted", "''quoted"),
    ],
)
def test_neutralise_formula_follows_owasp(text, expected):
    assert neutralise_formula(text) == expected


def test_fields_are_quoted_as_rfc_4180_and_postgresql_copy():
    assert csv_field(None) == ""
    assert csv_field("") == '""'
    assert csv_field("plain") == "plain"
    assert csv_field("a,b") == '"a,b"'
    assert csv_field('say "hi"') == '"say ""hi"""'
    assert csv_field("two\nlines") == '"two\nlines"'
    assert csv_field("cr\rhere") == '"cr\rhere"'
    assert csv_record(["a", None, "", "x,y"]) == b'a,,"","x,y"\r\n'
    assert csv_record(["Zoë"]) == "Zoë\r\n".encode()


def test_python_cells_neutralise_and_print_jsonb_style():
    cells = event_csv_cells(
        created_at=datetime(2024, 5, 1, 10, tzinfo=UTC),
        seq=7,
        event_id="e",
        aggregate_id="a",
        kind="=K",
        event_type="T",
        payload=-5,
        metadata={"actor": "@me", "ip": None, "correlation_id": "c", "n": 1},
    )
    assert cells == [
        "2024-05-01T10:00:00+00:00",
        "7",
        "e",
        "a",
        "'=K",
        "T",
        "'@me",
        None,
        None,
        "c",
        "'-5",
        '{"actor": "@me", "ip": null, "correlation_id": "c", "n": 1}',
    ]


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2024, 5, 1, 10, tzinfo=UTC), "2024-05-01T10:00:00+00:00"),
        (datetime(2024, 5, 1, 10, 0, 0, 120000, tzinfo=UTC), "2024-05-01T10:00:00.12+00:00"),
        (datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC), "2024-05-01T10:00:00.123456+00:00"),
        (
            datetime.fromisoformat("2024-05-01T12:00:00.000001+02:00"),
            "2024-05-01T10:00:00.000001+00:00",
        ),
    ],
)
def test_times_are_utc_iso_8601_as_postgresql_prints_them(moment, text):
    from dashboard.reports.csv_format import format_created_at

    assert format_created_at(moment) == text


def test_the_projection_builds_for_a_table_without_seq():
    from sqlalchemy.dialects import postgresql

    from dashboard.reports.csv_export import HighWaterMark, compile_for_copy

    table = db.TableInfo(has_seq=False, role="r", writable_privileges=(), has_access_log=True)
    mark = HighWaterMark(None, datetime(2024, 5, 1, tzinfo=UTC))
    statement = csv_select(EventFilter(kind="USER"), table, mark, create_types=["USER_CREATED"])
    sql, _values = compile_for_copy(statement, postgresql.psycopg.dialect())
    assert "audit_events.seq" not in sql and "kind_source.seq" not in sql
    assert "ORDER BY e.created_at, e.event_id" in sql


def test_file_name_carries_filter_and_time():
    moment = datetime(2024, 11, 27, 17, 5, tzinfo=UTC)
    f = parse_event_filter(
        {"type": ["USER_CREATED", "USER_UPDATED"], "actor": "zoë@ex.com", "from": "2024-05-01"}
    )
    name = export_filename("audit-events", f.to_args(), moment, "csv")
    assert name == (
        "audit-events_type-USER_CREATED_type-USER_UPDATED_actor-zoë@ex.com_"
        "from-20240501T000000Z_20241127T170500Z.csv"
    )
    header = content_disposition(name)
    assert header.startswith('attachment; filename="audit-events_type-USER_CREATED')
    assert (
        "filename*=UTF-8''audit-events_type-USER_CREATED_type-USER_UPDATED_actor-zo%C3%AB" in header
    )
    assert export_filename("x", [], moment, "csv") == "x_all_20241127T170500Z.csv"
    long = export_filename("x", [("actor", "a" * 500)], moment, "csv")
    assert len(long) < 200


def test_encoded_csv_counts_rows_and_hashes_what_it_yields():
    closed = []

    def rows():
        try:
            for index in range(5000):
                yield [str(index), "=x"]
        finally:
            closed.append(True)

    stream = EncodedCsv(["n", "v"], rows(), chunk_bytes=1024)
    data = b"".join(stream)
    assert stream.complete and stream.rows == 5000
    assert stream.sha256 == hashlib.sha256(data).hexdigest()
    assert data.startswith(b"n,v\r\n0,=x\r\n")  # cells are neutralised by their producers
    early = EncodedCsv(["n"], rows(), chunk_bytes=16)
    iterator = iter(early)
    next(iterator)
    iterator.close()
    assert closed == [True, True] and not early.complete


# --- A small database with hand-made events --------------------------------------------------

A = "aaaaaaaa-0000-4000-8000-000000000001"
B = "bbbbbbbb-0000-4000-8000-000000000002"
C = "cccccccc-0000-4000-8000-000000000003"
FIXTURE_EVENTS = [
    (
        "00000000-0000-4000-8000-000000000001",
        A,
        "USER_CREATED",
        {"name": "Zoë Łukasz", "city": "東京", "note": 'said "hi", then left\nnext line'},
        {
            "actor": "=cmd|' /C calc'!A0",
            "ip": "10.0.0.1",
            "reason": "+1 approved",
            "request_id": "@SUM(1+1)",
        },
        "2024-05-01T10:00:00Z",
    ),
    (
        "00000000-0000-4000-8000-000000000002",
        A,
        "USER_UPDATED",
        {"city": None},
        {
            "actor": "-2+3",
            "aggregate_type": "USER",
            "correlation_id": "corr-1",
            "reason": "\tleading tab",
        },
        "2024-05-01T10:00:00Z",
    ),
    (
        "00000000-0000-4000-8000-000000000003",
        B,
        "ORDER_CREATED",
        -5,
        None,
        "2024-05-02T00:00:00.5Z",
    ),
    (
        "00000000-0000-4000-8000-000000000004",
        C,
        "NOTE",
        {"a": [1, "2.50", "x,y"]},
        {"actor": "", "reason": "\rCR start", "aggregate_type": ""},
        "2024-05-02T00:00:00.5Z",
    ),
]

# Written by hand from the rules in dashboard/reports/csv_format.py: jsonb prints keys by
# length then bytes; formula cells get an apostrophe; CR, LF, quotes and commas are quoted.
EXPECTED_CSV = (
    "created_at,seq,event_id,aggregate_id,kind,event_type,actor,ip,reason,request_id,payload,"
    "metadata\r\n"
    "2024-05-01T10:00:00+00:00,1,00000000-0000-4000-8000-000000000001,"
    "aaaaaaaa-0000-4000-8000-000000000001,USER,USER_CREATED,'=cmd|' /C calc'!A0,10.0.0.1,"
    "'+1 approved,'@SUM(1+1),"
    '"{""city"": ""東京"", ""name"": ""Zoë Łukasz"", ""note"": ""said \\""hi\\"", then left'
    '\\nnext line""}",'
    '"{""ip"": ""10.0.0.1"", ""actor"": ""=cmd|\' /C calc\'!A0"", ""reason"": ""+1 approved"", '
    '""request_id"": ""@SUM(1+1)""}"\r\n'
    "2024-05-01T10:00:00+00:00,2,00000000-0000-4000-8000-000000000002,"
    "aaaaaaaa-0000-4000-8000-000000000001,USER,USER_UPDATED,'-2+3,,'\tleading tab,corr-1,"
    '"{""city"": null}",'
    '"{""actor"": ""-2+3"", ""reason"": ""\\tleading tab"", ""aggregate_type"": ""USER"", '
    '""correlation_id"": ""corr-1""}"\r\n'
    "2024-05-02T00:00:00.5+00:00,3,00000000-0000-4000-8000-000000000003,"
    "bbbbbbbb-0000-4000-8000-000000000002,ORDER,ORDER_CREATED,,,,,'-5,\r\n"
    "2024-05-02T00:00:00.5+00:00,4,00000000-0000-4000-8000-000000000004,"
    'cccccccc-0000-4000-8000-000000000003,,NOTE,"",,"\'\rCR start",,'
    '"{""a"": [1, ""2.50"", ""x,y""]}",'
    '"{""actor"": """", ""reason"": ""\\rCR start"", ""aggregate_type"": """"}"\r\n'
).encode()


@pytest.fixture(scope="module")
def small_db(make_database):
    urls = make_database("audit_csv")
    with psycopg.connect(libpq_url(urls.admin)) as conn:
        for event_id, aggregate, event_type, payload, metadata, created_at in FIXTURE_EVENTS:
            conn.execute(
                "INSERT INTO audit_events (event_id, aggregate_id, event_type, payload, metadata,"
                " created_at) VALUES (%s, %s, %s, %s, %s, %s)",
                (
                    event_id,
                    aggregate,
                    event_type,
                    psycopg.types.json.Jsonb(payload),
                    psycopg.types.json.Jsonb(metadata) if metadata is not None else None,
                    created_at,
                ),
            )
    return urls


def _scope(url: str, masker=NO_MASKING) -> tuple[builder.ReportScope, object]:
    settings = Settings(database_url=url)
    engine = db.make_engine(url, pool_size=1)
    with db.bounded(engine, 5000) as conn:
        table = db.inspect_table(conn)
    scope = builder.ReportScope(
        settings=settings, table=table, rules=DEFAULT_RULES, masker=masker, generated_by="test"
    )
    return scope, engine


def test_exact_bytes_of_a_small_fixture(small_db):
    scope, engine = _scope(small_db.reader)
    try:
        with export_connection(engine, 10_000) as conn:
            mark = high_water_mark(conn, scope.table)
            stream = builder.events_csv(conn, scope, EventFilter(), mark)
            assert isinstance(stream, CsvStream)  # unmasked: COPY
            data = b"".join(stream)
    finally:
        engine.dispose()
    assert data == EXPECTED_CSV
    assert stream.rows == 4
    assert stream.sha256 == hashlib.sha256(EXPECTED_CSV).hexdigest()
    # The file parses back to the same cells (RFC 4180 reader).
    parsed = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    assert parsed[0] == list(CSV_COLUMNS)
    assert parsed[4][8] == "'\rCR start"
    assert json.loads(parsed[1][10])["note"] == 'said "hi", then left\nnext line'


def test_the_copy_statement_binds_every_value(small_db):
    """COPY cannot take server-side parameters: values travel separately to psycopg, which
    quotes them client-side; none is in the SQL text the builder produced."""
    from sqlalchemy.dialects import postgresql

    from dashboard.reports.csv_export import HighWaterMark, compile_for_copy

    table = db.TableInfo(has_seq=True, role="r", writable_privileges=(), has_access_log=True)
    hostile = "x'); DROP TABLE audit_events; --"
    f = EventFilter(
        actor=hostile, types=("A'B",), payload_path=("k",), payload_value={"v": hostile}
    )
    statement = csv_select(f, table, HighWaterMark(10, None), create_types=["USER_CREATED"])
    sql, values = compile_for_copy(statement, postgresql.psycopg.dialect())
    assert hostile not in sql and "A'B" not in sql
    assert hostile in values.values() and "A'B" in values.values()


def test_python_writer_matches_copy_byte_for_byte(seeded_db):
    """The masked/record exports write CSV in Python; unmasked, it must equal COPY's."""
    scope, engine = _scope(seeded_db.reader)
    try:
        with export_connection(engine, 30_000) as conn:
            mark = high_water_mark(conn, scope.table)
            copied = b"".join(builder.events_csv(conn, scope, EventFilter(), mark))
            types = builder._types_for(conn, None, scope.rules)
            selection = builder._selection(EventFilter(), scope, mark, types)
            written = b"".join(
                EncodedCsv(CSV_COLUMNS, builder._python_rows(conn, selection, scope, types, mark))
            )
    finally:
        engine.dispose()
    assert copied.count(b"\r\n") >= 3001
    assert written == copied


def test_masked_export_hides_personal_data(seeded_db):
    scope, engine = _scope(seeded_db.reader, masker_for(Settings()))
    try:
        with export_connection(engine, 30_000) as conn:
            mark = high_water_mark(conn, scope.table)
            data = b"".join(
                builder.events_csv(conn, scope, EventFilter(types=("USER_CREATED",)), mark)
            )
    finally:
        engine.dispose()
    rows = list(csv.DictReader(io.StringIO(data.decode(), newline="")))
    assert rows
    assert any(row["ip"] == MASK for row in rows)
    for row in rows:
        assert row["ip"] in ("", MASK)  # legacy events carry no metadata at all
        payload = json.loads(row["payload"])
        assert payload["email"] == MASK and payload["name"] == MASK
        assert "@" not in row["payload"]


# --- Over HTTP -------------------------------------------------------------------------------


def test_http_export_exact_bytes_and_headers(make_app, small_db, users_file):
    app = make_app(database_url=small_db.reader, access_log_url=small_db.logger)
    client = sign_in(app.test_client(), "auditor")
    response = client.get("/export/events.csv")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["X-Audit-High-Water-Mark"] == "4"
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="audit-events_all_')
    assert response.data == EXPECTED_CSV
    with psycopg.connect(libpq_url(small_db.admin)) as conn:
        entry = conn.execute(
            "SELECT action, row_count, export_digest, outcome, username FROM audit_access_log "
            "WHERE action = 'export_csv' ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert entry == (
        "export_csv",
        4,
        hashlib.sha256(EXPECTED_CSV).hexdigest(),
        "ok",
        TEST_USERS["auditor"][0],
    )


def test_http_export_filters_and_reproduces(login, seeded_db):
    client = login("compliance")
    url = "/export/events.csv?type=USER_CREATED&from=2025-06-01&to=2026-01-01"
    first = client.get(url)
    assert first.status_code == 200
    mark = first.headers["X-Audit-High-Water-Mark"]
    assert (
        "type-USER_CREATED_from-20250601T000000Z_to-20260101T000000Z_"
        in first.headers["Content-Disposition"]
    )
    rows = list(csv.DictReader(io.StringIO(first.text, newline="")))
    with psycopg.connect(libpq_url(seeded_db.admin)) as conn:
        expected = conn.execute(
            "SELECT count(*) FROM audit_events WHERE event_type = 'USER_CREATED' "
            "AND created_at >= '2025-06-01Z' AND created_at < '2026-01-01Z'"
        ).fetchone()[0]
    assert len(rows) == expected > 0
    assert {row["event_type"] for row in rows} == {"USER_CREATED"}
    assert [row["created_at"] for row in rows] == sorted(row["created_at"] for row in rows)
    kinds = client.get("/export/events.csv?kind=USER&from=2025-06-01&to=2026-01-01")
    kind_rows = list(csv.DictReader(io.StringIO(kinds.text, newline="")))
    assert kind_rows and {row["kind"] for row in kind_rows} == {"USER"}
    again = client.get(url + f"&through_seq={mark}&order=desc")
    assert again.data == first.data  # same filter and mark: same bytes, whatever the order
    early = client.get(url + "&through_seq=100")
    assert early.status_code == 200
    assert all(int(row["seq"]) <= 100 for row in csv.DictReader(io.StringIO(early.text)))


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("from=2025-02-01&to=2025-01-01", "'To' must be later"),
        ("from=yesterday", "is not a date"),
        ("colour=red", "Unknown filter"),
        ("through_seq=abc", "through_seq"),
        ("through_seq=99999999", "beyond the newest event"),
    ],
)
def test_http_export_bad_input_is_a_400(login, query, field):
    response = login("auditor").get(f"/export/events.csv?{query}")
    assert response.status_code == 400
    assert field in response.json["error"]


def test_empty_selection_is_a_header_only_file(login):
    response = login("auditor").get("/export/events.csv?from=2000-01-01&to=2000-01-02")
    assert response.status_code == 200
    assert response.data == (",".join(CSV_COLUMNS) + "\r\n").encode()


def test_export_needs_the_export_permission(login):
    assert login("support").get("/export/events.csv").status_code == 403


# --- 100,000 rows: memory, disconnect, failure mid-stream ------------------------------------

BIG_EVENTS = 100_000


@pytest.fixture(scope="module")
def big_db(make_database):
    """100,000 events of ~450 bytes each, written by generate_series (a second or two)."""
    urls = make_database("audit_big")
    with psycopg.connect(libpq_url(urls.admin)) as conn:
        conn.execute(
            """
            INSERT INTO audit_events (event_id, aggregate_id, event_type, payload, metadata,
                                      created_at)
            SELECT md5('e' || i)::uuid, md5('a' || (i %% 5000))::uuid,
                   CASE WHEN i <= 5000 THEN 'ITEM_CREATED' ELSE 'ITEM_UPDATED' END,
                   jsonb_build_object('n', i, 'name', 'Zoë ' || i, 'text', repeat('x', 300)),
                   jsonb_build_object('actor', 'user' || (i %% 50), 'aggregate_type', 'ITEM',
                                      'ip', '10.0.0.' || (i %% 250)),
                   timestamptz '2024-01-01 00:00:00Z' + i * interval '1 second'
            FROM generate_series(1, %s) AS i
            """,
            (BIG_EVENTS,),
        )
        conn.execute("ANALYZE audit_events")
    return urls


@pytest.fixture
def big_app(make_app, big_db):
    return make_app(database_url=big_db.reader, access_log_url=big_db.logger)


def test_100k_rows_stream_in_bounded_memory(big_app):
    client = sign_in(big_app.test_client(), "auditor")
    response = client.get("/export/events.csv", buffered=False)
    assert response.status_code == 200
    hasher = hashlib.sha256()
    total = rows = 0
    tracemalloc.start()
    try:
        for chunk in response.response:
            hasher.update(chunk)
            total += len(chunk)
            rows += chunk.count(b"\r\n")
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        response.close()
    assert rows == BIG_EVENTS + 1
    assert total > 40_000_000
    # The whole file is ~45 MB; Python never holds more than a few chunks of it.
    assert peak < 4_000_000, f"peak Python allocation {peak:,} bytes"


class _LiveServer:
    def __init__(self, app):
        from werkzeug.serving import make_server

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.thread.join(timeout=10)


@pytest.fixture
def token(users_file) -> str:
    return UserStore(users_file).issue_token(TEST_USERS["auditor"][0])


def _copy_backends(admin_url: str) -> list[int]:
    with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
        return [
            row[0]
            for row in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE usename = 'audit_reader' "
                "AND query LIKE 'COPY (%%' AND state = 'active'"
            )
        ]


def _wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _raw_request(port: int, path: str, token: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    return sock


def test_client_disconnect_frees_the_database_connection_at_once(big_app, big_db, token):
    with _LiveServer(big_app) as live:
        sock = _raw_request(live.port, "/export/events.csv", token)
        head = sock.recv(65536)
        assert b"200 OK" in head and b"chunked" in head.lower()
        assert _wait_for(lambda: _copy_backends(big_db.admin)), "the COPY never started"
        sock.close()  # the browser tab closed mid-download
        assert _wait_for(lambda: not _copy_backends(big_db.admin), timeout=5), (
            "the COPY still runs after the client left"
        )
    with psycopg.connect(libpq_url(big_db.admin)) as conn:
        outcome = conn.execute(
            "SELECT outcome, export_digest FROM audit_access_log WHERE action = 'export_csv' "
            "ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert outcome == ("failed", None)


def _terminate_copy_after_first_bytes(port: int, token: str, admin_url: str) -> bytes:
    sock = _raw_request(port, "/export/events.csv", token)
    received = bytearray(sock.recv(65536))
    assert _wait_for(lambda: _copy_backends(admin_url))
    with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
        for pid in _copy_backends(admin_url):
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        received += chunk
    sock.close()
    return bytes(received)


def test_database_error_mid_stream_aborts_the_download(big_app, big_db, token):
    """No terminating chunk: the client knows the file is incomplete; the log says failed."""
    with _LiveServer(big_app) as live:
        received = _terminate_copy_after_first_bytes(live.port, token, big_db.admin)
    assert b"200 OK" in received[:200]
    assert not received.endswith(b"0\r\n\r\n"), "the broken download looks complete"
    assert received.count(b"\r\n") < BIG_EVENTS
    with psycopg.connect(libpq_url(big_db.admin)) as conn:
        outcome = conn.execute(
            "SELECT outcome, row_count FROM audit_access_log WHERE action = 'export_csv' "
            "ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert outcome == ("failed", None)


def test_http_client_reports_the_broken_download(big_app, big_db, token):
    with _LiveServer(big_app) as live:
        connection = http.client.HTTPConnection("127.0.0.1", live.port, timeout=30)
        connection.request(
            "GET", "/export/events.csv", headers={"Authorization": f"Bearer {token}"}
        )
        response = connection.getresponse()
        assert response.status == 200
        response.read(1000)
        assert _wait_for(lambda: _copy_backends(big_db.admin))
        with psycopg.connect(libpq_url(big_db.admin), autocommit=True) as conn:
            for pid in _copy_backends(big_db.admin):
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(http.client.IncompleteRead):
            response.read()
        connection.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_downloads_the_export_and_sees_a_failure(big_app, big_db, token, tmp_path):
    with _LiveServer(big_app) as live:
        url = f"http://127.0.0.1:{live.port}/export/events.csv?from=2024-01-01&to=2024-01-01T02:00"
        done = subprocess.run(
            [
                "curl",
                "-sS",
                "-f",
                "-H",
                f"Authorization: Bearer {token}",
                "-o",
                str(tmp_path / "ok.csv"),
                url,
            ],
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "ok.csv").read_bytes().count(b"\r\n") == 7200  # 2 h of 1/s + header

        process = subprocess.Popen(
            [
                "curl",
                "-sS",
                "-f",
                "--limit-rate",
                "2M",
                "-H",
                f"Authorization: Bearer {token}",
                "-o",
                str(tmp_path / "broken.csv"),
                f"http://127.0.0.1:{live.port}/export/events.csv",
            ],
            stderr=subprocess.PIPE,
        )
        assert _wait_for(lambda: _copy_backends(big_db.admin))
        with psycopg.connect(libpq_url(big_db.admin), autocommit=True) as conn:
            for pid in _copy_backends(big_db.admin):
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        _out, err = process.communicate(timeout=60)
    assert process.returncode != 0, "curl thought the broken download was complete"
    # Two honest failures, depending on whether the first chunk was out before the server
    # died (which is a race): a 503 before any byte, or a transfer cut off. Never a 500.
    refused = b"(22)" in err and b"503" in err
    cut_off = b"transfer closed" in err or b"(18)" in err or b"(56)" in err
    assert refused or cut_off, err


def test_a_database_lost_early_is_an_honest_failure_never_a_500(big_app, big_db, token):
    """The COPY is killed as soon as it runs. Whether its first chunk was out by then is a
    race; either way the client can tell (a 503 with a message before any byte, or a
    transfer cut off), and the access log says the export started and failed."""
    with _LiveServer(big_app) as live:
        connection = http.client.HTTPConnection("127.0.0.1", live.port, timeout=60)
        killer = threading.Thread(
            target=lambda: _wait_for(lambda: _terminate_copies(big_db.admin), timeout=20)
        )
        killer.start()
        connection.request(
            "GET", "/export/events.csv", headers={"Authorization": f"Bearer {token}"}
        )
        response = connection.getresponse()
        if response.status == 200:
            with pytest.raises(http.client.IncompleteRead):
                response.read()
        else:
            body = response.read()
            assert response.status == 503, body[:300]
            assert b"database" in body.lower()
        killer.join()
        connection.close()
    with psycopg.connect(libpq_url(big_db.admin)) as conn:
        outcomes = conn.execute(
            "SELECT outcome FROM audit_access_log WHERE action = 'export_csv' "
            "ORDER BY id DESC LIMIT 2"
        ).fetchall()
    assert [o for (o,) in outcomes] == ["failed", "started"]


def test_an_export_cut_by_a_dying_database_is_logged_when_it_is_back(big_app, big_db, token):
    """The database holding the audit trail and the access log goes away mid-download: the
    download is cut, its outcome waits in the spool, and reaches the log once it is back."""
    logger = big_app.extensions[EXTENSION_KEY]
    with _LiveServer(big_app) as live:
        sock = _raw_request(live.port, "/export/events.csv", token)
        received = bytearray(sock.recv(65536))
        assert _wait_for(lambda: _copy_backends(big_db.admin)), "the COPY never started"
        admin = psycopg.connect(libpq_url(big_db.admin), autocommit=True)
        try:
            # No new sessions for anyone but the admin, and every dashboard session ends.
            admin.execute(f'REVOKE CONNECT ON DATABASE "{big_db.name}" FROM PUBLIC')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                "AND usename IN ('audit_reader', 'audit_access_logger')",
                (big_db.name,),
            )
            while chunk := sock.recv(1 << 20):
                received += chunk
            sock.close()
            assert not received.endswith(b"0\r\n\r\n"), "the cut download looks complete"
            assert [(e["action"], e["outcome"]) for e in logger.spool.records()] == [
                ("export_csv", "failed")
            ]
        finally:
            admin.execute(f'GRANT CONNECT ON DATABASE "{big_db.name}" TO PUBLIC')
            admin.close()
    client = big_app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/events?limit=1", headers=headers).status_code == 200
    assert logger.spool.records() == []
    with psycopg.connect(libpq_url(big_db.admin)) as conn:
        rows = conn.execute(
            "SELECT outcome, at < logged_at FROM audit_access_log WHERE action = 'export_csv' "
            "ORDER BY id DESC LIMIT 2"
        ).fetchall()
    assert rows == [("failed", True), ("started", False)]


def _terminate_copies(admin_url: str) -> bool:
    pids = _copy_backends(admin_url)
    with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    return bool(pids)


def test_copy_respects_the_export_timeout(big_db):
    """A statement past AUDIT_EXPORT_TIMEOUT_MS is cancelled; nothing stays running."""
    scope, engine = _scope(big_db.reader)
    try:
        with export_connection(engine, 1) as conn:
            with pytest.raises(sa.exc.DBAPIError) as failure:
                mark = high_water_mark(conn, scope.table)
                b"".join(builder.events_csv(conn, scope, EventFilter(), mark))
            assert db.is_query_canceled(failure.value)
    finally:
        engine.dispose()
    assert not _copy_backends(big_db.admin)


def test_a_copy_cancelled_mid_stream_raises_sqlalchemys_error(seeded_db):
    """The COPY itself (not only the statements before it) is cancelled by the export
    timeout, and the error is SQLAlchemy's, like every other statement's: callers catch
    ``sa.exc.DBAPIError``. A bare ``psycopg.errors.QueryCanceled`` escaped here before."""
    engine = db.make_engine(seeded_db.reader, pool_size=1)
    try:
        with export_connection(engine, 200) as conn:
            stream = CsvStream(conn, sa.select(sa.func.pg_sleep(5).label("slow")))
            with pytest.raises(sa.exc.DBAPIError) as failure:
                b"".join(stream)
            assert db.is_query_canceled(failure.value)
            assert not stream.complete
    finally:
        engine.dispose()
    assert not _copy_backends(seeded_db.admin)
