"""The OpenAPI 3.1 document of the JSON API (served at ``/api/openapi.json``).

One home for the contract of DESIGN.md's "HTTP contracts": every ``/api`` endpoint,
``/export/events.csv`` and its proof bundle ``/export/events.proof.json``, the access log's
CSV ``/export/access-log.csv``, their
arguments, the JSON they answer (events, state, changes, as-of, integrity, proofs) and the
error body ``{"error": str}`` with 400/401/403/404/409/503. Scripts can generate clients
from it; the suite keeps it true (``tests/test_openapi.py``: every ``/api`` rule of the
URL map has a path here and the other way round, the document validates as OpenAPI 3.1,
and schemathesis fuzzes every operation from it as every role, checking each answer
against these schemas).

Pure: no Flask, no database. Limits come from :mod:`dashboard.filters`, so the document
and the parser cannot drift apart.
"""

from __future__ import annotations

import copy
from typing import Any

from .events import EVENT_FIELDS
from .filters import DEFAULT_LIMIT, MAX_LIMIT, MAX_TYPES, RANGE_PRESETS

__all__ = ["PATH_PREFIXES", "document"]

OPENAPI_VERSION = "3.1.0"
# The URL prefixes the document covers; the test compares them with the Flask URL map.
PATH_PREFIXES = (
    "/api/",
    "/export/events.csv",
    "/export/events.proof.json",
    "/export/access-log.csv",
)

_JSON = "application/json"
_UUID = {"type": "string", "format": "uuid"}
_TIME = {"type": "string", "format": "date-time"}
_ANY: dict[str, Any] = {}  # any JSON value: payloads and states are what the events made them
_NULLABLE_TEXT = {"type": ["string", "null"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _query(
    name: str, description: str, schema: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
        **extra,
    }


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": _UUID,
    }


_TIME_HELP = (
    "ISO 8601 date or date-time (2024-05-01, 2024-05-01T14:30, 2024-05-01T14:30:00+02:00); "
    "a time without offset is read in `tz` (default UTC)."
)
_UTC_TIME_HELP = "ISO 8601 date or date-time; a time without offset is UTC."

_FILTER_PARAMETERS = [
    _query("aggregate_id", "One record's id.", _UUID),
    _query(
        "type",
        f"Event type, matched exactly; repeat for several (at most {MAX_TYPES}).",
        {"type": "array", "items": {"type": "string"}},
        style="form",
        explode=True,
    ),
    _query("actor", "`metadata.actor`, matched exactly."),
    _query("from", "Inclusive lower bound. " + _TIME_HELP),
    _query("to", "Exclusive upper bound. " + _TIME_HELP),
    _query(
        "range",
        "A preset before now instead of from/to; `custom` or empty means use from/to.",
        {"type": "string", "enum": [*RANGE_PRESETS, "custom", ""]},
    ),
    _query("tz", "IANA time zone in which a from/to without offset is read (default UTC)."),
    _query("request_id", "`metadata.request_id` (or `correlation_id` when absent)."),
    _query("field", "A dotted payload path (`profile.email`); give `value` with it."),
    _query(
        "value",
        'A JSON value the payload holds at `field` (`"a@b.example"` with quotes, `42`, `true`, '
        "`null`, `{...}`). Numbers must fit a double; text may not contain U+0000.",
    ),
    _query("kind", "The record kind (USER, ORDER, ...)."),
    _query("order", "Newest first (default) or oldest first.", {"enum": ["desc", "asc"]}),
]

_PAGING_PARAMETERS = [
    _query(
        "limit",
        f"Page size, 1..{MAX_LIMIT} (default {DEFAULT_LIMIT}).",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
    ),
    _query("cursor", "Opaque position from `next_cursor`: the page after it."),
]

_REASON = _query(
    "reason",
    "Why this record is opened (a ticket number); required for support staff when "
    "AUDIT_REQUIRE_ACCESS_REASON is on. The X-Access-Reason header works too.",
)


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": _ref("Error")}}}


def _ok(schema_name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": _ref(schema_name)}}}


_ERRORS = {
    "400": _error("Bad input: the message names the argument and how to fix it."),
    "401": _error("Not signed in: send a Bearer token or a session cookie."),
    "403": _error("Signed in, but the role lacks the permission (named in the message)."),
    "503": _error(
        "The database is unreachable, hung or out of connections, or the query is too broad "
        "to answer within the statement timeout."
    ),
}
_NOT_FOUND = {"404": _error("No such record or event.")}


def _operation(
    operation_id: str,
    summary: str,
    parameters: list[dict[str, Any]],
    ok: dict[str, Any],
    *,
    not_found: bool = False,
) -> dict[str, Any]:
    responses = {"200": ok, **_ERRORS, **(_NOT_FOUND if not_found else {})}
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "parameters": parameters,
            "responses": dict(sorted(responses.items())),
        }
    }


