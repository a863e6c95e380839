"""Blueprints. Each one's endpoints are listed in dashboard.permissions.ENDPOINT_PERMISSIONS."""

from __future__ import annotations

from flask import Flask


def register_blueprints(app: Flask) -> None:
    from . import access, auth, health, main

    app.register_blueprint(health.bp)
    app.register_blueprint(main.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(access.bp)

    from . import api, records, search

    app.register_blueprint(search.bp)
    app.register_blueprint(records.bp)
    app.register_blueprint(api.bp)

    from . import integrity, reports

    app.register_blueprint(integrity.bp)

    app.register_blueprint(reports.exports)
    app.register_blueprint(reports.reports)

    from .present import event_rows_html

    # Called by the event_table macro (_partials/events.html), which is imported without
    # the page's context: a global is what such a template sees.
    app.jinja_env.globals["event_rows"] = event_rows_html
