"""Where entries are written: PostgreSQL through log_access(), or a local JSON-lines file.

* **PostgreSQL** (``AUDIT_ACCESS_LOG_URL``): a second, tiny engine as
  ``audit_access_logger``, which may do nothing but ``SELECT log_access(...)`` (see
  ``sql/007_access_log.sql`` and ``sql/009_access_log_replay.sql``): it cannot read the
  audit trail, and it cannot change or delete an entry, so a compromised dashboard cannot
  cover its tracks. Each entry carries a UUID and log_access() stores it once, so writing
  an entry again (from the spool) is harmless.
* **JSON lines** (no URL): a file beside the users file, appended one line per entry with
  ``O_APPEND`` under ``flock``. Start-up says so with a WARNING: a file the dashboard can
  write, it can also rewrite.

A sink's ``write`` raises on failure; :mod:`.recording` decides what that means.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import select
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

from .. import db
from ..config import ConfigError
from .entry import AccessEntry

log = logging.getLogger("dashboard.access_log")

WRITE_TIMEOUT_MS = 1000  # one small INSERT; a slow or hung logger must not hold pages
LOG_ACCESS_SIGNATURE = (
    "public.log_access(text, text, text, text, jsonb, text[], bigint, text, text, text, text, "
    "uuid, timestamptz, text)"
)


class AccessLogOnStandby(ConfigError):
    """AUDIT_ACCESS_LOG_URL names a hot standby, where nothing can be written."""


def standby_message(url: str) -> str:
    return (
        f"AUDIT_ACCESS_LOG_URL ({db.redact(url)}) points at a hot standby (it is in recovery, "
        "so it is read-only): the access log must be written on the primary. Set "
        "AUDIT_ACCESS_LOG_URL to audit_access_logger on the primary; AUDIT_DATABASE_URL may "
        "stay on the replica."
    )


def refuse_standby(url: str) -> None:
    """Raise AccessLogOnStandby when ``url`` is a hot standby (the ``report`` command checks
    before it works). A database that cannot be reached is left to the write, which keeps
    its entry in the spool."""
    engine = db.make_engine(url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            standby = conn.execute(sa.text("SELECT pg_is_in_recovery()")).scalar()
    except sa.exc.DBAPIError:
        return
    finally:
        engine.dispose()
    if standby:
        raise AccessLogOnStandby(standby_message(url))


class PostgresSink:
    """Writes through log_access() as audit_access_logger; autocommit, bounded, bound values.

    Every page writes an entry and asks about a sign-out, so both leave through libpq's
    asynchronous calls (:meth:`_send`), with no SQLAlchemy compilation or bind processing:
    sent ahead (:meth:`send`, :meth:`ask_revoked`) and collected when the request needs the
    answer, or collected at once (:meth:`write`). One SQL text and one way to build its
    values serve both.
    """

    # log_access()'s call, its values as text in _log_access_arguments' order.
    _LOG_ACCESS = (
        b"SELECT public.log_access($1::text, $2::text, $3::text, $4::text, $5::jsonb, "
        b"CASE WHEN $6::jsonb IS NOT NULL THEN ARRAY(SELECT id FROM "
        b"jsonb_array_elements_text($6::jsonb) WITH ORDINALITY AS ids (id, n) ORDER BY n) END, "
        b"$7::bigint, $8::text, $9::text, $10::text, $11::text, $12::uuid, $13::timestamptz, "
        b"$14::text)"
    )
    _REVOKED = b"SELECT public.access_session_revoked($1::text)"

    def __init__(self, url: str):
        self.url = url
        # One idle connection per worker; audit_access_logger has CONNECTION LIMIT 10. Its
        # waits are bounded like the reader's, so a hung database cannot hold sign-in.
        self.engine = db.make_engine(
            url,
            pool_size=1,
            max_overflow=3,
            statement_timeout_ms=WRITE_TIMEOUT_MS,
            application_name="audit-dashboard-access-log",
            breaker=False,  # every write tries: pages wait on it (fail closed)
            isolation_level="AUTOCOMMIT",
        )

    def send(self, entry: AccessEntry, *, keep_time: bool = False) -> SentStatement:
        """Send ``entry`` and return at once, holding a pooled connection until the answer
        is collected (:meth:`SentStatement.problem`): the server stores and commits it while
        the request goes on with its response. No thread: the statement leaves from this
        one, through libpq's asynchronous calls, so nothing waits for the interpreter's lock
        to send it. ``keep_time`` as for :meth:`write`. Raises, like :meth:`write`, when it
        cannot be sent."""
        return self._send(self._LOG_ACCESS, _log_access_arguments(entry, keep_time=keep_time))

    def ask_revoked(self, digest: str) -> SentStatement:
        """Whether a sign-out named the session whose id hashes to ``digest``, asked of the
        primary (sql/011_sign_in_state.sql), never of a reader that may lag. The answer
        (:meth:`SentStatement.collect`, ``"t"`` or ``"f"``) is collected when the request
        needs it, its round trip spent beside the request's own reads. Raises when it
        cannot be sent."""
        return self._send(self._REVOKED, [digest])

    def _send(self, statement: bytes, values: list[Any]) -> SentStatement:
        conn = db.connect(self.engine)
        try:
            driver = conn.connection.driver_connection
            encoding = driver.info.encoding
            params = [None if value is None else str(value).encode(encoding) for value in values]
            if any(b"\x00" in param for param in params if param is not None):
                # libpq reads a text value up to its first NUL: refuse, never cut short.
                raise ValueError("an access-log value holds a NUL character")
            pgconn = driver.pgconn
            pgconn.send_query_params(statement, params)
            deadline = time.monotonic() + (driver.wait_limit_s or WRITE_TIMEOUT_MS / 1000)
            while pgconn.flush():  # the socket took only part of it (non-blocking)
                _ready(pgconn.socket, deadline, write=True)
        except BaseException as exc:
            conn.invalidate(exc if isinstance(exc, Exception) else None)
            conn.close()
            raise
        return SentStatement(conn, pgconn, deadline)

    def describe(self) -> str:
        return f"PostgreSQL via log_access() as {db.redact(self.url)}"

    def dispose(self) -> None:
        self.engine.dispose()

    def write(self, entry: AccessEntry, *, keep_time: bool = False) -> None:
        """Store ``entry``, or raise :class:`LogStatementFailed` saying why. ``keep_time``:
        it happened earlier (it waited in the spool), so its own ``at`` is stored; otherwise
        the database stamps the time it arrives."""
        _value, failure = self.send(entry, keep_time=keep_time).collect()
        if failure is not None:
            raise LogStatementFailed(failure)

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def failed_sign_in_ages(self, client_ip: str, window_s: int, max_rows: int) -> list[float]:
        """How many seconds ago each of the latest failed sign-ins from ``client_ip`` was,
        newest first, at most ``max_rows`` within ``window_s``."""
        with db.connect(self.engine) as conn:
            return list(
                conn.execute(
                    sa.text("SELECT public.access_failed_sign_ins(:ip, :window_s, :max_rows)"),
                    {"ip": client_ip, "window_s": int(window_s), "max_rows": int(max_rows)},
                ).scalars()
            )

    def check(self) -> None:
        """Log at start-up whether the logger role works and holds no more than it should."""
        try:
            with self.engine.connect() as conn:
                can_log = conn.execute(
                    sa.text(
                        "SELECT to_regprocedure(:f) IS NOT NULL "
                        "AND has_function_privilege(:f, 'EXECUTE')"
                    ),
                    {"f": LOG_ACCESS_SIGNATURE},
                ).scalar()
                can_read_events = conn.execute(
                    sa.text(
                        "SELECT to_regclass('public.audit_events') IS NOT NULL AND "
                        "has_table_privilege('public.audit_events', 'SELECT')"
                    )
                ).scalar()
                standby = conn.execute(sa.text("SELECT pg_is_in_recovery()")).scalar()
        except sa.exc.DBAPIError as exc:
            log.error(
                "The access log database is not usable yet; until it is, pages are not served "
                "(503) unless AUDIT_ACCESS_LOG_FAIL_OPEN is set: %s",
                db.explain_connection_error(exc, self.url),
            )
            return
        if standby:
            raise AccessLogOnStandby(standby_message(self.url))
        if not can_log:
            log.error(
                "%s may not EXECUTE %s; run `audit-dashboard init-db` so the access log can be "
                "written.",
                db.redact(self.url),
                LOG_ACCESS_SIGNATURE,
            )
        if can_read_events:
            log.warning(
                "The access logger role at %s can read audit_events; it should only be able to "
                "call log_access(). Use audit_access_logger.",
                db.redact(self.url),
            )


def _log_access_arguments(entry: AccessEntry, *, keep_time: bool) -> list[Any]:
    """log_access()'s arguments for ``entry``, each as text or None (JSON for the filters
    and the record ids), in its order."""
    return [
        entry.username,
        entry.role,
        entry.action,
        entry.route,
        None if entry.filters is None else json.dumps(entry.filters, ensure_ascii=False),
        json.dumps(list(entry.aggregate_ids)) if entry.aggregate_ids else None,
        entry.row_count,
        entry.export_digest,
        entry.outcome,
        entry.client_ip,
        entry.reason,
        entry.entry_uuid,
        entry.at.isoformat() if keep_time else None,
        entry.revokes_session,
    ]


def _ready(sock: int, deadline: float, *, write: bool = False) -> None:
    """Wait until ``sock`` can be read (or written), until ``deadline`` at most (poll, not
    select: a process's descriptors may number past select's 1,024)."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise db.DatabaseNotAnswering(
            "the access log did not answer in time (its statement timeout and margin)"
        )
    poller = select.poll()
    poller.register(sock, select.POLLOUT if write else select.POLLIN)
    poller.poll(remaining * 1000)