_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "description": "A message a person can act on."},
            "problems": {
                "type": "array",
                "description": "400 for bad input: every bad argument at once, each with the "
                "argument it is about (null: the request as a whole); `error` joins them.",
                "items": {
                    "type": "object",
                    "required": ["field", "message"],
                    "properties": {
                        "field": {"type": ["string", "null"]},
                        "message": {"type": "string"},
                    },
                },
            },
        },
    },
    "Event": {
        "type": "object",
        "required": list(EVENT_FIELDS),
        "properties": {
            "event_id": _UUID,
            "seq": {"type": ["integer", "null"], "description": "null on a table without seq"},
            "aggregate_id": _UUID,
            "event_type": {"type": "string"},
            "payload": _ANY,
            "metadata": _ANY,
            "created_at": {**_TIME, "description": "UTC, with offset"},
        },
    },
    "EventPage": {
        "type": "object",
        "required": ["events", "next_cursor"],
        "properties": {
            "events": {"type": "array", "items": _ref("Event")},
            "next_cursor": _NULLABLE_TEXT,
        },
    },
    "Provenance": {
        "type": "object",
        "description": "Which event last set a leaf.",
        "required": ["event_id", "created_at", "actor"],
        "properties": {"event_id": _UUID, "created_at": _TIME, "actor": _ANY},
    },
    "State": {
        "type": "object",
        "required": [
            "aggregate_id",
            "at",
            "exists",
            "deleted",
            "state",
            "version",
            "last_event_id",
            "provenance",
        ],
        "properties": {
            "aggregate_id": _UUID,
            "at": _TIME,
            "exists": {"type": "boolean"},
            "deleted": {"type": "boolean"},
            "state": _ANY,
            "version": {"type": "integer", "minimum": 0},
            "last_event_id": {"type": ["string", "null"], "format": "uuid"},
            "provenance": {
                "type": "object",
                "description": "JSON Pointer of each leaf -> the event that last set it.",
                "additionalProperties": _ref("Provenance"),
            },
        },
    },
    "Change": {
        "type": "object",
        "required": ["path", "op", "old", "new"],
        "properties": {
            "path": {"type": "string", "description": "RFC 6901 JSON Pointer"},
            "op": {"enum": ["add", "remove", "replace"]},
            "old": _ANY,
            "new": _ANY,
        },
    },
    "PatchOperation": {
        "type": "object",
        "description": "One RFC 6902 JSON Patch operation.",
        "required": ["op", "path"],
        "properties": {
            "op": {"enum": ["add", "remove", "replace", "move", "copy", "test"]},
            "path": {"type": "string"},
            "value": _ANY,
            "from": {"type": "string"},
        },
    },
    "Changes": {
        "type": "object",
        "required": ["changes", "patch"],
        "properties": {
            "changes": {"type": "array", "items": _ref("Change")},
            "patch": {"type": "array", "items": _ref("PatchOperation")},
        },
    },
    "AsOfRecord": {
        "type": "object",
        "required": ["aggregate_id", "exists", "deleted", "state", "version", "last_event_id"],
        "properties": {
            "aggregate_id": _UUID,
            "exists": {"type": "boolean"},
            "deleted": {"type": "boolean"},
            "state": _ANY,
            "version": {"type": "integer", "minimum": 0},
            "last_event_id": {"type": ["string", "null"], "format": "uuid"},
        },
    },
    "AsOfPage": {
        "type": "object",
        "required": ["kind", "at", "aggregates", "next_cursor"],
        "properties": {
            "kind": {"type": "string"},
            "at": _TIME,
            "aggregates": {"type": "array", "items": _ref("AsOfRecord")},
            "next_cursor": _NULLABLE_TEXT,
        },
    },
}

_HEX = {"type": "string", "pattern": "^[0-9a-f]*$"}
_NULLABLE_INT = {"type": ["integer", "null"]}

