"""Rebuild a record's state from its events, with per-field provenance and anomalies.

DESIGN.md, "What an event does to state": events are folded in ``(created_at, seq)``
order; each event's type maps to an action through :mod:`dashboard.rules`:

- ``create``: the payload is the initial state;
- ``merge``: the payload is an RFC 7396 JSON Merge Patch (:func:`merge_patch`);
- ``snapshot``: the payload is the complete new state;
- ``delete``: the record is gone; its last state stays visible, marked ``deleted``.

Real audit trails are not always tidy, so the fold never refuses an event; it records an
*anomaly* on the step instead and carries on:

- ``update before create``: a merge or snapshot for a record never created. The record is
  taken to exist from then on (updates were evidently being made to it).
- ``update after delete``: a merge or snapshot after a delete. It is applied to the last
  state so the auditor can see what it tried to write; the record stays deleted.
- ``create of an existing record``: a create while the record exists; the payload
  replaces the state. (A create after a delete is a re-creation, not an anomaly.)
- ``delete before create`` and ``delete of a deleted record``.

Scale: a record may have 100,000 events, and a page may want the state after each one.
States are persistent values with *structural sharing*: a merge copies only the objects on
the paths the patch touches and shares every other subtree with the previous state (never
a deep copy), so a fold costs O(size of the patches), and consecutive states can be diffed
cheaply because unchanged subtrees are the same objects. The other side of this: states,
payloads and patches share objects, so nothing here or in callers may mutate them. The
limit: a merge copies each object on its paths, so its cost grows with the width of those
objects (one object of tens of thousands of members, updated a member at a time over a
long history, would make the fold quadratic).

Provenance ("which event last set this field") is kept as a tree that mirrors the state
only as deep as attributions differ: a node is either the :class:`Event` that set that
whole subtree or a dict of child nodes. A create or snapshot makes the whole tree one
event; a merge touches only the nodes on the patch's paths. The flat
``{JSON Pointer of each leaf: Event}`` view is built on demand by
:attr:`AggregateState.provenance`. A field counts as set by a merge that wrote it, even
with the value it already had.

This module is pure: no Flask, no database.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Final

from .budget import check_budget
from .diff import Change, diff_merge, diff_states, json_equal
from .events import Event
from .jsonpointer import MISSING, escape_token, lookup_tokens, split_pointer
from .rules import DEFAULT_RULES, Action, Rule, action_for

__all__ = [
    "CREATE_OF_EXISTING",
    "DELETE_BEFORE_CREATE",
    "DELETE_OF_DELETED",
    "MISSING",
    "UPDATE_AFTER_DELETE",
    "UPDATE_BEFORE_CREATE",
    "AggregateState",
    "FieldChange",
    "FoldStep",
    "apply_event",
    "changes_by_event",
    "diff_steps",
    "field_history",
    "field_history_of_steps",
    "fold_events",
    "merge_patch",
    "sort_events",
    "state_at",
]

UPDATE_BEFORE_CREATE: Final = "update before create"
UPDATE_AFTER_DELETE: Final = "update after delete"
CREATE_OF_EXISTING: Final = "create of an existing record"
DELETE_BEFORE_CREATE: Final = "delete before create"
DELETE_OF_DELETED: Final = "delete of a deleted record"

# A provenance node: the Event that set a whole subtree, a dict of child nodes (only for a
# non-empty object whose members were set by different events), or None (no state yet).
ProvenanceNode = Event | dict[str, "ProvenanceNode"] | None
AnomalyChain = tuple["AnomalyChain", tuple[str, str]] | None


@dataclass(frozen=True, slots=True)
class AggregateState:
    """A record's state after folding ``version`` events, the last being ``last_event``.

    ``state`` is the JSON value (``None`` before any event). ``exists`` is true between a
    create (or a first update) and a delete. ``anomalies`` are those raised by
    ``last_event``; :attr:`anomaly_log` lists ``(event_id, anomaly)`` for every event so
    far, so a state page can warn about its whole history.

    ``anomaly_chain`` and ``provenance_tree`` are the compact, shared forms behind
    :attr:`anomaly_log` and :attr:`provenance`; they take no part in ``==`` and ``repr``
    (both follow from the events folded).
    """

    state: Any
    exists: bool
    deleted: bool
    version: int
    last_event: Event | None
    anomalies: tuple[str, ...] = ()
    # A linked list (earlier chain, (event_id, anomaly)), newest first: appending is O(1)
    # even when every event of a long history is an anomaly (writes to a deleted record).
    anomaly_chain: AnomalyChain = field(default=None, repr=False, compare=False)
    provenance_tree: ProvenanceNode = field(default=None, repr=False, compare=False)
    # The state object ``last_event``'s merge patch was applied to, when it was a merge
    # (None otherwise): :func:`diff_steps` then diffs only what the patch names when the
    # state before is that very object.
    merge_base: Any = field(default=None, repr=False, compare=False)

    @property
    def anomaly_log(self) -> tuple[tuple[str, str], ...]:
        """``(event_id, anomaly)`` for every anomaly so far, oldest first."""
        entries = []
        chain = self.anomaly_chain
        while chain is not None:
            chain, entry = chain
            entries.append(entry)
        return tuple(reversed(entries))

    @classmethod
    def initial(cls) -> AggregateState:
        """Before any event: no state, not existing, version 0."""
        return _INITIAL

    @property
    def provenance(self) -> dict[str, Event]:
        """``{JSON Pointer of each leaf: Event that last set it}``.

        A leaf is a string, number, boolean, null, empty object or empty array; the root
        pointer ``""`` appears only when the whole state is such a leaf. Built in
        O(number of leaves) from :attr:`provenance_tree`.
        """
        return dict(self.iter_provenance())

    def iter_provenance(self, *, whole_arrays: bool = False) -> Iterator[tuple[str, Event]]:
        """``(pointer, Event)`` of :attr:`provenance`, lazily and in the same order: a page
        showing 200 of a state's 100,000 leaves walks only as far as it shows.

        With ``whole_arrays`` a non-empty array is one entry instead of one per leaf inside
        it (the record page summarises it). One event always set a whole array: a merge
        patch (RFC 7396) replaces arrays, never merges into them."""
        if self.provenance_tree is not None:
            yield from _flatten_provenance(self.state, self.provenance_tree, "", whole_arrays)

    def provenance_to_json(self) -> dict[str, dict[str, Any]]:
        """``{pointer: {"event_id", "created_at", "actor"}}`` as the state API returns it."""
        return {
            path: {
                "event_id": event.event_id,
                "created_at": event.created_at.isoformat(),
                "actor": event.actor,
            }
            for path, event in self.provenance.items()
        }


FoldStep = AggregateState
"""Alias: each value :func:`fold_events` yields is the state after one step."""

_INITIAL: Final = AggregateState(
    state=None, exists=False, deleted=False, version=0, last_event=None
)

# The fold builds one AggregateState per event. A frozen dataclass's __init__ sets each
# field through object.__setattr__, which costs as much as applying a small merge; at
# 100,000 events that matters, so _new_state fills the slots directly through their
# descriptors. Callers still get an ordinary frozen instance.
_slot_setters = {
    item.name: AggregateState.__dict__[item.name].__set__ for item in fields(AggregateState)
}
_set_state = _slot_setters["state"]
_set_exists = _slot_setters["exists"]
_set_deleted = _slot_setters["deleted"]
_set_version = _slot_setters["version"]
_set_last_event = _slot_setters["last_event"]
_set_anomalies = _slot_setters["anomalies"]
_set_anomaly_chain = _slot_setters["anomaly_chain"]
_set_provenance_tree = _slot_setters["provenance_tree"]
_set_merge_base = _slot_setters["merge_base"]


def _new_state(
    state: Any,
    exists: bool,
    deleted: bool,
    version: int,
    last_event: Event,
    anomalies: tuple[str, ...],
    anomaly_chain: AnomalyChain,
    provenance_tree: ProvenanceNode,
    merge_base: Any = None,
) -> AggregateState:
    step = object.__new__(AggregateState)
    _set_state(step, state)
    _set_exists(step, exists)
    _set_deleted(step, deleted)
    _set_version(step, version)
    _set_last_event(step, last_event)
    _set_anomalies(step, anomalies)
    _set_anomaly_chain(step, anomaly_chain)
    _set_provenance_tree(step, provenance_tree)
    _set_merge_base(step, merge_base)
    return step


@dataclass(frozen=True, slots=True)
class FieldChange:
    """``event`` changed the value at a pointer from ``old`` to ``new`` (either may be MISSING)."""

    event: Event
    old: Any
    new: Any

    @property
    def op(self) -> str:
        """``add`` (the field appeared), ``remove`` (it vanished) or ``replace``."""
        if self.old is MISSING:
            return "add"
        if self.new is MISSING:
            return "remove"
        return "replace"

    def to_json(self) -> dict[str, Any]:
        """The change with who and when; the absent side is ``null``, as in ``Change``."""
        return {
            "event_id": self.event.event_id,
            "event_type": self.event.event_type,
            "created_at": self.event.created_at.isoformat(),
            "actor": self.event.actor,
            "op": self.op,
            "old": None if self.old is MISSING else self.old,
            "new": None if self.new is MISSING else self.new,
        }


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON Merge Patch, section 2, without mutating ``target`` or ``patch``.

    A non-object patch replaces the target; an object patch turns a non-object (or
    :data:`MISSING`) target into ``{}`` first, removes members whose patch value is
    ``null`` and merges the others recursively. Arrays are replaced, never merged. The
    result shares every untouched subtree with ``target`` and every inserted value with
    ``patch``.
    """
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        elif isinstance(value, dict):
            result[name] = merge_patch(result.get(name, MISSING), value)
        else:  # a value that is not an object replaces: no call to say so (most members)
            result[name] = value
    return result


