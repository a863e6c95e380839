"""The leaf bytes of one event: a canonical encoding of every column of its row.

Defined once, here, and documented in the README ("Tamper evidence: the leaf"). The same
bytes come from the database row (:func:`leaf_bytes`) and from one row of the dashboard's
CSV export alone (:func:`leaf_bytes_from_csv`), so an outside auditor can recompute them.

The leaf is the RFC 8785 (JSON Canonicalization Scheme, via the ``rfc8785`` library) form
of one JSON object::

    {"format": "audit-leaf-v1", "seq": "<decimal>", "event_id": "<uuid>",
     "aggregate_id": "<uuid>", "event_type": "<text>",
     "created_at": "YYYY-MM-DDTHH:MM:SS.ffffffZ",
     "payload": <value>       or  "payload_text": "<jsonb text>",
     "metadata": <value>      or  "metadata_text": "<jsonb text>"  (absent when SQL NULL)}

``seq`` is a string because a bigint can exceed the integers JSON numbers carry exactly.
``created_at`` is UTC with exactly six fractional digits (PostgreSQL keeps microseconds).

The payload and metadata go in as JSON values when RFC 8785 can express them exactly:
every number an integer within +-(2**53 - 1) or a decimal whose shortest double
representation is the same number, at most :data:`MAX_JCS_DEPTH` levels deep. PostgreSQL's
``jsonb`` accepts more than that (arbitrary-precision numerics, deep nesting), and a tamper
must never hide in a digit a double would round away, so such a document goes in as
``payload_text``: its text exactly as PostgreSQL prints the ``jsonb`` (which is also what
the CSV export holds). Which form is used depends only on the value, so the encoding is
one-to-one. Numbers are compared by value in the JSON form (``1.0`` and ``1`` are one
leaf: equal as ``jsonb``), by their stored text in the text form.

Pure: no Flask, no database.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import orjson
import rfc8785

__all__ = [
    "LEAF_FORMAT",
    "MAX_JCS_DEPTH",
    "LeafError",
    "canonical_time",
    "leaf_bytes",
    "leaf_bytes_from_csv",
    "restore_cell",
]

LEAF_FORMAT: Final = "audit-leaf-v1"
MAX_JCS_DEPTH: Final = 200
_SAFE_INT: Final = 2**53 - 1
CSV_FORMULA_ESCAPE: Final = "'"  # dashboard.reports.csv_format.FORMULA_ESCAPE (kept pure)


class LeafError(ValueError):
    """A row that cannot be encoded (a malformed CSV cell, a missing column)."""


class _NotExact(Exception):
    """The value holds something RFC 8785 cannot express exactly."""


def leaf_bytes(
    *,
    event_id: str | uuid.UUID,
    aggregate_id: str | uuid.UUID,
    event_type: str,
    payload: str,
    metadata: str | None,
    created_at: datetime | str,
    seq: int,
    canonical_ids: bool = False,
) -> bytes:
    """The leaf bytes of one event.

    ``payload`` and ``metadata`` are the JSON *text* of the ``jsonb`` values (select
    ``payload::text``): a parsed value has already lost digits a double cannot hold.
    ``metadata`` is None for SQL NULL. ``created_at`` is an aware datetime or ISO text.
    ``canonical_ids``: the ids are PostgreSQL's ``uuid::text`` (lowercase, canonical), so
    they are taken as they are; otherwise each is checked and made canonical.
    """
    if not isinstance(payload, str) or not (metadata is None or isinstance(metadata, str)):
        raise TypeError("payload and metadata are JSON text (select payload::text)")
    document: dict[str, Any] = {
        "format": LEAF_FORMAT,
        "seq": str(int(seq)),
        "event_id": event_id if canonical_ids else _uuid_text(event_id, "event_id"),
        "aggregate_id": aggregate_id if canonical_ids else _uuid_text(aggregate_id, "aggregate_id"),
        "event_type": event_type,
        "created_at": canonical_time(created_at),
    }
    _put_json(document, "payload", payload)
    if metadata is not None:
        _put_json(document, "metadata", metadata)
    return _canonical(document)


def leaf_bytes_from_csv(row: Mapping[str, str | None]) -> bytes:
    """The leaf bytes from one row of the dashboard's CSV export (a ``csv.DictReader`` row).

    Undoes the export's spreadsheet-formula neutralisation (a leading ``'``) and reads an
    empty ``metadata`` cell as SQL NULL, as the export writes them. A masked export (support
    staff) holds masked values and so does not give the sealed leaf.
    """
    try:
        seq_text = _cell(row, "seq")
        metadata = restore_cell(row.get("metadata"))
        return leaf_bytes(
            event_id=_cell(row, "event_id"),
            aggregate_id=_cell(row, "aggregate_id"),
            event_type=restore_cell(_cell(row, "event_type", allow_empty=True)) or "",
            payload=restore_cell(_cell(row, "payload")) or "",
            metadata=metadata if metadata else None,
            created_at=_cell(row, "created_at"),
            seq=int(seq_text),
        )
    except LeafError:
        raise
    except (ValueError, TypeError) as exc:
        raise LeafError(str(exc)) from None


def restore_cell(text: str | None) -> str | None:
    """A CSV cell as it was before the export neutralised it: one leading ``'`` removed.

    The export prefixes ``'`` to every cell starting with a formula trigger *or* with
    ``'`` itself (dashboard.reports.csv_format.neutralise_formula), so this is exact.
    """
    if text and text.startswith(CSV_FORMULA_ESCAPE):
        return text[1:]
    return text


def _cell(row: Mapping[str, str | None], name: str, *, allow_empty: bool = False) -> str:
    if name not in row:
        raise LeafError(f"the CSV has no {name!r} column")
    value = row[name]
    if value is None or (value == "" and not allow_empty):
        raise LeafError(f"the {name!r} cell is empty")
    return value


_CANONICAL_UUID: Final = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE
)


def _uuid_text(value: str | uuid.UUID, name: str) -> str:
    if isinstance(value, str) and _CANONICAL_UUID.fullmatch(value):
        return value.lower()  # what str(uuid.UUID(value)) gives, without building one
    try:
        return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))
    except ValueError:
        raise LeafError(f"{name} {value!r} is not a UUID") from None


_ISO = re.compile(
    r"(?P<date>\d{4,}-\d\d-\d\d)[T ](?P<time>\d\d:\d\d:\d\d)(?:\.(?P<frac>\d{1,6}))?"
    r"(?P<zone>Z|[+-]00(?::?00)?)(?P<bc> BC)?"
)


def canonical_time(value: datetime | str) -> str:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC. Text must already be UTC (the export's
    ``+00:00``); it is read by pattern so years past 9999 and BC dates (which PostgreSQL
    accepts and Python's datetime does not) still encode."""
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise LeafError(f"{value.isoformat()} has no time zone")
        # isoformat pads the year to four digits as PostgreSQL prints it (strftime's %Y
        # gives "999" for the year 999, and the CSV holds "0999").
        text = value.astimezone(UTC).isoformat(timespec="microseconds")
        return text.removesuffix("+00:00") + "Z"
    if not isinstance(value, str):
        raise LeafError(f"created_at {value!r} is not a time a leaf can hold")
    match = _ISO.fullmatch(value.strip())
    if match is None:
        raise LeafError(f"created_at {value!r} is not an ISO 8601 time in UTC")
    frac = (match["frac"] or "").ljust(6, "0")
    return f"{match['date']}T{match['time']}.{frac}Z{match['bc'] or ''}"


