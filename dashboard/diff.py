"""Field-level diff of two JSON values, and the same diff as an RFC 6902 JSON Patch.

"What did this event change?" is answered by diffing reconstructed states, so the diff has
to be precise enough for an auditor:

- Paths are RFC 6901 JSON Pointers (``/address/city``, ``/items/2/qty``), the same syntax
  as provenance keys and the JSON Patch.
- Values compare by JSON type as well as value: ``1``, ``1.0`` and ``true`` are different
  (Python's ``1 == 1.0 == True`` would hide a real change of type in the payload).
- Arrays of objects that all carry a unique identity key (default ``"id"``) on both sides
  are matched by that key, so inserting an item at the front reports one ``add``, not a
  change in every item after it; a changed item is reported as changes *inside* it,
  addressed at its index in the new array. Other arrays are compared position by position.
- :func:`to_json_patch` turns the changes into RFC 6902 operations that, applied in order
  to the old value, give the new one (tests check this against the ``jsonpatch`` reference
  implementation).

Order of changes, which is what makes the patch apply: inside an object, removals and
in-place changes in the old key order, then additions. Inside a positional array,
in-place changes, then additions at ascending indices, then trailing removals from the end
backwards. Inside a keyed array whose surviving items keep their relative order:
removals at their *old* indices from the highest down, then additions at their *new*
indices ascending, then the changes inside surviving items at their new indices — after
the first two steps every surviving item sits at its new index. When the surviving items
were *reordered* no sequence of add/remove/replace at item level expresses the move, so the
array is first reported as one ``replace`` of the whole array (what the patch uses) and the
item-level removals, additions and changes follow for the reader; :func:`to_json_patch`
skips any change nested under an earlier ``add``/``replace`` because that value already
contains it.

In ``Change.to_json`` the absent side is ``null``: ``old`` for an ``add``, ``new`` for a
``remove``; the ``op`` says which side is absent, so this cannot be confused with a real
``null`` value (which only ``replace`` carries on both sides).

States passed in are shared with the fold (structural sharing), so the diff never copies
or mutates them; identical subtrees (``old is new``) are skipped at once, which keeps a diff
between consecutive states proportional to what changed, not to the state's size.

This module is pure: no Flask, no database.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from .budget import check_budget
from .jsonpointer import MISSING, escape_token

__all__ = [
    "MISSING",
    "Change",
    "ChangeOp",
    "diff_merge",
    "diff_states",
    "json_equal",
    "side_by_side",
    "to_json_patch",
]

ChangeOp = Literal["add", "remove", "replace"]

# Exact types of JSON scalars as decoded by json/psycopg; other types take the slow path.
_SCALAR_TYPES = frozenset({str, int, float, bool, type(None)})
_OBJECT_TYPES = frozenset({dict})


@dataclass(frozen=True, slots=True)
class Change:
    """One difference at ``path``; ``old`` is MISSING for ``add``, ``new`` for ``remove``."""

    path: str
    op: ChangeOp
    old: Any
    new: Any

    def to_json(self) -> dict[str, Any]:
        """``{"path", "op", "old", "new"}``; the absent side (see ``op``) is ``null``."""
        return {
            "path": self.path,
            "op": self.op,
            "old": None if self.old is MISSING else self.old,
            "new": None if self.new is MISSING else self.new,
        }


# Diffing a long history creates a Change for every changed field; a frozen dataclass's
# __init__ (object.__setattr__ per field) would be a fifth of that work, so the diff fills
# the slots directly. The instances are ordinary frozen Changes.
_set_path = Change.__dict__["path"].__set__
_set_op = Change.__dict__["op"].__set__
_set_old = Change.__dict__["old"].__set__
_set_new = Change.__dict__["new"].__set__


def _change(path: str, op: ChangeOp, old: Any, new: Any) -> Change:
    change = object.__new__(Change)
    _set_path(change, path)
    _set_op(change, op)
    _set_old(change, old)
    _set_new(change, new)
    return change


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values that respects JSON types: ``1``, ``1.0`` and ``true`` differ.

    Objects compare without regard to key order, arrays element by element.
    :data:`MISSING` equals only itself.
    """
    if a is b:
        return True
    a_type = type(a)
    if a_type is type(b) and (a_type is dict or a_type is list):
        return a == b and _same_types(a, b)  # C-speed ==, then only the types
    if isinstance(a, dict):
        if not isinstance(b, dict) or len(a) != len(b):
            return False
        for key, value in a.items():
            other = b.get(key, MISSING)
            if other is MISSING or not json_equal(value, other):
                return False
        return True
    if isinstance(a, list):
        if not isinstance(b, list) or len(a) != len(b):
            return False
        return all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if _scalar_kind(a) is not _scalar_kind(b):
        return False
    return a == b


