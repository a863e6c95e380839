"""How events, changes and states are shown: the one place the investigation views mask
personal data and turn the event model into what templates and the JSON API print.

Every payload, metadata object, state, change and patch that leaves the search, record
and API views passes through :func:`masker` here, so a role without ``view_pii`` never
sees an unmasked value on any of them. An event is shown as
:meth:`~dashboard.masking.Masker.mask_event` makes it for the role, and an event named as
the one that set a field shows :meth:`~dashboard.masking.Masker.mask_actor` as its actor;
no function here reads a raw event's metadata for display. Templates receive small view
objects whose values are already display strings: no formatting logic in Jinja.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any, Final
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import orjson
from flask import Response, current_app, g, jsonify, url_for
from flask.json.provider import DefaultJSONProvider
from markupsafe import Markup
from sqlalchemy.engine import Connection

from .. import auth, context, db, periods, queries
from ..budget import check_budget
from ..diff import Change, side_by_side, to_json_patch
from ..events import Event
from ..filters import EventFilter
from ..jsonlimits import TooDeep
from ..jsonpointer import MISSING, PointerError, lookup_pointer, split_pointer
from ..masking import Masker
from ..replay import AggregateState
from ..rules import Rule, action_for, derive_kind, kind_of
from ..textdiff import Piece, inline_diff

# Metadata keys the dashboard understands (DESIGN.md); others are shown as they are.
KNOWN_METADATA = ("actor", "ip", "user_agent", "reason", "request_id", "correlation_id")
VALUE_PREVIEW = 160  # characters of a JSON value shown inline before it is cut
# Bounds of what one record page shows (README, "Limits"); the JSON API has every value.
PAYLOAD_PREVIEW = 5_000  # characters of an event's payload on the timeline
CHANGES_SHOWN = 100  # changes listed per event; the rest are counted and linked
# The record page's state table: an array is one row ("array of 65 items") that unfolds
# to its first ARRAY_ITEMS_SHOWN items; a value cut at VALUE_PREVIEW unfolds to at most
# VALUE_UNFOLDED characters (the state JSON has the rest).
ARRAY_ITEMS_SHOWN = 100
VALUE_UNFOLDED = 2_000
COMMON_ZONES = (
    "UTC",
    "Europe/London",
    "Europe/Berlin",
    "Europe/Warsaw",
    "America/New_York",
    "America/Chicago",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Australia/Sydney",
)

_INDEX = re.compile(r"0|[1-9][0-9]*")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


def masker() -> Masker:
    """The current user's masker (:func:`dashboard.auth.masker`: none with ``view_pii``)."""
    return auth.masker()


# --- JSON ------------------------------------------------------------------------------------

# What Flask's jsonify writes (keys sorted, compact, a final newline), but its own default()
# for the types it converts its own way (a datetime as an HTTP date, a dataclass as a dict).
_ORJSON_OPTIONS = (
    orjson.OPT_APPEND_NEWLINE | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)


def json_response(body: Any) -> Response:
    """``jsonify(body)``, serialised by orjson: a page of events in a tenth of the time. The
    same JSON value; only its spelling may differ, where JSON allows either (non-ASCII text
    as UTF-8 instead of ``\\u`` escapes, ``1e+16`` as ``1e16``). What orjson refuses goes
    through jsonify, as before: an integer beyond 64 bits, an unpaired surrogate, nesting
    past orjson's 255 levels (a :class:`~dashboard.jsonlimits.TooDeep` marker's depth)."""
    app = current_app
    provider = app.json
    if app.debug or not isinstance(provider, DefaultJSONProvider):  # indented, or customised
        return jsonify(body)
    options = _ORJSON_OPTIONS | (orjson.OPT_SORT_KEYS if provider.sort_keys else 0)
    try:
        data = orjson.dumps(body, default=provider.default, option=options)
    except orjson.JSONEncodeError:
        return jsonify(body)
    return app.response_class(data, mimetype=provider.mimetype)


def event_json(event: Event, mask: Masker) -> dict[str, Any]:
    """DESIGN.md's event JSON, masked."""
    return mask.mask_event(event).to_json()


def changes_json(changes: Sequence[Change], mask: Masker) -> dict[str, Any]:
    """``{"changes": [...], "patch": [...]}`` of /api/events/<id>/changes and /api/diff."""
    return {
        "changes": [mask.mask_change(change.to_json()) for change in changes],
        "patch": mask.mask_patch(to_json_patch(list(changes))),
    }


