"""The access log: who looked at what, when, and why — one entry per request.

Every request of a signed-in user (page view, search, state rebuild, export, sign-in and
sign-out) is written as one entry: user, role, time, route, filters, the record ids it
touched, row count, export digest, outcome and, when given, the reason for access.

Two backends:

* **PostgreSQL** (``AUDIT_ACCESS_LOG_URL``): the dashboard holds a second, tiny engine as
  ``audit_access_logger``, which may do nothing but ``SELECT log_access(...)`` (see
  ``sql/007_access_log.sql``): it cannot read the audit trail, and it cannot change or
  delete an entry, so a compromised dashboard cannot cover its tracks. Auditors read the
  entries back through the ordinary read-only connection.
* **JSON lines** (no URL): a file beside the users file, appended one line per entry with
  ``O_APPEND`` under ``flock``. Start-up says so with a WARNING: a file the dashboard can
  write, it can also rewrite.

Views describe what they did with :func:`note` (it accumulates on ``g``); an
``after_request`` hook writes the entry. A streamed export finishes after the response
started, so it calls :func:`record` at the end of the stream (with the digest, or outcome
``failed``); a stream that does not is written when the server closes it. A failed write is
logged as an ERROR with the entry itself, never dropped silently; :func:`record` returns
False so an export can decide what to do.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app, g, redirect, request, session, url_for
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from . import context, db, permissions
from .errors import error_response, wants_json
from .filters import FilterError, parse_aggregate_id, parse_limit, parse_time

__all__ = [
    "AccessEntry",
    "AccessLogPage",
    "AccessLogQuery",
    "AccessLogger",
    "browse",
    "init_app",
    "note",
    "reason_for",
    "reason_required",
    "record",
    "remember_reason",
    "require_reason",
    "viewers_of",
]

log = logging.getLogger(__name__)

EXTENSION_KEY = "audit_access_log"
# Endpoints that are not "looking at the audit trail": no entry for them.
UNLOGGED_ENDPOINTS = frozenset({"static", "health.healthz"})
MAX_AGGREGATE_IDS = 10_000  # an export names its filters and digest, not a million ids
MAX_TEXT = 500  # longest filter value or reason kept; longer ones are cut with an ellipsis
WRITE_TIMEOUT_MS = 3000  # a slow logger must not hold pages for long
FILE_SCAN_BYTES = 16 * 1024 * 1024  # one page of the file backend reads at most this much
REASON_MINUTES = 60  # a reason given for a record covers its pages for this long
REASON_MIN_LENGTH, REASON_MAX_LENGTH = 3, 300
MAX_REMEMBERED_REASONS = 20  # the session cookie must stay small


class AccessLogUnavailable(RuntimeError):
    """The access log cannot be read back (table missing or not readable)."""


@dataclass(frozen=True)
class AccessEntry:
    """One entry, as stored. ``id`` orders entries (in the file backend: the byte offset)."""

    id: int | None
    at: datetime
    username: str
    role: str | None
    action: str
    route: str | None = None
    filters: dict[str, Any] | None = None
    aggregate_ids: tuple[str, ...] = ()
    row_count: int | None = None
    export_digest: str | None = None
    outcome: str = "ok"
    client_ip: str | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = self.at.isoformat()
        data["aggregate_ids"] = list(self.aggregate_ids)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], entry_id: int | None) -> AccessEntry:
        return cls(
            id=entry_id,
            at=datetime.fromisoformat(data["at"]),
            username=str(data["username"]),
            role=data.get("role"),
            action=str(data["action"]),
            route=data.get("route"),
            filters=data.get("filters"),
            aggregate_ids=tuple(data.get("aggregate_ids") or ()),
            row_count=data.get("row_count"),
            export_digest=data.get("export_digest"),
            outcome=data.get("outcome") or "ok",
            client_ip=data.get("client_ip"),
            reason=data.get("reason"),
        )


# --- backends ----------------------------------------------------------------------------


class _PostgresSink:
    """Writes through log_access() as audit_access_logger; autocommit, bounded, bound values."""

    _CALL = sa.text(
        "SELECT public.log_access(:username, :role, :action, :route, :filters, "
        ":aggregate_ids, :row_count, :export_digest, :outcome, :client_ip, :reason)"
    ).bindparams(
        sa.bindparam("filters", type_=JSONB(none_as_null=True)),
        sa.bindparam("aggregate_ids", type_=ARRAY(sa.Text)),
    )

    def __init__(self, url: str):
        self.url = url
        self.engine = db.fork_safe(
            sa.create_engine(
                db.sqlalchemy_url(url),
                # One idle connection per worker; audit_access_logger has CONNECTION LIMIT 10.
                pool_size=1,
                max_overflow=3,
                pool_pre_ping=True,
                pool_recycle=1800,
                isolation_level="AUTOCOMMIT",
                connect_args={
                    "connect_timeout": 3,
                    "application_name": "audit-dashboard-access-log",
                    "options": f"-c statement_timeout={WRITE_TIMEOUT_MS}",
                },
            )
        )

    def describe(self) -> str:
        return f"PostgreSQL via log_access() as {db.redact(self.url)}"

    def dispose(self) -> None:
        self.engine.dispose()

    def write(self, entry: AccessEntry) -> None:
        values = entry.to_json()
        values.pop("id")
        values.pop("at")  # the database stamps it: clock_timestamp() at insert
        values["aggregate_ids"] = list(entry.aggregate_ids) or None
        with self.engine.connect() as conn:
            conn.execute(self._CALL, values)

    def check(self) -> None:
        """Log at start-up whether the logger role works and holds no more than it should."""
        signature = (
            "public.log_access(text, text, text, text, jsonb, text[], bigint, text, text, text, "
            "text)"
        )
        try:
            with self.engine.connect() as conn:
                can_log = conn.execute(
                    sa.text("SELECT has_function_privilege(:f, 'EXECUTE')"), {"f": signature}
                ).scalar()
                can_read_events = conn.execute(
                    sa.text(
                        "SELECT to_regclass('public.audit_events') IS NOT NULL AND "
                        "has_table_privilege('public.audit_events', 'SELECT')"
                    )
                ).scalar()
        except sa.exc.DBAPIError as exc:
            log.error(
                "The access log database is not usable yet; entries are logged as errors until "
                "it is: %s",
                db.explain_connection_error(exc, self.url),
            )
            return
        if not can_log:
            log.error(
                "%s may not EXECUTE log_access(); run `audit-dashboard init-db` so the access "
                "log can be written.",
                db.redact(self.url),
            )
        if can_read_events:
            log.warning(
                "The access logger role at %s can read audit_events; it should only be able to "
                "call log_access(). Use audit_access_logger.",
                db.redact(self.url),
            )


class _FileSink:
    """JSON lines, one entry per line, appended atomically under flock, mode 0600."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"JSON-lines file {self.path}"

    def write(self, entry: AccessEntry) -> None:
        data = entry.to_json()
        data.pop("id")
        line = (json.dumps(data, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        with self._lock:
            fd = os.open(self.path, flags, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.write(fd, line)
            finally:
                os.close(fd)

    def dispose(self) -> None:
        pass  # nothing held open between entries

    def check(self) -> None:
        log.warning(
            "AUDIT_ACCESS_LOG_URL is not set: the access log is written to the JSON-lines file "
            "%s. The dashboard can rewrite a file it writes; set AUDIT_ACCESS_LOG_URL to the "
            "audit_access_logger role's URL for an append-only log in PostgreSQL.",
            self.path,
        )

    def newest_first(self, before: int | None) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(offset, entry)`` from the end (or from byte ``before``) backwards, reading at
        most FILE_SCAN_BYTES; a line that is not JSON is skipped with a warning."""
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return
        with handle:
            end = handle.seek(0, os.SEEK_END)
            position = end if before is None else max(0, min(before, end))
            budget = FILE_SCAN_BYTES
            tail = b""
            while position > 0 and budget > 0:
                size = min(64 * 1024, position, budget)
                position -= size
                budget -= size
                handle.seek(position)
                chunk = handle.read(size) + tail
                lines = chunk.split(b"\n")
                tail = lines[0]  # may be a partial line: completed by the next chunk
                offset = position + len(tail) + 1
                parsed = []
                for raw in lines[1:]:
                    if raw.strip():
                        parsed.append((offset, raw))
                    offset += len(raw) + 1
                for line_offset, raw in reversed(parsed):
                    entry = _parse_line(raw, self.path, line_offset)
                    if entry is not None:
                        yield line_offset, entry
            if position == 0 and tail.strip():
                entry = _parse_line(tail, self.path, 0)
                if entry is not None:
                    yield 0, entry


def _parse_line(raw: bytes, path: Path, offset: int) -> dict[str, Any] | None:
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or "at" not in data or "username" not in data:
            raise ValueError("not an access-log entry")
        return data
    except ValueError:
        log.warning("Skipping a malformed line at byte %d of %s", offset, path)
        return None


class AccessLogger:
    """The app's access-log writer: PostgreSQL when a logger URL is set, else a file."""

    def __init__(self, settings: Any):
        if settings.access_log_url:
            self.sink: _PostgresSink | _FileSink = _PostgresSink(settings.access_log_url)
        else:
            self.sink = _FileSink(default_file(settings))

    @property
    def backend(self) -> str:
        return "postgres" if isinstance(self.sink, _PostgresSink) else "file"

    def check(self) -> None:
        self.sink.check()
        log.info("Access log: %s", self.sink.describe())

    def dispose(self) -> None:
        """Close pooled connections (tests and app shutdown)."""
        self.sink.dispose()

    def write(self, entry: AccessEntry) -> bool:
        """Write one entry; on failure log an ERROR carrying the entry and return False."""
        try:
            self.sink.write(entry)
        except Exception as exc:  # any failure: the entry goes to the error log instead
            text = str(getattr(exc, "orig", None) or exc).strip()
            detail = text.splitlines()[0] if text else repr(exc)
            log.error(
                "Could not write the access log (%s): %s. The entry was: %s",
                self.sink.describe(),
                detail,
                json.dumps(entry.to_json(), ensure_ascii=False, default=str),
            )
            return False
        return True


def default_file(settings: Any) -> Path:
    """AUDIT_ACCESS_LOG_FILE, else beside the users file, else the user's state directory.

    Not the system temp directory: it is shared with every local user and cleaned on reboot,
    neither of which suits a record of who looked at personal data.
    """
    if settings.access_log_file:
        return Path(settings.access_log_file)
    if settings.users_file:
        return Path(settings.users_file).parent / "access-log.jsonl"
    import platformdirs

    return Path(platformdirs.user_state_dir("audit-dashboard")) / "access-log.jsonl"


# --- the per-request entry -----------------------------------------------------------------


@dataclass
class _Pending:
    """What this request did so far; written once, by the hook or by :func:`record`."""

    logger: AccessLogger
    username: str | None
    role: str | None
    route: str
    client_ip: str | None
    action: str | None = None
    filters: dict[str, Any] | None = None
    aggregate_ids: list[str] = field(default_factory=list)
    row_count: int | None = None
    export_digest: str | None = None
    reason: str | None = None
    recorded: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def merge(self, **changes: Any) -> None:
        ids = changes.pop("aggregate_ids", None)
        if ids:
            seen = set(self.aggregate_ids)
            for aggregate_id in _canonical_ids(ids):
                if aggregate_id not in seen and len(self.aggregate_ids) < MAX_AGGREGATE_IDS:
                    seen.add(aggregate_id)
                    self.aggregate_ids.append(aggregate_id)
        for name, value in changes.items():
            if value is not None:
                setattr(self, name, value)

    def entry(self, outcome: str, default_action: str | None) -> AccessEntry:
        return AccessEntry(
            id=None,
            at=datetime.now(UTC),
            username=self.username or "(anonymous)",
            role=self.role,
            action=self.action or default_action or "request",
            route=self.route,
            filters=self.filters or None,
            aggregate_ids=tuple(self.aggregate_ids),
            row_count=self.row_count,
            export_digest=self.export_digest,
            outcome=outcome,
            client_ip=self.client_ip,
            reason=_clip(self.reason) if self.reason else None,
        )

    def write_once(self, outcome: str, default_action: str | None) -> bool:
        with self._lock:
            if self.recorded:
                return True
            self.recorded = True
        return self.logger.write(self.entry(outcome, default_action))


def _canonical_ids(ids: Iterable[Any]) -> Iterator[str]:
    """Record ids as the lower-case UUID text the table stores, so filters match them."""
    if isinstance(ids, str | uuid.UUID):
        ids = (ids,)
    for value in ids:
        text = str(value).strip()
        try:
            yield str(uuid.UUID(text))
        except ValueError:
            yield _clip(text)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _request_filters() -> dict[str, Any] | None:
    """The query string as a dict (a repeated argument becomes a list), values clipped."""
    filters: dict[str, Any] = {}
    for key in request.args:
        values = [_clip(value) for value in request.args.getlist(key)]
        filters[_clip(key)] = values[0] if len(values) == 1 else values
    return filters or None


def _logger() -> AccessLogger:
    return current_app.extensions[EXTENSION_KEY]


def backend_name() -> str:
    """``postgres`` or ``file``: where this app's access log goes (pages say so)."""
    return _logger().backend


def _pending() -> _Pending | None:
    """This request's pending entry; None for anonymous requests (nothing to attribute)."""
    pending = g.get("_access_pending")
    if pending is None:
        user = g.get("user")
        if user is None:
            return None
        pending = _Pending(
            logger=_logger(),
            username=user.name,
            role=user.role,
            route=request.path,
            client_ip=request.remote_addr,
        )
        g._access_pending = pending
    return pending


def note(
    action: str | None = None,
    aggregate_ids: Iterable[Any] | str = (),
    row_count: int | None = None,
    filters: Mapping[str, Any] | None = None,
    export_digest: str | None = None,
    reason: str | None = None,
) -> None:
    """Add to this request's entry: what it did, which records, how many rows.

    ``action`` defaults to the endpoint name and ``filters`` to the query string. Calling it
    several times adds ids and overrides the rest. Anonymous requests are not attributed.
    """
    pending = _pending()
    if pending is None:
        return
    pending.merge(
        action=action,
        aggregate_ids=aggregate_ids,
        row_count=row_count,
        filters=dict(filters) if filters is not None else None,
        export_digest=export_digest,
        reason=reason,
    )


def record(
    action: str | None = None,
    aggregate_ids: Iterable[Any] | str = (),
    row_count: int | None = None,
    filters: Mapping[str, Any] | None = None,
    export_digest: str | None = None,
    reason: str | None = None,
    outcome: str = "ok",
    username: str | None = None,
    role: str | None = None,
) -> bool:
    """Write this request's entry now (a streamed export at its end; a sign-in attempt).

    The request is then marked recorded, so the after-request hook does not write it again.
    ``username``/``role`` attribute a request that has no signed-in user (sign-in attempts).
    Returns False when the entry could not be written (an ERROR has been logged).
    """
    pending = _pending()
    if pending is None:
        pending = _Pending(
            logger=_logger(),
            username=None,
            role=None,
            route=request.path,
            client_ip=request.remote_addr,
        )
        g._access_pending = pending
    if username is not None:
        pending.username, pending.role = username, role
    pending.merge(
        action=action,
        aggregate_ids=aggregate_ids,
        row_count=row_count,
        filters=dict(filters) if filters is not None else None,
        export_digest=export_digest,
        reason=reason,
    )
    if pending.filters is None:
        pending.filters = _request_filters()
    return pending.write_once(outcome, request.endpoint)


def outcome_for(status: int) -> str:
    if status < 400:
        return "ok"
    if status in (401, 403):
        return "denied"
    if status == 404:
        return "not_found"
    if status == 429:
        return "rate_limited"
    if status < 500:
        return "rejected"
    return "error"


def _after_request(response):
    """Write this request's entry (streams: when the server closes the response)."""
    if request.endpoint in UNLOGGED_ENDPOINTS:
        return response
    pending = _pending()
    if pending is None or pending.recorded:
        return response
    if pending.filters is None:
        pending.filters = _request_filters()
    outcome = outcome_for(response.status_code)
    endpoint = request.endpoint or "unknown_route"
    if response.is_streamed:
        # The body is produced after this hook; an export calls record() at its end, and
        # only if it did not is the entry written here, once the stream is closed.
        response.call_on_close(lambda: pending.write_once(outcome, endpoint))
    else:
        pending.write_once(outcome, endpoint)
    return response


def init_app(app: Flask) -> None:
    settings = context.app_context(app).settings
    logger = AccessLogger(settings)
    app.extensions[EXTENSION_KEY] = logger
    logger.check()
    app.after_request(_after_request)


# --- reading it back ----------------------------------------------------------------------

_ACCESS_LOG = sa.table(
    "audit_access_log",
    sa.column("id", sa.BigInteger),
    sa.column("at", sa.DateTime(timezone=True)),
    sa.column("username", sa.Text),
    sa.column("role", sa.Text),
    sa.column("action", sa.Text),
    sa.column("route", sa.Text),
    sa.column("filters", JSONB),
    sa.column("aggregate_ids", ARRAY(sa.Text)),
    sa.column("row_count", sa.BigInteger),
    sa.column("export_digest", sa.Text),
    sa.column("outcome", sa.Text),
    sa.column("client_ip", sa.Text),
    sa.column("reason", sa.Text),
    schema="public",
)
DEFAULT_PAGE = 50
MAX_PAGE = 500


@dataclass(frozen=True)
class AccessLogQuery:
    """The access-log page's filters, parsed once; FilterError (400) names a bad field."""

    user: str | None = None
    aggregate_id: str | None = None
    action: str | None = None
    outcome: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    before_id: int | None = None  # keyset cursor: entries with a smaller id
    limit: int = DEFAULT_PAGE

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> AccessLogQuery:
        def text(name: str) -> str | None:
            value = (args.get(name) or "").strip()
            if len(value) > 200:
                raise FilterError(f"'{name}' is too long (200 characters at most).", name)
            return value or None

        aggregate = parse_aggregate_id(args.get("aggregate_id"))
        since = parse_time(args.get("from"), "from")
        until = parse_time(args.get("to"), "to")
        if since and until and since >= until:
            raise FilterError("'from' must be before 'to'.", "from")
        cursor = text("cursor")
        if cursor is not None and not (cursor.isdigit() and len(cursor) <= 18):
            raise FilterError(
                "The page cursor is not valid; start again from the first page.", "cursor"
            )
        return cls(
            user=(text("user") or "").lower() or None,
            aggregate_id=str(aggregate) if aggregate else None,
            action=text("action"),
            outcome=text("outcome"),
            since=since,
            until=until,
            before_id=int(cursor) if cursor is not None else None,
            limit=parse_limit(args.get("limit"), default=DEFAULT_PAGE, maximum=MAX_PAGE),
        )

    def matches(self, entry: AccessEntry) -> bool:
        """The same filter in Python, for the file backend."""
        return (
            (self.user is None or entry.username == self.user)
            and (self.aggregate_id is None or self.aggregate_id in entry.aggregate_ids)
            and (self.action is None or entry.action == self.action)
            and (self.outcome is None or entry.outcome == self.outcome)
            and (self.since is None or entry.at >= self.since)
            and (self.until is None or entry.at < self.until)
        )


@dataclass(frozen=True)
class AccessLogPage:
    entries: list[AccessEntry]
    next_cursor: str | None  # older entries continue after this
    scan_limited: bool = False  # the file backend stopped reading before finding a full page


def browse(query: AccessLogQuery) -> AccessLogPage:
    """Newest first, ``query.limit`` entries, keyset-paginated on id.

    PostgreSQL: the primary key serves ORDER BY id DESC; a record filter uses the GIN index
    audit_access_log_aggregate_idx (``aggregate_ids @> ARRAY[...]``), a time range
    audit_access_log_at_idx. ``limit + 1`` rows tell whether there is a next page, and the
    reader connection's statement_timeout bounds the rest.
    """
    logger = _logger()
    if logger.backend == "file":
        return _browse_file(logger.sink, query)  # type: ignore[arg-type]
    if not context.table_info().has_access_log:
        raise AccessLogUnavailable(
            "The access log table is missing or not readable by the dashboard's role; run "
            "`audit-dashboard init-db` (sql/007_access_log.sql)."
        )
    t = _ACCESS_LOG.c
    conditions = []
    if query.user is not None:
        conditions.append(t.username == query.user)
    if query.aggregate_id is not None:
        conditions.append(t.aggregate_ids.contains([query.aggregate_id]))
    if query.action is not None:
        conditions.append(t.action == query.action)
    if query.outcome is not None:
        conditions.append(t.outcome == query.outcome)
    if query.since is not None:
        conditions.append(t.at >= query.since)
    if query.until is not None:
        conditions.append(t.at < query.until)
    if query.before_id is not None:
        conditions.append(t.id < query.before_id)
    statement = (
        sa.select(*_ACCESS_LOG.c).where(*conditions).order_by(t.id.desc()).limit(query.limit + 1)
    )
    rows = context.connection().execute(statement).mappings().all()
    entries = [_entry_from_row(row) for row in rows[: query.limit]]
    has_more = len(rows) > query.limit
    return AccessLogPage(entries, str(entries[-1].id) if has_more and entries else None)


def _entry_from_row(row: Mapping[str, Any]) -> AccessEntry:
    values = dict(row)
    values["aggregate_ids"] = tuple(values.get("aggregate_ids") or ())
    return AccessEntry(**values)


def _browse_file(sink: _FileSink, query: AccessLogQuery) -> AccessLogPage:
    entries: list[AccessEntry] = []
    last_offset: int | None = None
    for offset, data in sink.newest_first(query.before_id):
        last_offset = offset
        try:
            entry = AccessEntry.from_json(data, offset)
        except (KeyError, TypeError, ValueError):
            continue
        if query.matches(entry):
            if len(entries) == query.limit:
                return AccessLogPage(entries, str(entries[-1].id))
            entries.append(entry)
    # Stopped by the scan budget (not the start of the file): offer to read on.
    scan_limited = last_offset not in (None, 0) and len(entries) < query.limit
    if scan_limited:
        return AccessLogPage(entries, str(last_offset), scan_limited=True)
    return AccessLogPage(entries, None)


def viewers_of(aggregate_id: Any, limit: int = 20) -> list[AccessEntry]:
    """Who looked at this record, newest first (for the record page's auditor panel).

    Empty for a user without ``view_access_log`` (check ``g.user.can(VIEW_ACCESS_LOG)`` to
    decide whether to show the panel at all) and when the log cannot be read (logged).
    """
    user = g.get("user")
    if user is None or not user.can(permissions.VIEW_ACCESS_LOG):
        return []
    try:
        canonical = next(_canonical_ids((aggregate_id,)))
        return browse(
            AccessLogQuery(aggregate_id=canonical, limit=max(1, min(limit, MAX_PAGE)))
        ).entries
    except AccessLogUnavailable as exc:
        log.warning("Cannot show who viewed %s: %s", aggregate_id, exc)
        return []


# --- reasons for access ---------------------------------------------------------------------

REASON_HEADER = "X-Access-Reason"


def reason_required() -> bool:
    """Whether the signed-in user must give a reason before opening a record.

    AUDIT_REQUIRE_ACCESS_REASON applies to roles that look records up one at a time — those
    without the ``search`` permission (support). Auditors and compliance staff investigate
    by search and are accountable through the access log alone.
    """
    user = g.get("user")
    return bool(
        user is not None
        and context.settings().require_access_reason
        and not user.can(permissions.SEARCH)
    )


def check_reason(text: str | None) -> str:
    """A cleaned-up reason; FilterError (400) when it is missing, too short or too long."""
    reason = " ".join((text or "").split())
    if len(reason) < REASON_MIN_LENGTH:
        raise FilterError(
            f"Give a reason or ticket number (at least {REASON_MIN_LENGTH} characters).", "reason"
        )
    if len(reason) > REASON_MAX_LENGTH:
        raise FilterError(f"Keep the reason under {REASON_MAX_LENGTH} characters.", "reason")
    return reason


def remember_reason(aggregate_id: Any, reason: str) -> str:
    """Keep the reason in the session so the record's other pages do not ask again."""
    canonical = next(_canonical_ids((aggregate_id,)))
    reason = check_reason(reason)
    now = int(time.time())
    stored = {
        key: value
        for key, value in (session.get("access_reasons") or {}).items()
        if isinstance(value, list) and len(value) == 2 and value[1] > now
    }
    stored[canonical] = [reason, now + REASON_MINUTES * 60]
    if len(stored) > MAX_REMEMBERED_REASONS:
        stored = dict(sorted(stored.items(), key=lambda item: item[1][1])[-MAX_REMEMBERED_REASONS:])
    session["access_reasons"] = stored
    return reason


def reason_for(aggregate_id: Any) -> str | None:
    """The reason given for this record: ``?reason=``, the X-Access-Reason header, or one
    remembered in the session within the last REASON_MINUTES."""
    given = request.args.get("reason") or request.headers.get(REASON_HEADER)
    if given and given.strip():
        return check_reason(given)
    canonical = next(_canonical_ids((aggregate_id,)))
    stored = (session.get("access_reasons") or {}).get(canonical)
    if isinstance(stored, list) and len(stored) == 2 and stored[1] > time.time():
        return str(stored[0])
    return None


def require_reason(aggregate_id: Any):
    """Call first in a record view: None to go on, else the response to return.

    Notes the reason (when there is one) on this request's access-log entry. When a reason
    is required and missing, a page is redirected to the reason form and an API call
    answers 400 saying how to give one.
    """
    reason = reason_for(aggregate_id)
    if reason is not None:
        note(reason=reason, aggregate_ids=(aggregate_id,))
        return None
    if not reason_required():
        return None
    note(aggregate_ids=(aggregate_id,), action="reason_required")
    if wants_json():
        return error_response(
            400,
            "Give a reason or ticket number before opening this record: add "
            f"?reason=TICKET-123 or an {REASON_HEADER} header.",
        )
    return redirect(
        url_for(
            "access.reason",
            aggregate_id=next(_canonical_ids((aggregate_id,))),
            next=request.full_path.rstrip("?"),
        ),
        303,
    )


def entries_as_json(entries: Iterable[AccessEntry]) -> list[dict[str, Any]]:
    return [entry.to_json() for entry in entries]
