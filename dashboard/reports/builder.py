"""Reports from the database: one snapshot, one high-water mark, several passes.

Shared by the web views (:mod:`dashboard.views.reports`) and the ``report`` command, so a
report made by cron and one downloaded from the page are the same document. No Flask.

A compliance PDF is built in passes over one REPEATABLE READ snapshot
(:func:`.csv_export.export_connection`):

1. the high-water mark (``max(seq)``), unless the caller pins one to reproduce a report;
2. the CSV export of the selection, streamed into SHA-256 and discarded: its digest and row
   count go on the cover, in the integrity section and in every footer, so the PDF and the
   CSV downloaded for the same filter and mark can be matched byte for byte;
3. the summary: counts by type, actor and day (GROUP BY over the selection);
4. when the selection is within ``AUDIT_PDF_MAX_EVENTS``: "what each event changed", by
   replaying every record the selection touches (their full histories up to the mark,
   read per batch of records from audit_events_aggregate_idx), then the listing itself
   in ``(created_at, seq)`` order through a server-side cursor, drawn as it arrives.

Personal data is masked for users without ``view_pii`` with :mod:`dashboard.masking`, the
same masker as the pages; a masked CSV goes through Python (:class:`.csv_format.EncodedCsv`)
because COPY cannot apply the masking rules, and its digest is the digest of the masked
file that user would download.
"""

from __future__ import annotations

import array
import bisect
import collections
import dataclasses
import itertools
import json
import operator
import shlex
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import IO, Any, Final
from urllib.parse import urlencode

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection

from .. import db, freshness, queries, replica
from ..config import Settings
from ..diff import Change
from ..events import Event
from ..filters import EventFilter
from ..integrity import check as integrity_check
from ..integrity.heads import head_to_json
from ..masking import MASK, Masker
from ..replay import AggregateState, apply_event, changes_by_event, diff_steps, fold_events
from ..rules import Action, Rule, action_for, derive_kind
from . import pdf
from .csv_export import (
    CsvStream,
    HighWaterMark,
    csv_select,
    kind_column,
    with_kind_column,
    within,
)
from .csv_format import (
    CSV_COLUMNS,
    EncodedCsv,
    event_csv_cells,
    export_filename,
    format_created_at,
    jsonb_text,
    neutralise_formula,
)

__all__ = [
    "AS_OF_COLUMNS",
    "RECORD_COLUMNS",
    "ReportScope",
    "as_of_csv",
    "build_events_pdf",
    "build_record_pdf",
    "events_csv",
    "record_csv",
]

RECORD_COLUMNS: Final = (*CSV_COLUMNS, "changes")
AS_OF_COLUMNS: Final = (
    "aggregate_id",
    "kind",
    "exists",
    "deleted",
    "version",
    "last_event_id",
    "last_event_at",
    "state",
)
REPLAY_BATCH: Final = 500  # records whose histories are read in one query
AS_OF_BATCH: Final = 500
SUMMARY_ACTORS: Final = pdf.MAX_ACTORS
SUMMARY_TYPES: Final = pdf.MAX_TYPES

Progress = Callable[[str, int, int | None], None]  # (stage, done, total or None)


@dataclass(frozen=True)
class ReportScope:
    """Who is asking and under which settings; everything a report needs but the filter."""

    settings: Settings
    table: db.TableInfo
    rules: Sequence[Rule]
    masker: Masker
    generated_by: str
    # The public keys the PDF's tamper-evidence section checks heads with (unset: "not
    # configured" is printed, never a claim).
    key_config: integrity_check.KeyConfig = dataclasses.field(
        default_factory=integrity_check.KeyConfig
    )

    @property
    def masked(self) -> bool:
        return self.masker.active


@dataclass
class ReportResult:
    """What a finished report says about itself (for the access log and the CLI)."""

    rows: int
    sha256: str
    mark: HighWaterMark
    csv_filename: str
    listed: bool = True


# --- Shared pieces ---------------------------------------------------------------------------


def _event_types(conn: Connection, table: db.TableInfo | None = None) -> list[str]:
    return list(conn.execute(queries.select_event_types(table=table)).scalars())


def _create_types(event_types: Iterable[str], rules: Sequence[Rule]) -> list[str]:
    return [t for t in event_types if action_for(t, rules) == "create"]


@dataclass(frozen=True)
class _Types:
    create: list[str]  # every create type, for the kind column
    kind: list[str] | None  # the create types of f.kind, for the kind filter


