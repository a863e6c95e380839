"""The access log: who looked at what, when, and why — recorded before it is served.

Every request of a signed-in user (page view, search, state rebuild, export, sign-in and
sign-out) is written as one entry: user, role, time, route, filters, the record ids it
touched, row count, export digest, outcome and, when given, the reason for access. An
export writes two: ``started`` before its first byte and its outcome after its last.

A response whose entry cannot be written is not served (503 naming the problem) unless
AUDIT_ACCESS_LOG_FAIL_OPEN is set; what could not be written waits in a durable local
spool and is written, exactly once and with its own time, when the log is back.

The parts, each with one job:

* :mod:`.entry` — one entry (no Flask, no database);
* :mod:`.sinks` — where entries go: PostgreSQL through log_access(), or a JSON-lines file;
* :mod:`.recording` — this request's entry, the fail-closed hooks, the spool;
* :mod:`.browsing` — reading entries back (the auditors' page, who viewed a record);
* :mod:`.export` — the access log as CSV (columns and neutralised cells);
* :mod:`.reasons` — the reason for access support staff give before a record opens.
"""

from __future__ import annotations

from .browsing import (
    AccessLogPage,
    AccessLogQuery,
    AccessLogUnavailable,
    browse,
    check_readable,
    entries_as_json,
    iter_entries,
    viewers_of,
)
from .entry import OUTCOMES, AccessEntry
from .export import ACCESS_LOG_CSV_COLUMNS, access_csv_cells
from .reasons import (
    REASON_HEADER,
    REASON_MINUTES,
    check_reason,
    reason_for,
    reason_required,
    remember_reason,
    require_reason,
)
from .recording import (
    EXTENSION_KEY,
    AccessLogDown,
    AccessLogger,
    SessionSignedOut,
    backend_name,
    check_session_beside,
    confirm_session,
    finish_export,
    init_app,
    note,
    outcome_for,
    record,
    session_check_started,
    session_revoked,
    start_export,
    withheld_problem,
    write_ahead,
)

__all__ = [
    "ACCESS_LOG_CSV_COLUMNS",
    "EXTENSION_KEY",
    "OUTCOMES",
    "REASON_HEADER",
    "REASON_MINUTES",
    "AccessEntry",
    "AccessLogDown",
    "AccessLogPage",
    "AccessLogQuery",
    "AccessLogUnavailable",
    "AccessLogger",
    "SessionSignedOut",
    "access_csv_cells",
    "backend_name",
    "browse",
    "check_readable",
    "check_reason",
    "check_session_beside",
    "confirm_session",
    "entries_as_json",
    "finish_export",
    "init_app",
    "iter_entries",
    "note",
    "outcome_for",
    "reason_for",
    "reason_required",
    "record",
    "remember_reason",
    "require_reason",
    "session_check_started",
    "session_revoked",
    "start_export",
    "viewers_of",
    "withheld_problem",
    "write_ahead",
]
