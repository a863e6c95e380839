"""The home page: where a signed-in user starts, and the "no events yet" state.

With events in the table the home page is only a door: users who may search go to the
search page, the others (support) to the record look-up.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, g, redirect, render_template, url_for

from .. import context, db
from ..permissions import SEARCH

bp = Blueprint("main", __name__)


@bp.get("/")
def index():
    conn = context.connection()
    # audit_events_time_idx: one index probe each, never a scan of the big table.
    latest = conn.execute(sa.text("SELECT max(created_at) FROM audit_events")).scalar()
    if latest is not None:
        user = g.get("user")
        target = "search.search" if user is not None and user.can(SEARCH) else "records.lookup"
        return redirect(url_for(target), 303)
    oldest = conn.execute(sa.text("SELECT min(created_at) FROM audit_events")).scalar()
    # An estimate from the planner's statistics: COUNT(*) over 10M rows is not a home page.
    estimate = conn.execute(db.ESTIMATED_TABLE_ROWS).scalar()
    return render_template("main/index.html", latest=latest, oldest=oldest, estimate=estimate)
