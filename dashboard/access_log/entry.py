"""One access-log entry, as stored and as kept in the spool. No Flask, no database."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

MAX_AGGREGATE_IDS = 10_000  # an export names its filters and digest, not a million ids
MAX_TEXT = 500  # longest filter value or reason kept; longer ones are cut with an ellipsis

# What happened to the request, as the outcome column says it. "started" opens an export
# (its outcome follows in a second entry); "withheld" is a response not served because its
# entry could not be written (AUDIT_ACCESS_LOG_FAIL_OPEN unset).
OUTCOMES = (
    "ok",
    "started",
    "failed",
    "denied",
    "not_found",
    "rate_limited",
    "rejected",
    "error",
    "withheld",
)


def new_entry_uuid() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class AccessEntry:
    """One entry. ``id`` orders entries (in the file backend: the byte offset);
    ``entry_uuid`` makes a write idempotent; ``logged_at`` is when the database got it
    (later than ``at`` for an entry that waited in the spool)."""

    id: int | None
    at: datetime
    username: str
    role: str | None
    action: str
    route: str | None = None
    filters: dict[str, Any] | None = None
    aggregate_ids: tuple[str, ...] = ()
    row_count: int | None = None
    export_digest: str | None = None
    outcome: str = "ok"
    client_ip: str | None = None
    reason: str | None = None
    entry_uuid: str = field(default_factory=new_entry_uuid)
    logged_at: datetime | None = None
    revokes_session: str | None = None  # SHA-256 of the session id a sign-out ends

    def to_json(self) -> dict[str, Any]:
        """The entry as JSON values. A shallow copy (``dataclasses.asdict`` deep-copies,
        which was a fifth of a page's access-log cost): callers serialise it or change its
        top-level keys, never a nested value."""
        data = {name: getattr(self, name) for name in _FIELD_NAMES}
        data["filters"] = dict(self.filters) if self.filters is not None else None
        data["at"] = self.at.isoformat()
        data["logged_at"] = self.logged_at.isoformat() if self.logged_at else None
        data["aggregate_ids"] = list(self.aggregate_ids)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], entry_id: int | None) -> AccessEntry:
        logged_at = data.get("logged_at")
        return cls(
            id=entry_id,
            at=datetime.fromisoformat(data["at"]),
            username=str(data["username"]),
            role=data.get("role"),
            action=str(data["action"]),
            route=data.get("route"),
            filters=data.get("filters"),
            aggregate_ids=tuple(data.get("aggregate_ids") or ()),
            row_count=data.get("row_count"),
            export_digest=data.get("export_digest"),
            outcome=data.get("outcome") or "ok",
            client_ip=data.get("client_ip"),
            reason=data.get("reason"),
            # Entries written before entries had UUIDs get one derived from their content.
            entry_uuid=str(data.get("entry_uuid") or uuid.uuid5(uuid.NAMESPACE_URL, repr(data))),
            logged_at=datetime.fromisoformat(logged_at) if logged_at else None,
            revokes_session=data.get("revokes_session"),
        )


_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(AccessEntry))
# The text of a UUID as PostgreSQL's uuid::text and str(uuid.UUID) print it.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def canonical_ids(ids: Iterable[Any] | str | uuid.UUID) -> Iterator[str]:
    """Record ids as the lower-case UUID text the table stores, so filters match them."""
    if isinstance(ids, str | uuid.UUID):
        ids = (ids,)
    for value in ids:
        text = str(value).strip()
        if _CANONICAL_UUID.fullmatch(text):
            yield text  # already canonical (every id read from the table): no parse
            continue
        try:
            yield str(uuid.UUID(text))
        except ValueError:
            yield clip(text)


def clip(text: str) -> str:
    """At most MAX_TEXT characters, and storable: PostgreSQL text and jsonb cannot hold NUL,
    so a NUL a client sent is kept as U+FFFD instead of losing the whole entry."""
    text = text.replace("\x00", "\N{REPLACEMENT CHARACTER}")
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"
