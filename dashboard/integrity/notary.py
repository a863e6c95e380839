"""Sealing: extend the Merkle tree with newly committed events and sign a tree head.

One pass (:func:`seal_once`), run by ``audit-dashboard seal`` (cron) or in a loop by
``audit-dashboard notary --every 60s``, as the ``audit_notary`` role:

1. takes a transaction-level advisory lock, so two notaries never race (the head number
   is also the primary key: a head is never written twice);
2. reads the newest head and the compact range (frontier) stored with it, and refuses to
   go on unless the frontier gives that head's signed root and the head is the last line
   of the heads file (a database whose heads were rolled back is not extended);
3. finds the *horizon* (below), reads the events ``last_seq < seq <= horizon`` in seq order
   in keyset batches, hashes each into a leaf, and writes the leaves, the stored-level
   nodes and the signed head in the same transaction;
4. after the commit, appends the head to the heads file and fsyncs it.

A pass with no new event below the horizon writes nothing and says so.

The horizon rule
----------------
``seq`` is drawn from a sequence (nextval) when a row is inserted, but rows become visible
when their transaction commits, in any order: seq 11 may be visible while seq 10 belongs
to a transaction still open, which may yet commit. Sealing past 10 would then either leave
10 out for ever or record it as "skipped" and later see it appear. So a pass seals only up
to a seq that no open transaction can still commit below:

1. ``L = pg_sequence_last_value(seq's sequence)``: the last seq handed out.
2. Then ``P``: the transactions that hold a write lock (``RowExclusiveLock`` or stronger)
   on ``audit_events`` (or a partition of it), from ``pg_locks``, which every role may read.
3. Every INSERT or COPY takes that lock on the table *before* it evaluates ``nextval()``
   (the parser opens the target table), and holds it until its transaction ends. So a
   transaction that drew a seq <= L is either finished — its row is visible, or it rolled
   back and the seq will never have a row — or it still holds the lock, and is in P. This
   holds for ``insert_audit_event()``, for direct INSERTs by the owner or a superuser and
   for ``COPY``, and transactions in other databases of the cluster do not count.
4. Poll ``pg_locks`` for P for up to ``wait`` seconds. When every one has ended, every
   committed row with seq <= L is visible, so the horizon is L, and each seq <= L without a
   row is recorded in the head as skipped (a rolled-back or failed insert).
5. Otherwise (a writer stays open), the horizon is just below the first seq with no
   visible row: every seq below it has a committed row, which cannot go away. The next
   pass takes up the rest.

On a Citus cluster
------------------
The notary runs on the coordinator; writers insert there too (``insert_audit_event()``
refuses to run on a worker, sql/citus/cluster.sql), so L and step 2 read the coordinator's
one sequence and its locks: a coordinator transaction takes its lock on the distributed
table before nextval() is evaluated (on the coordinator, before the row is routed) and
holds it until it has ended. Citus commits the workers' parts of a transaction in the
coordinator's commit callback: after the coordinator's own commit record, before it lets
go of its locks (COMMIT for a transaction that wrote to one worker, COMMIT PREPARED after
a two-phase PREPARE for several). So a row may be visible on its worker while the
coordinator still lists its transaction in P (harmless: a committed row cannot go away),
and when all goes well P empties only after every worker has committed. But when a worker
cannot be reached at that moment, the coordinator lets go of its locks anyway: a prepared
transaction then waits on the worker for Citus's recovery and commits later, and a
one-worker transaction may still be finishing there. Calling its seq "skipped" would be
wrong. So on Citus step 4 has a second half:

4b. Once the coordinator has no writer, ask every worker (``run_command_on_workers``, as
    the notary) whether any transaction, prepared ones included, holds a write lock on a
    shard of audit_events in this database. Every worker-side part of a transaction that
    drew a seq <= L took that lock before its coordinator transaction ended, so "none on
    any worker" means each one has committed (its row is visible) or will never commit.
    A worker that does not answer counts as "may still commit": the pass stops below the
    first gap (step 5), which never needs a worker's word.

What it does not cover: a session that draws a seq with a bare ``SELECT nextval(...)``
(owner or superuser only) and inserts it later with ``OVERRIDING SYSTEM VALUE``. And the
rule needs the sequence's CACHE to be 1 (the identity default): with a larger cache a
session draws seqs from its own cache without touching the sequence, so the notary refuses
to run. ``settle`` (default 0) optionally waits between reading L and reading the locks.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import Connection, Engine

from . import heads_file, merkle, store
from .heads import TreeHead, head_hash, sign_head, verify_signature
from .keys import key_id

log = logging.getLogger(__name__)

DEFAULT_SETTLE_SECONDS: Final = 0.0
DEFAULT_WAIT_SECONDS: Final = 5.0
POLL_SECONDS: Final = 0.05
WRITE_BATCH: Final = 20_000
"""Leaves are written with COPY in batches of this many (bounded memory per pass)."""

# Session-level, held from before the pass reads the newest head until after the head is in
# the file too: the next notary must find the file and the table agreeing.
_LOCK_SQL = sa.text("SELECT pg_advisory_lock(hashtext('audit-dashboard notary'))")
_UNLOCK_SQL = sa.text("SELECT pg_advisory_unlock(hashtext('audit-dashboard notary'))")
_SEQUENCE_SQL = sa.text(
    "SELECT pg_sequence_last_value(seq.oid) AS last_value, s.seqcache AS cache "
    "FROM (SELECT CAST(pg_get_serial_sequence('public.audit_events', 'seq') AS regclass) "
    "      AS oid) AS seq "
    "JOIN pg_catalog.pg_sequence AS s ON s.seqrelid = seq.oid"
)
# Transactions that may still commit a row of audit_events: those holding a write lock on
# it or on one of its partitions (step 2 of the rule). Prepared transactions keep theirs.
_WRITERS_SQL = sa.text(
    "SELECT DISTINCT l.virtualtransaction FROM pg_catalog.pg_locks AS l "
    "WHERE l.locktype = 'relation' AND l.granted "
    "AND l.database = (SELECT oid FROM pg_catalog.pg_database "
    "                  WHERE datname = current_database()) "
    "AND l.mode IN ('RowExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock', "
    "               'AccessExclusiveLock') "
    "AND l.relation IN (SELECT CAST('public.audit_events' AS regclass) "
    "                   UNION ALL SELECT inhrelid FROM pg_catalog.pg_inherits "
    "                   WHERE inhparent = CAST('public.audit_events' AS regclass)) "
    "AND l.virtualtransaction IS DISTINCT FROM "
    "    (SELECT virtualtransaction FROM pg_catalog.pg_locks "
    "     WHERE locktype = 'virtualxid' AND pid = pg_backend_pid() LIMIT 1)"
)


# Step 4b (Citus): the shards of audit_events, when it is distributed here.
_CITUS_SQL = sa.text("SELECT to_regclass('pg_catalog.pg_dist_shard') IS NOT NULL")
_SHARDS_SQL = sa.text(
    "SELECT shard_name(logicalrelid, shardid) FROM pg_catalog.pg_dist_shard "
    "WHERE logicalrelid = CAST('public.audit_events' AS regclass) ORDER BY shardid"
)
_SHARD_NAME = re.compile(r"^audit_events_[0-9]+$")
_WORKER_WRITERS = (
    "SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'relation' "
    "AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()) "
    "AND mode IN ('RowExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock', "
    "'AccessExclusiveLock') "
    "AND relation IN (SELECT to_regclass(name) FROM unnest(ARRAY[{names}]) AS name)"
)
_RUN_ON_WORKERS_SQL = sa.text(
    "SELECT nodename, nodeport, success, result FROM run_command_on_workers(:command)"
)


class NotaryError(RuntimeError):
    """The notary refuses to extend the tree (the message says why and what to check)."""


@dataclass(frozen=True)
class Horizon:
    last_value: int | None  # the sequence's last value (L), None when none was drawn
    final: bool  # True: every seq <= last_value is settled; False: stop at the first gap
    waited_for: int  # open transactions still running when the pass gave up waiting


@dataclass(frozen=True)
class SealResult:
    head: TreeHead | None
    events: int
    skipped: int
    message: str


def find_horizon(
    conn: Connection,
    *,
    settle: float = DEFAULT_SETTLE_SECONDS,
    wait: float = DEFAULT_WAIT_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> Horizon:
    """Steps 1-4 of the horizon rule (module docstring), in the caller's transaction."""
    row = conn.execute(_SEQUENCE_SQL).one_or_none()
    if row is None:
        raise NotaryError(
            "audit_events has no seq identity column; run `audit-dashboard init-db` first."
        )
    if row.cache != 1:
        raise NotaryError(
            f"The sequence of audit_events.seq has CACHE {row.cache}; the notary's horizon "
            "rule needs CACHE 1 (sessions would hand out cached seqs it cannot see). Run "
            "ALTER TABLE audit_events ALTER COLUMN seq SET CACHE 1."
        )
    last_value = None if row.last_value is None else int(row.last_value)
    if last_value is None:
        return Horizon(None, True, 0)
    if settle > 0:
        sleep(settle)
    writers = set(conn.execute(_WRITERS_SQL).scalars())
    deadline = time.monotonic() + wait
    while writers:
        writers &= set(conn.execute(_WRITERS_SQL).scalars())
        if not writers or time.monotonic() >= deadline:
            break
        sleep(POLL_SECONDS)
    pending = sorted(writers)
    if not pending:
        shards = _distributed_shards(conn)
        if shards:
            pending = _worker_writers(conn, shards, deadline, sleep)
    return Horizon(last_value, not pending, len(pending))


