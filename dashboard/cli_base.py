"""What every ``audit-dashboard`` subcommand shares: the usage-problem exception (one
paragraph on stderr, exit code 2), settings loading, and the early database check.

It sits below ``dashboard/cli.py`` (the root group) and the modules that define
subcommands (``reports/cli.py``, ``users_cli.py``, ``integrity/cli.py``), so that the root
can import the subcommands without the subcommands importing the root.
"""

from __future__ import annotations

import click
import sqlalchemy as sa

from . import db
from .config import ConfigError, Settings, load_settings


class UsageProblem(click.ClickException):
    """A problem the user can fix: printed as one paragraph, exit code 2."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


def fail(message: str) -> UsageProblem:
    return UsageProblem(message)


def settings_or_fail() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise fail(str(exc)) from None


def connect_check(url: str) -> None:
    """Turn an unreachable database or wrong password into a message before doing work."""
    try:
        engine = db.make_engine(url, pool_size=1)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except db.DatabaseUnavailable as exc:
        raise fail(str(exc)) from None
    except sa.exc.OperationalError as exc:
        raise fail(db.explain_connection_error(exc, url)) from None
