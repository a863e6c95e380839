"""Query builders over ``audit_events``: plain functions returning SQLAlchemy ``Select``s.

One builder serves the HTML page, the JSON API and the exports, so the three never
disagree. Built for a table of tens of millions of rows (checked with EXPLAIN on
10,000,000 events; see ``benchmarks/bench_pages.py``):

- every value is a bound parameter; column names, sort keys and the JSON keys the
  dashboard reads (``actor``, ``request_id``...) are constants of this module, written
  into the SQL text so that it matches the expression indexes of ``sql/006_indexes.sql``
  (a JSON key sent as a parameter would not match them under a generic plan);
- pages use keyset pagination on ``(created_at, seq)`` (``(created_at, event_id)`` on a
  table without ``seq``) and :func:`fetch_page` reads ``limit + 1`` rows to learn whether
  there is a next page: no ``OFFSET``, no ``COUNT(*)`` over an unbounded range;
- statements run under the request's transaction-local ``statement_timeout``;
  :func:`count_facets` gives the optional facet counts their own, shorter limit.

Each builder names the index its plan relies on. No Flask here; functions that execute
take a SQLAlchemy ``Connection``.
"""

from __future__ import annotations

import functools
import itertools
import re
import uuid
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

import psycopg
import sqlalchemy as sa
from psycopg.types.json import Jsonb, set_json_loads
from sqlalchemy.dialects.postgresql import ARRAY, BYTEA, JSONB, UUID, aggregate_order_by
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import Connection, Row
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.util import ClauseAdapter

from . import db
from .events import EVENT_FIELDS, Event
from .filters import MAX_LIMIT, Cursor, EventFilter, FilterError, IdPrefix
from .jsonlimits import load_json_bytes
from .rules import DEFAULT_RULES, Rule, action_for, derive_kind
from .shape import ORIGIN

__all__ = [
    "COUNT_MAX_ROWS",
    "FACET_MAX_ROWS",
    "FACET_SIZE",
    "ID_PREFIX_CANDIDATES",
    "REPLAY_METADATA_KEYS",
    "EventCount",
    "Facet",
    "Facets",
    "Page",
    "SearchShape",
    "all_create_types",
    "audit_events",
    "count_events",
    "count_search_shape",
    "create_types_for_kind",
    "declared_kind",
    "estimated_rows",
    "event_columns",
    "explain",
    "fetch_page",
    "filter_conditions",
    "first_events",
    "gated_lateral",
    "indexes_in_plan",
    "iter_events",
    "kinds_from_types",
    "known_kinds",
    "not_counted",
    "probes_first_events_apart",
    "select_actor_facet",
    "select_aggregate_events",
    "select_aggregate_summary",
    "select_aggregates_events",
    "select_declared_kinds",
    "select_event",
    "select_event_count",
    "select_event_types",
    "select_events",
    "select_events_by_id",
    "select_kind_aggregates",
    "select_request_events",
    "select_search_shape",
    "select_type_facet",
    "table_facts",
    "with_first_event",
]

FACET_SIZE: Final = 20
# The search page's counts (all facets and the chart in one statement) are exact only when
# the planner expects at most this many matching rows, else read from a sample of about as
# many rows. Measured at 1M events on 2 busy cores: 17,000 rows (7 days) in 65-120 ms,
# 75,000 rows (30 days) in 350-1,000 ms, against the default 800 ms facet limit.
FACET_MAX_ROWS: Final = 50_000
MAX_EVENT_TYPES: Final = 500
MAX_KINDS: Final = 200
STREAM_BATCH: Final = 2000

_metadata = sa.MetaData()