def diff_states(old: Any, new: Any, identity_key: str | None = "id") -> list[Change]:
    """The changes that turn ``old`` into ``new``, in an order a JSON Patch can follow.

    Either side may be :data:`MISSING` (a record that does not exist): the result is then
    a single ``add`` or ``remove`` at the root path ``""`` (the patch of a root ``remove``
    is empty; see :func:`to_json_patch`). ``identity_key=None`` compares
    every array by position. ``diff_states(a, a) == []``.
    """
    check_budget()
    changes: list[Change] = []
    if type(old) is dict and type(new) is dict:  # the usual state: straight to the members
        if old is not new:
            _diff_objects(changes, "", old, new, identity_key)
    else:
        _diff_into(changes, "", old, new, identity_key)
    return changes


def diff_merge(old: Any, patch: Any, new: Any, identity_key: str | None = "id") -> list[Change]:
    """``diff_states(old, new)`` when ``new`` is ``old`` with the RFC 7396 merge ``patch``
    applied (:func:`dashboard.replay.merge_patch`), visiting only the paths the patch names.

    A merge patch says which members it touched: every other member of ``new`` is the very
    object it was in ``old`` (structural sharing), so it has no change and need not be
    looked at. The result, order included, is that of :func:`diff_states` (a property test
    checks it on random documents and patches), at a cost that follows the patch, not the
    state: a 10,000-event history whose events each touch one field of a wide record is
    diffed without walking the record 10,000 times.

    Only valid for that ``new``: a ``new`` built any other way must go to
    :func:`diff_states`. Where the patch writes a value wholesale (a scalar, an array, an
    object in place of a non-object) that value is diffed in full.
    """
    check_budget()
    changes: list[Change] = []
    if type(old) is dict and type(new) is dict and type(patch) is dict:
        if old is not new:
            _diff_merged_objects(changes, "", old, patch, new, identity_key)
    else:
        _diff_into(changes, "", old, new, identity_key)
    return changes


def _diff_merged_objects(
    changes: list[Change], path: str, old: dict, patch: dict, new: dict, identity_key
) -> None:
    """:func:`_diff_objects` of ``old`` and ``new = merge_patch(old, patch)``, over the
    patch's members only, in the same order: removals and in-place changes in ``old``'s key
    order, then additions in ``new``'s (a merge appends added members in patch order)."""
    if len(patch) == 1:  # the usual event: one member
        present = [key for key in patch if key in old]
    else:
        # The members both name, in old's order: one pass over old's keys, as the merge
        # made one to copy old.
        present = [key for key in old if key in patch]
    for key in present:
        old_value = old[key]
        new_value = new.get(key, MISSING)
        if new_value is old_value:
            continue
        if new_value is MISSING:
            changes.append(_change(f"{path}/{escape_token(key)}", "remove", old_value, MISSING))
            continue
        value_type = type(old_value)
        if value_type is type(new_value) and value_type in _SCALAR_TYPES:
            if old_value != new_value:
                changes.append(
                    _change(f"{path}/{escape_token(key)}", "replace", old_value, new_value)
                )
            continue
        member_patch = patch[key]
        if value_type is dict and type(new_value) is dict and type(member_patch) is dict:
            _diff_merged_objects(
                changes,
                f"{path}/{escape_token(key)}",
                old_value,
                member_patch,
                new_value,
                identity_key,
            )
        else:
            _diff_present(
                changes, f"{path}/{escape_token(key)}", old_value, new_value, identity_key
            )
    if len(present) == len(patch):
        return  # every member the patch names was already there: nothing was added
    for key in patch:
        if key not in old and key in new:
            changes.append(_change(f"{path}/{escape_token(key)}", "add", MISSING, new[key]))


def to_json_patch(changes: list[Change]) -> list[dict[str, Any]]:
    """RFC 6902 operations equivalent to ``changes`` (as produced by :func:`diff_states`).

    Each change maps to one ``add`` / ``remove`` / ``replace`` operation, except that a
    change nested under an earlier ``add`` or ``replace`` is dropped: that earlier value is
    already the final one (this is how a reordered keyed array becomes one ``replace``).
    Operation values are shared with the states, not copied; treat them as read-only.

    A root ``remove`` (the record was deleted) has no operation. RFC 6902 cannot express
    "no document" (reference implementations refuse ``{"op": "remove", "path": ""}``), and
    the dashboard does not need it: a deleted record is shown as its last state, flagged
    ``deleted`` (the state API's representation), so deleting changes no value
    (:func:`dashboard.replay.diff_steps`).
    """
    operations: list[dict[str, Any]] = []
    written: set[str] = set()
    for change in changes:
        if written and _is_under_any(change.path, written):
            continue
        if change.op == "remove" and change.path == "":
            continue
        if change.op == "remove":
            operations.append({"op": "remove", "path": change.path})
        else:
            operations.append({"op": change.op, "path": change.path, "value": change.new})
            written.add(change.path)
    return operations


