"""``init-db``: apply sql/ in file-name order, idempotently, as an administrator.

Every file is written so that running it again changes nothing (IF NOT EXISTS, CREATE OR
REPLACE, role attributes re-asserted), so ``init-db`` is safe to run on every deploy. Later
files may extend earlier ones (a hash chain, partitions) without editing them.

``partition="monthly"`` lays audit_events out range-partitioned by month on created_at
(:mod:`dashboard.partitions`): a missing table is created partitioned, a plain one is
converted in place (it becomes the historical partition), and the monthly partitions from
``partition_start`` (default: this month) through ``months_ahead`` are created. Without it,
a partitioned table stays partitioned and its partitions are re-guarded (sql/011).

``citus=True`` lays it out on a Citus coordinator (:mod:`dashboard.citus`): audit_events
distributed by aggregate_id. Without it, a table that is distributed already stays so
(init-db applies the Citus layout again, as it keeps a partitioned table partitioned).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import psycopg
from psycopg import sql

from . import citus as citus_layout
from .db import libpq_url
from .partitions import store as partition_store
from .paths import SQL_DIR

PARTITION_LAYOUTS = ("monthly",)
DEFAULT_MONTHS_AHEAD = 3

ROLE_PASSWORD_OPTIONS = {
    "audit_reader": "reader_password",
    "audit_writer": "writer_password",
    "audit_access_logger": "logger_password",
    "audit_notary": "notary_password",
}


def sql_files(directory: Path = SQL_DIR) -> list[Path]:
    return sorted(path for path in directory.glob("*.sql") if path.is_file())


def apply_schema(
    admin_url: str,
    *,
    passwords: dict[str, str] | None = None,
    partition: str | None = None,
    months_ahead: int = DEFAULT_MONTHS_AHEAD,
    partition_start: date | None = None,
    citus: bool = False,
) -> list[str]:
    """Apply every sql/ file in one transaction; set role passwords given by role name."""
    if partition is not None and partition not in PARTITION_LAYOUTS:
        raise ValueError(f"unknown partition layout {partition!r}")
    if citus and partition is not None:
        raise citus_layout.CitusProblem(
            "--citus and --partition do not go together: on Citus, audit_events is "
            "distributed by aggregate_id instead of partitioned by month. Choose one."
        )
    boundary = None
    if partition is not None and _table_kind(admin_url) == "distributed":
        raise citus_layout.CitusProblem(
            "audit_events is distributed by Citus; --partition does not apply to it (each "
            "shard is already a slice of the table). Run init-db without --partition."
        )
    if partition is not None and _table_kind(admin_url) == "plain":
        # The slow part runs first, each step committed on its own (see there).
        boundary = partition_store.prepare_conversion(admin_url)
    applied: list[str] = []
    with psycopg.connect(libpq_url(admin_url), connect_timeout=10) as conn:
        # One advisory lock so two deploys running init-db at once do not interleave.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('audit-dashboard init-db'))")
        if citus or (partition is None and citus_layout.is_distributed(conn)):
            applied = citus_layout.apply(conn, sql_files())
            _set_passwords(conn, passwords)
            return applied
        if partition is not None:
            layout = partition_store.inspect(conn)
            if layout.kind == "missing":
                partition_store.create_partitioned_table(conn)
            elif layout.kind == "plain":
                if boundary is None:  # made between the two looks: start again
                    raise partition_store.PartitionProblem("audit_events changed; run it again")
                partition_store.convert(conn, boundary)
            elif layout.kind == "other":
                partition_store.require_managed(layout)
        for path in sql_files():
            conn.execute(path.read_text(encoding="utf-8"))  # type: ignore[arg-type]  # trusted file
            applied.append(path.name)
        if partition is not None:
            partition_store.ensure(conn, months_ahead=months_ahead, start=partition_start)
        _set_passwords(conn, passwords)
    return applied


def _set_passwords(conn: psycopg.Connection, passwords: dict[str, str] | None) -> None:
    for role, password in (passwords or {}).items():
        if role not in ROLE_PASSWORD_OPTIONS:
            raise ValueError(f"unknown role {role!r}")
        # Literal() quotes on the client: ALTER ROLE takes no bind parameters.
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))
        )


def _table_kind(admin_url: str) -> str:
    with psycopg.connect(libpq_url(admin_url), connect_timeout=10) as conn:
        if citus_layout.is_distributed(conn):
            return "distributed"
        return partition_store.inspect(conn).kind