def state_json(
    aggregate_id: str, at: datetime, step: AggregateState, mask: Masker
) -> dict[str, Any]:
    """The /api/aggregates/<id>/state body (provenance names events, never values)."""
    return {
        "aggregate_id": aggregate_id,
        "at": at.astimezone(UTC).isoformat(),
        "exists": step.exists,
        "deleted": step.deleted,
        "state": mask.mask_document(step.state),
        "version": step.version,
        "last_event_id": step.last_event.event_id if step.last_event else None,
        "provenance": {
            path: {**source, "actor": mask.mask_actor(source["actor"])}
            for path, source in step.provenance_to_json().items()
        },
    }


# --- Display values --------------------------------------------------------------------------


def json_text(value: Any, *, limit: int | None = VALUE_PREVIEW) -> str:
    """A JSON value as compact text (strings keep their quotes, so ``"1"`` ≠ ``1``), cut
    to ``limit`` characters ending in "…"."""
    return json_preview(value, limit)[0]


def json_preview(value: Any, limit: int | None = VALUE_PREVIEW) -> tuple[str, bool]:
    """:func:`json_text` and whether it was cut."""
    if value is MISSING:
        return "—", False
    if isinstance(value, TooDeep):
        return value.message, False
    if limit is not None and isinstance(value, str) and len(value) > limit:
        return json.dumps(value[: limit - 2], ensure_ascii=False)[: limit - 1] + "…", True
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    if limit is not None and len(text) > limit:
        return text[: limit - 1] + "…", True
    return text, False


def readable_path(pointer: str) -> str:
    """A JSON Pointer as people read it: ``/address/city`` → ``address.city``,
    ``/items/2/qty`` → ``items[2].qty``; ``""`` → ``(whole record)``."""
    if pointer == "":
        return "(whole record)"
    try:
        tokens = split_pointer(pointer)
    except PointerError:
        return pointer
    label = ""
    for token in tokens:
        label = readable_join(label, token)
    return label


def readable_join(label: str, token: str) -> str:
    """``label`` extended by one decoded token, as :func:`readable_path` writes it."""
    if label and _INDEX.fullmatch(token):
        return f"{label}[{token}]"
    if _PLAIN_KEY.fullmatch(token):
        return f"{label}.{token}" if label else token
    return f"{label}[{json.dumps(token, ensure_ascii=False)}]"


@cache
def zone(name: str):
    return UTC if name == "UTC" else ZoneInfo(name)


def format_time(moment: datetime | None, tz: str = "UTC") -> str:
    """``2026-10-31 14:02:11+01:00`` in ``tz``: always with its offset; whole seconds, as
    people read a list (the exact time is in the ``<time datetime>`` beside it)."""
    if moment is None:
        return ""
    target = zone(tz)
    if moment.tzinfo is not target:  # events' times are UTC already (Event normalises them)
        moment = moment.astimezone(target)
    return moment.isoformat(sep=" ", timespec="seconds")


def seal_text(seal, tz: str = "UTC") -> tuple[str, str]:
    """An event's seal badge (:class:`dashboard.integrity.check.Seal`): (css class, words)."""
    if seal.status == "sealed":
        return "sealed", f"sealed in head #{seal.head_number} at {format_time(seal.sealed_at, tz)}"
    if seal.status == "unsealed":
        return "unsealed", "not yet sealed"
    if seal.status == "unverified":
        return "problem", "not verified: the newest head's signature is invalid"
    return "problem", "does not match the sealed log"


def iso_utc(moment: datetime | None) -> str:
    if not moment:
        return ""
    return (moment if moment.tzinfo is UTC else moment.astimezone(UTC)).isoformat()


def input_time(moment: datetime | None, tz: str) -> str:
    """The value of a time box: ``2026-10-31 14:02:11``, local time in ``tz``, 24-hour, no
    offset (the form's zone says which), as :func:`dashboard.filters.parse_time` reads it
    back. A text box, not ``datetime-local``, which shows the browser's locale (12-hour
    AM/PM in the US) while every page shows ISO 8601."""
    if moment is None:
        return ""
    local = moment.astimezone(zone(tz)).replace(tzinfo=None)
    return local.isoformat(sep=" ", timespec="seconds" if not local.microsecond else "milliseconds")


