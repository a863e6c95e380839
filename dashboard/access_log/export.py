"""The access log as CSV: its columns and each entry's cells. No Flask, no database.

The same format as every CSV the dashboard writes (:mod:`dashboard.reports.csv_format`):
RFC 4180 quoting, CRLF, UTF-8, times in ISO 8601 UTC with ``+00:00``, JSON as compact
``jsonb``-style text, and the OWASP CSV-injection rule on every free-text cell. The access
log holds text typed by people who may be hostile: the user name of a failed sign-in, a
reason for access, a filter value. Each such cell that starts with ``=``, ``+``, ``-``,
``@``, tab or CR gets a leading apostrophe (:func:`neutralise_formula`).
"""

from __future__ import annotations

from typing import Final

from ..reports.csv_format import format_created_at, jsonb_text, neutralise_formula
from .entry import AccessEntry

__all__ = ["ACCESS_LOG_CSV_COLUMNS", "access_csv_cells"]

ACCESS_LOG_CSV_COLUMNS: Final[tuple[str, ...]] = (
    "id",
    "at",
    "logged_at",
    "username",
    "role",
    "action",
    "route",
    "filters",
    "aggregate_ids",
    "row_count",
    "export_digest",
    "outcome",
    "client_ip",
    "reason",
    "entry_uuid",
)
"""The columns, in order: the stored entry, one column per field (``aggregate_ids`` and
``filters`` as JSON, so a list of ids or a filter value with a comma stays exact)."""

# Columns whose text comes from outside (names, routes, filters, reasons, addresses);
# ids, times, counts, digests and UUIDs are written by the dashboard and cannot start
# with a formula trigger.
_NEUTRALISED: Final = frozenset(
    {
        "username",
        "role",
        "action",
        "route",
        "filters",
        "aggregate_ids",
        "outcome",
        "client_ip",
        "reason",
    }
)


def access_csv_cells(entry: AccessEntry) -> list[str | None]:
    """One entry's cells in :data:`ACCESS_LOG_CSV_COLUMNS` order, neutralised."""
    raw: dict[str, str | None] = {
        "id": None if entry.id is None else str(entry.id),
        "at": format_created_at(entry.at),
        "logged_at": format_created_at(entry.logged_at) if entry.logged_at else None,
        "username": entry.username,
        "role": entry.role,
        "action": entry.action,
        "route": entry.route,
        "filters": None if entry.filters is None else jsonb_text(entry.filters),
        "aggregate_ids": jsonb_text(list(entry.aggregate_ids)),
        "row_count": None if entry.row_count is None else str(entry.row_count),
        "export_digest": entry.export_digest,
        "outcome": entry.outcome,
        "client_ip": entry.client_ip,
        "reason": entry.reason,
        "entry_uuid": entry.entry_uuid,
    }
    return [
        neutralise_formula(raw[column]) if column in _NEUTRALISED else raw[column]
        for column in ACCESS_LOG_CSV_COLUMNS
    ]