def sort_events(events: Iterable[Event]) -> list[Event]:
    """Events in replay order, ``(created_at, seq, event_id)`` (see ``Event.order_key``)."""
    return sorted(events, key=_order_key)


def _order_key(event: Event) -> tuple[datetime, int, str]:
    return event.order_key


def apply_event(
    current: AggregateState, event: Event, rules: Sequence[Rule] = DEFAULT_RULES
) -> AggregateState:
    """The state after applying one ``event`` to ``current``."""
    return _apply(current, event, action_for(event.event_type, rules))


def fold_events(
    events: Iterable[Event],
    rules: Sequence[Rule] = DEFAULT_RULES,
    *,
    provenance: bool = True,
    actions: dict[str, Action] | None = None,
    start: AggregateState | None = None,
) -> Iterator[AggregateState]:
    """Lazily yield the state after each event, in the order given.

    The caller decides the order (use :func:`sort_events`), so a page can also replay
    exactly the rows a query returned. Memory stays O(one state) unless the caller keeps
    the steps, which share structure with each other.

    ``provenance=False`` skips the provenance tree (the steps' :attr:`~AggregateState.
    provenance` is then empty), for callers that only want states and diffs: a report
    replaying every record it lists.

    ``actions`` caches each event type's action under ``rules`` (fnmatch per event would
    dominate a long fold); pass one dict to many folds under the same rules (a report
    folds thousands of short histories) to share it.

    ``start`` continues a fold from one of its steps (the events are then those after it):
    a history that keeps only some steps refolds the others from the nearest one kept.
    """
    if actions is None:
        actions = {}
    current = _INITIAL if start is None else start
    for event in events:
        check_budget()
        action = actions.get(event.event_type)
        if action is None:
            action = actions[event.event_type] = action_for(event.event_type, rules)
        current = _apply(current, event, action, provenance)
        yield current