def _put_json(document: dict[str, Any], key: str, text: str) -> None:
    if not _has_astral(text):
        try:
            # The common case in one C-speed pass: every number an integer of at most 15
            # digits, every character in the BMP, so the value is exact and plain. A text
            # with no digit followed by ".", "e" or 15 more digits holds no fraction,
            # exponent or long integer anywhere, and orjson reads it (as json does: the
            # same values, the same errors, the last of repeated keys). Otherwise the
            # decoder whose hooks take plain fractions (12.5, 12.50, 24.0) and short
            # integers and refuse the rest reads it.
            value = orjson.loads(text) if _FLOATISH.search(text) is None else _SIMPLE.decode(text)
            if text.count("[") + text.count("{") <= MAX_JCS_DEPTH or _depth_within(
                value, MAX_JCS_DEPTH
            ):
                document[key] = value
                return
        except (_NeedsCare, ValueError, RecursionError):
            pass
    try:
        parsed = _Parsed(text)
    except ValueError as exc:
        raise LeafError(f"{key} is not JSON: {exc}") from None
    if parsed.exact:
        document[key] = parsed.value
        document[_PLAIN] = document.get(_PLAIN, True) and parsed.plain
    else:
        document[key + "_text"] = text


def _has_astral(text: str) -> bool:
    """Does ``text`` hold a character outside the BMP, or the escape of one?"""
    if "\\u" in text and _ASTRAL_ESCAPE.search(text) is not None:
        return True
    if text.isascii():  # C speed: most documents
        return False
    # A character outside the BMP takes two UTF-16 code units: one C pass, where a regex
    # over a non-ASCII text took 4 us and max() made a str per character.
    return len(text.encode("utf-16-le", "surrogatepass")) != 2 * len(text)


class _NeedsCare(Exception):
    """The document holds a number the simple decoder leaves to :class:`_Parsed`."""


def _refuse(_literal: str) -> Any:
    raise _NeedsCare


def _short_integer(literal: str) -> int:
    if len(literal) > 15 and len(literal.lstrip("-")) > 15:
        raise _NeedsCare
    return int(literal)


