"""The events' leaf hashes in seq order, for ``verify``: computed in this process, or by
worker processes that share the caller's snapshot.

The seq range is cut into slices of :data:`SLICE_SEQS` seq values. For each slice the rows
are read and their leaves recomputed (:mod:`.leaf`), and the stored leaves of the same seqs
are read beside them: a slice whose every row has its stored leaf, with the same hash, at
consecutive leaf indexes comes back as a :class:`Chunk` that says so (``first_leaf``), and
``verify`` takes such a run as a whole (hashing only the stored tree, not row by row). Any
other slice comes back with ``first_leaf`` None, and ``verify`` walks it row by row beside
the stored leaves, naming each difference. A chunk holds its rows packed (seqs in an
array, ids and hashes in bytes), so a slice crosses a process boundary in a few copies.

Recomputing a leaf is CPU work in Python, so a full verification of tens of millions of
events is bound by it. With ``jobs`` > 1 each worker process reads its slices through its
own connection and the caller gets the chunks back in order. At most ``jobs + 1`` slices
are in flight, so memory stays bounded whatever the table's size.

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
import uuid
from array import array
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import leaf, merkle, store

SLICE_SEQS: Final = 50_000
# Below this many seq values a pool's start-up costs more than it saves.
PARALLEL_MIN_SEQS: Final = 200_000
_SNAPSHOT_ID: Final = re.compile(r"[0-9A-F]+-[0-9A-F]+(?:-[0-9]+)?")
_ID: Final = 36  # len(str(uuid))
_HASH: Final = merkle.HASH_SIZE

LeafRow = tuple[int, uuid.UUID, bytes]  # seq, event_id, recomputed leaf hash


class ScanError(RuntimeError):
    """A worker could not read or encode its rows (the message says why)."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """The rows of one seq slice, in seq order: seq, event id and recomputed leaf hash.

    ``first_leaf`` is the leaf index of the first row when the slice matched the stored
    leaves exactly (row *i* is stored leaf ``first_leaf + i``, with the same seq and hash,
    and the stored leaves hold no other seq of the slice); None otherwise.
    """

    seqs: array[int]
    event_ids: bytes  # the ids as text, 36 ASCII characters each
    hashes: bytes
    first_leaf: int | None

    def __len__(self) -> int:
        return len(self.seqs)

    def row(self, i: int) -> LeafRow:
        return (
            self.seqs[i],
            uuid.UUID(self.event_ids[i * _ID : (i + 1) * _ID].decode()),
            self.hashes[i * _HASH : (i + 1) * _HASH],
        )


def event_chunks(conn: Connection, *, after: int, upto: int, jobs: int = 1) -> Iterator[Chunk]:
    """The chunks of the events with ``after < seq <= upto``, in seq order. ``jobs`` > 1
    uses worker processes when the range holds at least :data:`PARALLEL_MIN_SEQS` seq
    values."""
    if jobs <= 1 or upto - after < PARALLEL_MIN_SEQS:
        for low, high in _slices(after, upto):
            yield _chunk(conn, low, high)
        return
    yield from _parallel(conn, after, upto, jobs)


def _slices(after: int, upto: int) -> Iterator[tuple[int, int]]:
    return ((low, min(low + SLICE_SEQS, upto)) for low in range(after, upto, SLICE_SEQS))


def _chunk(conn: Connection, after: int, upto: int) -> Chunk:
    seqs: array[int] = array("q")
    ids = bytearray()
    hashes = bytearray()
    for row in store.leaf_text_rows(conn, after=after, upto=upto):
        seqs.append(row[0])
        ids += row[1].encode("ascii")
        try:
            hashes += store.event_leaf_hash(row, canonical_ids=True)
        except leaf.LeafError as exc:  # a time PostgreSQL keeps and no leaf can (infinity)
            raise ScanError(f"seq {row[0]}, event {row[1]}: {exc}") from None
    stored = store.leaves_of_seqs(conn, after=after, upto=upto)
    clean = (
        stored.first is not None
        and stored.last - stored.first + 1 == len(stored.seqs)  # consecutive indexes
        and stored.hashes == hashes
        and array("q", stored.seqs) == seqs  # the same seqs, index order = seq order
    )
    return Chunk(seqs, bytes(ids), bytes(hashes), stored.first if clean else None)


def _parallel(conn: Connection, after: int, upto: int, jobs: int) -> Iterator[Chunk]:
    snapshot = conn.execute(sa.text("SELECT pg_export_snapshot()")).scalar_one()
    url = conn.engine.url.render_as_string(hide_password=False)
    executor = ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(url, snapshot),
    )
    pending: deque[Future[Chunk]] = deque()
    try:
        for bounds in _slices(after, upto):
            pending.append(executor.submit(_scan_slice, *bounds))
            if len(pending) > jobs:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
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
        connect_args={
            "application_name": "audit-dashboard verify",
            "options": "-c TimeZone=UTC -c DateStyle=ISO",  # as db.make_engine's
        },
    )
    conn = engine.connect().execution_options(isolation_level="REPEATABLE READ")
    conn.begin()
    # The first statement of the transaction; the id was checked above (SET takes no
    # bound parameters).
    conn.execute(sa.text(f"SET TRANSACTION SNAPSHOT '{snapshot}'"))
    conn.execute(sa.text("SET TRANSACTION READ ONLY"))
    _worker["conn"] = conn


def _scan_slice(after: int, upto: int) -> Chunk:
    conn = _worker["conn"]
    try:
        return _chunk(conn, after, upto)
    except sa.exc.DBAPIError as exc:
        first = str(exc.orig or exc).strip().splitlines()[0]
        raise ScanError(f"reading seqs {after + 1}..{upto}: {first}") from None


__all__ = ["PARALLEL_MIN_SEQS", "SLICE_SEQS", "Chunk", "ScanError", "event_chunks"]
