"""``/access-log`` (auditors browse who looked at what), its CSV download
``/export/access-log.csv``, and ``/access-reason`` (the form that asks support for a reason
or ticket number before a record opens).

The access log is newest first and keyset-paginated on its id (``?cursor=`` is the last id
shown), so a link pasted into a ticket shows the same entries however much is logged after.
Its times are UTC, and so are its period presets ("last month" from 00:00 UTC).

The CSV holds every entry the page's filters match (not one page), newest first, streamed
a page at a time under the export contract of :mod:`dashboard.views.reports`: recorded in
the access log as ``started`` before its first byte and with its row count and digest
after the last, cells neutralised against formula injection.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, jsonify, redirect, render_template, request

from .. import access_log, auth
from ..errors import error_response, wants_json
from ..filters import FilterError, parse_aggregate_id
from ..reports.csv_format import EncodedCsv, export_filename
from . import present
from .reports import csv_response

bp = Blueprint("access", __name__)

# The page's filters, in the order links and file names write them.
FILTER_NAMES = ("user", "aggregate_id", "action", "outcome", "from", "to")
PAGE_ZONE = "UTC"  # the page shows (and its presets count) UTC days
IDS_SHOWN = 3  # record ids shown per entry before "and N more"


def _filter_pairs(query: access_log.AccessLogQuery) -> list[tuple[str, str]]:
    values = {
        "user": query.user,
        "aggregate_id": query.aggregate_id,
        "action": query.action,
        "outcome": query.outcome,
        "from": query.since.isoformat() if query.since else None,
        "to": query.until.isoformat() if query.until else None,
    }
    return [(name, values[name]) for name in FILTER_NAMES if values[name]]


@bp.get("/access-log")
def log():
    query = access_log.AccessLogQuery.from_args(request.args)
    try:
        page = access_log.browse(query)
    except access_log.AccessLogUnavailable as exc:
        return error_response(503, str(exc), "The access log is not available")
    access_log.note(action="access_log.browse", row_count=len(page.entries))
    if wants_json():
        return jsonify(
            {
                "entries": access_log.entries_as_json(page.entries),
                "next_cursor": page.next_cursor,
            }
        )
    older = None
    if page.next_cursor:
        args = request.args.to_dict()
        args["cursor"] = page.next_cursor
        older = args
    # Presets keep the other filters (and the page size), and start from the newest entry.
    keep = [
        (name, value)
        for name, value in request.args.items()
        if name in ("user", "aggregate_id", "action", "outcome", "limit") and value
    ]
    return render_template(
        "access/log.html",
        query=query,
        args=request.args,
        page=page,
        older=older,
        backend=access_log.backend_name(),
        outcomes=access_log.OUTCOMES,
        periods=present.period_links(
            "access.log", keep, PAGE_ZONE, chosen=(query.since, query.until)
        ),
        csv_url=present.page_url("access.log_csv", _filter_pairs(query)),
        ids_shown=IDS_SHOWN,
    )


@bp.get("/export/access-log.csv")
def log_csv():
    """Every access-log entry the filters of ``/access-log`` match, as CSV, newest first.

    Who may browse the access log may download it; the download is itself an entry.
    """
    query = access_log.AccessLogQuery.from_args(request.args)
    try:
        access_log.check_readable()
    except access_log.AccessLogUnavailable as exc:
        return error_response(503, str(exc), "The access log is not available")
    filters = _filter_pairs(query)
    filename = export_filename("audit-access-log", filters, datetime.now(UTC), "csv")

    def make_stream(conn, _mark):
        rows = (
            access_log.access_csv_cells(entry) for entry in access_log.iter_entries(query, conn)
        )
        return EncodedCsv(access_log.ACCESS_LOG_CSV_COLUMNS, rows)

    return csv_response(
        make_stream,
        filename,
        None,
        with_mark=False,
        action="export_access_log_csv",
        filters=dict(filters),
    )


@bp.route("/access-reason", methods=["GET", "POST"])
def reason():
    aggregate = parse_aggregate_id(request.values.get("aggregate_id"))
    if aggregate is None:
        raise FilterError("Which record? The link is missing its aggregate_id.", "aggregate_id")
    next_url = auth.safe_next(request.values.get("next"))
    error = None
    if request.method == "POST":
        try:
            given = access_log.remember_reason(aggregate, request.form.get("reason", ""))
        except FilterError as exc:
            error = exc.message
        else:
            access_log.note(action="access_reason", aggregate_ids=(aggregate,), reason=given)
            return redirect(next_url, 303)
    return (
        render_template(
            "access/reason.html",
            aggregate_id=str(aggregate),
            next_url=next_url,
            error=error,
            reason=request.form.get("reason", ""),
            minutes=access_log.REASON_MINUTES,
        ),
        400 if error else 200,
    )
