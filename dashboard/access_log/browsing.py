"""Reading the access log back: the auditors' page, and who viewed a record.

PostgreSQL entries are read through the dashboard's ordinary read-only connection (the
logger role cannot read them); file entries are read backwards from the end of the file,
at most FILE_SCAN_BYTES per page.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import g
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.engine import Connection

from .. import context, permissions
from ..budget import check_budget
from ..filters import FilterError, Problems, parse_aggregate_id, parse_limit, parse_time
from .entry import AccessEntry, canonical_ids
from .recording import current_logger
from .sinks import FileSink

log = logging.getLogger("dashboard.access_log")

FILE_SCAN_BYTES = 16 * 1024 * 1024  # one page of the file backend reads at most this much


class AccessLogUnavailable(RuntimeError):
    """The access log cannot be read back (table missing or not readable)."""


_ACCESS_LOG = sa.table(
    "audit_access_log",
    sa.column("id", sa.BigInteger),
    sa.column("at", sa.DateTime(timezone=True)),
    sa.column("username", sa.Text),
    sa.column("role", sa.Text),
    sa.column("action", sa.Text),
    sa.column("route", sa.Text),
    sa.column("filters", JSONB),
    sa.column("aggregate_ids", ARRAY(sa.Text)),
    sa.column("row_count", sa.BigInteger),
    sa.column("export_digest", sa.Text),
    sa.column("outcome", sa.Text),
    sa.column("client_ip", sa.Text),
    sa.column("reason", sa.Text),
    sa.column("entry_uuid", UUID(as_uuid=False)),
    sa.column("logged_at", sa.DateTime(timezone=True)),
    schema="public",
)
DEFAULT_PAGE = 50
MAX_PAGE = 500


@dataclass(frozen=True)
class AccessLogQuery:
    """The access-log page's filters, parsed once; FilterError (400) names a bad field."""

    user: str | None = None
    aggregate_id: str | None = None
    action: str | None = None
    outcome: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    before_id: int | None = None  # keyset cursor: entries with a smaller id
    limit: int = DEFAULT_PAGE

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> AccessLogQuery:
        problems = Problems()  # every bad field at once

        def text(name: str) -> str | None:
            value = (args.get(name) or "").strip()
            if len(value) > 200:
                problems.add(FilterError(f"'{name}' is too long (200 characters at most).", name))
                return None
            if "\x00" in value:
                # PostgreSQL text cannot hold NUL: a 400 here, not a driver error (500).
                problems.add(FilterError(f"'{name}' contains a NUL character.", name))
                return None
            return value or None

        aggregate = problems.check(parse_aggregate_id, args.get("aggregate_id"))
        since = problems.check(parse_time, args.get("from"), "from")
        until = problems.check(parse_time, args.get("to"), "to")
        if since and until and since >= until:
            problems.add(FilterError("'from' must be before 'to'.", "from"))
        cursor = text("cursor")
        if cursor is not None and not (cursor.isdigit() and len(cursor) <= 18):
            problems.add(
                FilterError(
                    "The page cursor is not valid; start again from the first page.", "cursor"
                )
            )
            cursor = None
        limit = problems.check(
            parse_limit, args.get("limit"), default=DEFAULT_PAGE, maximum=MAX_PAGE
        )
        fields = {name: text(name) for name in ("user", "action", "outcome")}
        problems.raise_any()
        return cls(
            user=(fields["user"] or "").lower() or None,
            aggregate_id=str(aggregate) if aggregate else None,
            action=fields["action"],
            outcome=fields["outcome"],
            since=since,
            until=until,
            before_id=int(cursor) if cursor is not None else None,
            limit=limit,
        )

    def matches(self, entry: AccessEntry) -> bool:
        """The same filter in Python, for the file backend."""
        return (
            (self.user is None or entry.username == self.user)
            and (self.aggregate_id is None or self.aggregate_id in entry.aggregate_ids)
            and (self.action is None or entry.action == self.action)
            and (self.outcome is None or entry.outcome == self.outcome)
            and (self.since is None or entry.at >= self.since)
            and (self.until is None or entry.at < self.until)
        )


@dataclass(frozen=True)
class AccessLogPage:
    entries: list[AccessEntry]
    next_cursor: str | None  # older entries continue after this
    scan_limited: bool = False  # the file backend stopped reading before finding a full page


