"""The leaf bytes recomputed from the real CSV export alone equal those from the database
row, for hostile cells: formula triggers, a leading apostrophe, numbers a double cannot
hold, deep nesting, SQL NULL versus JSON null metadata."""

from __future__ import annotations

import csv
import io
import json

import psycopg
import pytest

from dashboard import db
from dashboard.config import Settings
from dashboard.db import libpq_url
from dashboard.filters import EventFilter
from dashboard.integrity.leaf import leaf_bytes, leaf_bytes_from_csv
from dashboard.masking import NO_MASKING
from dashboard.reports import builder
from dashboard.reports.csv_export import CsvStream, export_connection, high_water_mark
from dashboard.rules import DEFAULT_RULES

AGGREGATE = "dddddddd-0000-4000-8000-000000000001"
HOSTILE = [
    ("'=HYPERLINK(1)", '{"a": 1}', '{"actor": "ann"}'),
    ("=cmd", "-5", None),
    ("'", '"\'quoted"', "null"),
    ("@x", '{"big": 12345678901234567890123, "fine": 0.10000000000000000000001}', None),
    ("NOTE", "[" * 300 + "]" * 300, '{"actor": {"email": "a@example.com"}}'),
    ("NOTE", '{"e": 1.0E+2, "s": "line\\nbreak, \\"quoted\\""}', '{"reason": "+1"}'),
]


@pytest.fixture(scope="module")
def hostile_db(make_database):
    urls = make_database("audit_leaf")
    with psycopg.connect(libpq_url(urls.admin)) as conn:
        for event_type, payload, metadata in HOSTILE:
            conn.execute(
                "INSERT INTO audit_events (aggregate_id, event_type, payload, metadata)"
                " VALUES (%s, %s, %s::jsonb, %s::jsonb)",
                (AGGREGATE, event_type, payload, metadata),
            )
    return urls


def test_the_csv_alone_gives_each_rows_leaf(hostile_db):
    with psycopg.connect(libpq_url(hostile_db.admin)) as conn:
        expected = {
            str(row[6]): leaf_bytes(
                event_id=row[0],
                aggregate_id=row[1],
                event_type=row[2],
                payload=row[3],
                metadata=row[4],
                created_at=row[5],
                seq=row[6],
            )
            for row in conn.execute(
                "SELECT event_id, aggregate_id, event_type, payload::text, metadata::text,"
                " created_at, seq FROM audit_events"
            )
        }
    engine = db.make_engine(hostile_db.reader, pool_size=1)
    try:
        with db.bounded(engine, 5000) as conn:
            table = db.inspect_table(conn)
        scope = builder.ReportScope(
            settings=Settings(database_url=hostile_db.reader),
            table=table,
            rules=DEFAULT_RULES,
            masker=NO_MASKING,
            generated_by="test",
        )
        with export_connection(engine, 10_000) as conn:
            mark = high_water_mark(conn, scope.table)
            stream = builder.events_csv(conn, scope, EventFilter(), mark)
            assert isinstance(stream, CsvStream)  # the COPY path, as compliance gets it
            data = b"".join(stream)
    finally:
        engine.dispose()
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
    assert len(rows) == len(HOSTILE) == len(expected)
    for row in rows:
        assert leaf_bytes_from_csv(row) == expected[row["seq"]], row["event_type"]
    forms = [json.loads(expected[row["seq"]]) for row in rows]
    assert sum("payload_text" in form for form in forms) == 2  # big numbers, 300 deep
    assert sum("metadata" not in form and "metadata_text" not in form for form in forms) == 2
