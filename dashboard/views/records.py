"""One record and its neighbourhood: the record page, look-up, compare, as-of, request.

The record page reads the record's events with one indexed query
(audit_events_aggregate_idx), streamed, folds them once (:class:`RecordHistory`) and
answers the timeline page, what each event changed, the state at any time with per-field
provenance, and one field's history from that fold: no query per event, so a record with
10,000 events is one pass.

Every page's state is in its URL (timeline position, ``at``, ``field``), every value it
shows goes through :mod:`dashboard.views.present` (masking), and each view notes what it
showed in the access log.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    url_for,
)

from .. import access_log, context, queries
from ..events import Event
from ..filters import (
    DEFAULT_LIMIT,
    Cursor,
    FilterError,
    Problems,
    check_arg_names,
    decode_id_cursor,
    encode_id_cursor,
    parse_aggregate_id,
    parse_event_id,
    parse_limit,
    parse_paging,
    parse_time,
    parse_timezone,
)
from ..history import HistoryCache
from ..integrity import check as integrity_check
from ..jsonpointer import MISSING, PointerError, split_pointer
from ..permissions import VIEW_ACCESS_LOG
from ..replay import diff_steps
from ..timeline import RecordHistory, final_states
from . import present

bp = Blueprint("records", __name__)

AS_OF_PAGE = 50
AS_OF_COLUMNS = 10  # top-level fields shown as columns; the rest are in the record page
RECORD_ARGS = (
    "at",
    "tz",
    "cursor",
    "before",
    "limit",
    "order",
    "event",
    "field",
    "fields_from",
    "history_from",
    "reason",
)
# Bounded pages of the record page's panels (README, "Limits"): a state with 100,000
# fields, or a field changed by 50,000 events, is shown a page at a time. An array is one
# field there (summarised, present.ARRAY_ITEMS_SHOWN items on request).
STATE_FIELDS_PAGE = 200
# Fields of a state page shown open; the rest of the page folds behind "show N more", so
# the timeline stays near the top of the page.
STATE_ROWS_OPEN = 12
FIELD_HISTORY_PAGE = 100
MAX_OFFSET_DIGITS = 9


def record_history(record_id: uuid.UUID) -> RecordHistory | None:
    """Every event of a record folded (:class:`RecordHistory`), or None when it has none.

    One index-only look-up counts the record's events; for a record the history cache
    keeps (1,000+ events), a digest of the content of its rows
    (:func:`queries.select_aggregate_digest`) says whether it is still what was folded.
    Otherwise one streamed query (audit_events_aggregate_idx, slim metadata) and one fold.
    """
    conn = context.connection()
    table = context.table_info()
    summary = conn.execute(queries.select_aggregate_summary(record_id, table)).one()
    if not summary.event_count:
        return None
    cache = current_app.extensions.setdefault("audit_history_cache", HistoryCache())
    key = str(record_id)
    version = None
    span = (summary.first_at, summary.last_at)
    if table.has_seq and cache.keeps(summary.event_count):
        # Read before the events: a change in between only costs a miss next time.
        digest = conn.execute(queries.select_aggregate_digest(record_id, span)).scalar_one()
        version = (summary.event_count, summary.last_seq, summary.last_at, bytes(digest))
        if (history := cache.get(key, version)) is not None:
            return history
    statement = queries.select_aggregate_events(record_id, table, slim=True, between=span)
    history = RecordHistory(queries.iter_events(conn, statement), context.app_context().rules)
    if version is not None and len(history) == summary.event_count:
        cache.put(key, version, history)
    return history


@dataclass(frozen=True)
class RecordArgs:
    """The record page's arguments, parsed once."""

    at: datetime | None = None
    tz: str = "UTC"
    cursor: Cursor | None = None
    backward: bool = False
    limit: int = DEFAULT_LIMIT
    order: str = "desc"
    event: str | None = None
    field: str | None = None
    fields_from: int = 0
    history_from: int = 0


def _parse_offset(text: str | None, name: str) -> int:
    if text is None or text.strip() == "":
        return 0
    text = text.strip()
    if not text.isdigit() or len(text) > MAX_OFFSET_DIGITS:
        raise FilterError(f"{name} must be a whole number (a position in the list).", name)
    return int(text)


