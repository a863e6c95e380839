"""``/healthz``: 200 when the app can serve, 503 otherwise. No sign-in.

It answers anyone, so it says only ``ok`` or ``unavailable``: the reason (which names the
database role, host or socket) goes to the server log. "Can serve" includes the access log
unless AUDIT_ACCESS_LOG_FAIL_OPEN is set, since without it every page answers 503.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from flask import Blueprint, current_app, jsonify

from .. import access_log, context, db

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)

HEALTH_TIMEOUT_MS = 2000


def _problem() -> str | None:
    """Why the app cannot serve now, for the server log; None when it can."""
    ctx = context.app_context()
    try:
        ctx.probe()
        with db.bounded(ctx.engine, HEALTH_TIMEOUT_MS) as conn:
            conn.execute(sa.text("SELECT 1"))
    except (db.DatabaseUnavailable, db.TableMissing, db.WritableRole) as exc:
        return str(exc)
    except sa.exc.DBAPIError as exc:
        return db.explain_connection_error(exc, ctx.settings.database_url or "")
    logger = current_app.extensions[access_log.EXTENSION_KEY]
    if not logger.fail_open:
        problem = logger.ping()
        if problem is not None:
            return f"the access log cannot be written ({problem})"
    return None


@bp.get("/healthz")
def healthz():
    problem = _problem()
    if problem is not None:
        log.warning("Health check: unavailable: %s", problem)
        return jsonify({"status": "unavailable"}), 503
    return jsonify({"status": "ok"})
