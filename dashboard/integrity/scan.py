"""The events' leaf hashes in seq order, for ``verify``: computed in this process, or by
worker processes that share the caller's snapshot.

Recomputing a leaf (:mod:`.leaf`) is CPU work in Python, so a full verification of tens of
millions of events is bound by it. With ``jobs`` > 1 the seq range is cut into slices of
:data:`SLICE_SEQS` seq values; each worker process reads its slices through its own
connection and returns ``(seq, event_id, leaf_hash)`` for them, and the caller gets the
slices back in order. At most ``jobs + 1`` slices are in flight, so memory stays bounded
whatever the table's size.

Every worker reads the same rows the caller would: the caller exports its transaction's
snapshot (``pg_export_snapshot()``, as ``pg_dump --jobs`` does) and each worker imports
it (``SET TRANSACTION SNAPSHOT``) in a REPEATABLE READ, READ ONLY transaction. The caller's
transaction must stay open while the scan runs (it does: verification runs inside it), and
should itself be REPEATABLE READ (the ``verify`` command's is) so that what it reads
besides the events comes from the same snapshot.

Workers are started with the ``spawn`` method (a fork of a process with threads can copy a
held lock), which costs about a second, so small ranges are scanned in-process.
"""

from __future__ import annotations

import multiprocessing
import re
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import store

SLICE_SEQS: Final = 50_000
# Below this many seq values a pool's start-up costs more than it saves.
PARALLEL_MIN_SEQS: Final = 200_000
_SNAPSHOT_ID: Final = re.compile(r"[0-9A-F]+-[0-9A-F]+(?:-[0-9]+)?")

LeafRow = tuple[int, Any, bytes]  # seq, event_id, leaf hash


class ScanError(RuntimeError):
    """A worker could not read or encode its rows (the message says why)."""


def event_leaves(conn: Connection, *, after: int, upto: int, jobs: int = 1) -> Iterator[LeafRow]:
    """``(seq, event_id, leaf_hash)`` of the events with ``after < seq <= upto``, in seq
    order. ``jobs`` > 1 uses worker processes when the range holds at least
    :data:`PARALLEL_MIN_SEQS` seq values."""
    if jobs <= 1 or upto - after < PARALLEL_MIN_SEQS:
        yield from _leaf_rows(conn, after, upto)
        return
    yield from _parallel(conn, after, upto, jobs)


def _leaf_rows(conn: Connection, after: int, upto: int) -> Iterator[LeafRow]:
    for row in store.events_in_seq_order(conn, after=after, upto=upto):
        yield int(row[0]), row[1], store.event_leaf_hash(row)


def _parallel(conn: Connection, after: int, upto: int, jobs: int) -> Iterator[LeafRow]:
    snapshot = conn.execute(sa.text("SELECT pg_export_snapshot()")).scalar_one()
    url = conn.engine.url.render_as_string(hide_password=False)
    slices = ((low, min(low + SLICE_SEQS, upto)) for low in range(after, upto, SLICE_SEQS))
    executor = ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(url, snapshot),
    )
    pending: deque[Future[list[LeafRow]]] = deque()
    try:
        for bounds in slices:
            pending.append(executor.submit(_scan_slice, *bounds))
            if len(pending) > jobs:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    except BrokenProcessPool:
        # A worker that could not start (no connection: the role's connection limit, a
        # wrong snapshot) or was killed (out of memory).
        raise ScanError(
            f"a worker process stopped (could it connect? --jobs {jobs} needs {jobs} more "
            "reader connections); run again with fewer --jobs"
        ) from None
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


# --- In the worker processes ---------------------------------------------------------------

_worker: dict[str, Any] = {}


def _start_worker(url: str, snapshot: str) -> None:
    if not _SNAPSHOT_ID.fullmatch(snapshot):
        raise ScanError(f"not a snapshot id: {snapshot!r}")
    engine = sa.create_engine(
        url,
        poolclass=sa.pool.NullPool,
        connect_args={"application_name": "audit-dashboard verify", "options": "-c TimeZone=UTC"},
    )
    conn = engine.connect().execution_options(isolation_level="REPEATABLE READ")
    conn.begin()
    # The first statement of the transaction; the id was checked above (SET takes no
    # bound parameters).
    conn.execute(sa.text(f"SET TRANSACTION SNAPSHOT '{snapshot}'"))
    conn.execute(sa.text("SET TRANSACTION READ ONLY"))
    _worker["conn"] = conn


def _scan_slice(after: int, upto: int) -> list[LeafRow]:
    conn = _worker["conn"]
    try:
        return list(_leaf_rows(conn, after, upto))
    except sa.exc.DBAPIError as exc:
        first = str(exc.orig or exc).strip().splitlines()[0]
        raise ScanError(f"reading seqs {after + 1}..{upto}: {first}") from None


__all__ = ["PARALLEL_MIN_SEQS", "SLICE_SEQS", "ScanError", "event_leaves"]
