"""What an event does to state: glob rules from ``event_type`` to a replay action.

The audit table does not say whether a payload is a full snapshot or a change, so the
dashboard decides by the event's type (DESIGN.md, "What an event does to state"):

- ``create``: the payload is the initial state;
- ``merge``: the payload is an RFC 7396 JSON Merge Patch;
- ``snapshot``: the payload is the complete new state;
- ``delete``: the record is gone after this event (its last state stays visible).

Rules are ``(glob, action)`` pairs tried in order, first match wins; globs use
:func:`fnmatch.fnmatchcase` (case-sensitive, ``*`` ``?`` ``[...]``). A rules file
(``AUDIT_RULES_FILE``) is TOML::

    [[rule]]
    match = "USER_REPLACED"
    action = "snapshot"

and its rules are tried before :data:`DEFAULT_RULES`. A bad file stops start-up with a
:class:`RulesError` naming the file and the line, because a silently ignored rule would
replay history wrongly without anyone noticing.

This module is pure: no Flask, no database.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from .events import Event

__all__ = [
    "ACTIONS",
    "DEFAULT_RULES",
    "Action",
    "Rule",
    "RulesError",
    "action_for",
    "derive_kind",
    "kind_of",
    "load_rules",
    "parse_rules",
]

Action = Literal["create", "merge", "snapshot", "delete"]
ACTIONS: Final[frozenset[str]] = frozenset({"create", "merge", "snapshot", "delete"})
_RULE_KEYS: Final = ("match", "action")


@dataclass(frozen=True, slots=True)
class Rule:
    """Events whose type matches the glob ``match`` get ``action``.

    ``source`` says where the rule came from (``"rules.toml, line 3"``) so a page can
    explain why an event was replayed the way it was.
    """

    match: str
    action: Action
    source: str = "built-in default"

    def matches(self, event_type: str) -> bool:
        return fnmatchcase(event_type, self.match)


DEFAULT_RULES: Final[tuple[Rule, ...]] = (
    Rule("*_CREATED", "create"),
    Rule("*_DELETED", "delete"),
    Rule("*_SNAPSHOT", "snapshot"),
    Rule("*", "merge"),
)
"""DESIGN.md's defaults, plus ``*_SNAPSHOT`` (a payload that is the whole new state: folding it
as a merge would keep keys the snapshot dropped); the final ``*`` matches every type."""


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file and the line."""

    def __init__(self, path: str, line: int | None, problem: str):
        where = f"{path}, line {line}" if line is not None else path
        super().__init__(f"{where}: {problem}")
        self.path = path
        self.line = line
        self.problem = problem


def action_for(event_type: str, rules: Sequence[Rule] = DEFAULT_RULES) -> Action:
    """The action of the first rule matching ``event_type``.

    When no rule matches (only possible with a hand-built list lacking ``*``) the answer is
    ``merge``, DESIGN.md's "anything else".
    """
    for rule in rules:
        if fnmatchcase(event_type, rule.match):
            return rule.action
    return "merge"


def derive_kind(create_event_type: str | None, metadata: Mapping[str, Any] | None) -> str | None:
    """An aggregate's kind: ``metadata["aggregate_type"]`` if given, else the create type
    without its last ``_WORD`` (``USER_CREATED`` → ``USER``; ``ORDER_LINE_ADDED`` →
    ``ORDER_LINE``; a type without ``_`` is its own kind). ``None`` when neither is known.
    """
    if isinstance(metadata, Mapping):
        declared = metadata.get("aggregate_type")
        if isinstance(declared, str) and declared:
            return declared
    if not create_event_type:
        return None
    stem, underscore, _last_word = create_event_type.rpartition("_")
    return stem if underscore and stem else create_event_type


def kind_of(events: Iterable[Event], rules: Sequence[Rule] = DEFAULT_RULES) -> str | None:
    """The kind of the aggregate these events belong to (see :func:`derive_kind`).

    The first ``metadata.aggregate_type`` found wins; otherwise the first event whose rule
    action is ``create`` names it. ``None`` when the events say neither.
    """
    create_type: str | None = None
    for event in events:
        metadata = event.metadata
        if isinstance(metadata, Mapping):
            declared = metadata.get("aggregate_type")
            if isinstance(declared, str) and declared:
                return declared
        if create_type is None and action_for(event.event_type, rules) == "create":
            create_type = event.event_type
    return derive_kind(create_type, None)