def _types_for(
    conn: Connection,
    f: EventFilter | None,
    rules: Sequence[Rule],
    table: db.TableInfo | None = None,
) -> _Types:
    event_types = _event_types(conn, table)
    kind = (
        queries.create_types_for_kind(f.kind, event_types, rules)
        if f is not None and f.kind
        else None
    )
    return _Types(create=_create_types(event_types, rules), kind=kind)


def _selection(f: EventFilter, scope: ReportScope, mark: HighWaterMark, types: _Types) -> sa.Select:
    """The selection's events, oldest first, bounded by the mark (the search's builder)."""
    ascending = dataclasses.replace(f, order="asc")
    return queries.select_events(ascending, scope.table, create_types=types.kind).where(
        *within(mark, scope.table)
    )


def events_filename(f: EventFilter, generated_at: datetime, extension: str) -> str:
    return export_filename("audit-events", f.to_args(), generated_at, extension)


def record_filename(aggregate_id: uuid.UUID, generated_at: datetime, extension: str) -> str:
    return export_filename(
        "audit-record", [("aggregate_id", str(aggregate_id))], generated_at, extension
    )


# --- CSV ---------------------------------------------------------------------------------------


def events_csv(
    conn: Connection, scope: ReportScope, f: EventFilter, mark: HighWaterMark
) -> CsvStream | EncodedCsv:
    """The CSV of every event matching ``f`` up to ``mark``: COPY, or Python when masked."""
    types = _types_for(conn, f, scope.rules, scope.table)
    if not scope.masked:
        statement = csv_select(
            f, scope.table, mark, create_types=types.create, kind_create_types=types.kind
        )
        return CsvStream(conn, statement)
    statement = _selection(f, scope, mark, types)
    return EncodedCsv(CSV_COLUMNS, _python_rows(conn, statement, scope, types, mark))


def events_seqs(
    conn: Connection, scope: ReportScope, f: EventFilter, mark: HighWaterMark
) -> list[int]:
    """The seqs of :func:`events_csv`'s rows, in its row order ``(created_at, seq)``: what
    its proof bundle lists (same builder, same snapshot, so the same rows)."""
    types = _types_for(conn, f, scope.rules, scope.table)
    statement = _selection(f, scope, mark, types).with_only_columns(queries.audit_events.c.seq)
    return [int(seq) for seq in conn.execute(statement).scalars()]


def _with_text_columns(
    statement: sa.Select, scope: ReportScope, types: _Types, mark: HighWaterMark
) -> sa.Select:
    c = queries.audit_events.c
    return with_kind_column(statement, scope.table, types.create, mark).add_columns(
        sa.cast(c.payload, sa.Text).label("payload_text"),
        sa.cast(c["metadata"], sa.Text).label("metadata_text"),
    )


def _python_rows(
    conn: Connection,
    statement: sa.Select,
    scope: ReportScope,
    types: _Types,
    mark: HighWaterMark,
    changes: Callable[[Any], list[dict[str, Any]]] | None = None,
) -> Iterator[list[str | None]]:
    """CSV cells per row, masked; the Python twin of the COPY projection."""
    masker = scope.masker
    # Per statement: Connection.execution_options() would set yield_per on the export's
    # connection for good, and every later statement (a SAVEPOINT too) would run as a
    # server-side cursor.
    result = conn.execute(
        _with_text_columns(statement, scope, types, mark),
        execution_options={"yield_per": queries.STREAM_BATCH},
    )
    try:
        for row in result:
            event = Event.from_row(row)
            payload, metadata = event.payload, event.metadata
            payload_text, metadata_text = row.payload_text, row.metadata_text
            if masker.active:
                event = masker.mask_event(event)
                payload, metadata = event.payload, event.metadata
                payload_text = metadata_text = None  # print the masked documents
            cells = event_csv_cells(
                created_at=event.created_at,
                seq=event.seq,
                event_id=event.event_id,
                aggregate_id=event.aggregate_id,
                kind=row.kind,
                event_type=event.event_type,
                payload=payload,
                metadata=metadata,
                payload_text=payload_text,
                metadata_text_value=metadata_text,
            )
            if changes is not None:
                cells.append(neutralise_formula(jsonb_text(changes(event))))
            yield cells
    finally:
        result.close()