def _distributed_shards(conn: Connection) -> list[str]:
    """The shard names of audit_events when Citus distributes it here, else []."""
    if not conn.execute(_CITUS_SQL).scalar():
        return []
    names = list(conn.execute(_SHARDS_SQL).scalars())
    for name in names:
        if not _SHARD_NAME.match(name):  # catalog text goes into a command: check its shape
            raise NotaryError(f"Unexpected shard name {name!r} of audit_events.")
    return names


def _worker_writers(
    conn: Connection, shards: list[str], deadline: float, sleep: Callable[[float], None]
) -> list[str]:
    """Step 4b: the workers that hold (or may hold: no answer) a write lock on a shard of
    audit_events, polled until none does or ``deadline``."""
    names = ", ".join(f"'public.{name}'" for name in ["audit_events", *shards])
    command = _WORKER_WRITERS.format(names=names)
    while True:
        busy = [
            f"{row.nodename}:{row.nodeport}"
            for row in conn.execute(_RUN_ON_WORKERS_SQL, {"command": command})
            if not row.success or row.result != "0"
        ]
        if not busy or time.monotonic() >= deadline:
            return busy
        sleep(POLL_SECONDS)


def _merge_range(ranges: list[tuple[int, int]], low: int, high: int) -> None:
    if low > high:
        return
    if ranges and ranges[-1][1] + 1 == low:
        ranges[-1] = (ranges[-1][0], high)
    else:
        ranges.append((low, high))