def _parse_record_args(args, default_tz: str) -> RecordArgs:
    """Every bad argument at once (FilterError with each problem)."""
    problems = Problems()
    problems.check(check_arg_names, args, RECORD_ARGS)
    tz = problems.check(parse_timezone, args.get("tz") or default_tz) or "UTC"
    paging = problems.check(parse_paging, args)
    order = args.get("order") or "desc"
    if order not in ("asc", "desc"):
        problems.add(
            FilterError("Order must be 'desc' (newest first) or 'asc' (oldest first).", "order")
        )
    event = problems.check(parse_event_id, args.get("event"), "event")
    pointer = args.get("field") or None
    if pointer is not None:
        try:
            split_pointer(pointer)
        except PointerError as exc:
            problems.add(
                FilterError(
                    f"{exc.reason}; a field is a JSON Pointer such as /address/city.", "field"
                )
            )
    at = problems.check(parse_time, args.get("at"), "at", tz=tz)
    fields_from = problems.check(_parse_offset, args.get("fields_from"), "fields_from")
    history_from = problems.check(_parse_offset, args.get("history_from"), "history_from")
    problems.raise_any()
    assert paging is not None  # parsed without a problem
    return RecordArgs(
        at=at,
        tz=tz,
        cursor=paging.cursor,
        backward=paging.backward,
        limit=paging.limit,
        order=order,
        event=str(event) if event else None,
        field=pointer,
        fields_from=fields_from or 0,
        history_from=history_from or 0,
    )