class SentStatement:
    """A statement :meth:`PostgresSink._send` sent: its answer, collected once."""

    def __init__(self, conn: sa.Connection, pgconn: Any, deadline: float):
        self._conn: sa.Connection | None = conn
        self._pgconn = pgconn
        self._deadline = deadline

    def collect(self) -> tuple[str | None, Failure | None]:
        """Wait for the answer: (the first column of its first row as text, None), or
        (None, what failed). Gives the connection back (or drops it, when it broke or did
        not answer in time). Raises nothing: a failure is an answer too."""
        conn, self._conn = self._conn, None
        if conn is None:
            raise RuntimeError("this statement's answer was collected already")
        pgconn = self._pgconn
        value: str | None = None
        failure: Failure | None = None
        try:
            pgconn.consume_input()
            while pgconn.is_busy():
                _ready(pgconn.socket, self._deadline)
                pgconn.consume_input()
            while (result := pgconn.get_result()) is not None:
                if result.status == psycopg.pq.ExecStatus.FATAL_ERROR and failure is None:
                    # The primary message, as psycopg's errors print it (error_message
                    # starts with the severity: "ERROR:  ...").
                    fields = psycopg.pq.DiagnosticField
                    message = result.error_field(fields.MESSAGE_PRIMARY) or result.error_message
                    failure = Failure(
                        _first_line((message or b"").decode("utf-8", "replace")),
                        (result.error_field(fields.SQLSTATE) or b"").decode(),
                    )
                elif result.status == psycopg.pq.ExecStatus.TUPLES_OK and result.ntuples:
                    found = result.get_value(0, 0)
                    value = None if found is None else bytes(found).decode("utf-8")
        except Exception as exc:  # broken, or no answer in time: not to be used again
            conn.invalidate(exc)
            conn.close()
            return None, Failure(_first_line(exc), "")
        if pgconn.status != psycopg.pq.ConnStatus.OK:
            # The server ended the connection (pg_terminate_backend, a restart): its answer
            # said so; the pool must not hand it out again.
            conn.invalidate()
        conn.close()
        return (None, failure) if failure is not None else (value, None)

    def problem(self) -> str | None:
        """:meth:`collect` for a write: None once the entry is stored (committed), else the
        problem in a few words."""
        _value, failure = self.collect()
        return None if failure is None else failure.problem

    def abandon(self) -> None:
        """The request ended without collecting the answer: drop the connection."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.invalidate()
            conn.close()


class LogStatementFailed(Exception):
    """A statement of the access log's failed (:meth:`PostgresSink.write`); its text is the
    server's message (or the connection's), as a sent statement's problem reads."""

    def __init__(self, failure: Failure):
        super().__init__(failure.problem)
        self.failure = failure


