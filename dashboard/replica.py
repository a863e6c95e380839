"""Reading the reader's replication status: one statement, cached briefly per process.

:mod:`dashboard.freshness` turns the result into what a page or report says. Any role may
run these functions; ``pg_stat_wal_receiver`` shows a role without ``pg_read_all_stats``
only whether a receiver runs (its pid), which is all we ask of it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .freshness import ReplicaStatus

# A replica's status is read at most this often per process (pages reuse it in between):
# a few seconds of staleness in "4 s behind" is within what the sentence can mean anyway.
STATUS_TTL_S = 2.0
# A primary does not become a standby while it runs; only a failover behind the same URL
# could change the answer, so it is asked again less often.
PRIMARY_TTL_S = 60.0

_STATUS = sa.text(
    "SELECT pg_is_in_recovery(), clock_timestamp(), pg_last_xact_replay_timestamp(), "
    "pg_last_wal_replay_lsn()::text, pg_last_wal_receive_lsn()::text, "
    "EXISTS (SELECT 1 FROM pg_stat_wal_receiver)"
)


def read_status(conn: Connection) -> ReplicaStatus:
    """The status of the server ``conn`` is connected to (one statement)."""
    row = conn.execute(_STATUS).one()
    return ReplicaStatus(
        in_recovery=bool(row[0]),
        checked_at=row[1],
        replay_time=row[2],
        replay_lsn=row[3],
        receive_lsn=row[4],
        streaming=bool(row[5]),
    )


class StatusCache:
    """The last status read in this process, reused for STATUS_TTL_S (PRIMARY_TTL_S)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: ReplicaStatus | None = None
        self._until = 0.0

    def put(self, status: ReplicaStatus) -> None:
        with self._lock:
            self._value = status
            ttl = STATUS_TTL_S if status.in_recovery else PRIMARY_TTL_S
            self._until = time.monotonic() + ttl

    def fresh(self) -> ReplicaStatus | None:
        with self._lock:
            return self._value if time.monotonic() < self._until else None

    def get(self, read: Callable[[], ReplicaStatus] | None) -> ReplicaStatus | None:
        """The cached status while fresh, else ``read()`` (None: only the cached one)."""
        cached = self.fresh()
        if cached is not None or read is None:
            return cached
        status = read()
        self.put(status)
        return status