@bp.get("/aggregates/<aggregate_id>")
def record(aggregate_id: str):
    """A record's history: header, state at a time with provenance, timeline, field history."""
    settings = context.settings()
    try:
        record_id = parse_aggregate_id(aggregate_id)
    except FilterError as exc:
        return _lookup_page(aggregate_id, exc.message, 400)
    if record_id is None:
        return _lookup_page("", "Give a record id (a UUID).", 400)
    refused = access_log.require_reason(record_id)
    if refused is not None:
        return refused
    error: FilterError | None = None
    try:
        args = _parse_record_args(request.args, settings.display_timezone)
    except FilterError as exc:
        error = exc
        args = RecordArgs(tz=settings.display_timezone)
    conn = context.connection()
    table = context.table_info()
    rules = context.app_context().rules
    # The fold reads slim metadata; the shown page's events are re-read whole below.
    history = record_history(record_id)
    if history is None:
        access_log.note(action="view_record", aggregate_ids=[record_id], row_count=0)
        return _lookup_page(str(record_id), f"No events for record {record_id}.", 404)

    mask = present.masker()
    now = datetime.now(UTC)
    at = args.at or now.replace(microsecond=0)
    window = history.window(
        order=args.order,
        limit=args.limit,
        cursor=args.cursor,
        backward=args.backward,
        anchor=args.event,
    )
    identity_key = settings.identity_key
    kind = history.kind
    shown = [history.events[index].event_id for index in window.indices]
    times = [history.events[index].created_at for index in window.indices]
    statement = queries.select_events_by_id(
        shown, table, between=(min(times), max(times)) if times else None
    )
    whole = {event.event_id: event for event in queries.iter_events(conn, statement, stream=False)}
    rows = [
        present.event_row(
            whole[history.events[index].event_id],
            mask,
            rules,
            args.tz,
            changes=history.changes_at(index, identity_key),
            anomalies=history.steps[index].anomalies,
            now=now,
            kind=kind,
            with_payload=True,
        )
        for index in window.indices
    ]
    # Each shown event re-read and proven against the newest signed head (never the cache).
    integrity = integrity_check.check_events(conn, shown, context.integrity_keys())
    step = history.step_at(at)
    # One page of the state's leaves (one more, to know whether there is a next page).
    state_page = present.state_fields(
        step, mask, args.tz, offset=args.fields_from, limit=STATE_FIELDS_PAGE + 1, whole_arrays=True
    )
    more_fields = len(state_page) > STATE_FIELDS_PAGE
    state_page = state_page[:STATE_FIELDS_PAGE]
    field_changes = None
    field_total = 0
    if args.field is not None:
        every_change = history.field_history(args.field)
        field_total = len(every_change)
        shown_changes = every_change[args.history_from : args.history_from + FIELD_HISTORY_PAGE]
        field_changes = [
            _field_change_row(change, args.field, mask, args.tz) for change in shown_changes
        ]
    viewers = None
    if g.user.can(VIEW_ACCESS_LOG):
        # In the page's zone, like every other time on it.
        viewers = [
            (entry, present.format_time(entry.at, args.tz), present.iso_utc(entry.at))
            for entry in access_log.viewers_of(record_id)
        ]
    # Complete now (its viewers were read without it): stored while the page renders.
    access_log.write_ahead(
        action="view_record",
        aggregate_ids=[record_id],
        row_count=len(rows),
        filters={"at": at.isoformat(), **({"field": args.field} if args.field else {})},
    )
    base_args = _record_base_args(args)
    return (
        render_template(
            "records/record.html",
            aggregate_id=str(record_id),
            kind=kind,
            first=history.events[0],
            last=history.events[-1],
            first_time=present.format_time(history.events[0].created_at, args.tz),
            last_time=present.format_time(history.events[-1].created_at, args.tz),
            event_count=len(history),
            final=history.final,
            anomalies=history.final.anomaly_log,
            rows=rows,
            args=args,
            at=at,
            at_input=present.input_time(at, args.tz),
            at_text=present.format_time(at, args.tz),
            at_given=args.at is not None,
            step=step,
            state_fields=state_page,
            state_rows_open=STATE_ROWS_OPEN,
            payload_preview=present.PAYLOAD_PREVIEW,
            fields_from=args.fields_from,
            more_fields_url=_offset_link(
                record_id, base_args, "fields_from", args.fields_from + STATE_FIELDS_PAGE, "state"
            )
            if more_fields
            else None,
            fewer_fields_url=_offset_link(
                record_id,
                base_args,
                "fields_from",
                max(0, args.fields_from - STATE_FIELDS_PAGE),
                "state",
            )
            if args.fields_from
            else None,
            field_changes=field_changes,
            field_total=field_total,
            history_from=args.history_from,
            later_history_url=_offset_link(
                record_id,
                base_args,
                "history_from",
                args.history_from + FIELD_HISTORY_PAGE,
                "field-history",
            )
            if args.history_from + FIELD_HISTORY_PAGE < field_total
            else None,
            earlier_history_url=_offset_link(
                record_id,
                base_args,
                "history_from",
                max(0, args.history_from - FIELD_HISTORY_PAGE),
                "field-history",
            )
            if args.history_from
            else None,
            field_label=present.readable_path(args.field) if args.field is not None else None,
            viewers=viewers,
            zones=present.zone_choices(settings.display_timezone, args.tz),
            compare_tz=args.tz if args.tz != settings.display_timezone else None,
            newer_url=_timeline_link(record_id, base_args, window, newer=True, order=args.order),
            older_url=_timeline_link(record_id, base_args, window, newer=False, order=args.order),
            flip_order_url=present.page_url(
                "records.record",
                [pair for pair in base_args if pair[0] != "order"]
                + ([("order", "asc")] if args.order == "desc" else []),
                aggregate_id=str(record_id),
            ),
            permalink=present.page_url(
                "records.record",
                [pair for pair in base_args if pair[0] != "at"] + [("at", at.isoformat())],
                aggregate_id=str(record_id),
            ),
            history_url=lambda path: present.page_url(
                "records.record",
                [pair for pair in base_args if pair[0] not in ("field", "history_from")]
                + [("field", path)],
                aggregate_id=str(record_id),
                anchor="field-history",
            ),
            audit_table=table,
            integrity=integrity,
            seals={
                event_id: present.seal_text(seal, args.tz)
                for event_id, seal in integrity.seals.items()
            },
            error=error.message if error else None,
            error_field=error.field if error else None,
            field_errors=error.by_field if error else {},
        ),
        400 if error else 200,
    )


def _record_base_args(args: RecordArgs) -> list[tuple[str, str]]:
    """The record page's arguments that survive paging (not the position itself)."""
    pairs: list[tuple[str, str]] = []
    if args.at is not None:
        pairs.append(("at", args.at.isoformat()))
    if args.tz != context.settings().display_timezone:
        pairs.append(("tz", args.tz))
    if args.order != "desc":
        pairs.append(("order", args.order))
    if args.limit != DEFAULT_LIMIT:
        pairs.append(("limit", str(args.limit)))
    if args.field is not None:
        pairs.append(("field", args.field))
    if args.fields_from:
        pairs.append(("fields_from", str(args.fields_from)))
    if args.history_from:
        pairs.append(("history_from", str(args.history_from)))
    return pairs


