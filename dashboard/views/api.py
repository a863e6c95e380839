"""The JSON API of DESIGN.md's "HTTP contracts": the pages' data for scripts and tests.

Each endpoint runs the same query builder and event model as its page, so the two never
disagree; the shapes below are a contract (tests assert them key for key). Errors are
``{"error": "<message>"}`` with the status (400 bad input, 404 unknown record or event,
503 too broad or database down) — :mod:`dashboard.errors` answers FilterError and the
database errors, these views only raise.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from flask import Blueprint, abort, jsonify, request

from .. import access_log, context, openapi, queries
from ..events import Event
from ..filters import (
    FilterError,
    Problems,
    check_arg_names,
    decode_id_cursor,
    parse_aggregate_id,
    parse_event_id,
    parse_limit,
    parse_paging,
    parse_search,
    parse_time,
    parse_timezone,
)
from . import present
from .records import AS_OF_PAGE, load_as_of, load_comparison, record_history

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.get("/openapi.json")
def openapi_document():
    """The OpenAPI 3.1 document of this API (:mod:`dashboard.openapi`)."""
    return jsonify(openapi.document())


@bp.get("/events")
def events():
    """``{"events": [...], "next_cursor": str | null}``: the search, newest first."""
    f, paging = parse_search(request.args)
    conn = context.connection(single_statements=True)
    table = context.table_info()
    create_types = None
    if f.kind:
        types = present.form_lists(conn).event_types
        create_types = queries.create_types_for_kind(f.kind, types, context.app_context().rules)
    statement = queries.select_events(
        f, table, cursor=paging.cursor, backward=paging.backward, create_types=create_types
    )
    page = queries.fetch_page(conn, statement, paging.limit, backward=paging.backward)
    mask = present.masker()
    found = page.events
    # The entry is complete: it is sent now and stored while the page is serialised.
    access_log.write_ahead(
        action="api_search",
        aggregate_ids=sorted({event.aggregate_id for event in found}),
        row_count=len(found),
        filters=present.filters_for_log(f),
    )
    return present.json_response(
        {
            "events": [present.event_json(event, mask) for event in found],
            "next_cursor": page.next_cursor.encode() if page.next_cursor else None,
        }
    )


@bp.get("/events/<event_id>")
def event(event_id: str):
    """One event in full (DESIGN.md's event JSON): where the pages link when they cut a
    value short."""
    parsed = parse_event_id(event_id)
    check_arg_names(request.args, ("reason",))
    conn = context.connection()
    row = conn.execute(queries.select_event(parsed, context.table_info())).first()  # pkey
    if row is None:
        abort(404, description=f"No event with id {parsed}.")
    found = Event.from_row(row)
    refused = access_log.require_reason(found.aggregate_id)
    if refused is not None:
        return refused
    access_log.note(action="api_event", aggregate_ids=[found.aggregate_id], row_count=1)
    return jsonify(present.event_json(found, present.masker()))


@bp.get("/aggregates/<aggregate_id>/events")
def aggregate_events(aggregate_id: str):
    """One record's events, oldest first, keyset-paginated like /api/events; 404 when the
    record has no events at all."""
    record_id = _aggregate(aggregate_id)
    refused = access_log.require_reason(record_id)
    if refused is not None:
        return refused
    problems = Problems()
    problems.check(check_arg_names, request.args, ("cursor", "limit", "reason"))
    paging = problems.check(parse_paging, request.args)
    problems.raise_any()
    conn = context.connection()
    table = context.table_info()
    # audit_events_aggregate_idx: in order, no sort, each page starts at its cursor.
    statement = queries.select_aggregate_events(record_id, table, cursor=paging.cursor)
    page = queries.fetch_page(conn, statement, paging.limit)
    if not page.rows and paging.cursor is None:
        abort(404, description=f"No events for record {record_id}.")
    mask = present.masker()
    found = page.events
    access_log.write_ahead(
        action="api_record_events", aggregate_ids=[record_id], row_count=len(found)
    )
    return present.json_response(
        {
            "events": [present.event_json(event, mask) for event in found],
            "next_cursor": page.next_cursor.encode() if page.next_cursor else None,
        }
    )


@bp.get("/aggregates/<aggregate_id>/state")
def aggregate_state(aggregate_id: str):
    """The record's state at ``at`` (default now) with per-leaf provenance."""
    record_id = _aggregate(aggregate_id)
    refused = access_log.require_reason(record_id)
    if refused is not None:
        return refused
    check_arg_names(request.args, ("at", "tz", "reason"))
    tz = parse_timezone(request.args.get("tz"))
    at = parse_time(request.args.get("at"), "at", tz=tz) or datetime.now(UTC)
    history = record_history(record_id)  # one fold, reused while the record is unchanged
    if history is None:
        abort(404, description=f"No events for record {record_id}.")
    final = history.step_at(at)
    access_log.write_ahead(
        action="api_state",
        aggregate_ids=[record_id],
        row_count=final.version,
        filters={"at": at.isoformat()},
    )
    return jsonify(present.state_json(str(record_id), at, final, present.masker()))


@bp.get("/events/<event_id>/changes")
def event_changes(event_id: str):
    """What one event changed: state before it vs state after it."""
    parsed = parse_event_id(event_id)
    check_arg_names(request.args, ("reason",))
    conn = context.connection()
    table = context.table_info()
    row = conn.execute(queries.select_event(parsed, table)).first()  # audit_events_pkey
    if row is None:
        abort(404, description=f"No event with id {parsed}.")
    event = Event.from_row(row)
    refused = access_log.require_reason(event.aggregate_id)
    if refused is not None:
        return refused
    history = record_history(uuid.UUID(event.aggregate_id))
    changes = history.changes_at(history.index_of(event.event_id), context.settings().identity_key)
    access_log.write_ahead(
        action="api_event_changes", aggregate_ids=[event.aggregate_id], row_count=len(changes)
    )
    return jsonify(present.changes_json(changes, present.masker()))


@bp.get("/diff")
def diff():
    """State after ``from`` vs state after ``to``; 400 when they are of different records."""
    problems = Problems()
    problems.check(check_arg_names, request.args, ("from", "to", "reason"))
    comparison = problems.check(load_comparison, request.args.get("from"), request.args.get("to"))
    problems.raise_any()
    refused = access_log.require_reason(comparison.aggregate_id)
    if refused is not None:
        return refused
    access_log.write_ahead(
        action="api_diff",
        aggregate_ids=[comparison.aggregate_id],
        row_count=len(comparison.changes),
    )
    return jsonify(present.changes_json(comparison.changes, present.masker()))


@bp.get("/as-of")
def as_of():
    """``{"kind", "at", "aggregates": [{"aggregate_id", "exists", "deleted", "state",
    "version", "last_event_id"}], "next_cursor"}``: every record of a kind at a time, in
    record-id order, ``limit`` (default 50) per page."""
    problems = Problems()
    problems.check(check_arg_names, request.args, ("kind", "at", "tz", "cursor", "limit"))
    kind = (request.args.get("kind") or "").strip()
    if not kind:
        problems.add(FilterError("Give the kind of record to list: ?kind=USER.", "kind"))
    tz = problems.check(parse_timezone, request.args.get("tz")) or "UTC"
    at = problems.check(parse_time, request.args.get("at"), "at", tz=tz) or datetime.now(UTC)
    after = problems.check(decode_id_cursor, request.args.get("cursor"))
    limit = problems.check(parse_limit, request.args.get("limit"), default=AS_OF_PAGE)
    problems.raise_any()
    states, next_cursor = load_as_of(kind, at, after, limit)
    mask = present.masker()
    access_log.write_ahead(
        action="api_as_of",
        aggregate_ids=[aggregate_id for aggregate_id, _ in states],
        row_count=len(states),
        filters={"kind": kind, "at": at.isoformat()},
    )
    return jsonify(
        {
            "kind": kind,
            "at": at.astimezone(UTC).isoformat(),
            "aggregates": [
                {
                    "aggregate_id": aggregate_id,
                    "exists": step.exists,
                    "deleted": step.deleted,
                    "state": mask.mask_document(step.state),
                    "version": step.version,
                    "last_event_id": step.last_event.event_id if step.last_event else None,
                }
                for aggregate_id, step in states
            ],
            "next_cursor": next_cursor,
        }
    )


def _aggregate(text: str) -> uuid.UUID:
    parsed = parse_aggregate_id(text)
    if parsed is None:
        raise FilterError("Give a record id (a UUID).", "aggregate_id")
    return parsed
