"""The CSV export's format, in plain Python: columns, cells, rows and file names.

The bulk export is produced by PostgreSQL (``COPY (SELECT ...) TO STDOUT WITH (FORMAT csv)``,
see :mod:`.csv_export`), because a Python row loop measured ten times slower. This module
is the format's *reference*: the record history CSV and masked exports are written with it,
and the tests check that it and the SQL projection produce the same bytes for the same rows.

Format, decided once for every CSV the dashboard writes:

- UTF-8 without a byte-order mark, a header row, records ended by CRLF and fields quoted
  as RFC 4180 section 2 says: a field holding a comma, a double quote, CR or LF is enclosed
  in double quotes and its double quotes are doubled. An empty *text* is written ``""`` and
  an absent value (SQL NULL) as nothing, which is exactly what PostgreSQL's CSV COPY does.
- OWASP "CSV Injection": a spreadsheet runs a cell that starts with ``=``, ``+``, ``-``,
  ``@``, tab or carriage return as a formula (``=HYPERLINK(...)``, ``@SUM(...)``, DDE
  payloads). Every text cell that starts with one of them gets a leading apostrophe, which
  spreadsheets show as text and which a reader of the raw file can still recognise. A cell
  that starts with an apostrophe itself gets one more, so the rule can be undone exactly
  (strip one leading ``'``): the tamper-evidence check recomputes each row's sealed bytes
  from the CSV alone (:func:`dashboard.integrity.leaf.leaf_bytes_from_csv`).
  Timestamps, ``seq`` and UUIDs cannot start with those characters, so only the columns
  carrying free text and JSON are checked (a payload that is a negative number, ``-5``,
  becomes ``'-5``: the safe reading wins over the literal one).
- ``created_at`` in ISO 8601, UTC, with an explicit ``+00:00`` offset and the fraction of a
  second without trailing zeros (``2024-05-01T10:00:00.25+00:00``), as PostgreSQL prints it
  (a second per million rows cheaper than ``to_char``); the text still sorts in time order,
  and it does not depend on the server's ``TimeZone`` or ``DateStyle``.
- ``payload`` and ``metadata`` as PostgreSQL's own ``jsonb`` text (``{"a": 1, "b": [1, 2]}``,
  keys in jsonb order), so the same row always gives the same bytes — reports are
  reproducible from the filter and the high-water mark.

This module is pure: no Flask, no database.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

__all__ = [
    "CHUNK_BYTES",
    "CSV_COLUMNS",
    "ESCAPED_STARTS",
    "FORMULA_TRIGGERS",
    "NEUTRALISED_COLUMNS",
    "EncodedCsv",
    "content_disposition",
    "csv_field",
    "csv_record",
    "event_csv_cells",
    "export_filename",
    "format_created_at",
    "jsonb_text",
    "metadata_text",
    "neutralise_formula",
]

CSV_COLUMNS: Final[tuple[str, ...]] = (
    "created_at",
    "seq",
    "event_id",
    "aggregate_id",
    "kind",
    "event_type",
    "actor",
    "ip",
    "reason",
    "request_id",
    "payload",
    "metadata",
)
"""The export's columns, in order (the issue's list)."""

NEUTRALISED_COLUMNS: Final[frozenset[str]] = frozenset(
    {"kind", "event_type", "actor", "ip", "reason", "request_id", "payload", "metadata"}
)
"""Columns that can hold text starting with a formula trigger (see the module doc)."""

FORMULA_TRIGGERS: Final[tuple[str, ...]] = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet evaluate a cell (OWASP, "CSV Injection")."""

FORMULA_ESCAPE: Final = "'"
ESCAPED_STARTS: Final[tuple[str, ...]] = (*FORMULA_TRIGGERS, FORMULA_ESCAPE)
"""First characters that get the escape: the triggers, and the escape itself (reversible)."""
LINE_END: Final = "\r\n"  # RFC 4180, section 2, rule 1
CHUNK_BYTES: Final = 64 * 1024  # what a streamed export hands the server at a time
TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%S"

