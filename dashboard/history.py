"""Folded record histories kept between requests: the cache behind the record page and the
JSON API.

Reading a record's history is one indexed query and one fold (:class:`RecordHistory`); a
record with 10,000 events takes a noticeable moment to fold, and paging through its
timeline, picking "state at" times and comparing its events would otherwise repeat that
work on every request. :class:`HistoryCache` keeps the folds of busy records, process-wide
(one per app), least recently used dropped first.

It lives here, not in a view, because it is part of reading history: the record page and
the state, changes and diff endpoints all read through it, and an integrity check must be
able to look at (or bypass) what it holds.

This module is pure: no Flask, no database.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from .timeline import RecordHistory

__all__ = ["HISTORY_CACHE_EVENTS", "HISTORY_CACHE_MIN_EVENTS", "HistoryCache"]

# Folded records kept per app, least recently used dropped first, up to this many events
# in all (a 10,000-event record takes about 26 MB once folded).
HISTORY_CACHE_EVENTS = 50_000
HISTORY_CACHE_MIN_EVENTS = 1_000  # smaller records fold in a few milliseconds: not kept


class HistoryCache:
    """Folded histories of busy records, so paging through a 10,000-event timeline, picking
    "state at" times and comparing its events do not read and fold it all again.

    Safe because the table only grows: a record's ``(event count, last seq, last time)`` —
    one index-only look-up (audit_events_aggregate_idx) per request — changes with every
    event added to it, and a changed record is read afresh. Used only on tables with our
    schema (``seq`` present), whose triggers forbid UPDATE and DELETE.
    """

    def __init__(self, budget: int = HISTORY_CACHE_EVENTS):
        self.budget = budget
        self._entries: OrderedDict[str, tuple[tuple, RecordHistory]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, record_id: str, version: tuple) -> RecordHistory | None:
        with self._lock:
            entry = self._entries.get(record_id)
            if entry is None or entry[0] != version:
                return None
            self._entries.move_to_end(record_id)
            return entry[1]

    def put(self, record_id: str, version: tuple, history: RecordHistory) -> None:
        if not HISTORY_CACHE_MIN_EVENTS <= len(history) <= self.budget:
            return
        with self._lock:
            self._entries[record_id] = (version, history)
            self._entries.move_to_end(record_id)
            while sum(len(entry[1]) for entry in self._entries.values()) > self.budget:
                self._entries.popitem(last=False)
