"""Calendar period presets (dashboard/periods.py): pure date math, no database."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dashboard.periods import (
    PERIODS,
    matching_period,
    period_bounds,
    period_dates,
    start_of_day,
)

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(
    ("name", "today", "expected"),
    [
        ("today", date(2026, 3, 15), (date(2026, 3, 15), date(2026, 3, 16))),
        ("yesterday", date(2026, 1, 1), (date(2025, 12, 31), date(2026, 1, 1))),
        ("last-7-days", date(2026, 3, 3), (date(2026, 2, 24), date(2026, 3, 3))),
        ("last-7-days", date(2024, 3, 3), (date(2024, 2, 25), date(2024, 3, 3))),  # leap year
        ("this-month", date(2026, 12, 31), (date(2026, 12, 1), date(2027, 1, 1))),
        ("this-month", date(2026, 2, 1), (date(2026, 2, 1), date(2026, 3, 1))),
        ("last-month", date(2026, 1, 15), (date(2025, 12, 1), date(2026, 1, 1))),
        ("last-month", date(2026, 3, 31), (date(2026, 2, 1), date(2026, 3, 1))),
        ("this-quarter", date(2026, 3, 31), (date(2026, 1, 1), date(2026, 4, 1))),
        ("this-quarter", date(2026, 4, 1), (date(2026, 4, 1), date(2026, 7, 1))),
        ("this-quarter", date(2026, 11, 30), (date(2026, 10, 1), date(2027, 1, 1))),
        ("last-quarter", date(2026, 1, 1), (date(2025, 10, 1), date(2026, 1, 1))),
        ("last-quarter", date(2026, 2, 14), (date(2025, 10, 1), date(2026, 1, 1))),
        ("last-quarter", date(2026, 7, 1), (date(2026, 4, 1), date(2026, 7, 1))),
        ("last-quarter", date(2026, 12, 31), (date(2026, 7, 1), date(2026, 10, 1))),
        ("this-year", date(2026, 12, 31), (date(2026, 1, 1), date(2027, 1, 1))),
        ("last-year", date(2026, 1, 1), (date(2025, 1, 1), date(2026, 1, 1))),
    ],
)
def test_period_dates(name, today, expected):
    assert period_dates(name, today) == expected


def test_unknown_period_is_a_key_error():
    with pytest.raises(KeyError):
        period_dates("last-fortnight", date(2026, 1, 1))


@given(st.dates(min_value=date(1901, 1, 1), max_value=date(9998, 1, 1)))
def test_every_period_is_nonempty_whole_days_around_today(today):
    for name in PERIODS:
        first, after = period_dates(name, today)
        assert first < after
        if name.startswith(("this-", "today")):
            assert first <= today < after
        else:
            assert after <= today  # "last" periods are over
    # Last month ends where this month starts, and last quarter where this quarter starts.
    assert period_dates("last-month", today)[1] == period_dates("this-month", today)[0]
    assert period_dates("last-quarter", today)[1] == period_dates("this-quarter", today)[0]
    quarter = period_dates("this-quarter", today)
    assert quarter[0].month in (1, 4, 7, 10) and quarter[0].day == 1


def test_last_month_across_the_change_to_summer_time_is_743_hours():
    now = datetime(2026, 4, 10, 12, 0, tzinfo=UTC)
    start, end = period_bounds("last-month", now, BERLIN)
    assert start == datetime(2026, 3, 1, 0, 0, tzinfo=BERLIN)
    assert end == datetime(2026, 4, 1, 0, 0, tzinfo=BERLIN)
    assert start.isoformat() == "2026-02-28T23:00:00+00:00"
    assert end.isoformat() == "2026-03-31T22:00:00+00:00"
    assert end - start == timedelta(hours=743)


def test_today_is_the_date_in_the_pages_zone_not_utc():
    # 23:30 UTC on 31 December is already 1 January in Tokyo: "last year" there is 2026.
    now = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)
    tokyo = ZoneInfo("Asia/Tokyo")
    assert period_bounds("last-year", now, tokyo) == (
        datetime(2026, 1, 1, tzinfo=tokyo),
        datetime(2027, 1, 1, tzinfo=tokyo),
    )
    assert period_bounds("last-year", now, UTC) == (
        datetime(2025, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert period_bounds("yesterday", now, tokyo)[0] == datetime(2026, 12, 31, tzinfo=tokyo)


def test_a_skipped_midnight_starts_the_day_at_the_clock_change():
    # America/Santiago moved its clocks from 00:00 to 01:00 on 2022-09-11.
    santiago = ZoneInfo("America/Santiago")
    start = start_of_day(date(2022, 9, 11), santiago)
    assert start == datetime(2022, 9, 11, 4, 0, tzinfo=UTC)
    assert start.astimezone(santiago).isoformat() == "2022-09-11T01:00:00-03:00"
    day_before = start_of_day(date(2022, 9, 10), santiago)
    assert start - day_before == timedelta(hours=24)  # the short day is the 11th, not the 10th
    assert start_of_day(date(2022, 9, 12), santiago) - start == timedelta(hours=23)


def test_bounds_need_an_aware_now():
    with pytest.raises(ValueError):
        period_bounds("today", datetime(2026, 1, 1), UTC)


def test_matching_period_recognises_exact_bounds_only():
    now = datetime(2026, 5, 20, 8, 0, tzinfo=UTC)
    start, end = period_bounds("last-quarter", now, BERLIN)
    assert matching_period(start, end, now, BERLIN) == "last-quarter"
    assert matching_period(start, end + timedelta(seconds=1), now, BERLIN) is None
    assert matching_period(start, None, now, BERLIN) is None
    assert matching_period(start, end, now, UTC) is None  # Berlin's midnights, not UTC's