def check_readable() -> None:
    """AccessLogUnavailable when the entries cannot be read back (before an export starts)."""
    if isinstance(current_logger().sink, FileSink):
        return  # a missing file is an empty log
    if not context.table_info().has_access_log:
        raise AccessLogUnavailable(
            "The access log table is missing or not readable by the dashboard's role; run "
            "`audit-dashboard init-db` (sql/007_access_log.sql)."
        )


def browse(query: AccessLogQuery, conn: Connection | None = None) -> AccessLogPage:
    """Newest first, ``query.limit`` entries, keyset-paginated on id.

    "Newest" is the order entries reached the log: one written late from the spool comes
    after those written meanwhile, with its own ``at`` and the ``logged_at`` it arrived.

    PostgreSQL: :func:`browse_statement`; ``limit + 1`` rows tell whether there is a next
    page, and the reader connection's statement_timeout bounds the rest. ``conn``: a
    connection other than the request's (an export's own).
    """
    sink = current_logger().sink
    if isinstance(sink, FileSink):
        return _browse_file(sink.path, query)
    check_readable()
    conn = conn or context.connection()
    statement = browse_statement(query)
    if query.aggregate_id is None:
        rows = conn.execute(statement).mappings().all()
    else:
        rows = rows_without_seqscan(conn, statement)
    entries = [_entry_from_row(row) for row in rows[: query.limit]]
    has_more = len(rows) > query.limit
    return AccessLogPage(entries, str(entries[-1].id) if has_more and entries else None)


def browse_statement(query: AccessLogQuery) -> sa.Select:
    """The ``limit + 1`` newest entries matching ``query`` (PostgreSQL).

    Without a record, the primary key serves ORDER BY id DESC; one user's, action's or
    outcome's entries come from the end of that field's index (sql/013), and a time range
    may use audit_access_log_at_idx.

    With a record (the record page's "who viewed it" panel, the access-log page's record
    filter), the record's entries are found through the GIN index
    audit_access_log_aggregate_idx (``aggregate_ids @> ARRAY[...]``) first, and only the
    newest ``limit + 1`` of them are read whole (run it with :func:`rows_without_seqscan`).
    Left to itself, the planner walks the primary key backwards and tests every entry's ids
    until it has enough: the whole log since the record's 21st newest view, and the whole
    log for the many records seen fewer times (2.6 s behind 300,000 newer entries of 50
    ids each, on every auditor's record page). Found by id, the work grows with the
    record's own entries instead: 1 ms for a record seen 25 times, 25 ms for one seen
    50,000 times.
    """
    newest = sa.select(*_ACCESS_LOG.c).order_by(_ACCESS_LOG.c.id.desc()).limit(query.limit + 1)
    if query.aggregate_id is None:
        return newest.where(*_conditions(_ACCESS_LOG, query))
    entry = _ACCESS_LOG.alias("entry")
    # "id + 0" is an order no index gives: the planner cannot choose the backward walk.
    found = (
        sa.select(entry.c.id)
        .where(*_conditions(entry, query))
        .order_by((entry.c.id + sa.literal_column("0")).desc())
        .limit(query.limit + 1)
    )
    return newest.where(_ACCESS_LOG.c.id.in_(found.scalar_subquery()))


def rows_without_seqscan(conn: Connection, statement: sa.Select) -> list[Any]:
    """The rows (mappings) of ``statement``, planned with ``enable_seqscan`` off in the
    transaction of ``conn``. The setting is put back after it; a statement that fails ends
    the transaction, and the setting with it.

    For a record's entries (:func:`browse_statement`): the planner counts testing an
    entry's ids as cheap, but an entry's array of ids (up to 10,000) is mostly stored out
    of line (TOAST) and read back whole to be tested. When a record is in a few per cent of
    the entries, the planner scans them all: 155 ms for a record seen 708 times among
    25,000 entries, against 6 ms through its index entries.
    """
    saved = conn.execute(
        sa.text(
            "SELECT current_setting('enable_seqscan'), set_config('enable_seqscan', 'off', true)"
        )
    ).scalar()
    rows = conn.execute(statement).mappings().all()
    conn.execute(sa.text("SELECT set_config('enable_seqscan', :saved, true)"), {"saved": saved})
    return rows


def _conditions(table: sa.TableClause | sa.Alias, query: AccessLogQuery) -> list[Any]:
    t = table.c
    conditions = []
    if query.user is not None:
        conditions.append(t.username == query.user)
    if query.aggregate_id is not None:
        conditions.append(t.aggregate_ids.contains([query.aggregate_id]))
    if query.action is not None:
        conditions.append(t.action == query.action)
    if query.outcome is not None:
        conditions.append(t.outcome == query.outcome)
    if query.since is not None:
        conditions.append(t.at >= query.since)
    if query.until is not None:
        conditions.append(t.at < query.until)
    if query.before_id is not None:
        conditions.append(t.id < query.before_id)
    return conditions


