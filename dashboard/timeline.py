"""One record's replayed history, paged and queried in memory: the record page's model.

The record page needs, for each event on the visible page, what that event changed —
state before vs state after — which needs every earlier event folded first. So the page
reads the record's events once (one indexed query, streamed), folds them all with
:func:`dashboard.replay.fold_events`, keeping one step in 64 (:class:`Steps`; the others
are refolded from the one before when a page asks), and then pages, diffs and answers
"state at T" from them: no query per event, and a 10,000-event record is one pass.

Page positions are the same :class:`~dashboard.filters.Cursor` values the SQL keyset uses,
so a timeline link and an API cursor mean the same place.

This module is pure: no Flask, no database.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, overload

from .diff import Change
from .events import Event
from .filters import Cursor
from .replay import (
    AggregateState,
    FieldChange,
    diff_steps,
    field_history_of_steps,
    fold_events,
)
from .rules import DEFAULT_RULES, Rule, kind_of

__all__ = ["RecordHistory", "Steps", "Window", "final_states", "last_steps"]


@dataclass(frozen=True)
class Window:
    """Indices (into :attr:`RecordHistory.events`) of one timeline page, in display order,
    and the cursors of the neighbouring pages (``next_cursor`` continues in the page's
    order, ``prev_cursor`` goes back); None when there is nothing there."""

    indices: list[int]
    next_cursor: Cursor | None
    prev_cursor: Cursor | None


# One step in this many is kept by :class:`Steps` (and the last); a step between two kept
# ones is refolded from the one before it, at most CHECKPOINT_EVERY - 1 events.
CHECKPOINT_EVERY = 64
CHUNKS_KEPT = 4  # refolded runs of steps kept for the next request (a page spans one or two)


class Steps(Sequence[AggregateState]):
    """The state after each of ``events`` (``steps[i]``: after ``events[i]``), folded once
    but kept only one in :data:`CHECKPOINT_EVERY`, and the last.

    Keeping every step cost a copy of the record's top-level object per event: 130 MB for
    a 10,000-event record of 200 fields (benchmarks/run.py's), in every worker that cached
    it. A step that is not kept is refolded when asked for, from the kept step before it:
    the run of :data:`CHECKPOINT_EVERY` steps it belongs to is folded again (a millisecond
    or two) and the last :data:`CHUNKS_KEPT` runs are kept, so a timeline page (50 events,
    one or two runs) folds each run once. Steps compare equal to those of one full fold;
    the first step of a run comes from the first fold and the others from the refold
    (:meth:`around` gives an event's two states from one fold, for its diff).

    Safe to share between threads (a :class:`~dashboard.history.HistoryCache` entry is):
    the runs are built outside the lock and stored under it; two threads asking for the
    same run at once may both fold it.
    """

    def __init__(self, events: Sequence[Event], rules: Sequence[Rule] = DEFAULT_RULES):
        self._events = events
        self._rules = rules
        # event type -> action under ``rules``, shared by every refold (fold_events)
        self._actions: dict[str, Any] = {}
        kept: list[AggregateState] = []
        last = AggregateState.initial()
        for index, last in enumerate(fold_events(events, rules, actions=self._actions)):
            if index % CHECKPOINT_EVERY == 0:
                kept.append(last)
        self._kept = kept
        self._last = last
        self._runs: collections.OrderedDict[int, list[AggregateState]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._events)

    @overload
    def __getitem__(self, index: int) -> AggregateState: ...

    @overload
    def __getitem__(self, index: slice) -> list[AggregateState]: ...

    def __getitem__(self, index: int | slice) -> AggregateState | list[AggregateState]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        count = len(self._events)
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError("step index out of range")
        if index == count - 1:
            return self._last
        run, offset = divmod(index, CHECKPOINT_EVERY)
        if offset == 0:
            return self._kept[run]
        return self._run(run)[offset]

    def around(self, index: int) -> tuple[AggregateState, AggregateState]:
        """The states just before and just after the event at ``index``, from one fold.

        Where a kept step follows a refolded one the two come from different folds; the
        event applied again to the state before gives the same state after, one that
        :func:`~dashboard.replay.diff_steps` knows to be that state plus this patch, so it
        diffs the patch's paths only instead of the whole record."""
        before = self[index - 1] if index > 0 else AggregateState.initial()
        after = self[index]
        if after.merge_base is not None and after.merge_base is not before.state:
            after = next(
                fold_events([self._events[index]], self._rules, actions=self._actions, start=before)
            )
        return before, after

    def __iter__(self) -> Iterator[AggregateState]:
        """Every step in order, folded again and kept by no one (a field's history)."""
        return fold_events(self._events, self._rules, actions=self._actions)

    def _run(self, run: int) -> list[AggregateState]:
        with self._lock:
            found = self._runs.get(run)
            if found is not None:
                self._runs.move_to_end(run)
                return found
        first = run * CHECKPOINT_EVERY
        start = self._kept[run]
        states = [start]
        states.extend(
            fold_events(
                self._events[first + 1 : first + CHECKPOINT_EVERY],
                self._rules,
                actions=self._actions,
                start=start,
            )
        )
        with self._lock:
            self._runs[run] = states
            while len(self._runs) > CHUNKS_KEPT:
                self._runs.popitem(last=False)
        return states


class RecordHistory:
    """Every event of one record in replay order and the state after each of them."""

    def __init__(self, events: Iterable[Event], rules: Sequence[Rule] = DEFAULT_RULES):
        self.events: list[Event] = list(events)
        self.rules = rules
        self.steps = Steps(self.events, rules)

    # Look-up tables, each built on first use: a page needs one or two of them.

    @cached_property
    def _keys(self) -> list[tuple[datetime, int, str]]:
        """Sort keys as the SQL orders rows: (created_at, seq), or (created_at, event_id) on a
        table without seq (uuid order is the order of its lowercase text)."""
        return [_key(event.created_at, event.seq, event.event_id) for event in self.events]

    @cached_property
    def _times(self) -> list[datetime]:
        return [event.created_at for event in self.events]

    @cached_property
    def _index(self) -> dict[str, int]:
        return {event.event_id: index for index, event in enumerate(self.events)}

    def __len__(self) -> int:
        return len(self.events)

    @property
    def kind(self) -> str | None:
        return kind_of(self.events, self.rules)

    @property
    def final(self) -> AggregateState:
        return self.steps[-1] if len(self.steps) else AggregateState.initial()

    def index_of(self, event_id: str) -> int | None:
        return self._index.get(str(event_id))

    def changes_at(self, index: int, identity_key: str | None = "id") -> list[Change]:
        """What the event at ``index`` changed: state before it vs state after it."""
        return diff_steps(*self.steps.around(index), identity_key)

    def field_history(self, pointer: str) -> list[FieldChange]:
        """:func:`dashboard.replay.field_history` from the steps already folded."""
        return field_history_of_steps(self.steps, pointer)

    def step_at(self, at: datetime) -> AggregateState:
        """The state as of ``at``: after the last event with ``created_at <= at``."""
        count = bisect.bisect_right(self._times, at)
        return self.steps[count - 1] if count else AggregateState.initial()

    def window(
        self,
        *,
        order: str = "desc",
        limit: int = 50,
        cursor: Cursor | None = None,
        backward: bool = False,
        anchor: str | None = None,
    ) -> Window:
        """One page of the timeline.

        ``cursor`` without ``backward``: the ``limit`` events after it in ``order``; with
        ``backward``: the ``limit`` events just before it. ``anchor`` (an event id) gives
        the page that starts with that event. Otherwise the first page.
        """
        total = len(self.events)
        if anchor is not None and (position := self.index_of(anchor)) is not None:
            if order == "desc":
                high = position + 1
                low = max(0, high - limit)
            else:
                low = position
                high = min(total, low + limit)
        elif cursor is not None:
            key = _key(cursor.created_at, cursor.seq, str(cursor.event_id))
            after = bisect.bisect_right(self._keys, key)  # first index strictly later
            before = bisect.bisect_left(self._keys, key)  # first index at or later
            # Forward in asc, or backward in desc, reads later events; else earlier ones.
            if (order == "asc") != backward:
                low, high = after, min(total, after + limit)
            else:
                high = before
                low = max(0, high - limit)
        elif order == "desc":
            low, high = max(0, total - limit), total
        else:
            low, high = 0, min(total, limit)
        indices = list(range(low, high))
        if order == "desc":
            indices.reverse()
        # In display order, "next" means further in `order`: older for desc, newer for asc.
        has_later, has_earlier = high < total, low > 0
        if order == "desc":
            has_next, has_prev = has_earlier, has_later
        else:
            has_next, has_prev = has_later, has_earlier
        return Window(
            indices=indices,
            next_cursor=self._cursor(indices[-1]) if indices and has_next else None,
            prev_cursor=self._cursor(indices[0]) if indices and has_prev else None,
        )

    def _cursor(self, index: int) -> Cursor:
        event = self.events[index]
        return Cursor.after(
            {"created_at": event.created_at, "seq": event.seq, "event_id": event.event_id}
        )


def _key(created_at: datetime, seq: int | None, event_id: str) -> tuple[datetime, int, str]:
    """Sort key of a row or cursor: by seq when the table has it, else by event id, as the
    SQL keyset orders them (a table has seq on every row or on none)."""
    return (created_at, seq if seq is not None else -1, event_id if seq is None else "")


def final_states(
    events: Iterable[Event], rules: Sequence[Rule] = DEFAULT_RULES
) -> Iterator[tuple[str, AggregateState]]:
    """``(aggregate_id, last state)`` for events grouped by record (as-of pages): events
    must arrive grouped by ``aggregate_id`` and in replay order within each record."""
    for aggregate_id, group in itertools.groupby(events, key=_aggregate_of):
        last: Any = AggregateState.initial()
        for last in fold_events(group, rules):  # noqa: B007  # only the final step is kept
            pass
        yield aggregate_id, last


def _aggregate_of(event: Event) -> str:
    return event.aggregate_id


def last_steps(
    events: Iterable[Event], rules: Sequence[Rule] = DEFAULT_RULES, keep: int = 1
) -> list[AggregateState]:
    """The states after the last ``keep`` events (oldest first), folding as the events
    stream in and keeping nothing else: the state API needs the final state, "what did this
    event change" the last two."""
    return list(collections.deque(fold_events(events, rules), maxlen=keep))
