"""Database access: engines, bounded transactions, and what the app learns about its table.

The dashboard reads through a read-only role. Each request gets one connection and one
transaction whose ``statement_timeout`` is transaction-local, so a broad query is cancelled
instead of holding the big table; the caller turns the cancellation into "too broad".

A ``statement_timeout`` only helps while the server is alive to enforce it. A server that
hangs (stopped, swapping, a network that drops packets) would hold a request — and the
worker thread serving it — for as long as it hangs, until no thread is left for anyone,
sign-in included. So the engines of the app also bound the *client's* waits
(:class:`BoundedConnection`): every wait for the server gives up after the transaction's
statement timeout plus :data:`CLIENT_MARGIN_MS`, closes that connection and raises
:class:`DatabaseNotAnswering` (a 503 saying so). This works on Unix sockets as well as TCP;
on TCP, keepalives and ``tcp_user_timeout`` also let the kernel notice a dead peer, and
``connect_timeout`` bounds opening a connection.
"""

from __future__ import annotations

import logging
import math
import os
import select
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import psycopg
import sqlalchemy as sa
from psycopg import errors as pg_errors
from psycopg.types.json import set_json_loads
from sqlalchemy.engine import Connection, Engine

from .breaker import Breaker
from .citus import unreachable_node
from .jsonlimits import load_json_bytes

log = logging.getLogger(__name__)

WRITE_PRIVILEGES = ("INSERT", "UPDATE", "DELETE", "TRUNCATE")

# The planner's count of audit_events rows, plain or partitioned: a partitioned parent's
# own reltuples is only set by a manual ANALYZE of it (autovacuum analyzes the partitions,
# never the parent), so the partitions' counts are summed.
ESTIMATED_TABLE_ROWS = sa.text(
    "SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint FROM pg_class c "
    "WHERE (c.oid = 'public.audit_events'::regclass AND c.relkind = 'r') "
    "OR c.oid IN (SELECT relid FROM pg_partition_tree('public.audit_events') WHERE isleaf)"
)
# How much longer than its statement timeout the client waits for the server: enough for the
# server to cancel the statement itself and say so (a "too broad" 503 with its reason), short
# enough that a hung server frees the request promptly.
CLIENT_MARGIN_MS = 1000
# libpq's connect_timeout takes whole seconds and treats anything under 2 as 2.
MIN_CONNECT_TIMEOUT_S, MAX_CONNECT_TIMEOUT_S = 2, 5


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached or refused us; the message says how to fix it."""


class TableMissing(RuntimeError):
    """audit_events does not exist (or the role cannot see it)."""


class WritableRole(RuntimeError):
    """The configured role may change audit_events; the dashboard refuses to serve."""


class DatabaseNotAnswering(psycopg.OperationalError):
    """The server did not answer within the client's bound; the connection was closed.

    An OperationalError, so SQLAlchemy wraps it like any lost connection (the pool discards
    the connection) and the error handlers answer 503.
    """


_WAIT_TIMEOUT = getattr(pg_errors, "_WaitTimeout", None)  # psycopg >= 3.2


class BoundedConnection(psycopg.Connection):
    """A psycopg connection whose every wait for the server ends after ``wait_limit_s``.

    Every exchange with the server — a statement, fetching from a server-side cursor, each
    chunk of a COPY, COMMIT and ROLLBACK — goes through :meth:`wait`. When the limit
    passes, the connection is closed (the protocol is mid-message; it cannot be reused)
    and :class:`DatabaseNotAnswering` is raised. ``None`` means no limit (the CLI).
    """

    wait_limit_s: float | None = None
    default_wait_limit_s: float | None = None
    breaker: Breaker | None = None
    # The statement_timeout the session starts every transaction with (a startup option),
    # and the one in force in the current transaction when known (None: not known, set it
    # again): :func:`set_timeout` sends nothing when it would not change.
    session_timeout_ms: int | None = None
    timeout_ms: int | None = None

    def wait(self, gen: Any, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        limit = self.wait_limit_s
        if limit is None or _WAIT_TIMEOUT is None:
            return super().wait(gen, *args, timeout=timeout, **kwargs)
        bounded_by_us = timeout is None or timeout > limit
        try:
            return super().wait(gen, *args, timeout=limit if bounded_by_us else timeout, **kwargs)
        except _WAIT_TIMEOUT:
            if not bounded_by_us:
                raise
            if self.breaker is not None:
                self.breaker.failed()
            self.close()
            raise DatabaseNotAnswering(
                f"the database did not answer within {limit:g} s; the request gave up "
                "instead of waiting (the server may be hung or overloaded)"
            ) from None


def sqlalchemy_url(url: str) -> str:
    """Accept libpq-style URLs (postgresql://, postgres://) and select the psycopg 3 driver."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise DatabaseUnavailable(
        f"{redact(url)} is not a PostgreSQL URL; expected postgresql://user:password@host/db."
    )


