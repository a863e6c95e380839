"""Audit investigation dashboard: a Flask app over an append-only ``audit_events`` table."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .config import Settings, load_settings
from .paths import STATIC_DIR, TEMPLATES_DIR

if TYPE_CHECKING:  # Flask is imported on use, so the pure modules load without it
    from flask import Flask

log = logging.getLogger(__name__)


def create_app(config: Settings | Mapping[str, Any] | None = None) -> Flask:
    """Build the app. ``config`` is a Settings, or overrides on top of the environment's.

    Raises ConfigError for a bad setting and WritableRole when the database role can change
    the audit trail; an unreachable database or missing table does not stop the app, it
    answers 503 with the reason until the database is back.
    """
    from flask import Flask, g

    from . import auth, budget, context, db, errors
    from .views import register_blueprints

    if isinstance(config, Settings):
        settings = config
    else:
        settings = load_settings()
        if config:
            settings = settings.replace(**config)

    app = Flask(
        __name__,
        template_folder=str(TEMPLATES_DIR),
        static_folder=str(STATIC_DIR),
    )
    # Browsers and tools ask for /favicon.ico whatever the page links: answer it with the
    # SVG icon as the static endpoint itself, so it is a public, unlogged static file.
    app.add_url_rule(
        "/favicon.ico",
        endpoint="static",
        view_func=app.view_functions["static"],
        defaults={"filename": "favicon.svg"},
    )
    app.config["SECRET_KEY"] = settings.secret_key
    app.config["JSON_SORT_KEYS"] = False
    audit_context = context.build_context(settings)
    app.extensions["audit"] = audit_context
    try:
        audit_context.probe()
    except (db.DatabaseUnavailable, db.TableMissing) as exc:
        log.error("Starting without a usable database; pages answer 503 until it is: %s", exc)

    app.teardown_appcontext(context.close_connection)

    @app.before_request
    def start_work_budget():
        g.audit_work_budget = budget.start_budget(settings.work_budget_ms / 1000)

    @app.teardown_request
    def end_work_budget(_exc):
        token = g.pop("audit_work_budget", None)
        if token is not None:
            budget.end_budget(token)

    @app.context_processor
    def table_facts():
        # What the start-up probe learned (None until the database has answered once).
        return {
            "audit_table": audit_context.table,
            "settings": settings,
            "data_freshness": context.data_freshness,  # called by the template, when shown
        }

    errors.register(app)
    auth.init_app(app)
    register_blueprints(app)
    return app
