"""Database access: engines, bounded transactions, and what the app learns about its table.

The dashboard reads through a read-only role. Each request gets one connection and one
transaction whose ``statement_timeout`` is transaction-local, so a broad query is cancelled
instead of holding the big table; the caller turns the cancellation into "too broad".
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
import sqlalchemy as sa
from psycopg import errors as pg_errors
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

WRITE_PRIVILEGES = ("INSERT", "UPDATE", "DELETE", "TRUNCATE")


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached or refused us; the message says how to fix it."""


class TableMissing(RuntimeError):
    """audit_events does not exist (or the role cannot see it)."""


class WritableRole(RuntimeError):
    """The configured role may change audit_events; the dashboard refuses to serve."""


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


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    return fork_safe(_create_engine(url, pool_size=pool_size))


def _create_engine(url: str, *, pool_size: int) -> Engine:
    return sa.create_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=5,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={
            "connect_timeout": 5,
            "application_name": "audit-dashboard",
            # Times come back as UTC datetimes (psycopg maps the UTC zone to timezone.utc),
            # which Event takes as they are: no per-row conversion on a 10,000-event replay.
            "options": "-c TimeZone=UTC",
        },
    )


def explain_connection_error(exc: BaseException, url: str) -> str:
    """One paragraph that names the problem and the fix."""
    text = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc) else repr(exc)
    where = redact(url)
    lowered = text.lower()
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return (
            f"The database at {where} refused the password ({text}). Check the password in "
            "AUDIT_DATABASE_URL, or set it with `audit-dashboard init-db --reader-password`."
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
            sa.text("SELECT has_table_privilege(current_user, 'public.audit_events', :p)"),
            {"p": privilege},
        ).scalar()
    )
    has_access_log = bool(
        conn.execute(
            sa.text(
                "SELECT to_regclass('public.audit_access_log') IS NOT NULL AND "
                "has_table_privilege(current_user, 'public.audit_access_log', 'SELECT')"
            )
        ).scalar()
    )
    return TableInfo(
        has_seq=has_seq, role=role, writable_privileges=writable, has_access_log=has_access_log
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
    with engine.connect() as conn, conn.begin():
        set_timeout(conn, timeout_ms)
        conn.execute(sa.text("SET TRANSACTION READ ONLY"))
        yield conn


def set_timeout(conn: Connection, timeout_ms: int) -> None:
    conn.execute(
        sa.text("SELECT set_config('statement_timeout', :ms, true)"), {"ms": str(int(timeout_ms))}
    )


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
