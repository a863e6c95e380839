"""The database side of the partitioned layout: create it, convert a plain table to it,
and create the monthly partitions ahead of time.

Every function takes a psycopg connection whose transaction the caller owns (``init-db``
and ``partitions ensure`` each run in one transaction), except :func:`prepare_conversion`,
whose steps must each commit on their own (see there). Identifiers come from
:mod:`.plan` (never from input) and go through ``psycopg.sql.Identifier``; bounds through
``sql.Literal`` (DDL takes no bind parameters).

A partition is made as a plain table and then ATTACHed rather than with ``CREATE TABLE
... PARTITION OF``: ATTACH takes only a SHARE UPDATE EXCLUSIVE lock on audit_events, so
searches and inserts go on while cron runs ``partitions ensure``; PARTITION OF would take
an ACCESS EXCLUSIVE lock and queue every reader behind a long export.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import psycopg
from psycopg import sql

from ..paths import SQL_DIR
from . import plan

PARTITIONED_DDL = SQL_DIR / "partitioned" / "audit_events.sql"
BOUND_CHECK = "audit_events_historical_bound"
# Unique indexes built before the conversion (CONCURRENTLY, writes go on) that become the
# historical partition's keys, so that ATTACH finds them instead of building them.
PREPARED_KEYS = {
    "audit_events_historical_id_time": ("event_id", "created_at"),
    "audit_events_historical_seq_time": ("seq", "created_at"),
}
LOCK_TIMEOUT = "10s"


class PartitionProblem(Exception):
    """Something a person must fix (the message says how); nothing was changed."""


@dataclass
class Layout:
    kind: str  # "missing", "plain", "partitioned" (monthly range on created_at), "other"
    key: str | None = None  # pg_get_partkeydef, when partitioned
    partitions: dict[str, plan.Range] = field(default_factory=dict)
    owner: str | None = None


def inspect(conn: psycopg.Connection) -> Layout:
    """What audit_events is: missing, plain, partitioned the way we manage, or other."""
    conn.execute("SET LOCAL TimeZone = 'UTC'")  # partition bounds print in UTC
    row = conn.execute(
        "SELECT c.relkind, pg_get_partkeydef(c.oid), pg_get_userbyid(c.relowner) "
        "FROM pg_class c WHERE c.oid = to_regclass('public.audit_events')"
    ).fetchone()
    if row is None:
        return Layout("missing")
    relkind, key, owner = row
    if relkind == "r":
        return Layout("plain", owner=owner)
    if relkind != "p" or key != "RANGE (created_at)":
        return Layout("other", key=key or f"relkind {relkind}", owner=owner)
    parts = conn.execute(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), c.relispartition "
        "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'public.audit_events'::regclass ORDER BY c.relname"
    ).fetchall()
    layout = Layout("partitioned", key=key, owner=owner)
    for name, bound, _ in parts:
        if bound == "DEFAULT":
            # A default partition would keep rows that a new month's partition then cannot
            # take (moving them is an UPDATE, which the triggers forbid): not our shape.
            return Layout("other", key=f"{key} with a DEFAULT partition ({name})", owner=owner)
        try:
            layout.partitions[name] = plan.parse_bound(bound)
        except plan.BoundError as exc:
            return Layout("other", key=f"{key}, partition {name}: {exc}", owner=owner)
    return layout


def require_managed(layout: Layout) -> None:
    """Refuse a table ``partitions ensure`` does not manage, naming the fix."""
    if layout.kind == "missing":
        raise PartitionProblem(
            "There is no audit_events table in this database. Create it partitioned with "
            "`audit-dashboard init-db --admin-url URL --partition monthly`."
        )
    if layout.kind == "plain":
        raise PartitionProblem(
            "audit_events is a plain (unpartitioned) table, so there are no partitions to "
            "ensure. Convert it in place with `audit-dashboard init-db --admin-url URL "
            "--partition monthly` (no rewrite: the table becomes the historical partition), "
            "or stop running `partitions ensure` against this database."
        )
    if layout.kind == "other":
        raise PartitionProblem(
            f"audit_events is partitioned as {layout.key}; `partitions ensure` manages only "
            "monthly RANGE (created_at) partitions without a DEFAULT partition, as "
            "`init-db --partition monthly` lays them out. Create this table's partitions "
            "yourself (each needs the audit_events_no_truncate trigger: run `init-db` after), "
            "or rebuild it in that layout."
        )


def require_privileges(conn: psycopg.Connection, layout: Layout) -> None:
    """Creating and attaching a partition needs CREATE on the schema and the table's owner."""
    user, create, owner = conn.execute(
        "SELECT current_user, has_schema_privilege('public', 'CREATE'), "
        "pg_has_role(current_user, %s, 'USAGE')",
        (layout.owner,),
    ).fetchone()
    if not (create and owner):
        raise PartitionProblem(
            f"The role {user!r} may not create partitions of audit_events: that needs CREATE "
            f"on schema public and membership in {layout.owner} (the table's owner). Run it "
            "with the administrator's URL you give `init-db --admin-url`."
        )


