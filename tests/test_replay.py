"""Replay: RFC 7396 merge, the fold, provenance, anomalies, time travel (pure: no database)."""

from __future__ import annotations

import copy
import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import jsonpatch
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboard.diff import Change, to_json_patch
from dashboard.events import Event
from dashboard.jsonpointer import MISSING, PointerError, escape_token, split_pointer
from dashboard.replay import (
    CREATE_OF_EXISTING,
    DELETE_BEFORE_CREATE,
    DELETE_OF_DELETED,
    UPDATE_AFTER_DELETE,
    UPDATE_BEFORE_CREATE,
    AggregateState,
    FieldChange,
    changes_by_event,
    diff_steps,
    field_history,
    fold_events,
    merge_patch,
    sort_events,
    state_at,
)
from dashboard.rules import DEFAULT_RULES, Rule

PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
LIGHT_SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
AGGREGATE = "7a1c2b9e-0000-4000-8000-000000000001"
SNAPSHOT_RULES = (Rule("*_REPLACED", "snapshot"), *DEFAULT_RULES)


def make_event(
    event_type: str,
    payload: Any,
    *,
    at: datetime | int = 0,
    seq: int | None = None,
    actor: str | None = "alice",
    event_id: str | None = None,
) -> Event:
    created_at = at if isinstance(at, datetime) else T0 + timedelta(seconds=at)
    return Event(
        event_id=event_id or str(uuid.uuid4()),
        seq=seq,
        aggregate_id=AGGREGATE,
        event_type=event_type,
        payload=payload,
        metadata={"actor": actor} if actor else None,
        created_at=created_at,
    )


def history(*specs: tuple[str, Any]) -> list[Event]:
    """Events one second apart with increasing seq, in the order given."""
    return [
        make_event(event_type, payload, at=index, seq=index + 1)
        for index, (event_type, payload) in enumerate(specs)
    ]


def final(events: list[Event], rules: Any = DEFAULT_RULES) -> AggregateState:
    *_, last = fold_events(events, rules)
    return last


def strictly_equal(a: Any, b: Any) -> bool:
    """JSON equality where 1, 1.0 and True are three different values."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(strictly_equal(a[key], b[key]) for key in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(strictly_equal, a, b))
    return a == b


def leaf_paths(value: Any, path: str = "") -> set[str]:
    """Pointers of every scalar, empty object and empty array in ``value``."""
    if isinstance(value, dict) and value:
        return set().union(
            *(leaf_paths(child, f"{path}/{escape_token(key)}") for key, child in value.items())
        )
    if isinstance(value, list) and value:
        return set().union(*(leaf_paths(child, f"{path}/{i}") for i, child in enumerate(value)))
    return {path}


def reference_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 section 2 pseudo-code, literally, mutating a private deep copy."""
    if isinstance(patch, dict):
        target = copy.deepcopy(target) if isinstance(target, dict) else {}
        for name, value in patch.items():
            if value is None:
                target.pop(name, None)
            else:
                target[name] = reference_merge_patch(target.get(name), value)
        return target
    return copy.deepcopy(patch)


# --- RFC 7396 ---------------------------------------------------------------------------

# RFC 7396 Appendix A, every row: original, patch, result.
RFC7396_EXAMPLES = [
    ('{"a":"b"}', '{"a":"c"}', '{"a":"c"}'),
    ('{"a":"b"}', '{"b":"c"}', '{"a":"b","b":"c"}'),
    ('{"a":"b"}', '{"a":null}', "{}"),
    ('{"a":"b","b":"c"}', '{"a":null}', '{"b":"c"}'),
    ('{"a":["b"]}', '{"a":"c"}', '{"a":"c"}'),
    ('{"a":"c"}', '{"a":["b"]}', '{"a":["b"]}'),
    ('{"a":{"b":"c"}}', '{"a":{"b":"d","c":null}}', '{"a":{"b":"d"}}'),
    ('{"a":[{"b":"c"}]}', '{"a":[1]}', '{"a":[1]}'),
    ('["a","b"]', '["c","d"]', '["c","d"]'),
    ('{"a":"b"}', '["c"]', '["c"]'),
    ('{"a":"foo"}', "null", "null"),
    ('{"a":"foo"}', '"bar"', '"bar"'),
    ('{"e":null}', '{"a":1}', '{"e":null,"a":1}'),
    ("[1,2]", '{"a":"b","c":null}', '{"a":"b"}'),
    ("{}", '{"a":{"bb":{"ccc":null}}}', '{"a":{"bb":{}}}'),
]


