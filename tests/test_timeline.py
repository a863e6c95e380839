"""RecordHistory: the record page's paging and state-at, pure (no database)."""

from __future__ import annotations

import gc
import itertools
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dashboard.events import Event
from dashboard.filters import Cursor
from dashboard.replay import AggregateState, diff_steps, fold_events
from dashboard.timeline import (
    CHECKPOINT_EVERY,
    RecordHistory,
    final_states,
    last_steps,
)

START = datetime(2026, 1, 1, tzinfo=UTC)
RECORD = str(uuid.UUID(int=1))


def make_events(count: int, *, same_time_every: int = 1, with_seq: bool = True) -> list[Event]:
    events = []
    for index in range(count):
        events.append(
            Event(
                event_id=str(uuid.UUID(int=1000 + index)),
                seq=index + 1 if with_seq else None,
                aggregate_id=RECORD,
                event_type="USER_CREATED" if index == 0 else "USER_UPDATED",
                payload={"n": index} if index else {"name": "Ann", "n": 0},
                metadata={"actor": f"actor-{index % 3}"},
                created_at=START + timedelta(seconds=index // same_time_every),
            )
        )
    return events


def walk(history: RecordHistory, order: str, limit: int) -> list[str]:
    """Follow next cursors from the first page; return the event ids in display order."""
    seen, cursor = [], None
    while True:
        window = history.window(order=order, limit=limit, cursor=cursor)
        seen.extend(history.events[index].event_id for index in window.indices)
        if window.next_cursor is None:
            return seen
        cursor = window.next_cursor


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("with_seq", [True, False])
def test_pages_cover_every_event_once(order, with_seq):
    history = RecordHistory(make_events(23, same_time_every=4, with_seq=with_seq))
    if not with_seq:  # without seq the order is (created_at, event_id), as in SQL
        history = RecordHistory(sorted(history.events, key=lambda e: (e.created_at, e.event_id)))
    ids = [event.event_id for event in history.events]
    expected = ids if order == "asc" else list(reversed(ids))
    assert walk(history, order, 5) == expected


def test_backward_returns_the_previous_page():
    history = RecordHistory(make_events(12))
    first = history.window(order="desc", limit=5)
    assert first.prev_cursor is None
    second = history.window(order="desc", limit=5, cursor=first.next_cursor)
    back = history.window(order="desc", limit=5, cursor=second.prev_cursor, backward=True)
    assert back.indices == first.indices
    assert back.prev_cursor is None


def test_anchor_opens_the_page_starting_at_the_event():
    history = RecordHistory(make_events(30))
    target = history.events[10].event_id
    newest_first = history.window(order="desc", limit=5, anchor=target)
    assert newest_first.indices == [10, 9, 8, 7, 6]
    oldest_first = history.window(order="asc", limit=5, anchor=target)
    assert oldest_first.indices == [10, 11, 12, 13, 14]
    unknown = history.window(order="desc", limit=5, anchor="nope")
    assert unknown.indices == [29, 28, 27, 26, 25]


def test_state_at_and_changes():
    history = RecordHistory(make_events(5))
    assert history.step_at(START - timedelta(seconds=1)).version == 0
    assert history.step_at(START).version == 1
    assert history.step_at(START + timedelta(seconds=2, milliseconds=1)).state == {
        "name": "Ann",
        "n": 2,
    }
    assert [change.path for change in history.changes_at(3)] == ["/n"]
    assert history.kind == "USER"
    assert history.final.version == 5


def test_streaming_helpers_agree_with_the_full_fold():
    events = make_events(40)
    history = RecordHistory(events)
    before, after = last_steps(events, keep=2)
    assert after.state == history.final.state and before.version == 39
    assert last_steps([], keep=2) == []
    other = [
        Event(
            str(uuid.UUID(int=5000 + i)),
            i,
            str(uuid.UUID(int=2)),
            "ORDER_CREATED",
            {"i": i},
            None,
            START,
        )
        for i in range(1)
    ]
    states = dict(final_states([*events, *other]))
    assert states[RECORD].version == 40 and states[str(uuid.UUID(int=2))].state == {"i": 0}


@given(
    count=st.integers(min_value=0, max_value=40),
    limit=st.integers(min_value=1, max_value=12),
    same=st.integers(min_value=1, max_value=5),
    order=st.sampled_from(["asc", "desc"]),
)
def test_paging_law(count, limit, same, order):
    """Forward pages partition the timeline; every page's prev cursor leads back to the
    page before it."""
    history = RecordHistory(make_events(count, same_time_every=same))
    pages, cursor = [], None
    while True:
        window = history.window(order=order, limit=limit, cursor=cursor)
        pages.append(window)
        if window.next_cursor is None:
            break
        cursor = window.next_cursor
    flat = [index for page in pages for index in page.indices]
    assert sorted(flat) == list(range(count))
    for earlier, later in itertools.pairwise(pages):
        back = history.window(order=order, limit=limit, cursor=later.prev_cursor, backward=True)
        assert back.indices == earlier.indices


def test_cursor_positions_are_those_of_sql():
    history = RecordHistory(make_events(3))
    window = history.window(order="asc", limit=1)
    cursor = window.next_cursor
    assert isinstance(cursor, Cursor) and cursor.seq == 1
    assert str(cursor.event_id) == history.events[0].event_id


# --- Steps: one step in CHECKPOINT_EVERY kept, the others refolded ---------------------------


def busy_record(count: int) -> list[Event]:
    """A record whose history exercises every kind of step: nested merges, removals,
    snapshots, a delete and a re-creation, and anomalies (an update after the delete)."""
    events = []
    for index in range(count):
        if index == 0:
            event_type, payload = "USER_CREATED", {"name": "Ann", "address": {"city": "Oslo"}}
        elif index % 97 == 0:
            event_type, payload = "USER_DELETED", {}
        elif index % 97 == 1 and index > 1:
            event_type, payload = "USER_UPDATED", {"after_delete": index}  # an anomaly
        elif index % 97 == 2 and index > 2:
            event_type, payload = "USER_CREATED", {"name": f"again {index}"}
        elif index % 41 == 0:
            event_type, payload = "USER_SNAPSHOT", {"name": "snap", "n": index}
        else:
            payload = {f"f{index % 7}": index, "address": {"zip": str(index)}}
            if index % 5 == 0:
                payload = {"address": None, f"f{(index + 1) % 7}": None}
            event_type = "USER_UPDATED"
        events.append(
            Event(
                event_id=str(uuid.UUID(int=5000 + index)),
                seq=index + 1,
                aggregate_id=RECORD,
                event_type=event_type,
                payload=payload,
                metadata={"actor": f"actor-{index % 4}"},
                created_at=START + timedelta(seconds=index),
            )
        )
    return events


@pytest.mark.parametrize(
    "count", [1, CHECKPOINT_EVERY, CHECKPOINT_EVERY + 1, 3 * CHECKPOINT_EVERY + 5]
)
def test_every_step_equals_that_of_one_full_fold(count):
    events = busy_record(count)
    full = list(fold_events(events))
    history = RecordHistory(events)
    assert len(history.steps) == count
    # Asked for in an order that evicts and refolds runs, forwards, backwards and by
    # negative index: every step equal to the full fold's, provenance and anomalies too.
    order = list(range(count)) + list(reversed(range(count))) + [-1, -count]
    for index in order:
        step = history.steps[index]
        assert step == full[index], index
        assert step.provenance == full[index].provenance, index
        assert step.anomaly_log == full[index].anomaly_log, index
    assert history.steps[1:4] == full[1:4]
    assert list(history.steps) == full
    assert history.final == full[-1]
    with pytest.raises(IndexError):
        history.steps[count]


def test_what_each_event_changed_is_what_the_full_fold_says():
    events = busy_record(2 * CHECKPOINT_EVERY + 3)
    full = [AggregateState.initial(), *fold_events(events)]
    history = RecordHistory(events)
    for index in range(len(events)):
        assert history.changes_at(index) == diff_steps(full[index], full[index + 1]), index


def test_a_long_history_keeps_a_fraction_of_its_steps():
    """What makes a 10,000-event history small: every step of a record with 200 fields
    holds a 200-entry copy of its top-level object; the history keeps one step in
    CHECKPOINT_EVERY (and a few refolded runs), not all of them."""
    events = [
        Event(
            event_id=str(uuid.UUID(int=9000 + index)),
            seq=index + 1,
            aggregate_id=RECORD,
            event_type="ORDER_CREATED" if index == 0 else "ORDER_UPDATED",
            payload={f"line_{index % 200}": index, "total": index},
            metadata={},
            created_at=START + timedelta(seconds=index),
        )
        for index in range(3000)
    ]

    def traced(build):
        gc.collect()
        tracemalloc.start()
        try:
            kept = build()
            gc.collect()
            return tracemalloc.get_traced_memory()[0], kept
        finally:
            tracemalloc.stop()

    all_steps, _full = traced(lambda: list(fold_events(events)))

    def history_with_a_page():
        history = RecordHistory(events)
        for index in range(1480, 1530):  # a page, refolding the runs it spans
            history.changes_at(index)
        return history

    history_size, _history = traced(history_with_a_page)
    assert history_size * 10 < all_steps, (history_size, all_steps)
