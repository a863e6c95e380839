"""Blueprints. Each one's endpoints are listed in dashboard.permissions.ENDPOINT_PERMISSIONS."""

from __future__ import annotations

from flask import Flask


def register_blueprints(app: Flask) -> None:
    from . import health, main

    app.register_blueprint(health.bp)
    app.register_blueprint(main.bp)