@pytest.mark.parametrize(("original", "patch", "result"), RFC7396_EXAMPLES)
def test_merge_patch_matches_rfc_7396_appendix_a(original: str, patch: str, result: str) -> None:
    target, patch_value = json.loads(original), json.loads(patch)

    merged = merge_patch(target, patch_value)

    assert strictly_equal(merged, json.loads(result))
    assert strictly_equal(target, json.loads(original)), "merge_patch mutated its target"
    assert strictly_equal(patch_value, json.loads(patch)), "merge_patch mutated its patch"


def test_merge_patch_keeps_nulls_inside_arrays_and_shares_untouched_subtrees() -> None:
    target = {"big": {"x": [1, 2, 3]}, "small": {"a": 1}}

    merged = merge_patch(target, {"small": {"a": 2}, "list": [None, {"k": None}]})

    assert merged == {"big": {"x": [1, 2, 3]}, "small": {"a": 2}, "list": [None, {"k": None}]}
    assert merged["big"] is target["big"], "an untouched subtree must be shared, not copied"
    assert target["small"] == {"a": 1}


# --- JSON strategies --------------------------------------------------------------------

KEYS = st.one_of(st.sampled_from(["id", "a", "b", "a/b", "~0", "", "é"]), st.text(max_size=2))
SCALARS = st.one_of(
    st.none(),
    st.sampled_from([0, 1, 1.0, True, False, "x"]),
    st.integers(-5, 5),
    st.text(max_size=3),
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(KEYS, children, max_size=3)
    ),
    max_leaves=12,
)
OBJECTS = st.dictionaries(KEYS, JSON, max_size=4)
# Merge patches: objects whose members may be null (remove), nested patches or values.
PATCHES = st.recursive(
    st.one_of(SCALARS, st.lists(SCALARS, max_size=2)),
    lambda children: st.dictionaries(KEYS, st.one_of(st.none(), children), max_size=3),
    max_leaves=8,
)
ACTIONS = st.sampled_from(["USER_UPDATED", "USER_UPDATED", "USER_UPDATED", "USER_REPLACED"])


@LIGHT_SETTINGS
@given(JSON, PATCHES)
def test_merge_patch_agrees_with_the_rfc_pseudo_code(target: Any, patch: Any) -> None:
    target_before, patch_before = copy.deepcopy(target), copy.deepcopy(patch)

    assert strictly_equal(merge_patch(target, patch), reference_merge_patch(target, patch))
    assert strictly_equal(target, target_before)
    assert strictly_equal(patch, patch_before)


@PROPERTY_SETTINGS
@given(OBJECTS, PATCHES)
def test_folding_a_create_and_a_merge_equals_applying_the_merge_patch(
    initial: dict[str, Any], patch: Any
) -> None:
    events = history(("USER_CREATED", initial), ("USER_UPDATED", patch))
    payloads_before = copy.deepcopy([event.payload for event in events])

    created, merged = fold_events(events)

    assert strictly_equal(created.state, initial)
    assert strictly_equal(merged.state, reference_merge_patch(initial, patch))
    assert merged.version == 2
    assert merged.exists
    assert not merged.deleted
    assert merged.anomalies == ()
    assert [event.payload for event in events] == payloads_before, "the fold mutated a payload"


def written_by(target: Any, patch: Any, tokens: list[str]) -> bool:
    """Whether merging ``patch`` into ``target`` wrote the leaf at ``tokens``: the patch
    reaches it (or writes an ancestor wholesale), or it emptied the object there."""
    for token in tokens:
        if not isinstance(patch, dict) or not isinstance(target, dict):
            return True
        if token not in patch:
            return False
        target, patch = target.get(token, MISSING), patch[token]
    if not isinstance(patch, dict) or not isinstance(target, dict):
        return True
    return bool(target)  # an object emptied by this patch; an already empty one is unchanged


