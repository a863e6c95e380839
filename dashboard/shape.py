"""The activity chart of a search: events per minute, hour, day or week over its range.

Pure: no Flask, no database. :func:`choose_bucket` picks the bar width from the range,
:func:`bucket_origin` is the fixed origin every bar is aligned to (so a bar's interval is the
same whichever search drew it), and :func:`build_chart` turns the counted buckets (only the
non-empty ones come from the database) into bars with their gaps filled, ready for an SVG
drawn by the template: a gap in logging shows as a run of empty bars, a burst as a tall one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

# A Monday at midnight UTC: weeks start on Mondays, days at midnight UTC.
ORIGIN: Final = datetime(2000, 1, 3, tzinfo=UTC)
MAX_BARS: Final = 120  # the widest chart; a bar stays wide enough to click at 390 px
BUCKETS: Final = (
    ("minute", timedelta(minutes=1)),
    ("hour", timedelta(hours=1)),
    ("day", timedelta(days=1)),
    ("week", timedelta(weeks=1)),
)
CHART_WIDTH: Final = 600
CHART_HEIGHT: Final = 120


@dataclass(frozen=True)
class Bar:
    start: datetime  # inclusive, clipped to the searched range
    end: datetime  # exclusive, clipped to the searched range
    count: int
    x: float
    width: float
    height: float  # of CHART_HEIGHT, 0 for an empty bar


@dataclass(frozen=True)
class Chart:
    bucket: str  # "minute", "hour", "day" or "week"
    start: datetime
    end: datetime
    bars: tuple[Bar, ...]
    total: int
    peak: int


def choose_bucket(start: datetime, end: datetime) -> tuple[str, timedelta]:
    """The narrowest bucket that draws ``[start, end)`` in at most MAX_BARS bars."""
    if end <= start:
        raise ValueError("the range must not be empty")
    for name, width in BUCKETS:
        if bar_count(start, end, width) <= MAX_BARS:
            return name, width
    return BUCKETS[-1]  # a range of years: weekly bars, more of them


def bucket_origin(at: datetime, width: timedelta) -> datetime:
    """The start of the bucket of ``width`` holding ``at`` (PostgreSQL's ``date_bin``)."""
    return at - (at - ORIGIN) % width


def bar_count(start: datetime, end: datetime, width: timedelta) -> int:
    first = bucket_origin(start, width)
    return -(-(end - first) // width)


def build_chart(
    start: datetime, end: datetime, bucket: str, counts: Mapping[datetime, int] | Iterable
) -> Chart:
    """Bars over ``[start, end)`` for the ``(bucket start, count)`` pairs counted."""
    width = dict(BUCKETS)[bucket]
    counted = dict(counts)
    first = bucket_origin(start, width)
    n = bar_count(start, end, width)
    peak = max(counted.values(), default=0)
    step = CHART_WIDTH / n
    bars = []
    for i in range(n):
        at = first + i * width
        count = counted.get(at, 0)
        height = 0.0 if peak == 0 else max(1.0, CHART_HEIGHT * count / peak) if count else 0.0
        bars.append(
            Bar(
                start=max(at, start),
                end=min(at + width, end),
                count=count,
                x=round(i * step, 2),
                width=round(max(step - 1, 0.5), 2),
                height=round(height, 2),
            )
        )
    return Chart(bucket, start, end, tuple(bars), sum(counted.values()), peak)
