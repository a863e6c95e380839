"""The export's ``kind`` column is derived once per record (a memoised LATERAL join), and
prints exactly what the former per-row scalar subquery printed.

The reference is the former expression, rebuilt here from the same pieces
(:func:`~dashboard.reports.csv_export.derived_kind` as a correlated scalar subquery in the
projection), so a change that alters one byte of any export fails this file.
"""

from __future__ import annotations

import io
import random
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import sqlalchemy as sa

from dashboard import db
from dashboard.config import Settings
from dashboard.db import libpq_url
from dashboard.filters import EventFilter
from dashboard.masking import NO_MASKING
from dashboard.reports import builder
from dashboard.reports.csv_export import (
    CsvStream,
    csv_select,
    derived_kind,
    export_connection,
    high_water_mark,
    neutralise_once,
)
from dashboard.reports.csv_format import CSV_COLUMNS, EncodedCsv
from dashboard.rules import DEFAULT_RULES

RECORDS = 1200
START = datetime(2024, 3, 1, tzinfo=UTC)


def _events(rng: random.Random) -> list[tuple]:
    """Records of every shape the kind column must handle, interleaved in time."""
    rows: list[tuple] = []
    for number in range(RECORDS):
        aggregate = uuid.UUID(int=rng.getrandbits(128), version=4)
        shape = number % 8
        moment = START + timedelta(seconds=rng.randrange(0, 50_000))
        declared: object = None
        types: list[str]
        if shape == 0:  # declared on every event (wins over the create type)
            declared, types = "WIDGET", ["USER_CREATED", "USER_UPDATED", "USER_UPDATED"]
        elif shape == 1:  # derived from the create event
            types = ["ORDER_CREATED", "ORDER_UPDATED", "ORDER_SHIPPED"]
        elif shape == 2:  # re-created as something else: the first create counts
            types = ["ACCOUNT_CREATED", "ACCOUNT_DELETED", "USER_CREATED", "USER_UPDATED"]
        elif shape == 3:  # no create event at all: no kind
            types = ["ITEM_UPDATED", "ITEM_UPDATED"]
        elif shape == 4:  # an empty or non-string aggregate_type is not a declaration
            declared = rng.choice(["", 7, ["X"], None])
            types = ["PLAN_CREATED", "PLAN_UPDATED"]
        elif shape == 5:  # stems that are empty or start with a formula trigger
            types = [rng.choice(["_CREATED", "=CALC_CREATED", "-X_CREATED"]), "NOTE_ADDED"]
        elif shape == 6:  # the update comes first in time, the create later
            types = ["THING_UPDATED", "THING_CREATED"]
        else:  # declared on some events only
            types = ["ROLE_CREATED", "ROLE_UPDATED", "ROLE_UPDATED"]
        for position, event_type in enumerate(types):
            metadata: dict[str, object] = {"actor": f"user{rng.randrange(20)}"}
            if declared is not None or shape == 4:
                metadata["aggregate_type"] = declared
            if shape == 7 and position == 1:
                metadata["aggregate_type"] = "ROLE_DECLARED"
            if shape == 4 and declared is None:
                del metadata["aggregate_type"]
            # Ties in time on purpose (every third step): the order falls back to seq.
            moment += timedelta(seconds=0 if position % 3 == 2 else rng.randrange(1, 9000))
            rows.append((aggregate, event_type, {"n": position}, metadata, moment))
    rows.sort(key=lambda row: row[4])
    return rows


@pytest.fixture(scope="module")
def kinds_db(make_database):
    urls = make_database("audit_kinds")
    rows = _events(random.Random(11))
    with psycopg.connect(libpq_url(urls.admin)) as conn:
        with conn.cursor().copy(
            "COPY audit_events (aggregate_id, event_type, payload, metadata, created_at) FROM STDIN"
        ) as copy:
            for aggregate, event_type, payload, metadata, moment in rows:
                copy.write_row(
                    (
                        aggregate,
                        event_type,
                        psycopg.types.json.Jsonb(payload),
                        psycopg.types.json.Jsonb(metadata),
                        moment,
                    )
                )
        conn.execute("ANALYZE audit_events")
    return urls, len(rows)


def _scope(url: str) -> tuple[builder.ReportScope, sa.Engine]:
    engine = db.make_engine(url, pool_size=1)
    with db.bounded(engine, 5000) as conn:
        table = db.inspect_table(conn)
    scope = builder.ReportScope(
        settings=Settings(database_url=url),
        table=table,
        rules=DEFAULT_RULES,
        masker=NO_MASKING,
        generated_by="test",
    )
    return scope, engine