@PROPERTY_SETTINGS
@given(OBJECTS, st.lists(st.tuples(ACTIONS, PATCHES), max_size=6))
def test_provenance_names_the_last_event_that_wrote_each_leaf(
    initial: dict[str, Any], updates: list[tuple[str, Any]]
) -> None:
    events = history(("USER_CREATED", initial), *updates)

    steps = list(fold_events(events, SNAPSHOT_RULES))

    for index, step in enumerate(steps):
        provenance = step.provenance
        assert set(provenance) == leaf_paths(step.state)
        for path, event in provenance.items():
            tokens = split_pointer(path)
            writers = [
                candidate
                for position, candidate in enumerate(events[: index + 1])
                if candidate.event_type != "USER_UPDATED"
                or written_by(steps[position - 1].state, candidate.payload, tokens)
            ]
            assert event is writers[-1], f"{path} after event {index}"


@LIGHT_SETTINGS
@given(OBJECTS, st.lists(st.tuples(ACTIONS, PATCHES), max_size=6))
def test_whole_arrays_group_the_leaves_of_each_array_under_one_entry(
    initial: dict[str, Any], updates: list[tuple[str, Any]]
) -> None:
    """The record page's state rows: each non-empty array is one entry, set by the event
    that set every leaf inside it; every other leaf is an entry of its own, in order."""
    steps = list(fold_events(history(("USER_CREATED", initial), *updates), SNAPSHOT_RULES))
    for step in steps:
        leaves = list(step.iter_provenance())
        entries = list(step.iter_provenance(whole_arrays=True))
        grouped: list[tuple[str, Any]] = []
        for path, event in leaves:
            tokens = split_pointer(path)
            # The outermost non-empty array on the way to this leaf, if any.
            array_at = next(
                (
                    cut
                    for cut in range(len(tokens))
                    if isinstance(_at(step.state, tokens[:cut]), list)
                ),
                None,
            )
            entry = path if array_at is None else _pointer(tokens[:array_at])
            if grouped and grouped[-1][0] == entry:
                assert grouped[-1][1] is event  # one event set the whole array
            else:
                grouped.append((entry, event))
        assert entries == grouped


def _at(document: Any, tokens: list[str]) -> Any:
    for token in tokens:
        document = document[int(token)] if isinstance(document, list) else document[token]
    return document


def _pointer(tokens: list[str]) -> str:
    return "".join("/" + escape_token(token) for token in tokens)


@LIGHT_SETTINGS
@given(OBJECTS, st.lists(st.tuples(ACTIONS, PATCHES), max_size=6))
def test_each_events_changes_patch_the_state_before_into_the_state_after(
    initial: dict[str, Any], updates: list[tuple[str, Any]]
) -> None:
    events = history(("USER_CREATED", initial), *updates)
    before: Any = MISSING

    for step, changes in changes_by_event(events, SNAPSHOT_RULES):
        if before is MISSING:
            assert changes == [Change("", "add", MISSING, initial)]
        else:
            patched = jsonpatch.apply_patch(before, to_json_patch(changes), in_place=False)
            assert strictly_equal(patched, step.state)
        before = step.state


LIFECYCLE = st.sampled_from(
    ["USER_UPDATED", "USER_UPDATED", "USER_REPLACED", "USER_DELETED", "USER_CREATED"]
)


@LIGHT_SETTINGS
@given(OBJECTS, st.lists(st.tuples(LIFECYCLE, st.one_of(OBJECTS, PATCHES)), max_size=7))
def test_a_fold_without_provenance_reaches_the_same_states(
    initial: dict[str, Any], updates: list[tuple[str, Any]]
) -> None:
    """What a report folds with: the same states, flags and anomalies, and so the same
    diffs, without the provenance tree (which it never shows)."""
    events = history(("USER_CREATED", initial), *updates)
    pairs = zip(
        fold_events(events, SNAPSHOT_RULES),
        fold_events(events, SNAPSHOT_RULES, provenance=False),
        strict=True,
    )
    before = lean_before = AggregateState.initial()
    for full, lean in pairs:
        assert strictly_equal(lean.state, full.state)
        assert lean == full  # exists, deleted, version, last_event, anomalies
        assert lean.provenance == {}
        assert diff_steps(lean_before, lean) == diff_steps(before, full)
        before, lean_before = full, lean