def create_partitioned_table(conn: psycopg.Connection) -> None:
    conn.execute(PARTITIONED_DDL.read_text(encoding="utf-8"))  # type: ignore[arg-type]


def _create_partition(conn: psycopg.Connection, name: str, bounds: plan.Range) -> None:
    def bound(value: datetime | None, infinite: str) -> sql.Composable:
        return sql.SQL(infinite) if value is None else sql.Literal(value.isoformat())

    table = sql.Identifier("public", name)
    # LIKE copies the columns, NOT NULLs and defaults; the identity of seq, the keys, the
    # indexes and the row triggers come from the parent at ATTACH.
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (LIKE public.audit_events INCLUDING DEFAULTS INCLUDING STORAGE "
            "INCLUDING COMPRESSION)"
        ).format(table)
    )
    conn.execute(
        sql.SQL(
            "ALTER TABLE public.audit_events ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})"
        ).format(table, bound(bounds.lower, "MINVALUE"), bound(bounds.upper, "MAXVALUE"))
    )
    conn.execute("SELECT public.audit_events_guard_partition(%s::regclass)", (f"public.{name}",))


def ensure(
    conn: psycopg.Connection,
    *,
    months_ahead: int,
    start: date | None = None,
    now: datetime | None = None,
) -> list[str]:
    """Create the monthly partitions missing from ``start``'s month (default: this month)
    through ``months_ahead`` months after this one; re-guard every partition. Returns the
    names created. Idempotent: a second run creates nothing."""
    if not 0 <= months_ahead <= plan.MAX_MONTHS_AHEAD:
        raise PartitionProblem(f"--months-ahead must be 0..{plan.MAX_MONTHS_AHEAD}")
    layout = inspect(conn)
    require_managed(layout)
    require_privileges(conn, layout)
    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
    # init-db and ensure never interleave (the same lock as dashboard/schema.py).
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('audit-dashboard init-db'))")
    layout = inspect(conn)  # again, under the lock
    now = now or datetime.now(UTC)
    first = plan.month_start(start) if start is not None else plan.month_start(now)
    last = plan.add_months(plan.month_start(now), months_ahead)
    created = []
    for name, bounds in plan.missing_months(
        list(layout.partitions.values()), first=first, last=last
    ):
        if name in layout.partitions:
            raise PartitionProblem(f"a table named {name} exists with other bounds")
        _create_partition(conn, name, bounds)
        created.append(name)
    conn.execute("SELECT public.audit_events_guard_partitions()")
    return created


# --- Converting a plain table ------------------------------------------------------------


def prepare_conversion(admin_url: str) -> datetime:
    """The slow part of a conversion, with writers still writing; returns the boundary.

    ATTACH PARTITION must prove that every row of the table fits the partition's bounds.
    Without help it scans the table holding an ACCESS EXCLUSIVE lock (minutes at 10M rows,
    every reader and writer waiting). With a *validated* CHECK constraint that implies the
    bounds it skips the scan. So: the CHECK is added NOT VALID (a brief lock, no scan: new
    rows are checked from then on), then VALIDATEd in its own transaction, which scans
    under a SHARE UPDATE EXCLUSIVE lock only (reads and inserts go on). The keys the
    partitioned table needs, (event_id, created_at) and (seq, created_at), are built the
    same way, CONCURRENTLY. Each step commits on its own and is repeatable; if the final
    transaction fails, what stays is one redundant CHECK and two redundant indexes.

    The boundary: the first month start after both now and the newest event, so the
    rows written while this runs still fit (the new month's events go to its partition).
    """
    from ..db import libpq_url

    with psycopg.connect(libpq_url(admin_url), autocommit=True, connect_timeout=10) as conn:
        newest, now, has_seq = conn.execute(
            "SELECT (SELECT max(created_at) FROM public.audit_events), now(), "
            "EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'public.audit_events'::regclass"
            " AND attname = 'seq' AND NOT attisdropped)"
        ).fetchone()
        if not has_seq:
            raise PartitionProblem(
                "audit_events has no seq column yet. Run `audit-dashboard init-db --admin-url "
                "URL` once without --partition (it adds seq), then again with it."
            )
        boundary = plan.add_months(plan.month_start(max(now, newest or now)), 1)
        check = sql.Identifier(BOUND_CHECK)
        conn.execute(
            sql.SQL("ALTER TABLE public.audit_events DROP CONSTRAINT IF EXISTS {}").format(check)
        )
        conn.execute(
            sql.SQL(
                "ALTER TABLE public.audit_events ADD CONSTRAINT {} "
                "CHECK (created_at < {}) NOT VALID"
            ).format(check, sql.Literal(boundary.isoformat()))
        )
        conn.execute(
            sql.SQL("ALTER TABLE public.audit_events VALIDATE CONSTRAINT {}").format(check)
        )
        for index, columns in PREPARED_KEYS.items():
            invalid = conn.execute(
                "SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)",
                (f"public.{index}",),
            ).fetchone()
            if invalid and invalid[0]:  # left by an interrupted CONCURRENTLY build
                conn.execute(
                    sql.SQL("DROP INDEX CONCURRENTLY {}").format(sql.Identifier("public", index))
                )
            conn.execute(
                sql.SQL(
                    "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {} ON public.audit_events ({})"
                ).format(sql.Identifier(index), sql.SQL(", ").join(map(sql.Identifier, columns)))
            )
    return boundary


