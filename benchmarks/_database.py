"""The database a benchmark measures: ``--admin-url`` of a running server, or ``--embedded``
data directory of an embedded one that is started for the run and stopped after it."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def add_database_arguments(parser: argparse.ArgumentParser) -> argparse._MutuallyExclusiveGroup:
    """Add the two ways to name the database; return their group, for one more alternative."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--admin-url", help="superuser/owner URL of the seeded database")
    where.add_argument("--embedded", type=Path, help="data directory of an embedded server")
    parser.add_argument("--database", default="audit_bench", help="with --embedded")
    return where


@contextmanager
def admin_url_of(args: argparse.Namespace) -> Iterator[str]:
    if not args.embedded:
        yield args.admin_url
        return
    from dashboard.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(args.embedded)
    server.start()
    try:
        yield server.url(database=args.database)
    finally:
        server.stop()
