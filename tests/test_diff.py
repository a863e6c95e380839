"""Field-level diff, JSON Patch output and JSON Pointer helpers (pure: no database).

The central law: for any JSON values ``a`` and ``b``, applying
``to_json_patch(diff_states(a, b))`` to ``a`` with the ``jsonpatch`` reference
implementation of RFC 6902 gives exactly ``b`` — exactly meaning with JSON types, since
Python's ``1 == 1.0 == True`` would hide a wrong patch.
"""

from __future__ import annotations

import copy
import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonpatch
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboard.diff import (
    MISSING,
    Change,
    diff_merge,
    diff_states,
    json_equal,
    side_by_side,
    to_json_patch,
)
from dashboard.events import Event
from dashboard.jsonpointer import (
    PointerError,
    PointerNotFoundError,
    escape_token,
    join_pointer,
    lookup_pointer,
    resolve_pointer,
    split_pointer,
    unescape_token,
)
from dashboard.replay import diff_steps, fold_events, merge_patch

# The laws the API relies on get 200 examples; secondary properties 100, to keep the
# suite quick.
PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
LIGHT_SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def strictly_equal(a: Any, b: Any) -> bool:
    """JSON equality where 1, 1.0 and True are three different values."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(strictly_equal(a[key], b[key]) for key in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(strictly_equal, a, b))
    return a == b


def apply_patch(document: Any, changes: list[Change]) -> Any:
    return jsonpatch.apply_patch(document, to_json_patch(changes), in_place=False)


# --- strategies -------------------------------------------------------------------------

# Keys that need RFC 6901 escaping, look like indexes, are empty, or are not ASCII.
KEYS = st.one_of(
    st.sampled_from(["id", "a", "b", "a/b", "~", "~1", "~0/", "/", "", "0", "é", "名前", "😀"]),
    st.text(max_size=3),
)
# Values equal in Python but different in JSON are drawn often, so a patch that confuses
# them fails.
SCALARS = st.one_of(
    st.none(),
    st.sampled_from([0, 1, -1, 0.0, 1.0, 2.5, True, False, "", "1", "true"]),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=4),
)
# Identities that Python conflates (1, 1.0, True) are distinct items in JSON.
IDENTITIES = st.one_of(st.integers(0, 6), st.sampled_from([1, 1.0, True, "1", "x/y", None]))


def keyed_arrays(children: st.SearchStrategy[Any]) -> st.SearchStrategy[list[dict[str, Any]]]:
    item = st.builds(
        lambda identity, rest: {**rest, "id": identity},
        IDENTITIES,
        st.dictionaries(KEYS, children, max_size=3),
    )
    return st.lists(item, max_size=5, unique_by=lambda item: (type(item["id"]), item["id"]))


JSON = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(KEYS, children, max_size=4),
        keyed_arrays(children),
    ),
    max_leaves=15,
)


@st.composite
def mutated(draw: st.DrawFn, value: Any) -> Any:
    """A value near ``value``: some parts kept (often the very same objects, as replay
    shares structure), some changed, dropped, added or, in arrays, reordered."""
    if isinstance(value, dict):
        result = {}
        for key, child in value.items():
            fate = draw(st.sampled_from(["same object", "copy", "mutate", "drop"]))
            if fate == "same object":
                result[key] = child
            elif fate == "copy":
                result[key] = copy.deepcopy(child)
            elif fate == "mutate":
                result[key] = draw(mutated(child))
        result.update(draw(st.dictionaries(KEYS, JSON, max_size=2)))
        return result
    if isinstance(value, list):
        items = [draw(mutated(item)) for item in value if draw(st.integers(0, 4))]
        for _ in range(draw(st.integers(0, 2))):
            is_keyed = items and all(isinstance(item, dict) and "id" in item for item in items)
            extra = draw(keyed_arrays(JSON).map(lambda xs: xs[:1])) if is_keyed else [draw(JSON)]
            position = draw(st.integers(0, len(items)))
            items[position:position] = extra
        if draw(st.booleans()):
            items = draw(st.permutations(items))
        return items
    return draw(st.one_of(st.just(value), SCALARS))


PAIRS = st.one_of(
    st.tuples(JSON, JSON),
    JSON.flatmap(lambda old: st.tuples(st.just(old), mutated(old))),
)


def typed_identity(identity: Any) -> tuple[type, Any]:
    return (type(identity), identity)


@st.composite
def keyed_array_pairs(draw: st.DrawFn) -> tuple[list[Any], list[Any]]:
    """Two arrays of items drawn from one pool of identities: items kept, changed,
    dropped, inserted and reordered — the cases where a keyed diff can go wrong."""
    pool = draw(st.lists(IDENTITIES, min_size=1, max_size=8, unique_by=typed_identity))
    fields = st.dictionaries(st.sampled_from(["qty", "note", "a/b", "~"]), SCALARS, max_size=3)
    originals = {typed_identity(identity): {**draw(fields), "id": identity} for identity in pool}
    subsets = st.lists(st.sampled_from(pool), unique_by=typed_identity, max_size=len(pool))
    old = [originals[typed_identity(identity)] for identity in draw(subsets)]
    new = []
    for identity in draw(subsets):
        original = originals[typed_identity(identity)]
        fate = draw(st.sampled_from(["same object", "equal copy", "changed"]))
        if fate == "same object":
            new.append(original)  # as replay shares structure between states
        elif fate == "equal copy":
            new.append(copy.deepcopy(original))  # as a merge patch re-sends an item
        else:
            new.append({**draw(fields), "id": identity})
    return old, new


@st.composite
def documents_with_keyed_arrays(draw: st.DrawFn) -> tuple[Any, Any]:
    """Keyed arrays at the root, in an object, and nested inside a keyed item."""
    old, new = draw(keyed_array_pairs())
    inner_old, inner_new = draw(keyed_array_pairs())
    shape = draw(st.sampled_from(["root", "member", "nested"]))
    if shape == "root":
        return old, new
    if shape == "member":
        return {"items": old, "n": 1}, {"items": new, "n": 1}
    return (
        {"orders": [{"id": "o1", "lines": inner_old}, *old]},
        {"orders": [*new, {"id": "o1", "lines": inner_new}]},
    )


# --- properties -------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(PAIRS)
def test_patch_from_diff_turns_old_into_new(pair: tuple[Any, Any]) -> None:
    old, new = pair
    old_before, new_before = copy.deepcopy(old), copy.deepcopy(new)

    changes = diff_states(old, new)

    assert strictly_equal(apply_patch(old, changes), new)
    assert strictly_equal(old, old_before), "diff_states mutated its input"
    assert strictly_equal(new, new_before), "diff_states mutated its input"
    for change in changes:  # every change is a real one, with the absent side MISSING
        if change.op == "replace" and change.path != "":
            assert not json_equal(change.old, change.new)
        assert (change.old is MISSING) == (change.op == "add")
        assert (change.new is MISSING) == (change.op == "remove")


@PROPERTY_SETTINGS
@given(documents_with_keyed_arrays())
def test_patch_from_diff_handles_keyed_arrays_with_moves(pair: tuple[Any, Any]) -> None:
    old, new = pair

    changes = diff_states(old, new)

    assert strictly_equal(apply_patch(old, changes), new)


@LIGHT_SETTINGS
@given(PAIRS)
def test_patch_round_trips_when_every_array_is_positional(pair: tuple[Any, Any]) -> None:
    old, new = pair
    assert strictly_equal(apply_patch(old, diff_states(old, new, identity_key=None)), new)


@PROPERTY_SETTINGS
@given(JSON)
def test_a_value_has_no_diff_with_itself_or_a_copy(value: Any) -> None:
    assert diff_states(value, value) == []
    assert diff_states(value, copy.deepcopy(value)) == []


@LIGHT_SETTINGS
@given(JSON)
def test_diff_from_and_to_nothing_is_the_whole_value(value: Any) -> None:
    assert diff_states(MISSING, value) == [Change("", "add", MISSING, value)]
    assert diff_states(value, MISSING) == [Change("", "remove", value, MISSING)]
    assert strictly_equal(apply_patch({"anything": 1}, diff_states(MISSING, value)), value)


@LIGHT_SETTINGS
@given(JSON, JSON)
def test_json_equal_agrees_with_type_strict_equality(a: Any, b: Any) -> None:
    assert json_equal(a, b) == strictly_equal(a, b)
    assert json_equal(a, copy.deepcopy(a))


@LIGHT_SETTINGS
@given(st.lists(st.one_of(KEYS, st.integers(0, 99)), max_size=5))
def test_pointer_tokens_round_trip(tokens: list[str | int]) -> None:
    pointer = join_pointer("", *tokens)
    assert split_pointer(pointer) == [str(token) for token in tokens]


# --- the diff of a merge, from its patch ---------------------------------------------------


@st.composite
def merge_patch_for(draw: st.DrawFn, value: Any) -> Any:
    """An RFC 7396 patch aimed at ``value``: members removed (null), patched in depth,
    replaced (often by an equal copy, as events re-send values) or kept out, new members
    added, in an order of its own; now and then a patch that replaces ``value`` whole."""
    if not isinstance(value, dict) or not draw(st.integers(0, 9)):
        return draw(JSON)
    patch: dict[str, Any] = {}
    for key, child in value.items():
        fate = draw(st.sampled_from(["absent", "absent", "null", "patch", "replace", "copy"]))
        if fate == "null":
            patch[key] = None
        elif fate == "patch":
            patch[key] = draw(merge_patch_for(child))
        elif fate == "replace":
            patch[key] = draw(JSON)
        elif fate == "copy" and child is not None:
            patch[key] = copy.deepcopy(child)
    patch.update(draw(st.dictionaries(KEYS, st.one_of(st.none(), JSON), max_size=2)))
    return dict(draw(st.permutations(list(patch.items()))))


MERGES = st.one_of(st.dictionaries(KEYS, JSON, max_size=5), JSON).flatmap(
    lambda old: st.tuples(st.just(old), merge_patch_for(old))
)


def same_changes(got: list[Change], expected: list[Change]) -> bool:
    """Equal lists of changes, values compared with JSON types (``1`` is not ``1.0``)."""
    return len(got) == len(expected) and all(
        (a.path, a.op) == (b.path, b.op)
        and strictly_equal(a.old, b.old)
        and strictly_equal(a.new, b.new)
        for a, b in zip(got, expected, strict=True)
    )


@PROPERTY_SETTINGS
@given(MERGES, st.sampled_from(["id", None]))
def test_the_diff_of_a_merge_from_its_patch_is_the_full_diff(
    case: tuple[Any, Any], identity_key: str | None
) -> None:
    old, patch = case
    new = merge_patch(old, patch)

    assert same_changes(
        diff_merge(old, patch, new, identity_key), diff_states(old, new, identity_key)
    )


@PROPERTY_SETTINGS
@given(
    st.dictionaries(KEYS, JSON, max_size=5).flatmap(
        lambda old: st.tuples(st.just(old), merge_patch_for(old), merge_patch_for(old))
    ),
    st.booleans(),
)
def test_diff_steps_of_folded_merges_is_the_full_diff(
    case: tuple[Any, Any, Any], provenance: bool
) -> None:
    """The fold's steps take the patch's path (with and without provenance, whose merge
    is a separate function), and give what comparing whole states gives."""
    initial, first, second = case
    events = [
        ("USER_CREATED", initial),
        ("USER_UPDATED", first),
        ("USER_UPDATED", second),
        ("USER_DELETED", {}),
        ("USER_UPDATED", first),
    ]
    steps = list(fold_events(make_events(events), provenance=provenance))
    for before, after in itertools.pairwise(steps):
        expected = diff_states(before.state, after.state)
        if before.exists and not after.exists:
            expected.append(Change("", "remove", after.state, MISSING))
        if after.last_event.event_type == "USER_UPDATED" and isinstance(before.state, dict):
            assert after.merge_base is before.state  # the fast path is the one tested
        assert same_changes(diff_steps(before, after), expected)


def make_events(types_and_payloads: list[tuple[str, Any]]) -> list[Event]:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    return [
        Event(f"e{n}", n + 1, "r1", event_type, payload, {}, start + timedelta(seconds=n))
        for n, (event_type, payload) in enumerate(types_and_payloads)
    ]


# --- type strictness ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (1, 1.0),
        (1, True),
        (1.0, True),
        (0, False),
        (0, None),
        ("1", 1),
        ([1], [1.0]),
        # Inside array items, where an item equal in Python is checked for types at once.
        ([[1]], [[1.0]]),
        ([{"a": 1}], [{"a": True}]),
        ([{"id": "x", "n": {"m": [0]}}], [{"id": "x", "n": {"m": [False]}}]),
        ([{"id": "x"}, {"id": "y", "n": 2}], [{"id": "y", "n": 2.0}, {"id": "x"}]),
    ],
)
def test_numbers_equal_in_python_but_not_in_json_are_changes(old: Any, new: Any) -> None:
    changes = diff_states({"v": old}, {"v": new})

    assert changes, f"{old!r} -> {new!r} must be reported"
    assert strictly_equal(apply_patch({"v": old}, changes), {"v": new})
    assert not json_equal(old, new)


def test_identities_of_different_json_types_are_different_items() -> None:
    old = {"items": [{"id": 1, "n": "int"}]}
    new = {"items": [{"id": 1, "n": "int"}, {"id": 1.0, "n": "float"}, {"id": True, "n": "bool"}]}

    changes = diff_states(old, new)

    assert [(change.op, change.path) for change in changes] == [
        ("add", "/items/1"),
        ("add", "/items/2"),
    ]
    assert strictly_equal(apply_patch(old, changes), new)


# --- objects ------------------------------------------------------------------------------


def test_nested_objects_recurse_to_the_changed_fields() -> None:
    old = {"name": "Ada", "address": {"city": "Paris", "zip": "75001"}, "tags": ["a"]}
    new = {"name": "Ada", "address": {"city": "Lyon"}, "tags": ["a"], "email": "a@x.org"}

    assert diff_states(old, new) == [
        Change("/address/city", "replace", "Paris", "Lyon"),
        Change("/address/zip", "remove", "75001", MISSING),
        Change("/email", "add", MISSING, "a@x.org"),
    ]


def test_paths_escape_slash_and_tilde_per_rfc_6901() -> None:
    changes = diff_states({"a/b": 1, "m~n": {"~1": 1}}, {"a/b": 2, "m~n": {"~1": 2}})

    assert [change.path for change in changes] == ["/a~1b", "/m~0n/~01"]
    assert [resolve_pointer({"a/b": 2, "m~n": {"~1": 2}}, c.path) for c in changes] == [2, 2]


def test_a_change_of_type_is_one_replace() -> None:
    assert diff_states({"a": {"b": 1}}, {"a": [1]}) == [
        Change("/a", "replace", {"b": 1}, [1]),
    ]
    assert diff_states({"a": 1}, ["a"]) == [Change("", "replace", {"a": 1}, ["a"])]


# --- arrays -------------------------------------------------------------------------------


def test_positional_arrays_remove_trailing_items_from_the_end() -> None:
    old = {"xs": [1, 2, 3, 4]}
    new = {"xs": [1, 9]}

    changes = diff_states(old, new)

    assert changes == [
        Change("/xs/1", "replace", 2, 9),
        Change("/xs/3", "remove", 4, MISSING),
        Change("/xs/2", "remove", 3, MISSING),
    ]
    assert strictly_equal(apply_patch(old, changes), new)


def test_positional_arrays_append_in_ascending_order() -> None:
    changes = diff_states([1], [1, 2, 3])

    assert changes == [Change("/1", "add", MISSING, 2), Change("/2", "add", MISSING, 3)]


def test_keyed_array_insert_at_front_is_one_add() -> None:
    old = {"items": [{"id": 1, "qty": 1}, {"id": 2, "qty": 2}]}
    new = {"items": [{"id": 0, "qty": 5}, {"id": 1, "qty": 1}, {"id": 2, "qty": 2}]}

    changes = diff_states(old, new)

    assert changes == [Change("/items/0", "add", MISSING, {"id": 0, "qty": 5})]
    assert strictly_equal(apply_patch(old, changes), new)


def test_keyed_item_changed_in_place_is_a_change_inside_it_at_its_new_index() -> None:
    old = {"items": [{"id": "a", "qty": 1}, {"id": "b", "qty": 2}, {"id": "c", "qty": 3}]}
    new = {"items": [{"id": "b", "qty": 2}, {"id": "c", "qty": 4, "note": "rush"}]}

    changes = diff_states(old, new)

    assert changes == [
        Change("/items/0", "remove", {"id": "a", "qty": 1}, MISSING),
        Change("/items/1/qty", "replace", 3, 4),
        Change("/items/1/note", "add", MISSING, "rush"),
    ]
    assert strictly_equal(apply_patch(old, changes), new)


def test_keyed_removals_go_from_the_highest_old_index_and_additions_ascend() -> None:
    old = [{"id": n} for n in range(6)]
    new = [{"id": 10}, {"id": 1}, {"id": 11}, {"id": 3}, {"id": 12}]

    changes = diff_states(old, new)

    assert [(change.op, change.path) for change in changes] == [
        ("remove", "/5"),
        ("remove", "/4"),
        ("remove", "/2"),
        ("remove", "/0"),
        ("add", "/0"),
        ("add", "/2"),
        ("add", "/4"),
    ]
    assert strictly_equal(apply_patch(old, changes), new)


def test_reordered_keyed_array_is_replaced_whole_in_the_patch_but_itemised_in_the_diff() -> None:
    old = {"items": [{"id": 1, "qty": 1}, {"id": 2, "qty": 2}, {"id": 3, "qty": 3}]}
    new = {"items": [{"id": 3, "qty": 3}, {"id": 1, "qty": 7}]}

    changes = diff_states(old, new)

    assert changes == [
        Change("/items", "replace", old["items"], new["items"]),
        Change("/items/1", "remove", {"id": 2, "qty": 2}, MISSING),
        Change("/items/1/qty", "replace", 1, 7),
    ]
    assert to_json_patch(changes) == [{"op": "replace", "path": "/items", "value": new["items"]}]
    assert strictly_equal(apply_patch(old, changes), new)


@pytest.mark.parametrize(
    "old",
    [
        [{"id": 1}, {"id": 1}],  # duplicate identity
        [{"id": 1}, {"other": 2}],  # an item without the key
        [{"id": [1]}, {"id": 2}],  # an identity that is not a scalar
        [{"id": 1}, 2],  # an item that is not an object
    ],
)
def test_arrays_without_usable_identities_are_positional(old: list[Any]) -> None:
    new = [{"id": 9}, *old]

    changes = diff_states(old, new)

    # Matched by identity this would be one "add" at /0; by position item 0 changes.
    assert changes[0].path.startswith("/0")
    assert changes[0].op == "replace"
    assert strictly_equal(apply_patch(old, changes), new)


def test_identity_key_can_be_changed_or_switched_off() -> None:
    old = [{"sku": "A", "qty": 1}]
    new = [{"sku": "B", "qty": 1}, {"sku": "A", "qty": 2}]

    assert [change.path for change in diff_states(old, new, identity_key="sku")] == [
        "/0",
        "/1/qty",
    ]
    assert [change.path for change in diff_states(old, new, identity_key=None)] == [
        "/0/sku",
        "/1",
    ]


# --- JSON output --------------------------------------------------------------------------


def test_change_json_sets_the_absent_side_to_null() -> None:
    assert Change("/a", "add", MISSING, 1).to_json() == {
        "path": "/a",
        "op": "add",
        "old": None,
        "new": 1,
    }
    assert Change("/a", "remove", 1, MISSING).to_json() == {
        "path": "/a",
        "op": "remove",
        "old": 1,
        "new": None,
    }
    assert Change("/a", "replace", None, 0).to_json()["old"] is None
    json.dumps([change.to_json() for change in diff_states({"a": 1}, {"b": None})])


def test_patch_skips_changes_inside_a_value_it_already_wrote() -> None:
    changes = [
        Change("/a", "replace", 1, {"b": 2}),
        Change("/a/b", "add", MISSING, 2),
        Change("/ab", "add", MISSING, 3),
    ]

    assert to_json_patch(changes) == [
        {"op": "replace", "path": "/a", "value": {"b": 2}},
        {"op": "add", "path": "/ab", "value": 3},
    ]


def test_record_deletion_is_a_root_remove_with_no_patch_operation() -> None:
    # RFC 6902 cannot remove the whole document (jsonpatch refuses it); a deleted record
    # is shown as its last state, flagged deleted, so its patch leaves the document as is.
    assert diff_states({"a": 1}, MISSING) == [Change("", "remove", {"a": 1}, MISSING)]
    assert to_json_patch(diff_states({"a": 1}, MISSING)) == []


# --- JSON Pointer helpers -------------------------------------------------------------

# RFC 6901 section 5.
RFC6901_DOCUMENT = {
    "foo": ["bar", "baz"],
    "": 0,
    "a/b": 1,
    "c%d": 2,
    "e^f": 3,
    "g|h": 4,
    "i\\j": 5,
    'k"l': 6,
    " ": 7,
    "m~n": 8,
}


@pytest.mark.parametrize(
    ("pointer", "expected"),
    [
        ("", RFC6901_DOCUMENT),
        ("/foo", ["bar", "baz"]),
        ("/foo/0", "bar"),
        ("/", 0),
        ("/a~1b", 1),
        ("/c%d", 2),
        ("/e^f", 3),
        ("/g|h", 4),
        ("/i\\j", 5),
        ('/k"l', 6),
        ("/ ", 7),
        ("/m~0n", 8),
    ],
)
def test_resolve_pointer_follows_rfc_6901_examples(pointer: str, expected: Any) -> None:
    assert resolve_pointer(RFC6901_DOCUMENT, pointer) == expected


@pytest.mark.parametrize(
    ("token", "escaped"),
    [("a/b", "a~1b"), ("m~n", "m~0n"), ("~1", "~01"), ("/~", "~1~0"), ("", ""), (3, "3")],
)
def test_escape_and_unescape_token(token: str | int, escaped: str) -> None:
    assert escape_token(token) == escaped
    assert unescape_token(escaped) == str(token)


def test_join_pointer_extends_a_base() -> None:
    assert join_pointer("", "items", 0, "a/b") == "/items/0/a~1b"
    assert join_pointer("/items", 2) == "/items/2"


@pytest.mark.parametrize("pointer", ["foo", "/a~2b", "/a~", "#/foo"])
def test_malformed_pointers_raise_pointer_error(pointer: str) -> None:
    with pytest.raises(PointerError) as raised:
        split_pointer(pointer)
    assert not isinstance(raised.value, PointerNotFoundError)
    assert repr(pointer) in str(raised.value)


@pytest.mark.parametrize(
    ("pointer", "reason"),
    [
        ("/nope", "no member 'nope'"),
        ("/foo/2", "past the end"),
        ("/foo/-", "after the last"),
        ("/foo/01", "not an array index"),
        ("/foo/x", "not an array index"),
        ("/a~1b/c", "is a number"),
    ],
)
def test_pointers_to_nothing_raise_not_found_with_the_reason(pointer: str, reason: str) -> None:
    with pytest.raises(PointerNotFoundError, match=reason):
        resolve_pointer(RFC6901_DOCUMENT, pointer)
    assert lookup_pointer(RFC6901_DOCUMENT, pointer) is MISSING
    assert lookup_pointer(RFC6901_DOCUMENT, pointer, default=None) is None


def test_lookup_pointer_still_rejects_malformed_pointers() -> None:
    with pytest.raises(PointerError):
        lookup_pointer(RFC6901_DOCUMENT, "foo")


# --- side by side (the compare page's unchanged fields) ----------------------------------


def leaf_paths(value: Any, path: str = "") -> list[str]:
    """Leaf pointers in document order: scalars and empty containers, as provenance has."""
    if isinstance(value, dict) and value:
        return [
            p for key, child in value.items() for p in leaf_paths(child, join_pointer(path, key))
        ]
    if isinstance(value, list) and value:
        return [
            p
            for index, child in enumerate(value)
            for p in leaf_paths(child, join_pointer(path, index))
        ]
    return [path]


def related(a: str, b: str) -> bool:
    """Whether one pointer is the other or under it."""
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


@PROPERTY_SETTINGS
@given(PAIRS)
def test_side_by_side_shows_every_change_once_and_only_untouched_leaves(pair):
    old, new = pair
    changes = diff_states(old, new, identity_key=None)
    leaves = leaf_paths(new)
    items = list(side_by_side(changes, leaves))
    yielded = [item for item in items if isinstance(item, Change)]
    unchanged = [item for item in items if isinstance(item, str)]
    assert sorted(map(id, yielded)) == sorted(map(id, changes))
    whole = any(change.path == "" for change in changes)
    for leaf in leaves:
        touched = whole or any(related(leaf, change.path) for change in changes if change.path)
        assert (leaf in unchanged) != touched, leaf
    for leaf in unchanged:
        assert json_equal(lookup_pointer(old, leaf), lookup_pointer(new, leaf))
    assert unchanged == [leaf for leaf in leaves if leaf in unchanged]  # document order


def test_side_by_side_places_changes_among_the_fields_and_bounds_the_rest():
    old = {"name": "Ada", "street": "Nørregade 4", "tags": ["a", "b"], "zip": "1165", "gone": 1}
    new = {"name": "Ada", "street": "Nørregade 86", "tags": [], "zip": "1165"}
    changes = diff_states(old, new)
    rows = [
        item.path if isinstance(item, Change) else ("=", item)
        for item in side_by_side(changes, leaf_paths(new))
    ]
    # The changes stand where their fields stand; a removed field follows the last leaf.
    assert rows == [("=", "/name"), "/street", "/tags/1", "/tags/0", ("=", "/zip"), "/gone"]
    # Every change is shown whatever the limit on unchanged fields.
    limited = list(side_by_side(changes, leaf_paths(new), unchanged_limit=0))
    assert all(isinstance(item, Change) for item in limited) and len(limited) == len(changes)
    # A record deleted keeps its fields; a whole document replaced has none unchanged.
    deleted = [Change("", "remove", new, MISSING)]
    assert list(side_by_side(deleted, leaf_paths(new)))[1:] == leaf_paths(new)
    replaced = [Change("", "replace", [1], new)]
    assert list(side_by_side(replaced, leaf_paths(new))) == replaced