def _offset_link(record_id, base_args, name: str, offset: int, anchor: str) -> str:
    """The record page with one panel (state fields, field history) at ``offset``."""
    pairs = [pair for pair in base_args if pair[0] != name]
    if offset:
        pairs.append((name, str(offset)))
    return present.page_url("records.record", pairs, aggregate_id=str(record_id), anchor=anchor)


def _timeline_link(record_id, base_args, window, *, newer: bool, order: str) -> str | None:
    # next_cursor continues in the page's order (older when newest first).
    forward = newer == (order == "asc")
    cursor = window.next_cursor if forward else window.prev_cursor
    if cursor is None:
        return None
    return present.page_url(
        "records.record",
        [*base_args, ("cursor" if forward else "before", cursor.encode())],
        aggregate_id=str(record_id),
        anchor="timeline",
    )


@dataclass(frozen=True)
class FieldChangeRow:
    event_id: str
    event_type: str
    time: str
    iso: str
    actor: str | None
    op: str
    old: str
    new: str
    # A value cut to present.VALUE_PREVIEW: up to present.VALUE_UNFOLDED of it, on request.
    old_unfolded: str | None = None
    new_unfolded: str | None = None


def _field_change_row(change, pointer: str, mask, tz: str) -> FieldChangeRow:
    actor = mask.mask_actor(change.event.actor)
    old, old_unfolded = _folded_value(change.old, pointer, mask)
    new, new_unfolded = _folded_value(change.new, pointer, mask)
    return FieldChangeRow(
        event_id=change.event.event_id,
        event_type=change.event.event_type,
        time=present.format_time(change.event.created_at, tz),
        iso=present.iso_utc(change.event.created_at),
        actor=actor if actor is None or isinstance(actor, str) else present.json_text(actor),
        op=change.op,
        old=old,
        new=new,
        old_unfolded=old_unfolded,
        new_unfolded=new_unfolded,
    )


def _folded_value(value, pointer: str, mask) -> tuple[str, str | None]:
    """A field history cell: the value's preview, and its longer text when it was cut."""
    if value is MISSING:
        return "", None
    masked = mask.mask_value_at(pointer, value)
    text, cut = present.json_preview(masked)
    return text, present.json_text(masked, limit=present.VALUE_UNFOLDED) if cut else None


# --- Look-up ----------------------------------------------------------------------------------


@bp.get("/lookup")
def lookup():
    """Support's way in: one record id. An existing record redirects to its page."""
    check_arg_names(request.args, ("aggregate_id", "reason"))
    raw = request.args.get("aggregate_id", "")
    if not raw.strip():
        return _lookup_page("", None, 200)
    try:
        record_id = parse_aggregate_id(raw)
    except FilterError as exc:
        return _lookup_page(raw, exc.message, 400)
    # audit_events_aggregate_idx: an index-only count bounded by the record.
    summary = context.connection().execute(queries.select_aggregate_summary(record_id)).one()
    if not summary.event_count:
        access_log.note(action="lookup", aggregate_ids=[record_id], row_count=0)
        return _lookup_page(raw, f"No events for record {record_id}.", 404)
    reason = request.args.get("reason")
    target = url_for("records.record", aggregate_id=str(record_id))
    if reason and reason.strip():
        target = present.page_url(
            "records.record", [("reason", reason)], aggregate_id=str(record_id)
        )
    return redirect(target, 303)


def _lookup_page(value: str, error: str | None, status: int):
    return (
        render_template(
            "records/lookup.html",
            value=value,
            error=error,
            reason_required=access_log.reason_required(),
        ),
        status,
    )


# --- One event ----------------------------------------------------------------------------


@bp.get("/events/<event_id>")
def event(event_id: str):
    """An event's permalink: its record's page, opened at the page holding it."""
    check_arg_names(request.args, ("reason",))
    parsed = parse_event_id(event_id)
    row = context.connection().execute(queries.select_event(parsed, context.table_info())).first()
    if row is None:
        abort(404, description=f"No event with id {parsed}.")
    aggregate = str(row.aggregate_id)
    access_log.note(action="open_event", aggregate_ids=[aggregate], row_count=1)
    return redirect(
        present.page_url(
            "records.record",
            [("event", str(parsed)), *[("reason", r) for r in request.args.getlist("reason")]],
            aggregate_id=aggregate,
            anchor=f"event-{parsed}",
        ),
        303,
    )


# --- Compare ----------------------------------------------------------------------------------


# Unchanged fields shown beside the changes on request (README, "Limits"): the rest of a
# big state is a link away (the record page's state panel, the state API).
DIFF_UNCHANGED_ROWS = 500


