"""``/login`` and ``/logout``: the password sign-in form and the way out.

Both are POSTs protected by CSRF tokens; failed sign-ins are rate-limited per client
address, across every process (see :mod:`dashboard.sign_in_limit`). A failed sign-in says
the same thing, in about the same time, whether the user name exists or not, and both
outcomes go to the security log and the access log. A sign-in that cannot be recorded does
not happen (503, see :mod:`dashboard.access_log`); a sign-out always happens, and its
entry — which revokes the session for every worker — waits in the spool when the log is
down.
"""

from __future__ import annotations

import logging

from flask import Blueprint, flash, g, redirect, render_template, request, url_for

from .. import access_log, auth
from ..users import MAX_PASSWORD_LENGTH, UserError, UsersFileError, normalise_name

bp = Blueprint("auth", __name__)
security_log = logging.getLogger("dashboard.security")

MAX_NAME_INPUT = 200


def render_login(error: str | None = None, status: int = 200, username: str = ""):
    next_url = auth.safe_next(request.values.get("next"), default="")
    return (
        render_template("auth/login.html", error=error, username=username, next_url=next_url),
        status,
    )


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        return render_login()
    username = (request.form.get("username") or "")[:MAX_NAME_INPUT].strip()
    password = request.form.get("password") or ""
    if len(password) > MAX_PASSWORD_LENGTH:
        password = ""  # still checked (against nothing), so the timing stays the same
    refused = auth.sign_in_refused()
    if refused is not None:
        return render_login(error=refused, status=429, username=username)
    store = auth.user_store()
    try:
        user = store.verify(username, password) if store is not None else None
    except UsersFileError as exc:
        security_log.error("%s", exc)
        return render_login(error=auth.USERS_FILE_BROKEN, status=503, username=username)
    if user is None:
        attempted = _loggable_name(username)
        security_log.warning("Failed sign-in as %r from %s", attempted, request.remote_addr)
        access_log.record(action="sign_in", outcome="failed", username=attempted, filters={})
        auth.sign_in_failed()
        return render_login(error=auth.WRONG_CREDENTIALS, status=401, username=username)
    written = access_log.record(action="sign_in", username=user.name, role=user.role, filters={})
    if written == "withheld":
        raise access_log.AccessLogDown(access_log.withheld_problem())  # not signed in: 503
    auth.sign_in(user)
    security_log.info("Signed in: %s (%s) from %s", user.name, user.role, request.remote_addr)
    return redirect(auth.safe_next(request.form.get("next")), 303)


@bp.post("/logout")
def logout():
    user = g.user
    written = access_log.record(
        action="sign_out", filters={}, revokes_session=auth.session_digest(), may_withhold=False
    )
    auth.sign_out()
    security_log.info("Signed out: %s from %s", user.name, request.remote_addr)
    if user.via == "proxy":
        flash("You signed in through single sign-on; sign out there to end that session.", "info")
    elif written == "kept":
        flash(
            "You have signed out of this browser. The access log is unavailable, so the "
            "sign-out is kept on this server and ends the session everywhere once it is back.",
            "info",
        )
    else:
        flash("You have signed out.", "info")
    return redirect(url_for("auth.login"), 303)


def _loggable_name(username: str) -> str:
    """The attempted name for the logs, when it is a valid user name (anything else — often
    a password typed into the wrong field — is not written down)."""
    try:
        return normalise_name(username)
    except UserError:
        return "(not a valid user name)"