def iter_entries(
    query: AccessLogQuery, conn: Connection | None = None, page_size: int = MAX_PAGE
) -> Iterator[AccessEntry]:
    """Every entry matching ``query`` (its own cursor and limit aside), newest first: page
    after page of :func:`browse` on the same keyset, so memory stays one page whatever the
    log holds, and entries written meanwhile (newer ids) do not join a listing under way."""
    page_query = replace(query, before_id=None, limit=page_size)
    while True:
        check_budget()
        page = browse(page_query, conn)
        yield from page.entries
        if page.next_cursor is None:
            return
        page_query = replace(page_query, before_id=int(page.next_cursor))


def _entry_from_row(row: Mapping[str, Any]) -> AccessEntry:
    values = dict(row)
    values["aggregate_ids"] = tuple(values.get("aggregate_ids") or ())
    values["entry_uuid"] = str(values["entry_uuid"]) if values.get("entry_uuid") else None
    return AccessEntry(**values)


def _browse_file(path: Path, query: AccessLogQuery) -> AccessLogPage:
    entries: list[AccessEntry] = []
    last_offset: int | None = None
    for offset, data in newest_first(path, query.before_id):
        last_offset = offset
        try:
            entry = AccessEntry.from_json(data, offset)
        except (KeyError, TypeError, ValueError):
            continue
        if query.matches(entry):
            if len(entries) == query.limit:
                return AccessLogPage(entries, str(entries[-1].id))
            entries.append(entry)
    # Stopped by the scan budget (not the start of the file): offer to read on.
    scan_limited = last_offset not in (None, 0) and len(entries) < query.limit
    if scan_limited:
        return AccessLogPage(entries, str(last_offset), scan_limited=True)
    return AccessLogPage(entries, None)


def viewers_of(aggregate_id: Any, limit: int = 20) -> list[AccessEntry]:
    """Who looked at this record, newest first (for the record page's auditor panel).

    Empty for a user without ``view_access_log`` (check ``g.user.can(VIEW_ACCESS_LOG)`` to
    decide whether to show the panel at all) and when the log cannot be read (logged).
    """
    user = g.get("user")
    if user is None or not user.can(permissions.VIEW_ACCESS_LOG):
        return []
    try:
        canonical = next(canonical_ids((aggregate_id,)))
        return browse(
            AccessLogQuery(aggregate_id=canonical, limit=max(1, min(limit, MAX_PAGE)))
        ).entries
    except AccessLogUnavailable as exc:
        log.warning("Cannot show who viewed %s: %s", aggregate_id, exc)
        return []


def entries_as_json(entries: Iterable[AccessEntry]) -> list[dict[str, Any]]:
    return [entry.to_json() for entry in entries]


def newest_first(path: Path, before: int | None) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(offset, entry)`` from the end (or from byte ``before``) backwards, reading at
    most FILE_SCAN_BYTES; a line that is not JSON is skipped with a warning."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return
    with handle:
        end = handle.seek(0, os.SEEK_END)
        position = end if before is None else max(0, min(before, end))
        budget = FILE_SCAN_BYTES
        tail = b""
        while position > 0 and budget > 0:
            size = min(64 * 1024, position, budget)
            position -= size
            budget -= size
            handle.seek(position)
            chunk = handle.read(size) + tail
            lines = chunk.split(b"\n")
            tail = lines[0]  # may be a partial line: completed by the next chunk
            offset = position + len(tail) + 1
            parsed = []
            for raw in lines[1:]:
                if raw.strip():
                    parsed.append((offset, raw))
                offset += len(raw) + 1
            for line_offset, raw in reversed(parsed):
                entry = _parse_line(raw, path, line_offset)
                if entry is not None:
                    yield line_offset, entry
        if position == 0 and tail.strip():
            entry = _parse_line(tail, path, 0)
            if entry is not None:
                yield 0, entry


def _parse_line(raw: bytes, path: Path, offset: int) -> dict[str, Any] | None:
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or "at" not in data or "username" not in data:
            raise ValueError("not an access-log entry")
        return data
    except ValueError:
        log.warning("Skipping a malformed line at byte %d of %s", offset, path)
        return None
