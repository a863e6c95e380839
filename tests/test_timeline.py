"""RecordHistory: the record page's paging and state-at, pure (no database)."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dashboard.events import Event
from dashboard.filters import Cursor
from dashboard.timeline import RecordHistory, final_states, last_steps

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