def libpq_url(url: str) -> str:
    """The same URL in the form psycopg.connect() takes."""
    return "postgresql://" + sqlalchemy_url(url)[len("postgresql+psycopg://") :]


def redact(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is shown as a placeholder, never echoed with secrets
        return "<unparsable database URL>"


# Every engine the app makes, so that a forked child (a gunicorn worker, a multiprocessing
# child) starts with empty pools. Weak: an engine that is garbage is forgotten here too.
_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


def _forget_inherited_connections() -> None:
    """In a freshly forked child: drop the pooled connections inherited from the parent.

    Two processes on one socket interleave their protocol messages ("connection in
    transaction status INTRANS", "prepared statement already exists", lost writes).
    ``close=False`` leaves the sockets to the parent: closing them here would end the
    parent's sessions too (SQLAlchemy's "Using Connection Pools with Multiprocessing").
    """
    for engine in list(_ENGINES):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_inherited_connections)


def fork_safe(engine: Engine) -> Engine:
    """Register ``engine`` so that a forked child never uses the parent's connections."""
    _ENGINES.add(engine)
    return engine


# psycopg's prepare_threshold for readers: a count of runs no statement reaches.
NEVER_PREPARE_BY_ITSELF: Final = 2**62


def make_engine(
    url: str,
    *,
    pool_size: int = 5,
    max_overflow: int = 5,
    statement_timeout_ms: int | None = None,
    application_name: str = "audit-dashboard",
    options: str = "",
    breaker: bool = True,
    read_only: bool = False,
    **engine_args: Any,
) -> Engine:
    """An engine on psycopg 3. With ``statement_timeout_ms`` (the app's engines) every wait
    for the server is bounded by it plus CLIENT_MARGIN_MS (see :class:`BoundedConnection`),
    and so are connecting and waiting for a pooled connection; ``set_timeout`` moves the
    bound with each transaction's own limit. Without it (the CLI: seeding, init-db) only
    connecting is bounded. ``breaker=False`` leaves out the circuit breaker (the access
    log: with pages failing closed on it, every write must try the database, so it is back
    the moment the database is, and its waits are short anyway)."""
    connect_timeout = MAX_CONNECT_TIMEOUT_S
    # psycopg reads times only in ISO style: a server or database whose default DateStyle
    # is another ('SQL, DMY') would make every page that shows a time fail.
    # No JIT compilation: the dashboard's statements are pages (LIMIT, milliseconds) and
    # streams (exports, histories) whose cost estimate can cross jit_above_cost without
    # JIT paying back. Measured on PostgreSQL 15 (built with LLVM, JIT on by default):
    # a month's CSV export at 1M events spent 200-275 ms of its 510 ms compiling its
    # expressions (EXPLAIN ANALYZE's "JIT: Timing"); see docs/scale-out.md.
    startup = ["-c TimeZone=UTC", "-c DateStyle=ISO", "-c jit=off"]
    if statement_timeout_ms is not None:
        # The session's own limit, so a transaction that keeps it sends no SET (see
        # set_timeout); a transaction-local set_config() still overrides it.
        startup.append(f"-c statement_timeout={int(statement_timeout_ms)}")
    if read_only:
        # Every transaction read-only without a SET TRANSACTION per request (the reader's
        # role says so too, sql/001_roles.sql; this holds for any role the URL names).
        startup.append("-c default_transaction_read_only=on")
    connect_args: dict[str, Any] = {
        "application_name": application_name,
        # Times come back as UTC datetimes (psycopg maps the UTC zone to timezone.utc),
        # which Event takes as they are: no per-row conversion on a 10,000-event replay.
        "options": " ".join([*startup, options]).strip(),
    }
    if read_only:
        # A reader prepares only what asks for it (prepare=True: queries.first_events).
        # psycopg would otherwise prepare any statement run five times on a connection, and
        # PostgreSQL may then plan it once for all values: a plan made for a common event
        # type can walk the whole time index for a rare one.
        # (None would refuse prepare=True too.)
        connect_args["prepare_threshold"] = NEVER_PREPARE_BY_ITSELF
    limit_s: float | None = None
    if statement_timeout_ms is not None:
        limit_s = client_wait_limit_s(statement_timeout_ms)
        connect_timeout = min(MAX_CONNECT_TIMEOUT_S, max(MIN_CONNECT_TIMEOUT_S, math.ceil(limit_s)))
        engine_args.setdefault("pool_timeout", connect_timeout)
        # TCP only (libpq ignores them on a Unix socket): notice a peer that vanished.
        connect_args.update(
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=3,
            keepalives_count=3,
            tcp_user_timeout=int(limit_s * 1000),
        )
    connect_args["connect_timeout"] = connect_timeout
    engine = sa.create_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        # No pre-ping: it is a round trip before every use. check_out_alive() finds the
        # connections a restart or pg_terminate_backend() ended without one.
        pool_pre_ping=False,
        pool_recycle=1800,
        connect_args=connect_args,
        **engine_args,
    )
    sa.event.listen(engine, "connect", _bounded_json)
    sa.event.listen(engine, "checkout", check_out_alive)
    sa.event.listen(engine, "checkin", _note_checkin)
    if limit_s is not None:
        _bound_waits(
            engine,
            limit_s,
            url,
            Breaker(cooldown_s=limit_s) if breaker else None,
            statement_timeout_ms,
        )
    return fork_safe(engine)


