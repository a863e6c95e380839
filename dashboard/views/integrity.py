"""The integrity page for auditors, its JSON twin, and one event's inclusion proof.

- ``/integrity``: the newest signed tree head and its age, what re-checking the newest
  heads found (signature, chain, consistency proof), notary lag, skipped seqs, the heads
  file against the table, and the last full ``verify`` (from AUDIT_VERIFY_RESULTS_FILE);
- ``/api/integrity``: the same facts as JSON;
- ``/api/events/<event_id>/proof``: the event's leaf hash, leaf index, RFC 9162 inclusion
  proof and the signed head, so an outsider can check it with the pure core
  (``dashboard.integrity.merkle.verify_inclusion`` and ``heads.verify_signature``).

The facts come from :mod:`dashboard.integrity.check`; these views only render them and
note what they showed in the access log.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, jsonify, render_template, request

from .. import access_log, context
from ..filters import check_arg_names, parse_event_id
from ..integrity import check
from ..integrity.heads import head_to_json
from . import present

bp = Blueprint("integrity", __name__)


def _status() -> check.IntegrityStatus:
    settings = context.settings()
    return check.integrity_status(
        context.connection(),
        context.integrity_keys(),
        heads_path=settings.notary_heads_file,
        results_path=settings.verify_results_file,
    )


def _age(moment: datetime | None, now: datetime) -> float | None:
    return None if moment is None else max(0.0, (now - moment).total_seconds())


def age_text(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172_800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86_400} days"


def status_json(status: check.IntegrityStatus, now: datetime) -> dict[str, Any]:
    newest = status.newest
    verification = status.last_verification
    return {
        "status": status.status,
        "message": status.message,
        "checked_at": now.isoformat(),
        "public_key_ids": list(status.key_ids),
        "newest_head": None
        if newest is None
        else {
            **head_to_json(newest.head),
            "signature_valid": newest.signature_ok,
            "age_seconds": _age(newest.head.sealed_at, now),
        },
        "heads_checked": status.heads_checked,
        "notary_lag": {
            "unsealed_events": status.unsealed,
            "unsealed_capped": status.unsealed_capped,
            "oldest_unsealed_seq": status.oldest_unsealed_seq,
            "oldest_unsealed_at": status.oldest_unsealed_at.isoformat()
            if status.oldest_unsealed_at
            else None,
            "oldest_unsealed_age_seconds": _age(status.oldest_unsealed_at, now),
        },
        "skipped_seqs": [
            {"head": number, "from": low, "to": high} for number, low, high in status.skipped
        ],
        "heads_file": status.heads_file_note,
        "last_verification": None if verification is None else verification.to_json(),
        "last_verification_note": status.verification_note,
        "problems": [finding.to_json() for finding in status.findings],
    }


@bp.get("/integrity")
def page():
    """The integrity page (auditors and compliance)."""
    check_arg_names(request.args, ())
    status = _status()
    now = datetime.now(UTC)
    access_log.note(action="view_integrity", row_count=len(status.findings))
    verification = status.last_verification
    return render_template(
        "integrity/integrity.html",
        status=status,
        now=now,
        tz=context.settings().display_timezone,
        format_time=present.format_time,
        head_age=age_text(_age(status.newest.head.sealed_at, now)) if status.newest else "",
        oldest_unsealed_age=age_text(_age(status.oldest_unsealed_at, now)),
        verification_age=age_text(_age(verification.finished_at, now)) if verification else "",
    )


@bp.get("/api/integrity")
def api_status():
    """The integrity page's facts as JSON."""
    check_arg_names(request.args, ())
    status = _status()
    access_log.note(action="api_integrity", row_count=len(status.findings))
    return jsonify(status_json(status, datetime.now(UTC)))


@bp.get("/api/events/<event_id>/proof")
def api_event_proof(event_id: str):
    """One event's inclusion proof in the newest head, with the dashboard's own check.

    404 for an id that was never an event; a sealed event that was deleted answers 200 with
    ``status: "deleted"`` (that is the finding)."""
    parsed = parse_event_id(event_id)
    check_arg_names(request.args, ("reason",))
    proof = check.event_proof(context.connection(), parsed, context.integrity_keys())
    if proof.status == "not_found":
        access_log.note(action="api_event_proof", row_count=0)
        return jsonify({"error": proof.message}), 404
    access_log.note(action="api_event_proof", row_count=1, filters={"event_id": str(parsed)})
    return jsonify(proof.to_json())
