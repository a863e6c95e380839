"""Writing the access log: this request's entry, written before its response is served.

Views describe what they did with :func:`note` (it accumulates on ``g``); the
``after_request`` hook writes the entry *before* the response leaves. A view whose entry is
complete before its response is (the search page and the record page once their rows are
read, the JSON API before it serialises) starts the write at once with :func:`write_ahead`:
the entry is sent from the request's own thread (:meth:`.sinks.PostgresSink.send`), and
the database stores and commits it while the response is made; the hook then collects the
answer and decides the same way.
When it cannot be written the response is **withheld**: the client gets a 503 naming the
problem instead of the page, and the entry (outcome ``withheld``) goes to the spool.
``AUDIT_ACCESS_LOG_FAIL_OPEN`` serves anyway (the entry goes to the spool, and every start
logs a WARNING).

Exports write two entries: ``started`` before their first byte (:func:`start_export`, which
withholds the export like a page), and their outcome after the last (:func:`finish_export`:
``ok`` with rows and digest, or ``failed``). An outcome that cannot be written once bytes
have left — an export cut off by a dying database — cannot withhold anything; it goes to
the spool.

The spool (:class:`dashboard.spool.Spool`, in AUDIT_ACCESS_LOG_SPOOL_DIR) keeps what could
not be written, fsync'd, and is written to the log at start and before every request (so a
sign-out made while the log was down takes effect before any session is checked), at most
a batch at a time and no more often than every RETRY_SECONDS while the log stays down.
Entries keep their own time and UUID, so one written twice is stored once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from flask import Flask, Response, current_app, g, request

from .. import context, db
from ..errors import error_response
from ..spool import Backoff, Spool
from .entry import MAX_AGGREGATE_IDS, AccessEntry, canonical_ids, clip, new_entry_uuid
from .sinks import FileSink, PostgresSink, SentStatement, default_file, spool_dir

log = logging.getLogger("dashboard.access_log")

EXTENSION_KEY = "audit_access_log"
# Endpoints that are not "looking at the audit trail": no entry for them.
UNLOGGED_ENDPOINTS = frozenset({"static", "health.healthz"})
RETRY_SECONDS = 5.0  # while the log is down, try the spool again at most this often
WITHHELD_TITLE = "The access log is not available"

# What became of an entry: in the log; kept in the spool (the response is served: fail-open,
# or it had to be); or kept and the response withheld.
Written = Literal["written", "kept", "withheld"]


class AccessLogDown(RuntimeError):
    """This request's entry could not be written, so its response is withheld (503)."""

    def __init__(self, problem: str):
        super().__init__(problem)
        self.problem = problem

    @property
    def message(self) -> str:
        return (
            f"The access log cannot be written ({self.problem}), so this is not shown: every "
            "look at the audit trail is recorded before it is served. Try again in a moment; "
            "the administrator can see the cause in the server log."
        )


