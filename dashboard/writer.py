"""``record_event()``: how an application writes one audit event inside its own transaction.

The event must commit or roll back together with the business change it describes; an
event written on a separate connection (or after the commit) can describe a change that
never happened, or miss one that did. So the helper never opens, commits or rolls back
anything: it runs one statement on the connection it is given, in whatever transaction
that connection is in. Usage (psycopg 3; a SQLAlchemy ``Connection`` or ``Session`` works
the same way inside ``engine.begin()`` / ``session.begin()``)::

    import psycopg
    from dashboard.writer import record_event

    with psycopg.connect(APP_DATABASE_URL) as conn, conn.transaction():
        conn.execute("UPDATE users SET email = %s WHERE id = %s", (new_email, user_id))
        record_event(conn, user_id, "USER_EMAIL_CHANGED",
                     {"email": new_email, "email_verified": False},
                     {"actor": "alice.martin@example.com", "aggregate_type": "USER",
                      "request_id": request_id, "ip": client_ip, "reason": ticket})
    # leaving the block commits both rows; an exception rolls both back

The application's role needs EXECUTE on ``insert_audit_event()`` (``GRANT audit_writer TO
app_role``) and no privilege on the table itself: the SECURITY DEFINER function is the
only door, so an application bug cannot rewrite history. On a connection in autocommit
mode the event commits on its own, which defeats the purpose; keep it in a transaction.

Every value is a bound parameter. The event type and the JSON are checked here, before
anything is sent, so a bad call fails with a ``ValueError`` that names the problem instead
of aborting the caller's transaction with a database error.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

EVENT_TYPE_MAX_LENGTH = 50  # audit_events.event_type is VARCHAR(50)
# Upper-case words joined by underscores, the shape the default replay rules glob on
# (*_CREATED, *_DELETED, *_SNAPSHOT); anything else would silently fall through to "merge".
EVENT_TYPE_PATTERN = re.compile(r"[A-Z][A-Z0-9_]*")

# Schema-qualified so a same-named function earlier on the caller's search_path cannot
# intercept the call.
_PSYCOPG_SQL = "SELECT public.insert_audit_event(%s, %s, %s, %s)"
_SQLALCHEMY_SQL = (
    "SELECT public.insert_audit_event(CAST(:aggregate_id AS uuid), "
    "CAST(:event_type AS varchar), CAST(:payload AS jsonb), CAST(:metadata AS jsonb))"
)

# allow_nan=False: NaN and Infinity are not JSON and jsonb rejects them.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def record_event(
    conn: Any,
    aggregate_id: uuid.UUID | str,
    event_type: str,
    payload: Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
) -> uuid.UUID:
    """Append one event through ``insert_audit_event()``; return the new ``event_id``.

    ``conn`` is a psycopg 3 connection or cursor, or a SQLAlchemy ``Connection`` or
    ``Session``. ``payload`` is the JSON object the replay folds (the initial state for a
    ``*_CREATED`` event, an RFC 7396 merge patch for most others); ``metadata`` carries who
    and why (``actor``, ``ip``, ``user_agent``, ``reason``, ``request_id``,
    ``aggregate_type``). Raises ``ValueError`` for invalid input before touching the
    database, and ``TypeError`` for a ``conn`` it does not know.
    """
    aggregate = _validated_aggregate_id(aggregate_id)
    kind = _validated_event_type(event_type)
    payload_text = _json_object_text(payload, "payload")
    metadata_text = None if metadata is None else _json_object_text(metadata, "metadata")

    if isinstance(conn, psycopg.Connection | psycopg.Cursor):
        # The text was produced (and checked) above; send exactly those bytes as jsonb.
        row = conn.execute(
            _PSYCOPG_SQL,
            (
                aggregate,
                kind,
                Jsonb(payload_text, dumps=_already_encoded),
                None if metadata_text is None else Jsonb(metadata_text, dumps=_already_encoded),
            ),
        ).fetchone()
        value = row[0] if row else None
    elif _is_sqlalchemy(conn):
        import sqlalchemy as sa

        value = conn.execute(
            sa.text(_SQLALCHEMY_SQL),
            {
                "aggregate_id": str(aggregate),
                "event_type": kind,
                "payload": payload_text,
                "metadata": metadata_text,
            },
        ).scalar_one()
    else:
        raise TypeError(
            "record_event() needs a psycopg 3 Connection or Cursor, or a SQLAlchemy "
            f"Connection or Session; got {type(conn).__name__}."
        )
    if value is None:  # the function always returns the id; None means a broken install
        raise RuntimeError("insert_audit_event() returned no event_id")
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _validated_aggregate_id(aggregate_id: uuid.UUID | str) -> uuid.UUID:
    if isinstance(aggregate_id, uuid.UUID):
        return aggregate_id
    try:
        return uuid.UUID(str(aggregate_id))
    except ValueError as exc:
        raise ValueError(f"aggregate_id must be a UUID, got {aggregate_id!r}") from exc


def _validated_event_type(event_type: str) -> str:
    if not isinstance(event_type, str) or not event_type:
        raise ValueError(f"event_type must be a non-empty string, got {event_type!r}")
    if len(event_type) > EVENT_TYPE_MAX_LENGTH:
        raise ValueError(
            f"event_type is {len(event_type)} characters long; audit_events allows at most "
            f"{EVENT_TYPE_MAX_LENGTH}: {event_type[:60]!r}"
        )
    if not EVENT_TYPE_PATTERN.fullmatch(event_type):
        raise ValueError(
            f"event_type {event_type!r} must be upper-case words joined by underscores, "
            "such as USER_EMAIL_CHANGED (the replay rules match on that shape)"
        )
    return event_type


def _json_object_text(value: Mapping[str, Any], what: str) -> str:
    """The JSON text of ``value``, or a ValueError saying why PostgreSQL would reject it."""
    if not isinstance(value, Mapping):
        # The replay treats a payload as a record's state or as a merge patch of it; both are
        # JSON objects. A bare list or scalar would silently replace the whole record.
        raise ValueError(f"{what} must be a JSON object (a dict), got {type(value).__name__}")
    try:
        text = _ENCODER.encode(dict(value))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not JSON-serialisable: {exc}") from exc
    if "\\u0000" in text and _contains_nul(value):
        raise ValueError(f"{what} contains a NUL character (\\u0000), which jsonb cannot store")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} contains a string that is not valid Unicode: {exc}") from exc
    return text


def _contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_contains_nul(k) or _contains_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_contains_nul(item) for item in value)
    return False


def _already_encoded(text: str) -> str:
    """The ``dumps`` for Jsonb when the object is already JSON text."""
    return text


def _is_sqlalchemy(conn: Any) -> bool:
    # Imported lazily: an application on plain psycopg need not have SQLAlchemy installed.
    try:
        from sqlalchemy.engine import Connection
        from sqlalchemy.orm import Session
    except ImportError:
        return False
    return isinstance(conn, Connection | Session)
