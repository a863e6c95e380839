"""How fresh the data is when the reader is a hot standby: what every page and report says.

A streaming replica replays the primary's WAL a little behind it. The server tells us
(``dashboard.replica`` reads it in one statement) whether it is in recovery, the commit time
of the last transaction it replayed (``pg_last_xact_replay_timestamp()``), the WAL it has
received and replayed, and whether a WAL receiver runs (it streams). From that:

* **behind**: 0 when everything received has been replayed and it is streaming (an idle
  primary writes nothing, so the last replayed commit can be old while the copy is
  complete); otherwise the age of the last replayed commit. A replica cannot know what the
  primary has not sent it yet: a network that holds WAL back shows as "0 s behind" until
  the receiver notices; the "not streaming" flag below covers a receiver that has stopped.
* **flagged** (shown as an alert): more than AUDIT_REPLICA_MAX_LAG_S behind, or not
  streaming — a standby without a WAL receiver (primary down, ``primary_conninfo`` wrong or
  empty, replication slot missing) shows an ever older copy and will not catch up by itself.

On a primary there is nothing to say: its data is live.

Pure: no Flask, no database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class ReplicaStatus:
    """What the reader's server said about itself, at ``checked_at`` (its clock)."""

    in_recovery: bool
    checked_at: datetime
    replay_time: datetime | None = None  # commit time of the last replayed transaction
    replay_lsn: str | None = None
    receive_lsn: str | None = None
    streaming: bool = False  # a WAL receiver process runs

    @property
    def caught_up(self) -> bool:
        return (
            self.streaming
            and self.receive_lsn is not None
            and (self.receive_lsn == self.replay_lsn)
        )

    @property
    def behind_s(self) -> float | None:
        """Seconds the data is behind the primary (None: not known yet)."""
        if not self.in_recovery or self.caught_up:
            return 0.0
        if self.replay_time is None:
            return None
        return max(0.0, (self.checked_at - self.replay_time).total_seconds())

    @property
    def as_of(self) -> datetime | None:
        """The time up to which this copy holds every commit of the primary."""
        if not self.in_recovery or self.caught_up:
            return self.checked_at
        return self.replay_time


@dataclass(frozen=True)
class Freshness:
    """One sentence for the page (None on a primary) and whether it is an alert."""

    text: str
    flagged: bool


def format_duration(seconds: float) -> str:
    """``4 s``, ``5 min 5 s``, ``2 h 3 min``, ``3 d 4 h``."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def _clock(moment: datetime, now: datetime, zone: ZoneInfo) -> str:
    """``12:03:07`` on the day of ``now``, else the date too (a copy a day behind)."""
    local, today = moment.astimezone(zone), now.astimezone(zone)
    if local.date() == today.date():
        return local.strftime("%H:%M:%S")
    return local.strftime("%Y-%m-%d %H:%M:%S")


def describe(
    status: ReplicaStatus | None, max_lag_s: int, timezone: str = "UTC"
) -> Freshness | None:
    """The page's sentence about ``status``; None on a primary (or when unknown)."""
    if status is None or not status.in_recovery:
        return None
    zone = ZoneInfo(timezone)
    as_of, behind = status.as_of, status.behind_s
    when = _clock(as_of, status.checked_at, zone) if as_of is not None else "an unknown time"
    if not status.streaming:
        return Freshness(
            f"Data from a hot standby that is not streaming from the primary: as of {when} "
            "(its last replayed change), and it will not catch up until replication is "
            "restored — check that the primary is up and the standby's primary_conninfo and "
            "replication slot.",
            flagged=True,
        )
    if behind is None:
        return Freshness(
            "Data from a hot standby that has not replayed a transaction since it started: "
            "how far behind the primary it is, is not known yet.",
            flagged=False,
        )
    lag = format_duration(behind)
    if behind > max_lag_s:
        return Freshness(
            f"Data from a hot standby as of {when}, {lag} behind the primary — more than the "
            f"{format_duration(max_lag_s)} allowed (AUDIT_REPLICA_MAX_LAG_S): events written "
            "since are not shown.",
            flagged=True,
        )
    return Freshness(f"Data as of {when}, {lag} behind the primary (hot standby).", flagged=False)


def report_position(status: ReplicaStatus | None) -> str | None:
    """The replica's position for a report's cover; None when read from a primary."""
    if status is None or not status.in_recovery:
        return None
    replayed = status.replay_time.isoformat(timespec="seconds") if status.replay_time else "none"
    behind = status.behind_s
    parts = [
        f"hot standby, replayed up to WAL {status.replay_lsn or 'unknown'}",
        f"last replayed commit {replayed}",
        f"read at {status.checked_at.isoformat(timespec='seconds')}",
        f"{format_duration(behind)} behind the primary" if behind is not None else "lag unknown",
    ]
    if not status.streaming:
        parts.append("NOT STREAMING from the primary")
    return "; ".join(parts)


__all__ = ["Freshness", "ReplicaStatus", "describe", "format_duration", "report_position"]
