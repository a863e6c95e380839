"""A circuit breaker for a database that stopped answering.

Once a wait for the server has run out (see :class:`dashboard.db.BoundedConnection`), every
other request would wait just as long for the same silence, holding a worker thread each,
until none is left — for sign-in either. The breaker remembers the failure: while it is
open, requests are refused at once (a 503 saying the database is not answering), and one
request per ``cooldown_s`` is let through to try again. The first success closes it.

Pure: no Flask, no database; the clock is injectable so the states can be tested alone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["Breaker"]


class Breaker:
    def __init__(self, cooldown_s: float, clock: Callable[[], float] = time.monotonic):
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None  # None: closed (the database answers)
        self._retry_at = 0.0
        self._trial = threading.local()

    @property
    def is_open(self) -> bool:
        return self._down_since is not None

    def down_for(self) -> float:
        """Seconds since the database stopped answering (0 when it answers)."""
        since = self._down_since
        return 0.0 if since is None else max(0.0, self._clock() - since)

    def allow(self) -> bool:
        """Whether to try the database now: always when closed; when open, for one caller per
        cooldown (the trial), which is then allowed to connect anew (see :meth:`is_trial`)."""
        self._trial.active = False
        if self._down_since is None:
            return True
        with self._lock:
            now = self._clock()
            if self._down_since is None or now >= self._retry_at:
                self._retry_at = now + self.cooldown_s
                self._trial.active = True
                return True
        return False

    def is_trial(self) -> bool:
        """True in the thread that :meth:`allow` let through while the breaker was open."""
        return getattr(self._trial, "active", False)

    def failed(self) -> None:
        """The database did not answer in time: open (or keep open) for a cooldown."""
        with self._lock:
            now = self._clock()
            if self._down_since is None:
                self._down_since = now
            self._retry_at = now + self.cooldown_s

    def succeeded(self) -> None:
        """The database answered: close."""
        self._trial.active = False
        if self._down_since is not None:
            with self._lock:
                self._down_since = None
