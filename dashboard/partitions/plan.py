"""Which monthly partitions audit_events needs: pure, no database, no Flask.

A partition covers ``[lower, upper)`` of ``created_at`` in UTC. ``None`` stands for
PostgreSQL's MINVALUE (as a lower bound) or MAXVALUE (as an upper bound). Months are
calendar months in UTC, so a partition holds what a report "for November (UTC)" reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

PARENT = "audit_events"
HISTORICAL = "audit_events_historical"
MAX_MONTHS_AHEAD = 120


class BoundError(ValueError):
    """A partition bound this module cannot read (not a single created_at range)."""


@dataclass(frozen=True, order=True)
class Range:
    lower: datetime | None  # None: MINVALUE
    upper: datetime | None  # None: MAXVALUE

    def overlaps(self, other: Range) -> bool:
        below = self.upper is not None and other.lower is not None and self.upper <= other.lower
        above = other.upper is not None and self.lower is not None and other.upper <= self.lower
        return not (below or above)


def month_start(moment: datetime | date) -> datetime:
    """The first instant (UTC) of the month holding ``moment``."""
    if isinstance(moment, datetime):
        moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


def add_months(start: datetime, months: int) -> datetime:
    index = start.year * 12 + start.month - 1 + months
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def partition_name(lower: datetime) -> str:
    """``audit_events_p2026_12``: sorts by time, fits PostgreSQL's 63-byte names."""
    return f"{PARENT}_p{lower.year:04d}_{lower.month:02d}"


_BOUND = re.compile(
    r"FOR VALUES FROM \((?P<lower>MINVALUE|'[^']*')\) TO \((?P<upper>MAXVALUE|'[^']*')\)"
)


def parse_bound(text: str) -> Range:
    """Read ``pg_get_expr(relpartbound, oid)`` of a range partition, printed in UTC."""
    match = _BOUND.fullmatch(text.strip())
    if match is None:
        raise BoundError(f"not a range of one timestamp: {text!r}")

    def instant(value: str) -> datetime | None:
        if value in ("MINVALUE", "MAXVALUE"):
            return None
        parsed = datetime.fromisoformat(value.strip("'"))
        if parsed.tzinfo is None:
            raise BoundError(f"bound without a time zone: {value}")
        return parsed.astimezone(UTC)

    return Range(instant(match["lower"]), instant(match["upper"]))


def missing_months(
    existing: list[Range], *, first: datetime, last: datetime
) -> list[tuple[str, Range]]:
    """The monthly partitions to create so that every month from ``first``'s through
    ``last``'s is covered: a month any existing partition overlaps is left alone (the
    historical partition of a converted table ends on a month boundary, so this never
    leaves half a month uncovered)."""
    wanted: list[tuple[str, Range]] = []
    month = month_start(first)
    stop = month_start(last)
    while month <= stop:
        candidate = Range(month, add_months(month, 1))
        if not any(candidate.overlaps(r) for r in existing):
            wanted.append((partition_name(month), candidate))
        month = add_months(month, 1)
    return wanted
