"""JSON as PostgreSQL stores it, read within a depth every part of the dashboard can walk.

PostgreSQL accepts ``jsonb`` nested as deep as its parser's stack allows (with the default
``max_stack_depth`` of 2 MB, 10,000 levels are stored and 20,000 refused). Python's
``json`` decoder, and every recursive walk after it — replay's merge, the diff, masking,
provenance, ``json.dumps`` — stop at the interpreter's recursion limit (about 1,000
frames, and the diff takes two per level). One event nested 1,200 deep used to raise
``RecursionError`` while its row was read, failing every page and report that touched it.

So every json/jsonb value the dashboard reads is measured first: a document nested more
than :data:`MAX_JSON_DEPTH` levels is never decoded; it is read as a :class:`TooDeep`
marker instead, and only that event shows "nested too deep to display — N levels". Every
other value is at most :data:`MAX_JSON_DEPTH` deep, which every walker in the dashboard
handles with room to spare (checked by the tests at exactly that depth). Merging never
makes a state deeper than the deepest document merged, so states stay within it too.

The marker is a ``dict`` subclass holding ``{"$too_deep": {"levels", "limit",
"message"}}``, so every serialiser (Flask's JSON, CSV, PDF) prints it as that object
unchanged, and the fold treats it as an ordinary object: a create or snapshot makes it the
state, a merge adds its one member to the state (the state then shows that an unreadable
update happened there). The API's JSON of the event carries the same object in place of
its payload or metadata.

Measuring is cheap for ordinary documents: fewer ``[`` and ``{`` characters than the limit
cannot nest deeper than it, which two C-speed counts settle; only a document with more
brackets than the limit is scanned (one regular-expression pass over its text, outside
strings).

This module is pure: no Flask, no database.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

import orjson

__all__ = [
    "MAX_JSON_DEPTH",
    "TOO_DEEP_KEY",
    "TooDeep",
    "json_depth",
    "load_json_bytes",
    "loads_within_depth",
    "too_deep_message",
]

MAX_JSON_DEPTH: Final = 200
"""Levels of nested arrays/objects shown; a deeper document is shown as :class:`TooDeep`."""

TOO_DEEP_KEY: Final = "$too_deep"

# A JSON string (any escapes), or one bracket. Strings are matched whole so that brackets
# inside them do not count; the unrolled form keeps the match linear on long strings.
_TOKENS: Final = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[{]|[\]}]')
_DECODER: Final = json.JSONDecoder()
# 19 digits in a row: maybe an integer orjson would read as a float (outside the 64-bit
# range, -9223372036854775809 included), or digits in a string; either way such a
# document takes the json module's path.
_LONG_DIGITS: Final = re.compile(rb"[0-9]{19}")


def too_deep_message(levels: int) -> str:
    return f"nested too deep to display — {levels:,} levels"


class TooDeep(dict):
    """Stands in for a document nested deeper than :data:`MAX_JSON_DEPTH`.

    It is the object ``{"$too_deep": {"levels": N, "limit": L, "message": "..."}}``; the
    subclass only lets the pages recognise it (``isinstance``) and say so on the event's
    row.
    """

    def __init__(self, levels: int, limit: int = MAX_JSON_DEPTH):
        super().__init__(
            {
                TOO_DEEP_KEY: {
                    "levels": levels,
                    "limit": limit,
                    "message": too_deep_message(levels),
                }
            }
        )

    @property
    def levels(self) -> int:
        return self[TOO_DEEP_KEY]["levels"]

    @property
    def message(self) -> str:
        return self[TOO_DEEP_KEY]["message"]


def json_depth(text: str) -> int:
    """How many levels of arrays and objects ``text`` (valid JSON) nests; 0 for a scalar."""
    depth = deepest = 0
    for match in _TOKENS.finditer(text):
        char = text[match.start()]
        if char == "[" or char == "{":
            depth += 1
            if depth > deepest:
                deepest = depth
        elif char == "]" or char == "}":
            depth -= 1
    return deepest


def _too_deep(text: str, limit: int) -> TooDeep | None:
    if text.count("[") + text.count("{") <= limit:
        return None  # cannot nest deeper than its brackets: the usual case, C speed
    levels = json_depth(text)
    return TooDeep(levels, limit) if levels > limit else None


def loads_within_depth(text: str, limit: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads(text)``, or a :class:`TooDeep` marker when it nests deeper than
    ``limit`` (then it is not decoded at all)."""
    marker = _too_deep(text, limit)
    if marker is not None:
        return marker
    try:
        value, end = _DECODER.raw_decode(text)
    except ValueError:
        return json.loads(text)  # the error message of the standard entry point
    return value if end == len(text) else json.loads(text)


def load_json_bytes(data: bytes | bytearray | memoryview) -> Any:
    """The json/jsonb loader of every database connection (psycopg ``set_json_loads``).

    PostgreSQL sends UTF-8, and jsonb text has no surrounding whitespace. Documents within
    the depth limit are read by ``orjson`` (several times faster; the same values as
    ``json.loads`` for what PostgreSQL stores, checked by tests/test_hostile_data.py),
    except those with a run of 19 digits (orjson reads an integer outside 64 bits as a
    float) or that orjson refuses (an unpaired surrogate escape, a number out of range):
    those, and anything deeper, go through :func:`loads_within_depth`.
    """
    raw = bytes(data)
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH and not _LONG_DIGITS.search(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return loads_within_depth(raw.decode("utf-8"))
