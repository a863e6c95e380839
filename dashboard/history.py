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
# in all. A folded record is mostly its events (timeline.Steps keeps one step in 64): the
# 10,000-event, 200-field record of benchmarks/run.py keeps ~3 MB of steps (130 MB when
# every step was kept).
HISTORY_CACHE_EVENTS = 50_000
HISTORY_CACHE_MIN_EVENTS = 1_000  # smaller records fold in a few milliseconds: not kept


class HistoryCache:
    """Folded histories of busy records, so paging through a 10,000-event timeline, picking
    "state at" times and comparing its events do not read and fold it all again.

    The version a fold is kept under is ``(event count, last seq, last time, content
    digest)``: the count and the last event (one index-only look-up) change with every event
    added, and the digest (:func:`dashboard.queries.select_aggregate_digest`, SHA-256 over
    each row's SHA-256) changes with any change to any row of the record. Counts alone are
    not enough: the triggers forbid UPDATE and DELETE, but a superuser can switch them off
    (``session_replication_role = replica``) and rewrite a payload in place, and the page
    would keep showing the fold of the old rows while the CSV shows the new ones.

    What a superuser can and cannot fake here: through SQL, nothing — any UPDATE, DELETE or
    INSERT among the record's rows changes their content, hence the digest (a second
    preimage of SHA-256 is out of reach), so the cache always serves what the database
    holds *now*. Row identity (``xmin``, ``ctid``) would have been cheaper but is not
    content: someone writing the table's files directly can keep both while changing the
    bytes. What the cache cannot know is whether what the database holds now is what was
    written: that is the signed tree heads' job (:mod:`dashboard.integrity.check`, run on
    every record page against the rows re-read from the table, never against this cache).
    Used only on tables with our schema (``seq`` present).
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

    def keeps(self, events: int) -> bool:
        """Whether a record of ``events`` events is kept (so its version is worth taking)."""
        return HISTORY_CACHE_MIN_EVENTS <= events <= self.budget

    def put(self, record_id: str, version: tuple, history: RecordHistory) -> None:
        if not self.keeps(len(history)):
            return
        with self._lock:
            self._entries[record_id] = (version, history)
            self._entries.move_to_end(record_id)
            while sum(len(entry[1]) for entry in self._entries.values()) > self.budget:
                self._entries.popitem(last=False)