class AccessLogger:
    """The app's access-log writer: a sink (PostgreSQL or a file) and the spool behind it."""

    def __init__(self, settings: Any):
        if settings.access_log_url:
            self.sink: PostgresSink | FileSink = PostgresSink(settings.access_log_url)
        else:
            self.sink = FileSink(default_file(settings))
        self.spool = Spool(spool_dir(settings), "access-log")
        self.fail_open = bool(settings.access_log_fail_open)
        self._backoff = Backoff(RETRY_SECONDS)
        self._delivering = threading.Lock()

    @property
    def backend(self) -> str:
        return "postgres" if isinstance(self.sink, PostgresSink) else "file"

    def check(self) -> None:
        """At start: say where entries go, warn about fail-open, write what was spooled."""
        self.sink.check()
        log.info("Access log: %s; spool: %s", self.sink.describe(), self.spool.path)
        if self.fail_open:
            log.warning(
                "AUDIT_ACCESS_LOG_FAIL_OPEN is set: when the access log cannot be written, pages "
                "and exports are served anyway and their entries wait in %s. Unset it to "
                "refuse (503) what cannot be recorded.",
                self.spool.path,
            )
        while self.deliver_spooled(force=True):
            pass

    def dispose(self) -> None:
        """Close pooled connections (tests and app shutdown)."""
        self.sink.dispose()

    def try_write(self, entry: AccessEntry, *, keep_time: bool = False) -> str | None:
        """Write to the sink; None when it worked, else the problem in a few words."""
        try:
            self.sink.write(entry, keep_time=keep_time)
        except Exception as exc:  # any failure is reported by the caller, never swallowed
            return _problem(exc)
        return None

    def keep(self, entry: AccessEntry, problem: str) -> None:
        """Put ``entry`` in the spool (an ERROR says so); if even that fails, the ERROR carries
        the entry itself, the last place left."""
        text = json.dumps(entry.to_json(), ensure_ascii=False, default=str)
        try:
            self.spool.append(entry.to_json())
        except OSError as exc:
            log.error(
                "Could not write the access log (%s): %s, nor keep the entry in the spool %s "
                "(%s). The entry was: %s",
                self.sink.describe(),
                problem,
                self.spool.path,
                exc,
                text,
            )
            return
        log.error(
            "Could not write the access log (%s): %s. The entry is kept in %s and will be "
            "written when the log is back: %s",
            self.sink.describe(),
            problem,
            self.spool.path,
            text,
        )

    def send(self, entry: AccessEntry) -> SentStatement | Answered:
        """Start writing ``entry``; what it returns says, when asked (``problem()``), None
        once the entry is in the log, else the problem. PostgreSQL stores it while the
        caller goes on (:meth:`PostgresSink.send`); a file takes it at once."""
        if isinstance(self.sink, PostgresSink):
            try:
                return self.sink.send(entry)
            except Exception as exc:  # reported through problem(), as try_write reports
                return Answered(_problem(exc))
        return Answered(self.try_write(entry))

    def write(self, entry: AccessEntry) -> bool:
        """Write one entry, or keep it in the spool; False when it went to the spool."""
        problem = self.try_write(entry)
        if problem is None:
            return True
        self.keep(entry, problem)
        return False

    def ping(self) -> str | None:
        """None when the log can be reached, else the problem (for /healthz)."""
        try:
            self.sink.ping()
        except Exception as exc:  # reported, never raised: a health check answers
            return _problem(exc)
        return None

    def deliver_spooled(self, *, force: bool = False) -> int:
        """Write a batch of spooled entries to the log; how many were written.

        Cheap when the spool is empty (one stat). After a failure, waits RETRY_SECONDS
        before trying again, unless ``force``.
        """
        if not self.spool.pending_bytes():
            return 0
        if not (force or self._backoff.ready()):
            return 0
        if not self._delivering.acquire(blocking=False):
            return 0  # another thread of this process is at it
        try:
            delivered = self.spool.deliver(self._deliver)
        except Exception as exc:  # the log is still down: the entries stay in the spool
            self._backoff.failed()
            log.warning(
                "The access log is still not writable (%s); %d bytes stay in %s",
                _problem(exc),
                self.spool.pending_bytes(),
                self.spool.path,
            )
            return 0
        finally:
            self._delivering.release()
        self._backoff.succeeded()
        if delivered:
            log.info("Wrote %d access-log entries kept in %s", delivered, self.spool.path)
        return delivered

    def _deliver(self, record: dict[str, Any]) -> None:
        entry = AccessEntry.from_json(record, None)
        self.sink.write(entry, keep_time=True)

    def session_revoked(self, digest: str) -> bool:
        """Whether a sign-out ended the session whose id hashes to ``digest``.

        A sign-out made while the log was down waits in the spool: the spool is written
        first (whatever the back-off says), and what is still in it counts too.
        """
        if self.spool.pending_bytes():
            self.deliver_spooled(force=True)
            if self.spool.pending_bytes() and any(
                record.get("revokes_session") == digest for record in self.spool.records()
            ):
                return True
        if isinstance(self.sink, FileSink):
            return self.sink.is_revoked(digest)
        return self._ask_revoked(digest)()

    def session_revoked_later(self, digest: str) -> _Answer | _Asked:
        """:meth:`session_revoked`, asked now and answered later: the question is sent to
        the log's database at once (:meth:`PostgresSink.ask_revoked`, no thread), and the
        function returned collects its answer, with the same fallbacks. A spool still
        holding entries (a sign-out may wait there) or a file (a stat) answer at once."""
        if self.spool.pending_bytes() or isinstance(self.sink, FileSink):
            revoked = self.session_revoked(digest)
            return _Answer(lambda: revoked)
        return self._ask_revoked(digest)

    def _ask_revoked(self, digest: str) -> _Answer | _Asked:
        """Send the question to the log's database (on the primary, where sign-outs are
        written: a reader on a lagging hot standby would let a signed-out cookie work until
        it caught up); when it cannot be sent or answered, the reader answers."""
        try:
            asked = self.sink.ask_revoked(digest)
        except Exception as exc:  # not even sent: the reader says, when asked
            problem = _problem(exc)
            return _Answer(lambda: self._revoked_after(problem, digest, missing_function=False))
        return _Asked(self, digest, asked)

    def _revoked_after(self, problem: str, digest: str, *, missing_function: bool) -> bool:
        """The log's database could not say whether ``digest`` was signed out (``problem``):
        the reader, the next best source, says."""
        if missing_function:
            # access_session_revoked() is missing: sql/011 not applied yet (run init-db).
            log.warning(
                "access_session_revoked() is missing on the access log's database (run "
                "`audit-dashboard init-db`); checking sign-outs through the reader, which "
                "lags when it is a hot standby."
            )
        else:
            # The log's database is down: this request's own entry cannot be written either,
            # so its answer is withheld (unless fail-open); the reader is the next best
            # source meanwhile, and the entry names the user in the spool.
            log.warning("Could not ask the access log about a sign-out (%s)", problem)
        return self._revoked_per_reader(digest)

    def _revoked_per_reader(self, digest: str) -> bool:
        try:
            return bool(
                context.connection()
                .execute(
                    sa.text(
                        "SELECT EXISTS (SELECT 1 FROM public.audit_access_log "
                        "WHERE revokes_session = :digest)"
                    ),
                    {"digest": digest},
                )
                .scalar()
            )
        except sa.exc.ProgrammingError as exc:  # no column or no SELECT: not set up
            raise db.TableMissing(
                "The dashboard cannot check whether a session was signed out: the access log "
                "table lacks revokes_session or is not readable. Run `audit-dashboard init-db`."
            ) from exc