# A pooled connection idle longer than this is pinged at check-out (one round trip): the
# server it was opened on may have gone without a word (a failover, a host that rebooted),
# which only a round trip tells. A busy pool never waits this long between uses.
PING_AFTER_IDLE_S = 30.0


def _note_checkin(dbapi_connection, connection_record) -> None:
    connection_record.info["idle_since"] = time.monotonic()


def server_hung_up(dbapi_connection: Any) -> bool:
    """Whether an idle connection has heard from its server: no round trip, one poll().

    An idle connection is owed nothing. When its socket is readable all the same, the server
    spoke unasked, which it does only to end the session: a restart or shutdown, an
    administrator's pg_terminate_backend(), an idle timeout (a FATAL, then EOF). The
    connection cannot be used.
    """
    if getattr(dbapi_connection, "closed", False) or getattr(dbapi_connection, "broken", False):
        return True
    pgconn = getattr(dbapi_connection, "pgconn", None)
    if pgconn is None:
        return False
    try:
        fd = pgconn.socket
    except psycopg.OperationalError:
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


def check_out_alive(dbapi_connection, connection_record, _connection_proxy) -> None:
    """Pool check-out: refuse a pooled connection whose server is gone, so that the pool
    opens a new one instead of the page failing (SQLAlchemy's DisconnectionError protocol;
    it tries up to three connections). Replaces ``pool_pre_ping``, which paid a round trip
    on every check-out to learn the same: here a poll() of the socket, and a ping only for
    a connection idle longer than PING_AFTER_IDLE_S.

    A server that dies between this check and the page's first statement still fails that
    page (a 503; the pre-ping had the same window), and SQLAlchemy then invalidates the
    whole pool, so the next request reconnects.
    """
    if server_hung_up(dbapi_connection):
        raise sa.exc.DisconnectionError("the server ended this pooled connection")
    idle_since = connection_record.info.get("idle_since")
    if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_S:
        return
    try:
        connection_record.info.pop("idle_since", None)
        _ping(dbapi_connection)
    except psycopg.Error as exc:
        raise sa.exc.DisconnectionError(f"the pooled connection did not answer: {exc}") from exc