@bp.get("/diff")
def diff():
    """The changes between the states after two events of one record; ``unchanged=1``
    shows the fields that did not change beside them."""
    settings = context.settings()
    raw = {"from": request.args.get("from", ""), "to": request.args.get("to", "")}
    problems = Problems()
    problems.check(check_arg_names, request.args, ("from", "to", "tz", "unchanged", "reason"))
    tz = problems.check(parse_timezone, request.args.get("tz") or settings.display_timezone)
    show_unchanged = problems.check(_parse_flag, request.args.get("unchanged"), "unchanged")
    empty = not raw["from"].strip() and not raw["to"].strip()
    if empty and not problems.failed():
        return _diff_form(raw, None, 200)
    if not empty:
        comparison = problems.check(load_comparison, raw["from"], raw["to"])
    try:
        problems.raise_any()
    except FilterError as exc:
        return _diff_form(raw, exc, 400)
    refused = access_log.require_reason(comparison.aggregate_id)
    if refused is not None:
        return refused
    mask = present.masker()
    rules = context.app_context().rules
    access_log.note(
        action="diff",
        aggregate_ids=[comparison.aggregate_id],
        row_count=len(comparison.changes),
        filters={"from": comparison.first.event_id, "to": comparison.second.event_id},
    )
    more_unchanged = False
    if show_unchanged:
        rows, more_unchanged = present.side_by_side_rows(
            comparison.changes, comparison.second_step, mask, DIFF_UNCHANGED_ROWS
        )
    else:
        rows = present.change_rows(comparison.changes, mask)
    zone_args = [("tz", tz)] if tz != settings.display_timezone else []
    page_args = [("from", raw["from"].strip()), ("to", raw["to"].strip()), *zone_args]
    unchanged_args = [("unchanged", "1")] if show_unchanged else []
    return render_template(
        "records/diff.html",
        raw=raw,
        comparison=comparison,
        first=present.event_row(comparison.first, mask, rules, tz),
        second=present.event_row(comparison.second, mask, rules, tz),
        changes=rows,
        change_count=len(comparison.changes),
        show_unchanged=show_unchanged,
        more_unchanged=more_unchanged,
        unchanged_rows=DIFF_UNCHANGED_ROWS,
        toggle_unchanged_url=present.page_url(
            "records.diff", page_args + ([] if show_unchanged else [("unchanged", "1")])
        ),
        permalink=present.page_url("records.diff", page_args + unchanged_args),
        state_urls=[
            _state_link(comparison, event, zone_args)
            for event in (comparison.first, comparison.second)
        ],
        swap_url=present.page_url(
            "records.diff",
            [
                ("from", raw["to"].strip()),
                ("to", raw["from"].strip()),
                *zone_args,
                *unchanged_args,
            ],
        ),
        api_url=present.page_url(
            "api.diff",
            [("from", comparison.first.event_id), ("to", comparison.second.event_id)],
        ),
    )


def _parse_flag(text: str | None, name: str) -> bool:
    if text is None or text == "" or text == "0":
        return False
    if text == "1":
        return True
    raise FilterError(f"{name} is 1 (show) or 0 (hide).", name)


@dataclass(frozen=True)
class StateLinks:
    """Where the full state after one side of a comparison is shown."""

    record_url: str  # the record page's state panel at the event's time
    as_of_url: str | None  # every record of its kind at that time
    shared_time: bool  # another event of the record has the same time (and comes later)


def _state_link(comparison: Comparison, event: Event, zone_args) -> StateLinks:
    at = event.created_at.isoformat()
    return StateLinks(
        record_url=present.page_url(
            "records.record",
            [("at", at), *zone_args, ("event", event.event_id)],
            aggregate_id=comparison.aggregate_id,
            anchor="state",
        ),
        as_of_url=present.page_url(
            "records.as_of", [("kind", comparison.kind), ("at", at), *zone_args]
        )
        if comparison.kind
        else None,
        shared_time=event.event_id in comparison.shared_time,
    )


@dataclass(frozen=True)
class Comparison:
    aggregate_id: str
    first: Any  # Event
    second: Any  # Event
    changes: list
    second_step: Any = None  # AggregateState after `second`
    kind: str | None = None
    # Ids of the two events whose time a later event of the record shares: the state "at
    # that time" then includes the later event too.
    shared_time: frozenset[str] = frozenset()


