"""The highlight inside a changed string (dashboard.textdiff): what is marked, its laws,
and bounded work on long strings."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashboard import textdiff
from dashboard.masking import MASK
from dashboard.textdiff import MAX_CHARS, MAX_TOKENS, Piece, inline_diff


def marked(pieces: list[Piece]) -> list[str]:
    return [piece.text for piece in pieces if piece.changed]


@pytest.mark.parametrize(
    ("old", "new", "old_marked", "new_marked"),
    [
        ('"Nørregade 4"', '"Nørregade 86"', ["4"], ["86"]),
        ("john@example.com", "jane@example.com", ["john"], ["jane"]),
        (
            "Main Street 1, Springfield",
            "Main Street 1, Shelbyville",
            ["Springfield"],
            ["Shelbyville"],
        ),
        ("a b c", "a x c", ["b"], ["x"]),
        ("a c", "a b c", [], ["b "]),
        ("a b c", "a c", ["b "], []),
        ("same", "same", [], []),
        ("", "new", [], ["new"]),
        ("old", "", ["old"], []),
        # A word is marked whole, even when only a letter of it changed.
        ("colour", "color", ["colour"], ["color"]),
    ],
)
def test_only_the_differing_part_is_marked(old, new, old_marked, new_marked):
    old_pieces, new_pieces = inline_diff(old, new)
    assert marked(old_pieces) == old_marked
    assert marked(new_pieces) == new_marked


def test_masked_values_have_nothing_to_highlight():
    # A support agent sees MASK on both sides of a masked change: no difference at all.
    old_pieces, new_pieces = inline_diff(f'"{MASK}"', f'"{MASK}"')
    assert old_pieces == new_pieces == [Piece(f'"{MASK}"', False)]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40))
def test_pieces_give_back_each_side_exactly(old, new):
    # The highlight can show no character that was not in the text it was given (masked).
    old_pieces, new_pieces = inline_diff(old, new)
    assert "".join(piece.text for piece in old_pieces) == old
    assert "".join(piece.text for piece in new_pieces) == new
    for pieces in (old_pieces, new_pieces):
        assert all(piece.text for piece in pieces)
        assert all(a.changed != b.changed for a, b in itertools.pairwise(pieces))
    # Something is marked exactly when the texts differ, and kept text is common to both.
    assert bool(marked(old_pieces) or marked(new_pieces)) == (old != new)
    kept_old = "".join(piece.text for piece in old_pieces if not piece.changed)
    kept_new = "".join(piece.text for piece in new_pieces if not piece.changed)
    assert kept_old == kept_new


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["ab", "cd", "é", "x1", "ab,"]), max_size=30), st.data())
def test_a_word_inserted_is_all_that_is_marked(words, data):
    at = data.draw(st.integers(0, len(words)))
    old = " ".join(words)
    new = " ".join([*words[:at], "NEW", *words[at:]])
    old_pieces, new_pieces = inline_diff(old, new)
    assert marked(old_pieces) == []
    assert [text.strip() for text in marked(new_pieces)] == ["NEW"]


def test_a_one_megabyte_string_is_trimmed_not_matched(monkeypatch):
    # A change at the end of 1 MB: the common start is found by slicing, and only the
    # few characters around the change reach the matcher.
    head = "word " * 200_000
    seen = []
    real = textdiff.SequenceMatcher

    def spy(junk, a, b, autojunk):
        seen.append((len(a), len(b)))
        return real(junk, a, b, autojunk=autojunk)

    monkeypatch.setattr(textdiff, "SequenceMatcher", spy)
    old_pieces, new_pieces = inline_diff(head + "Nørregade 4", head + "Nørregade 86")
    assert marked(old_pieces) == ["4"] and marked(new_pieces) == ["86"]
    assert all(a <= MAX_TOKENS and b <= MAX_TOKENS for a, b in seen)


def test_a_long_differing_middle_is_marked_whole_without_matching(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("SequenceMatcher must not see a middle this long")

    monkeypatch.setattr(textdiff, "SequenceMatcher", refuse)
    # 1 MB of characters that differ everywhere but share many tokens (" "): matching them
    # would be quadratic; the middle is marked as a whole instead.
    old = "a " * 500_000
    new = "b " * 500_000
    assert len(old) > MAX_CHARS
    old_pieces, new_pieces = inline_diff(old, new)
    assert old_pieces == [Piece(old, True)] and new_pieces == [Piece(new, True)]
    # Short in characters but long in tokens: also marked whole (but for the shared end).
    old = "a " * (MAX_TOKENS + 1)
    new = "b " * (MAX_TOKENS + 1)
    assert len(old) <= MAX_CHARS
    old_pieces, new_pieces = inline_diff(old, new)
    assert old_pieces == [Piece(old[:-1], True), Piece(" ", False)]
    assert new_pieces == [Piece(new[:-1], True), Piece(" ", False)]