@dataclass(frozen=True)
class Failure:
    """Why a sent statement failed: the server's message (or the connection's), and its
    SQLSTATE ("" when the connection failed)."""

    problem: str
    sqlstate: str

    @property
    def missing_function(self) -> bool:
        return self.sqlstate == "42883"  # undefined_function: sql/ not applied yet


def _first_line(problem: object) -> str:
    lines = [line.strip() for line in str(problem).splitlines() if line.strip()]
    return lines[0] if lines else problem.__class__.__name__


class FileSink:
    """JSON lines, one entry per line, appended atomically under flock, mode 0600.

    A sign-out's revocation is also appended to ``<file>.revoked-sessions`` (one SHA-256 per
    line), which every password-session request consults (re-read only when it changed).
    """

    def __init__(self, path: Path):
        self.path = path
        self.revocations_path = path.with_name(path.name + ".revoked-sessions")
        self._lock = threading.Lock()
        self._revoked: tuple[tuple[int, int, int], frozenset[str]] | None = None

    def describe(self) -> str:
        return f"JSON-lines file {self.path}"

    def write(self, entry: AccessEntry, *, keep_time: bool = True) -> None:
        data = entry.to_json()
        for name in ("id", "logged_at"):
            data.pop(name)
        self._append(self.path, json.dumps(data, ensure_ascii=False, default=str) + "\n")
        if entry.revokes_session:
            self._append(self.revocations_path, entry.revokes_session + "\n")

    def _append(self, path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        with self._lock:
            fd = os.open(path, flags, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.write(fd, text.encode("utf-8"))
            finally:
                os.close(fd)

    def is_revoked(self, digest: str) -> bool:
        try:
            stat = self.revocations_path.stat()
        except FileNotFoundError:
            return False
        key = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        cached = self._revoked
        if cached is None or cached[0] != key:
            lines = self.revocations_path.read_text(encoding="ascii", errors="replace")
            cached = (key, frozenset(line.strip() for line in lines.splitlines()))
            self._revoked = cached
        return digest in cached[1]

    def ping(self) -> None:
        pass  # nothing to reach

    def dispose(self) -> None:
        pass  # nothing held open between entries

    def check(self) -> None:
        log.warning(
            "AUDIT_ACCESS_LOG_URL is not set: the access log is written to the JSON-lines file "
            "%s. The dashboard can rewrite a file it writes; set AUDIT_ACCESS_LOG_URL to the "
            "audit_access_logger role's URL for an append-only log in PostgreSQL.",
            self.path,
        )


def _state_dir(settings: Any) -> Path:
    """Beside the users file, else the user's state directory.

    Not the system temp directory: it is shared with every local user and cleaned on reboot,
    neither of which suits a record of who looked at personal data.
    """
    if settings.users_file:
        return Path(settings.users_file).parent
    import platformdirs

    return Path(platformdirs.user_state_dir("audit-dashboard"))


def default_file(settings: Any) -> Path:
    """AUDIT_ACCESS_LOG_FILE, else ``access-log.jsonl`` beside the users file (or in the
    user's state directory)."""
    if settings.access_log_file:
        return Path(settings.access_log_file)
    return _state_dir(settings) / "access-log.jsonl"


def spool_dir(settings: Any) -> Path:
    """AUDIT_ACCESS_LOG_SPOOL_DIR, else ``access-log-spool/`` beside the users file (or in the
    user's state directory)."""
    if settings.access_log_spool_dir:
        return Path(settings.access_log_spool_dir)
    return _state_dir(settings) / "access-log-spool"