@LIGHT_SETTINGS
@given(
    OBJECTS,
    st.lists(st.tuples(LIFECYCLE, st.one_of(OBJECTS, PATCHES)), max_size=7),
    st.data(),
)
def test_a_diffs_patch_turns_its_from_state_into_its_to_state_deletes_included(
    initial: dict[str, Any], updates: list[tuple[str, Any]], data
) -> None:
    # The documents are what the state API shows: a deleted record is its last state.
    events = history(("USER_CREATED", initial), *updates)
    steps = list(fold_events(events, SNAPSHOT_RULES))
    first = data.draw(st.integers(0, len(steps) - 1))
    second = data.draw(st.integers(0, len(steps) - 1))
    before, after = steps[first], steps[second]

    changes = diff_steps(before, after)
    patch = to_json_patch(changes)

    patched = jsonpatch.apply_patch(before.state, patch, in_place=False)
    assert strictly_equal(patched, after.state)
    if before.exists and not after.exists:
        assert changes[-1] == Change("", "remove", after.state, MISSING)


def test_deleting_and_recreating_a_record_patch_with_a_reference_implementation() -> None:
    events = history(
        ("USER_CREATED", {"email": "a@x.org"}),
        ("USER_UPDATED", {"email": "b@x.org"}),
        ("USER_DELETED", {}),
        ("USER_CREATED", {"email": "c@x.org", "plan": "pro"}),
    )
    created, updated, deleted, recreated = fold_events(events)

    assert to_json_patch(diff_steps(updated, deleted)) == []
    assert jsonpatch.apply_patch(created.state, to_json_patch(diff_steps(created, deleted))) == (
        deleted.state
    )
    assert to_json_patch(diff_steps(deleted, recreated)) == [
        {"op": "add", "path": "", "value": {"email": "c@x.org", "plan": "pro"}}
    ]
    assert jsonpatch.apply_patch(deleted.state, to_json_patch(diff_steps(deleted, recreated))) == (
        recreated.state
    )


# --- ordering and time travel ----------------------------------------------------------

TIMED_EVENTS = st.lists(
    st.tuples(st.integers(0, 5), st.sampled_from(["USER_UPDATED", "USER_DELETED"]), PATCHES),
    max_size=8,
)


@PROPERTY_SETTINGS
@given(TIMED_EVENTS, st.integers(-1, 6), st.integers(-1, 6))
def test_state_at_is_monotone_in_time(
    specs: list[tuple[int, str, Any]], first: int, second: int
) -> None:
    events = [make_event("USER_CREATED", {"n": 0}, at=0, seq=0)] + [
        make_event(event_type, payload, at=offset, seq=index + 1)
        for index, (offset, event_type, payload) in enumerate(specs)
    ]
    earlier, later = sorted([first, second])

    at_earlier = state_at(events, T0 + timedelta(seconds=earlier))
    at_later = state_at(events, T0 + timedelta(seconds=later))

    assert at_earlier.version <= at_later.version
    assert at_later.version == sum(
        1 for event in events if event.created_at <= T0 + timedelta(seconds=later)
    )


def test_state_at_includes_events_at_exactly_that_time() -> None:
    events = history(("USER_CREATED", {"n": 1}), ("USER_UPDATED", {"n": 2}))

    assert state_at(events, events[1].created_at).state == {"n": 2}
    assert state_at(events, events[1].created_at - timedelta(microseconds=1)).state == {"n": 1}


def test_state_at_before_any_event_is_the_initial_state() -> None:
    events = history(("USER_CREATED", {"n": 1}))

    state = state_at(events, T0 - timedelta(days=1))

    assert state == AggregateState.initial()
    assert (state.version, state.exists, state.state, state.provenance) == (0, False, None, {})


def test_state_at_accepts_any_offset_and_rejects_naive_times() -> None:
    events = history(("USER_CREATED", {"n": 1}))
    paris = timezone(timedelta(hours=1))

    assert state_at(events, T0.astimezone(paris)).version == 1
    with pytest.raises(ValueError, match="timezone-aware"):
        state_at(events, datetime(2024, 3, 1, 9, 0))  # naive on purpose