def relative_time(moment: datetime, now: datetime | None = None) -> str:
    """``3 hours ago`` / ``in 2 days``: coarse, for scanning a list."""
    now = now or datetime.now(UTC)
    seconds = (now - moment).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    for size, unit in (
        (31_536_000, "year"),
        (2_592_000, "month"),
        (86_400, "day"),
        (3_600, "hour"),
        (60, "minute"),
    ):
        if seconds >= size:
            count = int(seconds // size)
            words = f"{count} {unit}{'s' if count != 1 else ''}"
            return f"in {words}" if future else f"{words} ago"
    return "just now"


def zone_choices(*current: str) -> list[str]:
    """Zones offered in the forms: the common ones plus any in use."""
    extra = [name for name in current if name and name not in COMMON_ZONES]
    return list(dict.fromkeys([*COMMON_ZONES, *extra]))


_ID_PLACEHOLDER = "00000000-0000-0000-0000-000000000000"


def row_urls(aggregate_id: str, event_id: str) -> tuple[str, str]:
    """The record page and event page of a row: ``url_for`` of each routed once per request
    (a list of 50 events would otherwise route 100 URLs), its id put in. Ids are UUIDs,
    which need no quoting."""
    templates = g.get("_audit_row_url_templates")
    if templates is None:
        templates = g._audit_row_url_templates = (
            url_for("records.record", aggregate_id=_ID_PLACEHOLDER),
            url_for("records.event", event_id=_ID_PLACEHOLDER),
        )
    record, event = templates
    return record.replace(_ID_PLACEHOLDER, aggregate_id), event.replace(_ID_PLACEHOLDER, event_id)


def endpoint_url(endpoint: str) -> str:
    """``url_for(endpoint)`` of an endpoint without URL values, routed once per request: a
    search page links the same page a hundred times (bars, facets, chips, pages)."""
    urls = g.setdefault("_audit_endpoint_urls", {})
    url = urls.get(endpoint)
    if url is None:
        url = urls[endpoint] = url_for(endpoint)
    return url


def query_string(args: Iterable[tuple[str, str]]) -> str:
    """``urlencode`` of the pairs that have a value (``type=A&type=B``); "" when none has."""
    return urlencode([(name, value) for name, value in args if value is not None and value != ""])


def page_url(
    endpoint: str, args: Iterable[tuple[str, str]], *, anchor: str | None = None, **values: Any
) -> str:
    """``url_for(endpoint, **values)`` with repeated query arguments (``type=A&type=B``)."""
    url = url_for(endpoint, **values) if values else endpoint_url(endpoint)
    query = query_string(args)
    if query:
        url += "?" + query
    if anchor:
        url += "#" + anchor
    return url


class PageUrls:
    """URLs of one endpoint whose query starts with the same arguments, encoded once:
    ``PageUrls(endpoint, base).with_args(more)`` is ``page_url(endpoint, [*base, *more])``
    (the chart's bars and the facets' values: one link each, differing in one or two
    arguments)."""

    def __init__(self, endpoint: str, base: Iterable[tuple[str, str]]):
        self._prefix = page_url(endpoint, base)
        self._joiner = "&" if "?" in self._prefix else "?"

    def with_args(self, more: Iterable[tuple[str, str]]) -> str:
        query = query_string(more)
        return self._prefix + self._joiner + query if query else self._prefix


# --- View objects ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChangeRow:
    """One field change, masked, with display strings; ``op`` is ``unchanged`` for a field
    shown beside the changes (:func:`side_by_side_rows`). A string replaced by a string
    also has its display texts cut into pieces (:func:`dashboard.textdiff.inline_diff`),
    computed from the masked texts, so the highlight shows what the role may see."""

    path: str
    label: str
    op: str
    old: str
    new: str
    old_pieces: tuple[Piece, ...] | None = None
    new_pieces: tuple[Piece, ...] | None = None


@dataclass(frozen=True)
class EventRow:
    """One event as a row of a list or timeline; values masked and formatted."""

    event_id: str
    seq: int | None
    aggregate_id: str
    event_type: str
    kind: str | None
    action: str
    created_at: datetime
    time: str
    iso: str
    relative: str
    actor: str | None
    ip: str | None
    user_agent: str | None
    reason: str | None
    request_id: str | None
    other_metadata: list[tuple[str, str]]
    changed: list[str]
    record_url: str
    event_url: str
    payload: str | None = None
    payload_cut: bool = False
    changes: list[ChangeRow] | None = None
    changes_hidden: int = 0
    anomalies: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


# What autoescaping ({{ }}) replaces, and with what: markupsafe's own entities.
_HTML_ESCAPES: Final = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", "'": "&#39;", '"': "&#34;"}
)


