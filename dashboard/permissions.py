"""Who may do what: the one permission matrix of the dashboard.

Every Flask endpoint must appear in ``ENDPOINT_PERMISSIONS`` (a test walks the URL map and
fails on any endpoint missing here), so a new page cannot be born open. Access is denied by
default: an endpoint maps either to ``PUBLIC`` (login, health, static files) or to the
permission a signed-in user's role must hold.
"""

from __future__ import annotations

from typing import Final

PUBLIC: Final = "public"

# Permissions
SEARCH: Final = "search"  # free search across records, facets, as-of lists, request pages
VIEW_RECORD: Final = "view_record"  # one record's timeline, state, diffs, field history
EXPORT: Final = "export"  # CSV and PDF of searches and as-of lists
EXPORT_RECORD: Final = "export_record"  # one record's history as CSV/PDF (data-subject requests)
VIEW_PII: Final = "view_pii"  # personal data unmasked
VIEW_ACCESS_LOG: Final = "view_access_log"  # browse who viewed what
SIGNED_IN: Final = "signed_in"  # any signed-in user (home, sign-out, own account)
# The integrity page, its JSON and event proofs. Not support: a leaf hash lets its holder
# confirm a guess of a masked value (a short number, say), so it goes with view_pii.
VIEW_INTEGRITY: Final = "view_integrity"

ALL_PERMISSIONS: Final = frozenset(
    {
        SEARCH,
        VIEW_RECORD,
        EXPORT,
        EXPORT_RECORD,
        VIEW_PII,
        VIEW_ACCESS_LOG,
        SIGNED_IN,
        VIEW_INTEGRITY,
    }
)

ROLE_PERMISSIONS: Final[dict[str, frozenset[str]]] = {
    "auditor": ALL_PERMISSIONS,
    "compliance": frozenset(
        {SIGNED_IN, SEARCH, VIEW_RECORD, EXPORT, EXPORT_RECORD, VIEW_PII, VIEW_INTEGRITY}
    ),
    # Support looks up one record by id and sees its history, masked; no free search.
    "support": frozenset({SIGNED_IN, VIEW_RECORD, EXPORT_RECORD}),
}
ROLES: Final = tuple(ROLE_PERMISSIONS)

# Endpoint name -> permission required. Blueprints add their endpoints here, never elsewhere.
ENDPOINT_PERMISSIONS: dict[str, str] = {
    "static": PUBLIC,
    "health.healthz": PUBLIC,
    "main.index": SIGNED_IN,
    "auth.login": PUBLIC,
    "auth.logout": SIGNED_IN,
    "access.log": VIEW_ACCESS_LOG,
    "access.log_csv": VIEW_ACCESS_LOG,  # whoever may browse the access log may download it
    "access.reason": VIEW_RECORD,
    # Investigation pages and their JSON API (views/search.py, records.py, api.py).
    "search.search": SEARCH,
    "records.as_of": SEARCH,
    "records.request_events": SEARCH,
    "records.record": VIEW_RECORD,
    "records.lookup": VIEW_RECORD,
    "records.diff": VIEW_RECORD,
    "records.event": VIEW_RECORD,
    "api.events": SEARCH,
    "api.as_of": SEARCH,
    "api.aggregate_events": VIEW_RECORD,
    "api.aggregate_state": VIEW_RECORD,
    "api.event": VIEW_RECORD,
    "api.event_changes": VIEW_RECORD,
    "api.diff": VIEW_RECORD,
    "api.openapi_document": SIGNED_IN,  # the API's description, for any role that may call it
    # Exports and reports (views/reports.py).
    "exports.events_csv": EXPORT,
    "exports.as_of_csv": EXPORT,
    "exports.record_csv": EXPORT_RECORD,
    "exports.record_pdf": EXPORT_RECORD,
    "reports.form": EXPORT,
    "reports.events_pdf": EXPORT,
    "exports.events_proof": EXPORT,
    # Tamper evidence (views/integrity.py).
    "integrity.page": VIEW_INTEGRITY,
    "integrity.api_status": VIEW_INTEGRITY,
    "integrity.api_event_proof": VIEW_INTEGRITY,
}


def role_can(role: str | None, permission: str) -> bool:
    if permission == PUBLIC:
        return True
    if role is None:
        return False
    return permission in ROLE_PERMISSIONS.get(role, frozenset())


def permission_for(endpoint: str | None) -> str | None:
    """The permission an endpoint needs, or None when it is not in the matrix (deny)."""
    if endpoint is None:
        return None
    return ENDPOINT_PERMISSIONS.get(endpoint)


def endpoint_allowed(role: str | None, endpoint: str) -> bool:
    """May ``role`` open ``endpoint``? False for an endpoint missing from the matrix."""
    permission = permission_for(endpoint)
    return permission is not None and role_can(role, permission)
