"""Where two versions of a text differ, for highlighting a changed string inside itself.

"Nørregade 4" → "Nørregade 86" should show that the house number changed, not two whole
addresses. :func:`inline_diff` splits both texts into the same pieces a reader sees —
words, runs of white space, single punctuation marks — and lets the standard library's
:class:`difflib.SequenceMatcher` find the longest matching runs of those tokens; what is
left is marked as changed. Words are the unit because a character-level diff of
``john@example.com`` → ``jane@example.com`` marks ``oh``/``a`` and ``n``/``en``
fragments that are harder to read than the whole changed word.

Bounded work (README, "Limits"): :class:`~difflib.SequenceMatcher` is quadratic in the
worst case, so only the part between the longest common prefix and suffix is handed to
it, and only when that part is at most :data:`MAX_CHARS` characters and
:data:`MAX_TOKENS` tokens on each side; a longer middle is marked changed as a whole.
Trimming the common ends is a binary search on slice equality, so a 1 MB string costs
milliseconds, never a hang.

Masking is applied *before*: callers pass the texts a role may see (a masked value is
:data:`dashboard.masking.MASK` on both sides, which is no difference). The pieces of
each side put together are exactly that side's text, so a highlight can never show a
character that was not already in what was passed in.

This module is pure: no Flask, no database.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

from .budget import check_budget

__all__ = ["MAX_CHARS", "MAX_TOKENS", "Piece", "inline_diff"]

# Tokens of each side's differing middle handed to SequenceMatcher (quadratic at worst:
# 400 × 400 tokens of few distinct words is tens of milliseconds on a loaded machine).
MAX_TOKENS = 400
# Characters of each side's differing middle that are split into tokens at all; a longer
# middle is marked changed as a whole without being looked at further.
MAX_CHARS = 20_000
# Characters of the common prefix and suffix re-read as tokens, so a changed word is
# marked from its start (a longer word is marked from this far before the change).
_WORD_MARGIN = 100

# A word (letters, digits, underscore in any script), a run of white space, or any other
# single character: every character of the text is in exactly one token.
_TOKEN = re.compile(r"\w+|\s+|[^\w\s]", re.UNICODE)


@dataclass(frozen=True, slots=True)
class Piece:
    """A run of one side's text; ``changed`` when it is not in the other side."""

    text: str
    changed: bool


def inline_diff(old: str, new: str) -> tuple[list[Piece], list[Piece]]:
    """The pieces of ``old`` and of ``new``, each marked changed or kept.

    ``"".join(piece.text for piece in pieces)`` gives back each side's text exactly.
    Equal texts give one unchanged piece each (or none for an empty text).
    """
    check_budget()
    if old == new:
        return _whole(old, False), _whole(new, False)
    # Characters shared at both ends, found in C; tokens start a little before them so a
    # word that straddles the edge of the change is still marked whole.
    head = max(0, _common_prefix(old, new) - _WORD_MARGIN)
    tail = max(0, _common_suffix(old[head:], new[head:]) - _WORD_MARGIN)
    old_pieces: list[tuple[str, bool]] = [(old[:head], False)]
    new_pieces: list[tuple[str, bool]] = [(new[:head], False)]
    old_middle, new_middle = old[head : len(old) - tail], new[head : len(new) - tail]
    if max(len(old_middle), len(new_middle)) > MAX_CHARS:
        old_pieces.append((old_middle, True))
        new_pieces.append((new_middle, True))
    else:
        a = _TOKEN.findall(old_middle)
        b = _TOKEN.findall(new_middle)
        start = _common_prefix(a, b)
        end = _common_suffix(a[start:], b[start:])
        old_pieces.append(("".join(a[:start]), False))
        new_pieces.append(("".join(b[:start]), False))
        a_middle, b_middle = a[start : len(a) - end], b[start : len(b) - end]
        if len(a_middle) > MAX_TOKENS or len(b_middle) > MAX_TOKENS:
            old_pieces.append(("".join(a_middle), True))
            new_pieces.append(("".join(b_middle), True))
        else:
            matcher = SequenceMatcher(_is_separator, a_middle, b_middle, autojunk=False)
            for tag, i1, i2, j1, j2 in matcher.get_opcodes():
                changed = tag != "equal"
                old_pieces.append(("".join(a_middle[i1:i2]), changed))
                new_pieces.append(("".join(b_middle[j1:j2]), changed))
        old_pieces.append(("".join(a[len(a) - end :]), False))
        new_pieces.append(("".join(b[len(b) - end :]), False))
    old_pieces.append((old[len(old) - tail :], False))
    new_pieces.append((new[len(new) - tail :], False))
    return _joined(old_pieces), _joined(new_pieces)


def _is_separator(token: str) -> bool:
    """White space and punctuation may continue a match but never start one: they repeat
    in every text, and matching them first is most of SequenceMatcher's work (a third of
    the time on 160-character values) and marks stray commas as kept between changes."""
    return not (token[0].isalnum() or token[0] == "_")


def _whole(text: str, changed: bool) -> list[Piece]:
    return [Piece(text, changed)] if text else []


def _joined(pieces: list[tuple[str, bool]]) -> list[Piece]:
    """Empty pieces dropped, neighbours with the same mark merged into one."""
    out: list[Piece] = []
    for text, changed in pieces:
        if not text:
            continue
        if out and out[-1].changed == changed:
            out[-1] = Piece(out[-1].text + text, changed)
        else:
            out.append(Piece(text, changed))
    return out


def _common_prefix(a: Sequence[str], b: Sequence[str]) -> int:
    """How many leading items (characters, tokens) ``a`` and ``b`` share: a binary search
    on slice equality (compared in C), so a 1 MB string takes milliseconds, not a Python
    loop over its characters."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _common_suffix(a: Sequence[str], b: Sequence[str]) -> int:
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[len(a) - middle :] == b[len(b) - middle :]:
            low = middle
        else:
            high = middle - 1
    return low