def side_by_side(
    changes: Iterable[Change], leaves: Iterable[str], unchanged_limit: int | None = None
) -> Iterator[Change | str]:
    """The changes interleaved with the unchanged leaves, for showing two states side by
    side: each change, and each leaf path (a ``str``) that no change touches.

    ``leaves`` are the leaf pointers of the newer state in document order (provenance
    order). A leaf is touched by a change at, above or below its path; the change is
    yielded where its first touched leaf stands, so the rows read in the document's order.
    Changes at the root come first: a root ``remove`` (the record was deleted; its last
    state is still shown) leaves the fields as they were, a root ``add`` or ``replace``
    touches every leaf. Changes that touch no leaf of the newer state (removals) follow
    the last leaf. An unchanged leaf has the same value at its path in both states when
    arrays are compared by position; in an array matched by identity key it is the same
    item's unchanged value, which may have moved (the path is the newer state's). At most
    ``unchanged_limit`` unchanged leaves are yielded (a state of 100,000 leaves is shown a
    part at a time); every change is yielded whatever the limit.
    """
    pending: dict[str, list[Change]] = {}
    ancestors: set[str] = set()  # proper ancestors of the changed paths
    whole = False  # the whole document was added or replaced: no leaf is unchanged
    for change in changes:
        if change.path == "":
            yield change
            whole = whole or change.op != "remove"
            continue
        pending.setdefault(change.path, []).append(change)
        path = change.path
        while path:
            path = path[: path.rfind("/")]
            ancestors.add(path)
    yielded: set[str] = set()
    shown = 0
    for leaf in () if whole else leaves:
        check_budget()
        touched: list[Change] = []
        covered = False
        path = leaf
        while path:  # the leaf and its ancestors: a change at or above it
            if path in pending:
                touched.extend(pending.pop(path))
                yielded.add(path)
            covered = covered or path in yielded
            path = path[: path.rfind("/")]
        if leaf in ancestors:  # changes below it: an object or array emptied by removals
            below = [path for path in pending if path.startswith(leaf + "/")]
            for path in below:
                touched.extend(pending.pop(path))
                yielded.add(path)
            covered = True
        if touched:
            yield from touched
        elif not covered:
            if unchanged_limit is not None and shown >= unchanged_limit:
                if not pending:
                    return
                continue
            shown += 1
            yield leaf
    for rest in pending.values():
        yield from rest


def _is_under_any(path: str, ancestors: set[str]) -> bool:
    """Whether a proper ancestor of ``path`` is in ``ancestors``; O(depth), not O(len)."""
    while path:
        path = path[: path.rfind("/")]
        if path in ancestors:
            return True
    return False


def _scalar_kind(value: Any) -> type:
    """The JSON type of a scalar: bool is not a number, an int is not a float."""
    if isinstance(value, bool):
        return bool
    if isinstance(value, int):
        return int
    if isinstance(value, float):
        return float
    if isinstance(value, str):
        return str
    return type(value)


def _diff_into(changes: list[Change], path: str, old: Any, new: Any, identity_key: str | None):
    if old is new:
        return
    if old is MISSING:
        changes.append(_change(path, "add", MISSING, new))
    elif new is MISSING:
        changes.append(_change(path, "remove", old, MISSING))
    else:
        _diff_present(changes, path, old, new, identity_key)


def _diff_present(changes: list[Change], path: str, old: Any, new: Any, identity_key: str | None):
    """Diff two present values (neither is MISSING)."""
    old_type = type(old)
    if old_type is type(new):
        if old_type is dict:
            _diff_objects(changes, path, old, new, identity_key)
        elif old_type is list:
            _diff_arrays(changes, path, old, new, identity_key)
        elif old_type in _SCALAR_TYPES:
            if old != new:
                changes.append(_change(path, "replace", old, new))
        elif not json_equal(old, new):
            changes.append(_change(path, "replace", old, new))
    elif isinstance(old, dict) and isinstance(new, dict):
        _diff_objects(changes, path, old, new, identity_key)
    elif isinstance(old, list) and isinstance(new, list):
        _diff_arrays(changes, path, old, new, identity_key)
    elif not json_equal(old, new):
        changes.append(_change(path, "replace", old, new))


