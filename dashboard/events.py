"""One row of ``audit_events`` as an immutable value.

Replay, diff and every view work on :class:`Event`, never on database rows, so the pure
core can be tested without PostgreSQL and the one place that knows a row's shape is
:meth:`Event.from_row`.

Order matters for an audit trail and ``created_at`` alone does not give one: PostgreSQL's
``now()`` is the *transaction* start time, so every event written in one transaction shares
it. :attr:`Event.order_key` is ``(created_at, seq, event_id)``: ``seq`` (an identity column,
when the table has it) breaks ties in insertion order; without it ``event_id`` makes the
order at least deterministic (the page then says same-time order is ambiguous).

This module is pure: no Flask, no database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["EVENT_FIELDS", "Event"]

_REQUIRED_ROW_KEYS = ("event_id", "aggregate_id", "event_type", "payload", "created_at")


@dataclass(frozen=True, slots=True)
class Event:
    """An audit event. ``payload`` and ``metadata`` are parsed JSON and must not be mutated.

    ``created_at`` must be timezone-aware; it is normalised to UTC so that two events are
    compared and shown on one clock.
    """

    event_id: str
    seq: int | None
    aggregate_id: str
    event_type: str
    payload: Any
    metadata: dict[str, Any] | None
    created_at: datetime

    def __post_init__(self) -> None:
        created_at = self.created_at
        if not isinstance(created_at, datetime):
            raise TypeError(f"event {self.event_id}: created_at must be a datetime")
        offset = created_at.utcoffset()
        if offset is None:
            raise ValueError(
                f"event {self.event_id}: created_at {created_at.isoformat()} has no time zone;"
                " audit times must be timezone-aware"
            )
        if created_at.tzinfo is not UTC or offset != timedelta(0):
            object.__setattr__(self, "created_at", created_at.astimezone(UTC))

    # Equality compares every field, but an event is identified by its id, so hash on that:
    # events can then live in sets and dict keys although their payloads are dicts.
    def __hash__(self) -> int:
        return hash(self.event_id)

    @property
    def order_key(self) -> tuple[datetime, int, str]:
        """Sort key for replay: ``(created_at, seq or -1, event_id)``; see the module doc."""
        return (self.created_at, self.seq if self.seq is not None else -1, self.event_id)

    @property
    def actor(self) -> Any:
        """``metadata["actor"]``, or ``None`` when the event does not say who acted."""
        metadata = self.metadata
        return metadata.get("actor") if isinstance(metadata, dict) else None

    def to_json(self) -> dict[str, Any]:
        """The event as the JSON API shows it (DESIGN.md, "An event in JSON")."""
        return {
            "event_id": self.event_id,
            "seq": self.seq,
            "aggregate_id": self.aggregate_id,
            "event_type": self.event_type,
            "payload": self.payload,
            "metadata": self.metadata,
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Event:
        """Build an event from a database row (a mapping, or a SQLAlchemy ``Row``).

        ``payload`` and ``metadata`` arrive already decoded from JSONB; UUIDs may arrive as
        :class:`uuid.UUID` and become text; ``seq`` may be absent (a table without the
        column); ``created_at`` may also be ISO 8601 text, as in a JSON fixture.
        """
        mapping = getattr(row, "_mapping", row)
        try:  # read first, ask what is missing only when something is (a page reads 50)
            event_id = mapping["event_id"]
            aggregate_id = mapping["aggregate_id"]
            event_type = mapping["event_type"]
            payload = mapping["payload"]
            created_at = mapping["created_at"]
        except KeyError:
            missing = [key for key in _REQUIRED_ROW_KEYS if key not in mapping]
            raise ValueError(f"event row lacks {', '.join(missing)}") from None
        if isinstance(created_at, str):
            created_at = datetime.fromisoformat(created_at)
        seq = mapping.get("seq")
        return cls(
            event_id=str(event_id),
            seq=int(seq) if seq is not None else None,
            aggregate_id=str(aggregate_id),
            event_type=event_type,
            payload=payload,
            metadata=mapping.get("metadata"),
            created_at=created_at,
        )


# An event's fields in order: the keys of its JSON (DESIGN.md, "An event in JSON") and the
# columns of a whole event row (dashboard.queries.event_columns).
EVENT_FIELDS: tuple[str, ...] = tuple(field.name for field in fields(Event))