def _plain_fraction(literal: str) -> float | int:
    """The exact value of a number literal with a fraction (no exponent: the careful pass
    takes those), when it is plain: a whole number of at most 15 digits (``24.0`` is 24,
    as in the careful pass) or the shortest round trip of its double once trailing zeros
    go (``12.50`` is 12.5). Anything else is left to the careful pass."""
    if "e" in literal or "E" in literal:
        raise _NeedsCare
    as_float = float(literal)
    if repr(as_float) == literal and not as_float.is_integer():
        return as_float
    trimmed = literal.rstrip("0")
    if trimmed.endswith("."):
        whole = trimmed[:-1]
        if len(whole) <= 15:
            return int(whole)
    elif repr(as_float) == trimmed:
        return as_float
    raise _NeedsCare


# Exponents, NaN/Infinity, integers past 15 digits and fractions that are not plain are
# refused (hooks run only for numbers, so the pass stays in C), and the careful pass below
# takes over.
_SIMPLE: Final = json.JSONDecoder(
    parse_float=_plain_fraction, parse_int=_short_integer, parse_constant=_refuse
)


# Where a number with a fraction, an exponent or 16+ digits could start (or a string
# merely holding such characters: then the hooked decoder decides).
_FLOATISH: Final = re.compile(r"[0-9](?:[.eE]|[0-9]{15})")
_LONG_DIGITS: Final = re.compile(r"\d{16}")
_PLAIN: Final = "\0plain"  # a scratch member of the leaf document, removed before printing
# The escape of a character outside the BMP (a surrogate pair such as \ud83d\ude00).
_ASTRAL_ESCAPE: Final = re.compile(r"\\u[dD][89abAB]")


class _Parsed:
    """``text`` parsed for the JSON form, with every number checked (the careful pass for
    what the simple decoder refuses).

    ``exact``: RFC 8785 can carry the value exactly (see the module doc), so it goes in as
    a value. ``plain``: moreover ``orjson`` (keys sorted) prints it exactly as
    RFC 8785 does (no number in exponent form, no character outside the Basic
    Multilingual Plane, where UTF-16 order can differ from code point order), so the fast
    printer may be used. Which printer runs never changes the bytes (a property test checks
    it); which *form* is used depends on the value alone.
    """

    __slots__ = ("exact", "plain", "value")

    def __init__(self, text: str) -> None:
        self.exact = True
        self.plain = not _has_astral(text)
        self.value: Any = None
        # Integers go through C unless a run of 16 digits could be one past 2**53.
        decoder = json.JSONDecoder(
            parse_float=self._decimal,
            parse_int=self._integer if _LONG_DIGITS.search(text) else None,
        )
        try:
            self.value = decoder.decode(text)
        except RecursionError:
            self.exact = False
            return
        if self.exact and text.count("[") + text.count("{") > MAX_JCS_DEPTH:
            self.exact = _depth_within(self.value, MAX_JCS_DEPTH)

    def _integer(self, literal: str) -> Any:
        number = int(literal)
        if abs(number) > _SAFE_INT:
            return self._double(Decimal(number))
        return number

    def _decimal(self, literal: str) -> Any:
        as_float = float(literal)
        if repr(as_float) == literal and not as_float.is_integer() and "e" not in literal:
            # The literal is its double's shortest round trip (12.5, -0.25): exact, and
            # printed as written. Anything else takes the exact comparison below.
            return as_float
        number = Decimal(literal)
        if number == number.to_integral_value() and abs(number) <= _SAFE_INT:
            return int(number)
        return self._double(number)

    def _double(self, number: Decimal) -> float:
        try:
            as_float = _as_float(number)
        except _NotExact:
            self.exact = False
            return 0.0
        if "e" in repr(as_float) or as_float.is_integer():
            # ES6 prints 1e20 as 100000000000000000000 (Python: 1e+20) and 2**53 as
            # 9007199254740992 (Python: 9007199254740992.0): the library prints those.
            self.plain = False
        return as_float


def _depth_within(value: Any, limit: int) -> bool:
    """Is ``value`` nested at most ``limit`` levels deep? Iterative."""
    stack = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return False
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return True


def _canonical(document: dict[str, Any]) -> bytes:
    """The RFC 8785 bytes of the leaf document: ``orjson`` where it prints the same
    bytes, the ``rfc8785`` library otherwise. A value RFC 8785 cannot print at all (a lone
    surrogate, which ``jsonb`` refuses anyway) goes in as its JSON text."""
    plain = document.pop(_PLAIN, True) and not _has_astral(document["event_type"])
    if plain:
        try:
            # orjson prints what RFC 8785 does here: keys in code point order (UTF-16 order
            # within the BMP), the same escapes, integers and shortest round-trip doubles.
            return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:
            pass
    try:
        return rfc8785.dumps(document)
    except rfc8785.CanonicalizationError:
        for key in ("payload", "metadata"):
            if key in document:
                document[key + "_text"] = json.dumps(document.pop(key), ensure_ascii=False)
        return rfc8785.dumps(document)


def _as_float(number: Decimal) -> float:
    try:
        as_float = float(number)
        if as_float != as_float or as_float in (float("inf"), float("-inf")):
            raise _NotExact
        if Decimal(repr(as_float)) != number:
            raise _NotExact
    except InvalidOperation:
        raise _NotExact from None
    return as_float