def _ping(dbapi_connection: Any) -> None:
    """One empty statement outside any transaction (what pre-ping sends)."""
    if dbapi_connection.autocommit:
        dbapi_connection.execute(";")
        return
    dbapi_connection.autocommit = True
    try:
        dbapi_connection.execute(";")
    finally:
        if not dbapi_connection.closed:
            dbapi_connection.autocommit = False


def _bounded_json(dbapi_connection, _record) -> None:
    """Every json/jsonb value this connection reads is decoded within the depth the
    dashboard can walk (:mod:`dashboard.jsonlimits`): one hostile event must not make a
    RecursionError of every page that reads it."""
    set_json_loads(load_json_bytes, dbapi_connection)


def client_wait_limit_s(timeout_ms: int) -> float:
    """How long the client waits for one answer of a transaction limited to ``timeout_ms``."""
    return (int(timeout_ms) + CLIENT_MARGIN_MS) / 1000


# Each bounded engine's breaker and URL (keyed by the engine: dispose() replaces its pool).
_BREAKERS: weakref.WeakKeyDictionary[Any, tuple[Breaker, str]] = weakref.WeakKeyDictionary()


def _bound_waits(
    engine: Engine,
    limit_s: float,
    url: str,
    breaker: Breaker | None,
    session_timeout_ms: int | None = None,
) -> None:
    if breaker is not None:
        _BREAKERS[engine] = (breaker, url)

    @sa.event.listens_for(engine, "do_connect")
    def connect(dialect, conn_rec, cargs, cparams):
        if breaker is not None and breaker.is_open and not breaker.is_trial():
            # Typically the pre-ping of this very checkout just went unanswered: a new
            # connection would wait its connect_timeout for the same silence.
            raise DatabaseNotAnswering(
                f"the database has not answered for {breaker.down_for():.0f} s"
            )
        try:
            conn = BoundedConnection.connect(*cargs, **cparams)
        except psycopg.OperationalError as exc:
            if breaker is not None and "timeout expired" in str(exc):
                breaker.failed()
            raise
        conn.wait_limit_s = conn.default_wait_limit_s = limit_s
        conn.breaker = breaker
        conn.session_timeout_ms = conn.timeout_ms = session_timeout_ms
        return conn

    @sa.event.listens_for(engine, "reset")
    def back_to_default(dbapi_connection, connection_record, reset_state):
        # Before the pool's ROLLBACK: a transaction's own limit (an export's ten minutes)
        # ends with it.
        if isinstance(dbapi_connection, BoundedConnection):
            dbapi_connection.wait_limit_s = dbapi_connection.default_wait_limit_s
            dbapi_connection.timeout_ms = dbapi_connection.session_timeout_ms

    def forget_timeout(conn, *_args) -> None:
        # The transaction (or savepoint) ended: a set_config(..., true) in it may be undone.
        if conn.invalidated or conn.closed:
            return  # (reading conn.connection would reconnect)
        driver = conn.connection.driver_connection
        if isinstance(driver, BoundedConnection):
            driver.timeout_ms = None

    for name in ("commit", "rollback", "rollback_savepoint"):
        sa.event.listen(engine, name, forget_timeout)


