"""Calendar period presets: "last month", "this quarter", "last 7 days" as exact instants.

The reports form and the access log offer these as one-click periods. Each is a span of
whole calendar days in the page's zone, from a local midnight (inclusive) to a local
midnight (exclusive), so "last month" in Europe/Berlin is 1 March 00:00 +01:00 up to
1 April 00:00 +02:00 — 743 hours across the change to summer time, as the calendar says.
"This month/quarter/year" end where the period ends (the start of the next one): the
events of the rest of the period are simply not there yet, and the span stays the
calendar's.

The arithmetic is on dates (:func:`period_dates`), then each date's first instant in the
zone is taken (:func:`start_of_day`): a midnight that a clock change skips (America/Santiago
in September) is the first instant of that day, and one that happens twice is the first.
"Today" is the date in the page's zone, not the server's or UTC's.

Independent of how a page's time inputs are entered: the result is a pair of aware
datetimes; pages write them into their own inputs or links.

This module is pure: no Flask, no database.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Final

__all__ = [
    "PERIODS",
    "matching_period",
    "period_bounds",
    "period_dates",
    "start_of_day",
]

PERIODS: Final[dict[str, str]] = {
    "today": "Today",
    "yesterday": "Yesterday",
    "last-7-days": "Last 7 days",
    "this-month": "This month",
    "last-month": "Last month",
    "this-quarter": "This quarter",
    "last-quarter": "Last quarter",
    "this-year": "This year",
    "last-year": "Last year",
}
"""Preset name (as it appears in URLs and element ids) -> its label. "Last 7 days" is the
seven whole days before today; "today" is today so far and the rest of it."""


def _month_start(day: date, months_back: int = 0) -> date:
    index = day.year * 12 + (day.month - 1) - months_back
    return date(index // 12, index % 12 + 1, 1)


def _quarter_start(day: date, quarters_back: int = 0) -> date:
    first_month = day.replace(month=3 * ((day.month - 1) // 3) + 1, day=1)
    return _month_start(first_month, 3 * quarters_back)


def period_dates(name: str, today: date) -> tuple[date, date]:
    """``[first day, day after the last)`` of the preset ``name`` seen from ``today``.

    KeyError for a name not in :data:`PERIODS`.
    """
    if name not in PERIODS:
        raise KeyError(name)
    if name == "today":
        return today, today + timedelta(days=1)
    if name == "yesterday":
        return today - timedelta(days=1), today
    if name == "last-7-days":
        return today - timedelta(days=7), today
    if name == "this-month":
        return _month_start(today), _month_start(today, -1)
    if name == "last-month":
        return _month_start(today, 1), _month_start(today)
    if name == "this-quarter":
        return _quarter_start(today), _quarter_start(today, -1)
    if name == "last-quarter":
        return _quarter_start(today, 1), _quarter_start(today)
    if name == "this-year":
        return date(today.year, 1, 1), date(today.year + 1, 1, 1)
    return date(today.year - 1, 1, 1), date(today.year, 1, 1)  # last-year


def start_of_day(day: date, zone: tzinfo) -> datetime:
    """The first instant of ``day`` in ``zone``, as an aware datetime in UTC.

    Local midnight with ``fold=0``: for a midnight skipped by a clock change this is the
    instant the day begins (the offset before the change applied to 00:00 lands on the
    change itself); for a midnight that happens twice, the earlier one.
    """
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def period_bounds(name: str, now: datetime, zone: tzinfo) -> tuple[datetime, datetime]:
    """``[start, end)`` of the preset ``name`` at ``now`` (aware) in ``zone``, in UTC."""
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    first, after = period_dates(name, now.astimezone(zone).date())
    return start_of_day(first, zone), start_of_day(after, zone)


def matching_period(
    start: datetime | None, end: datetime | None, now: datetime, zone: tzinfo
) -> str | None:
    """The preset whose bounds are exactly ``[start, end)``, if any (to mark it chosen)."""
    if start is None or end is None:
        return None
    for name in PERIODS:
        if period_bounds(name, now, zone) == (start, end):
            return name
    return None
