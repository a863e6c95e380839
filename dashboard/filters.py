"""Search filters: request arguments parsed once into a frozen :class:`EventFilter`.

The search page, the JSON API (``/api/events``), the CSV/PDF exports and the ``report``
command all read the same arguments through :func:`parse_event_filter`, so a link copied
from one of them means the same thing in the others. Parsing is strict: a malformed UUID or
date, ``from`` not before ``to``, an unknown argument name, a payload value that is not JSON,
a limit outside 1..1000 or a tampered cursor raises :class:`FilterError` naming the form
field at fault — every bad field at once (:class:`Problems` gathers them); the views turn it
into a 400 with the form shown again, each message beside its field (pages), or
``{"error": ..., "problems": [...]}`` (API). Nothing here builds SQL: :mod:`dashboard.queries`
binds every value.

Arguments (all optional; an empty value counts as absent, as HTML forms send empty fields):

==============  =================================================================
``aggregate_id``  one record's UUID
``type``          an event type; repeat it for several (matched exactly)
``actor``         ``metadata.actor``, matched exactly
``from``          inclusive lower bound, ISO 8601 (``2024-05-01``, ``2024-05-01T10:00``,
                  ``2024-05-01T10:00:00+02:00``, ``...Z``)
``to``            exclusive upper bound, same forms (``to=2024-05-02`` ends before May 2)
``range``         a preset instead of from/to: ``1h``, ``24h``, ``7d``, ``30d`` before
                  *now*; ``custom`` (or empty) means "use from/to"
``tz``            IANA zone (``Europe/Berlin``) in which a from/to *without* an offset is
                  read; default UTC, so the API's "a time without offset is UTC" holds
``request_id``    ``metadata.request_id``, or ``metadata.correlation_id`` when absent
``field``         a dotted payload path (``profile.email``), with ``value``:
``value``         a JSON value (``"a@b.example"`` with quotes, ``42``, ``true``, ``null``,
                  ``{"x": 1}``); the event matches when its payload *contains* it at that
                  path (PostgreSQL ``@>``). Text must be quoted: ``value=alice`` is not JSON
                  and answers 400 instead of guessing, so ``42`` and ``"42"`` stay distinct.
``kind``          the record kind (``USER``), see :func:`dashboard.rules.derive_kind`
``order``         ``desc`` (newest first, the default) or ``asc``
``limit``         page size 1..1000, default 50 (see :func:`parse_limit`)
``cursor``        opaque position: the page continuing after it (see :class:`Cursor`)
``before``        opaque position: the page ending just before it ("newer" links)
==============  =================================================================

This module is pure: no Flask, no database.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any, Final, Literal, TypeVar

_T = TypeVar("_T")

__all__ = [
    "DEFAULT_LIMIT",
    "FILTER_ARGS",
    "MAX_LIMIT",
    "MIN_ID_PREFIX",
    "PAGING_ARGS",
    "RANGE_PRESETS",
    "Cursor",
    "EventFilter",
    "FilterError",
    "IdPrefix",
    "Paging",
    "Problem",
    "Problems",
    "check_arg_names",
    "decode_id_cursor",
    "encode_id_cursor",
    "parse_aggregate_id",
    "parse_event_filter",
    "parse_event_id",
    "parse_id_prefix",
    "parse_limit",
    "parse_paging",
    "parse_payload_path",
    "parse_search",
    "parse_time",
    "parse_timezone",
]

Order = Literal["desc", "asc"]

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 1000
# Long enough for any real actor, type or request id; longer input is a mistake or a probe
# and is refused before it reaches the database.
MAX_TEXT_LENGTH: Final = 320
MAX_TYPES: Final = 50
MAX_PATH_DEPTH: Final = 16
MAX_VALUE_LENGTH: Final = 4000

RANGE_PRESETS: Final[dict[str, tuple[timedelta, str]]] = {
    "1h": (timedelta(hours=1), "the last hour"),
    "24h": (timedelta(days=1), "the last day"),
    "7d": (timedelta(days=7), "the last 7 days"),
    "30d": (timedelta(days=30), "the last 30 days"),
}
_CUSTOM_RANGE: Final = frozenset({"", "custom"})

FILTER_ARGS: Final = (
    "aggregate_id",
    "type",
    "actor",
    "from",
    "to",
    "range",
    "tz",
    "request_id",
    "field",
    "value",
    "kind",
    "order",
)
PAGING_ARGS: Final = ("limit", "cursor", "before")
_REPEATABLE: Final = frozenset({"type"})

# "+02:00" arrives as " 02:00" when a link was typed without percent-encoding the "+".
_OFFSET_LOST_PLUS = re.compile(r"^(.*\d)[ ](\d{2}:?\d{2})$")
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one form field (``field`` None: with the form as a whole)."""

    field: str | None
    message: str