class _Pass:
    """The events of one pass, hashed and written in batches as they are read."""

    def __init__(self, conn: Connection, frontier: merkle.Frontier, after_seq: int):
        self.conn = conn
        self.tree = store.NodeAccumulator(frontier)
        self.after_seq = after_seq
        self.last_seq = after_seq
        self.events = 0
        self.skipped: list[tuple[int, int]] = []
        self._leaves: list[tuple[int, int, Any, bytes]] = []
        self._nodes: list[tuple[int, int, bytes]] = []

    def run(self, horizon: Horizon) -> None:
        upto = horizon.last_value
        if upto is None or upto <= self.after_seq:
            return
        expected = self.after_seq + 1
        for row in store.events_in_seq_order(self.conn, after=self.after_seq, upto=upto):
            seq = int(row[0])
            if seq != expected and not horizon.final:
                # Step 5: a seq without a visible row may belong to an open transaction.
                break
            _merge_range(self.skipped, expected, seq - 1)
            index = self.tree.size
            leaf = store.event_leaf_hash(row)
            self._nodes.extend(self.tree.append(leaf))
            self._leaves.append((index, seq, row[1], leaf))
            self.events += 1
            self.last_seq = seq
            expected = seq + 1
            if len(self._leaves) >= WRITE_BATCH:
                self.flush()
        else:
            if horizon.final:
                _merge_range(self.skipped, expected, upto)
                self.last_seq = max(self.last_seq, upto)
        self.flush()

    def flush(self) -> None:
        if self._leaves:
            store.copy_leaves(self.conn, self._leaves)
            self._leaves = []
        if self._nodes:
            store.copy_nodes(self.conn, self._nodes)
            self._nodes = []