_SCHEMAS.update(
    {
        "TreeHead": {
            "type": "object",
            "description": "A signed tree head, as in the heads file "
            "(dashboard/integrity/heads.py): the Ed25519 signature covers the RFC 8785 form "
            "of every other field.",
            "required": [
                "format",
                "number",
                "tree_size",
                "root",
                "last_seq",
                "skipped_seqs",
                "sealed_at",
                "previous_hash",
                "key_id",
                "signature",
            ],
            "properties": {
                "format": {"const": "audit-tree-head-v1"},
                "number": {"type": "integer", "minimum": 1},
                "tree_size": {"type": "integer", "minimum": 0},
                "root": _HEX,
                "last_seq": {"type": ["string", "null"], "description": "a decimal string"},
                "skipped_seqs": {
                    "type": "array",
                    "items": {"type": "array", "items": {"type": "string"}},
                },
                "sealed_at": _TIME,
                "previous_hash": {"type": ["string", "null"]},
                "key_id": {"type": "string"},
                "signature": {"type": "string", "description": "base64"},
                "signature_valid": {"type": "boolean"},
                "age_seconds": {"type": ["number", "null"]},
            },
        },
        "IntegrityProblem": {
            "type": "object",
            "required": ["kind", "detail", "seq", "event_id"],
            "properties": {
                "kind": {
                    "type": "string",
                    "description": "content differs from what was sealed | missing from the "
                    "sealed log | sealed, but deleted from audit_events | head signature "
                    "invalid | tree data altered | head missing or rolled back | heads differ "
                    "from the file copy | head chain broken",
                },
                "detail": {"type": "string"},
                "seq": _NULLABLE_INT,
                "event_id": {"type": ["string", "null"]},
            },
        },
        "IntegrityStatus": {
            "type": "object",
            "required": [
                "status",
                "message",
                "checked_at",
                "public_key_ids",
                "newest_head",
                "heads_checked",
                "notary_lag",
                "skipped_seqs",
                "heads_file",
                "last_verification",
                "last_verification_note",
                "problems",
            ],
            "properties": {
                "status": {
                    "enum": ["not_configured", "unavailable", "nothing_sealed", "ok", "failed"]
                },
                "message": {"type": "string"},
                "checked_at": _TIME,
                "public_key_ids": {"type": "array", "items": {"type": "string"}},
                "newest_head": {"oneOf": [{"type": "null"}, _ref("TreeHead")]},
                "heads_checked": {"type": "integer", "minimum": 0},
                "notary_lag": {
                    "type": "object",
                    "required": [
                        "unsealed_events",
                        "unsealed_capped",
                        "oldest_unsealed_seq",
                        "oldest_unsealed_at",
                        "oldest_unsealed_age_seconds",
                    ],
                    "properties": {
                        "unsealed_events": {"type": "integer", "minimum": 0},
                        "unsealed_capped": {"type": "boolean"},
                        "oldest_unsealed_seq": _NULLABLE_INT,
                        "oldest_unsealed_at": {"type": ["string", "null"]},
                        "oldest_unsealed_age_seconds": {"type": ["number", "null"]},
                    },
                },
                "skipped_seqs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["head", "from", "to"],
                        "properties": {
                            "head": {"type": "integer"},
                            "from": {"type": "integer"},
                            "to": {"type": "integer"},
                        },
                    },
                },
                "heads_file": {"type": "string"},
                "last_verification": {
                    "type": ["object", "null"],
                    "description": "The newest line of AUDIT_VERIFY_RESULTS_FILE.",
                },
                "last_verification_note": {"type": "string"},
                "problems": {"type": "array", "items": _ref("IntegrityProblem")},
            },
        },
        "EventsCheck": {
            "type": "object",
            "required": ["status", "message", "head", "verified", "unsealed", "problems"],
            "properties": {
                "status": {
                    "enum": ["not_configured", "unavailable", "nothing_sealed", "ok", "failed"]
                },
                "message": {"type": "string"},
                "head": {"oneOf": [{"type": "null"}, _ref("TreeHead")]},
                "verified": {"type": "integer", "minimum": 0},
                "unsealed": {"type": "integer", "minimum": 0},
                "problems": {"type": "array", "items": _ref("IntegrityProblem")},
            },
        },
        "EventProof": {
            "type": "object",
            "description": "Check with merkle.verify_inclusion(leaf hash recomputed from the "
            "row, leaf_index, tree_size, inclusion_proof, head root) and the head's signature.",
            "required": [
                "event_id",
                "status",
                "message",
                "seq",
                "leaf_format",
                "leaf_index",
                "leaf_hash",
                "tree_size",
                "inclusion_proof",
                "head",
                "check",
            ],
            "properties": {
                "event_id": _UUID,
                "status": {"enum": ["sealed", "unsealed", "deleted", "problem"]},
                "message": {"type": "string"},
                "seq": _NULLABLE_INT,
                "leaf_format": {"const": "audit-leaf-v1"},
                "leaf_index": _NULLABLE_INT,
                "leaf_hash": {"type": ["string", "null"]},
                "tree_size": _NULLABLE_INT,
                "inclusion_proof": {"type": "array", "items": _HEX},
                "head": {"oneOf": [{"type": "null"}, _ref("TreeHead")]},
                "check": {"oneOf": [{"type": "null"}, _ref("EventsCheck")]},
            },
        },
    }
)