def _html(value: Any) -> str:
    """``value`` as ``{{ value }}`` prints it with autoescaping (markupsafe.escape): markup
    (``__html__``) as it is, anything else as escaped text. A text with nothing to escape
    is returned as it is, which is most of a page's values and five times faster."""
    if type(value) is not str:
        if hasattr(value, "__html__"):
            return value.__html__()
        value = str(value)
    if "&" in value or "<" in value or ">" in value or "'" in value or '"' in value:
        return value.translate(_HTML_ESCAPES)
    return value


def event_rows_html(rows: Iterable[EventRow], show_record: bool = True) -> Markup:
    """The ``<tr>`` of each row of an event table (``_partials/events.html``, event_table),
    every value escaped as autoescaping would (:func:`_html`).

    Written here rather than as a loop in the template: 50 rows are ~1,100 escaped values,
    and each ``{{ }}`` costs a Jinja attribute look-up, a ``markupsafe.escape`` call and a
    Markup object; this was a fifth of a search page's rendering. The markup is the loop's,
    byte for byte (tests/test_event_rows_html.py renders both)."""
    out: list[str] = []
    for row in rows:
        iso = _html(row.iso)
        out.append(
            f'\n    <tr class="event-row" data-event-id="{_html(row.event_id)}">'
            f'\n      <td class="when"><time datetime="{iso}" title="{iso}">'
            f"{_html(row.time)}</time>"
        )
        if row.relative:
            out.append(
                f' <span class="relative" data-relative="{iso}">{_html(row.relative)}</span>'
            )
        out.append(
            f'<br><a class="event-link" href="{_html(row.event_url)}">event</a></td>'
            f'\n      <td><span class="event-type action-{_html(row.action)}">'
            f"{_html(row.event_type)}</span></td>"
            f"\n      <td>{_html(row.kind or '')}</td>\n      "
        )
        if show_record:
            record = row.aggregate_id
            out.append(
                f'<td><a class="record-link" href="{_html(row.record_url)}" '
                f'title="{_html(record)}"><code>{_html(record[:8])}…</code></a> '
                f'<button type="button" class="copy-button" data-copy="{_html(record)}" '
                'aria-label="Copy the full record id" hidden>Copy id</button></td>'
            )
        out.append(f"\n      <td>{_html(row.actor or '—')}</td>")
        out.append('\n      <td><ul class="changed-fields">\n  ')
        out.extend(f"<li>{_html(name)}</li>" for name in row.changed)
        out.append("\n</ul></td>\n    </tr>\n  ")
    # Every value above went through _html; the rest is this function's own markup.
    return Markup("".join(out))  # noqa: S704


def change_rows(
    changes: Iterable[Change], mask: Masker, limit: int | None = None
) -> list[ChangeRow]:
    """Changes for a page, at most ``limit`` of them. A record coming into existence is one
    ``add`` of the whole state at ``""``; it is shown as one ``add`` per top-level field,
    which reads better."""
    rows = []
    for change in itertools.islice(_split_root_add(changes), limit):
        check_budget()
        rows.append(_change_row(change, mask))
    return rows


def _change_row(change: Change, mask: Masker) -> ChangeRow:
    masked = mask.mask_change(change.to_json())
    old = "" if change.op == "add" else json_text(masked["old"])
    new = "" if change.op == "remove" else json_text(masked["new"])
    old_pieces = new_pieces = None
    # Only a string replaced by a string is diffed inside; both sides are the texts shown,
    # after masking (a masked value is MASK on both sides: no highlight, nothing revealed).
    if change.op == "replace" and type(masked["old"]) is str and type(masked["new"]) is str:
        old_split, new_split = inline_diff(old, new)
        old_pieces, new_pieces = tuple(old_split), tuple(new_split)
    return ChangeRow(
        path=change.path,
        label=readable_path(change.path),
        op=change.op,
        old=old,
        new=new,
        old_pieces=old_pieces,
        new_pieces=new_pieces,
    )


