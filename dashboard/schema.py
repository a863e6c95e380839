"""``init-db``: apply sql/ in file-name order, idempotently, as an administrator.

Every file is written so that running it again changes nothing (IF NOT EXISTS, CREATE OR
REPLACE, role attributes re-asserted), so ``init-db`` is safe to run on every deploy. Later
files may extend earlier ones (a hash chain, partitions) without editing them.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql

from .db import libpq_url
from .paths import SQL_DIR

ROLE_PASSWORD_OPTIONS = {
    "audit_reader": "reader_password",
    "audit_writer": "writer_password",
    "audit_access_logger": "logger_password",
    "audit_notary": "notary_password",
}


def sql_files(directory: Path = SQL_DIR) -> list[Path]:
    return sorted(path for path in directory.glob("*.sql") if path.is_file())


def apply_schema(admin_url: str, *, passwords: dict[str, str] | None = None) -> list[str]:
    """Apply every sql/ file in one transaction; set role passwords given by role name."""
    applied: list[str] = []
    with psycopg.connect(libpq_url(admin_url), connect_timeout=10) as conn:
        # One advisory lock so two deploys running init-db at once do not interleave.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('audit-dashboard init-db'))")
        for path in sql_files():
            conn.execute(path.read_text(encoding="utf-8"))  # type: ignore[arg-type]  # trusted file
            applied.append(path.name)
        for role, password in (passwords or {}).items():
            if role not in ROLE_PASSWORD_OPTIONS:
                raise ValueError(f"unknown role {role!r}")
            # Literal() quotes on the client: ALTER ROLE takes no bind parameters.
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(password)
                )
            )
    return applied
