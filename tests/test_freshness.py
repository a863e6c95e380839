"""What a page and a report say about a hot standby's data (dashboard.freshness, pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dashboard.freshness import ReplicaStatus, describe, format_duration, report_position

NOW = datetime(2026, 11, 3, 12, 3, 11, tzinfo=UTC)


def _replica(**changes) -> ReplicaStatus:
    values = {
        "in_recovery": True,
        "checked_at": NOW,
        "replay_time": NOW - timedelta(seconds=4),
        "replay_lsn": "0/3000100",
        "receive_lsn": "0/3000200",
        "streaming": True,
    }
    values.update(changes)
    return ReplicaStatus(**values)


def test_a_primary_says_nothing():
    assert describe(ReplicaStatus(in_recovery=False, checked_at=NOW), 300) is None
    assert describe(None, 300) is None
    assert report_position(ReplicaStatus(in_recovery=False, checked_at=NOW)) is None


def test_a_replica_behind_says_as_of_and_how_far():
    said = describe(_replica(), 300)
    assert said is not None and not said.flagged
    assert said.text == "Data as of 12:03:07, 4 s behind the primary (hot standby)."


def test_the_time_is_shown_in_the_display_time_zone():
    said = describe(_replica(), 300, "Europe/Berlin")
    assert said is not None and "as of 13:03:07" in said.text


def test_a_replica_that_replayed_all_it_received_is_not_behind_though_the_primary_is_idle():
    idle = _replica(replay_time=NOW - timedelta(hours=3), receive_lsn="0/3000100")
    assert idle.behind_s == 0
    said = describe(idle, 300)
    assert said is not None and not said.flagged
    assert said.text == "Data as of 12:03:11, 0 s behind the primary (hot standby)."


def test_a_replica_far_behind_is_flagged():
    said = describe(_replica(replay_time=NOW - timedelta(seconds=305)), 300)
    assert said is not None and said.flagged
    assert "5 min 5 s behind the primary — more than the 5 min allowed" in said.text
    assert "AUDIT_REPLICA_MAX_LAG_S" in said.text


def test_a_day_old_copy_shows_the_date():
    said = describe(_replica(replay_time=NOW - timedelta(days=1, seconds=4)), 300)
    assert said is not None and "as of 2026-11-02 12:03:07" in said.text


def test_a_standby_that_is_not_streaming_is_flagged_even_when_caught_up():
    stopped = _replica(streaming=False, receive_lsn="0/3000100")
    said = describe(stopped, 300)
    assert said is not None and said.flagged
    assert "not streaming from the primary" in said.text
    assert "as of 12:03:07" in said.text
    assert "NOT STREAMING" in (report_position(stopped) or "")


def test_a_standby_that_replayed_nothing_yet_says_so():
    said = describe(_replica(replay_time=None), 300)
    assert said is not None and not said.flagged
    assert "not known yet" in said.text


def test_the_report_position_names_the_wal_position_and_commit_time():
    assert report_position(_replica()) == (
        "hot standby, replayed up to WAL 0/3000100; last replayed commit "
        "2026-11-03T12:03:07+00:00; read at 2026-11-03T12:03:11+00:00; 4 s behind the primary"
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (59.9, "59 s"), (60, "1 min"), (305, "5 min 5 s"), (7380, "2 h 3 min"),
     (90000, "1 d 1 h"), (86400, "1 d")],
)  # fmt: skip
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
