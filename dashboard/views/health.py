"""``/healthz``: 200 when the app and its database answer, 503 otherwise. No sign-in."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, jsonify

from .. import context, db

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    ctx = context.app_context()
    try:
        info = ctx.probe()
        with db.bounded(ctx.engine, 2000) as conn:
            conn.execute(sa.text("SELECT 1"))
    except (db.DatabaseUnavailable, db.TableMissing, db.WritableRole) as exc:
        return jsonify({"status": "unavailable", "error": str(exc)}), 503
    except sa.exc.DBAPIError as exc:
        message = db.explain_connection_error(exc, ctx.settings.database_url or "")
        return jsonify({"status": "unavailable", "error": message}), 503
    return jsonify({"status": "ok", "ordered_by_seq": info.has_seq})