class FilterError(ValueError):
    """Input a person can fix; ``field`` names the form field (argument) at fault.

    One error may carry several ``problems`` (every bad field of a form, see
    :class:`Problems`); ``message`` and ``field`` are then the first one's, and
    ``problems`` lists them all. A plain ``ValueError`` so this module stays free of Flask;
    :mod:`dashboard.errors` answers it with 400, and pages catch it to show the form again
    with each message next to its field.
    """

    def __init__(self, message: str, field: str | None = None, *, problems: Iterable[Problem] = ()):
        super().__init__(message)
        self.message = message
        self.field = field
        self.problems: tuple[Problem, ...] = tuple(problems) or (Problem(field, message),)

    @classmethod
    def of(cls, problems: Iterable[Problem]) -> FilterError:
        """One error reporting every problem (at least one)."""
        problems = tuple(problems)
        first = problems[0]
        if len(problems) == 1:
            return cls(first.message, first.field)
        return cls(" ".join(p.message for p in problems), first.field, problems=problems)

    @property
    def by_field(self) -> dict[str | None, str]:
        """``{field: message}`` for showing each message beside its field (the messages of
        one field joined; ``None`` holds those about the form as a whole)."""
        shown: dict[str | None, str] = {}
        for problem in self.problems:
            if problem.field in shown:
                shown[problem.field] += " " + problem.message
            else:
                shown[problem.field] = problem.message
        return shown


class Problems:
    """Gathers the problems of independent parses, so that a form reports every bad field
    at once instead of the first one only.

    ``problems.check(parse_time, text, "from")`` returns what the parse returns, or None
    after noting its FilterError; :meth:`raise_any` raises one FilterError with them all.
    """

    def __init__(self) -> None:
        self.found: list[Problem] = []

    def check(self, parse: Callable[..., _T], *args: Any, **kwargs: Any) -> _T | None:
        try:
            return parse(*args, **kwargs)
        except FilterError as exc:
            self.add(exc)
            return None

    def add(self, error: FilterError) -> None:
        self.found.extend(p for p in error.problems if p not in self.found)

    def failed(self, *fields: str | None) -> bool:
        """True when one of ``fields`` (any field, when none is named) has a problem."""
        return any(not fields or p.field in fields for p in self.found)

    def raise_any(self) -> None:
        if self.found:
            raise FilterError.of(self.found)