def side_by_side_rows(
    changes: Iterable[Change], after: AggregateState, mask: Masker, unchanged_limit: int
) -> tuple[list[ChangeRow], bool]:
    """The changes with the unchanged fields of ``after`` between them, in the state's
    order (:func:`dashboard.diff.side_by_side`): at most ``unchanged_limit`` unchanged
    fields; the flag says whether more were left out."""
    rows = []
    unchanged = 0
    more = False
    leaves = (path for path, _ in after.iter_provenance())
    for item in side_by_side(_split_root_add(changes), leaves, unchanged_limit + 1):
        check_budget()
        if isinstance(item, Change):
            rows.append(_change_row(item, mask))
            continue
        unchanged += 1
        if unchanged > unchanged_limit:
            more = True
            continue
        text = json_text(mask.mask_value_at(item, lookup_pointer(after.state, item)))
        rows.append(ChangeRow(item, readable_path(item), "unchanged", text, text))
    return rows, more


def _split_root_add(changes: Iterable[Change]) -> Iterable[Change]:
    for change in changes:
        if (
            change.path == ""
            and change.op == "add"
            and isinstance(change.new, dict)
            and not isinstance(change.new, TooDeep)
        ):
            for key, value in change.new.items():
                yield Change("/" + _escape(key), "add", MISSING, value)
        else:
            yield change


def _count_split(changes: Sequence[Change]) -> int:
    """How many rows :func:`change_rows` would make of ``changes`` (a root add of an
    object counts one row per top-level field)."""
    return sum(
        len(change.new)
        if change.path == "" and change.op == "add" and type(change.new) is dict
        else 1
        for change in changes
    )


def changed_fields(event: Event, rules: Sequence[Rule], action: str | None = None) -> list[str]:
    """Which fields an event touched, read from its payload alone (no replay), for lists.

    A merge names the leaves its RFC 7396 patch writes (a removal is prefixed with U+2212,
    the minus sign); a create or snapshot the top-level fields it sets; a delete says so.
    ``action`` is the event's rule action when the caller has it already.
    """
    if action is None:
        action = action_for(event.event_type, rules)
    payload = event.payload
    if isinstance(payload, TooDeep):
        return [payload.message]
    if action == "delete":
        return ["(record deleted)"]
    if action in ("create", "snapshot"):
        prefix = "(created) " if action == "create" else "(snapshot) "
        if isinstance(payload, dict):
            return [prefix + ", ".join(readable_join("", str(key)) for key in payload)]
        return [prefix.strip()]
    if not isinstance(payload, dict):
        return ["(whole record)"]
    leaves: list[str] = []
    _patch_leaves(payload, "", leaves)
    return leaves


def _patch_leaves(patch: Mapping[str, Any], base: str, out: list[str]) -> None:
    for key, value in patch.items():
        label = readable_join(base, str(key))
        if value is None:
            out.append("−" + label)
        elif isinstance(value, dict) and value:
            _patch_leaves(value, label, out)
        else:
            out.append(label)


