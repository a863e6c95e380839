"""The CSV export through PostgreSQL ``COPY (SELECT ...) TO STDOUT``, streamed in constant
memory with a running SHA-256.

Why COPY: on this project's machines a Python loop over a million rows (fetch, json.dumps,
csv.writer) ran ten times slower than letting the server print the CSV. So the whole CSV
row — ISO timestamps, jsonb text, the ``kind`` of the record, RFC 4180 quoting and the OWASP
CSV-injection neutralisation — is one SQL projection (:func:`csv_select`) over the search's
own query (:func:`dashboard.queries.select_events`, so the export and the page never
disagree), and Python only moves bytes: CRLF line ends (RFC 4180), 64 KiB chunks, the
digest and the row count.

COPY cannot take server-side bind parameters. The statement is compiled by SQLAlchemy with
``%(name)s`` placeholders and the values are handed to psycopg's ``cursor.copy(statement,
params)``, which merges them client-side with its own literal quoting
(``PostgresClientQuery``, the same code as ``ClientCursor``): no value is ever formatted
into SQL by this module.

Reproducibility: each export pins a *high-water mark* — ``max(seq)`` in the export's own
REPEATABLE READ snapshot — and selects ``seq <= mark``. The same filter and mark give the
same rows in the same ``(created_at, seq)`` order, printed the same way, hence the same
bytes and digest (one caveat: a transaction still open when the mark was taken may later
commit rows below it; on a table without ``seq`` the mark is ``max(created_at)`` and the
same caveat is wider).

No Flask here: the web views and the ``report`` command both drive these functions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by
from sqlalchemy.engine import Connection, Dialect, Engine

from .. import db, queries
from ..filters import EventFilter
from .csv_format import CHUNK_BYTES, CSV_COLUMNS, ESCAPED_STARTS, FORMULA_ESCAPE

log = logging.getLogger(__name__)

__all__ = [
    "CHUNK_BYTES",
    "CsvStream",
    "HighWaterMark",
    "compile_for_copy",
    "csv_select",
    "export_connection",
    "high_water_mark",
    "open_export_connection",
]

IDLE_FLOOR_MS: Final = 60_000
EXPORT_RANDOM_PAGE_COST: Final = "1.1"

_c = queries.audit_events.c
_METADATA = _c["metadata"]


@dataclass(frozen=True)
class HighWaterMark:
    """The newest event an export may include: ``seq`` (when the table has it) and time."""

    seq: int | None
    created_at: datetime | None

    def describe(self) -> str:
        if self.seq is None and self.created_at is None:
            return "the table was empty"
        when = self.created_at.isoformat() if self.created_at else "unknown time"
        return f"seq {self.seq} ({when})" if self.seq is not None else f"created_at {when}"


def open_export_connection(engine: Engine, timeout_ms: int) -> Connection:
    """A dedicated connection for one export: REPEATABLE READ, read-only, UTF-8, and the
    export's own (transaction-local) time limits. The caller closes it.

    REPEATABLE READ gives every statement of a report the same snapshot, so the high-water
    mark, the digest, the summary and the listing describe the same rows. The connection is
    never the page's; a failed or abandoned export invalidates it (see :class:`CsvStream`)
    instead of returning a connection stuck in COPY to the pool.
    """
    conn = db.connect(engine)
    try:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        conn.begin()
        conn.execute(sa.text("SET TRANSACTION READ ONLY"))
        conn.execute(sa.text("SELECT set_config('client_encoding', 'UTF8', true)"))
        # created_at is printed by the server: pin the output style it depends on.
        conn.execute(sa.text("SELECT set_config('DateStyle', 'ISO, YMD', true)"))
        # The export reads its rows in (created_at, seq) order: along an index that order
        # is nearly the heap's (append-only, correlation ~1). With the default
        # random_page_cost (4, for spinning disks) PostgreSQL chose, for one month of a
        # 10M-event table, a parallel sequential scan of the whole table and a disk sort
        # (2.4 s) over the ordered index scan (0.4 s). 1.1 is the usual figure for SSDs.
        conn.execute(
            sa.text("SELECT set_config('random_page_cost', :cost, true)"),
            {"cost": EXPORT_RANDOM_PAGE_COST},
        )
        db.set_timeout(conn, timeout_ms)
        # The role's idle-in-transaction limit (60 s) could end a large PDF whose rendering
        # pauses between fetches; the export's own limit applies (never less than the role's).
        conn.execute(
            sa.text("SELECT set_config('idle_in_transaction_session_timeout', :ms, true)"),
            {"ms": str(max(int(timeout_ms), IDLE_FLOOR_MS))},
        )
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def export_connection(engine: Engine, timeout_ms: int) -> Iterator[Connection]:
    """:func:`open_export_connection` as a ``with`` block.

    When the block fails the connection is invalidated, not returned to the pool: it may be
    in the middle of a COPY, where a rollback would wait for data nobody reads.
    """
    conn = open_export_connection(engine, timeout_ms)
    try:
        yield conn
    except BaseException:
        conn.invalidate()
        raise
    finally:
        conn.close()


def high_water_mark(conn: Connection, table: db.TableInfo, *, seq: int | None = None):
    """The export's high-water mark in this snapshot; ``seq`` pins an earlier one.

    ``max(seq)`` reads one entry of the unique index audit_events_seq_key. Raises
    ValueError when the asked-for ``seq`` is beyond the newest event (rows could still
    appear below it, so the export would not be reproducible).
    """
    if table.has_seq:
        newest = conn.execute(sa.select(sa.func.max(_c.seq))).scalar()
        if seq is not None:
            if newest is None or seq > newest:
                raise ValueError(
                    f"through_seq {seq} is beyond the newest event "
                    f"({'none yet' if newest is None else newest}); use at most {newest}."
                )
            newest = seq
        if newest is None:
            return HighWaterMark(None, None)
        created = conn.execute(sa.select(_c.created_at).where(_c.seq == newest)).scalar()
        return HighWaterMark(newest, created)
    if seq is not None:
        raise ValueError(
            "this audit table has no seq column, so an export cannot be pinned to a seq; "
            "leave through_seq out"
        )
    # audit_events_time_idx: one probe.
    return HighWaterMark(None, conn.execute(sa.select(sa.func.max(_c.created_at))).scalar())


def within(mark: HighWaterMark, table: db.TableInfo) -> list[sa.ColumnElement[bool]]:
    """The condition "at or below the high-water mark" (nothing when the table is empty)."""
    if table.has_seq:
        return [_c.seq <= mark.seq] if mark.seq is not None else [sa.false()]
    if mark.created_at is None:
        return [sa.false()]
    return [_c.created_at <= mark.created_at]


def _meta_text(key: str) -> sa.ColumnElement[str]:
    # key is one of this module's constants, written into the SQL like queries.py does so
    # that it matches the expression indexes.
    return _METADATA.op("->>", return_type=sa.Text)(sa.literal_column(f"'{key}'"))


_TRIGGER_CODES: Final = tuple(ord(char) for char in ESCAPED_STARTS)


def neutralise(expression: sa.ColumnElement[Any]) -> sa.ColumnElement[str]:
    """OWASP CSV injection in SQL: prefix ``'`` when the text starts with = + - @ tab CR
    or ``'`` (:data:`.csv_format.ESCAPED_STARTS`).

    ``ascii()`` reads only the first character; the expression appears twice, so this is
    for cheap ones (a column, a ``->>`` of the inner query). See :func:`neutralise_once`.
    """
    starts_with_trigger = sa.func.ascii(expression).in_(
        [sa.literal_column(str(code)) for code in _TRIGGER_CODES]
    )
    escaped = sa.literal_column(f"'{FORMULA_ESCAPE}{FORMULA_ESCAPE}'", sa.Text) + expression
    return sa.case((starts_with_trigger, escaped), else_=expression)


def neutralise_once(expression: sa.ColumnElement[Any]) -> sa.ColumnElement[str]:
    """The same rule with one ``regexp_replace``, which evaluates an expensive argument
    (the ``kind`` subquery) once."""
    triggers = "".join(
        {"\t": "\\\\t", "\r": "\\\\r", "-": "-", "'": "''"}.get(char, char)
        for char in ESCAPED_STARTS
    )
    # A character class with "-" last, so it is literal.
    pattern = "E'^([" + triggers.replace("-", "") + "-])'"
    return sa.func.regexp_replace(
        expression,
        sa.literal_column(pattern),
        sa.literal_column(f"'{FORMULA_ESCAPE}{FORMULA_ESCAPE}\\1'"),
    )


def jsonb_cell(expression: sa.ColumnElement[Any]) -> sa.ColumnElement[str]:
    """A jsonb document as text, neutralised. jsonb prints an object as ``{``, an array as
    ``[``, a string as ``"``, and ``true``/``false``/``null`` as letters: only a negative
    number can start with a trigger (``-``), so only numbers pay for the check."""
    text = sa.cast(expression, sa.Text)
    negative = sa.func.regexp_replace(
        text, sa.literal_column("'^-'"), sa.literal_column(f"'{FORMULA_ESCAPE}{FORMULA_ESCAPE}-'")
    )
    is_number = sa.func.jsonb_typeof(expression) == sa.literal_column("'number'")
    return sa.case((is_number, negative), else_=text)


def declared_kind() -> sa.ColumnElement[str]:
    """``metadata.aggregate_type`` when it is a non-empty string (else NULL): the page's
    definition (:func:`dashboard.queries.declared_kind`), one home for both."""
    return queries.declared_kind(_METADATA)


def _kind_source(table: db.TableInfo, mark: HighWaterMark, name: str):
    """``audit_events`` under another name, its conditions "at or below the mark", and its
    (created_at, seq) order: the order of audit_events_aggregate_idx."""
    source = queries.audit_events.alias(name)
    bound = (
        [source.c.seq <= mark.seq]
        if table.has_seq and mark.seq is not None
        else [source.c.created_at <= mark.created_at]
        if mark.created_at is not None
        else []
    )
    order = (source.c.created_at, source.c.seq if table.has_seq else source.c.event_id)
    return source, bound, order


def _stem(event_type: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
    """``USER_CREATED`` -> ``USER``; a type with nothing before its last ``_WORD`` is kept."""
    stem = sa.func.nullif(
        sa.func.regexp_replace(event_type, sa.literal_column("'_[^_]*$'"), ""), ""
    )
    return sa.func.coalesce(stem, event_type)


def derived_kind(
    aggregate_id: sa.ColumnElement[Any],
    table: db.TableInfo,
    create_types: Sequence[str],
    mark: HighWaterMark,
) -> sa.Select:
    """The record's first create event type without its last ``_WORD`` (``USER_CREATED``
    -> ``USER``), as a one-row select of ``derived_kind``, bounded by the high-water mark
    so that the column is reproducible too.

    The definition, and the fallback of :func:`record_kinds`. Its plan depends on the
    planner's guess of how many of a record's events are creates: at 10M events it became
    a bitmap scan of the whole record and a sort, instead of the first entries of
    audit_events_aggregate_idx."""
    first, bound, order = _kind_source(table, mark, "kind_source")
    return (
        sa.select(_stem(first.c.event_type).label("derived_kind"))
        .where(
            first.c.aggregate_id == aggregate_id,
            first.c.event_type.in_(list(create_types)),
            *bound,
        )
        .order_by(*order)
        .limit(1)
    )


def record_kinds(
    aggregate_id: sa.ColumnElement[Any],
    undeclared: sa.ColumnElement[bool],
    table: db.TableInfo,
    create_types: Sequence[str],
    mark: HighWaterMark,
) -> sa.LateralFromClause:
    """The derived kind of each row's record (:func:`derived_kind`), as a LATERAL
    subquery to LEFT JOIN ON true; no row when ``undeclared`` is false.

    Why not a scalar subquery in the projection: that probe ran once per exported *row*,
    and at 10M events its plan read the whole record each time (0.29 ms a row). Here:

    * the lateral probe is a parameterised path keyed on ``(aggregate_id, undeclared)``,
      which PostgreSQL (14+) caches with a Memoize node when records repeat in the export,
      so a record is probed about once however many of its rows are exported;
    * rows whose kind is declared never probe (``undeclared`` is a one-time filter);
    * the probe reads the record's *first* event (one entry of audit_events_aggregate_idx,
      a plan that cannot turn into a scan of the record: no filter, LIMIT 1 in index
      order). When that event is a create, it is the first create; only a record whose
      history does not start with a create pays for :func:`derived_kind`'s search.

    ``undeclared`` gates the probe from outside it (:func:`queries.gated_lateral`): on a
    partitioned table, inside it, every exported row stepped through one branch per
    partition (twice the export's time at 39 partitions; tests/test_partitions.py).
    """
    if table.distributed:
        return _record_kinds_on_citus(aggregate_id, undeclared, table, create_types, mark)
    first, bound, order = _kind_source(table, mark, "first_event")
    is_create = first.c.event_type.in_(list(create_types))
    searched = derived_kind(first.c.aggregate_id, table, create_types, mark).scalar_subquery()
    kind = sa.case((is_create, _stem(first.c.event_type)), else_=searched)
    probe = (
        sa.select(kind.label("derived_kind"))
        .where(first.c.aggregate_id == aggregate_id, *bound)
        .order_by(*order)
        .limit(1)
    )
    return queries.gated_lateral(probe, first, undeclared, "record_kind")


def _record_kinds_on_citus(
    aggregate_id: sa.ColumnElement[Any],
    undeclared: sa.ColumnElement[bool],
    table: db.TableInfo,
    create_types: Sequence[str],
    mark: HighWaterMark,
) -> sa.LateralFromClause:
    """:func:`record_kinds` for a Citus table: the same kind (the stem of the record's first
    create event, within the mark), as an aggregate over the record instead of ``ORDER BY
    ... LIMIT 1``. Citus pushes a LATERAL subquery down to the shards only when it is joined
    on the distribution column and has no LIMIT; this one is (aggregate_id), so each worker
    runs it beside the rows it exports. It reads the record's create events rather than one
    index entry: the price of the cluster's rule. Always one row (NULL when ``undeclared``
    is false: the declared kind wins anyway)."""
    source, bound, order = _kind_source(table, mark, "first_create")
    creates = sa.func.array_agg(aggregate_order_by(source.c.event_type, *order)).filter(
        source.c.event_type.in_(list(create_types))
    )
    first_create = sa.type_coerce(creates, ARRAY(sa.Text))[1]
    return (
        sa.select(_stem(first_create).label("derived_kind"))
        .where(undeclared, source.c.aggregate_id == aggregate_id, *bound)
        .lateral("record_kind")
    )


def kind_column(
    table: db.TableInfo, create_types: Sequence[str], mark: HighWaterMark
) -> tuple[sa.ColumnElement[str], sa.LateralFromClause | None]:
    """The ``kind`` of each row of a plain ``audit_events`` select: the declared kind, else
    the derived one; and the lateral subquery the select must LEFT JOIN (ON true) for it,
    or None when there are no create types (see :func:`with_kind_column`)."""
    if not create_types:
        return declared_kind().label("kind"), None
    declared = declared_kind()
    kinds = record_kinds(_c.aggregate_id, declared.is_(None), table, create_types, mark)
    return sa.func.coalesce(declared, kinds.c.derived_kind).label("kind"), kinds


def with_kind_column(
    statement: sa.Select,
    table: db.TableInfo,
    create_types: Sequence[str],
    mark: HighWaterMark,
) -> sa.Select:
    """``statement`` (a select from ``audit_events``) with the ``kind`` column added."""
    kind, kinds = kind_column(table, create_types, mark)
    if kinds is not None:
        statement = statement.outerjoin(kinds, sa.true())
    return statement.add_columns(kind)


def csv_select(
    f: EventFilter,
    table: db.TableInfo,
    mark: HighWaterMark,
    *,
    create_types: Sequence[str] = (),
    kind_create_types: Sequence[str] | None = None,
) -> sa.Select:
    """The search's own statement for ``f``, oldest first and bounded by ``mark``, with the
    CSV columns (:data:`.csv_format.CSV_COLUMNS`) as its projection.

    Exports are always oldest first, whatever order the page showed, so a file reads
    forward in time and its digest does not depend on how the page was sorted.
    ``create_types`` are every create event type (for the ``kind`` column);
    ``kind_create_types`` those of ``f.kind`` (see :func:`dashboard.queries.select_events`).

    Shape, for speed at a million rows: the inner query (the search's, ``OFFSET 0`` so the
    planner keeps it a subquery) reads each ``metadata ->> key`` once; the outer one only
    formats and neutralises, and its ORDER BY is satisfied by the inner one's index order.
    ``created_at`` is printed by PostgreSQL (``DateStyle`` ISO is set on the export
    connection) with ``T`` and ``+00:00``: cheaper than ``to_char`` by a second a million.
    """
    ascending = dataclasses.replace(f, order="asc")
    seq = _c.seq if table.has_seq else sa.cast(sa.null(), sa.BigInteger).label("seq")
    inner = (
        queries.select_events(ascending, table, create_types=kind_create_types)
        .where(*within(mark, table))
        .with_only_columns(
            _c.created_at,
            seq,
            _c.event_id,
            _c.aggregate_id,
            _c.event_type,
            _c.payload,
            _METADATA,
            _meta_text("actor").label("actor"),
            _meta_text("ip").label("ip"),
            _meta_text("reason").label("reason"),
            sa.func.coalesce(_meta_text("request_id"), _meta_text("correlation_id")).label(
                "request_id"
            ),
            declared_kind().label("declared_kind"),
            declared_kind().is_(None).label("undeclared"),
            maintain_column_froms=False,
        )
        # (Not on Citus: a subquery with OFFSET cannot be pushed down to the shards.)
        .offset(None if table.distributed else 0)
        .subquery("e")
    )
    e = inner.c
    source: sa.FromClause = inner
    kind: sa.ColumnElement[Any] = e.declared_kind
    if create_types:
        kinds = record_kinds(e.aggregate_id, e.undeclared, table, create_types, mark)
        source = inner.outerjoin(kinds, sa.true())
        kind = sa.func.coalesce(e.declared_kind, kinds.c.derived_kind)
    utc = sa.cast(sa.func.timezone(sa.literal_column("'UTC'"), e.created_at), sa.Text)
    created = sa.func.replace(utc, sa.literal_column("' '"), sa.literal_column("'T'"))
    columns = [
        (created + sa.literal_column("'+00:00'", sa.Text)).label("created_at"),
        e.seq.label("seq"),
        e.event_id.label("event_id"),
        e.aggregate_id.label("aggregate_id"),
        neutralise_once(kind).label("kind"),
        neutralise(e.event_type).label("event_type"),
        neutralise(e.actor).label("actor"),
        neutralise(e.ip).label("ip"),
        neutralise(e.reason).label("reason"),
        neutralise(e.request_id).label("request_id"),
        jsonb_cell(e.payload).label("payload"),
        jsonb_cell(e["metadata"]).label("metadata"),
    ]
    assert [column.name for column in columns] == list(CSV_COLUMNS)
    order = (e.created_at, e.seq if table.has_seq else e.event_id)
    return sa.select(*columns).select_from(source).order_by(*order)


def compile_for_copy(statement: sa.Select, dialect: Dialect) -> tuple[str, dict[str, Any]]:
    """``(SQL with %(name)s placeholders, values)`` for ``cursor.copy(sql, values)``.

    ``render_postcompile`` expands IN lists into one placeholder per value; each value goes
    through its SQLAlchemy type's bind processor (JSONB documents become psycopg ``Jsonb``),
    exactly as SQLAlchemy would before executing.
    """
    compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    values = compiled.construct_params()
    processed: dict[str, Any] = {}
    for name, value in values.items():
        bind = compiled.binds.get(name)
        if bind is None:  # one value of an expanded IN list: name_1 -> name
            bind = compiled.binds.get(name.rpartition("_")[0])
        processor = (
            bind.type.dialect_impl(dialect).bind_processor(dialect) if bind is not None else None
        )
        if processor is None and isinstance(value, dict | list):
            raise TypeError(f"no bind processor for parameter {name!r}")
        processed[name] = processor(value) if processor is not None and value is not None else value
    return compiled.string, processed


@contextmanager
def _as_sqlalchemy_errors(statement: str) -> Iterator[None]:
    """Raise psycopg's errors as SQLAlchemy's, as every other statement of an export does.

    The COPY runs on the driver connection, below SQLAlchemy, so without this a timeout or
    a dropped connection mid-COPY escaped as a bare ``psycopg`` error that the callers'
    ``except sa.exc.DBAPIError`` (the HTTP error pages, the ``report`` command) never saw.
    """
    try:
        yield
    except psycopg.Error as exc:
        raise sa.exc.DBAPIError.instance(statement, None, exc, psycopg.Error) from exc


class CsvStream:
    """Iterate over it for the CSV's bytes, in chunks of about :data:`CHUNK_BYTES`.

    After the last chunk, ``rows`` is the number of data rows and ``sha256`` the hex digest
    of every byte yielded. The COPY runs on ``conn`` (from :func:`export_connection`).

    Failure handling is the point of this class:

    - a database error mid-stream is raised out of the iteration, *before* the rest of the
      file: the caller (HTTP response, CLI) must treat the output as incomplete;
    - when the consumer stops early (``close()`` on the generator: the HTTP client went
      away), the COPY is cancelled on the server and the connection invalidated at once,
      rather than draining a million rows into nowhere or pooling a broken connection.
    """

    def __init__(self, conn: Connection, statement: sa.Select, chunk_bytes: int = CHUNK_BYTES):
        self.conn = conn
        self.statement = statement
        self.chunk_bytes = chunk_bytes
        self.rows = 0
        self.sha256: str | None = None
        self.complete = False

    def __iter__(self) -> Iterator[bytes]:
        sql, values = compile_for_copy(self.statement, self.conn.dialect)
        copy_sql = f"COPY ({sql}) TO STDOUT WITH (FORMAT csv, HEADER true)"
        raw = self.conn.connection.driver_connection
        hasher = hashlib.sha256()
        buffer = bytearray()
        append = buffer.append
        rows = -1  # the first message is the header row
        finished = False
        try:
            with (
                _as_sqlalchemy_errors(copy_sql),
                raw.cursor() as cursor,
                cursor.copy(copy_sql, values) as copy,
            ):
                # PostgreSQL sends one CopyData message per row, ending in LF: make it CRLF
                # (RFC 4180). LFs inside quoted fields are data and stay as they are.
                for data in copy:
                    buffer += data
                    buffer[-1] = 13  # CR where the LF was ...
                    append(10)  # ... then the LF
                    rows += 1
                    if len(buffer) >= self.chunk_bytes:
                        chunk = bytes(buffer)
                        buffer.clear()
                        hasher.update(chunk)
                        self.rows = rows  # so far, for progress
                        yield chunk
            if buffer:
                chunk = bytes(buffer)
                hasher.update(chunk)
                yield chunk
            finished = True
        finally:
            if not finished:
                self._abandon()
        self.rows = max(rows, 0)
        self.sha256 = hasher.hexdigest()
        self.complete = True

    def _abandon(self) -> None:
        """Stop the server's work now and make sure this connection is never reused."""
        if self.conn.closed or self.conn.invalidated:
            return  # the owner already discarded it (a failed report)
        raw = self.conn.connection.driver_connection
        try:
            cancel = getattr(raw, "cancel_safe", None) or raw.cancel
            cancel()
        except Exception as exc:  # best effort: the connection is discarded just below
            log.debug("Cancelling an abandoned COPY failed: %s", exc)
        self.conn.invalidate()