def _unchanged(old_item: Any, new_item: Any) -> bool:
    """Fast check for an array element that did not change.

    A merge replaces an array wholesale with freshly decoded items, most of them equal to
    the old ones: C-speed ``==`` settles those, and then only their leaves' types are
    checked. This is most of the work of diffing a long history, so it is kept tight.
    """
    if old_item is new_item:
        return True
    item_type = type(old_item)
    if item_type is not type(new_item):
        return False
    if item_type in _SCALAR_TYPES:
        return old_item == new_item
    return old_item == new_item and (
        _same_types(old_item, new_item)
        if item_type is dict or item_type is list
        else json_equal(old_item, new_item)
    )


# Subclasses of str/int/dict/list and the non-JSON types orjson knows (datetime,
# dataclass) raise instead of printing like a plain value, so they take the exact walk.
_PRINT_OPTIONS: Final = (
    orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)


def _same_types(old: dict | list, new: dict | list) -> bool:
    """Given ``old == new``, whether every leaf also has the same JSON type.

    First in C: two values equal in Python print the same compact JSON exactly when their
    leaves have the same types, keys in the same order (``1``, ``1.0`` and ``true`` print
    differently; the one case where different values print alike, NaN or infinity beside
    null, is not ``==``). Values that print differently (keys in another order, ``-0.0``)
    or cannot be printed by orjson (integers past 64 bits, lone surrogates) take the
    exact walk, :func:`_same_leaf_types`.
    """
    try:
        if orjson.dumps(old, option=_PRINT_OPTIONS) == orjson.dumps(new, option=_PRINT_OPTIONS):
            return True
    except TypeError:  # orjson.JSONEncodeError
        pass
    return _same_leaf_types(old, new)


def _same_leaf_types(old: dict | list, new: dict | list) -> bool:
    """Given ``old == new`` (so the same shape and keys), whether every leaf also has the
    same JSON type — the part of :func:`json_equal` that Python's ``==`` skips.

    Written as one loop with the scalar case inline: it runs for every unchanged item of
    every array a merge replaces, which is most of the work of diffing a long history.
    """
    pairs = old.items() if type(old) is dict or isinstance(old, dict) else enumerate(old)
    for key, value in pairs:
        other = new[key]
        if value is other:
            continue
        value_type = type(value)
        if value_type is not type(other):
            return False
        if value_type in _SCALAR_TYPES:
            continue
        if value_type is dict:
            # One level of objects inline (an item's small object of options or flags):
            # a call per nested object was a fifth of this function's time.
            for inner_key, inner in value.items():
                inner_other = other[inner_key]
                inner_type = type(inner)
                if inner_type is not type(inner_other):
                    return False
                if inner_type in _SCALAR_TYPES or inner is inner_other:
                    continue
                if inner_type is dict or inner_type is list:
                    if not _same_leaf_types(inner, inner_other):
                        return False
                elif not json_equal(inner, inner_other):
                    return False
        elif value_type is list:
            if not _same_leaf_types(value, other):
                return False
        elif not json_equal(value, other):
            return False
    return True


def _diff_objects(changes: list[Change], path: str, old: dict, new: dict, identity_key):
    removed = 0
    for key, old_value in old.items():
        new_value = new.get(key, MISSING)
        if new_value is old_value:
            continue
        if new_value is MISSING:
            removed += 1
            changes.append(_change(f"{path}/{escape_token(key)}", "remove", old_value, MISSING))
            continue
        value_type = type(old_value)
        if value_type is type(new_value) and value_type in _SCALAR_TYPES:
            # Same exact scalar type, so == is type-strict; no path is built unless needed.
            if old_value != new_value:
                changes.append(
                    _change(f"{path}/{escape_token(key)}", "replace", old_value, new_value)
                )
            continue
        _diff_present(changes, f"{path}/{escape_token(key)}", old_value, new_value, identity_key)
    if len(new) == len(old) - removed:
        return  # every key of new is also in old: nothing was added
    for key, new_value in new.items():
        if key not in old:
            changes.append(_change(f"{path}/{escape_token(key)}", "add", MISSING, new_value))


