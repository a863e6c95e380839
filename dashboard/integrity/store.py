"""The Merkle tree's tables (sql/010_integrity.sql) through SQLAlchemy Core: heads, leaves,
nodes, and the proofs the dashboard and the exports need. No Flask; the notary, ``verify``
and the dashboard all read through here.

Nothing read here is trusted on its own: a leaf or node hash is only evidence once a proof
built from it reaches a signed root (:func:`dashboard.integrity.merkle.verify_inclusion`).

Scale (10,000,000 events, tree depth 24): an inclusion proof needs at most ~24 subtree
hashes. Each aligned subtree hash is one stored node away: leaves (level 0) are in
``audit_tree_leaves``, complete nodes of every :data:`NODE_LEVEL_STRIDE`-th level in
``audit_tree_nodes``, so a subtree at level ``j`` is folded from at most ``2 **
(NODE_LEVEL_STRIDE - 1)`` = 8 stored hashes. :class:`TreeReader` first asks the pure
``inclusion_proof`` which ranges it will need (the shape of a proof depends only on index
and size), fetches every stored hash those ranges rest on in one query per level (primary
key probes, ``= ANY(array)``), then builds the proofs from memory: a record page's 50
proofs cost a handful of index probes, not hundreds of queries.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, BYTEA, JSONB, UUID, aggregate_order_by
from sqlalchemy.engine import Connection

from .. import queries
from . import bundle, leaf, merkle
from .heads import TreeHead

NODE_LEVEL_STRIDE: Final = 4
"""Stored node levels are 4, 8, 12 ... (sql/010_integrity.sql, audit_tree_nodes)."""

EVENT_BATCH: Final = 5000
"""Rows per keyset batch when events or leaves are streamed in seq order."""

_metadata = sa.MetaData()

tree_heads = sa.Table(
    "audit_tree_heads",
    _metadata,
    sa.Column("number", sa.BigInteger, primary_key=True),
    sa.Column("tree_size", sa.BigInteger, nullable=False),
    sa.Column("root", BYTEA, nullable=False),
    sa.Column("last_seq", sa.BigInteger),
    sa.Column("skipped_seqs", JSONB, nullable=False),
    sa.Column("sealed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("previous_hash", BYTEA),
    sa.Column("key_id", sa.Text, nullable=False),
    sa.Column("signature", BYTEA, nullable=False),
    sa.Column("frontier", JSONB, nullable=False),
)

tree_leaves = sa.Table(
    "audit_tree_leaves",
    _metadata,
    sa.Column("leaf_index", sa.BigInteger, primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("event_id", UUID(as_uuid=True), nullable=False),
    sa.Column("leaf_hash", BYTEA, nullable=False),
)

tree_nodes = sa.Table(
    "audit_tree_nodes",
    _metadata,
    sa.Column("level", sa.SmallInteger, primary_key=True),
    sa.Column("node_index", sa.BigInteger, primary_key=True),
    sa.Column("hash", BYTEA, nullable=False),
)

_h = tree_heads.c
_l = tree_leaves.c
_n = tree_nodes.c
_e = queries.audit_events.c

_HEAD_COLUMNS = (
    _h.number,
    _h.tree_size,
    _h.root,
    _h.last_seq,
    _h.skipped_seqs,
    _h.sealed_at,
    _h.previous_hash,
    _h.key_id,
    _h.signature,
)


class TreeDataMissing(LookupError):
    """A leaf or node the tree needs is not stored (a range beyond the sealed tree, or the
    tree tables were tampered with)."""


# --- Heads --------------------------------------------------------------------------------


def head_from_row(row: Any) -> TreeHead:
    return TreeHead(
        number=int(row.number),
        tree_size=int(row.tree_size),
        root=bytes(row.root),
        last_seq=None if row.last_seq is None else int(row.last_seq),
        skipped_seqs=tuple((int(low), int(high)) for low, high in row.skipped_seqs or ()),
        sealed_at=row.sealed_at,
        previous_hash=None if row.previous_hash is None else bytes(row.previous_hash),
        key_id=row.key_id,
        signature=bytes(row.signature),
    )


def latest_head(conn: Connection) -> TreeHead | None:
    """The newest head (primary key, one probe), or None before the first seal."""
    row = conn.execute(sa.select(*_HEAD_COLUMNS).order_by(_h.number.desc()).limit(1)).first()
    return None if row is None else head_from_row(row)


def head(conn: Connection, number: int) -> TreeHead | None:
    row = conn.execute(sa.select(*_HEAD_COLUMNS).where(_h.number == number)).first()
    return None if row is None else head_from_row(row)


def heads(conn: Connection, *, after: int = 0, batch: int = 1000) -> Iterator[TreeHead]:
    """Every head with ``number > after``, oldest first, in keyset batches (bounded memory)."""
    while True:
        rows = conn.execute(
            sa.select(*_HEAD_COLUMNS).where(_h.number > after).order_by(_h.number).limit(batch)
        ).all()
        for row in rows:
            yield head_from_row(row)
        if len(rows) < batch:
            return
        after = int(rows[-1].number)


def stored_frontier(conn: Connection, number: int) -> merkle.Frontier | None:
    """The compact range stored with head ``number`` (unsigned: compare its root with the
    head's before trusting it)."""
    row = conn.execute(sa.select(_h.tree_size, _h.frontier).where(_h.number == number)).first()
    if row is None:
        return None
    return merkle.Frontier.from_json(int(row.tree_size), list(row.frontier))


def head_covering(conn: Connection, leaf_index: int) -> TreeHead | None:
    """The first head whose tree holds ``leaf_index`` (audit_tree_heads_tree_size_idx)."""
    row = conn.execute(
        sa.select(*_HEAD_COLUMNS).where(_h.tree_size > leaf_index).order_by(_h.tree_size).limit(1)
    ).first()
    return None if row is None else head_from_row(row)


# --- Writes (the notary's) ------------------------------------------------------------------


def insert_head(conn: Connection, head: TreeHead, frontier_json: Sequence[str]) -> None:
    conn.execute(
        tree_heads.insert().values(
            number=head.number,
            tree_size=head.tree_size,
            root=head.root,
            last_seq=head.last_seq,
            skipped_seqs=[[low, high] for low, high in head.skipped_seqs],
            sealed_at=head.sealed_at,
            previous_hash=head.previous_hash,
            key_id=head.key_id,
            signature=head.signature,
            frontier=list(frontier_json),
        )
    )


def copy_leaves(conn: Connection, rows: Iterable[tuple[int, int, uuid.UUID, bytes]]) -> None:
    """Append (leaf_index, seq, event_id, leaf_hash) rows with COPY (binary-safe, fast)."""
    _copy(conn, "audit_tree_leaves", ("leaf_index", "seq", "event_id", "leaf_hash"), rows)


def copy_nodes(conn: Connection, rows: Iterable[tuple[int, int, bytes]]) -> None:
    """Append (level, node_index, hash) rows with COPY."""
    _copy(conn, "audit_tree_nodes", ("level", "node_index", "hash"), rows)


def _copy(conn: Connection, table: str, columns: Sequence[str], rows: Iterable[tuple]) -> None:
    # Table and column names are this module's constants, never input.
    statement = f"COPY public.{table} ({', '.join(columns)}) FROM STDIN"
    cursor = conn.connection.driver_connection.cursor()
    with cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


# --- Events and leaves in seq order ---------------------------------------------------------

EVENT_LEAF_COLUMNS: Final = (
    _e.seq,
    _e.event_id,
    _e.aggregate_id,
    _e.event_type,
    # The leaf is defined on the jsonb text (dashboard/integrity/leaf.py): a parsed value
    # would already have lost digits a double cannot hold.
    sa.cast(_e.payload, sa.Text).label("payload"),
    sa.cast(_e["metadata"], sa.Text).label("metadata"),
    _e.created_at,
)


# The same with the ids and the time as text (the ids as the leaf holds them, the time in
# UTC with six fractional digits whatever the session's TimeZone and DateStyle, and on
# whichever node computes it: leaf.canonical_time reads it): no UUID or datetime built per
# row, for ``verify``, which reads every event. A non-finite time prints as NULL.
_UTC_TEXT: Final = sa.func.to_char(
    sa.func.timezone("UTC", _e.created_at), 'YYYY-MM-DD HH24:MI:SS.US"+00"'
) + sa.case(
    (_e.created_at < sa.cast("0001-01-01 00:00:00+00", sa.DateTime(timezone=True)), " BC"),
    else_="",
)
EVENT_LEAF_TEXT_COLUMNS: Final = (
    _e.seq,
    sa.cast(_e.event_id, sa.Text).label("event_id"),
    sa.cast(_e.aggregate_id, sa.Text).label("aggregate_id"),
    *EVENT_LEAF_COLUMNS[3:6],
    _UTC_TEXT.label("created_at"),
)


def event_leaf_hash(row: Sequence[Any], *, canonical_ids: bool = False) -> bytes:
    """The leaf hash of one row of :data:`EVENT_LEAF_COLUMNS`, or with ``canonical_ids`` of
    :data:`EVENT_LEAF_TEXT_COLUMNS` (uuid::text is canonical: no check per row)."""
    seq, event_id, aggregate_id, event_type, payload, metadata, created_at = row
    return merkle.leaf_hash(
        leaf.leaf_bytes(
            event_id=event_id,
            aggregate_id=aggregate_id,
            event_type=event_type,
            payload=payload,
            metadata=metadata,
            created_at=created_at,
            seq=seq,
            canonical_ids=canonical_ids,
        )
    )


def leaf_text_rows(
    conn: Connection, *, after: int, upto: int, batch: int = EVENT_BATCH
) -> Iterator[tuple[Any, ...]]:
    """Rows of :data:`EVENT_LEAF_TEXT_COLUMNS` with ``after < seq <= upto`` in seq order,
    as plain tuples from the driver's cursor in the connection's transaction (no Row object
    per row: ``verify`` reads every event), in the keyset batches of
    :func:`events_in_seq_order`. A driver error comes out as SQLAlchemy's, as from
    ``conn.execute``."""
    statement = (
        sa.select(*EVENT_LEAF_TEXT_COLUMNS)
        .where(_e.seq > sa.bindparam("after"), _e.seq <= sa.bindparam("upto"))
        .order_by(_e.seq)
        .limit(sa.bindparam("batch"))
        .compile(dialect=conn.dialect)
    )
    sql = str(statement)
    with conn.connection.driver_connection.cursor() as cursor:
        while True:
            params = {**statement.params, "after": after, "upto": upto, "batch": batch}
            try:
                rows = cursor.execute(sql, params).fetchall()
            except psycopg.Error as exc:
                raise sa.exc.DBAPIError.instance(sql, params, exc, psycopg.Error) from exc
            yield from rows
            if len(rows) < batch:
                return
            after = int(rows[-1][0])


def events_in_seq_order(
    conn: Connection,
    *,
    after: int,
    upto: int | None = None,
    batch: int = EVENT_BATCH,
    columns: Sequence[Any] = EVENT_LEAF_COLUMNS,
) -> Iterator[Any]:
    """Events with ``after < seq <= upto`` in seq order: keyset batches on the unique index
    audit_events_seq_key, each a short statement (the roles' statement_timeout applies to
    each batch, not to the whole walk)."""
    while True:
        condition = [_e.seq > after]
        if upto is not None:
            condition.append(_e.seq <= upto)
        rows = conn.execute(
            sa.select(*columns).where(*condition).order_by(_e.seq).limit(batch)
        ).all()
        yield from rows
        if len(rows) < batch:
            return
        after = int(rows[-1].seq)


def leaves_in_order(
    conn: Connection, *, start: int = 0, end: int | None = None, batch: int = EVENT_BATCH
) -> Iterator[Any]:
    """Stored leaves ``start <= leaf_index < end`` in order (primary key batches)."""
    after = start - 1
    while True:
        condition = [_l.leaf_index > after]
        if end is not None:
            condition.append(_l.leaf_index < end)
        rows = conn.execute(
            sa.select(_l.leaf_index, _l.seq, _l.event_id, _l.leaf_hash)
            .where(*condition)
            .order_by(_l.leaf_index)
            .limit(batch)
        ).all()
        yield from rows
        if len(rows) < batch:
            return
        after = int(rows[-1].leaf_index)


@dataclass(frozen=True)
class LeafRange:
    """The stored leaves whose seq lies in a range, packed: their lowest and highest leaf
    index, their seqs and their hashes (both in leaf_index order)."""

    first: int | None
    last: int | None
    seqs: list[int]
    hashes: bytes


def leaves_of_seqs(conn: Connection, *, after: int, upto: int) -> LeafRange:
    """The stored leaves with ``after < seq <= upto`` (one statement on the unique seq
    index, packed by the server: a slice of ``verify``)."""
    first, last, seqs, hashes = conn.execute(
        sa.select(
            sa.func.min(_l.leaf_index),
            sa.func.max(_l.leaf_index),
            sa.func.array_agg(aggregate_order_by(_l.seq, _l.leaf_index)),
            sa.func.string_agg(
                _l.leaf_hash, aggregate_order_by(sa.literal(b"", BYTEA), _l.leaf_index)
            ),
        ).where(_l.seq > after, _l.seq <= upto)
    ).one()
    return LeafRange(first, last, list(seqs or ()), bytes(hashes or b""))


def nodes_in_order(
    conn: Connection, level: int, *, start: int = 0, batch: int = EVENT_BATCH
) -> Iterator[Any]:
    """Stored nodes of one level from ``node_index >= start``, in order."""
    after = start - 1
    while True:
        rows = conn.execute(
            sa.select(_n.node_index, _n.hash)
            .where(_n.level == level, _n.node_index > after)
            .order_by(_n.node_index)
            .limit(batch)
        ).all()
        yield from rows
        if len(rows) < batch:
            return
        after = int(rows[-1].node_index)


def stored_levels_of(size: int) -> list[int]:
    """The node levels a tree of ``size`` leaves has complete nodes on (4, 8, ...)."""
    levels = []
    level = NODE_LEVEL_STRIDE
    while size >> level:
        levels.append(level)
        level += NODE_LEVEL_STRIDE
    return levels


class NodeAccumulator:
    """A compact range like :class:`merkle.Frontier` that also reports each complete node
    of a stored level (:data:`NODE_LEVEL_STRIDE`) as it forms, for ``audit_tree_nodes``.

    The core's Frontier merges those nodes away without showing them; this is the same
    append (RFC 9162 hashing through :func:`merkle.node_hash`) with the levels kept. It
    starts from a Frontier (a head's, checked against its signed root) and gives one back.
    """

    __slots__ = ("_stack", "size")

    def __init__(self, frontier: merkle.Frontier | None = None):
        frontier = frontier or merkle.Frontier()
        self.size = frontier.size
        levels = [bit for bit in reversed(range(self.size.bit_length())) if self.size >> bit & 1]
        hashes = [bytes.fromhex(text) for text in frontier.to_json()]
        self._stack: list[tuple[int, bytes]] = list(zip(levels, hashes, strict=True))

    def append(self, leaf_hash: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf hash; return the stored-level nodes it completed as (level,
        node_index, hash)."""
        level, value = 0, leaf_hash
        completed: list[tuple[int, int, bytes]] = []
        stack = self._stack
        new_size = self.size + 1
        while stack and stack[-1][0] == level:
            value = merkle.node_hash(stack.pop()[1], value)
            level += 1
            if level % NODE_LEVEL_STRIDE == 0:
                completed.append((level, (new_size >> level) - 1, value))
        stack.append((level, value))
        self.size = new_size
        return completed

    def frontier(self) -> merkle.Frontier:
        return merkle.Frontier.from_json(self.size, [value.hex() for _level, value in self._stack])

    def root(self) -> bytes:
        return self.frontier().root()


# --- Subtree hashes and proofs --------------------------------------------------------------


def _is_aligned_power(start: int, end: int) -> bool:
    size = end - start
    return size & (size - 1) == 0 and start % size == 0


def _split(size: int) -> int:
    """RFC 9162 2.1.1: the largest power of two smaller than ``size`` (size > 1)."""
    return 1 << ((size - 1).bit_length() - 1)


class ProvenHashes:
    """Subtree hashes MTH(D[start:end]) that were part of an inclusion proof which reached a
    signed root, kept in one process's memory (least recently used out past ``limit``).

    The log only grows, so the hash of a range of leaves is the same in every later tree:
    a later proof may take it from here instead of reading it again. Nothing unproven goes
    in (a hash read from a tampered table never reaches a signed root), so this cannot
    make a changed event pass; it only means a record page stops noticing a damaged
    *tree table* where its proofs no longer read it (``verify`` reads all of it).
    """

    def __init__(self, limit: int = 50_000):
        self.limit = limit
        self._hashes: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, start: int, end: int) -> bytes | None:
        with self._lock:
            value = self._hashes.get((start, end))
            if value is not None:
                self._hashes.move_to_end((start, end))
            return value

    def add(self, hashes: Iterable[tuple[tuple[int, int], bytes]]) -> None:
        with self._lock:
            for key, value in hashes:
                self._hashes[key] = value
                self._hashes.move_to_end(key)
            while len(self._hashes) > self.limit:
                self._hashes.popitem(last=False)

    def __len__(self) -> int:
        return len(self._hashes)


class TreeReader:
    """Subtree hashes of the stored tree, from as few queries as possible.

    ``subtree_hash(start, end)`` is MTH(D[start:end]) (RFC 9162 2.1.1), the
    :data:`merkle.SubtreeHash` the pure proof functions take. Stored hashes are cached for
    the reader's life (one page, one export): build a new reader per request.
    """

    def __init__(self, conn: Connection, proven: ProvenHashes | None = None):
        self.conn = conn
        self.proven = proven
        # The ranges of each leaf's proof, in proof order (for :meth:`remember`).
        self.proof_ranges: dict[int, list[tuple[int, int]]] = {}
        self._stored: dict[tuple[int, int], bytes] = {}
        # Subtree hashes already folded: a page's proofs share their upper nodes, so each is
        # hashed once (a 50-event page at 50,000 leaves: ~7 ms of hashing down to ~2).
        self._folded: dict[tuple[int, int], bytes] = {}
        self.queries = 0

    # Which stored hashes a range rests on ---------------------------------------------------

    def _needs(self, start: int, end: int, out: set[tuple[int, int]]) -> None:
        if self.proven is not None and self.proven.get(start, end) is not None:
            return
        if end - start == 1:
            out.add((0, start))
            return
        if _is_aligned_power(start, end):
            level = (end - start).bit_length() - 1
            stored = level - level % NODE_LEVEL_STRIDE
            first = start >> stored
            out.update((stored, index) for index in range(first, first + (1 << (level - stored))))
            return
        middle = start + _split(end - start)
        self._needs(start, middle, out)
        self._needs(middle, end, out)

    def prefetch(self, ranges: Iterable[tuple[int, int]]) -> None:
        """Fetch every stored hash the ranges need, in one query."""
        needed: set[tuple[int, int]] = set()
        for start, end in ranges:
            if not 0 <= start < end:
                raise ValueError(f"empty or negative range [{start}, {end})")
            self._needs(start, end, needed)
        missing = needed - self._stored.keys()
        if missing:
            self.queries += 1
            for level, index, value in self.conn.execute(_stored_hashes(missing)):
                self._stored[(int(level), int(index))] = bytes(value)
        absent = missing - self._stored.keys()
        if absent:
            level, index = min(absent)
            what = f"leaf {index}" if level == 0 else f"node {index} of level {level}"
            raise TreeDataMissing(
                f"the tree's {what} is not stored ({len(absent)} hashes missing): the range is "
                "beyond the sealed tree, or audit_tree_leaves/audit_tree_nodes were altered"
            )

    # Hashes from memory ---------------------------------------------------------------------

    def _hash(self, start: int, end: int) -> bytes:
        if self.proven is not None:
            known = self.proven.get(start, end)
            if known is not None:
                return known
        if end - start == 1:
            return self._stored[(0, start)]
        folded = self._folded.get((start, end))
        if folded is not None:
            return folded
        value = self._fold(start, end)
        self._folded[(start, end)] = value
        return value

    def _fold(self, start: int, end: int) -> bytes:
        if _is_aligned_power(start, end):
            level = (end - start).bit_length() - 1
            stored = level - level % NODE_LEVEL_STRIDE
            first = start >> stored
            layer = [
                self._stored[(stored, i)] for i in range(first, first + (1 << (level - stored)))
            ]
            while len(layer) > 1:
                layer = [merkle.node_hash(layer[i], layer[i + 1]) for i in range(0, len(layer), 2)]
            return layer[0]
        middle = start + _split(end - start)
        return merkle.node_hash(self._hash(start, middle), self._hash(middle, end))

    def subtree_hash(self, start: int, end: int) -> bytes:
        try:
            return self._hash(start, end)
        except KeyError:
            self.prefetch([(start, end)])
            return self._hash(start, end)

    # Proofs ---------------------------------------------------------------------------------

    def inclusion_proofs(self, indexes: Iterable[int], size: int) -> dict[int, list[bytes]]:
        """RFC 9162 inclusion proofs of several leaves in a tree of ``size``, prefetched."""
        indexes = list(indexes)
        wanted: list[tuple[int, int]] = []

        def record(start: int, end: int) -> bytes:
            wanted.append((start, end))
            return merkle.EMPTY_ROOT  # a placeholder: the proof's shape ignores the values

        for index in indexes:
            first = len(wanted)
            merkle.inclusion_proof(index, size, record)
            self.proof_ranges[index] = wanted[first:][::-1]  # PATH order: deepest first
        self.prefetch(wanted)
        return {index: merkle.inclusion_proof(index, size, self.subtree_hash) for index in indexes}

    def prefetch_multiproof(self, indices: Sequence[int], size: int) -> None:
        """Fetch every stored hash the multiproof of ``indices`` in a tree of ``size``
        rests on, in one query (:func:`bundle.multiproof_nodes` then reads memory)."""
        wanted: list[tuple[int, int]] = []

        def record(start: int, end: int) -> bytes:
            wanted.append((start, end))
            return merkle.EMPTY_ROOT  # a placeholder: the proof's shape ignores the values

        bundle.multiproof_nodes(indices, size, record)
        self.prefetch(wanted)

    def remember(self, index: int, proof: Sequence[bytes]) -> None:
        """Keep the hashes of leaf ``index``'s proof, which the caller has just seen reach a
        signed root, in :attr:`proven`."""
        if self.proven is not None:
            self.proven.add(zip(self.proof_ranges[index], proof, strict=True))


def _stored_hashes(wanted: Iterable[tuple[int, int]]) -> sa.CompoundSelect:
    """(level, index, hash) of the stored hashes ``wanted`` ((level, index); level 0: the
    leaves): one statement, each table read by its primary key."""
    leaves = [index for level, index in wanted if level == 0]
    nodes = [(level, index) for level, index in wanted if level > 0]
    wanted_nodes = (
        sa.func.unnest(
            sa.bindparam("levels", [level for level, _index in nodes], ARRAY(sa.SmallInteger)),
            sa.bindparam("indexes", [index for _level, index in nodes], ARRAY(sa.BigInteger)),
        )
        .table_valued("level", "node_index")
        .render_derived("wanted")
    )
    return sa.union_all(
        sa.select(sa.literal_column("0"), _l.leaf_index, _l.leaf_hash).where(
            _l.leaf_index == sa.any_(sa.bindparam("leaves", leaves, ARRAY(sa.BigInteger)))
        ),
        sa.select(_n.level, _n.node_index, _n.hash).join(
            wanted_nodes,
            sa.and_(_n.level == wanted_nodes.c.level, _n.node_index == wanted_nodes.c.node_index),
        ),
    )


def subtree_hash(conn: Connection, start: int, end: int) -> bytes:
    """MTH of the stored leaves [start, end): at most one query."""
    return TreeReader(conn).subtree_hash(start, end)


# --- What the dashboard asks -------------------------------------------------------------


@dataclass(frozen=True)
class SealStatus:
    head_number: int
    sealed_at: datetime
    leaf_index: int


def _first_head() -> sa.Lateral:
    """LATERAL: the smallest head whose tree holds the leaf of ``audit_tree_leaves`` it is
    joined to (audit_tree_heads_tree_size_idx, one probe per leaf)."""
    return (
        sa.select(_h.number, _h.sealed_at)
        .where(_h.tree_size > _l.leaf_index)
        .order_by(_h.tree_size)
        .limit(1)
        .lateral("first_head")
    )


def seal_status(conn: Connection, seqs: Iterable[int]) -> dict[int, SealStatus | None]:
    """For each seq: the first head that sealed it (number, time) and its leaf index, or
    None when no head covers it yet (or it was never a committed event).

    One statement: the leaves by their unique seq index, each with the smallest head whose
    tree_size exceeds its leaf index (audit_tree_heads_tree_size_idx, one probe per seq).
    """
    seqs = sorted({int(seq) for seq in seqs})
    result: dict[int, SealStatus | None] = dict.fromkeys(seqs)
    if not seqs:
        return result
    first = _first_head()
    rows = conn.execute(
        sa.select(_l.seq, _l.leaf_index, first.c.number, first.c.sealed_at)
        .select_from(tree_leaves.join(first, sa.true()))
        .where(_l.seq == sa.any_(sa.bindparam("seqs", seqs, ARRAY(sa.BigInteger))))
    ).all()
    for row in rows:
        result[int(row.seq)] = SealStatus(int(row.number), row.sealed_at, int(row.leaf_index))
    return result


@dataclass(frozen=True)
class StoredLeaf:
    seq: int
    leaf_index: int
    event_id: uuid.UUID
    leaf_hash: bytes


def stored_leaves(conn: Connection, seqs: Iterable[int]) -> dict[int, StoredLeaf]:
    """The stored leaves of these seqs (unique index on seq); absent seqs are left out."""
    seqs = sorted({int(seq) for seq in seqs})
    if not seqs:
        return {}
    rows = conn.execute(
        sa.select(_l.seq, _l.leaf_index, _l.event_id, _l.leaf_hash).where(
            _l.seq == sa.any_(sa.bindparam("seqs", seqs, ARRAY(sa.BigInteger)))
        )
    ).all()
    return {
        int(row.seq): StoredLeaf(
            int(row.seq), int(row.leaf_index), row.event_id, bytes(row.leaf_hash)
        )
        for row in rows
    }


def sealed_leaves(
    conn: Connection, seqs: Iterable[int]
) -> dict[int, tuple[StoredLeaf, SealStatus]]:
    """:func:`stored_leaves` and :func:`seal_status` in one statement (a record page asks
    both for its events): each stored leaf with the first head whose tree holds it."""
    seqs = sorted({int(seq) for seq in seqs})
    if not seqs:
        return {}
    first = _first_head()
    rows = conn.execute(
        sa.select(
            _l.seq, _l.leaf_index, _l.event_id, _l.leaf_hash, first.c.number, first.c.sealed_at
        )
        .select_from(tree_leaves.outerjoin(first, sa.true()))
        .where(_l.seq == sa.any_(sa.bindparam("seqs", seqs, ARRAY(sa.BigInteger))))
    ).all()
    found = {}
    for row in rows:
        stored = StoredLeaf(int(row.seq), int(row.leaf_index), row.event_id, bytes(row.leaf_hash))
        seal = (
            None
            if row.number is None
            else SealStatus(int(row.number), row.sealed_at, int(row.leaf_index))
        )
        found[int(row.seq)] = (stored, seal)
    return found


def inclusion_proof(
    conn: Connection, seq: int, head: TreeHead, reader: TreeReader | None = None
) -> tuple[int, bytes, list[bytes]] | None:
    """(leaf_index, stored leaf hash, proof) of the event ``seq`` in ``head``'s tree, or
    None when the head does not cover it. Check the proof with
    ``merkle.verify_inclusion(recomputed_leaf_hash, leaf_index, head.tree_size, proof,
    head.root)``: comparing the recomputed hash (from the row) is what catches a change."""
    found = inclusion_proofs(conn, [seq], head, reader).get(seq)
    return found


def inclusion_proofs(
    conn: Connection,
    seqs: Iterable[int],
    head: TreeHead,
    reader: TreeReader | None = None,
) -> dict[int, tuple[int, bytes, list[bytes]]]:
    """:func:`inclusion_proof` for many events at once (a record page): two or three queries
    for the leaves, a few for the nodes. Seqs the head does not cover are left out."""
    covered = {
        seq: stored
        for seq, stored in stored_leaves(conn, seqs).items()
        if stored.leaf_index < head.tree_size
    }
    reader = reader or TreeReader(conn)
    proofs = reader.inclusion_proofs(
        [stored.leaf_index for stored in covered.values()], head.tree_size
    )
    return {
        seq: (stored.leaf_index, stored.leaf_hash, proofs[stored.leaf_index])
        for seq, stored in covered.items()
    }


def sealed_through(conn: Connection) -> int | None:
    """The newest sealed event's seq (the newest head's last_seq may be a skipped seq with
    no row): an export with a proof stops there. None before the first seal."""
    through = conn.execute(_SEALED_THROUGH).scalar()
    return None if through is None else int(through)


def sealed_through_column() -> sa.ScalarSelect:
    """:func:`sealed_through` as a column another statement can carry (a search page's own
    rows query: one round trip fewer). PostgreSQL runs it once per statement (an InitPlan),
    not per row."""
    return _SEALED_THROUGH.scalar_subquery()


# One statement (a search page offers it on every load, so it is built once): the newest
# head by its primary key, then its last leaf (leaves are in seq order, one per sealed
# event): two probes of small tables' primary keys. Asking audit_events for the highest seq
# at or below the head's last_seq gave the same seq but probed every partition of a
# partitioned table (3-6 ms of planning and probes over 39 partitions) and every shard on
# Citus.
_SEALED_THROUGH: Final = sa.select(_l.seq).where(
    _l.leaf_index
    == sa.select(_h.tree_size - 1).order_by(_h.number.desc()).limit(1).scalar_subquery()
)


def proof_bundle(conn: Connection, seqs: Sequence[int], csv_sha256: str) -> dict[str, Any]:
    """The proof bundle (:func:`.bundle.build_bundle`) of an export whose rows are the
    events ``seqs``, in CSV order, against the newest head. Raises :class:`NotSealed` when
    a row is not sealed yet (or there is no head)."""
    newest = latest_head(conn)
    if newest is None:
        raise NotSealed("nothing is sealed yet: run `audit-dashboard seal` first")
    found: dict[int, StoredLeaf] = {}
    for start in range(0, len(seqs), EVENT_BATCH):
        found.update(stored_leaves(conn, seqs[start : start + EVENT_BATCH]))
    unsealed = [
        seq for seq in seqs if seq not in found or found[seq].leaf_index >= newest.tree_size
    ]
    if unsealed:
        raise NotSealed(
            f"{len(unsealed):,} of the export's events are not sealed yet (the first is seq "
            f"{unsealed[0]}; head #{newest.number} covers seq up to {newest.last_seq}): run "
            "`audit-dashboard seal` and export again, or export with --through-seq "
            f"{newest.last_seq}"
        )
    rows = [(seq, found[seq].leaf_index, found[seq].leaf_hash) for seq in seqs]
    indices = sorted({index for _seq, index, _hash in rows})
    reader = TreeReader(conn)
    reader.prefetch_multiproof(indices, newest.tree_size)
    return bundle.build_bundle(newest, rows, reader.subtree_hash, csv_sha256)


class NotSealed(LookupError):
    """Events asked for are not covered by any head yet."""
