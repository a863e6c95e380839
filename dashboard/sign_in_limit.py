"""The sign-in rate limit: failed sign-ins per client address, the same for every process.

AUDIT_LOGIN_RATE_LIMIT ("10 per minute", "5/minute;50/hour": the ``limits`` syntax) caps
the *failed* sign-ins from one address in a moving window. A successful sign-in does not
count, so an office behind one address is not locked out by its own morning; an attacker
guessing passwords fails, and every failure counts.

Where the count lives decides whether several app processes behave as one:

* **PostgreSQL access log** (AUDIT_ACCESS_LOG_URL): every failed sign-in is already an
  access-log entry (action ``sign_in``, outcome ``failed``, the client address), written on
  the primary before the answer leaves. The limit counts those entries there, through
  ``access_failed_sign_ins()`` (sql/011_sign_in_state.sql; one probe of a small partial
  index), so a failure on any process or host counts on all of them, and a restart forgets
  nothing. No second store (Redis, memcached) to run, secure and keep in step.
* **File access log** (no URL): one host by design; the count is kept in this process's
  memory (``limits``' moving window), as the file's revocations serve one host.

Every process also keeps its own count in memory, used while the access log's database
cannot answer: the attempt then goes on to the password check, and its outcome cannot be
written either, so the sign-in does not happen (503, see :mod:`dashboard.access_log`); the
per-process count still bounds how many passwords one address can have checked meanwhile.

Two attempts that arrive at the same moment may both be checked before either failure is
written, so a burst can exceed the limit by the number of concurrent requests; the next
attempt sees them all.

No Flask here; :mod:`dashboard.auth` asks before it checks a password and reports failures.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from .access_log.sinks import PostgresSink
from .freshness import format_duration

NAMESPACE = "sign-in"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refusal:
    """A sign-in refused by the limit, and when to try again."""

    limit: RateLimitItem
    retry_after_s: float

    @property
    def message(self) -> str:
        wait = "a minute" if self.retry_after_s <= 60 else format_duration(self.retry_after_s)
        return (
            f"Too many sign-in attempts from your address ({self.limit.amount} failed within "
            f"{format_duration(self.limit.get_expiry())}). Wait {wait}, then try again."
        )


class SignInLimit:
    """Checks and counts failed sign-ins per client address (see the module docstring)."""

    def __init__(self, text: str, sink: object):
        self.items: tuple[RateLimitItem, ...] = tuple(parse_many(text))
        self.sink = sink if isinstance(sink, PostgresSink) else None
        self._memory = MovingWindowRateLimiter(MemoryStorage())

    def refused(self, client_ip: str | None) -> Refusal | None:
        """The limit ``client_ip`` has reached, or None to go on."""
        key = client_ip or "unknown"
        if self.sink is not None:
            try:
                return self._refused_by_log(key)
            except Exception as exc:  # the log's database cannot say: this process's count
                log.warning(
                    "Cannot count failed sign-ins in the access log (%s); using this "
                    "process's own count until it answers.",
                    (str(getattr(exc, "orig", None) or exc).strip().splitlines() or ["?"])[0],
                )
        for item in self.items:
            if not self._memory.test(item, NAMESPACE, key):
                reset, _ = self._memory.get_window_stats(item, NAMESPACE, key)
                return Refusal(item, max(1.0, reset - time.time()))
        return None

    def _refused_by_log(self, key: str) -> Refusal | None:
        assert self.sink is not None
        longest = max(item.get_expiry() for item in self.items)
        most = max(item.amount for item in self.items)
        ages = self.sink.failed_sign_in_ages(key, longest, most)  # newest first
        for item in self.items:
            inside = [age for age in ages if age < item.get_expiry()]
            if len(inside) >= item.amount:
                # The window frees a place when the amount-th newest failure leaves it.
                return Refusal(item, max(1.0, item.get_expiry() - inside[item.amount - 1]))
        return None

    def failed(self, client_ip: str | None) -> None:
        """Count a failed sign-in in this process (the PostgreSQL log counts its own
        entries; this count is the file backend's, and the fallback while the log is down)."""
        for item in self.items:
            self._memory.hit(item, NAMESPACE, client_ip or "unknown")
