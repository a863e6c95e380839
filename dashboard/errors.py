"""How failures reach people: a page or a JSON body with a message they can act on.

No stack trace ever reaches a response. JSON is answered for the API and exports, HTML for
pages. Database trouble is 503; a statement that hit its time limit asks to narrow the query.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import sqlalchemy as sa
from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from . import db
from .budget import WorkBudgetExceeded
from .filters import FilterError, Problem

log = logging.getLogger(__name__)

TOO_BROAD = (
    "This query is too broad to answer in time — narrow the time range or add a filter "
    "(event type, actor or record)."
)


def wants_json() -> bool:
    path = request.path
    if path.startswith(("/api/", "/export/")) or path == "/healthz":
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" and not request.accept_mimetypes.accept_html


def error_response(
    status: int, message: str, title: str | None = None, problems: Iterable[Problem] = ()
):
    """``{"error": message}`` (and ``problems``, each bad field, when given) for the API
    and exports; the error page in the app's layout for pages."""
    problems = tuple(problems)
    if wants_json():
        body: dict[str, object] = {"error": message}
        if problems:
            body["problems"] = [{"field": p.field, "message": p.message} for p in problems]
        return jsonify(body), status
    return (
        render_template(
            "errors/error.html",
            status=status,
            title=title,
            message=message,
            problems=problems if len(problems) > 1 else (),
        ),
        status,
    )


# Plain words for the HTTP errors the framework raises itself (its own texts talk of "the
# server" and "the requested URL"); an abort() with a message of its own keeps it.
HTTP_ERRORS: dict[int, tuple[str, str]] = {
    400: ("Bad request", "The dashboard could not read this request. Go back and try again."),
    404: (
        "Page not found",
        "There is no page at this address. Check the link, or start again from the menu.",
    ),
    405: (
        "Not available this way",
        "This address does not answer {method} requests; use the page's own links and buttons.",
    ),
    413: ("Too large", "The request is too large for the dashboard to read."),
    429: ("Too many requests", "Too many requests in a short time; wait a minute and retry."),
    500: ("Something went wrong", "Something went wrong on our side; it has been logged."),
}


def http_error_text(exc: HTTPException, method: str) -> tuple[str, str]:
    """``(title, message)`` of an HTTP error, in the dashboard's words unless the code that
    raised it gave its own description."""
    code = exc.code or 500
    own = exc.description and exc.description != type(exc).description
    if code in HTTP_ERRORS and not own:
        title, message = HTTP_ERRORS[code]
        return title, message.format(method=method)
    return (HTTP_ERRORS.get(code, (exc.name, ""))[0], exc.description or exc.name)


def register(app: Flask) -> None:
    @app.errorhandler(FilterError)
    def bad_filter(exc: FilterError):
        return error_response(400, exc.message, "Please check your input", exc.problems)

    @app.errorhandler(WorkBudgetExceeded)
    def too_much_work(exc: WorkBudgetExceeded):
        log.warning("%s: stopped at the work budget (%g s)", request.path, exc.seconds)
        return error_response(503, str(exc), "Too much to show at once")

    @app.errorhandler(db.DatabaseUnavailable)
    def database_unavailable(exc: db.DatabaseUnavailable):
        return error_response(503, str(exc), "The database is not available")

    @app.errorhandler(db.TableMissing)
    def table_missing(exc: db.TableMissing):
        return error_response(503, str(exc), "The audit table is missing")

    @app.errorhandler(db.WritableRole)
    def writable_role(exc: db.WritableRole):
        return error_response(503, str(exc), "Refusing to serve with a writing role")

    @app.errorhandler(sa.exc.TimeoutError)
    def no_connection_free(exc: sa.exc.TimeoutError):
        # The pool's checkout limit (db.make_engine): every connection of this worker is
        # busy, usually because the database is slow or hung.
        return error_response(
            503,
            "Every database connection of this server is busy (the database may be slow or "
            "hung); try again in a moment.",
            "The database is not available",
        )

    @app.errorhandler(sa.exc.DBAPIError)
    def database_error(exc: sa.exc.DBAPIError):
        if db.is_query_canceled(exc):
            return error_response(503, TOO_BROAD, "Too broad")
        if db.is_missing_table(exc):
            return error_response(
                503,
                "The table audit_events does not exist. Run `audit-dashboard init-db`.",
                "The audit table is missing",
            )
        if db.is_connection_problem(exc):
            url = app.extensions["audit"].settings.database_url or ""
            return error_response(
                503, db.explain_connection_error(exc, url), "The database is not available"
            )
        log.exception("Database error")
        return error_response(
            500, "The database answered with an error; it has been logged.", "Database error"
        )

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        title, message = http_error_text(exc, request.method)
        return error_response(exc.code or 500, message, title)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("Unhandled error")
        return error_response(500, *reversed(HTTP_ERRORS[500]))
