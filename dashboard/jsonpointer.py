"""JSON Pointer (RFC 6901) helpers shared by replay, diff, provenance and the views.

Every path the dashboard shows or accepts — a diff's ``path``, a provenance key, the field
asked for in "when did this email change" — is an RFC 6901 pointer, so the escaping rules
live in exactly one place: ``~`` is written ``~0`` and ``/`` is written ``~1`` (RFC 6901
section 3), and decoding replaces ``~1`` before ``~0`` (section 4) so that ``~01`` means the
key ``~1``, not ``/``.

RFC 6901 section 7 names two error conditions, which we keep apart because callers treat
them differently: a *malformed* pointer (:class:`PointerError`, the user typed something
that is not a pointer: answer 400) and a well-formed pointer that *references a
nonexistent value* (:class:`PointerNotFoundError`, a subclass: for field history that just
means "the field was absent then").

This module is pure: no Flask, no database.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from typing import Any, Final

__all__ = [
    "MISSING",
    "Missing",
    "PointerError",
    "PointerNotFoundError",
    "escape_token",
    "join_pointer",
    "lookup_pointer",
    "lookup_tokens",
    "pointer_from_tokens",
    "resolve_pointer",
    "split_pointer",
    "unescape_token",
]


class Missing(enum.Enum):
    """Type of :data:`MISSING`; an enum so the sentinel survives pickling and copying."""

    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = Missing.MISSING
"""No value at all — distinct from JSON ``null`` (``None``).

A field set to ``null`` and a field that is absent are different facts in an audit trail,
so diffs and field history use this sentinel for "absent".
"""

# RFC 6901 section 3: "~" must be followed by "0" or "1".
_BAD_ESCAPE = re.compile(r"~(?![01])")
# RFC 6901 section 4: an array index is "0" or digits without a leading zero.
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]*")
# RFC 6901 section 4: "-" names the (nonexistent) element after the last array element.
_AFTER_LAST_ELEMENT = "-"


class PointerError(ValueError):
    """A pointer that is not valid RFC 6901 syntax, or (subclass) that points at nothing."""

    def __init__(self, pointer: str, reason: str):
        super().__init__(f"JSON Pointer {pointer!r}: {reason}")
        self.pointer = pointer
        self.reason = reason


class PointerNotFoundError(PointerError, LookupError):
    """A well-formed pointer that references a nonexistent value (RFC 6901 section 7)."""


def escape_token(token: str | int) -> str:
    """Encode one reference token: ``~`` → ``~0`` then ``/`` → ``~1`` (RFC 6901 section 3).

    An ``int`` is an array index and is written in decimal.
    """
    if type(token) is not str:  # a plain str (every key of decoded JSON) skips the checks
        if isinstance(token, bool) or not isinstance(token, str | int):
            raise TypeError(f"a JSON Pointer token is a str or an int index, not {token!r}")
        if isinstance(token, int):
            return str(token)
    if "~" in token or "/" in token:
        return token.replace("~", "~0").replace("/", "~1")
    return token


def unescape_token(token: str) -> str:
    """Decode one reference token: ``~1`` → ``/`` then ``~0`` → ``~`` (RFC 6901 section 4).

    The order matters: ``~01`` decodes to ``~1``. A ``~`` followed by anything other than
    ``0`` or ``1`` is a syntax error.
    """
    if "~" not in token:
        return token
    if _BAD_ESCAPE.search(token):
        raise PointerError(token, "'~' must be followed by '0' or '1' (write '~0' for '~')")
    return token.replace("~1", "/").replace("~0", "~")


def split_pointer(pointer: str) -> list[str]:
    """The decoded reference tokens of ``pointer``; ``""`` (the whole document) gives ``[]``."""
    if not isinstance(pointer, str):
        raise TypeError(f"a JSON Pointer is a str, not {pointer!r}")
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PointerError(pointer, "must be empty or start with '/'")
    try:
        return [unescape_token(token) for token in pointer[1:].split("/")]
    except PointerError as exc:
        raise PointerError(pointer, exc.reason) from None


def join_pointer(base: str, *tokens: str | int) -> str:
    """Extend the pointer ``base`` (``""`` for the root) with raw, unescaped ``tokens``."""
    if base and not base.startswith("/"):
        raise PointerError(base, "must be empty or start with '/'")
    return base + "".join("/" + escape_token(token) for token in tokens)


def pointer_from_tokens(tokens: Iterable[str | int]) -> str:
    """The pointer made of raw ``tokens`` from the root; the inverse of :func:`split_pointer`."""
    return join_pointer("", *tokens)


def resolve_pointer(document: Any, pointer: str) -> Any:
    """The value ``pointer`` references in ``document`` (RFC 6901 section 4).

    Raises :class:`PointerError` for a malformed pointer and :class:`PointerNotFoundError`
    when there is nothing there: a missing member, an index past the end, ``-`` (which
    RFC 6901 defines as the nonexistent element after the last), a token that is not an
    index used on an array, or a token applied to a string, number, boolean or null.
    """
    tokens = split_pointer(pointer)
    value = lookup_tokens(document, tokens)
    if value is MISSING:
        raise PointerNotFoundError(pointer, _why_not_found(document, tokens))
    return value


def lookup_pointer(document: Any, pointer: str, default: Any = MISSING) -> Any:
    """Like :func:`resolve_pointer`, but ``default`` when the value does not exist.

    A malformed pointer still raises :class:`PointerError`: that is a caller's mistake,
    not an absent field.
    """
    value = lookup_tokens(document, split_pointer(pointer))
    return default if value is MISSING else value


def lookup_tokens(document: Any, tokens: Iterable[str]) -> Any:
    """Follow already decoded ``tokens`` (from :func:`split_pointer`); :data:`MISSING` when
    they lead nowhere. For callers that look the same pointer up in many documents."""
    value = document
    for token in tokens:
        if isinstance(value, dict):
            value = value.get(token, MISSING)
            if value is MISSING:
                return MISSING
        elif isinstance(value, list):
            if not _ARRAY_INDEX.fullmatch(token):
                return MISSING
            index = int(token)
            if index >= len(value):
                return MISSING
            value = value[index]
        else:
            return MISSING
    return value


def _why_not_found(document: Any, tokens: list[str]) -> str:
    """A sentence naming the first token that leads nowhere, for error messages."""
    value = document
    for depth, token in enumerate(tokens):
        where = pointer_from_tokens(tokens[:depth]) or "the document root"
        if isinstance(value, dict):
            if token not in value:
                return f"no member {token!r} in the object at {where}"
            value = value[token]
        elif isinstance(value, list):
            if token == _AFTER_LAST_ELEMENT:
                return f"'-' names the element after the last one of the array at {where}"
            if not _ARRAY_INDEX.fullmatch(token):
                return f"{token!r} is not an array index (the value at {where} is an array)"
            if int(token) >= len(value):
                return f"index {token} is past the end of the array at {where} ({len(value)} items)"
            value = value[int(token)]
        else:
            return f"the value at {where} is {_json_type_name(value)}, it has no member {token!r}"
    return "no value there"


def _json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__