def connect(engine: Engine) -> Connection:
    """``engine.connect()``, refused at once (DatabaseUnavailable) while the database is
    known not to answer; one call per cooldown tries it again (see :mod:`dashboard.breaker`).
    """
    found = _BREAKERS.get(engine)
    if found is None:
        return engine.connect()
    breaker, url = found
    if not breaker.allow():
        raise DatabaseUnavailable(
            f"The database at {redact(url)} has not answered for {breaker.down_for():.0f} s "
            "(it may be hung or overloaded). Pages answer 503 at once until it does; it is "
            f"tried again every {breaker.cooldown_s:g} s, and nothing needs restarting."
        )
    conn = engine.connect()
    breaker.succeeded()
    return conn


def explain_connection_error(exc: BaseException, url: str) -> str:
    """One paragraph that names the problem and the fix."""
    text = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc) else repr(exc)
    where = redact(url)
    lowered = text.lower()
    node = unreachable_node(text)
    if node is not None:
        # The coordinator answered; one of its workers did not (SQLSTATE 08006 from Citus).
        return (
            f"The Citus worker at {node} is not answering: the coordinator at {where} could "
            f"not reach it ({text}). What is stored on that worker cannot be read until it is "
            "back; pages that need it answer 503 meanwhile, and nothing needs restarting here."
        )
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return (
            f"The database at {where} refused the password ({text}). Check the password in "
            "AUDIT_DATABASE_URL, or set it with `audit-dashboard init-db --reader-password`."
        )
    if "did not answer within" in lowered or "timeout expired" in lowered:
        return (
            f"The database at {where} is not answering: {text}. Pages answer 503 until it "
            "does again; nothing needs restarting."
        )
    if "too many connections" in lowered or "remaining connection slots" in lowered:
        return (
            f"The database at {where} refused a new connection: its connection limit is "
            f"reached ({text}). Try again in a moment; if it persists, raise CONNECTION LIMIT "
            "of the role (sql/001_roles.sql) or max_connections, or run fewer workers."
        )
    if "does not exist" in lowered and "database" in lowered:
        return f"The database named in {where} does not exist ({text}). Create it or fix the URL."
    if "role" in lowered and "does not exist" in lowered:
        return (
            f"The role in {where} does not exist ({text}). Run `audit-dashboard init-db` "
            "to create audit_reader, or fix the user name in the URL."
        )
    return (
        f"Cannot reach the database at {where} ({text}). Check that PostgreSQL is running and "
        "that the host, port and database in AUDIT_DATABASE_URL are right."
    )


@dataclass(frozen=True)
class TableInfo:
    """What the app found out about audit_events at start-up."""

    has_seq: bool
    role: str
    writable_privileges: tuple[str, ...]
    has_access_log: bool
    # The tamper-evidence heads (sql/010) exist and the role may read them.
    has_tree: bool = False
    # audit_events is a Citus distributed table (init-db --citus, dashboard/citus.py).
    distributed: bool = False
    # audit_events is partitioned (init-db --partition, dashboard/partitions).
    partitioned: bool = False