def _check_heads_file(
    conn: Connection, path: Path, latest: TreeHead | None, own_key_id: str
) -> list[TreeHead]:
    """Refuse unless the file's last head is the database's newest; return the database
    heads the file lacks (a crash between commit and append) that it may catch up on."""
    in_file = heads_file.last_head(path)
    if latest is None:
        if in_file is not None:
            raise NotaryError(
                f"audit_tree_heads is empty but the heads file {path} holds head "
                f"#{in_file.number}: the heads were deleted from the database. Run "
                "`audit-dashboard verify`; the notary will not start a new tree over them."
            )
        return []
    if in_file is None:
        raise NotaryError(
            f"audit_tree_heads holds heads up to #{latest.number} but the heads file {path} "
            "holds none. Point AUDIT_NOTARY_HEADS_FILE at the file that holds them."
        )
    if in_file.number > latest.number:
        raise NotaryError(
            f"The heads file {path} holds head #{in_file.number} but audit_tree_heads ends at "
            f"#{latest.number}: heads were deleted or rolled back in the database. Run "
            "`audit-dashboard verify`; the notary will not extend a rolled-back tree."
        )
    same = store.head(conn, in_file.number)
    if same is None or head_hash(same) != head_hash(in_file):
        raise NotaryError(
            f"Head #{in_file.number} in audit_tree_heads differs from the heads file {path}. "
            "Run `audit-dashboard verify`; the notary will not extend it."
        )
    behind = list(store.heads(conn, after=in_file.number))
    previous = in_file
    for missing in behind:
        if missing.key_id != own_key_id or missing.previous_hash != head_hash(previous):
            raise NotaryError(
                f"audit_tree_heads holds head #{missing.number}, which the heads file {path} "
                "lacks and which this notary cannot vouch for. Run `audit-dashboard verify`."
            )
        previous = missing
    return behind


