"""Event rules: glob → action, the TOML rules file and its errors, aggregate kinds."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dashboard.events import Event
from dashboard.rules import (
    DEFAULT_RULES,
    Rule,
    RulesError,
    action_for,
    derive_kind,
    kind_of,
    load_rules,
    parse_rules,
)


def write_rules(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(text, encoding="utf-8")
    return path


def make_event(event_type: str, metadata: dict[str, Any] | None = None) -> Event:
    return Event(
        event_id=str(uuid.uuid4()),
        seq=None,
        aggregate_id=str(uuid.uuid4()),
        event_type=event_type,
        payload={},
        metadata=metadata,
        created_at=datetime(2024, 3, 1, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("event_type", "action"),
    [
        ("USER_CREATED", "create"),
        ("ORDER_LINE_CREATED", "create"),
        ("USER_DELETED", "delete"),
        ("ACCOUNT_SNAPSHOT", "snapshot"),
        ("EMAIL_UPDATED", "merge"),
        ("CREATED", "merge"),  # *_CREATED needs the underscore
        ("user_created", "merge"),  # globs are case-sensitive
    ],
)
def test_default_rules(event_type: str, action: str) -> None:
    assert action_for(event_type) == action
    assert action_for(event_type, DEFAULT_RULES) == action


def test_without_a_matching_rule_the_action_is_merge() -> None:
    assert action_for("ANYTHING", [Rule("X_*", "snapshot")]) == "merge"


def test_file_rules_come_before_the_defaults_and_the_first_match_wins(tmp_path: Path) -> None:
    path = write_rules(
        tmp_path,
        """\
# Profile replacements carry the whole profile.
[[rule]]
match = "USER_REPLACED"
action = "snapshot"

[[rule]]
match = "USER_PURGE*"
action = "delete"

[[rule]]
match = "USER_*"
action = "snapshot"

[[rule]]
match = "USER_REPLACED"
action = "merge"
""",
    )

    rules = load_rules(path)

    assert rules[-len(DEFAULT_RULES) :] == DEFAULT_RULES
    assert rules[0] == Rule("USER_REPLACED", "snapshot", f"{path}, line 3")
    assert action_for("USER_REPLACED", rules) == "snapshot"
    assert action_for("USER_PURGED", rules) == "delete"
    assert action_for("USER_CREATED", rules) == "snapshot"  # a file rule shadows a default
    assert action_for("ORDER_CREATED", rules) == "create"
    assert action_for("ORDER_SHIPPED", rules) == "merge"


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_rules(write_rules(tmp_path, "# no rules yet\n")) == DEFAULT_RULES


def test_inline_tables_are_accepted() -> None:
    rules = parse_rules('rule = [{match = "A_*", action = "snapshot"}]\n')

    assert [(rule.match, rule.action) for rule in rules] == [("A_*", "snapshot")]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (  # bad TOML: tomllib reports the line
            '[[rule]]\nmatch = "A"\naction = snapshot\n',
            3,
            "invalid TOML",
        ),
        (
            '[[rule]]\nmatch = "A"\naction = "snapshot"\n\n'
            '[[rule]]\nmatch = "B"\naction = "upsert"\n',
            7,
            "rule 2: unknown action 'upsert'",
        ),
        (  # missing key: the line of the rule's header
            '[[rule]]\nmatch = "A"\naction = "merge"\n\n'
            '[[rule]]\n# forgot the glob\naction = "merge"\n',
            5,
            "rule 2: missing 'match'",
        ),
        (
            '[[rule]]\nmatch = "A"\naction = "merge"\n[[rule]]\nmatch = 42\naction = "merge"\n',
            5,
            "rule 2: 'match' must be a string, not int",
        ),
        (
            '[[rule]]\nmatch = "A"\n  action = "merge"\n  priority = 1\n',
            4,
            "rule 1: unknown key 'priority'",
        ),
        (
            'version = 2\n\n[[rule]]\nmatch = "A"\naction = "merge"\n',
            1,
            "unknown setting 'version'",
        ),
        (
            '[[rule]]\nmatch = "A"\naction = "merge"\n\n[rules]\nx = 1\n',
            5,
            "unknown setting 'rules'",
        ),
        (  # a single table instead of an array of tables
            '# rules\n[rule]\nmatch = "A"\naction = "merge"\n',
            2,
            "[[rule]]",
        ),
        (
            '[[rule]]\nmatch = ""\naction = "merge"\n',
            2,
            "'match' is empty",
        ),
        (  # inline tables: the n-th occurrence of the key
            'rule = [\n  {match = "A", action = "merge"},\n  {match = "B", action = "nope"},\n]\n',
            3,
            "rule 2: unknown action 'nope'",
        ),
    ],
)
def test_a_bad_rules_file_names_the_file_and_the_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = write_rules(tmp_path, text)

    with pytest.raises(RulesError) as raised:
        load_rules(path)

    assert raised.value.line == line
    assert str(raised.value).startswith(f"{path}, line {line}: ")
    assert message in str(raised.value)


def test_unknown_action_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="create, delete, merge, snapshot"):
        load_rules(write_rules(tmp_path, '[[rule]]\nmatch = "A"\naction = "replace"\n'))


def test_a_missing_file_is_a_rules_error(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read") as raised:
        load_rules(tmp_path / "absent.toml")

    assert str(tmp_path / "absent.toml") in str(raised.value)


def test_a_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_bytes(b'[[rule]]\nmatch = "caf\xe9"\naction = "merge"\n')

    with pytest.raises(RulesError, match="not UTF-8") as raised:
        load_rules(path)

    assert raised.value.line == 2


@pytest.mark.parametrize(
    ("create_type", "metadata", "kind"),
    [
        ("USER_CREATED", None, "USER"),
        ("ORDER_LINE_CREATED", None, "ORDER_LINE"),
        ("CREATED", None, "CREATED"),
        ("USER_CREATED", {"aggregate_type": "customer"}, "customer"),
        ("USER_CREATED", {"aggregate_type": ""}, "USER"),
        (None, {"aggregate_type": "invoice"}, "invoice"),
        (None, None, None),
    ],
)
def test_derive_kind(create_type: str | None, metadata: dict | None, kind: str | None) -> None:
    assert derive_kind(create_type, metadata) == kind


def test_kind_of_prefers_declared_aggregate_type_then_the_create_event() -> None:
    assert kind_of([make_event("EMAIL_UPDATED"), make_event("USER_CREATED")]) == "USER"
    assert (
        kind_of([make_event("USER_CREATED"), make_event("X", {"aggregate_type": "member"})])
        == "member"
    )
    assert kind_of([make_event("EMAIL_UPDATED")]) is None
    assert kind_of([]) is None


def test_kind_of_follows_custom_create_rules() -> None:
    rules = (Rule("*_OPENED", "create"), *DEFAULT_RULES)

    assert kind_of([make_event("ACCOUNT_OPENED")], rules) == "ACCOUNT"