def state_at(
    events: Iterable[Event], at: datetime, rules: Sequence[Rule] = DEFAULT_RULES
) -> AggregateState:
    """The state as of ``at``: the fold of the events with ``created_at <= at``, sorted.

    ``at`` must be timezone-aware (a naive time would silently mean the server's zone).
    With no event at or before ``at`` this is :meth:`AggregateState.initial`.
    """
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"state_at needs a timezone-aware time, got {at.isoformat()}")
    selected = sort_events(event for event in events if event.created_at <= at)
    last = collections.deque(fold_events(selected, rules), maxlen=1)
    return last[0] if last else _INITIAL


def diff_steps(
    before: AggregateState, after: AggregateState, identity_key: str | None = "id"
) -> list[Change]:
    """Changes from one state to another (DESIGN.md: "state-after-A vs state-after-B").

    The documents compared are the states as the state API shows them: a deleted record
    is its last state, flagged ``deleted``. So the RFC 6902 patch of the result
    (:func:`~dashboard.diff.to_json_patch`) applied to ``before.state`` always gives
    ``after.state``, deletes and re-creations included:

    - when the record comes into existence (created, or re-created after a delete) the
      change is one ``add`` of the whole state at ``""``, which RFC 6902 applies to any
      document (section 4.1: adding at the root replaces the document);
    - when it goes out of existence, the states are diffed field by field (nothing, for a
      plain delete) and a ``remove`` at ``""`` carrying the last state follows, so the
      reader sees the deletion; it has no patch operation, because the document shown
      does not change — only the state's ``deleted`` flag does;
    - otherwise (including updates to a deleted record) field by field.
    """
    if after.exists and not before.exists:
        return diff_states(MISSING, after.state, identity_key)
    if after.merge_base is not None and after.merge_base is before.state:
        # ``after`` is ``before`` plus one merge patch: only the patch's paths can differ.
        changes = diff_merge(before.state, after.last_event.payload, after.state, identity_key)
    else:
        changes = diff_states(before.state, after.state, identity_key)
    if before.exists and not after.exists:
        changes.append(Change("", "remove", after.state, MISSING))
    return changes