def _diff_arrays(changes: list[Change], path: str, old: list, new: list, identity_key):
    if identity_key is not None:
        keys = _identity_keys(old, new, identity_key)
        if keys is _SAME_ORDER:
            # Every item kept its place: matching by identity pairs item i with item i,
            # which is what the positional diff does (and it needs no index of either).
            _diff_positional_arrays(changes, path, old, new, identity_key)
            return
        if keys is not None:
            _diff_keyed_arrays(changes, path, old, new, *keys, identity_key)
            return
    _diff_positional_arrays(changes, path, old, new, identity_key)


_SAME_ORDER: Final = object()  # _identity_keys: the same identities in the same order


def _identity_keys(
    old: list, new: list, identity_key: str
) -> tuple[dict[Any, int], dict[Any, int]] | object | None:
    """``(identity → old index, identity → new index)``, or ``None`` for "compare these
    arrays by position": some item is not an object, lacks the key, has a non-scalar
    identity, or shares its identity with another item of the same array; or
    :data:`_SAME_ORDER` when both list the same identities in the same order (the
    position is then the identity, duplicates or not).

    Identities are typed, so ``{"id": 1}``, ``{"id": 1.0}`` and ``{"id": true}`` are three
    different items, as everywhere else in this module; when both arrays use one scalar
    type (the usual case) the raw values already are typed keys.
    """
    plain = _OBJECT_TYPES.issuperset(map(type, old)) and _OBJECT_TYPES.issuperset(map(type, new))
    if not plain and not all(isinstance(item, dict) for item in itertools.chain(old, new)):
        return None  # an item that is not a JSON object (a mapping that is not a dict)
    get_identity = operator.itemgetter(identity_key)
    try:
        old_values = list(map(get_identity, old))
        new_values = list(map(get_identity, new))
    except KeyError:
        return None  # an item without the key
    types = set(map(type, old_values))
    types.update(map(type, new_values))
    if not types <= _SCALAR_TYPES:
        return None
    if len(types) == 1 and old_values == new_values:
        return _SAME_ORDER  # one identity type, so == is type-strict here
    if len(types) > 1:
        old_values = list(zip(map(type, old_values), old_values, strict=True))
        new_values = list(zip(map(type, new_values), new_values, strict=True))
    old_index = dict(zip(old_values, range(len(old_values)), strict=True))
    new_index = dict(zip(new_values, range(len(new_values)), strict=True))
    if len(old_index) != len(old_values) or len(new_index) != len(new_values):
        return None  # duplicate identities
    return old_index, new_index


def _diff_keyed_arrays(
    changes: list[Change],
    path: str,
    old: list,
    new: list,
    old_index: dict[Any, int],
    new_index: dict[Any, int],
    identity_key: str,
):
    # (new index, old index) of every item present on both sides, in new order.
    old_positions = list(map(old_index.get, new_index))  # None for an added item
    if None in old_positions:
        survivors = [
            (index, position)
            for index, position in enumerate(old_positions)
            if position is not None
        ]
        old_positions = [position for _index, position in survivors]
    else:
        survivors = list(enumerate(old_positions))
    reordered = old_positions != sorted(old_positions)
    if reordered:
        # No add/remove/replace sequence at item level moves an item; the patch replaces
        # the whole array and the item-level changes below are for the reader.
        changes.append(_change(path, "replace", old, new))
    if len(survivors) != len(old):
        removed = sorted(
            (index for identity, index in old_index.items() if identity not in new_index),
            reverse=True,
        )
        for index in removed:
            changes.append(_change(f"{path}/{index}", "remove", old[index], MISSING))
    if len(survivors) != len(new):
        for identity, index in new_index.items():  # dicts keep insertion (= index) order
            if identity not in old_index:
                changes.append(_change(f"{path}/{index}", "add", MISSING, new[index]))
    for new_position, old_position in survivors:
        old_item = old[old_position]
        new_item = new[new_position]
        # _unchanged inlined (items are objects here): this runs for every item of every
        # keyed array a merge replaces.
        if old_item is new_item or (old_item == new_item and _same_types(old_item, new_item)):
            continue
        _diff_objects(changes, f"{path}/{new_position}", old_item, new_item, identity_key)


def _diff_positional_arrays(changes: list[Change], path: str, old: list, new: list, identity_key):
    common = min(len(old), len(new))
    for index in range(common):
        old_item = old[index]
        new_item = new[index]
        if not _unchanged(old_item, new_item):
            _diff_present(changes, f"{path}/{index}", old_item, new_item, identity_key)
    for index in range(common, len(new)):
        changes.append(_change(f"{path}/{index}", "add", MISSING, new[index]))
    # From the end backwards, so each index is still valid when its removal is applied.
    for index in range(len(old) - 1, common - 1, -1):
        changes.append(_change(f"{path}/{index}", "remove", old[index], MISSING))
