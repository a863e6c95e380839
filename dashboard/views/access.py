"""``/access-log`` (auditors browse who looked at what) and ``/access-reason`` (the form
that asks support for a reason or ticket number before a record opens).

The access log is newest first and keyset-paginated on its id (``?cursor=`` is the last id
shown), so a link pasted into a ticket shows the same entries however much is logged after.
"""

from __future__ import annotations

from flask import Blueprint, jsonify, redirect, render_template, request

from .. import access_log, auth
from ..errors import error_response, wants_json
from ..filters import FilterError, parse_aggregate_id

bp = Blueprint("access", __name__)


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
    return render_template(
        "access/log.html",
        query=query,
        args=request.args,
        page=page,
        older=older,
        backend=access_log.backend_name(),
        outcomes=access_log.OUTCOMES,
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