def _escape(key: str) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def event_row(
    event: Event,
    mask: Masker,
    rules: Sequence[Rule],
    tz: str,
    *,
    changes: Sequence[Change] | None = None,
    anomalies: tuple[str, ...] = (),
    now: datetime | None = None,
    kind: str | None = None,
    with_payload: bool = False,
) -> EventRow:
    """``kind`` is the record's kind when the caller knows it (see :func:`page_record_kinds`);
    ``with_payload`` adds the (masked) payload as text, which lists do not show."""
    metadata = event.metadata if isinstance(event.metadata, dict) else {}
    shown = mask.mask_event(event)
    masked_metadata = shown.metadata if isinstance(shown.metadata, dict) else {}

    def meta(key: str) -> str | None:
        value = masked_metadata.get(key)
        if value is None:
            return None
        return value if isinstance(value, str) else json_text(value)

    payload = None
    payload_cut = False
    if with_payload:
        payload, payload_cut = json_preview(shown.payload, PAYLOAD_PREVIEW)
    shown_changes = None
    changes_hidden = 0
    if changes is not None:
        shown_changes = change_rows(changes, mask, CHANGES_SHOWN)
        if len(shown_changes) == CHANGES_SHOWN:
            changes_hidden = _count_split(changes) - CHANGES_SHOWN
    action = action_for(event.event_type, rules)
    record_url, event_url = row_urls(event.aggregate_id, event.event_id)
    return EventRow(
        event_id=event.event_id,
        seq=event.seq,
        aggregate_id=event.aggregate_id,
        event_type=event.event_type,
        kind=kind or derive_kind(None, metadata),
        action=action,
        created_at=event.created_at,
        time=format_time(event.created_at, tz),
        iso=iso_utc(event.created_at),
        relative=relative_time(event.created_at, now),
        actor=meta("actor"),
        ip=meta("ip"),
        user_agent=meta("user_agent"),
        reason=meta("reason"),
        request_id=meta("request_id") or meta("correlation_id"),
        other_metadata=[
            (key, json_text(value))
            for key, value in masked_metadata.items()
            if key not in KNOWN_METADATA and key != "aggregate_type"
        ],
        changed=changed_fields(event, rules, action),
        record_url=record_url,
        event_url=event_url,
        payload=payload,
        payload_cut=payload_cut,
        changes=shown_changes,
        changes_hidden=changes_hidden,
        anomalies=anomalies,
    )


@dataclass(frozen=True)
class StateField:
    """One leaf of a rebuilt state (or, with ``whole_arrays``, one whole array) with the
    event that last set it."""

    path: str
    label: str
    value: str
    event_id: str | None
    event_type: str | None
    time: str
    iso: str
    actor: str | None
    # A value cut to VALUE_PREVIEW: up to VALUE_UNFOLDED characters of it, shown on request.
    unfolded: str | None = None
    # A summarised array: its length and its first ARRAY_ITEMS_SHOWN items as JSON text.
    item_count: int | None = None
    items: tuple[str, ...] = ()


def state_fields(
    step: AggregateState,
    mask: Masker,
    tz: str,
    offset: int = 0,
    limit: int | None = None,
    *,
    whole_arrays: bool = False,
) -> list[StateField]:
    """The state's leaves in document order, each with its provenance (event, time, actor):
    ``limit`` of them from the ``offset``-th (a page of a state with 100,000 leaves). With
    ``whole_arrays`` each non-empty array is one entry, summarised, with its first items."""
    fields = []
    stop = None if limit is None else offset + limit
    entries = step.iter_provenance(whole_arrays=whole_arrays)
    for path, event in itertools.islice(entries, offset, stop):
        check_budget()
        value = lookup_pointer(step.state, path)
        actor = mask.mask_actor(event.actor)
        summary: dict[str, Any] = {}
        # Masked as a whole first: a masked array (its key names personal data) is one mask.
        masked = mask.mask_value_at(path, value)
        if isinstance(masked, list) and masked and whole_arrays:
            summary["item_count"] = len(masked)
            summary["items"] = tuple(json_text(item) for item in masked[:ARRAY_ITEMS_SHOWN])
            text = f"array of {len(masked):,} item{'' if len(masked) == 1 else 's'}"
        else:
            text, cut = json_preview(masked)
            if cut:
                summary["unfolded"] = json_text(masked, limit=VALUE_UNFOLDED)
        fields.append(
            StateField(
                path=path,
                label=readable_path(path),
                value=text,
                **summary,
                event_id=event.event_id,
                event_type=event.event_type,
                time=format_time(event.created_at, tz),
                iso=iso_utc(event.created_at),
                actor=actor if isinstance(actor, str) or actor is None else json_text(actor),
            )
        )
    return fields