def seal_once(
    engine: Engine,
    private_key: Ed25519PrivateKey,
    heads_path: Path,
    *,
    settle: float = DEFAULT_SETTLE_SECONDS,
    wait: float = DEFAULT_WAIT_SECONDS,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> SealResult:
    """One sealing pass (module docstring). Raises :class:`NotaryError` when it refuses."""
    with engine.connect() as conn:
        conn.execute(_LOCK_SQL)
        conn.commit()
        try:
            result = _seal_locked(conn, private_key, heads_path, settle=settle, wait=wait, now=now)
        finally:
            if not conn.invalidated:
                conn.rollback()
                conn.execute(_UNLOCK_SQL)
                conn.commit()
    if isinstance(result, SealResult):
        return result
    head, work, horizon = result
    skipped = sum(high - low + 1 for low, high in head.skipped_seqs)
    pending = "" if horizon.final else " (stopped below a seq an open transaction may hold)"
    message = (
        f"Sealed head #{head.number}: {work.events:,} new events, tree size "
        f"{head.tree_size:,}, up to seq {head.last_seq}, {skipped:,} skipped seqs{pending}."
    )
    return SealResult(head, work.events, skipped, message)


def _seal_locked(conn, private_key, heads_path, *, settle, wait, now):
    """The pass under the notary lock: a SealResult when nothing was written, else the
    head (committed and appended to the file), the pass and its horizon."""
    public_key = private_key.public_key()
    own_key_id = key_id(public_key)
    transaction = conn.begin()
    try:
        latest = store.latest_head(conn)
        for missing in _check_heads_file(conn, heads_path, latest, own_key_id):
            if not verify_signature(missing, {own_key_id: public_key}):
                raise NotaryError(
                    f"Head #{missing.number} carries no valid signature of this notary's key."
                )
            heads_file.append_head(heads_path, missing)
            log.warning("Appended head #%s to %s (it was missing)", missing.number, heads_path)
        after_seq = latest.last_seq if latest and latest.last_seq is not None else 0
        work = _Pass(conn, _trusted_frontier(conn, latest), after_seq)
        horizon = find_horizon(conn, settle=settle, wait=wait)
        work.run(horizon)
        if work.events == 0:
            transaction.rollback()
            return SealResult(None, 0, 0, _nothing_new(latest, after_seq, horizon))
        frontier = work.tree.frontier()
        head = sign_head(
            private_key,
            number=(latest.number + 1) if latest else 1,
            tree_size=frontier.size,
            root=frontier.root(),
            last_seq=work.last_seq,
            skipped_seqs=tuple(work.skipped),
            sealed_at=now(),
            previous_hash=head_hash(latest) if latest else None,
        )
        store.insert_head(conn, head, frontier.to_json())
        transaction.commit()
    except BaseException:
        if transaction.is_active:
            transaction.rollback()
        raise
    # Committed: now the copy outside the database, still under the lock. If this fails,
    # the next pass appends the missing head before it does anything else.
    heads_file.append_head(heads_path, head)
    return head, work, horizon


def _nothing_new(latest: TreeHead | None, after_seq: int, horizon: Horizon) -> str:
    where = f"head #{latest.number} (seq {after_seq})" if latest else "the start"
    waiting = (
        f"; {horizon.waited_for} open transaction(s) may still commit a lower seq"
        if not horizon.final
        else ""
    )
    return f"No new events since {where}{waiting}. Nothing written."


def _trusted_frontier(conn: Connection, latest: TreeHead | None) -> merkle.Frontier:
    if latest is None:
        return merkle.Frontier()
    frontier = store.stored_frontier(conn, latest.number)
    if frontier is None or frontier.size != latest.tree_size or frontier.root() != latest.root:
        raise NotaryError(
            f"The frontier stored with head #{latest.number} does not give its signed root: "
            "audit_tree_heads was altered. Run `audit-dashboard verify`."
        )
    return frontier


def run_notary(
    pass_once: Callable[[], SealResult],
    every: float,
    stop: threading.Event,
    report: Callable[[str], None],
) -> None:
    """Run ``pass_once`` every ``every`` seconds until ``stop`` is set. A pass in progress
    finishes (its transaction is short); the wait between passes ends at once."""
    while not stop.is_set():
        started = time.monotonic()
        report(pass_once().message)
        stop.wait(max(0.0, every - (time.monotonic() - started)))


__all__ = [
    "DEFAULT_SETTLE_SECONDS",
    "DEFAULT_WAIT_SECONDS",
    "Horizon",
    "NotaryError",
    "SealResult",
    "find_horizon",
    "run_notary",
    "seal_once",
]