def record_csv(
    conn: Connection, scope: ReportScope, aggregate_id: uuid.UUID, mark: HighWaterMark
) -> EncodedCsv:
    """One record's complete history: the event columns plus ``changes``, the JSON list of
    ``{"path", "op", "old", "new"}`` each event made to the reconstructed state (masked).

    Replay is Python, so this CSV is written by Python; a record's history is read in one
    ordered pass of audit_events_aggregate_idx and folded as it streams.
    """
    types = _types_for(conn, None, scope.rules, scope.table)
    statement = queries.select_aggregate_events(aggregate_id, scope.table).where(
        *within(mark, scope.table)
    )
    stepper = _ChangeStepper(scope)
    return EncodedCsv(
        RECORD_COLUMNS, _python_rows(conn, statement, scope, types, mark, stepper.changes_of)
    )


class _ChangeStepper:
    """Folds one record's events as the CSV rows pass by, giving each event's changes."""

    def __init__(self, scope: ReportScope):
        self.scope = scope
        self.before = AggregateState.initial()

    def changes_of(self, event: Event) -> list[dict[str, Any]]:
        after = apply_event(self.before, event, self.scope.rules)
        changes = diff_steps(self.before, after, self.scope.settings.identity_key)
        self.before = after
        return [self.scope.masker.mask_change(change.to_json()) for change in changes]


def as_of_csv(
    conn: Connection,
    scope: ReportScope,
    kind: str,
    at: datetime,
    mark: HighWaterMark,
    create_types: Sequence[str] | None,
) -> EncodedCsv:
    """Every record of ``kind`` as it was at ``at``: one row per record, the state as JSON.

    Pages through the record ids by keyset (:data:`AS_OF_BATCH` at a time) and replays each
    batch in one query, so memory stays flat however many records the kind has.
    """

    def rows() -> Iterator[list[str | None]]:
        after: uuid.UUID | None = None
        while True:
            ids = list(
                conn.execute(
                    queries.select_kind_aggregates(
                        kind,
                        at,
                        after=after,
                        limit=AS_OF_BATCH,
                        create_types=create_types,
                        # not .where(): with two sources that would add a cross join
                        conditions=within(mark, scope.table),
                    )
                ).scalars()
            )
            if not ids:
                return
            after = ids[-1]
            statement = (
                sa.select(*queries.event_columns(scope.table))
                .where(
                    queries.audit_events.c.aggregate_id.in_(ids),
                    queries.audit_events.c.created_at <= at,
                    *within(mark, scope.table),
                )
                .order_by(queries.audit_events.c.aggregate_id, *_order(scope.table))
            )
            events = queries.iter_events(conn, statement)
            for aggregate_id, group in itertools.groupby(events, key=lambda e: e.aggregate_id):
                history = list(group)
                steps = collections.deque(fold_events(history, scope.rules), maxlen=1)
                if not steps:
                    continue
                last = steps[0]
                state = scope.masker.mask_document(last.state) if last.state is not None else None
                record_kind = _record_kind(history, scope.rules) or kind
                yield [
                    aggregate_id,
                    neutralise_formula(record_kind),
                    "true" if last.exists else "false",
                    "true" if last.deleted else "false",
                    str(last.version),
                    last.last_event.event_id if last.last_event else None,
                    _iso(last.last_event.created_at) if last.last_event else None,
                    neutralise_formula(jsonb_text(state)),
                ]
            if len(ids) < AS_OF_BATCH:
                return

    return EncodedCsv(AS_OF_COLUMNS, rows())


def _record_kind(history: Sequence[Event], rules: Sequence[Rule]) -> str | None:
    create = next((e for e in history if action_for(e.event_type, rules) == "create"), None)
    declared = next(
        (
            e.metadata
            for e in history
            if isinstance(e.metadata, dict) and e.metadata.get("aggregate_type")
        ),
        None,
    )
    return derive_kind(create.event_type if create else None, declared)


class _FirstPass:
    """What the record report's cover needs of a history, gathered as it streams by:
    its first event's time and what :func:`_record_kind` would say of it."""

    def __init__(self, rules: Sequence[Rule]):
        self.rules = rules
        self.earliest: datetime | None = None
        self.create_type: str | None = None
        self.declared: Any = None

    def watch(self, events: Iterable[Event]) -> Iterator[Event]:
        for event in events:
            if self.earliest is None:
                self.earliest = event.created_at
            if self.create_type is None and action_for(event.event_type, self.rules) == "create":
                self.create_type = event.event_type
            if (
                self.declared is None
                and isinstance(event.metadata, dict)
                and event.metadata.get("aggregate_type")
            ):
                self.declared = event.metadata
            yield event

    def kind(self) -> str | None:
        return derive_kind(self.create_type, self.declared)


def _iso(moment: datetime) -> str:
    return format_created_at(moment)