def test_events_in_one_transaction_fold_by_seq() -> None:
    create = make_event("USER_CREATED", {"email": "a@x.org"}, at=0, seq=1)
    first = make_event("EMAIL_CHANGED", {"email": "b@x.org"}, at=5, seq=2)
    second = make_event("EMAIL_CHANGED", {"email": "c@x.org"}, at=5, seq=3)
    # Same created_at, and event ids that sort the other way round.
    first = Event(**{**_fields(first), "event_id": "ffffffff-0000-4000-8000-000000000000"})
    second = Event(**{**_fields(second), "event_id": "00000000-0000-4000-8000-000000000000"})

    assert sort_events([second, create, first]) == [create, first, second]
    assert state_at([second, first, create], T0 + timedelta(seconds=5)).state == {
        "email": "c@x.org"
    }


def test_without_seq_same_time_events_order_by_event_id() -> None:
    one = make_event("A_UPDATED", {}, at=1, event_id="b", seq=None)
    two = make_event("A_UPDATED", {}, at=1, event_id="a", seq=None)
    three = make_event("A_UPDATED", {}, at=0, event_id="c", seq=None)

    assert sort_events([one, two, three]) == [three, two, one]


def test_fold_keeps_the_order_it_is_given() -> None:
    create, update = history(("USER_CREATED", {"n": 1}), ("USER_UPDATED", {"n": 2}))

    steps = list(fold_events([update, create]))

    assert steps[0].anomalies == (UPDATE_BEFORE_CREATE,)
    assert steps[1].anomalies == (CREATE_OF_EXISTING,)
    assert steps[1].state == {"n": 1}


def test_fold_is_lazy() -> None:
    def endless():
        yield make_event("USER_CREATED", {"n": 0})
        n = 0
        while True:
            n += 1
            yield make_event("USER_UPDATED", {"n": n}, at=n)

    steps = fold_events(endless())

    assert [next(steps).state["n"] for _ in range(3)] == [0, 1, 2]


# --- provenance -------------------------------------------------------------------------


def test_provenance_after_merges_that_remove_keys() -> None:
    create, rename, move, forget = history(
        ("USER_CREATED", {"name": "Ada", "address": {"city": "Paris", "zip": "75001"}}),
        ("USER_UPDATED", {"name": "Ada L."}),
        ("USER_UPDATED", {"address": {"city": "Lyon", "zip": None}, "tags": ["x", "y"]}),
        ("USER_UPDATED", {"name": None, "address": {"city": None}}),
    )

    steps = list(fold_events([create, rename, move, forget]))

    assert steps[2].provenance == {
        "/name": rename,
        "/address/city": move,
        "/tags/0": move,
        "/tags/1": move,
    }
    # The last merge removed /name and emptied /address: an empty object is a leaf.
    assert steps[3].state == {"address": {}, "tags": ["x", "y"]}
    assert steps[3].provenance == {"/address": forget, "/tags/0": move, "/tags/1": move}


def test_create_and_snapshot_attribute_every_leaf_to_themselves() -> None:
    create, update, replace = history(
        ("USER_CREATED", {"a": {"b": 1}, "c": []}),
        ("USER_UPDATED", {"a": {"d": 2}}),
        ("USER_REPLACED", {"a": {"b": 1}, "e/f": {}}),
    )

    steps = list(fold_events([create, update, replace], SNAPSHOT_RULES))

    assert steps[0].provenance == {"/a/b": create, "/c": create}
    assert steps[1].provenance == {"/a/b": create, "/a/d": update, "/c": create}
    assert steps[2].provenance == {"/a/b": replace, "/e~1f": replace}


def test_a_scalar_state_is_attributed_at_the_root() -> None:
    (create,) = history(("COUNTER_CREATED", 5))

    assert final([create]).provenance == {"": create}


def test_provenance_json_carries_event_time_and_actor() -> None:
    (create,) = history(("USER_CREATED", {"email": "a@x.org"}))

    assert final([create]).provenance_to_json() == {
        "/email": {
            "event_id": create.event_id,
            "created_at": "2024-03-01T09:00:00+00:00",
            "actor": "alice",
        }
    }


def test_a_merge_shares_untouched_subtrees_with_the_previous_state() -> None:
    events = history(
        ("USER_CREATED", {"profile": {"name": "Ada"}, "items": [{"id": 1}]}),
        ("USER_UPDATED", {"profile": {"email": "a@x.org"}}),
    )

    created, updated = fold_events(events)

    assert updated.state["items"] is created.state["items"]
    assert created.state == {"profile": {"name": "Ada"}, "items": [{"id": 1}]}


