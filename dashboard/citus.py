"""audit_events on a Citus cluster (issue 13): the layout ``init-db --citus`` makes, and
what the rest of the dashboard asks of it.

The coordinator holds the distributed ``audit_events`` (distributed by ``aggregate_id``:
a record's history lives on one shard, so the record page and state-at are single-shard
router queries) and, as plain coordinator-local tables, the access log and the
tamper-evidence tree. Every role reads and writes through the coordinator.

``init-db --citus`` runs in one transaction (Citus makes its DDL on the workers part of it,
committed with two-phase commit), so a failure leaves nothing half-made:

1. on a database without audit_events: ``sql/citus/audit_events.sql`` (keys that include
   the distribution column);
2. every ``sql/*.sql`` statement by statement (Citus passes some DDL to the workers as the
   text it was given, and a worker refuses several statements in one prepared statement);
3. ``sql/citus/distribute.sql``: create_distributed_table, after the triggers exist (see
   there), and ``sql/citus/cluster.sql``.

An existing plain audit_events is refused rather than distributed: distributing copies
every row to the shards and changes its keys, a migration to plan, not a side effect of a
deploy (the README says how).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
import sqlparse

from .paths import SQL_DIR

CITUS_DIR = SQL_DIR / "citus"
TABLE_DDL = CITUS_DIR / "audit_events.sql"
DISTRIBUTE = CITUS_DIR / "distribute.sql"
CLUSTER = CITUS_DIR / "cluster.sql"
DISTRIBUTION_COLUMN = "aggregate_id"

_SETUP = (
    # Triggers on a distributed table are refused unless this is on: we need the
    # immutability triggers on the shards (a shard is a table a superuser could change).
    "SET LOCAL citus.enable_unsafe_triggers = on",
    # DDL on a table distributed in this very transaction must go over the same connection.
    "SET LOCAL citus.multi_shard_modify_mode = 'sequential'",
)


class CitusProblem(Exception):
    """Something a person must fix (the message says how); nothing was changed."""


@dataclass(frozen=True)
class TableLayout:
    kind: str  # "missing", "plain", "distributed" (by aggregate_id, hash), "other"
    detail: str = ""


def statements(path: Path) -> list[str]:
    """The statements of one trusted sql/ file, dollar-quoted bodies kept whole."""
    return [s for s in sqlparse.split(path.read_text(encoding="utf-8")) if s.strip()]


def has_citus(conn: psycopg.Connection) -> bool:
    """Whether this database has the citus extension (a node of a Citus cluster)."""
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')")
    return bool(row.fetchone()[0])


def inspect(conn: psycopg.Connection) -> TableLayout:
    """What audit_events is on this Citus node."""
    row = conn.execute(
        "SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass('public.audit_events')"
    ).fetchone()
    if row is None:
        return TableLayout("missing")
    dist = conn.execute(
        "SELECT partmethod, column_to_column_name(logicalrelid, partkey) "
        "FROM pg_dist_partition WHERE logicalrelid = 'public.audit_events'::regclass"
    ).fetchone()
    if dist is None:
        return TableLayout("plain" if row[0] == "r" else "other", f"relkind {row[0]}")
    method, column = dist
    if method == "h" and column == DISTRIBUTION_COLUMN:
        return TableLayout("distributed")
    kind = {"h": "hash", "n": "reference/local", "r": "range", "a": "append"}.get(method, method)
    return TableLayout("other", f"a {kind} table" + (f" by {column}" if column else ""))


def is_distributed(conn: psycopg.Connection) -> bool:
    """Whether audit_events is a Citus table (so ``init-db`` keeps it one)."""
    return has_citus(conn) and inspect(conn).kind in ("distributed", "other")


def require_coordinator(conn: psycopg.Connection) -> None:
    if not has_citus(conn):
        database = conn.info.dbname
        raise CitusProblem(
            f"--citus needs the citus extension in database {database!r}, and there is none. "
            "On the coordinator and every worker: shared_preload_libraries = 'citus' in "
            f"postgresql.conf, restart, CREATE EXTENSION citus in {database!r}; then on the "
            "coordinator citus_set_coordinator_host(...) and citus_add_node(...) per worker. "
            "Or leave out --citus for a plain table."
        )
    coordinator = conn.execute("SELECT citus_is_coordinator()").fetchone()[0]
    if not coordinator:
        raise CitusProblem(
            "This server is a Citus worker (or has no coordinator set): run init-db --citus "
            "against the coordinator, which propagates the schema to the workers "
            "(SELECT citus_set_coordinator_host(...) there first if it is a new cluster)."
        )


def apply(conn: psycopg.Connection, sql_files: list[Path]) -> list[str]:
    """The Citus layout in the caller's transaction (module docstring); the files applied."""
    require_coordinator(conn)
    layout = inspect(conn)
    if layout.kind == "plain":
        raise CitusProblem(
            "audit_events already exists as a plain table in this database; init-db --citus "
            "does not distribute an existing table (it would copy every row to the shards "
            "and change its keys). Lay the schema out with --citus in a new database and "
            'copy the events there keeping their seq (README, "Deploying on a Citus '
            'cluster"), or run init-db without --citus.'
        )
    if layout.kind == "other":
        raise CitusProblem(
            f"audit_events is {layout.detail}; --citus manages only a hash-distributed table "
            f"by {DISTRIBUTION_COLUMN} (a record's history on one shard). Undistribute it "
            "(undistribute_table) or lay it out in a new database."
        )
    for setting in _SETUP:
        conn.execute(setting)  # type: ignore[arg-type]  # constant
    applied = []
    if layout.kind == "missing":
        _run(conn, TABLE_DDL)
        applied.append(f"citus/{TABLE_DDL.name}")
    for path in sql_files:
        _run(conn, path)
        applied.append(path.name)
    for path in (DISTRIBUTE, CLUSTER):
        _run(conn, path)
        applied.append(f"citus/{path.name}")
    return applied


def _run(conn: psycopg.Connection, path: Path) -> None:
    for statement in statements(path):
        conn.execute(statement)  # type: ignore[arg-type]  # a trusted file


# --- Errors of a cluster with a node down ---------------------------------------------------

_REMOTE_NODE = re.compile(r"connection to the remote node (?:[^@\s]+@)?(?P<node>\S+?:\d+) failed")


def unreachable_node(message: str) -> str | None:
    """``host:port`` of the Citus node a coordinator's error says it could not reach."""
    match = _REMOTE_NODE.search(message)
    return match["node"] if match else None