@dataclass(frozen=True)
class EventFilter:
    """What to search for; every field optional. Times are aware and in UTC.

    ``time_from`` is inclusive and ``time_to`` exclusive. ``tz`` is only how the user wrote
    and wants to read times; it never changes which events match.
    """

    aggregate_id: uuid.UUID | None = None
    types: tuple[str, ...] = ()
    actor: str | None = None
    time_from: datetime | None = None
    time_to: datetime | None = None
    request_id: str | None = None
    payload_path: tuple[str, ...] | None = None
    # Parsed JSON (may be a dict), so it takes no part in hashing.
    payload_value: Any = field(default=None, hash=False)
    kind: str | None = None
    order: Order = "desc"
    tz: str = "UTC"

    @property
    def is_empty(self) -> bool:
        """True when nothing narrows the search (the order and zone do not count)."""
        return (
            self.aggregate_id is None
            and not self.types
            and self.actor is None
            and self.time_from is None
            and self.time_to is None
            and self.request_id is None
            and self.payload_path is None
            and self.kind is None
        )

    @property
    def is_bounded(self) -> bool:
        """True when the filter limits the rows to count to a known slice of the table.

        Facet counts run only then: DESIGN.md forbids COUNT(*) over an unbounded range.
        """
        return (
            self.aggregate_id is not None
            or self.request_id is not None
            or (self.time_from is not None and self.time_to is not None)
        )

    @property
    def payload_document(self) -> Any:
        """The JSON document ``payload @> document`` tests: the value nested under the path.

        ``("profile", "email")`` and ``"a@b"`` give ``{"profile": {"email": "a@b"}}``.
        """
        if self.payload_path is None:
            return None
        document = self.payload_value
        for key in reversed(self.payload_path):
            document = {key: document}
        return document

    def describe(self) -> str:
        """The filter in plain words, shown above the results and in report headers.

        ``events of type USER_UPDATED by alice@example.com from 2024-05-01 00:00:00+00:00
        to 2024-05-02 00:00:00+00:00, newest first``.
        """
        parts = ["events"]
        if self.kind:
            parts.append(f"of {self.kind} records")
        if self.types:
            parts.append("of type " + _or_list(self.types))
        if self.aggregate_id is not None:
            parts.append(f"of record {self.aggregate_id}")
        if self.actor is not None:
            parts.append(f"by {self.actor}")
        if self.request_id is not None:
            parts.append(f"in request {self.request_id}")
        if self.payload_path is not None:
            shown = json.dumps(self.payload_value, ensure_ascii=False)
            parts.append(f"whose payload has {'.'.join(self.payload_path)} = {shown}")
        if self.time_from is not None:
            parts.append("from " + self.format_time(self.time_from))
        if self.time_to is not None:
            parts.append(
                ("to " if self.time_from is not None else "before ")
                + self.format_time(self.time_to)
            )
        if len(parts) == 1:
            parts.insert(0, "all")
        words = " ".join(parts)
        return words + (", newest first" if self.order == "desc" else ", oldest first")

    def format_time(self, moment: datetime) -> str:
        """A time in the filter's zone, with its offset (and the zone's name unless UTC)."""
        local = moment.astimezone(_zone(self.tz))
        text = local.isoformat(sep=" ", timespec="seconds")
        return text if self.tz == "UTC" else f"{text} ({self.tz})"

    def to_args(self) -> list[tuple[str, str]]:
        """The filter as query arguments, for links, permalinks and file names.

        Times are absolute (a preset like ``range=1h`` has been resolved), written in the
        filter's zone with their offset, so the link means the same thing tomorrow.
        ``parse_event_filter(MultiDict(f.to_args())) == f``.
        """
        args: list[tuple[str, str]] = []
        if self.aggregate_id is not None:
            args.append(("aggregate_id", str(self.aggregate_id)))
        args.extend(("type", event_type) for event_type in self.types)
        if self.actor is not None:
            args.append(("actor", self.actor))
        zone = _zone(self.tz)
        if self.time_from is not None:
            args.append(("from", self.time_from.astimezone(zone).isoformat()))
        if self.time_to is not None:
            args.append(("to", self.time_to.astimezone(zone).isoformat()))
        if self.tz != "UTC":
            args.append(("tz", self.tz))
        if self.request_id is not None:
            args.append(("request_id", self.request_id))
        if self.payload_path is not None:
            args.append(("field", ".".join(self.payload_path)))
            args.append(("value", json.dumps(self.payload_value, ensure_ascii=False)))
        if self.kind is not None:
            args.append(("kind", self.kind))
        if self.order != "desc":
            args.append(("order", self.order))
        return args


