"""``audit-dashboard partitions ensure``: create the coming months' partitions (for cron).

Idempotent and one transaction: run it daily; a run that finds every partition in place
changes nothing, and a run that fails (a lock it could not get within 10 s, a role without
the privileges, a table of another shape) leaves nothing half-made and exits 2 with a
message naming the fix. Registered on the root group by ``dashboard/cli.py``.
"""

from __future__ import annotations

import click
import psycopg

from ..cli_base import connect_check, fail
from ..db import libpq_url
from ..schema import DEFAULT_MONTHS_AHEAD
from . import plan, store


@click.group("partitions")
def partitions() -> None:
    """Monthly partitions of audit_events (see the README, "Partitioned table")."""


@partitions.command("ensure")
@click.option("--admin-url", required=True, help="URL of the role that ran init-db.")
@click.option(
    "--months-ahead",
    type=click.IntRange(0, plan.MAX_MONTHS_AHEAD),
    default=DEFAULT_MONTHS_AHEAD,
    show_default=True,
    help="Create partitions through this many months after the current one.",
)
def ensure(admin_url: str, months_ahead: int) -> None:
    """Create the missing monthly partitions, from this month through --months-ahead."""
    connect_check(admin_url)
    try:
        with psycopg.connect(libpq_url(admin_url), connect_timeout=10) as conn:
            created = store.ensure(conn, months_ahead=months_ahead)
    except store.PartitionProblem as exc:
        raise fail(str(exc)) from None
    except psycopg.errors.LockNotAvailable:
        raise fail(
            "Could not lock audit_events within "
            f"{store.LOCK_TIMEOUT} (a long statement holds it). Nothing was changed; run "
            "`partitions ensure` again (cron's next run will)."
        ) from None
    except psycopg.Error as exc:
        raise fail(
            f"partitions ensure failed: {exc}. Nothing was changed (one transaction)."
        ) from None
    if created:
        click.echo(f"Created {len(created)} partitions: {', '.join(created)}")
    else:
        click.echo(f"Every partition through {months_ahead} months ahead exists; nothing to do.")