def load_rules(path: str | os.PathLike[str]) -> tuple[Rule, ...]:
    """The rules of the TOML file at ``path``, followed by :data:`DEFAULT_RULES`.

    Raises :class:`RulesError` (naming the file and line) for an unreadable file, bad TOML,
    an unknown action, a missing or unknown key, or a value of the wrong type.
    """
    name = os.fspath(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise RulesError(name, None, f"cannot read the rules file: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise RulesError(name, line, "the file is not UTF-8 text") from exc
    return parse_rules(text, name) + DEFAULT_RULES


def parse_rules(text: str, source: str = "<rules>") -> tuple[Rule, ...]:
    """The rules written in TOML ``text`` (without the defaults); ``source`` names it in errors."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # Python 3.11's TOMLDecodeError has no lineno attribute; the message ends with
        # "(at line N, column M)".
        found = re.search(r"at line (\d+)", str(exc))
        raise RulesError(
            source, int(found.group(1)) if found else None, f"invalid TOML: {exc}"
        ) from None
    locator = _LineLocator(text)
    for key in document:
        if key != "rule":
            raise RulesError(
                source,
                locator.top_level_key(key),
                f"unknown setting {key!r}; a rules file holds only [[rule]] tables",
            )
    entries = document.get("rule", [])
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise RulesError(
            source,
            locator.top_level_key("rule"),
            'write each rule as a [[rule]] table with match = "GLOB" and action = "ACTION"',
        )
    rules = []
    for index, entry in enumerate(entries):
        rules.append(_parse_rule(entry, index, entries, source, locator))
    return tuple(rules)


def _parse_rule(
    entry: dict[str, Any],
    index: int,
    entries: list[dict[str, Any]],
    source: str,
    locator: _LineLocator,
) -> Rule:
    def fail(key: str | None, problem: str) -> RulesError:
        line = locator.rule_key(index, entries, key) if key else locator.rule_start(index)
        return RulesError(source, line, f"rule {index + 1}: {problem}")

    for key in entry:
        if key not in _RULE_KEYS:
            raise fail(key, f"unknown key {key!r}; a rule has only 'match' and 'action'")
    for key in _RULE_KEYS:
        if key not in entry:
            raise fail(None, f"missing {key!r}")
        if not isinstance(entry[key], str):
            raise fail(key, f"{key!r} must be a string, not {type(entry[key]).__name__}")
    if not entry["match"]:
        raise fail("match", "'match' is empty; use '*' to match every event type")
    if entry["action"] not in ACTIONS:
        raise fail(
            "action",
            f"unknown action {entry['action']!r}; use one of {', '.join(sorted(ACTIONS))}",
        )
    line = locator.rule_key(index, entries, "match") or locator.rule_start(index)
    where = f"{source}, line {line}" if line else source
    return Rule(entry["match"], entry["action"], where)


class _LineLocator:
    """Finds the line of a rule or key in the TOML text, for error messages.

    tomllib reports lines only for syntax errors, so for a semantic error we look for the
    offending key in the text: inside the N-th ``[[rule]]`` block when the file uses that
    form (the usual one), otherwise the N-th occurrence of ``key =`` (inline tables).
    Comments and multi-line strings can fool the search; the message still names the rule.
    """

    _RULE_HEADER = re.compile(r"""^\s*\[\[\s*(?:rule|"rule"|'rule')\s*\]\]""")
    _ANY_HEADER = re.compile(r"^\s*\[")

    def __init__(self, text: str):
        self.lines = text.splitlines()
        self.rule_headers = [
            number
            for number, line in enumerate(self.lines, start=1)
            if self._RULE_HEADER.match(line)
        ]

    def _block(self, index: int) -> tuple[int, int]:
        """1-based first and last line of the ``index``-th ``[[rule]]`` block."""
        start = self.rule_headers[index]
        end = len(self.lines)
        for number in range(start + 1, len(self.lines) + 1):
            if self._ANY_HEADER.match(self.lines[number - 1]):
                end = number - 1
                break
        return start, end

    def rule_start(self, index: int) -> int | None:
        if index < len(self.rule_headers):
            return self.rule_headers[index]
        return self.top_level_key("rule")

    def rule_key(self, index: int, entries: list[dict[str, Any]], key: str) -> int | None:
        if self.rule_headers and len(self.rule_headers) == len(entries):
            start, end = self._block(index)
            assignment = _assignment_pattern(key, anchored=True)
            for number in range(start, end + 1):
                if assignment.match(self.lines[number - 1]):
                    return number
            return start
        occurrence = sum(1 for earlier in entries[:index] if key in earlier)
        assignment = _assignment_pattern(key, anchored=False)
        seen = 0
        for number, line in enumerate(self.lines, start=1):
            for _match in assignment.finditer(line):
                if seen == occurrence:
                    return number
                seen += 1
        return self.rule_start(index)

    def top_level_key(self, key: str) -> int | None:
        header = re.compile(
            rf"""^\s*\[+\s*(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')\s*[\].]"""
        )
        for number, line in enumerate(self.lines, start=1):
            if header.match(line):
                return number
        # A top-level "key = value" can only come before the first table header.
        assignment = _assignment_pattern(key, anchored=True)
        for number, line in enumerate(self.lines, start=1):
            if self._ANY_HEADER.match(line):
                break
            if assignment.match(line):
                return number
        return None


def _assignment_pattern(key: str, *, anchored: bool) -> re.Pattern[str]:
    """``key =`` (bare or quoted key); unanchored also finds it inside an inline table."""
    quoted = re.escape(key)
    lead = r"^\s*" if anchored else r"(?:^|[\s{,])"
    return re.compile(rf"""{lead}(?:{quoted}|"{quoted}"|'{quoted}')\s*[=.]""")