def page_record_kinds(
    rows: Sequence[Any], rules: Sequence[Rule], conn: Connection, table: db.TableInfo
) -> dict:
    """``{aggregate_id: kind}`` for a page of events read with
    :func:`queries.with_first_event`: a record takes the kind an event of the page
    declares, else :func:`dashboard.rules.kind_of` its first event, which the rows carry
    (the LATERAL) or :func:`queries.first_events` finds for the records that need it (on a
    partitioned table, :func:`queries.probes_first_events_apart`)."""
    kinds: dict[str, str | None] = {}
    firsts: dict[str, tuple[str, str | None]] = {}
    undeclared: set[str] = set()
    for row in rows:
        mapping = row._mapping
        aggregate_id = str(mapping["aggregate_id"])
        metadata = mapping["metadata"]
        declared = derive_kind(None, metadata if isinstance(metadata, dict) else None)
        if declared:
            kinds.setdefault(aggregate_id, declared)
        elif mapping["first_event_type"] is not None:
            firsts.setdefault(
                aggregate_id, (mapping["first_event_type"], mapping["first_declared_kind"])
            )
        else:
            undeclared.add(aggregate_id)
    wanted = undeclared - kinds.keys() - firsts.keys()
    if wanted:
        firsts.update(queries.first_events(conn, wanted, table))
    for aggregate_id, (first_type, declared) in firsts.items():
        if aggregate_id not in kinds:
            metadata = {"aggregate_type": declared} if declared else None
            kinds[aggregate_id] = kind_of([_FirstEvent(first_type, metadata)], rules)
    return kinds


@dataclass(frozen=True)
class _FirstEvent:
    """What :func:`kind_of` reads of a record's first event."""

    event_type: str
    metadata: dict | None


def _table():
    return context.table_info()


def filters_for_log(f: EventFilter) -> dict[str, Any]:
    """The filter as the access log records it (a repeated name becomes a list)."""
    recorded: dict[str, Any] = {}
    for name, value in f.to_args():
        if name in recorded:
            existing = recorded[name]
            recorded[name] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            recorded[name] = value
    return recorded


@dataclass(frozen=True)
class FormLists:
    """What the forms offer: event types that exist, kinds declared and implied."""

    event_types: list[str]
    declared_kinds: frozenset[str]
    kinds: list[str]
    loaded_at: float


LISTS_TTL_SECONDS = 60.0


def form_lists(conn: Connection) -> FormLists:
    """The forms' lists, read at most once a minute per app: two loose index scans
    (audit_events_type_time_idx, audit_events_aggregate_type_idx) that every search would
    otherwise repeat, for lists that change when a new event type ships."""
    cached = current_app.extensions.get("audit_form_lists")
    now = time.monotonic()
    if cached is not None and now - cached.loaded_at < LISTS_TTL_SECONDS:
        return cached
    rules = context.app_context().rules
    event_types = list(
        conn.execute(queries.select_event_types(table=context.table_info())).scalars()
    )
    declared = frozenset(
        conn.execute(queries.select_declared_kinds(table=context.table_info())).scalars()
    )
    lists = FormLists(
        event_types=event_types,
        declared_kinds=declared,
        kinds=sorted(declared | set(queries.kinds_from_types(event_types, rules))),
        loaded_at=now,
    )
    current_app.extensions["audit_form_lists"] = lists
    return lists


# --- Period presets (dashboard/periods.py) ----------------------------------------------------


@dataclass(frozen=True)
class PeriodLink:
    """One calendar preset as a link that fills a form's from/to (works without JS)."""

    name: str
    label: str
    url: str
    title: str  # the period's bounds in words, for the link's tooltip
    current: bool  # the form's from/to are exactly this period


def period_links(
    endpoint: str,
    keep: Iterable[tuple[str, str]],
    tz: str,
    *,
    chosen: tuple[datetime | None, datetime | None] = (None, None),
    extra: Iterable[tuple[str, str]] = (),
    now: datetime | None = None,
) -> list[PeriodLink]:
    """A link per preset of :data:`dashboard.periods.PERIODS` to ``endpoint`` with the
    arguments in ``keep`` (the form's other fields), ``from``/``to`` set to the period's
    bounds as the time inputs show them (local time in ``tz``, read back in ``tz``), then
    ``extra``. ``chosen`` is the form's parsed from/to: the matching preset is current."""
    now = now or datetime.now(UTC)
    where = zone(tz)
    kept = [pair for pair in keep if pair[0] not in ("from", "to")]
    current = periods.matching_period(*chosen, now, where)
    links = []
    for name, label in periods.PERIODS.items():
        start, end = periods.period_bounds(name, now, where)
        args = [*kept, ("from", input_time(start, tz)), ("to", input_time(end, tz)), *extra]
        links.append(
            PeriodLink(
                name=name,
                label=label,
                url=page_url(endpoint, args),
                title=f"{format_time(start, tz)} to {format_time(end, tz)} ({tz})",
                current=name == current,
            )
        )
    return links