_PATHS: dict[str, Any] = {
    "/api/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document.",
            "responses": {
                "200": {
                    "description": "The OpenAPI 3.1 document.",
                    "content": {_JSON: {"schema": {"type": "object"}}},
                },
                "401": _ERRORS["401"],
            },
        }
    },
    "/api/events": _operation(
        "searchEvents",
        "Search events, newest first (or oldest with order=asc), keyset-paginated.",
        [*_FILTER_PARAMETERS, *_PAGING_PARAMETERS],
        _ok("EventPage", "A page of events and the cursor of the next (null on the last)."),
    ),
    "/api/aggregates/{aggregate_id}/events": _operation(
        "recordEvents",
        "One record's events, oldest first, keyset-paginated.",
        [_path("aggregate_id", "The record's id."), *_PAGING_PARAMETERS, _REASON],
        _ok("EventPage", "A page of the record's events."),
        not_found=True,
    ),
    "/api/aggregates/{aggregate_id}/state": _operation(
        "recordState",
        "The record's state at a time (default now), with the event that set each leaf.",
        [
            _path("aggregate_id", "The record's id."),
            _query("at", "The moment. " + _TIME_HELP),
            _query("tz", "IANA time zone in which an `at` without offset is read."),
            _REASON,
        ],
        _ok("State", "The state and its provenance."),
        not_found=True,
    ),
    "/api/events/{event_id}": _operation(
        "getEvent",
        "One event in full, where the pages link when they cut a long value short.",
        [_path("event_id", "The event's id."), _REASON],
        _ok("Event", "The event (payload and metadata masked for roles without view_pii)."),
        not_found=True,
    ),
    "/api/events/{event_id}/changes": _operation(
        "eventChanges",
        "What one event changed: the state before it vs the state after it.",
        [_path("event_id", "The event's id."), _REASON],
        _ok("Changes", "Field-level changes and the equivalent RFC 6902 patch."),
        not_found=True,
    ),
    "/api/diff": _operation(
        "diffEvents",
        "State after `from` vs state after `to` (two events of one record).",
        [
            _query("from", "The earlier event's id (400 when missing or unknown).", _UUID),
            _query("to", "The later event's id (400 when of another record).", _UUID),
            _REASON,
        ],
        _ok("Changes", "Field-level changes and the equivalent RFC 6902 patch."),
    ),
    "/api/as-of": _operation(
        "asOf",
        "Every record of a kind as it was at a time, in record-id order.",
        [
            _query("kind", "The record kind (required; 400 for an unknown kind)."),
            _query("at", "The moment (default now). " + _TIME_HELP),
            _query("tz", "IANA time zone in which an `at` without offset is read."),
            _query("cursor", "Opaque position from `next_cursor`."),
            _PAGING_PARAMETERS[0],
        ],
        _ok("AsOfPage", "A page of records and their states."),
    ),
    "/api/integrity": _operation(
        "integrityStatus",
        "The integrity page's facts: newest signed head, notary lag, skipped seqs, the last "
        "full verification, problems (auditors and compliance).",
        [],
        _ok("IntegrityStatus", "The state of the sealed log."),
    ),
    "/api/events/{event_id}/proof": _operation(
        "eventProof",
        "One event's RFC 9162 inclusion proof in the newest signed head, with the "
        "dashboard's own check of it (auditors and compliance).",
        [_path("event_id", "The event's id."), _REASON],
        _ok("EventProof", "The proof; a sealed event that was deleted is status deleted."),
        not_found=True,
    ),
    "/export/events.proof.json": {
        "get": {
            "operationId": "exportEventsProof",
            "summary": "The proof bundle of /export/events.csv with the same filter and "
            "through_seq, checked offline by `audit-dashboard verify-export`.",
            "parameters": [
                *_FILTER_PARAMETERS,
                _query(
                    "through_seq",
                    "The CSV's X-Audit-High-Water-Mark (at most the newest sealed event).",
                    {"type": "integer", "minimum": 0},
                ),
            ],
            "responses": {
                "200": {
                    "description": "The bundle (format audit-proof-bundle-v1).",
                    "content": {_JSON: {"schema": {"type": "object"}}},
                },
                **_ERRORS,
                "409": _error(
                    "Some rows of that export are not sealed yet (the message names the "
                    "through_seq to use), or the export would be masked."
                ),
            },
        }
    },
    "/export/events.csv": {
        "get": {
            "operationId": "exportEventsCsv",
            "summary": "Every event matching the filter, oldest first, as streamed CSV.",
            "description": (
                "RFC 4180, UTF-8, CRLF; formula-like cells neutralised. Errors found before "
                "the first byte are JSON; a failure mid-stream aborts the chunked response "
                "without its final chunk, so clients see an incomplete download."
            ),
            "parameters": [
                *_FILTER_PARAMETERS,
                _query(
                    "through_seq",
                    "An earlier X-Audit-High-Water-Mark: the same filter gives the same bytes.",
                    {"type": "integer", "minimum": 0},
                ),
            ],
            "responses": {
                "200": {
                    "description": "The CSV file.",
                    "headers": {
                        "X-Audit-High-Water-Mark": {
                            "description": "The last seq included.",
                            "schema": {"type": "string"},
                        },
                        "X-Audit-Replica-Position": {
                            "description": (
                                "Only when read from a hot standby: the WAL position it had "
                                "replayed, its last replayed commit and its lag."
                            ),
                            "schema": {"type": "string"},
                        },
                    },
                    "content": {"text/csv": {"schema": {"type": "string"}}},
                },
                **_ERRORS,
            },
        }
    },
    "/export/access-log.csv": {
        "get": {
            "operationId": "exportAccessLogCsv",
            "summary": "Every access-log entry matching the filters of /access-log, newest "
            "first, as streamed CSV (needs the view_access_log permission).",
            "description": (
                "The same format as the events CSV (RFC 4180, UTF-8, CRLF; formula-like cells "
                "neutralised); `filters` and `aggregate_ids` as JSON. The download is itself "
                "written to the access log (started, then ok with its row count and SHA-256)."
            ),
            "parameters": [
                _query("user", "The user name (case-insensitive)."),
                _query("aggregate_id", "Entries that touched this record.", _UUID),
                _query("action", "The action, exactly (`records.record`, `export_csv`...)."),
                _query("outcome", "The outcome, exactly (`ok`, `denied`, `started`...)."),
                _query("from", "Inclusive lower bound of the entry's time. " + _UTC_TIME_HELP),
                _query("to", "Exclusive upper bound of the entry's time. " + _UTC_TIME_HELP),
            ],
            "responses": {
                "200": {
                    "description": "The CSV file.",
                    "content": {"text/csv": {"schema": {"type": "string"}}},
                },
                **_ERRORS,
            },
        }
    },
}

_DOCUMENT: dict[str, Any] = {
    "openapi": OPENAPI_VERSION,
    "info": {
        "title": "Audit dashboard JSON API",
        "version": "1",
        "description": (
            "Read-only access to the audit trail: the same data as the dashboard's pages, "
            "masked by the caller's role. Every call is written to the access log."
        ),
    },
    "security": [{"bearerToken": []}, {"sessionCookie": []}],
    "paths": _PATHS,
    "components": {
        "schemas": _SCHEMAS,
        "securitySchemes": {
            "bearerToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "A token from `audit-dashboard users token NAME`.",
            },
            "sessionCookie": {
                "type": "apiKey",
                "in": "cookie",
                "name": "audit_session",
                "description": "The session cookie of a password sign-in at /login.",
            },
        },
    },
}


def document() -> dict[str, Any]:
    """The OpenAPI document, a fresh copy (callers may change it)."""
    return copy.deepcopy(_DOCUMENT)