def load_comparison(from_text: str | None, to_text: str | None) -> Comparison:
    """State after ``from`` vs state after ``to`` (both events of one record).

    FilterError names the field for a missing or malformed id, an unknown event, or events
    of different records. One query reads the record up to the later event.
    """
    problems = Problems()
    ids = {}
    for name, text in (("from", from_text), ("to", to_text)):
        if text is None or not text.strip():
            problems.add(FilterError(f"Give the event id to compare {name}.", name))
        else:
            ids[name] = problems.check(parse_event_id, text, name)
    problems.raise_any()
    conn = context.connection()
    table = context.table_info()
    events = {}
    for name, event_id in ids.items():
        row = conn.execute(queries.select_event(event_id, table)).first()  # audit_events_pkey
        if row is None:
            problems.add(FilterError(f"There is no event with id {event_id}.", name))
        else:
            events[name] = Event.from_row(row)
    problems.raise_any()
    first, second = events["from"], events["to"]
    if first.aggregate_id != second.aggregate_id:
        # Neither id is named: "to" may belong to a record the user has not opened (and
        # support may not search), so the message must not tell them which one it is.
        raise FilterError(
            "The two events belong to different records; compare two events of one record.",
            "to",
        )
    history = record_history(uuid.UUID(first.aggregate_id))
    first_step = history.steps[history.index_of(first.event_id)]
    second_step = history.steps[history.index_of(second.event_id)]
    changes = diff_steps(first_step, second_step, context.settings().identity_key)
    shared = frozenset(
        event.event_id
        for event, step in ((first, first_step), (second, second_step))
        if history.step_at(event.created_at) is not step
    )
    return Comparison(first.aggregate_id, first, second, changes, second_step, history.kind, shared)


def _diff_form(raw, error: FilterError | None, status: int):
    return (
        render_template(
            "records/diff.html",
            raw=raw,
            comparison=None,
            error=error.message if error else None,
            error_field=error.field if error else None,
            field_errors=error.by_field if error else {},
        ),
        status,
    )


# --- As of ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AsOfRow:
    aggregate_id: str
    exists: bool
    deleted: bool
    version: int
    cells: list[str]
    record_url: str


def load_as_of(kind: str, at: datetime, after: uuid.UUID | None, limit: int):
    """The records of ``kind`` at ``at``, ``limit`` per page in id order, with their states.

    Two queries whatever the page holds: the page's record ids (keyset on the id), then all
    their events up to ``at`` in one query (audit_events_aggregate_idx), folded per record.
    Returns ``(states, next_cursor)``; FilterError for an unknown kind.
    """
    conn = context.connection()
    table = context.table_info()
    rules = context.app_context().rules
    lists = present.form_lists(conn)
    create_types = queries.create_types_for_kind(kind, lists.event_types, rules)
    if kind not in lists.declared_kinds and not create_types:
        raise FilterError(
            f"There are no records of kind {kind!r}; kinds: {', '.join(lists.kinds) or 'none'}.",
            "kind",
        )
    ids = list(
        conn.execute(
            queries.select_kind_aggregates(
                kind, at, after=after, limit=limit + 1, create_types=create_types
            )
        ).scalars()
    )
    more = len(ids) > limit
    ids = ids[:limit]
    states = []
    if ids:
        statement = queries.select_aggregates_events(ids, table, until=at, slim=True)
        states = list(final_states(queries.iter_events(conn, statement), rules))
    next_cursor = encode_id_cursor(ids[-1]) if more else None
    return states, next_cursor