def _order(table: db.TableInfo):
    c = queries.audit_events.c
    return (c.created_at, c.seq if table.has_seq else c.event_id)


def drain(stream: Iterable[bytes]) -> None:
    """Run a CSV stream to its end, keeping nothing but its digest and count."""
    for _chunk in stream:
        pass


# --- Summary -----------------------------------------------------------------------------------


def _top(
    conn: Connection, key: sa.ColumnElement[Any], limit: int
) -> tuple[list[tuple[Any, int]], tuple[int, int]]:
    """The ``limit`` largest groups of ``key`` and ``(other groups, their events)``.

    Window functions over the grouped rows give the number of groups and the total, so
    only ``limit`` rows come back however many distinct actors a period has.
    """
    count = sa.func.count()
    statement = (
        sa.select(
            key.label("key"),
            count.label("count"),
            sa.func.count().over().label("groups"),
            sa.func.sum(count).over().label("total"),
        )
        .group_by(key)
        .order_by(count.desc(), key)
        .limit(limit)
    )
    rows = list(conn.execute(statement))
    if not rows:
        return [], (0, 0)
    listed = [(row.key, int(row.count)) for row in rows]
    groups, total = int(rows[0].groups), int(rows[0].total)
    return listed, (groups - len(listed), total - sum(n for _k, n in listed))


def _summary(conn: Connection, scope: ReportScope, selection: sa.Select) -> pdf.Summary:
    """Counts over the whole selection (the cap never applies to them)."""
    rows = selection.order_by(None).subquery("selection")
    types, other_types = _top(conn, rows.c.event_type, SUMMARY_TYPES)
    if scope.masked:
        # The actor as JSON, so an actor object can be masked key by key before it is shown.
        actor = rows.c["metadata"].op("->", return_type=JSONB)(sa.literal_column("'actor'"))
        actors, other_actors = _masked_actors(*_top(conn, actor, SUMMARY_ACTORS), scope.masker)
    else:
        actor = rows.c["metadata"].op("->>", return_type=sa.Text)(sa.literal_column("'actor'"))
        actors, other_actors = _top(conn, actor, SUMMARY_ACTORS)
    count = sa.func.count().label("count")
    day = sa.cast(sa.func.timezone(sa.literal_column("'UTC'"), rows.c.created_at), sa.Date)
    by_day = list(conn.execute(sa.select(day.label("day"), count).group_by(day).order_by(day)))
    return pdf.Summary(
        by_type=types,
        other_types=other_types,
        by_actor=actors,
        other_actors=other_actors,
        by_day=[(row.day, row.count) for row in by_day if isinstance(row.day, date)],
    )


def _masked_actors(
    actors: list[tuple[Any, int]], other: tuple[int, int], masker: Masker
) -> tuple[list[tuple[str | None, int]], tuple[int, int]]:
    """The largest actor groups as :meth:`Masker.mask_actor` shows them: groups that mask
    to the same text (every e-mail address becomes MASK) are counted as one. When every
    actor is masked (``actor`` in AUDIT_MASK_FIELDS) the other groups join them too."""
    counts: dict[str | None, int] = {}
    for actor, n in actors:
        shown = masker.mask_actor(actor)
        label = shown if shown is None or isinstance(shown, str) else jsonb_text(shown)
        counts[label] = counts.get(label, 0) + n
    if masker.mask_pointer("/actor"):
        total = sum(counts.values()) + other[1]
        return ([(MASK, total)] if total else []), (0, 0)
    return sorted(counts.items(), key=lambda item: -item[1]), other


# --- Changes per event -------------------------------------------------------------------------


def _masked_changes(changes: Sequence[Change], masker: Masker) -> tuple[Change, ...]:
    if not masker.active:
        return tuple(changes)
    masked = []
    for change in changes:
        values = masker.mask_change(
            {"path": change.path, "op": change.op, "old": change.old, "new": change.new}
        )
        masked.append(Change(values["path"], values["op"], values["old"], values["new"]))
    return tuple(masked)


