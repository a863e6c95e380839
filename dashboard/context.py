"""The running app's context: settings, the reader engine, what we know about the table,
and the one database connection each request uses.

The table check runs at start-up and again on any request while it has not yet succeeded,
so a dashboard started before its database comes back serves 503 until then and recovers
by itself, and a role that can write is refused however late it is discovered.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import sqlalchemy as sa
from flask import Flask, current_app, g
from sqlalchemy.engine import Connection, Engine

from . import db, freshness, replica
from .config import Settings
from .rules import DEFAULT_RULES, load_rules

log = logging.getLogger(__name__)


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    rules: tuple = DEFAULT_RULES
    table: db.TableInfo | None = None
    problem: Exception | None = None
    replica_status: replica.StatusCache = field(default_factory=replica.StatusCache)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _facet_engine: Engine | None = field(default=None, repr=False)

    def facet_engine(self) -> Engine:
        """The reader's engine for a search's counts (:mod:`dashboard.views.search`): made
        on first use, autocommit, every statement under AUDIT_FACET_TIMEOUT_MS as the
        session's own limit, so a count needs no SET, no SAVEPOINT and no restoring, and
        runs beside the page's own query instead of after it. One idle connection per
        process (the reader role's CONNECTION LIMIT counts it)."""
        engine = self._facet_engine
        if engine is None:
            with self._lock:
                if self._facet_engine is None:
                    self._facet_engine = db.make_engine(
                        self.settings.database_url or "",
                        pool_size=1,
                        max_overflow=3,
                        statement_timeout_ms=self.settings.facet_timeout_ms,
                        read_only=True,
                        application_name="audit-dashboard-counts",
                        isolation_level="AUTOCOMMIT",
                    )
                engine = self._facet_engine
        return engine

    def engines(self) -> list[Engine]:
        """Every reader engine made so far (tests count their statements)."""
        return [self.engine, *([self._facet_engine] if self._facet_engine else [])]

    def dispose(self) -> None:
        """Close every pooled reader connection."""
        for engine in self.engines():
            engine.dispose()

    def probe(self) -> db.TableInfo:
        """Return the table info, checking the database first if not yet done.

        Raises DatabaseUnavailable, TableMissing or WritableRole with a message for people.
        """
        if self.table is not None:
            return self.table
        with self._lock:
            if self.table is not None:
                return self.table
            try:
                with db.bounded(self.engine, self.settings.statement_timeout_ms) as conn:
                    info = db.inspect_table(conn)
            except sa.exc.OperationalError as exc:
                problem: Exception = db.DatabaseUnavailable(
                    db.explain_connection_error(exc, self.settings.database_url or "")
                )
                self.problem = problem
                raise problem from exc
            except db.TableMissing as exc:
                self.problem = exc
                raise
            db.refuse_writable(info, allow=self.settings.allow_writable_role)
            if not info.has_seq:
                log.warning(
                    "audit_events has no seq column: events with the same created_at are "
                    "ordered by event_id, which is not the order they were written in."
                )
            self.table, self.problem = info, None
            self._read_replica_status()
            return info

    def _read_replica_status(self) -> None:
        """Prime the freshness cache (so a primary's pages need no statement for it, see
        :func:`data_freshness`) and say at start when the reader is a standby that does not
        stream. A server that will not say is no reason to refuse: pages just say nothing."""
        try:
            with db.bounded(self.engine, self.settings.statement_timeout_ms) as conn:
                status = replica.read_status(conn)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("Could not read the reader's replication status: %s", exc)
            return
        self.replica_status.put(status)
        said = freshness.describe(
            status, self.settings.replica_max_lag_s, self.settings.display_timezone
        )
        if said is not None:
            (log.warning if said.flagged else log.info)("AUDIT_DATABASE_URL: %s", said.text)


def build_context(settings: Settings) -> AppContext:
    if not settings.database_url:
        raise db.DatabaseUnavailable(
            "AUDIT_DATABASE_URL is not set. Set it to the audit_reader role's URL "
            "(postgresql://audit_reader:PASSWORD@HOST/DB), or run `audit-dashboard demo` "
            "for the embedded database with demo data."
        )
    rules = load_rules(settings.rules_file) if settings.rules_file else DEFAULT_RULES
    engine = db.make_engine(
        settings.database_url, statement_timeout_ms=settings.statement_timeout_ms, read_only=True
    )
    return AppContext(settings=settings, engine=engine, rules=rules)


def app_context(app: Flask | None = None) -> AppContext:
    return (app or current_app).extensions["audit"]


def settings() -> Settings:
    return app_context().settings


def table_info() -> db.TableInfo:
    return app_context().probe()


def integrity_keys():
    """The public keys of AUDIT_PUBLIC_KEY_FILES (:class:`integrity.check.KeyConfig`), read
    again when a file changes (a rotation needs no restart); a bad file is a message the
    pages show, never a failed request."""
    from .integrity.check import load_key_config

    paths = settings().public_key_files
    stamp = []
    for path in paths:
        try:
            stat = path.stat()
            stamp.append((str(path), stat.st_mtime_ns, stat.st_size))
        except OSError:
            stamp.append((str(path), None, None))
    extensions = current_app.extensions
    cached = extensions.get("audit_integrity_keys")
    if cached is None or cached[0] != stamp:
        cached = (stamp, load_key_config(paths))
        extensions["audit_integrity_keys"] = cached
    return cached[1]


def data_freshness() -> freshness.Freshness | None:
    """What this page says about how fresh its data is (None on a primary).

    Read on the request's own connection, the one that read the page's data, and only when
    the cached status (:class:`replica.StatusCache`) is stale: at most one statement every
    few seconds per process. A page that opened no connection shows what is cached, if
    anything; a failure to read it shows nothing (the page itself says what went wrong).
    """
    ctx = app_context()
    conn = g.get("_audit_conn")
    try:
        status = ctx.replica_status.get(
            (lambda: replica.read_status(conn)) if conn is not None else None
        )
    except sa.exc.SQLAlchemyError:
        log.debug("Could not read the replica status", exc_info=True)
        return None
    return freshness.describe(status, ctx.settings.replica_max_lag_s, ctx.settings.display_timezone)


def connection(timeout_ms: int | None = None, *, single_statements: bool = False) -> Connection:
    """This request's read-only connection, in a transaction with a local statement_timeout.

    ``single_statements``: the caller (the search page, its JSON) sends only statements that
    stand alone (no SAVEPOINT, no server-side cursor, the session's own statement_timeout),
    so the connection is left in autocommit: no BEGIN and no COMMIT, two round trips of
    every page. Under READ COMMITTED each statement had its own snapshot anyway. A later
    call without it (or with a timeout) turns the connection into a transaction first.
    """
    conn = g.get("_audit_conn")
    if conn is None:
        ctx = app_context()
        ctx.probe()
        try:
            conn = db.connect(ctx.engine)
            g._audit_conn = conn
            if single_statements and timeout_ms is None:
                conn.execution_options(isolation_level="AUTOCOMMIT")
                g._audit_autocommit = True
                return conn
            _begin(conn, timeout_ms or ctx.settings.statement_timeout_ms)
        except sa.exc.OperationalError as exc:
            raise db.DatabaseUnavailable(
                db.explain_connection_error(exc, ctx.settings.database_url or "")
            ) from exc
    elif g.get("_audit_autocommit") and (not single_statements or timeout_ms is not None):
        g._audit_autocommit = False
        if conn.in_transaction():
            conn.commit()  # SQLAlchemy's own bookkeeping: nothing is sent in autocommit
        conn.execution_options(isolation_level=conn.default_isolation_level)
        _begin(conn, timeout_ms or app_context().settings.statement_timeout_ms)
    elif timeout_ms is not None:
        db.set_timeout(conn, timeout_ms)
    return conn


def _begin(conn: Connection, timeout_ms: int) -> None:
    conn.begin()
    # Read-only and the page's statement_timeout are the session's own (startup options,
    # db.make_engine): nothing is sent here unless the limit differs.
    db.set_timeout(conn, timeout_ms)


def close_connection(_exc: BaseException | None = None) -> None:
    conn = g.pop("_audit_conn", None)
    if conn is not None:
        try:
            # Nothing is ever written through the reader, so COMMIT and ROLLBACK end its
            # transaction alike; but psycopg forgets (DEALLOCATE ALL) the statements it
            # prepared on a ROLLBACK, and queries.first_events keeps one across requests.
            # A transaction that failed is rolled back (PostgreSQL would anyway).
            if _exc is None and conn.in_transaction() and not conn.invalidated:
                try:
                    conn.commit()
                except sa.exc.SQLAlchemyError:
                    conn.rollback()
            else:
                conn.rollback()
        finally:
            conn.close()