def inspect_table(conn: Connection) -> TableInfo:
    """Check the table exists and what the current role may do to it."""
    exists = conn.execute(sa.text("SELECT to_regclass('public.audit_events') IS NOT NULL")).scalar()
    if not exists:
        raise TableMissing(
            "The table audit_events does not exist in this database. Run "
            "`audit-dashboard init-db --admin-url URL` against it, or point AUDIT_DATABASE_URL "
            "at the database that holds the audit trail."
        )
    has_seq = bool(
        conn.execute(
            sa.text(
                "SELECT EXISTS (SELECT 1 FROM information_schema.columns "
                "WHERE table_schema = 'public' AND table_name = 'audit_events' "
                "AND column_name = 'seq')"
            )
        ).scalar()
    )
    role = conn.execute(sa.text("SELECT current_user")).scalar_one()
    writable = tuple(
        privilege
        for privilege in WRITE_PRIVILEGES
        if conn.execute(
            # On the table or on any partition of it (writing to a partition is writing to
            # the table).
            sa.text(
                "SELECT has_table_privilege(current_user, 'public.audit_events', :p) "
                "OR EXISTS (SELECT 1 FROM pg_partition_tree('public.audit_events') "
                "WHERE level > 0 AND has_table_privilege(current_user, relid, :p))"
            ),
            {"p": privilege},
        ).scalar()
    )
    has_access_log, has_tree, partitioned = conn.execute(
        sa.text(
            "SELECT to_regclass('public.audit_access_log') IS NOT NULL AND "
            "has_table_privilege(current_user, 'public.audit_access_log', 'SELECT'), "
            "to_regclass('public.audit_tree_heads') IS NOT NULL AND "
            "has_table_privilege(current_user, 'public.audit_tree_heads', 'SELECT'), "
            "(SELECT relkind = 'p' FROM pg_class WHERE oid = 'public.audit_events'::regclass)"
        )
    ).one()
    distributed = bool(
        conn.execute(
            sa.text("SELECT to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL")
        ).scalar()
    ) and bool(
        conn.execute(
            sa.text(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition "
                "WHERE logicalrelid = 'public.audit_events'::regclass)"
            )
        ).scalar()
    )
    return TableInfo(
        has_seq=has_seq,
        role=role,
        writable_privileges=writable,
        has_access_log=bool(has_access_log),
        has_tree=bool(has_tree),
        distributed=distributed,
        partitioned=bool(partitioned),
    )


def refuse_writable(info: TableInfo, *, allow: bool) -> None:
    if not info.writable_privileges:
        return
    privileges = ", ".join(info.writable_privileges)
    message = (
        f"The database role {info.role!r} has {privileges} on audit_events. The dashboard must "
        "read through a role that cannot change the audit trail. Point AUDIT_DATABASE_URL at "
        f"audit_reader (created by `audit-dashboard init-db`), or run: REVOKE {privileges} "
        f"ON audit_events FROM {info.role};"
    )
    if allow:
        log.warning("AUDIT_ALLOW_WRITABLE_ROLE is set, serving anyway. %s", message)
        return
    raise WritableRole(message + " (AUDIT_ALLOW_WRITABLE_ROLE=1 overrides this, loudly.)")


@contextmanager
def bounded(engine: Engine, timeout_ms: int) -> Iterator[Connection]:
    """A read-only transaction whose statements are cancelled after ``timeout_ms``.

    ``set_config(..., true)`` is the bindable form of ``SET LOCAL``: the limit ends with the
    transaction and never leaks into the pool.
    """
    with connect(engine) as conn, conn.begin():
        set_timeout(conn, timeout_ms)
        conn.execute(sa.text("SET TRANSACTION READ ONLY"))
        yield conn


def set_timeout(conn: Connection, timeout_ms: int) -> None:
    """The transaction's statement_timeout, and the client's bound on waiting for it.

    Nothing is sent when the transaction already runs under ``timeout_ms`` (the session's
    own limit, a startup option of :func:`make_engine`): a page pays no round trip for it.
    """
    driver = conn.connection.driver_connection
    if isinstance(driver, BoundedConnection) and driver.default_wait_limit_s is not None:
        driver.wait_limit_s = client_wait_limit_s(timeout_ms)
        if driver.timeout_ms == int(timeout_ms) and conn.in_transaction():
            return
    conn.execute(
        sa.text("SELECT set_config('statement_timeout', :ms, true)"), {"ms": str(int(timeout_ms))}
    )
    if isinstance(driver, BoundedConnection):
        driver.timeout_ms = int(timeout_ms)


def is_query_canceled(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", exc)
    return isinstance(orig, pg_errors.QueryCanceled)


def is_connection_problem(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", exc)
    return isinstance(orig, psycopg.OperationalError) and not isinstance(
        orig, pg_errors.QueryCanceled
    )


def is_missing_table(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", exc)
    return isinstance(orig, pg_errors.UndefinedTable)