# --- anomalies --------------------------------------------------------------------------


def test_update_after_delete_is_flagged_and_applied_to_the_last_state() -> None:
    events = history(
        ("USER_CREATED", {"email": "a@x.org"}),
        ("USER_DELETED", {}),
        ("USER_UPDATED", {"email": "b@x.org"}),
    )

    _created, deleted, stray = fold_events(events)

    assert (deleted.exists, deleted.deleted, deleted.state) == (False, True, {"email": "a@x.org"})
    assert stray.anomalies == (UPDATE_AFTER_DELETE,)
    assert (stray.exists, stray.deleted, stray.state) == (False, True, {"email": "b@x.org"})
    assert stray.anomaly_log == ((events[2].event_id, UPDATE_AFTER_DELETE),)


def test_update_before_create_is_flagged_and_the_record_exists_from_then_on() -> None:
    events = history(("USER_UPDATED", {"email": "a@x.org"}), ("USER_UPDATED", {"n": 1}))

    first, second = fold_events(events)

    assert first.anomalies == (UPDATE_BEFORE_CREATE,)
    assert first.exists
    assert first.state == {"email": "a@x.org"}
    assert second.anomalies == ()
    assert second.anomaly_log == ((events[0].event_id, UPDATE_BEFORE_CREATE),)


def test_other_anomalies_and_recreation() -> None:
    events = history(
        ("USER_DELETED", {}),
        ("USER_CREATED", {"v": 1}),
        ("USER_CREATED", {"v": 2}),
        ("USER_DELETED", {}),
        ("USER_DELETED", {}),
        ("USER_CREATED", {"v": 3}),
    )

    steps = list(fold_events(events))

    assert [step.anomalies for step in steps] == [
        (DELETE_BEFORE_CREATE,),
        (),
        (CREATE_OF_EXISTING,),
        (),
        (DELETE_OF_DELETED,),
        (),  # re-creating a deleted record is not an anomaly
    ]
    assert (steps[-1].exists, steps[-1].deleted, steps[-1].state) == (True, False, {"v": 3})
    assert len(steps[-1].anomaly_log) == 3


# --- changes and field history ----------------------------------------------------------


def test_changes_by_event_reports_creation_updates_and_deletion() -> None:
    events = history(
        ("USER_CREATED", {"email": "a@x.org", "items": [{"id": 1, "qty": 1}]}),
        ("USER_UPDATED", {"email": "b@x.org", "items": [{"id": 1, "qty": 2}]}),
        ("USER_DELETED", {}),
    )

    changes = [changes for _step, changes in changes_by_event(events)]

    assert changes[0] == [Change("", "add", MISSING, events[0].payload)]
    assert changes[1] == [
        Change("/email", "replace", "a@x.org", "b@x.org"),
        Change("/items/0/qty", "replace", 1, 2),
    ]
    assert changes[2] == [
        Change("", "remove", {"email": "b@x.org", "items": [{"id": 1, "qty": 2}]}, MISSING)
    ]


def test_diff_steps_compares_the_states_after_two_events() -> None:
    events = history(
        ("USER_CREATED", {"a": 1, "b": 1}),
        ("USER_UPDATED", {"a": 2}),
        ("USER_UPDATED", {"b": 2}),
    )
    first, _second, third = fold_events(events)

    assert diff_steps(first, third) == [
        Change("/a", "replace", 1, 2),
        Change("/b", "replace", 1, 2),
    ]
    assert diff_steps(third, third) == []


def test_field_history_says_when_the_email_changed_and_who_changed_it() -> None:
    create = make_event("USER_CREATED", {"email": "a@x.org", "name": "Ada"}, at=0, actor="hr")
    rename = make_event("USER_UPDATED", {"name": "Ada L."}, at=1, actor="hr")
    change = make_event("USER_UPDATED", {"email": "b@x.org"}, at=2, actor="ada")
    same = make_event("USER_UPDATED", {"email": "b@x.org"}, at=3, actor="bot")
    clear = make_event("USER_UPDATED", {"email": None}, at=4, actor="gdpr")
    delete = make_event("USER_DELETED", {}, at=5, actor="gdpr")

    changes = field_history([create, rename, change, same, clear, delete], "/email")

    assert changes == [
        FieldChange(create, MISSING, "a@x.org"),
        FieldChange(change, "a@x.org", "b@x.org"),
        FieldChange(clear, "b@x.org", MISSING),
    ]
    assert [(c.event.actor, c.op) for c in changes] == [
        ("hr", "add"),
        ("ada", "replace"),
        ("gdpr", "remove"),
    ]
    assert changes[1].to_json()["old"] == "a@x.org"
    assert changes[2].to_json()["new"] is None