audit_events = sa.Table(
    "audit_events",
    _metadata,
    sa.Column("event_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("seq", sa.BigInteger),
    sa.Column("aggregate_id", UUID(as_uuid=True), nullable=False),
    sa.Column("event_type", sa.String(50), nullable=False),
    sa.Column("payload", JSONB, nullable=False),
    sa.Column("metadata", JSONB),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
"""The event table. ``seq`` is declared but only selected when the table has it."""

_c = audit_events.c
_METADATA = _c["metadata"]


def _metadata_text(key: str) -> sa.ColumnElement[str]:
    """``metadata ->> 'key'`` with the key in the SQL text, as the expression indexes are.

    ``key`` is always one of this module's constants, never user input.
    """
    return _METADATA.op("->>", return_type=sa.Text)(sa.literal_column(f"'{key}'"))


# audit_events_actor_time_idx is on ((metadata ->> 'actor'), created_at, seq).
_actor: Final = _metadata_text("actor")
# audit_events_request_idx is on this exact expression (and partial on it being non-null).
_request_id: Final = sa.func.coalesce(
    _metadata_text("request_id"), _metadata_text("correlation_id")
)
# audit_events_aggregate_type_idx is on ((metadata ->> 'aggregate_type'), aggregate_id)
# WHERE metadata ? 'aggregate_type'; queries repeat the predicate so the index qualifies.
_aggregate_type: Final = _metadata_text("aggregate_type")
_has_aggregate_type: Final = _METADATA.op("?", return_type=sa.Boolean)(
    sa.literal_column("'aggregate_type'")
)
# The predicate of the partial index audit_events_undeclared_kind_idx (008), written the
# same way so the planner can use it: events with no metadata or no aggregate_type in it.
_undeclared_kind: Final = sa.not_(sa.func.coalesce(_has_aggregate_type, sa.false()))


@dataclass(frozen=True)
class Page:
    """One page of rows in display order, with the cursors of its neighbours.

    ``next_cursor`` continues after the last row (``cursor=``), ``prev_cursor`` ends just
    before the first row (``before=``); each is None when there is nothing there.
    """

    rows: list[Row]
    next_cursor: Cursor | None
    prev_cursor: Cursor | None = None

    @property
    def events(self) -> list[Event]:
        rows = self.rows
        # A page's rows start with event_columns() (some add columns after them): read them
        # by position. Asking a SQLAlchemy row its names costs more than building the event,
        # so the first row is asked for all (they share one result).
        if rows and tuple(getattr(rows[0], "_fields", ())[:7]) == EVENT_FIELDS:
            return [_whole_event(row[:7]) for row in rows]
        return [Event.from_row(row) for row in rows]


@dataclass(frozen=True)
class Facet:
    """Counts of one facet; ``counted`` is False when it ran out of time or was skipped.

    ``estimated``: the counts are scaled up from a sample of the table (the range was too
    broad to count in time), so they are approximate and say so.
    """

    name: str
    counted: bool
    values: list[tuple[Any, int]] = field(default_factory=list)
    truncated: bool = False
    reason: str | None = None
    estimated: bool = False


@dataclass(frozen=True)
class Facets:
    types: Facet
    actors: Facet
    kinds: Facet
    days: Facet

    def __iter__(self):
        return iter((self.types, self.actors, self.kinds, self.days))


@dataclass(frozen=True)
class SearchShape:
    """What one scan of a search's rows tells: its facets and events per chart bar."""

    facets: Facets
    bars: list[tuple[datetime, int]] | None  # non-empty bars, None when not counted
    sample_fraction: float | None = None  # the share of the table read, when sampled

    @property
    def estimated(self) -> bool:
        return self.sample_fraction is not None


# --- Columns, order, keyset -----------------------------------------------------------------


# What replay reads from metadata: who set a field (provenance) and the record's kind.
REPLAY_METADATA_KEYS: Final = ("actor", "aggregate_type")


def _whole_event(values: Sequence[Any]) -> Event:
    """The Event of a whole row's values in :func:`event_columns` order (ids may come as
    UUIDs; Event.__post_init__ checks the time)."""
    event_id, seq, record, event_type, payload, metadata, created_at = values
    return Event(str(event_id), seq, str(record), event_type, payload, metadata, created_at)


def event_columns(
    table: db.TableInfo, *, slim: bool = False, metadata: bool = True
) -> list[sa.ColumnElement[Any]]:
    """The columns of an event row, as DESIGN.md's event JSON has them (seq NULL if absent).

    ``slim`` is for folds (:func:`iter_events` reads both shapes): ids as text, and instead
    of the metadata object only :data:`REPLAY_METADATA_KEYS`: ``actor`` as JSON (an object
    stays an object, as in the whole event), ``aggregate_type`` as text. Replaying 10,000
    events needs nothing else from the metadata, and decoding whole metadata objects (user
    agents, reasons...) and UUID objects cost more than the fold itself. Pages re-read the
    events they show whole (:func:`select_events_by_id`).

    ``metadata=False`` (with ``slim``) reads NULL for both keys: a fold that only diffs
    states (the PDF's "what each event changed") never looks at who acted, and one actor
    decoded per event was a tenth of reading the histories.
    """
    seq = _c.seq if table.has_seq else sa.cast(sa.null(), sa.BigInteger).label("seq")
    if not slim:
        return [
            _c.event_id,
            seq,
            _c.aggregate_id,
            _c.event_type,
            _c.payload,
            _METADATA,
            _c.created_at,
        ]
    return [
        sa.cast(_c.event_id, sa.Text).label("event_id"),
        seq,
        sa.cast(_c.aggregate_id, sa.Text).label("aggregate_id"),
        _c.event_type,
        _c.payload,
        # The actor as JSON, not ->> text: an actor object must reach provenance and field
        # history as the object it is, so that it is masked key by key like the metadata.
        (
            _METADATA.op("->", return_type=JSONB)(sa.literal_column("'actor'"))
            if metadata
            else sa.cast(sa.null(), JSONB)
        ).label("metadata_actor"),
        (_metadata_text("aggregate_type") if metadata else sa.cast(sa.null(), sa.Text)).label(
            "metadata_aggregate_type"
        ),
        _c.created_at,
    ]


def _order_columns(table: db.TableInfo) -> tuple[sa.ColumnElement[Any], sa.ColumnElement[Any]]:
    """``(created_at, seq)``, the total order; ``(created_at, event_id)`` without seq."""
    return (_c.created_at, _c.seq if table.has_seq else _c.event_id)


def _order_by(table: db.TableInfo, order: str) -> list[sa.UnaryExpression[Any]]:
    columns = _order_columns(table)
    return [column.desc() for column in columns] if order == "desc" else list(columns)


def _cursor_values(cursor: Cursor, table: db.TableInfo) -> tuple[Any, Any]:
    if not table.has_seq:
        return cursor.created_at, cursor.event_id
    if cursor.seq is None:
        raise FilterError(
            "This page link is from before the table had a seq column; start from the first "
            "page again.",
            "cursor",
        )
    return cursor.created_at, cursor.seq


def _keyset(cursor: Cursor, table: db.TableInfo, order: str, *, inclusive: bool = False):
    """Rows after ``cursor`` in ``order`` as one row comparison, which a btree index on
    ``(..., created_at, seq)`` uses as a range bound rather than a filter.

    The comparison is followed by the plain bound on created_at it implies: PostgreSQL
    prunes partitions by a column's own bounds, never by a row comparison, so on the
    partitioned table this keeps a next page away from the months it cannot reach."""
    created_at, tie = _cursor_values(cursor, table)
    column, tie_column = _order_columns(table)
    left = sa.tuple_(column, tie_column)
    at = sa.literal(created_at, sa.DateTime(timezone=True))
    right = sa.tuple_(at, sa.literal(tie, sa.BigInteger if table.has_seq else UUID(as_uuid=True)))
    if order == "desc":
        return sa.and_(left <= right if inclusive else left < right, column <= at)
    return sa.and_(left >= right if inclusive else left > right, column >= at)


def _reverse(order: str) -> str:
    return "asc" if order == "desc" else "desc"


def _check_limit(limit: int | None) -> None:
    if limit is not None and not 1 <= limit <= MAX_LIMIT + 1:
        raise ValueError(f"limit {limit} is outside 1..{MAX_LIMIT + 1}")


# --- Search ---------------------------------------------------------------------------------


def filter_conditions(
    f: EventFilter, *, create_types: Sequence[str] | None = None
) -> list[sa.ColumnElement[bool]]:
    """The WHERE conditions of a filter, every value bound.

    ``create_types`` names the create event types of ``f.kind`` for records whose events do
    not declare ``metadata.aggregate_type`` (see :func:`create_types_for_kind`); by default
    the built-in rule's ``<KIND>_CREATED``.
    """
    conditions: list[sa.ColumnElement[bool]] = []
    if f.aggregate_id is not None:
        conditions.append(_c.aggregate_id == f.aggregate_id)
    if f.types:
        conditions.append(_c.event_type.in_(f.types))
    if f.actor is not None:
        conditions.append(_actor == f.actor)
    if f.time_from is not None:
        conditions.append(_c.created_at >= f.time_from)
    if f.time_to is not None:
        conditions.append(_c.created_at < f.time_to)
    if f.request_id is not None:
        conditions.append(_request_id == f.request_id)
    if f.payload_path is not None:
        # payload @> :document, served by the GIN index audit_events_payload_idx
        # (jsonb_path_ops supports exactly @>); the path's keys are inside the bound value.
        conditions.append(_c.payload.contains(sa.literal(f.payload_document, JSONB)))
    if f.kind is not None:
        conditions.append(_kind_condition(f.kind, create_types))
    return conditions


def _kind_condition(kind: str, create_types: Sequence[str] | None) -> sa.ColumnElement[bool]:
    """Events of records of ``kind`` (DESIGN.md: the declared ``metadata.aggregate_type``,
    else the create event's type without its last word).

    An event that declares its kind is judged by it, row by row (no look-up). An event that
    declares none belongs to ``kind`` when its record was created, without a declared kind,
    by one of ``create_types``: one probe per such event into the partial index
    audit_events_undeclared_kind_idx (event_type, aggregate_id), sql/008_ui_indexes.sql.
    (A correlated EXISTS, not ``aggregate_id IN (...)``: the set of legacy records of a kind
    can outgrow work_mem, and the planner then scans it once per row.) Not covered: an
    event without a kind in a record whose create event declares one.
    """
    types = list(create_types) if create_types is not None else [f"{kind}_CREATED"]
    declared = _aggregate_type == kind
    if not types:
        return declared
    creator = audit_events.alias("creator")
    creator_has_kind = creator.c["metadata"].op("?", return_type=sa.Boolean)(
        sa.literal_column("'aggregate_type'")
    )
    created_as_kind = (
        sa.select(sa.literal(1))
        .where(
            sa.not_(sa.func.coalesce(creator_has_kind, sa.false())),
            creator.c.event_type.in_(types),
            creator.c.aggregate_id == _c.aggregate_id,
        )
        .exists()
    )
    return declared | (_undeclared_kind & created_as_kind)


def select_events(
    f: EventFilter,
    table: db.TableInfo,
    *,
    cursor: Cursor | None = None,
    limit: int | None = None,
    backward: bool = False,
    create_types: Sequence[str] | None = None,
) -> sa.Select:
    """Events matching ``f`` in ``f.order``, after ``cursor``; the search page, /api/events
    and the exports all run this.

    ``backward`` selects the rows *before* ``cursor`` instead, in the opposite order (so a
    LIMIT takes the nearest ones); :func:`fetch_page` puts them back in display order.

    Index, by the most selective filter present (PostgreSQL picks; EXPLAIN at 10M rows):
    aggregate id → audit_events_aggregate_idx (aggregate_id, created_at, seq); one event
    type → audit_events_type_time_idx (event_type, created_at, seq); actor →
    audit_events_actor_time_idx ((metadata->>'actor'), created_at, seq); request id →
    audit_events_request_idx; payload field → audit_events_payload_idx (GIN, then a sort
    of the matches); otherwise audit_events_time_idx (created_at, seq) read backwards for
    newest first, stopping after ``limit`` rows. The keyset condition is a row comparison
    on the index's trailing columns, so each next page starts where the last one ended.
    """
    _check_limit(limit)
    order = _reverse(f.order) if backward else f.order
    statement = sa.select(*event_columns(table)).where(
        *filter_conditions(f, create_types=create_types)
    )
    if cursor is not None:
        statement = statement.where(_keyset(cursor, table, order))
    statement = statement.order_by(*_order_by(table, order))
    return statement.limit(limit) if limit is not None else statement


def declared_kind(metadata: sa.ColumnElement[Any] = _METADATA) -> sa.ColumnElement[str]:
    """``metadata.aggregate_type`` when it is a non-empty string (else NULL), as
    :func:`dashboard.rules.derive_kind` reads it."""
    is_string = sa.func.jsonb_typeof(
        metadata.op("->", return_type=sa.Text)(sa.literal_column("'aggregate_type'"))
    ) == sa.literal_column("'string'")
    text = metadata.op("->>", return_type=sa.Text)(sa.literal_column("'aggregate_type'"))
    return sa.case((is_string, sa.func.nullif(text, sa.literal_column("''"))))


def gated_lateral(
    probe: sa.Select, own: sa.FromClause, gate: sa.ColumnElement[bool], name: str
) -> sa.LateralFromClause:
    """``probe`` (a ``LIMIT 1`` look-up in ``own``, correlated to the enclosing query's
    row) as a LATERAL subquery that runs only when ``gate`` (a test of that row alone)
    holds: no row otherwise.

    Why not ``gate`` in the probe's own WHERE: on a partitioned table the probe is an
    Append of one index scan per partition, and PostgreSQL copies such a test into each
    branch, so every row (gated or not) steps through one branch per partition. Above the
    probe's LIMIT it cannot be pushed down: one test per row, and a row it rejects never
    starts the probe. The outer ``LIMIT 1`` (of one row) keeps PostgreSQL from pulling this
    level up into the join, which would make the test a join filter run after the probe."""
    inner = probe.correlate_except(own).subquery(f"{name}_probe")
    return sa.select(*inner.c).where(gate).limit(1).lateral(name)


def with_first_event(statement: sa.Select, table: db.TableInfo) -> sa.Select:
    """``statement`` (a page of :func:`select_events`) with two more columns for the kind of
    each row's record, so a page needs no second query for it: ``first_event_type`` and
    ``first_declared_kind`` of the record's first event, NULL when the row declares its own
    kind (:func:`declared_kind`), which then is the record's.

    A LEFT JOIN LATERAL run once per row of the page (``limit + 1`` rows) that does not
    declare a kind (:func:`gated_lateral`), each the first entry of audit_events_aggregate_idx
    for its record: no sort, whatever the record's size; repeated records hit the Memoize
    cache. The page derives the kind from them with the rules (:func:`dashboard.rules.kind_of`).
    """
    if probes_first_events_apart(table):
        # Both columns NULL: the page asks first_events() for the records that need it.
        return statement.add_columns(
            sa.null().label("first_event_type"), sa.null().label("first_declared_kind")
        )
    lateral = _first_event_lateral(table.has_seq)
    return statement.outerjoin(lateral, sa.true()).add_columns(
        lateral.c.first_event_type, lateral.c.first_declared_kind
    )


def probes_first_events_apart(table: db.TableInfo) -> bool:
    """Whether a page finds its records' first events with :func:`first_events` rather
    than the LATERAL of :func:`with_first_event`: on a partitioned table (not distributed:
    Citus runs the LATERAL on each shard). There the LATERAL cannot be pruned by time, so
    planning it weighs every index of every partition on each page (4 ms a search page
    at 39 partitions, docs/scale-out.md); a statement prepared once per connection is
    planned once."""
    return table.partitioned and not table.distributed


def first_events(
    conn: Connection, aggregate_ids: Iterable[str], table: db.TableInfo
) -> dict[str, tuple[str, str | None]]:
    """``{aggregate_id: (first_event_type, first_declared_kind)}``: what
    :func:`with_first_event` gives each row, for the records named, read in the request's
    transaction.

    One statement for all of them (the records' ids as one array, each probed by the
    LATERAL's look-up: the first entry of audit_events_aggregate_idx), prepared on the
    connection's first use and kept across requests (the reader's transactions end with
    COMMIT: dashboard.context.close_connection). After five runs PostgreSQL keeps one plan
    for it, which for an equality on the record id is the index probe whatever the ids, so
    the page no longer plans it. One execution, not one per record: each execution of a
    generic plan over a partitioned table starts a scan of every partition (a page's five
    records cost 1.7 ms run one by one, 0.5 ms as one array at 39 partitions)."""
    ids = sorted({str(value) for value in aggregate_ids})
    if not ids:
        return {}
    statement, fixed = _first_events_statement(table.has_seq)
    params = {**fixed, "ids": [uuid.UUID(value) for value in ids]}
    driver = conn.connection.driver_connection
    use_fast_json(conn)
    try:
        rows = driver.execute(statement, params, prepare=True).fetchall()
    except psycopg.Error as exc:  # as iter_events does
        raise sa.exc.DBAPIError.instance(statement, params, exc, psycopg.Error) from exc
    return {
        str(aggregate_id): (first_type, declared) for aggregate_id, first_type, declared in rows
    }


@functools.cache
def _first_events_statement(has_seq: bool) -> tuple[str, dict[str, Any]]:
    """The SQL of :func:`first_events` (``%(ids)s`` the array of record ids) and its other
    values, compiled once per table layout."""
    ids = (
        sa.func.unnest(sa.bindparam("ids", type_=ARRAY(UUID(as_uuid=True))))
        .table_valued("aggregate_id")
        .render_derived(name="ids")
    )
    probe = _first_event_select(has_seq, ids.c.aggregate_id)[0].lateral("firsts")
    statement = sa.select(
        ids.c.aggregate_id, probe.c.first_event_type, probe.c.first_declared_kind
    ).select_from(ids.join(probe, sa.true()))
    compiled = statement.compile(dialect=PGDialect_psycopg())
    return str(compiled), {name: value for name, value in compiled.params.items() if name != "ids"}


@functools.cache
def _first_event_lateral(has_seq: bool) -> sa.LateralFromClause:
    """The lateral of :func:`with_first_event`, built once per table layout: it depends on
    nothing else, and building it costs a search page about a millisecond of Python.
    (SQLAlchemy constructs are immutable once built; sharing one between statements and
    threads is how module-level tables and columns are used too.)"""
    probe, first = _first_event_select(has_seq, _c.aggregate_id)
    return gated_lateral(probe, first, declared_kind().is_(None), "first_event")


def _first_event_select(
    has_seq: bool, aggregate_id: sa.ColumnElement[Any]
) -> tuple[sa.Select, sa.FromClause]:
    """The first event of the record ``aggregate_id`` names (its type and declared kind):
    the first entry of audit_events_aggregate_idx for it; and the alias it reads."""
    first = audit_events.alias("first_event")
    tie = first.c.seq if has_seq else first.c.event_id
    probe = (
        sa.select(
            first.c.event_type.label("first_event_type"),
            declared_kind(first.c["metadata"]).label("first_declared_kind"),
        )
        .where(first.c.aggregate_id == aggregate_id)
        .order_by(first.c.created_at, tie)
        # A literal, not a parameter: a plan made once for any LIMIT ($n) is costed as if
        # it read a tenth of the record, and PostgreSQL would never keep it
        # (first_events).
        .limit(sa.literal_column("1"))
    )
    return probe, first


def fetch_page(
    conn: Connection,
    statement: sa.Select,
    limit: int,
    *,
    backward: bool = False,
    has_previous: bool = False,
) -> Page:
    """Run ``statement`` for ``limit + 1`` rows: the extra row only says "there is more".

    ``statement`` comes from a builder called with the page's cursor (and ``backward``).
    ``has_previous`` says whether rows exist before this page (true when it was reached
    through a cursor), so that the page can offer a link back.
    """
    _check_limit(limit)
    use_fast_json(conn)
    rows = list(conn.execute(statement.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    if backward:
        rows.reverse()
        return Page(
            rows=rows,
            next_cursor=Cursor.after(rows[-1]) if rows else None,
            prev_cursor=Cursor.after(rows[0]) if rows and more else None,
        )
    return Page(
        rows=rows,
        next_cursor=Cursor.after(rows[-1]) if rows and more else None,
        prev_cursor=Cursor.after(rows[0]) if rows and has_previous else None,
    )


# --- Facets ---------------------------------------------------------------------------------


def select_type_facet(
    f: EventFilter, *, limit: int = FACET_SIZE, create_types: Sequence[str] | None = None
) -> sa.Select:
    """Events per type for the filter, largest first, ``limit + 1`` rows (more = truncated).

    The page counts all facets in one scan (:func:`select_search_shape`); this one facet
    alone is what benchmarks/bench_pages.py times.
    """
    count = sa.func.count().label("count")
    return (
        sa.select(_c.event_type.label("value"), count)
        .where(*filter_conditions(f, create_types=create_types))
        .group_by(_c.event_type)
        .order_by(count.desc(), _c.event_type)
        .limit(limit + 1)
    )


def select_actor_facet(
    f: EventFilter, *, limit: int = FACET_SIZE, create_types: Sequence[str] | None = None
) -> sa.Select:
    """Events per ``metadata.actor`` for the filter (NULL = no actor recorded)."""
    count = sa.func.count().label("count")
    value = _actor.label("value")
    return (
        sa.select(value, count)
        .where(*filter_conditions(f, create_types=create_types))
        .group_by(_actor)
        .order_by(count.desc(), _actor)
        .limit(limit + 1)
    )


def estimated_rows(
    conn: Connection, f: EventFilter, *, create_types: Sequence[str] | None = None
) -> int:
    """The planner's estimate of the rows matching ``f`` (``EXPLAIN``, nothing is read)."""
    statement = (
        sa.select(sa.literal(1))
        .select_from(audit_events)
        .where(*filter_conditions(f, create_types=create_types))
    )
    document = conn.execute(_Explain(statement, analyze=False, as_json=True)).scalar()
    return int(document[0]["Plan"]["Plan Rows"])


# The facets (and the chart's bars) of a search, one GROUPING SETS scan; the order of the
# grouped columns is the order of the bits of GROUPING(...).
_SHAPE_SETS: Final = ("type", "actor", "declared_kind", "created_as", "day", "bar")
FACET_SAMPLE_SEED: Final = 20240501  # REPEATABLE: the same sample for the same statistics


def select_search_shape(
    f: EventFilter,
    *,
    width: Any,
    tz: str = "UTC",
    limit: int = FACET_SIZE,
    create_types: Sequence[str] | None = None,
    kind_create_types: Sequence[str] = (),
    sample_percent: float | None = None,
    distributed: bool = False,
) -> sa.Select:
    """Facets by type, actor, kind and day (``limit + 1`` largest of each: more means
    truncated) and the count per chart bar (``date_bin(width)`` from
    :data:`dashboard.shape.ORIGIN`), all from one scan of the matching rows.

    Rows are ``(set, value, created_as, count)``: ``set`` names the facet; for kinds, a
    record that declares none gives its create event type in ``created_as`` (one probe of
    audit_events_undeclared_kind_idx per such event, as the kind filter does).
    ``sample_percent``: read only that share of the table's pages (``TABLESAMPLE
    SYSTEM``), for ranges too broad to count; counts are then to be scaled up.
    """
    day = sa.func.date_trunc("day", _c.created_at, tz)
    bar = sa.func.date_bin(
        sa.bindparam("width", width, type_=sa.Interval()), _c.created_at, sa.literal(ORIGIN)
    )
    if kind_create_types:
        creator = audit_events.alias("kind_creator")
        created_as = sa.case(
            (
                _aggregate_type.is_(None),
                sa.select(creator.c.event_type)
                .where(
                    creator.c.aggregate_id == _c.aggregate_id,
                    creator.c.event_type.in_(list(kind_create_types)),
                    sa.not_(
                        sa.func.coalesce(
                            creator.c["metadata"].op("?", return_type=sa.Boolean)(
                                sa.literal_column("'aggregate_type'")
                            ),
                            sa.false(),
                        )
                    ),
                )
                .limit(1)
                .scalar_subquery(),
            ),
            else_=sa.null(),
        )
    else:
        created_as = sa.cast(sa.null(), sa.Text)
    matching = sa.select(
        _c.event_type.label("type"),
        _actor.label("actor"),
        _aggregate_type.label("declared_kind"),
        created_as.label("created_as"),
        day.label("day"),
        bar.label("bar"),
    ).where(*filter_conditions(f, create_types=create_types))
    if sample_percent is not None:
        sampled = sa.tablesample(
            audit_events,
            sa.func.system(sa.bindparam("sample_percent", sample_percent, type_=sa.Float)),
            name="sampled",
            seed=sa.literal(FACET_SAMPLE_SEED),
        )
        matching = ClauseAdapter(sampled).traverse(matching)
    if distributed:
        # Citus cannot run GROUPING SETS over a distributed table. So each worker counts
        # its rows per (type, actor, kind, day, bar), a plain GROUP BY it runs on its shards,
        # and the coordinator adds those counts up per grouping set (MATERIALIZED: Citus
        # runs the CTE first, as a distributed subplan, instead of inlining it).
        fine = matching.subquery("matching").c
        fine_columns = (fine.type, fine.actor, fine.declared_kind, fine.created_as, fine.day)
        partial = (
            sa.select(*fine_columns, fine.bar, sa.func.count().label("n"))
            .group_by(*fine_columns, fine.bar)
            .cte("partial")
            .prefix_with("MATERIALIZED")
        )
        m = partial.c
        count = sa.cast(sa.func.sum(m.n), sa.BigInteger)
    else:
        m = matching.subquery("matching").c
        count = sa.func.count()
    columns = (m.type, m.actor, m.declared_kind, m.created_as, m.day, m.bar)
    grouping = sa.func.grouping(*columns)
    rank = (
        sa.func.row_number()
        .over(partition_by=grouping, order_by=(count.desc(), *columns))
        .label("rank")
    )
    inner = sa.select(
        grouping.label("grouping"),
        sa.func.coalesce(
            m.type, m.actor, m.declared_kind, sa.cast(m.day, sa.Text), sa.cast(m.bar, sa.Text)
        ).label("value"),
        m.created_as,
        m.day,
        m.bar,
        count.label("count"),
        rank,
    ).group_by(
        sa.func.grouping_sets(
            sa.tuple_(m.type),
            sa.tuple_(m.actor),
            sa.tuple_(m.declared_kind, m.created_as),
            sa.tuple_(m.day),
            sa.tuple_(m.bar),
        )
    )
    sub = inner.subquery("shape")
    bar_set = _grouping_of("bar")
    return sa.select(sub).where((sub.c.rank <= limit + 1) | (sub.c.grouping == bar_set))


def _grouping_of(name: str) -> int:
    """GROUPING(...) of the set grouped by ``name`` (kinds: by both kind columns)."""
    grouped = {"kind": ("declared_kind", "created_as")}.get(name, (name,))
    bits = 0
    for index, column in enumerate(_SHAPE_SETS):
        if column not in grouped:
            bits |= 1 << (len(_SHAPE_SETS) - 1 - index)
    return bits


def count_search_shape(
    conn: Connection,
    f: EventFilter,
    *,
    width: Any,
    tz: str = "UTC",
    timeout_ms: int | None = None,
    restore_timeout_ms: int | None = None,
    estimate: int | None = None,
    limit: int = FACET_SIZE,
    create_types: Sequence[str] | None = None,
    kind_create_types: Sequence[str] = (),
    table_rows: float | None = None,
    distributed: bool = False,
) -> SearchShape:
    """Facets and chart bars of ``f`` under their own ``statement_timeout``; they degrade,
    never fail the page.

    Bounded work on any search: when the planner expects at most FACET_MAX_ROWS matching
    rows they are counted exactly; otherwise a sample of the table's pages is read (about
    FACET_MAX_ROWS rows) and the counts scaled up, marked as estimated. One statement in a
    SAVEPOINT, so that a cancelled count leaves the request's transaction usable and the
    page's own limit is restored afterwards. A timeout leaves every facet "not counted".

    Without ``timeout_ms`` the connection's own limit is the facets' (an autocommit
    connection whose session statement_timeout is it, as the search page uses): one
    statement, no SAVEPOINT. ``table_rows``: the table's size when the caller knows it
    (``pg_class.reltuples``), else read when a sample is needed.
    """
    if estimate is None:
        estimate = estimated_rows(conn, f, create_types=create_types)
    sample_fraction = None
    if estimate > FACET_MAX_ROWS:
        if table_rows is None:
            table_rows = conn.execute(db.ESTIMATED_TABLE_ROWS).scalar()
        sample_fraction = min(1.0, FACET_MAX_ROWS / float(table_rows or 1))
    statement = select_search_shape(
        f,
        width=width,
        tz=tz,
        limit=limit,
        create_types=create_types,
        kind_create_types=kind_create_types,
        sample_percent=None if sample_fraction is None else 100 * sample_fraction,
        distributed=distributed,
    )
    if timeout_ms is None:
        try:
            rows = conn.execute(statement).all()
        except sa.exc.DBAPIError as exc:
            if not db.is_query_canceled(exc):
                raise
            return not_counted()
        return _shape_from_rows(rows, limit, sample_fraction)
    rows = _run_bounded(conn, statement, timeout_ms, restore_timeout_ms)
    if rows is None:
        return not_counted()
    return _shape_from_rows(rows, limit, sample_fraction)


def _run_bounded(
    conn: Connection, statement: sa.Executable, timeout_ms: int, restore_timeout_ms: int | None
) -> Sequence[Row] | None:
    """The rows of an optional count under its own ``statement_timeout``, or None when it
    ran out of time. In a SAVEPOINT, so that a cancelled count leaves the request's
    transaction usable; the page's own limit is restored afterwards."""
    savepoint = conn.begin_nested()
    try:
        db.set_timeout(conn, timeout_ms)
        rows = conn.execute(statement).all()
        savepoint.commit()
    except sa.exc.DBAPIError as exc:
        savepoint.rollback()
        if not db.is_query_canceled(exc):
            raise
        return None
    finally:
        if restore_timeout_ms is not None:
            db.set_timeout(conn, restore_timeout_ms)
    return rows


# The reports form counts the events a report would hold before it is made. A plain count
# reads only the matching index entries, much cheaper per row than the search outline, so it
# tries exactly up to this many expected rows (and stops reading one past it); its time limit
# (AUDIT_FACET_TIMEOUT_MS) decides the rest, falling back to the planner's estimate.
COUNT_MAX_ROWS: Final = 1_000_000


@dataclass(frozen=True)
class EventCount:
    """How many events match a filter: ``exact``, or the planner's ``estimate`` (with why),
    or ``at_least`` ``value`` (an exact count stopped at COUNT_MAX_ROWS)."""

    value: int
    how: Literal["exact", "estimate", "at_least"]
    reason: str | None = None

    @property
    def exact(self) -> bool:
        return self.how == "exact"


def select_event_count(
    f: EventFilter, *, create_types: Sequence[str] | None = None, cap: int = COUNT_MAX_ROWS
) -> sa.Select:
    """``count(*)`` of the rows matching ``f``, reading at most ``cap + 1`` of them."""
    matching = (
        sa.select(sa.literal(1).label("one"))
        .select_from(audit_events)
        .where(*filter_conditions(f, create_types=create_types))
        .limit(cap + 1)
        .subquery("matching")
    )
    return sa.select(sa.func.count()).select_from(matching)


def count_events(
    conn: Connection,
    f: EventFilter,
    *,
    timeout_ms: int,
    restore_timeout_ms: int,
    create_types: Sequence[str] | None = None,
    estimate: int | None = None,
) -> EventCount:
    """The events matching ``f``: exact when the filter is bounded (DESIGN.md: no
    ``COUNT(*)`` over an unbounded range), the planner expects at most COUNT_MAX_ROWS and
    the count ends within ``timeout_ms``; otherwise the planner's estimate, saying why."""
    if estimate is None:
        estimate = estimated_rows(conn, f, create_types=create_types)
    if not f.is_bounded:
        return EventCount(estimate, "estimate", "the period is open-ended")
    if estimate > COUNT_MAX_ROWS:
        return EventCount(estimate, "estimate", "too many to count quickly")
    rows = _run_bounded(
        conn, select_event_count(f, create_types=create_types), timeout_ms, restore_timeout_ms
    )
    if rows is None:
        return EventCount(estimate, "estimate", "counting took too long")
    counted = int(rows[0][0])
    if counted > COUNT_MAX_ROWS:
        return EventCount(COUNT_MAX_ROWS, "at_least", "counting stopped there")
    return EventCount(counted, "exact")


_FACET_NAMES: Final = ("type", "actor", "kind", "day")
NOT_COUNTED: Final = "Not counted: counting took too long. Narrow the time range."


def not_counted() -> SearchShape:
    """Every facet "not counted" (it ran out of time), no chart."""
    return SearchShape(
        Facets(*(Facet(name, counted=False, reason=NOT_COUNTED) for name in _FACET_NAMES)),
        None,
    )


def table_facts(
    conn: Connection, *, distributed: bool = False
) -> tuple[datetime | None, datetime | None, float]:
    """The oldest and newest ``created_at`` of the table (two probes of
    audit_events_time_idx) and its planner size (``db.ESTIMATED_TABLE_ROWS``), in one statement:
    what the counts of a search without a range need, cached by the page for a minute.

    On Citus (``distributed``) in two: Citus runs no subquery beside an aggregate, and the
    coordinator's catalog has no size of the shards (the estimate is 1, so broad counts read
    everything within the facet time limit, or say "not counted")."""
    if distributed:
        oldest, newest = conn.execute(
            sa.select(sa.func.min(_c.created_at), sa.func.max(_c.created_at))
        ).one()
        return oldest, newest, float(conn.execute(db.ESTIMATED_TABLE_ROWS).scalar() or 1)
    row = conn.execute(
        sa.select(
            sa.func.min(_c.created_at),
            sa.func.max(_c.created_at),
            db.ESTIMATED_TABLE_ROWS.columns(sa.column("rows", sa.Float)).scalar_subquery(),
        )
    ).one()
    return row[0], row[1], float(row[2] or 1)


def _shape_from_rows(rows: Sequence[Row], limit: int, sample_fraction: float | None) -> SearchShape:
    scale = 1.0 if sample_fraction is None else 1.0 / sample_fraction

    def scaled(count: int) -> int:
        return count if sample_fraction is None else max(1, round(count * scale))

    found: dict[str, list[tuple[Any, int]]] = {name: [] for name in _FACET_NAMES}
    kinds: dict[Any, int] = {}
    bars = []
    sets = {_grouping_of(name): name for name in ("type", "actor", "kind", "day", "bar")}
    for row in rows:
        name = sets.get(row.grouping)
        if name == "bar":
            bars.append((row.bar, scaled(row.count)))
        elif name == "kind":
            kind = row.value or (derive_kind(row.created_as, None) if row.created_as else None)
            kinds[kind] = kinds.get(kind, 0) + row.count
        elif name == "day":
            found["day"].append((row.day, row.count))
        elif name is not None:
            found[name].append((row.value, row.count))
    found["kind"] = sorted(kinds.items(), key=lambda item: (-item[1], str(item[0])))
    # The day facet lists the busiest days; the chart shows them in order.
    facets = Facets(
        *(
            Facet(
                name,
                counted=True,
                values=[(value, scaled(count)) for value, count in found[name][:limit]],
                truncated=len(found[name]) > limit,
                estimated=sample_fraction is not None,
            )
            for name in _FACET_NAMES
        )
    )
    bars.sort()
    return SearchShape(facets, bars, sample_fraction)


def time_bounds(
    conn: Connection, aggregate_id: uuid.UUID | None = None
) -> tuple[datetime | None, datetime | None]:
    """The oldest and newest ``created_at`` of the table, or of one record: two probes of
    audit_events_time_idx (or audit_events_aggregate_idx)."""
    statement = sa.select(sa.func.min(_c.created_at), sa.func.max(_c.created_at))
    if aggregate_id is not None:
        statement = statement.where(_c.aggregate_id == aggregate_id)
    row = conn.execute(statement).one()
    return row[0], row[1]


# --- Id prefixes ----------------------------------------------------------------------------

ID_PREFIX_CANDIDATES: Final = 10  # an ambiguous prefix lists at most this many

# Distinct record ids in [low, high] by a loose index scan of audit_events_aggregate_idx:
# one index probe per candidate, however many events each record has (a plain DISTINCT
# would read all 10,000 events of the busiest record).
_AGGREGATE_PREFIX_SQL = sa.text(
    """
    WITH RECURSIVE found(id) AS (
        (SELECT aggregate_id FROM audit_events
          WHERE aggregate_id >= :low AND aggregate_id <= :high
          ORDER BY aggregate_id LIMIT 1)
        UNION ALL
        SELECT (SELECT aggregate_id FROM audit_events
                 WHERE aggregate_id > found.id AND aggregate_id <= :high
                 ORDER BY aggregate_id LIMIT 1)
          FROM found WHERE found.id IS NOT NULL
    )
    SELECT id FROM found WHERE id IS NOT NULL LIMIT :limit
    """
).bindparams(
    sa.bindparam("low", type_=UUID(as_uuid=True)),
    sa.bindparam("high", type_=UUID(as_uuid=True)),
)


def ids_with_prefix(
    conn: Connection,
    what: str,
    prefix: IdPrefix,
    *,
    limit: int = ID_PREFIX_CANDIDATES,
    table: db.TableInfo | None = None,
) -> list[uuid.UUID]:
    """Up to ``limit + 1`` record (``what="record"``) or event ids starting with ``prefix``,
    in id order: one means found, more means ambiguous. A range scan of the uuid index
    (audit_events_aggregate_idx, or the event_id primary key), never a table scan.

    On Citus (``table.distributed``) records are found by DISTINCT instead of the loose
    index scan (no recursive CTE there): DISTINCT on the distribution column, ORDER BY and
    LIMIT all run on each shard, which stops after ``limit + 1`` ids of its range."""
    if what == "record" and table is not None and table.distributed:
        rows = conn.execute(
            sa.select(_c.aggregate_id)
            .distinct()
            .where(_c.aggregate_id >= prefix.low, _c.aggregate_id <= prefix.high)
            .order_by(_c.aggregate_id)
            .limit(limit + 1)
        )
    elif what == "record":
        rows = conn.execute(
            _AGGREGATE_PREFIX_SQL, {"low": prefix.low, "high": prefix.high, "limit": limit + 1}
        )
    elif what == "event":
        rows = conn.execute(
            sa.select(_c.event_id)
            .where(_c.event_id >= prefix.low, _c.event_id <= prefix.high)
            .order_by(_c.event_id)
            .limit(limit + 1)
        )
    else:
        raise ValueError(f"what {what!r}")
    return [uuid.UUID(str(row[0])) for row in rows]


# --- One record -----------------------------------------------------------------------------


def select_aggregate_events(
    aggregate_id: uuid.UUID,
    table: db.TableInfo,
    *,
    until: datetime | Cursor | None = None,
    cursor: Cursor | None = None,
    limit: int | None = None,
    order: str = "asc",
    backward: bool = False,
    slim: bool = False,
    between: tuple[datetime, datetime] | None = None,
) -> sa.Select:
    """One record's events, oldest first by default: the timeline, replay and state-at.

    ``slim``: metadata reduced to what replay reads (see :func:`event_columns`).

    ``until`` keeps events at or before a time (state at T: ``created_at <= T``) or up to and
    including an event's position (state after an event). ``between`` is the record's first
    and last time when known (:func:`select_aggregate_summary`): see :func:`_within`.
    Index audit_events_aggregate_idx (aggregate_id, created_at, seq) gives the rows in
    order: no sort, whatever the record's size.
    """
    _check_limit(limit)
    if order not in ("asc", "desc"):
        raise ValueError(f"order {order!r}")
    direction = _reverse(order) if backward else order
    statement = sa.select(*event_columns(table, slim=slim)).where(
        _c.aggregate_id == aggregate_id, *_within(between)
    )
    if isinstance(until, Cursor):
        statement = statement.where(_keyset(until, table, "desc", inclusive=True))
    elif until is not None:
        statement = statement.where(_c.created_at <= until)
    if cursor is not None:
        statement = statement.where(_keyset(cursor, table, direction))
    statement = statement.order_by(*_order_by(table, direction))
    return statement.limit(limit) if limit is not None else statement


def select_aggregate_summary(
    aggregate_id: uuid.UUID, table: db.TableInfo | None = None
) -> sa.Select:
    """Event count, first and last time (and highest seq, when there is one) of one record:
    what it takes to know whether a record changed since it was last read, since events
    are only ever added.

    Bounded by the record, not the table: an index-only scan of audit_events_aggregate_idx.
    """
    last_seq = (sa.func.max(_c.seq) if table is not None and table.has_seq else sa.null()).label(
        "last_seq"
    )
    return sa.select(
        sa.func.count().label("event_count"),
        sa.func.min(_c.created_at).label("first_at"),
        sa.func.max(_c.created_at).label("last_at"),
        last_seq,
    ).where(_c.aggregate_id == aggregate_id)


def _within(between: tuple[datetime, datetime] | None) -> list[sa.ColumnElement[bool]]:
    """``first <= created_at <= last`` for a record whose first and last times are known
    (its summary, read in the same request): no row of the record is left out, and on a
    partitioned table, where a record's id names no partition, PostgreSQL reads only the
    record's own months instead of probing every partition (0.12-0.26 ms a statement per
    partition, docs/scale-out.md)."""
    if between is None:
        return []
    return [_c.created_at >= between[0], _c.created_at <= between[1]]


def select_aggregate_digest(
    aggregate_id: uuid.UUID, between: tuple[datetime, datetime] | None = None
) -> sa.Select:
    """SHA-256 over the SHA-256 of every row of one record (every column that reaches a
    page: id, type, payload, metadata, time, seq), in seq order: the history cache's check
    that a record's rows are still the rows it folded (:mod:`dashboard.history`).

    Counts alone do not do: a superuser with the triggers off can UPDATE a payload in
    place. This reads the record's rows (audit_events_aggregate_idx, then the heap), about
    as much as the fold's own query minus the Python work, so it is only run for the
    records the cache keeps (1,000+ events). Tables with ``seq`` only (ordering key).

    A row is hashed as its columns' texts joined by U+001F, which none of them but the
    event type can hold (a UUID, JSON text, which escapes control characters, a time, a
    number): with the separators counted the row's text splits one way only, so two rows
    with the same text are the same row. A NULL metadata is the empty text, which no JSON
    document prints as. (Half the cost of hashing ``jsonb_build_array(...)::text``, which
    converts every column to jsonb first: 29-38 against 20 ms for 10,000 events.)
    """
    columns = (
        sa.cast(_c.event_id, sa.Text),
        _c.event_type,
        sa.cast(_c.payload, sa.Text),
        sa.func.coalesce(sa.cast(_c["metadata"], sa.Text), sa.literal_column("''")),
        sa.cast(_c.created_at, sa.Text),
        sa.cast(_c.seq, sa.Text),
    )
    row_text = sa.func.concat_ws(sa.literal_column("E'\\x1f'"), *columns)
    row_hash = sa.func.sha256(sa.func.convert_to(row_text, sa.literal_column("'UTF8'")))
    joined = sa.func.string_agg(
        row_hash, aggregate_order_by(sa.literal(b"", BYTEA), _c.seq), type_=BYTEA
    )
    return sa.select(sa.func.sha256(joined, type_=BYTEA).label("digest")).where(
        _c.aggregate_id == aggregate_id, *_within(between)
    )


def select_events_by_id(
    event_ids: Sequence[uuid.UUID | str],
    table: db.TableInfo,
    *,
    between: tuple[datetime, datetime] | None = None,
) -> sa.Select:
    """Whole events by id, for the page of a record whose fold read them slim (primary key
    audit_events_pkey, one probe each).

    ``between`` (the first and last ``created_at`` of those events, which the fold knows)
    bounds the statement by time too: on a partitioned table an id says nothing of the
    partition, so without it every id was probed in every partition (50 ids in each of 39
    partitions: 9 ms of a record page at 10M events, against 1 ms on the plain table)."""
    ids = [value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)) for value in event_ids]
    statement = sa.select(*event_columns(table)).where(_c.event_id.in_(ids))
    return statement.where(*_within(between)).order_by(*_order_columns(table))


def select_event(event_id: uuid.UUID, table: db.TableInfo) -> sa.Select:
    """One event by id (primary key audit_events_pkey)."""
    return sa.select(*event_columns(table)).where(_c.event_id == event_id)


def iter_events(conn: Connection, statement: sa.Select, *, stream: bool = True) -> Iterator[Event]:
    """Stream a statement's rows as Events through a server-side cursor, ``STREAM_BATCH``
    rows at a time, so replaying a record of 100,000 events never holds all rows at once.
    ``stream=False`` reads a small result (a page of events) in one round trip instead.

    ``statement`` selects :func:`event_columns` (either shape). This is the hot loop of a
    record page: 10,000 rows, every one needed to fold the record, measured at 10M rows
    (benchmarks/bench_pages.py). Hence:

    - the statement (compiled by SQLAlchemy, every value still bound) runs on the request's
      own psycopg connection — same transaction, read-only mode and statement_timeout —
      in psycopg's *binary* format, which parses numbers and times faster than text;
    - rows are read as tuples in :func:`event_columns` order rather than through
      ``Event.from_row``'s mapping look-ups (same values; ``Event.__post_init__`` checks);
    - JSON is decoded by :func:`_json_loads`.
    """
    compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = {
        name: Jsonb(value) if isinstance(value, dict | list) else value
        for name, value in compiled.params.items()
    }
    driver = conn.connection.driver_connection
    use_fast_json(conn)
    if stream:
        cursor = driver.cursor(name=f"audit_events_stream_{next(_CURSOR_NUMBERS)}", binary=True)
        cursor.itersize = STREAM_BATCH
    else:
        cursor = driver.cursor(binary=True)
    try:
        with cursor:
            cursor.execute(str(compiled), params)
            if len(statement.selected_columns) == 7:
                for values in cursor:
                    yield _whole_event(values)
                return
            for event_id, seq, aggregate_id, event_type, payload, actor, kind, created_at in cursor:
                metadata = {}
                if actor is not None:
                    metadata["actor"] = actor
                if kind is not None:
                    metadata["aggregate_type"] = kind
                yield Event(event_id, seq, aggregate_id, event_type, payload, metadata, created_at)
    except psycopg.Error as exc:
        # As SQLAlchemy would raise it, so the app answers it as any database error (a
        # cancelled statement or a lost connection is a 503, not a 500).
        raise sa.exc.DBAPIError.instance(str(compiled), params, exc, psycopg.Error) from exc


_CURSOR_NUMBERS = itertools.count(1)  # server-side cursor names, unique per process


def _json_loads(data: bytes) -> Any:
    """JSON from PostgreSQL (:func:`dashboard.jsonlimits.load_json_bytes`): faster than
    psycopg's default ``json.loads(bytes)``, and a document nested deeper than the dashboard
    can walk becomes a :class:`~dashboard.jsonlimits.TooDeep` marker instead of a
    ``RecursionError``."""
    return load_json_bytes(data)


def use_fast_json(conn: Connection) -> None:
    """Decode json/jsonb columns of this connection with :func:`_json_loads`. Engines made
    by :func:`dashboard.db.make_engine` set this on every new connection already; this
    covers connections from anywhere else."""
    driver = conn.connection.driver_connection
    if driver is not None and driver not in _FAST_JSON_CONNECTIONS:
        set_json_loads(_json_loads, driver)
        _FAST_JSON_CONNECTIONS.add(driver)


_FAST_JSON_CONNECTIONS: weakref.WeakSet = weakref.WeakSet()  # pooled connections, set up once


# --- One request ----------------------------------------------------------------------------


def select_request_events(
    request_id: str,
    table: db.TableInfo,
    *,
    cursor: Cursor | None = None,
    limit: int | None = None,
    backward: bool = False,
) -> sa.Select:
    """Every event of one request across records, oldest first.

    ``coalesce(metadata->>'request_id', metadata->>'correlation_id') = :id`` is the exact
    expression of the partial index audit_events_request_idx; a request has few events, so
    the sort after the index scan is small.
    """
    return select_events(
        EventFilter(request_id=request_id, order="asc"),
        table,
        cursor=cursor,
        limit=limit,
        backward=backward,
    )


# --- Lists for the forms --------------------------------------------------------------------


def _distinct_on_shards(what: str, limit: int) -> sa.Select:
    """On Citus, the same loose index scan on every shard, merged on the coordinator
    (sql/citus/cluster.sql, audit_events_distinct_values): Citus cannot run a recursive
    CTE over a distributed table."""
    values = (
        sa.func.audit_events_distinct_values(what, limit).table_valued("value").render_derived()
    )
    return sa.select(values.c.value)


def select_event_types(
    limit: int = MAX_EVENT_TYPES, table: db.TableInfo | None = None
) -> sa.Select:
    """The event types that exist, by a loose index scan ("skip scan") of
    audit_events_type_time_idx: one index probe per distinct type, instead of reading 10M
    rows for a DISTINCT. (Per shard on Citus: pass the table.)"""
    if table is not None and table.distributed:
        return _distinct_on_shards("event_type", limit)
    first = sa.select(sa.func.min(_c.event_type).label("value")).cte("types", recursive=True)
    inner = audit_events.alias("later")
    following = sa.select(
        sa.select(sa.func.min(inner.c.event_type))
        .where(inner.c.event_type > first.c.value)
        .scalar_subquery()
    ).where(first.c.value.is_not(None))
    types = first.union_all(following)
    return (
        sa.select(types.c.value)
        .where(types.c.value.is_not(None))
        .order_by(types.c.value)
        .limit(limit)
    )


def select_declared_kinds(limit: int = MAX_KINDS, table: db.TableInfo | None = None) -> sa.Select:
    """The record kinds declared in ``metadata.aggregate_type``: a loose index scan of
    audit_events_aggregate_type_idx (partial, WHERE metadata ? 'aggregate_type'). (Per
    shard on Citus: pass the table.)"""
    if table is not None and table.distributed:
        return _distinct_on_shards("aggregate_type", limit)
    first = (
        sa.select(sa.func.min(_aggregate_type).label("value"))
        .where(_has_aggregate_type)
        .cte("kinds", recursive=True)
    )
    inner = audit_events.alias("later")
    inner_metadata = inner.c["metadata"]
    inner_type = inner_metadata.op("->>", return_type=sa.Text)(
        sa.literal_column("'aggregate_type'")
    )
    inner_has = inner_metadata.op("?", return_type=sa.Boolean)(
        sa.literal_column("'aggregate_type'")
    )
    following = sa.select(
        sa.select(sa.func.min(inner_type))
        .where(inner_has, inner_type > first.c.value)
        .scalar_subquery()
    ).where(first.c.value.is_not(None))
    kinds = first.union_all(following)
    return (
        sa.select(kinds.c.value)
        .where(kinds.c.value.is_not(None))
        .order_by(kinds.c.value)
        .limit(limit)
    )


def create_types_for_kind(
    kind: str, event_types: Iterable[str], rules: Sequence[Rule] = DEFAULT_RULES
) -> list[str]:
    """The existing event types that create a record of ``kind`` under ``rules``
    (``USER`` → ``USER_CREATED`` with the defaults), for records without a declared kind."""
    return [
        event_type
        for event_type in event_types
        if action_for(event_type, rules) == "create" and derive_kind(event_type, None) == kind
    ]


def all_create_types(
    event_types: Iterable[str], rules: Sequence[Rule] = DEFAULT_RULES
) -> list[str]:
    """The existing event types that create a record under ``rules``, of any kind."""
    return [t for t in event_types if action_for(t, rules) == "create" and derive_kind(t, None)]


def kinds_from_types(
    event_types: Iterable[str], rules: Sequence[Rule] = DEFAULT_RULES
) -> list[str]:
    """Kinds implied by the create event types that exist (``USER_CREATED`` → ``USER``)."""
    kinds = {
        derive_kind(event_type, None)
        for event_type in event_types
        if action_for(event_type, rules) == "create"
    }
    return sorted(kind for kind in kinds if kind)


def known_kinds(
    conn: Connection,
    event_types: Iterable[str],
    rules: Sequence[Rule] = DEFAULT_RULES,
    table: db.TableInfo | None = None,
) -> list[str]:
    """Every record kind: declared ones (audit_events_aggregate_type_idx, a loose index scan)
    and those implied by the create types that exist."""
    declared = conn.execute(select_declared_kinds(table=table)).scalars()
    return sorted(set(declared) | set(kinds_from_types(event_types, rules)))


# --- As of a time ---------------------------------------------------------------------------


def select_kind_aggregates(
    kind: str,
    at: datetime,
    *,
    after: uuid.UUID | None = None,
    limit: int | None = None,
    create_types: Sequence[str] | None = None,
    conditions: Sequence[sa.ColumnElement[bool]] = (),
) -> sa.Select:
    """Ids of the records of ``kind`` that had an event at or before ``at``, in id order
    after ``after`` (keyset on the id), at most ``limit``.

    Records declaring the kind are read from audit_events_aggregate_type_idx
    (((metadata->>'aggregate_type'), aggregate_id)) in id order. With ``create_types``, the
    records without a declared kind created by one of them are added, read from
    audit_events_undeclared_kind_idx ((event_type, aggregate_id), sql/008_ui_indexes.sql)
    in id order; each source is cut at ``limit`` before the two are merged, so a page costs
    ``limit`` index entries per source however many records the kind has.

    ``conditions`` (on audit_events' columns) apply to the rows of every source; add them
    here, not with ``.where()`` on the result, which selects from a merge of subqueries
    when there are two sources.
    """
    _check_limit(limit)
    sources = [sa.select(_c.aggregate_id).where(_has_aggregate_type, _aggregate_type == kind)]
    if create_types:
        sources.append(
            sa.select(_c.aggregate_id).where(
                _undeclared_kind, _c.event_type.in_(list(create_types))
            )
        )
    parts = []
    for source in sources:
        source = source.where(_c.created_at <= at, *conditions)
        if after is not None:
            source = source.where(_c.aggregate_id > after)
        parts.append(source.distinct().order_by(_c.aggregate_id))
    if len(parts) == 1:
        statement = parts[0]
    else:
        merged = sa.union(
            *(sa.select(part.limit(limit).subquery().c.aggregate_id) for part in parts)
        ).subquery()
        statement = sa.select(merged.c.aggregate_id).order_by(merged.c.aggregate_id)
    return statement.limit(limit) if limit is not None else statement


def select_aggregates_events(
    aggregate_ids: Sequence[uuid.UUID], table: db.TableInfo, *, until: datetime, slim: bool = False
) -> sa.Select:
    """The events up to ``until`` of several records, grouped by record and in replay order:
    one query for an as-of page (no query per record), each record's range read from
    audit_events_aggregate_idx."""
    return (
        sa.select(*event_columns(table, slim=slim))
        .where(_c.aggregate_id.in_(list(aggregate_ids)), _c.created_at <= until)
        .order_by(_c.aggregate_id, *_order_columns(table))
    )


# --- Plans ----------------------------------------------------------------------------------

_INDEX_IN_PLAN = re.compile(
    r"(?:Index (?:Only )?Scan(?: Backward)? using|Bitmap Index Scan on) (\S+)"
)


class _Explain(sa.sql.expression.Executable, sa.sql.expression.ClauseElement):
    """``EXPLAIN <statement>`` as one SQLAlchemy construct, so the statement's values are
    bound (and typed) exactly as when it runs."""

    inherit_cache = False

    def __init__(self, statement: sa.Select, analyze: bool, as_json: bool = False):
        self.statement = statement
        self.analyze = analyze
        self.as_json = as_json


@compiles(_Explain, "postgresql")
def _compile_explain(element: _Explain, compiler: Any, **kw: Any) -> str:
    options = ["ANALYZE", "BUFFERS"] if element.analyze else []
    if element.as_json:
        options.append("FORMAT JSON")
    prefix = f"EXPLAIN ({', '.join(options)}) " if options else "EXPLAIN "
    return prefix + compiler.process(element.statement, **kw)


def explain(conn: Connection, statement: sa.Select, *, analyze: bool = False) -> list[str]:
    """The plan of a builder's statement with its own bound values (``EXPLAIN``, or
    ``EXPLAIN (ANALYZE, BUFFERS)``, which runs it). For tests and the benchmark."""
    return [row[0] for row in conn.execute(_Explain(statement, analyze))]


def indexes_in_plan(plan: Iterable[str]) -> list[str]:
    """Names of the indexes a plan reads, in plan order, without repeats."""
    found: list[str] = []
    for line in plan:
        for name in _INDEX_IN_PLAN.findall(line):
            if name not in found:
                found.append(name)
    return found
