"""Full verification of the sealed log: ``audit-dashboard verify``.

What is checked, in one pass over the tables in seq order (keyset batches, so memory stays
bounded at any size; the findings kept are capped at :data:`MAX_FINDINGS`):

- every head: signature (by the given public keys; several for a key rotation), numbers
  without gaps, ``previous_hash`` chaining it to its predecessor, sizes that only grow;
- the tree: the stored leaf hashes, appended in order, must give each head's signed root
  at its size (so every head is consistent with its predecessor: both are prefixes of one
  tree), and the stored subtree nodes must be those of the leaves;
- the events: each row's leaf is recomputed from its columns and compared with the stored
  leaf of its seq. Since the stored leaves were just proven by the signed roots, a
  difference names the event: *content changed* (same seq, other bytes), *missing* (a
  sealed leaf with no row: deleted), *inserted* (a row at a seq the heads sealed as
  skipped, or below the newest head's last_seq without a leaf), *reordered* (an event
  sealed at one seq now sits at another);
- the heads against the JSON-lines copy outside the database: a head in the file but not
  in the table was deleted or rolled back; a head that differs, or that the file lacks,
  was rewritten.

When the stored leaves themselves were altered, the events are checked against the root
directly: if they still give it, only the tree tables were touched; if not, the head is
reported as not matching its root.

``since_head=N`` checks heads N.. only, starting from the frontier stored with head N - 1
(checked against that head's signed root), for a quick incremental run; rows inserted
later at seqs below head N's range are only caught by a full run.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.engine import Connection

from . import heads_file, merkle, scan, store
from .bundle import Problem
from .heads import TreeHead, head_hash, verify_signature

MAX_FINDINGS: Final = 10_000
UNSEALED_COUNT_CAP: Final = 1_000_000

CONTENT_CHANGED: Final = "content changed"
MISSING: Final = "missing"
INSERTED: Final = "inserted"
REORDERED: Final = "reordered"
SIGNATURE_INVALID: Final = "head signature invalid"
HEAD_MISSING: Final = "head missing or rolled back"
HEADS_DIFFER: Final = "heads differ from the file copy"
CHAIN_BROKEN: Final = "head chain broken"
ROOT_MISMATCH: Final = "root mismatch"
TREE_ALTERED: Final = "tree data altered"


class VerifyInputError(ValueError):
    """Verification cannot start: nothing sealed, keys that signed no head, a bad head
    number (exit 2, not a finding)."""


@dataclass
class VerifyReport:
    first_head: int | None = None
    last_head: int | None = None
    events: int = 0
    tree_size: int = 0
    skipped_seqs: int = 0
    unsealed: int = 0
    problems: list[Problem] = field(default_factory=list)
    more_problems: int = 0

    @property
    def clean(self) -> bool:
        return not self.problems and not self.more_problems

    def add(self, problem: Problem) -> None:
        if len(self.problems) < MAX_FINDINGS:
            self.problems.append(problem)
        else:
            self.more_problems += 1

    def summary(self) -> str:
        heads = (
            f"heads {self.first_head}..{self.last_head}"
            if self.first_head != self.last_head
            else f"head {self.first_head}"
        )
        unsealed = (
            f"; {self.unsealed:,}{'+' if self.unsealed > UNSEALED_COUNT_CAP else ''} newer "
            "events not sealed yet"
            if self.unsealed
            else ""
        )
        if self.clean:
            return (
                f"{self.events:,} events in {heads} verified (tree size {self.tree_size:,}, "
                f"{self.skipped_seqs:,} skipped seqs){unsealed}."
            )
        count = len(self.problems) + self.more_problems
        return (
            f"{count:,} problem{'s' if count != 1 else ''} found checking {self.events:,} "
            f"events in {heads}{unsealed}."
        )


class _Peek:
    """An iterator with one item of look-ahead."""

    _END = object()

    def __init__(self, iterator: Iterator[Any]):
        self._it = iterator
        self._next: Any = self._END

    def peek(self) -> Any:
        if self._next is self._END:
            self._next = next(self._it, None)
        return self._next

    def pop(self) -> Any:
        item = self.peek()
        self._next = self._END
        return item


class _Leaves:
    """The stored leaves in leaf_index order, read lazily: after :meth:`skip_to` the next
    look reads again from there, so a run taken whole from a clean chunk costs no read."""

    def __init__(self, conn: Connection, start: int, end: int):
        self._conn = conn
        self._end = end
        self._stream = _Peek(iter(()))
        self._next_index = start
        self._fresh = False

    def _open(self) -> None:
        if not self._fresh:
            self._stream = _Peek(
                store.leaves_in_order(self._conn, start=self._next_index, end=self._end)
            )
            self._fresh = True

    def peek(self) -> Any:
        self._open()
        return self._stream.peek()

    def pop(self) -> Any:
        self._open()
        leaf = self._stream.pop()
        if leaf is not None:
            self._next_index = int(leaf.leaf_index) + 1
        return leaf

    def skip_to(self, index: int) -> None:
        """Forget the leaves below ``index`` (a run taken from a clean chunk)."""
        if index != self._next_index:
            self._next_index = index
            self._fresh = False


class _Rows:
    """The recomputed rows of :func:`scan.event_chunks` one by one, or a clean chunk's rest
    as a run (:meth:`clean_run`)."""

    def __init__(self, chunks: Iterator[scan.Chunk]):
        self._chunks = chunks
        self._chunk: scan.Chunk | None = None
        self._pos = 0

    def _current(self) -> scan.Chunk | None:
        while self._chunk is None or self._pos >= len(self._chunk):
            self._chunk = next(self._chunks, None)
            self._pos = 0
            if self._chunk is None:
                return None
        return self._chunk

    def peek(self) -> scan.LeafRow | None:
        chunk = self._current()
        return None if chunk is None else chunk.row(self._pos)

    def pop(self) -> scan.LeafRow | None:
        row = self.peek()
        self._pos += 1
        return row

    def clean_run(self, next_leaf: int, leaf_end: int, last_seq: int) -> bytes:
        """The stored (= recomputed) leaf hashes of the rows from here that a row-by-row
        walk would find equal to their stored leaves, starting at leaf ``next_leaf``, below
        ``leaf_end`` and up to seq ``last_seq``: empty unless the current chunk is clean and
        its next row is that leaf. The rows are taken."""
        chunk = self._current()
        if chunk is None or chunk.first_leaf is None or chunk.first_leaf + self._pos != next_leaf:
            return b""
        end = min(len(chunk), self._pos + (leaf_end - next_leaf))
        end = bisect.bisect_right(chunk.seqs, last_seq, self._pos, end)
        run = chunk.hashes[self._pos * merkle.HASH_SIZE : end * merkle.HASH_SIZE]
        self._pos = end
        return run


@dataclass
class _Finding:
    kind: str
    seq: int
    row_event_id: Any = None  # the event id the table holds at this seq now
    sealed_event_id: Any = None  # the event id sealed at this seq


class _NodeCheck:
    """Compares the nodes a :class:`store.NodeAccumulator` completes with the stored ones."""

    def __init__(self, conn: Connection, start_size: int):
        self.conn = conn
        self.start_size = start_size
        self.streams: dict[int, _Peek] = {}
        self.bad = 0

    def check(self, level: int, index: int, value: bytes) -> None:
        stream = self.streams.get(level)
        if stream is None:
            start = self.start_size >> level
            stream = self.streams[level] = _Peek(
                store.nodes_in_order(self.conn, level, start=start)
            )
        while stream.peek() is not None and stream.peek().node_index < index:
            stream.pop()
        stored = stream.peek()
        if stored is None or stored.node_index != index or bytes(stored.hash) != value:
            self.bad += 1
        else:
            stream.pop()


def verify_log(
    conn: Connection,
    public_keys: Mapping[str, Ed25519PublicKey],
    *,
    heads_path: Path | None = None,
    since_head: int | None = None,
    progress: Callable[[int], None] | None = None,
    jobs: int = 1,
) -> VerifyReport:
    """Check everything (module docstring); raise :class:`VerifyInputError` for bad input
    and :class:`heads_file.HeadsFileError` for an unreadable heads file. ``jobs`` > 1
    recomputes the leaves in that many worker processes (:mod:`.scan`; run inside a
    REPEATABLE READ transaction, as the ``verify`` command does), and may raise
    :class:`scan.ScanError`."""
    report = VerifyReport()
    latest = store.latest_head(conn)
    signers = set(conn.execute(sa.select(store.tree_heads.c.key_id).distinct()).scalars().all())
    if signers and not signers & set(public_keys):
        raise VerifyInputError(
            f"The public key(s) given ({', '.join(sorted(public_keys))}) signed none of the "
            f"heads (signed by {', '.join(sorted(signers))}): give the notary's public key."
        )
    base = None  # the head whose tree the check starts from (None: the empty tree)
    if since_head is not None:
        if latest is None or since_head > latest.number:
            raise VerifyInputError(
                f"--since-head {since_head}: there is no head #{since_head}"
                + (f" (the newest is #{latest.number})." if latest else " (none sealed yet).")
            )
        if since_head > 1:
            base = store.head(conn, since_head - 1)
            if base is None:
                raise VerifyInputError(
                    f"--since-head {since_head}: head #{since_head - 1}, where the check would "
                    "start, is missing from audit_tree_heads; run a full verify"
                )
    if heads_path is not None:
        _compare_with_file(conn, heads_path, base.number if base else 1, public_keys, report)
    if latest is None:
        if report.problems:
            return report
        raise VerifyInputError("No tree heads yet: nothing is sealed. Run `audit-dashboard seal`.")

    report.first_head = base.number + 1 if base else 1
    report.last_head = latest.number
    if base is not None:
        if not verify_signature(base, public_keys):
            report.add(_signature_problem(base, public_keys))
        frontier = store.stored_frontier(conn, base.number)
        if frontier is None or frontier.size != base.tree_size or frontier.root() != base.root:
            report.add(
                Problem(
                    TREE_ALTERED,
                    f"the frontier stored with head #{base.number} does not give its signed "
                    "root; run a full verify (without --since-head)",
                )
            )
            return report
    else:
        frontier = merkle.Frontier()
    _check_tree(conn, public_keys, base, frontier, latest, report, progress, jobs)
    report.unsealed = _count_unsealed(conn, latest)
    return report


def _signature_problem(head: TreeHead, public_keys: Mapping[str, Ed25519PublicKey]) -> Problem:
    reason = (
        "does not carry a valid signature"
        if head.key_id in public_keys
        else f"is signed by key {head.key_id}, which is not among the given public keys"
    )
    return Problem(SIGNATURE_INVALID, f"head #{head.number} {reason}")


def _check_tree(
    conn: Connection,
    public_keys: Mapping[str, Ed25519PublicKey],
    base: TreeHead | None,
    frontier: merkle.Frontier,
    latest: TreeHead,
    report: VerifyReport,
    progress: Callable[[int], None] | None,
    jobs: int,
) -> None:
    start_seq = (base.last_seq or 0) if base else 0
    leaves = _Leaves(conn, frontier.size, latest.tree_size)
    events = _Rows(
        scan.event_chunks(conn, after=start_seq, upto=latest.last_seq or start_seq, jobs=jobs)
    )
    stored_tree = store.NodeAccumulator(frontier)
    # The tree of the recomputed leaves. While every recomputed leaf equals its stored one
    # it is the stored tree itself (None: nothing to hash twice); it is split off at the
    # first difference and joined again at the end of the head.
    event_tree: merkle.Frontier | None = None
    nodes = _NodeCheck(conn, frontier.size)
    findings: list[_Finding] = []
    previous = base
    done = 0
    for head in store.heads(conn, after=base.number if base else 0):
        _check_head(head, previous, public_keys, report)
        head_findings: list[_Finding] = []
        overflow = 0
        last_seq = head.last_seq if head.last_seq is not None else start_seq
        bad_nodes_before = nodes.bad
        while True:
            if event_tree is None:
                # Rows that match their stored leaves one for one: hash the stored tree
                # only, as the walk below would (one tree while nothing differs).
                run = events.clean_run(stored_tree.size, head.tree_size, last_seq)
                if run:
                    for offset in range(0, len(run), merkle.HASH_SIZE):
                        for node in stored_tree.append(run[offset : offset + merkle.HASH_SIZE]):
                            nodes.check(*node)
                    before = done
                    done += len(run) // merkle.HASH_SIZE
                    leaves.skip_to(stored_tree.size)
                    if progress is not None and done // 10_000 != before // 10_000:
                        progress(done)
                    continue
            leaf = leaves.peek()
            if leaf is not None and leaf.leaf_index >= head.tree_size:
                leaf = None
            row = events.peek()
            if row is not None and row[0] > last_seq:
                row = None
            if leaf is None and row is None:
                break
            finding = None
            if row is None or (leaf is not None and leaf.seq < row[0]):
                leaves.pop()
                if event_tree is None:
                    event_tree = stored_tree.frontier()
                for node in stored_tree.append(bytes(leaf.leaf_hash)):
                    nodes.check(*node)
                finding = _Finding(MISSING, int(leaf.seq), None, leaf.event_id)
            else:
                events.pop()
                done += 1
                seq, event_id, recomputed = row
                if leaf is None or seq < leaf.seq:
                    if event_tree is None:
                        event_tree = stored_tree.frontier()
                    event_tree.append(recomputed)
                    finding = _Finding(INSERTED, seq, event_id, None)
                else:
                    leaves.pop()
                    stored = bytes(leaf.leaf_hash)
                    if recomputed != stored:
                        if event_tree is None:
                            event_tree = stored_tree.frontier()
                        finding = _Finding(CONTENT_CHANGED, seq, event_id, leaf.event_id)
                    if event_tree is not None:
                        event_tree.append(recomputed)
                    for node in stored_tree.append(stored):
                        nodes.check(*node)
                if progress is not None and done % 10_000 == 0:
                    progress(done)
            if finding is not None:
                if len(head_findings) < MAX_FINDINGS:
                    head_findings.append(finding)
                else:
                    overflow += 1
        stored_ok = stored_tree.size == head.tree_size and stored_tree.root() == head.root
        events_ok = (
            stored_ok
            if event_tree is None
            else event_tree.size == head.tree_size and event_tree.root() == head.root
        )
        if stored_ok or not events_ok:
            findings.extend(head_findings)
            report.more_problems += overflow
        if not stored_ok:
            if events_ok:
                report.add(
                    Problem(
                        TREE_ALTERED,
                        f"the stored leaves of head #{head.number} do not give its signed root; "
                        "the events do (audit_tree_leaves was altered, the events were not)",
                    )
                )
                assert event_tree is not None  # events_ok and not stored_ok: they differ
                stored_tree = store.NodeAccumulator(event_tree)
            else:
                report.add(
                    Problem(
                        ROOT_MISMATCH,
                        f"neither the events nor the stored leaves up to seq {head.last_seq} "
                        f"give the signed root of head #{head.number}",
                    )
                )
                resync = store.stored_frontier(conn, head.number)
                if resync is None or resync.root() != head.root or resync.size != head.tree_size:
                    report.add(
                        Problem(
                            TREE_ALTERED,
                            f"heads after #{head.number} cannot be checked: no trusted tree "
                            "state to continue from",
                        )
                    )
                    break
                stored_tree = store.NodeAccumulator(resync)
        # Both trees now stand at the head's signed state (or the stored one does, when
        # the events did not give it): one tree again.
        event_tree = None
        if nodes.bad > bad_nodes_before:
            report.add(
                Problem(
                    TREE_ALTERED,
                    f"{nodes.bad - bad_nodes_before:,} stored subtree hashes of head "
                    f"#{head.number} differ from its leaves (proofs built from them fail)",
                )
            )
        report.skipped_seqs += sum(high - low + 1 for low, high in head.skipped_seqs)
        previous = head
    report.events = done
    report.tree_size = latest.tree_size
    for problem in _name_findings(findings):
        report.add(problem)
    if progress is not None:
        progress(done)


def _check_head(
    head: TreeHead,
    previous: TreeHead | None,
    public_keys: Mapping[str, Ed25519PublicKey],
    report: VerifyReport,
) -> None:
    if not verify_signature(head, public_keys):
        report.add(_signature_problem(head, public_keys))
    expected = previous.number + 1 if previous else 1
    if head.number != expected:
        missing = (
            f"#{expected}" if head.number == expected + 1 else f"#{expected}..#{head.number - 1}"
        )
        report.add(Problem(HEAD_MISSING, f"head {missing} is missing from audit_tree_heads"))
    elif previous is not None and head.previous_hash != head_hash(previous):
        report.add(
            Problem(CHAIN_BROKEN, f"head #{head.number} does not chain to head #{previous.number}")
        )
    elif previous is None and head.previous_hash is not None:
        report.add(Problem(CHAIN_BROKEN, f"head #{head.number} claims a predecessor"))
    if previous is not None and (
        head.tree_size <= previous.tree_size or (head.last_seq or 0) < (previous.last_seq or 0)
    ):
        report.add(
            Problem(
                CHAIN_BROKEN,
                f"head #{head.number} does not extend head #{previous.number} "
                f"(tree size {previous.tree_size} -> {head.tree_size})",
            )
        )


def _name_findings(findings: list[_Finding]) -> Iterator[Problem]:
    """Findings as problems; an event sealed at one seq and found at another is reported
    once, as reordered."""
    sealed_at = {f.sealed_event_id: f.seq for f in findings if f.sealed_event_id is not None}
    found_at = {f.row_event_id: f.seq for f in findings if f.row_event_id is not None}
    moved = {
        event_id: (seq, found_at[event_id])
        for event_id, seq in sealed_at.items()
        if event_id in found_at and found_at[event_id] != seq
    }
    for event_id, (old, new) in sorted(moved.items(), key=lambda item: item[1]):
        yield Problem(
            REORDERED,
            f"sealed at seq {old}, now at seq {new}",
            seq=new,
            event_id=str(event_id),
        )
    for finding in findings:
        ids = {finding.row_event_id, finding.sealed_event_id} - {None}
        if ids and ids <= moved.keys():
            continue
        if finding.kind == CONTENT_CHANGED:
            message = "the row differs from the event that was sealed"
            if finding.row_event_id != finding.sealed_event_id:
                message += f" (sealed as event {finding.sealed_event_id})"
            event_id = finding.row_event_id
        elif finding.kind == MISSING:
            message = "the sealed event is no longer in audit_events (deleted)"
            event_id = finding.sealed_event_id
        else:
            message = "this row was not there when its seq was sealed (added later)"
            event_id = finding.row_event_id
        yield Problem(finding.kind, message, seq=finding.seq, event_id=str(event_id))


def _compare_with_file(
    conn: Connection,
    path: Path,
    from_number: int,
    public_keys: Mapping[str, Ed25519PublicKey],
    report: VerifyReport,
) -> None:
    """Database heads against the file copy, both in number order (bounded memory)."""
    in_file = _Peek(h for h in heads_file.read_heads(path) if h.number >= from_number)
    in_db = _Peek(store.heads(conn, after=from_number - 1))
    last_file_number = 0
    while in_file.peek() is not None or in_db.peek() is not None:
        copy, kept = in_file.peek(), in_db.peek()
        if copy is not None and copy.number <= last_file_number:
            in_file.pop()
            report.add(
                Problem(HEADS_DIFFER, f"the heads file repeats or reorders head #{copy.number}")
            )
            continue
        if kept is None or (copy is not None and copy.number < kept.number):
            in_file.pop()
            last_file_number = copy.number
            if verify_signature(copy, public_keys):
                report.add(
                    Problem(
                        HEAD_MISSING,
                        f"head #{copy.number} (tree size {copy.tree_size}, seq up to "
                        f"{copy.last_seq}) is in the heads file but not in audit_tree_heads",
                    )
                )
            else:
                report.add(
                    Problem(
                        HEADS_DIFFER,
                        f"head #{copy.number} of the heads file carries no valid signature",
                    )
                )
        elif copy is None or kept.number < copy.number:
            in_db.pop()
            report.add(
                Problem(
                    HEADS_DIFFER,
                    f"head #{kept.number} is in audit_tree_heads but not in the heads file",
                )
            )
        else:
            in_file.pop()
            in_db.pop()
            last_file_number = copy.number
            if head_hash(copy) != head_hash(kept):
                report.add(
                    Problem(
                        HEADS_DIFFER,
                        f"head #{kept.number} in audit_tree_heads differs from the heads file",
                    )
                )


def _count_unsealed(conn: Connection, latest: TreeHead) -> int:
    e = store.queries.audit_events.c
    limited = (
        sa.select(sa.literal(1))
        .where(e.seq > (latest.last_seq or 0))
        .limit(UNSEALED_COUNT_CAP + 1)
        .subquery()
    )
    return int(conn.execute(sa.select(sa.func.count()).select_from(limited)).scalar() or 0)


__all__ = [
    "CHAIN_BROKEN",
    "CONTENT_CHANGED",
    "HEADS_DIFFER",
    "HEAD_MISSING",
    "INSERTED",
    "MISSING",
    "REORDERED",
    "ROOT_MISMATCH",
    "SIGNATURE_INVALID",
    "TREE_ALTERED",
    "VerifyInputError",
    "VerifyReport",
    "verify_log",
]
