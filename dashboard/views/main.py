"""The home page: where a signed-in user starts, and the "no events yet" state."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, render_template

from .. import context

bp = Blueprint("main", __name__)


@bp.get("/")
def index():
    conn = context.connection()
    # audit_events_time_idx: one index probe each, never a scan of the big table.
    latest = conn.execute(sa.text("SELECT max(created_at) FROM audit_events")).scalar()
    oldest = conn.execute(sa.text("SELECT min(created_at) FROM audit_events")).scalar()
    # An estimate from the planner's statistics: COUNT(*) over 10M rows is not a home page.
    estimate = conn.execute(
        sa.text(
            "SELECT greatest(reltuples, 0)::bigint FROM pg_class "
            "WHERE oid = 'public.audit_events'::regclass"
        )
    ).scalar()
    return render_template("main/index.html", latest=latest, oldest=oldest, estimate=estimate)