_NEEDS_QUOTES = re.compile(r'[",\r\n]')


def neutralise_formula(text: str | None) -> str | None:
    """``text`` made safe to open in a spreadsheet (OWASP CSV injection); None stays None."""
    if text and text.startswith(ESCAPED_STARTS):
        return FORMULA_ESCAPE + text
    return text


def csv_field(value: str | None) -> str:
    """One field as RFC 4180 writes it, and as PostgreSQL's CSV COPY does.

    ``None`` (SQL NULL) is an empty field; an empty string is ``""`` so the two differ.
    """
    if value is None:
        return ""
    if value == "" or _NEEDS_QUOTES.search(value):
        return '"' + value.replace('"', '""') + '"'
    return value


def csv_record(values: Sequence[str | None]) -> bytes:
    """One CSV record, UTF-8, ended by CRLF."""
    return (",".join(csv_field(value) for value in values) + LINE_END).encode("utf-8")


def csv_header(columns: Sequence[str] = CSV_COLUMNS) -> bytes:
    return csv_record(columns)


class EncodedCsv:
    """A CSV written in Python, in chunks of about :data:`CHUNK_BYTES`, with a running
    SHA-256: the same interface as the COPY stream (``rows``, ``sha256``, ``complete`` once
    iterated to the end), for the exports that need Python (masking, replay).

    Closing it early closes ``rows`` too, so a server-side cursor behind it ends at once.
    """

    def __init__(
        self,
        header: Sequence[str],
        rows: Iterable[Sequence[str | None]],
        chunk_bytes: int = CHUNK_BYTES,
    ):
        self.header = tuple(header)
        self.source = rows
        self.chunk_bytes = chunk_bytes
        self.rows = 0
        self.sha256: str | None = None
        self.complete = False

    def __iter__(self) -> Iterator[bytes]:
        hasher = hashlib.sha256()
        buffer = bytearray(csv_record(self.header))
        count = 0
        source = iter(self.source)
        try:
            for values in source:
                buffer += csv_record(values)
                count += 1
                if len(buffer) >= self.chunk_bytes:
                    chunk = bytes(buffer)
                    buffer.clear()
                    hasher.update(chunk)
                    self.rows = count  # so far, for progress
                    yield chunk
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()
        chunk = bytes(buffer)
        hasher.update(chunk)
        yield chunk
        self.rows = count
        self.sha256 = hasher.hexdigest()
        self.complete = True


def format_created_at(moment: datetime) -> str:
    """``2024-05-01T10:00:00.25+00:00``: UTC, explicit offset, the fraction of a second
    without trailing zeros (none when zero) — PostgreSQL's ISO output, which the COPY
    export prints; the text still sorts in time order."""
    if moment.utcoffset() is None:
        raise ValueError(f"{moment.isoformat()} has no time zone; audit times are aware")
    utc = moment.astimezone(UTC)
    text = utc.strftime(TIME_FORMAT)
    if utc.microsecond:
        text += "." + f"{utc.microsecond:06d}".rstrip("0")
    return text + "+00:00"


def jsonb_text(value: Any) -> str:
    """JSON text as PostgreSQL prints ``jsonb``: ``", "`` and ``": "`` separators, no ASCII
    escaping, keys in the order given (values decoded from jsonb keep jsonb's order).

    Numbers decoded to Python floats print as Python prints them; the SQL export prints
    jsonb's exact numeric, so only a masked document (which goes through Python) can differ
    there, in the digits of a float that had more precision than a double.
    """
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), allow_nan=False)


def metadata_text(metadata: Mapping[str, Any] | None, key: str) -> str | None:
    """``metadata ->> key``: the text of a string, the JSON of anything else, NULL for
    an absent key or a JSON null."""
    if not isinstance(metadata, Mapping):
        return None
    value = metadata.get(key)
    if value is None:
        return None
    return value if isinstance(value, str) else jsonb_text(value)