def changes_by_event(
    events: Iterable[Event],
    rules: Sequence[Rule] = DEFAULT_RULES,
    identity_key: str | None = "id",
    *,
    provenance: bool = True,
) -> Iterator[tuple[AggregateState, list[Change]]]:
    """Lazily yield ``(state after the event, what the event changed)`` for each event
    (``provenance=False``: states without provenance, see :func:`fold_events`)."""
    before = _INITIAL
    for after in fold_events(events, rules, provenance=provenance):
        yield after, diff_steps(before, after, identity_key)
        before = after


def field_history(
    events: Iterable[Event], pointer: str, rules: Sequence[Rule] = DEFAULT_RULES
) -> list[FieldChange]:
    """Every event that changed the value at ``pointer`` ("when did the email change, and
    who changed it"), in fold order. An absent value is :data:`MISSING`; the record's
    creation and deletion count as the field appearing and vanishing.

    Raises :class:`~dashboard.jsonpointer.PointerError` for a malformed pointer.
    """
    return field_history_of_steps(fold_events(events, rules), pointer)


def field_history_of_steps(steps: Iterable[AggregateState], pointer: str) -> list[FieldChange]:
    """:func:`field_history` from states already folded (each step after the one before)."""
    tokens = split_pointer(pointer)
    history: list[FieldChange] = []
    before = _INITIAL
    for after in steps:
        check_budget()
        old_document, new_document = _comparable_documents(before, after)
        old = lookup_tokens(old_document, tokens)
        new = lookup_tokens(new_document, tokens)
        if not json_equal(old, new):
            history.append(FieldChange(after.last_event, old, new))
        before = after
    return history