def _changes_for(
    conn: Connection,
    scope: ReportScope,
    selection: sa.Select,
    mark: HighWaterMark,
    progress: Progress | None,
) -> _ChangeSpool:
    """What each selected event changed, in words (:func:`.pdf.change_text`, masked).

    Each record the selection touches is read once (a batch of records per query, from
    audit_events_aggregate_idx, only up to the last selected event) and folded without
    provenance; only the selected events are diffed, each against its record's state just
    before it. What is kept per event, under its seq (its id on a table without seq), is
    the few short lines the listing prints, never the changes themselves (whose values
    may be whole records): a few hundred bytes per listed event; the listing pops each
    entry as it draws it.
    Only called when the selection is within the PDF cap, so the map is bounded by it.
    """
    c = queries.audit_events.c
    by_seq = scope.table.has_seq
    picked = selection.order_by(None).with_only_columns(
        c.seq if by_seq else c.event_id, c.aggregate_id, c.created_at, maintain_column_froms=False
    )
    seqs = array.array("q")  # 8 bytes per listed event; a set of ints takes about 70
    ids: set[str] = set()
    aggregates: set[uuid.UUID] = set()
    latest: datetime | None = None
    result = conn.execute(picked, execution_options={"yield_per": queries.STREAM_BATCH})
    try:
        for key, aggregate_id, created_at in result:
            if by_seq:
                seqs.append(key)
            else:
                ids.add(str(key))
            aggregates.add(aggregate_id)
            latest = created_at if latest is None or created_at > latest else latest
    finally:
        result.close()
    wanted: _SortedSeqs | set[str] = _SortedSeqs(seqs) if by_seq else ids
    ordered = sorted(aggregates, key=operator.attrgetter("int"))  # UUID order, compared in C
    del aggregates
    found = _ChangeSpool()
    identity_key = scope.settings.identity_key
    masker = scope.masker
    actions: dict[str, Action] = {}  # event type -> action, for every record's fold
    for start in range(0, len(ordered), REPLAY_BATCH):
        batch = ordered[start : start + REPLAY_BATCH]
        statement = replay_select(scope.table, batch, mark, latest)
        events = queries.iter_events(conn, statement)
        for _aggregate, group in itertools.groupby(events, key=lambda e: e.aggregate_id):
            before = AggregateState.initial()
            for after in fold_events(group, scope.rules, provenance=False, actions=actions):
                event = after.last_event
                key = event.seq if by_seq else event.event_id
                if key in wanted:
                    # Diff only the selected events; the rest are folded, not compared.
                    changes = _masked_changes(diff_steps(before, after, identity_key), masker)
                    found.put(key, pdf.change_text(changes, after.anomalies))
                before = after
        if progress:
            progress("replay", min(start + REPLAY_BATCH, len(ordered)), len(ordered))
    return found