@bp.get("/as-of")
def as_of():
    """Every record of a kind as it was at a time: one row per record, fields as columns."""
    settings = context.settings()
    conn = context.connection()
    kinds = present.form_lists(conn).kinds
    raw = {name: request.args.get(name, "") for name in ("kind", "at", "tz")}
    form = dict(raw, tz=raw["tz"] or settings.display_timezone)
    render = {"kinds": kinds, "form": form, "zones": present.zone_choices(form["tz"])}
    try:
        problems = Problems()
        problems.check(check_arg_names, request.args, ("kind", "at", "tz", "cursor", "limit"))
        tz = problems.check(parse_timezone, form["tz"]) or "UTC"
        kind = raw["kind"].strip()
        if not kind and not problems.failed() and not raw["at"].strip():
            return render_template("records/as_of.html", **render)
        if not kind:
            problems.add(FilterError("Choose the kind of record to list.", "kind"))
        at = problems.check(parse_time, raw["at"], "at", tz=tz) or datetime.now(UTC)
        after = problems.check(decode_id_cursor, request.args.get("cursor"))
        limit = problems.check(parse_limit, request.args.get("limit"), default=AS_OF_PAGE)
        problems.raise_any()
        states, next_cursor = load_as_of(kind, at, after, limit)
    except FilterError as exc:
        return (
            render_template(
                "records/as_of.html",
                error=exc.message,
                error_field=exc.field,
                field_errors=exc.by_field,
                **render,
            ),
            400,
        )
    mask = present.masker()
    columns: list[str] = []
    for _, step in states:
        if isinstance(step.state, dict):
            for key in step.state:
                if key not in columns and len(columns) < AS_OF_COLUMNS:
                    columns.append(key)
    at_iso = at.isoformat()
    rows = [
        AsOfRow(
            aggregate_id=aggregate_id,
            exists=step.exists,
            deleted=step.deleted,
            version=step.version,
            cells=[_cell(step.state, column, mask) for column in columns],
            record_url=present.page_url(
                "records.record", [("at", at_iso)], aggregate_id=aggregate_id
            ),
        )
        for aggregate_id, step in states
    ]
    access_log.note(
        action="as_of",
        aggregate_ids=[aggregate_id for aggregate_id, _ in states],
        row_count=len(rows),
        filters={"kind": kind, "at": at_iso},
    )
    page_args = [("kind", kind), ("at", at.astimezone(present.zone(tz)).isoformat())]
    if tz != settings.display_timezone:
        page_args.append(("tz", tz))
    render["form"] = dict(form, at=present.input_time(at, tz), tz=tz)
    return render_template(
        "records/as_of.html",
        kind=kind,
        at_text=present.format_time(at, tz),
        columns=columns,
        rows=rows,
        next_url=present.page_url("records.as_of", [*page_args, ("cursor", next_cursor)])
        if next_cursor
        else None,
        first_url=present.page_url("records.as_of", page_args)
        if request.args.get("cursor")
        else None,
        permalink=present.page_url(
            "records.as_of", [*page_args, ("cursor", request.args.get("cursor", ""))]
        ),
        **render,
    )


def _cell(state: Any, column: str, mask) -> str:
    if not isinstance(state, dict) or column not in state:
        return ""
    path = "/" + column.replace("~", "~0").replace("/", "~1")
    return present.json_text(mask.mask_value_at(path, state[column]), limit=80)


# --- One request ------------------------------------------------------------------------------

MAX_REQUEST_ID = 320


@bp.get("/requests/<path:request_id>")
def request_events(request_id: str):
    """Every event one request (or correlation id) wrote, across records, oldest first."""
    settings = context.settings()
    if len(request_id) > MAX_REQUEST_ID or "\x00" in request_id:
        raise FilterError("That request id is too long to be one.", "request_id")
    check_arg_names(request.args, ("cursor", "before", "limit", "tz"))
    tz = parse_timezone(request.args.get("tz") or settings.display_timezone)
    paging = parse_paging(request.args)
    conn = context.connection()
    table = context.table_info()
    rules = context.app_context().rules
    statement = queries.with_first_event(  # the records' kinds in the same statement
        queries.select_request_events(
            request_id, table, cursor=paging.cursor, backward=paging.backward
        ),
        table,
    )
    page = queries.fetch_page(
        conn,
        statement,
        paging.limit,
        backward=paging.backward,
        has_previous=paging.cursor is not None,
    )
    mask = present.masker()
    events = page.events
    kinds_of = present.page_record_kinds(page.rows, rules, conn, table)
    rows = [
        present.event_row(event, mask, rules, tz, kind=kinds_of.get(event.aggregate_id))
        for event in events
    ]
    records = sorted({event.aggregate_id for event in events})
    access_log.note(
        action="view_request",
        aggregate_ids=records,
        row_count=len(rows),
        filters={"request_id": request_id},
    )

    def link(cursor, name):
        return (
            present.page_url(
                "records.request_events", [(name, cursor.encode())], request_id=request_id
            )
            if cursor
            else None
        )

    return (
        render_template(
            "records/request.html",
            request_id=request_id,
            rows=rows,
            records=records,
            older_url=link(page.prev_cursor, "before"),
            newer_url=link(page.next_cursor, "cursor"),
            audit_table=table,
        ),
        200 if rows or paging.cursor else 404,
    )