def _per_row_reference(statement: sa.Select, table, create_types, mark) -> sa.Select:
    """The export as it was: the kind by a correlated scalar subquery on every row."""
    join = statement.get_final_froms()[0]
    inner = join.left  # the search's subquery "e"
    e = inner.c
    per_row = sa.func.coalesce(
        e.declared_kind,
        derived_kind(e.aggregate_id, table, create_types, mark).scalar_subquery(),
    )
    columns = [
        neutralise_once(per_row).label("kind") if column.name == "kind" else column
        for column in statement.selected_columns
    ]
    return sa.select(*columns).select_from(inner).order_by(*statement._order_by_clauses)


FILTERS = [
    EventFilter(),
    # Only updates: every kind comes from a create event outside the export.
    EventFilter(types=("ITEM_UPDATED", "ORDER_UPDATED", "ROLE_UPDATED", "THING_UPDATED")),
    EventFilter(actor="user3"),
    EventFilter(kind="ACCOUNT"),
]


@pytest.mark.parametrize("f", FILTERS, ids=["all", "updates", "actor", "kind"])
def test_kinds_once_per_record_match_the_per_row_subquery_byte_for_byte(kinds_db, f):
    urls, total = kinds_db
    scope, engine = _scope(urls.reader)
    try:
        with export_connection(engine, 30_000) as conn:
            # A mark below the newest events: creates after it must not name a kind.
            mark = high_water_mark(conn, scope.table, seq=total - 150)
            types = builder._types_for(conn, f, scope.rules)
            statement = csv_select(
                f, scope.table, mark, create_types=types.create, kind_create_types=types.kind
            )
            assert "LATERAL" in str(statement)
            assert "kind_source" not in str(statement.selected_columns)
            new = b"".join(CsvStream(conn, statement))
            old = b"".join(
                CsvStream(conn, _per_row_reference(statement, scope.table, types.create, mark))
            )
            # The Python writer (masked exports, the record CSV) uses the lateral join too.
            selection = builder._selection(f, scope, mark, types)
            written = b"".join(
                EncodedCsv(CSV_COLUMNS, builder._python_rows(conn, selection, scope, types, mark))
            )
    finally:
        engine.dispose()
    assert new == old
    assert written == old
    lines = new.count(b"\r\n")
    assert lines > (50 if f.actor or f.kind else 500)
    if f == EventFilter():
        kinds = {line.split(b",")[4] for line in io.BytesIO(new).read().split(b"\r\n")[1:-1]}
        # Every shape showed up: declared, derived, first of a re-creation, none, escaped.
        assert {b"WIDGET", b"ORDER", b"ACCOUNT", b"", b"'=CALC", b"'-X", b"_CREATED"} <= kinds
        assert {b"PLAN", b"THING", b"ROLE", b"ROLE_DECLARED"} <= kinds
        assert b"USER" not in kinds  # USER_CREATED only ever came second or was overruled


def test_the_pdf_listing_names_the_same_kinds(kinds_db):
    """The PDF listing's select joins the same lateral kinds as the CSV."""
    urls, _total = kinds_db
    scope, engine = _scope(urls.reader)
    try:
        with export_connection(engine, 30_000) as conn:
            mark = high_water_mark(conn, scope.table)
            types = builder._types_for(conn, None, scope.rules)
            selection = builder._selection(EventFilter(), scope, mark, types)
            kind, kinds = builder.kind_column(scope.table, types.create, mark)
            listing = builder._listing_select(selection, kind, kinds)
            listed = [(str(row.event_id), row.kind) for row in conn.execute(listing)]
            exported = b"".join(
                CsvStream(conn, csv_select(EventFilter(), scope.table, mark, **_types(types)))
            )
    finally:
        engine.dispose()
    rows = [line.split(",") for line in exported.decode().split("\r\n")[1:-1]]
    by_event = {row[2]: row[4] for row in rows if "," not in row[4]}
    assert len(listed) == len(rows)
    for event_id, listed_kind in listed:
        printed = by_event.get(event_id)
        if printed is not None and not printed.startswith("'"):
            assert (listed_kind or "") == printed


def _types(types) -> dict:
    return {"create_types": types.create, "kind_create_types": types.kind}