@dataclass(frozen=True)
class _Answer:
    """A sign-out check that holds nothing: answered at once, or (one that could not be
    sent) by the reader when asked."""

    answer: Callable[[], bool]

    def __call__(self) -> bool:
        return self.answer()

    def abandon(self) -> None:
        pass  # nothing held


@dataclass(frozen=True)
class _Asked:
    """A sign-out check sent to the log's database, its answer not collected yet."""

    logger: AccessLogger
    digest: str
    asked: SentStatement

    def __call__(self) -> bool:
        value, failure = self.asked.collect()
        if failure is None:
            return value == "t"
        return self.logger._revoked_after(
            failure.problem, self.digest, missing_function=failure.missing_function
        )

    def abandon(self) -> None:
        self.asked.abandon()


@dataclass(frozen=True)
class Answered:
    """A write whose outcome is known at once (a file, or a send that failed)."""

    known: str | None

    def problem(self) -> str | None:
        return self.known

    def abandon(self) -> None:
        pass  # nothing held


def _problem(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else exc.__class__.__name__


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
    revokes_session: str | None = None
    recorded: bool = False  # this request's entry is written (or kept, or withheld)
    started: bool = False  # an export wrote "started"; its outcome is its own entry
    withheld: str | None = None  # the problem, when the response must not be served
    # An entry being written beside the response's work (:func:`write_ahead`), and the
    # write: its problem, or None once it is in the log.
    ahead: tuple[AccessEntry, SentStatement | Answered] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def merge(self, **changes: Any) -> None:
        filters = changes.pop("filters", None)
        if filters is not None:
            self.filters = dict(filters)
        ids = changes.pop("aggregate_ids", None)
        if ids:
            seen = set(self.aggregate_ids)
            for aggregate_id in canonical_ids(ids):
                if aggregate_id not in seen and len(self.aggregate_ids) < MAX_AGGREGATE_IDS:
                    seen.add(aggregate_id)
                    self.aggregate_ids.append(aggregate_id)
        for name, value in changes.items():
            if value is not None:
                setattr(self, name, value)

    def complete(self, **changes: Any) -> None:
        """:meth:`merge`, then the request's own arguments as the filters when no view
        gave any."""
        self.merge(**changes)
        if self.filters is None:
            self.filters = _request_filters()

    def entry(self, outcome: str, default_action: str | None) -> AccessEntry:
        return AccessEntry(
            id=None,
            at=datetime.now(UTC),
            username=self.username or "(anonymous)",
            role=self.role,
            action=self.action or default_action or "request",
            route=clip(self.route),
            filters=self.filters or None,
            aggregate_ids=tuple(self.aggregate_ids),
            row_count=self.row_count,
            export_digest=self.export_digest,
            outcome=outcome,
            client_ip=self.client_ip,
            reason=clip(self.reason) if self.reason else None,
            revokes_session=self.revokes_session,
        )

    def write(
        self, entry: AccessEntry, *, may_withhold: bool, unavailable: bool = False
    ) -> Written:
        """Write ``entry``, or keep it in the spool; "withheld" when the response must not
        be served (``self.withheld`` says why). ``unavailable``: the answer is a 503 (the
        database is down or hung, which usually holds the log too)."""
        if not may_withhold and unavailable:
            # A 503: the database is down or hung, and the log with it as a rule. Straight
            # to the spool (written before a later request), so the answer is not held up
            # by a wait that is bound to fail.
            self.logger.keep(entry, "the database was not answering when this was answered")
            return "kept"
        return self.settle(entry, self.logger.try_write(entry), may_withhold=may_withhold)

    def settle(self, entry: AccessEntry, problem: str | None, *, may_withhold: bool) -> Written:
        """What becomes of ``entry`` once its write is over (``problem``: why it failed)."""
        if problem is None:
            return "written"
        if self.logger.fail_open or not may_withhold:
            self.logger.keep(entry, problem)
            return "kept"
        self.logger.keep(dataclasses.replace(entry, outcome="withheld"), problem)
        self.withheld = problem
        return "withheld"

    def write_once(
        self,
        outcome: str,
        default_action: str | None,
        *,
        may_withhold: bool,
        unavailable: bool = False,
    ) -> Written | None:
        """Write this request's entry unless it was already (None)."""
        with self._lock:
            if self.recorded:
                return None
            self.recorded = True
        return self.write(
            self.entry(outcome, default_action),
            may_withhold=may_withhold,
            unavailable=unavailable,
        )


def current_logger() -> AccessLogger:
    return current_app.extensions[EXTENSION_KEY]


def session_revoked(digest: str) -> bool:
    """Whether a sign-out revoked the session whose id hashes to ``digest``."""
    return current_logger().session_revoked(digest)


class SessionSignedOut(Exception):
    """The check asked beside this request (:func:`check_session_beside`) found its session
    signed out: nothing of the request is served or attributed to its user."""


def check_session_beside(digest: str) -> None:
    """Ask whether this request's session (whose id hashes to ``digest``) was signed out,
    and let the request go on as its user meanwhile: the question's round trip is spent
    beside the view's own reads instead of before them. The answer is collected
    (:func:`confirm_session`) before any entry of the request is written and before its
    response leaves, so a signed-out session is still never served."""
    g._session_check = current_logger().session_revoked_later(digest)


def session_check_started() -> bool:
    """Whether this request's session is being (or was) checked beside it."""
    return g.get("_session_check") is not None


def confirm_session() -> None:
    """Collect the answer of the check :func:`check_session_beside` asked, if any.

    Returns when the session stands (or was checked before the request, the usual way for
    forms); raises :class:`SessionSignedOut` when it was signed out, and the database error
    that kept anyone from answering, every time it is asked.
    """
    state = g.get("_session_check")
    if state is None or state is _STOOD:
        return
    if isinstance(state, BaseException):
        raise state
    try:
        revoked = state()
    except Exception as exc:
        g._session_check = exc
        raise
    if not revoked:
        g._session_check = _STOOD
        return
    g._access_pending = None  # signed out: nothing here is attributed to its user
    g._session_check = SessionSignedOut()
    raise g._session_check


_STOOD = object()  # the session checked beside the request stands


def backend_name() -> str:
    """``postgres`` or ``file``: where this app's access log goes (pages say so)."""
    return current_logger().backend


def _request_filters() -> dict[str, Any] | None:
    """The query string as a dict (a repeated argument becomes a list), values clipped."""
    filters: dict[str, Any] = {}
    for key in request.args:
        values = [clip(value) for value in request.args.getlist(key)]
        filters[clip(key)] = values[0] if len(values) == 1 else values
    return filters or None


def _pending(*, anonymous: bool = False) -> _Pending | None:
    """This request's pending entry; None for anonymous requests (nothing to attribute)
    unless ``anonymous`` (a sign-in attempt names its user itself)."""
    pending = g.get("_access_pending")
    if pending is None:
        user = g.get("user")
        if user is None and not anonymous:
            return None
        pending = _Pending(
            logger=current_logger(),
            username=user.name if user else None,
            role=user.role if user else None,
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
        filters=filters,
        export_digest=export_digest,
        reason=reason,
    )


def write_ahead(
    action: str | None = None,
    aggregate_ids: Iterable[Any] | str = (),
    row_count: int | None = None,
    filters: Mapping[str, Any] | None = None,
) -> None:
    """:func:`note` the request's last details and start writing its entry at once, beside
    the rest of the response's work (rendering, counting, serialising), instead of after
    it.

    Still fail closed: the after-request hook waits for the write before the response
    leaves, and a write that failed withholds the response (503) exactly as when the hook
    writes the entry itself. The entry says ``ok``; a response that then fails anyway gets a
    second entry with its outcome (the first one recorded what was read). Call it once the
    entry is complete: a later :func:`note` does not reach it.
    """
    confirm_session()
    pending = _pending()
    if pending is None:
        return
    pending.complete(
        action=action,
        aggregate_ids=aggregate_ids,
        row_count=row_count,
        filters=filters,
    )
    with pending._lock:
        if pending.recorded:
            return
        pending.recorded = True
    entry = pending.entry("ok", request.endpoint)
    pending.ahead = (entry, pending.logger.send(entry))


def _settle_ahead(pending: _Pending, response: Response) -> None:
    """The response is ready: wait for the entry written ahead, and decide as the hook does
    for an entry it writes itself."""
    assert pending.ahead is not None
    entry, write = pending.ahead
    pending.ahead = None
    problem = write.problem()  # bounded by the logger's own limits
    status = response.status_code
    if problem is None:
        if status >= 400:  # recorded as read, then not served: say so too
            failed = dataclasses.replace(
                entry, entry_uuid=new_entry_uuid(), outcome=outcome_for(status)
            )
            pending.write(failed, may_withhold=False, unavailable=status == 503)
        return
    if status >= 400:  # an error answer shows nothing: it keeps its own outcome
        entry = dataclasses.replace(entry, outcome=outcome_for(status))
    pending.settle(entry, problem, may_withhold=status < 400)


def record(
    action: str | None = None,
    aggregate_ids: Iterable[Any] | str = (),
    row_count: int | None = None,
    filters: Mapping[str, Any] | None = None,
    reason: str | None = None,
    outcome: str = "ok",
    username: str | None = None,
    role: str | None = None,
    revokes_session: str | None = None,
    may_withhold: bool = True,
) -> Written:
    """Write this request's entry now (a sign-in attempt, a sign-out).

    The request is then marked recorded, so the after-request hook does not write it again.
    ``username``/``role`` attribute a request that has no signed-in user (sign-in attempts).
    "withheld": it could not be written and the response is not to be served (the hook
    answers 503 whatever the view returns); ``may_withhold=False`` (a sign-out, which must
    happen whatever the log says) keeps the entry in the spool instead ("kept").
    """
    confirm_session()
    pending = _pending(anonymous=True)
    assert pending is not None
    if username is not None:
        pending.username, pending.role = username, role
    pending.complete(
        action=action,
        aggregate_ids=aggregate_ids,
        row_count=row_count,
        filters=filters,
        reason=reason,
        revokes_session=revokes_session,
    )
    written = pending.write_once(outcome, request.endpoint, may_withhold=may_withhold)
    if written is None:
        raise RuntimeError("access_log.record() called twice in one request")
    return written


def withheld_problem() -> str:
    """Why this request's response is withheld ("" when it is not)."""
    pending = g.get("_access_pending")
    return (pending.withheld or "") if pending is not None else ""


def start_export(
    action: str,
    filters: Mapping[str, Any] | None = None,
    aggregate_ids: Iterable[Any] | str = (),
) -> None:
    """Write the export's ``started`` entry before anything is read or sent; raises
    AccessLogDown (503) when it cannot be written. Its outcome follows by
    :func:`finish_export`."""
    confirm_session()
    pending = _pending()
    if pending is None:
        return
    pending.complete(
        action=action,
        aggregate_ids=aggregate_ids,
        filters=filters,
    )
    with pending._lock:
        pending.started = pending.recorded = True
    if pending.write(pending.entry("started", request.endpoint), may_withhold=True) == "withheld":
        raise AccessLogDown(pending.withheld or "unknown problem")


def finish_export(
    outcome: str,
    row_count: int | None = None,
    export_digest: str | None = None,
    *,
    may_withhold: bool,
) -> None:
    """Write the export's outcome (``ok`` with rows and digest, or ``failed``).

    ``may_withhold``: nothing has been sent yet (a PDF built in memory), so an outcome that
    cannot be written withholds the file (AccessLogDown); once bytes have left it goes to
    the spool instead.
    """
    pending = g.get("_access_pending")
    if pending is None or not pending.started:
        return
    pending.merge(row_count=row_count, export_digest=export_digest)
    written = pending.write(pending.entry(outcome, request.endpoint), may_withhold=may_withhold)
    if written == "withheld":
        raise AccessLogDown(pending.withheld or "unknown problem")


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


def withheld_response(problem: str):
    g._access_withheld_answered = True
    return error_response(503, AccessLogDown(problem).message, WITHHELD_TITLE)


def _after_request(response: Response):
    """Write this request's entry before the response leaves; withhold it if that fails."""
    if request.endpoint in UNLOGGED_ENDPOINTS:
        return response
    pending = g.get("_access_pending") or _pending()  # a sign-in attempt has no g.user
    if pending is None:
        return response
    if pending.ahead is not None:
        _settle_ahead(pending, response)
    elif pending.withheld is None and not pending.recorded:
        if pending.filters is None:
            pending.filters = _request_filters()
        outcome = outcome_for(response.status_code)
        # An error answer shows nothing of the audit trail: when its entry cannot be
        # written, the entry waits in the spool and the answer still names its own problem
        # (a hung database says so, not "the access log cannot be written").
        pending.write_once(
            outcome,
            request.endpoint or "unknown_route",
            may_withhold=response.status_code < 400,
            unavailable=response.status_code == 503,
        )
    if pending.withheld is None:
        return response
    if g.get("_access_withheld_answered"):
        return response  # already the withheld answer (AccessLogDown's handler)
    response.close()  # frees what a withheld stream holds (an export connection)
    refused = withheld_response(pending.withheld)
    return current_app.make_response(refused)


SPOOL_WAIT_S = 0.5  # how long a request waits for the spool's delivery before it goes on


def _deliver_spooled() -> None:
    """Before anything else in a request: write what waits in the spool (a batch).

    The delivery runs in a thread the request waits for at most SPOOL_WAIT_S: when the log
    answers, the spool is written before the request's own entry (order kept); when the
    database hangs, the request is not held for the delivery's whole wait.
    """
    logger = current_logger()
    if not logger.spool.pending_bytes():
        return  # the usual case: one stat
    delivery = threading.Thread(target=logger.deliver_spooled, name="access-log-spool", daemon=True)
    delivery.start()
    delivery.join(SPOOL_WAIT_S)


def _abandon_ahead(_exc: BaseException | None = None) -> None:
    """A request that ended before its hooks collected the entry written ahead or the
    answer about its session (it failed on the way out) gives back what they hold."""
    pending = g.get("_access_pending")
    if pending is not None and pending.ahead is not None:
        _entry, write = pending.ahead
        pending.ahead = None
        write.abandon()
    check = g.get("_session_check")
    if isinstance(check, _Asked | _Answer):
        g._session_check = None
        check.abandon()


def _access_log_down(exc: AccessLogDown):
    return withheld_response(exc.problem)


def init_app(app: Flask) -> None:
    """Install the logger, the spool delivery and the hooks.

    Call before registering the sign-in check (so spooled sign-outs are written before any
    session is checked) and after registering any after-request hook that must see the
    final response (after-request hooks run in reverse order: this one runs before them).
    """
    settings = context.app_context(app).settings
    logger = AccessLogger(settings)
    app.extensions[EXTENSION_KEY] = logger
    logger.check()
    app.before_request(_deliver_spooled)
    app.after_request(_after_request)
    app.teardown_request(_abandon_ahead)
    app.register_error_handler(AccessLogDown, _access_log_down)