def _comparable_documents(before: AggregateState, after: AggregateState) -> tuple[Any, Any]:
    """The two documents to diff: a record that does not exist is MISSING only across a
    change of existence, so updates to a deleted record still show what they wrote."""
    if before.exists == after.exists:
        return before.state, after.state
    return (
        before.state if before.exists else MISSING,
        after.state if after.exists else MISSING,
    )


def _apply(
    current: AggregateState, event: Event, action: Action, provenance: bool = True
) -> AggregateState:
    anomaly: str | None = None
    state = current.state
    merge_base = None
    tree = current.provenance_tree
    exists = current.exists
    deleted = current.deleted
    if action == "create":
        if exists:
            anomaly = CREATE_OF_EXISTING
        state, tree, exists, deleted = event.payload, event, True, False
    elif action == "delete":
        if deleted:
            anomaly = DELETE_OF_DELETED
        elif not exists:
            anomaly = DELETE_BEFORE_CREATE
        exists, deleted = False, True
    else:  # merge or snapshot: an update
        if deleted:
            anomaly = UPDATE_AFTER_DELETE
        elif not exists:
            anomaly = UPDATE_BEFORE_CREATE
            exists = True
        if action == "snapshot":
            state, tree = event.payload, event
        else:
            merge_base = state
            if provenance:
                state, tree = _merge_with_provenance(state, event.payload, tree, event)
            else:
                state, tree = merge_patch(state, event.payload), None
    if anomaly is None:
        anomalies: tuple[str, ...] = ()
        anomaly_chain = current.anomaly_chain
    else:
        anomalies = (anomaly,)
        anomaly_chain = (current.anomaly_chain, (event.event_id, anomaly))
    return _new_state(
        state,
        exists,
        deleted,
        current.version + 1,
        event,
        anomalies,
        anomaly_chain,
        tree if provenance else None,
        merge_base,
    )


def _merge_with_provenance(
    target: Any, patch: Any, tree: ProvenanceNode, event: Event
) -> tuple[Any, ProvenanceNode]:
    """:func:`merge_patch` that also returns the provenance tree of the result.

    Only nodes on the patch's paths are copied or changed. Whatever the patch writes
    wholesale (a non-object value, or an object replacing a non-object) is attributed to
    ``event`` as one node; an object emptied by the patch becomes a leaf set by ``event``.
    """
    if not isinstance(patch, dict):
        return patch, event
    if not isinstance(target, dict):
        return merge_patch(MISSING, patch), event
    if not patch:
        return target, tree
    result = dict(target)
    # A subtree attributed to one event is split one level, only where the patch goes.
    children = dict(tree) if isinstance(tree, dict) else dict.fromkeys(target, tree)
    for name, value in patch.items():
        if value is None:
            if name in result:
                del result[name]
                del children[name]
        elif isinstance(value, dict):
            result[name], children[name] = _merge_with_provenance(
                result.get(name, MISSING), value, children.get(name), event
            )
        else:  # written whole by this event, as the call would say
            result[name] = value
            children[name] = event
    if not result:
        return result, (event if target else tree)
    return result, children


def _flatten_provenance(
    value: Any, node: ProvenanceNode, path: str, whole_arrays: bool = False
) -> Iterator[tuple[str, Event]]:
    if isinstance(node, dict):
        for name, child in node.items():
            yield from _flatten_provenance(
                value[name], child, f"{path}/{escape_token(name)}", whole_arrays
            )
    elif node is not None:
        yield from _attribute_leaves(value, path, node, whole_arrays)


def _attribute_leaves(
    value: Any, path: str, event: Event, whole_arrays: bool = False
) -> Iterator[tuple[str, Event]]:
    if isinstance(value, dict) and value:
        for name, child in value.items():
            yield from _attribute_leaves(child, f"{path}/{escape_token(name)}", event, whole_arrays)
    elif isinstance(value, list) and value and not whole_arrays:
        for index, child in enumerate(value):
            yield from _attribute_leaves(child, f"{path}/{index}", event)
    else:
        yield path, event