class _SortedSeqs:
    """A set of seqs in at most 8 bytes each (a set of ints takes about 70).

    A bitmap over the span of seqs when that is no larger (a period's events are mostly
    consecutive seqs): membership is one index, which matters because every replayed
    event is looked up, hundreds of thousands for a 100,000-event listing. Otherwise
    (a sparse selection in a long table) one sorted array, searched by bisection.
    """

    def __init__(self, seqs: array.array):
        self.low = min(seqs, default=0)
        span = max(seqs, default=-1) - self.low + 1
        self.bits: bytearray | None = None
        self.seqs: array.array | None = None
        if span <= 64 * len(seqs):
            self.bits = bytearray((span + 7) // 8)
            for seq in seqs:
                offset = seq - self.low
                self.bits[offset >> 3] |= 1 << (offset & 7)
        elif all(itertools.starmap(operator.le, itertools.pairwise(seqs))):
            self.seqs = seqs
        else:
            self.seqs = array.array("q", sorted(seqs))

    def __contains__(self, seq: object) -> bool:
        if self.bits is not None:
            offset = seq - self.low  # type: ignore[operator]
            return 0 <= offset < 8 * len(self.bits) and bool(
                self.bits[offset >> 3] & (1 << (offset & 7))
            )
        assert self.seqs is not None
        index = bisect.bisect_left(self.seqs, seq)
        return index < len(self.seqs) and self.seqs[index] == seq


def replay_select(
    table: db.TableInfo,
    aggregate_ids: Sequence[uuid.UUID],
    mark: HighWaterMark,
    until: datetime | None,
) -> sa.Select:
    """The histories of a batch of records, in record then replay order, up to ``until``
    (the last listed event: a record's later events cannot change what an earlier one
    did), slim columns without the metadata (the changes do not depend on who acted), from
    audit_events_aggregate_idx (tests/test_query_plans.py)."""
    c = queries.audit_events.c
    return (
        sa.select(*queries.event_columns(table, slim=True, metadata=False))
        .where(
            c.aggregate_id.in_(aggregate_ids),
            *within(mark, table),
            *([c.created_at <= until] if until is not None else []),
        )
        .order_by(c.aggregate_id, *_order(table))
    )


class _ChangeSpool:
    """The lines each listed event's "fields changed" cell prints, from the replay (in
    record order) to the listing (in time order).

    Kept in a spooled temporary file (in memory up to :data:`SPOOL_IN_MEMORY` bytes, on
    disk past it): memory holds one int per listed event (where its lines are), so a
    100,000-event listing costs about 10 MB here instead of tens. Each entry is read back
    and forgotten when the listing draws it.
    """

    SPOOL_IN_MEMORY: Final = 1 << 20
    _JOIN: Final = "\x00"  # never in a JSON key or value PostgreSQL stores (jsonb)

    def __init__(self, in_memory: int = SPOOL_IN_MEMORY) -> None:
        # Closed by close() when the listing ends (or with the object).
        self.file = tempfile.SpooledTemporaryFile(  # noqa: SIM115
            max_size=in_memory, prefix="audit-pdf-changes-"
        )
        self.where: dict[int | str, int] = {}  # key -> offset << 24 | length
        self.end = 0

    def put(self, key: int | str, lines: tuple[str, ...]) -> None:
        if any(self._JOIN in line for line in lines):
            data = b"J" + json.dumps(lines).encode()
        else:
            data = b"T" + self._JOIN.join(lines).encode()
        self.file.seek(self.end)
        self.file.write(data)
        self.where[key] = self.end << 24 | len(data)  # a cell's lines are a few KB at most
        self.end += len(data)

    def pop(self, key: int | str) -> tuple[str, ...] | None:
        spot = self.where.pop(key, None)
        if spot is None:
            return None
        self.file.seek(spot >> 24)
        data = self.file.read(spot & 0xFFFFFF)
        if data[:1] == b"J":
            return tuple(json.loads(data[1:]))
        return tuple(data[1:].decode().split(self._JOIN))

    def close(self) -> None:
        self.file.close()


def _listing_select(
    selection: sa.Select, kind: sa.ColumnElement[Any], kinds: sa.LateralFromClause | None
) -> sa.Select:
    """The listing needs no payload: only what the columns show (the changes come from the
    replay), which spares decoding every payload a second time."""
    c = queries.audit_events.c
    actor = c["metadata"].op("->", return_type=JSONB)(sa.literal_column("'actor'"))
    seq = selection.selected_columns.seq
    if kinds is not None:
        selection = selection.outerjoin(kinds, sa.true())
    return selection.with_only_columns(
        c.event_id,
        seq,
        c.aggregate_id,
        c.event_type,
        c.created_at,
        actor.label("actor"),
        kind,
        maintain_column_froms=False,
    )


def _listing(
    conn: Connection,
    scope: ReportScope,
    statement: sa.Select,
    changes: _ChangeSpool,
) -> Iterator[pdf.ListingRow]:
    masker = scope.masker
    by_seq = scope.table.has_seq
    unchanged = pdf.change_text(())
    result = conn.execute(statement, execution_options={"yield_per": queries.STREAM_BATCH})
    try:
        for row in result:
            lines = changes.pop(row.seq if by_seq else str(row.event_id))  # drawn once
            yield pdf.ListingRow(
                created_at=row.created_at,
                seq=row.seq,
                aggregate_id=str(row.aggregate_id),
                event_type=row.event_type,
                actor=masker.mask_actor(row.actor),
                kind=row.kind,
                change_text=unchanged if lines is None else lines,
            )
    finally:
        result.close()
        changes.close()


# --- The compliance PDF ------------------------------------------------------------------------


def tamper_evidence_rows(sealed: integrity_check.SelectionCheck) -> list[tuple[str, str]]:
    """The PDF cover's tamper-evidence section: the signed head the listed events were
    checked against, and what the check at export time found, in words."""
    rows: list[tuple[str, str]] = []
    head = sealed.head
    if head is not None:
        signed = head_to_json(head)
        rows += [
            (
                "Signed tree head",
                f"#{head.number}, sealed {signed['sealed_at']}, tree size {head.tree_size:,}, "
                f"up to seq {head.last_seq}",
            ),
            ("Root", head.root.hex()),
            ("Key id", head.key_id),
            ("Signature (Ed25519)", signed["signature"]),
        ]
    status = sealed.status
    if status == integrity_check.NOT_CONFIGURED:
        verdict = "Not checked: integrity not configured (no public key in AUDIT_PUBLIC_KEY_FILES)."
    elif status == integrity_check.UNAVAILABLE:
        verdict = f"Not checked: integrity could not be checked: {sealed.message}."
    elif status == integrity_check.NOTHING_SEALED:
        verdict = "Not checked: nothing is sealed yet."
    elif status == "not_checked":
        verdict = f"Not checked: {sealed.message}."
    elif status == integrity_check.OK:
        verdict = (
            f"{sealed.verified:,} of {sealed.events:,} listed events verified against "
            f"head #{head.number}"
        )
        verdict += f"; {sealed.unsealed:,} not yet sealed." if sealed.unsealed else "."
    else:
        count = len(sealed.findings) + sealed.more_findings
        verdict = (
            f"PROBLEM: {count:,} finding{'s' if count != 1 else ''} — "
            + "; ".join(str(finding) for finding in sealed.findings)
            + (f"; and {sealed.more_findings:,} more" if sealed.more_findings else "")
            + f". {sealed.verified:,} of {sealed.events:,} listed events verified."
        )
    rows.append(("Check at export", verdict))
    return rows


def period_text(f: EventFilter) -> str:
    """The period in words: ``from`` is inclusive, ``to`` exclusive (as in every filter)."""
    if f.time_from is None and f.time_to is None:
        return "All time, up to the high-water mark"
    start = f.format_time(f.time_from) if f.time_from else "the first event"
    end = f"{f.format_time(f.time_to)} (exclusive)" if f.time_to else "the high-water mark"
    return f"{start} to {end}"


def _reproduce_rows(f: EventFilter, mark: HighWaterMark, csv_name: str) -> list[tuple[str, str]]:
    """How to make the same CSV again: the web export and, for a bounded period, the
    ``report`` command (its flags are the URL arguments with dashes)."""
    args = [(name, value) for name, value in f.to_args() if name != "order"]
    web = list(args)
    cli = ["audit-dashboard report"]
    cli += [f"--{name.replace('_', '-')} {_shell_quote(value)}" for name, value in args]
    if mark.seq is not None:
        cli.append(f"--through-seq {mark.seq}")
        web.append(("through_seq", str(mark.seq)))
    cli.append(f"--format csv --output {_shell_quote(csv_name)}")
    rows = [("Same CSV from the web", "/export/events.csv?" + urlencode(web))]
    if f.time_from is not None and f.time_to is not None:
        rows.insert(0, ("Same CSV from the command line", " ".join(cli)))
    if mark.seq is None:
        rows.append(
            (
                "Note",
                "This table has no seq column: the high-water mark is a time, and events "
                "written in the same transaction as the newest one may differ on a rerun.",
            )
        )
    return rows


def _replica_rows(conn: Connection) -> list[tuple[str, str]]:
    """The cover's "Read from" row when the report was read from a hot standby: how far it
    had replayed the primary's WAL (position and commit time), so the report can be placed
    against the primary's history. Nothing on a primary."""
    position = freshness.report_position(replica.read_status(conn))
    return [("Read from", position)] if position else []


def _shell_quote(value: str) -> str:
    return shlex.quote(value)


def build_events_pdf(
    out: IO[bytes],
    conn: Connection,
    scope: ReportScope,
    f: EventFilter,
    mark: HighWaterMark,
    *,
    generated_at: datetime | None = None,
    progress: Progress | None = None,
) -> ReportResult:
    """Write the compliance PDF of ``f`` up to ``mark`` to ``out``; see the module doc."""
    generated_at = generated_at or datetime.now(UTC)
    f = dataclasses.replace(f, order="asc")
    csv_name = events_filename(f, generated_at, "csv")
    cap = scope.settings.pdf_max_events
    if progress:
        progress("digest", 0, None)
    stream = events_csv(conn, scope, f, mark)
    drain(stream)
    assert stream.sha256 is not None
    if progress:
        progress("digest", stream.rows, stream.rows)
    types = _types_for(conn, f, scope.rules, scope.table)
    selection = _selection(f, scope, mark, types)
    summary = _summary(conn, scope, selection)
    sealed = integrity_check.check_selection(conn, selection, scope.key_config, cap=cap)
    facts = pdf.ReportFacts(
        title="Audit events report",
        organisation=scope.settings.org_name,
        facts=[
            ("Period", period_text(f)),
            ("Filter", f.describe()),
            ("Generated at", generated_at.isoformat(timespec="seconds")),
            ("Generated by", scope.generated_by),
            ("Data high-water mark", mark.describe()),
            *_replica_rows(conn),
            ("Personal data", "masked (no view_pii permission)" if scope.masked else "shown"),
        ],
        event_count=stream.rows,
        csv_sha256=stream.sha256,
        csv_filename=csv_name,
        reproduce=_reproduce_rows(f, mark, csv_name),
        subject=f.describe(),
        tamper_evidence=tamper_evidence_rows(sealed),
    )
    listed = stream.rows <= cap
    rows: Iterable[pdf.ListingRow] | None = None
    if listed and stream.rows:
        changes = _changes_for(conn, scope, selection, mark, progress)
        listing = _listing_select(selection, *kind_column(scope.table, types.create, mark))
        rows = _listing(conn, scope, listing, changes)

    def listing_progress(done: int) -> None:
        if progress:
            progress("listing", done, stream.rows)

    pdf.render_events_report(out, facts, summary, rows, cap=cap, progress=listing_progress)
    return ReportResult(stream.rows, stream.sha256, mark, csv_name, listed=listed)


# --- The record history PDF --------------------------------------------------------------------


def build_record_pdf(
    out: IO[bytes],
    conn: Connection,
    scope: ReportScope,
    aggregate_id: uuid.UUID,
    mark: HighWaterMark,
    *,
    generated_at: datetime | None = None,
    progress: Progress | None = None,
) -> ReportResult:
    """One record's complete history as PDF: final state, integrity, timeline with diffs."""
    generated_at = generated_at or datetime.now(UTC)
    csv_name = record_filename(aggregate_id, generated_at, "csv")
    stream = record_csv(conn, scope, aggregate_id, mark)
    drain(stream)
    assert stream.sha256 is not None
    statement = queries.select_aggregate_events(aggregate_id, scope.table).where(
        *within(mark, scope.table)
    )
    sealed = integrity_check.check_selection(
        conn, statement, scope.key_config, cap=scope.settings.pdf_max_events
    )
    # Two streamed passes, so a long history is never held whole: the first folds it for
    # the cover (final state, kind, period), the second diffs it as the timeline is drawn.
    first = _FirstPass(scope.rules)
    history = first.watch(queries.iter_events(conn, statement))
    last = collections.deque(fold_events(history, scope.rules, provenance=False), maxlen=1)
    final = last[0] if last else AggregateState.initial()
    kind = first.kind()
    if final.last_event is None:
        label = "No events: this record does not exist in the audit trail."
    elif final.deleted:
        label = f"Deleted; its last state before deletion, after {final.version} events:"
    else:
        label = f"Current state after {final.version} events:"
    state = final.state
    if state is not None and scope.masked:
        state = scope.masker.mask_document(state)
    facts = pdf.ReportFacts(
        title="Record history",
        organisation=scope.settings.org_name,
        facts=[
            ("Record", str(aggregate_id)),
            ("Kind", kind or "unknown"),
            (
                "Period",
                f"{_iso(first.earliest)} to {_iso(final.last_event.created_at)}"
                if first.earliest is not None and final.last_event is not None
                else "no events",
            ),
            ("Generated at", generated_at.isoformat(timespec="seconds")),
            ("Generated by", scope.generated_by),
            ("Data high-water mark", mark.describe()),
            *_replica_rows(conn),
            ("Personal data", "masked (no view_pii permission)" if scope.masked else "shown"),
        ],
        event_count=stream.rows,
        csv_sha256=stream.sha256,
        csv_filename=csv_name,
        reproduce=[
            (
                "Same CSV from the web",
                f"/export/aggregates/{aggregate_id}.csv"
                + (f"?through_seq={mark.seq}" if mark.seq is not None else ""),
            )
        ],
        subject=f"History of record {aggregate_id}",
        tamper_evidence=tamper_evidence_rows(sealed),
    )
    steps = changes_by_event(
        queries.iter_events(conn, statement),
        scope.rules,
        scope.settings.identity_key,
        provenance=False,
    )
    rows = (
        pdf.ListingRow(
            created_at=step.last_event.created_at,
            seq=step.last_event.seq,
            aggregate_id=step.last_event.aggregate_id,
            event_type=step.last_event.event_type,
            actor=scope.masker.mask_actor(step.last_event.actor),
            kind=kind,
            changes=_masked_changes(changes, scope.masker),
            anomalies=step.anomalies,
        )
        for step, changes in steps
        if step.last_event is not None
    )
    pdf.render_record_report(
        out,
        facts,
        rows,
        state if final.last_event is not None else None,
        state_label=label,
        full_state_url=f"/api/aggregates/{aggregate_id}/state",
        progress=(lambda done: progress("listing", done, stream.rows)) if progress else None,
    )
    return ReportResult(stream.rows, stream.sha256, mark, csv_name)