def test_field_history_sees_type_changes_and_array_elements() -> None:
    events = history(
        ("USER_CREATED", {"n": 1, "tags": ["a"]}),
        ("USER_UPDATED", {"n": 1.0}),
        ("USER_UPDATED", {"n": True, "tags": ["a", "b"]}),
    )

    assert [c.new for c in field_history(events, "/n")] == [1, 1.0, True]
    assert [c.new for c in field_history(events, "/tags/1")] == ["b"]


def test_field_history_rejects_a_malformed_pointer() -> None:
    with pytest.raises(PointerError):
        field_history(history(("USER_CREATED", {})), "email")


# --- Event ------------------------------------------------------------------------------


def _fields(event: Event) -> dict[str, Any]:
    return {name: getattr(event, name) for name in Event.__dataclass_fields__}


def test_event_json_has_the_documented_shape_in_utc() -> None:
    event = make_event(
        "USER_CREATED",
        {"a": 1},
        at=datetime(2024, 3, 1, 10, 0, tzinfo=timezone(timedelta(hours=1))),
        seq=4,
    )

    assert event.created_at == T0
    assert event.created_at.tzinfo is UTC
    assert event.to_json() == {
        "event_id": event.event_id,
        "seq": 4,
        "aggregate_id": AGGREGATE,
        "event_type": "USER_CREATED",
        "payload": {"a": 1},
        "metadata": {"actor": "alice"},
        "created_at": "2024-03-01T09:00:00+00:00",
    }


def test_event_requires_a_timezone() -> None:
    with pytest.raises(ValueError, match="time zone"):
        make_event("USER_CREATED", {}, at=datetime(2024, 3, 1))  # naive on purpose


def test_event_from_row_converts_uuids_and_tolerates_a_missing_seq() -> None:
    event_id, aggregate_id = uuid.uuid4(), uuid.uuid4()
    row = {
        "event_id": event_id,
        "aggregate_id": aggregate_id,
        "event_type": "USER_CREATED",
        "payload": {"a": 1},
        "metadata": None,
        "created_at": T0,
    }

    event = Event.from_row(row)

    assert (event.event_id, event.aggregate_id, event.seq) == (
        str(event_id),
        str(aggregate_id),
        None,
    )
    assert event.order_key == (T0, -1, str(event_id))
    assert event.actor is None
    assert Event.from_row({**row, "seq": 7, "created_at": "2024-03-01T09:00:00Z"}).seq == 7
    with pytest.raises(ValueError, match="payload"):
        Event.from_row({key: value for key, value in row.items() if key != "payload"})


def test_events_are_hashable_by_id_although_payloads_are_dicts() -> None:
    event = make_event("USER_CREATED", {"a": 1})

    assert {event, event} == {event}


def test_fold_steps_are_ordinary_frozen_aggregate_states() -> None:
    events = history(("USER_CREATED", {"a": 1}), ("USER_UPDATED", {"b": 2}))

    step = final(events)

    # The fold fills the slots directly for speed; the result must be indistinguishable.
    rebuilt = AggregateState(
        **{name: getattr(step, name) for name in AggregateState.__dataclass_fields__}
    )
    assert step == rebuilt
    assert repr(step) == repr(rebuilt)
    with pytest.raises(dataclasses.FrozenInstanceError):
        step.version = 7  # type: ignore[misc]


def test_a_long_run_of_anomalies_is_logged_in_order() -> None:
    events = history(
        ("USER_CREATED", {"n": 0}),
        ("USER_DELETED", {}),
        *[("USER_UPDATED", {"n": n}) for n in range(1, 3001)],
    )

    last = final(events)

    assert last.state == {"n": 3000}
    assert len(last.anomaly_log) == 3000
    assert last.anomaly_log[0] == (events[2].event_id, UPDATE_AFTER_DELETE)
    assert last.anomaly_log[-1] == (events[-1].event_id, UPDATE_AFTER_DELETE)
