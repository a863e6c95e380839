"""Reasons for access: support staff give a reason or ticket number before a record opens
(AUDIT_REQUIRE_ACCESS_REASON); the reason is remembered in the session for a while and
written on every entry of that record's pages."""

from __future__ import annotations

import time
from typing import Any

from flask import g, redirect, request, session, url_for

from .. import context, permissions
from ..errors import error_response, wants_json
from ..filters import FilterError
from .entry import canonical_ids
from .recording import note

REASON_MINUTES = 60  # a reason given for a record covers its pages for this long
REASON_MIN_LENGTH, REASON_MAX_LENGTH = 3, 300
MAX_REMEMBERED_REASONS = 20  # the session cookie must stay small
REASON_HEADER = "X-Access-Reason"


def reason_required() -> bool:
    """Whether the signed-in user must give a reason before opening a record.

    AUDIT_REQUIRE_ACCESS_REASON applies to roles that look records up one at a time — those
    without the ``search`` permission (support). Auditors and compliance staff investigate
    by search and are accountable through the access log alone.
    """
    user = g.get("user")
    return bool(
        user is not None
        and context.settings().require_access_reason
        and not user.can(permissions.SEARCH)
    )


def check_reason(text: str | None) -> str:
    """A cleaned-up reason; FilterError (400) when it is missing, too short or too long."""
    reason = " ".join((text or "").split())
    if len(reason) < REASON_MIN_LENGTH:
        raise FilterError(
            f"Give a reason or ticket number (at least {REASON_MIN_LENGTH} characters).", "reason"
        )
    if len(reason) > REASON_MAX_LENGTH:
        raise FilterError(f"Keep the reason under {REASON_MAX_LENGTH} characters.", "reason")
    return reason


def remember_reason(aggregate_id: Any, reason: str) -> str:
    """Keep the reason in the session so the record's other pages do not ask again."""
    canonical = next(canonical_ids((aggregate_id,)))
    reason = check_reason(reason)
    now = int(time.time())
    stored = {
        key: value
        for key, value in (session.get("access_reasons") or {}).items()
        if isinstance(value, list) and len(value) == 2 and value[1] > now
    }
    stored[canonical] = [reason, now + REASON_MINUTES * 60]
    if len(stored) > MAX_REMEMBERED_REASONS:
        stored = dict(sorted(stored.items(), key=lambda item: item[1][1])[-MAX_REMEMBERED_REASONS:])
    session["access_reasons"] = stored
    return reason


def reason_for(aggregate_id: Any) -> str | None:
    """The reason given for this record: ``?reason=``, the X-Access-Reason header, or one
    remembered in the session within the last REASON_MINUTES."""
    given = request.args.get("reason") or request.headers.get(REASON_HEADER)
    if given and given.strip():
        return check_reason(given)
    canonical = next(canonical_ids((aggregate_id,)))
    stored = (session.get("access_reasons") or {}).get(canonical)
    if isinstance(stored, list) and len(stored) == 2 and stored[1] > time.time():
        return str(stored[0])
    return None


def require_reason(aggregate_id: Any):
    """Call first in a record view: None to go on, else the response to return.

    Notes the reason (when there is one) on this request's access-log entry. When a reason
    is required and missing, a page is redirected to the reason form and an API call
    answers 400 saying how to give one.
    """
    reason = reason_for(aggregate_id)
    if reason is not None:
        note(reason=reason, aggregate_ids=(aggregate_id,))
        return None
    if not reason_required():
        return None
    note(aggregate_ids=(aggregate_id,), action="reason_required")
    if wants_json():
        return error_response(
            400,
            "Give a reason or ticket number before opening this record: add "
            f"?reason=TICKET-123 or an {REASON_HEADER} header.",
        )
    return redirect(
        url_for(
            "access.reason",
            aggregate_id=next(canonical_ids((aggregate_id,))),
            next=request.full_path.rstrip("?"),
        ),
        303,
    )