def convert(conn: psycopg.Connection, boundary: datetime) -> None:
    """Turn the plain audit_events into the historical partition of a new partitioned
    audit_events, in the caller's transaction, without rewriting or rescanning it."""
    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
    conn.execute("LOCK TABLE public.audit_events IN ACCESS EXCLUSIVE MODE")
    ready = conn.execute(
        "SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.audit_events'::regclass "
        "AND conname = %s AND convalidated",
        (BOUND_CHECK,),
    ).fetchone()[0]
    if not ready:
        raise PartitionProblem("the conversion's CHECK constraint is missing; run init-db again")
    sequence = conn.execute(
        "SELECT pg_get_serial_sequence('public.audit_events', 'seq')"
    ).fetchone()[0]
    last_value, is_called = conn.execute(
        sql.SQL("SELECT last_value, is_called FROM {}").format(sql.SQL(sequence))  # a regclass
    ).fetchone()
    historical = sql.Identifier("public", plan.HISTORICAL)
    # PostgreSQL 17+ refuses to attach a table with its own identity; the partitioned
    # table's seq takes over from where this one's sequence stopped (setval below).
    conn.execute("ALTER TABLE public.audit_events ALTER COLUMN seq DROP IDENTITY")
    conn.execute(
        sql.SQL("ALTER TABLE public.audit_events RENAME TO {}").format(
            sql.Identifier(plan.HISTORICAL)
        )
    )
    # Its primary key (event_id) and UNIQUE (seq) cannot be partition keys: the prepared
    # (event_id, created_at) and (seq, created_at) indexes take their place.
    for (name,) in conn.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype IN ('p', 'u')",
        (f"public.{plan.HISTORICAL}",),
    ).fetchall():
        conn.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(historical, sql.Identifier(name))
        )
    # Free the index names for the parent's indexes (sql/006, 008), which then attach these
    # instead of building new ones.
    for (name,) in conn.execute(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = %s::regclass AND c.relname LIKE 'audit\\_events\\_%%' "
        "AND c.relname NOT LIKE 'audit\\_events\\_historical\\_%%'",
        (f"public.{plan.HISTORICAL}",),
    ).fetchall():
        renamed = (plan.HISTORICAL + name[len(plan.PARENT) :])[:63]
        conn.execute(
            sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                sql.Identifier("public", name), sql.Identifier(renamed)
            )
        )
    conn.execute(
        sql.SQL(
            "ALTER TABLE {} ADD CONSTRAINT audit_events_historical_pkey PRIMARY KEY USING INDEX "
            "audit_events_historical_id_time, ADD CONSTRAINT audit_events_historical_seq_key "
            "UNIQUE USING INDEX audit_events_historical_seq_time"
        ).format(historical)
    )
    # The parent's row trigger is cloned onto it at ATTACH (same name, same function).
    conn.execute(
        sql.SQL("DROP TRIGGER IF EXISTS audit_events_no_update_delete ON {}").format(historical)
    )
    create_partitioned_table(conn)
    conn.execute(
        "SELECT setval(pg_get_serial_sequence('public.audit_events', 'seq'), %s, %s)",
        (last_value, is_called),
    )
    conn.execute(
        sql.SQL(
            "ALTER TABLE public.audit_events ATTACH PARTITION {} FOR VALUES FROM (MINVALUE) TO ({})"
        ).format(historical, sql.Literal(boundary.isoformat()))
    )
    conn.execute(
        sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(historical, sql.Identifier(BOUND_CHECK))
    )