def event_csv_cells(
    *,
    created_at: datetime,
    seq: int | None,
    event_id: Any,
    aggregate_id: Any,
    kind: str | None,
    event_type: str,
    payload: Any,
    metadata: Mapping[str, Any] | None,
    payload_text: str | None = None,
    metadata_text_value: str | None = None,
) -> list[str | None]:
    """The export's cells for one event, in :data:`CSV_COLUMNS` order, neutralised.

    The Python twin of the SQL projection in :mod:`.csv_export`. ``payload_text`` and
    ``metadata_text_value`` are PostgreSQL's own jsonb text when the documents were not
    masked, so numbers keep jsonb's exact digits.
    """
    request_id = metadata_text(metadata, "request_id")
    if request_id is None:
        request_id = metadata_text(metadata, "correlation_id")
    raw: dict[str, str | None] = {
        "created_at": format_created_at(created_at),
        "seq": None if seq is None else str(seq),
        "event_id": str(event_id),
        "aggregate_id": str(aggregate_id),
        "kind": kind,
        "event_type": event_type,
        "actor": metadata_text(metadata, "actor"),
        "ip": metadata_text(metadata, "ip"),
        "reason": metadata_text(metadata, "reason"),
        "request_id": request_id,
        "payload": payload_text if payload_text is not None else jsonb_text(payload),
        "metadata": (
            None
            if metadata is None
            else metadata_text_value
            if metadata_text_value is not None
            else jsonb_text(metadata)
        ),
    }
    return [
        neutralise_formula(raw[column]) if column in NEUTRALISED_COLUMNS else raw[column]
        for column in CSV_COLUMNS
    ]


# --- File names ------------------------------------------------------------------------------

_SLUG_UNSAFE = re.compile(r"[^\w.@+-]+", re.UNICODE)
_MAX_SLUG = 120


def _slug(text: str) -> str:
    return _SLUG_UNSAFE.sub("-", text).strip("-._")


def _compact_time(text: str) -> str:
    """``2024-05-01T00:00:00+02:00`` -> ``20240501T000000+0200`` (file-name friendly)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    stamp = moment.strftime("%Y%m%dT%H%M%S")
    offset = moment.strftime("%z")
    return stamp + ("Z" if offset in ("+0000", "") else offset)


def export_filename(
    prefix: str,
    filter_args: Iterable[tuple[str, str]],
    generated_at: datetime,
    extension: str,
) -> str:
    """``audit-events_type-USER_CREATED_from-20240501T000000Z_20241127T170500Z.csv``.

    The name carries the filter (every argument, in the filter's canonical order) and the
    time it was made, so a downloaded file says what it holds. Characters a file system or
    a shell would trip on become ``-``; letters of any script stay (the ASCII fallback of
    :func:`content_disposition` handles old clients). A filter too long for a file name is
    shortened and a hash of the whole of it appended, so two filters never share a name.
    """
    parts = []
    for name, value in filter_args:
        if name in ("order", "tz"):
            continue  # how the rows are shown, not which rows are in the file
        shown = _compact_time(value) if name in ("from", "to", "at") else value
        parts.append(f"{name}-{_slug(shown)}")
    slug = "_".join(part for part in parts if part)
    if len(slug) > _MAX_SLUG:
        digest = hashlib.sha256(slug.encode("utf-8")).hexdigest()[:10]
        slug = slug[:_MAX_SLUG].rstrip("-_") + "_" + digest
    stamp = generated_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return "_".join(part for part in (prefix, slug or "all", stamp) if part) + "." + extension


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII ``filename`` and the exact one in ``filename*``
    (RFC 6266 / RFC 8187), so ``Zoë`` survives in browsers and curl ``-OJ`` still works."""
    ascii_name = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode("ascii")
    ascii_name = re.sub(r"[^A-Za-z0-9._@+-]+", "-", ascii_name) or "export"
    quoted = urllib.parse.quote(filename, safe="")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quoted}"