@dataclass(frozen=True)
class Cursor:
    """A keyset position: the last row of a page, ``(created_at, seq, event_id)``.

    Encoded as unpadded URL-safe base64 of a small JSON array. It is opaque to users but not
    secret: a hand-made cursor can only move the page to another position, since every part
    is bound as a parameter. Both ``seq`` and ``event_id`` are kept so one cursor works
    whether or not the table has ``seq``.
    """

    created_at: datetime
    seq: int | None
    event_id: uuid.UUID

    def encode(self) -> str:
        raw = json.dumps(
            [self.created_at.astimezone(UTC).isoformat(), self.seq, str(self.event_id)],
            separators=(",", ":"),
        )
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Raise FilterError(field="cursor") for anything :meth:`encode` did not produce."""
        problem = FilterError(
            "The page cursor is damaged; go back to the first page and page through again.",
            "cursor",
        )
        if not text or len(text) > 200:
            raise problem
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            created_text, seq, event_text = json.loads(raw.decode())
            created_at = datetime.fromisoformat(created_text)
            event_id = uuid.UUID(event_text)
        except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
            raise problem from None
        if created_at.tzinfo is None or not (
            seq is None or (isinstance(seq, int) and not isinstance(seq, bool))
        ):
            raise problem
        return cls(created_at=created_at.astimezone(UTC), seq=seq, event_id=event_id)

    @classmethod
    def after(cls, row: Mapping[str, Any]) -> Cursor:
        """The cursor that continues after ``row`` (a mapping with the three columns)."""
        mapping = getattr(row, "_mapping", row)
        event_id = mapping["event_id"]
        return cls(
            created_at=mapping["created_at"],
            seq=mapping.get("seq"),
            event_id=event_id if isinstance(event_id, uuid.UUID) else uuid.UUID(str(event_id)),
        )


@dataclass(frozen=True)
class Paging:
    """Where a page starts: after ``cursor`` in the filter's order, or, when ``backward``,
    the ``limit`` rows just before it (the "newer" link of a newest-first page)."""

    cursor: Cursor | None = None
    limit: int = DEFAULT_LIMIT
    backward: bool = False


def parse_event_filter(
    args: Mapping[str, Any],
    *,
    allowed_extra: Iterable[str] = (),
    now: datetime | None = None,
) -> EventFilter:
    """Parse search arguments (a werkzeug ``MultiDict`` or ``{name: [values]}``).

    ``limit`` and ``cursor`` are accepted (read them with :func:`parse_paging`), as are the
    names in ``allowed_extra`` (a page's own arguments); any other name is refused, so a
    misspelt filter never silently widens a search. ``now`` anchors ``range`` presets.
    """
    values = _multi(args)
    allowed = set(FILTER_ARGS) | set(PAGING_ARGS) | set(allowed_extra)
    problems = Problems()
    for name in values:
        if name not in allowed:
            problems.add(
                FilterError(
                    f"Unknown filter {_shorten(name)!r}. Use: {', '.join(FILTER_ARGS)}.",
                    _safe_field(name),
                )
            )
    for name, items in values.items():
        if name not in _REPEATABLE and name in allowed and len(_present(items)) > 1:
            problems.add(_repeated(name, items))

    def one(name: str) -> str | None:
        present = _present(values.get(name, []))
        return present[0] if present else None

    # Each field on its own, so that every bad one is reported at once.
    tz = problems.check(parse_timezone, one("tz")) or "UTC"
    aggregate_id = problems.check(parse_aggregate_id, one("aggregate_id"))
    types = problems.check(_parse_types, values.get("type", [])) or ()
    actor = problems.check(_text, one("actor"), "actor")
    request_id = problems.check(_text, one("request_id"), "request_id")
    kind = problems.check(_text, one("kind"), "kind")
    order = one("order") or "desc"
    if order not in ("desc", "asc"):
        problems.add(
            FilterError("Order must be 'desc' (newest first) or 'asc' (oldest first).", "order")
        )

    time_range = problems.check(_parse_range, one("range"), one("from"), one("to"), tz, now)
    time_from, time_to = time_range or (None, None)

    field_text, value_text = one("field"), one("value")
    payload_path: tuple[str, ...] | None = None
    payload_value: Any = None
    if field_text is not None or value_text is not None:
        if field_text is None:
            problems.add(FilterError("Give the payload field the value applies to.", "field"))
        else:
            payload_path = problems.check(parse_payload_path, field_text)
        if value_text is None:
            problems.add(
                FilterError(
                    'Give a JSON value for the payload field ("text" in quotes, 42, true, null).',
                    "value",
                )
            )
        else:
            payload_value = problems.check(_parse_json_value, value_text)
    problems.raise_any()

    return EventFilter(
        aggregate_id=aggregate_id,
        types=types,
        actor=actor,
        time_from=time_from,
        time_to=time_to,
        request_id=request_id,
        payload_path=payload_path,
        payload_value=payload_value,
        kind=kind,
        order=order,  # type: ignore[arg-type]  # checked above
        tz=tz,
    )


def parse_search(
    args: Mapping[str, Any], *, default_limit: int = DEFAULT_LIMIT
) -> tuple[EventFilter, Paging]:
    """A search's filter and page position, every bad argument reported at once."""
    problems = Problems()
    f = problems.check(parse_event_filter, args)
    paging = problems.check(parse_paging, args, default_limit=default_limit)
    problems.raise_any()
    assert f is not None and paging is not None  # parsed without a problem
    return f, paging


def check_arg_names(args: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Refuse argument names a page does not know, and repeats of the ones it does.

    Pages without a search filter (a record, a diff) use this, so that a misspelt ``?at=``
    is a 400 naming it instead of a page silently showing something else.
    """
    allowed = tuple(allowed)
    values = _multi(args)
    problems = Problems()
    for name, items in values.items():
        if name not in allowed:
            problems.add(
                FilterError(
                    f"Unknown argument {_shorten(name)!r}; this page takes: {', '.join(allowed)}.",
                    _safe_field(name),
                )
            )
        elif len(_present(items)) > 1:
            problems.add(_repeated(name, items))
    problems.raise_any()


def _repeated(name: str, items: list[str]) -> FilterError:
    return FilterError(f"Give {name!r} once, not {len(_present(items))} times.", name)


def encode_id_cursor(last_id: uuid.UUID) -> str:
    """The position of a page of records ordered by id (the as-of list): after this id."""
    return base64.urlsafe_b64encode(last_id.bytes).decode().rstrip("=")


def decode_id_cursor(text: str | None) -> uuid.UUID | None:
    if text is None or text.strip() == "":
        return None
    try:
        if len(text) != 22:
            raise ValueError
        return uuid.UUID(bytes=base64.urlsafe_b64decode(text + "=="))
    except (binascii.Error, ValueError):
        raise FilterError(
            "The page cursor is damaged; go back to the first page and page through again.",
            "cursor",
        ) from None


def parse_paging(args: Mapping[str, Any], *, default_limit: int = DEFAULT_LIMIT) -> Paging:
    """``cursor`` and ``limit`` of a paginated request."""
    values = _multi(args)
    cursor_items = _present(values.get("cursor", []))
    before_items = _present(values.get("before", []))
    limit_items = _present(values.get("limit", []))
    problems = Problems()
    if len(cursor_items) + len(before_items) > 1:
        problems.add(FilterError("Give one page position: 'cursor' or 'before', once.", "cursor"))
    if len(limit_items) > 1:
        problems.add(FilterError("Give 'limit' once.", "limit"))
    limit = problems.check(
        parse_limit, limit_items[0] if limit_items else None, default=default_limit
    )
    position = (before_items or cursor_items)[:1]
    cursor = problems.check(Cursor.decode, position[0]) if position else None
    problems.raise_any()
    assert limit is not None  # no problem was found, so the parse returned
    return Paging(cursor=cursor, limit=limit, backward=bool(before_items))


def parse_limit(text: str | None, *, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    """A page size in 1..maximum; absent or empty gives ``default``."""
    if text is None or text.strip() == "":
        return default
    text = text.strip()
    if not text.isdigit() or len(text) > 7 or not 1 <= int(text) <= maximum:
        raise FilterError(f"The limit must be a whole number from 1 to {maximum}.", "limit")
    return int(text)


def parse_aggregate_id(text: str | None, field_name: str = "aggregate_id") -> uuid.UUID | None:
    return _parse_uuid(text, field_name, "a record id")


def parse_event_id(text: str | None, field_name: str = "event_id") -> uuid.UUID | None:
    return _parse_uuid(text, field_name, "an event id")


MIN_ID_PREFIX: Final = 8  # hex digits: the short ids the pages show
_HEX_PREFIX = re.compile(rf"[0-9a-f]{{{MIN_ID_PREFIX},31}}")


@dataclass(frozen=True)
class IdPrefix:
    """The start of a UUID a person typed (the 8 digits a page shows, or more).

    ``low`` and ``high`` are the smallest and largest UUIDs with this prefix: a range scan
    of a uuid index between them finds the candidates with a few probes.
    """

    text: str  # the hex digits, lower case, without hyphens
    low: uuid.UUID
    high: uuid.UUID


def parse_id_prefix(text: str | None) -> IdPrefix | None:
    """``text`` as an id prefix (8 to 31 hex digits, hyphens anywhere ignored), else None.

    A full UUID is not a prefix (None): parse it with :func:`parse_aggregate_id`. Only pages
    read prefixes; the API keeps to full ids (see README, "Id prefixes").
    """
    if text is None or len(text) > 64:
        return None
    digits = text.strip().lower().replace("-", "")
    if not _HEX_PREFIX.fullmatch(digits):
        return None
    pad = 32 - len(digits)
    return IdPrefix(digits, uuid.UUID(hex=digits + "0" * pad), uuid.UUID(hex=digits + "f" * pad))


def parse_timezone(text: str | None) -> str:
    """An IANA zone name from the system's zone database; absent means UTC."""
    if text is None or text.strip() == "":
        return "UTC"
    name = text.strip()
    if name not in _known_zones():
        raise FilterError(
            f"{_shorten(name)!r} is not a known time zone; use an IANA name such as UTC, "
            "Europe/Berlin or America/New_York.",
            "tz",
        )
    return name


def parse_time(text: str | None, field_name: str, *, tz: str = "UTC") -> datetime | None:
    """An ISO 8601 date or date-time; one without an offset is read in ``tz``.

    A date alone means its midnight. The result is aware and in UTC.
    """
    if text is None or text.strip() == "":
        return None
    raw = text.strip()
    fixed = _OFFSET_LOST_PLUS.match(raw)
    if fixed:
        raw = f"{fixed.group(1)}+{fixed.group(2)}"
    try:
        if len(raw) > 40:
            raise ValueError
        if _DATE_ONLY.match(raw):
            parsed = datetime.combine(date.fromisoformat(raw), datetime.min.time())
        else:
            parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise FilterError(
            f"{_shorten(text)!r} is not a date or time; write it as ISO 8601, for example "
            "2024-05-01 or 2024-05-01T14:30 or 2024-05-01T14:30:00+02:00.",
            field_name,
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_zone(tz))
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise FilterError(f"{_shorten(text)!r} is out of range.", field_name) from None


def parse_payload_path(text: str) -> tuple[str, ...]:
    """A dotted path of object keys (``profile.email``) into the payload.

    Keys containing a dot cannot be named this way; array elements are matched by
    containment (``field=tags`` ``value=["vip"]``), not by index.
    """
    keys = tuple(text.strip().split("."))
    if "\x00" in text:
        raise FilterError("The payload field contains a NUL character.", "field")
    if not text.strip() or any(key.strip() == "" for key in keys):
        raise FilterError(
            "Write the payload field as a dotted path of keys, for example profile.email.",
            "field",
        )
    if len(keys) > MAX_PATH_DEPTH or len(text) > MAX_TEXT_LENGTH:
        raise FilterError(
            f"The payload field path is too long (at most {MAX_PATH_DEPTH} keys).", "field"
        )
    return tuple(key.strip() for key in keys)


def _parse_json_value(text: str) -> Any:
    if len(text) > MAX_VALUE_LENGTH:
        raise FilterError(
            f"The payload value is too long (at most {MAX_VALUE_LENGTH} characters).", "value"
        )
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except _OutOfRange:
        raise FilterError(
            f"{_shorten(text)!r} holds a number too large to compare; numbers must be "
            "between about -1.8e308 and 1.8e308.",
            "value",
        ) from None
    except (ValueError, RecursionError):
        raise FilterError(
            f"{_shorten(text)!r} is not a JSON value. Put text in double quotes "
            '("alice@example.com"); numbers, true, false and null go without.',
            "value",
        ) from None
    _check_storable(value, text)
    return value


class _OutOfRange(ValueError):
    """A JSON number beyond a double (1e999): json.loads would make it infinity, which is
    not JSON and which jsonb refuses."""


def _reject_constant(name: str) -> Any:
    # json.loads accepts NaN and Infinity, which are not JSON and not valid in jsonb.
    raise ValueError(name)


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _OutOfRange(text)
    return number


def _check_storable(value: Any, text: str) -> None:
    """Refuse strings PostgreSQL cannot hold in jsonb: a NUL (``\\u0000``) or a lone
    surrogate (``\\ud800``, no UTF-8 at all), in keys or values, however deep.

    Iterative: the value is at most MAX_VALUE_LENGTH characters, but a walk must never
    depend on the recursion limit.
    """
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str) and not _is_storable_text(item):
            raise FilterError(
                f"{_shorten(text)!r} holds a character PostgreSQL cannot store (U+0000 or a "
                "lone surrogate such as \\ud800); no event can contain it.",
                "value",
            )


def _is_storable_text(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parse_range(
    preset: str | None,
    from_text: str | None,
    to_text: str | None,
    tz: str,
    now: datetime | None,
) -> tuple[datetime | None, datetime | None]:
    if preset is not None and preset not in _CUSTOM_RANGE:
        if preset not in RANGE_PRESETS:
            raise FilterError(
                f"Unknown time range {_shorten(preset)!r}; choose one of "
                f"{', '.join(RANGE_PRESETS)}, or custom from/to.",
                "range",
            )
        if from_text or to_text:
            raise FilterError(
                "Choose either a preset time range or custom from/to times, not both.", "range"
            )
        # Whole seconds: the resolved times go into links and datetime inputs.
        end = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
        return end - RANGE_PRESETS[preset][0], end
    problems = Problems()
    time_from = problems.check(parse_time, from_text, "from", tz=tz)
    time_to = problems.check(parse_time, to_text, "to", tz=tz)
    problems.raise_any()
    if time_from is not None and time_to is not None and time_from >= time_to:
        raise FilterError("'To' must be later than 'from' (from is inclusive, to exclusive).", "to")
    return time_from, time_to


def _parse_types(items: list[str]) -> tuple[str, ...]:
    types: list[str] = []
    for item in _present(items):
        text = _text(item, "type")
        if text is not None and text not in types:
            types.append(text)
    if len(types) > MAX_TYPES:
        raise FilterError(f"Choose at most {MAX_TYPES} event types.", "type")
    return tuple(types)


def _parse_uuid(text: str | None, field_name: str, what: str) -> uuid.UUID | None:
    """``what`` names the kind of id with its article ("an event id"): the article goes
    with the noun, so a message never reads "a event id"."""
    if text is None or text.strip() == "":
        return None
    try:
        if len(text) > 64:
            raise ValueError
        return uuid.UUID(text.strip())
    except ValueError:
        raise FilterError(
            f"{_shorten(text)!r} is not {what}; {what} is a UUID like "
            "3f2b8c1e-0d4a-4e5f-9a7b-1c2d3e4f5a6b.",
            field_name,
        ) from None


def _text(value: str | None, field_name: str) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if value == "":
        return None
    if len(value) > MAX_TEXT_LENGTH:
        raise FilterError(f"{field_name!r} is too long (at most {MAX_TEXT_LENGTH}).", field_name)
    if "\x00" in value:
        # PostgreSQL text cannot hold NUL; refusing here keeps it a 400, not a driver error.
        raise FilterError(f"{field_name!r} contains a NUL character.", field_name)
    return value


def _multi(args: Mapping[str, Any]) -> dict[str, list[str]]:
    """``{name: [values]}`` from a werkzeug MultiDict or a plain mapping."""
    if hasattr(args, "getlist"):
        return {name: [str(v) for v in args.getlist(name)] for name in args}
    result: dict[str, list[str]] = {}
    for name, value in args.items():
        if isinstance(value, list | tuple):
            result[name] = [str(v) for v in value]
        elif value is not None:
            result[name] = [str(value)]
    return result


def _present(items: list[str]) -> list[str]:
    return [item for item in items if item.strip() != ""]


def _or_list(items: Iterable[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _safe_field(name: str) -> str | None:
    return name if len(name) <= 40 else None


@cache
def _known_zones() -> frozenset[str]:
    from zoneinfo import available_timezones

    return frozenset(available_timezones()) | {"UTC"}


@cache
def _zone(name: str):
    from zoneinfo import ZoneInfo

    return UTC if name == "UTC" else ZoneInfo(name)
