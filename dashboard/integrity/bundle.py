"""The proof bundle of a CSV export, checked offline, pure.

A bundle (JSON, beside ``events.csv`` as ``events.proof.json``) proves that every row of
one export is an event of the sealed log, unchanged::

    {"format": "audit-proof-bundle-v1", "leaf_format": "audit-leaf-v1",
     "csv_sha256": "<hex>", "rows": N,
     "head": {signed tree head, as in the JSON-lines copy},
     "leaves": [[seq, leaf_index, "<leaf hash hex>"], ...],   # in the CSV's row order
     "nodes": {"<start>-<end>": "<hex>", ...}}                 # a Merkle multiproof

``nodes`` holds the hash of every maximal subtree (in RFC 9162's split of the head's tree)
that contains none of the listed leaves: with the leaf hashes they give the root, so one
bundle proves all rows at once in O(rows x log(size / rows)) hashes instead of one audit
path per row. The per-row leaf hashes let the checker name the row whose content changed.

:func:`verify_bundle` recomputes each row's leaf from the CSV alone
(:func:`.leaf.leaf_bytes_from_csv`), compares it with the bundle, rebuilds the root and
checks the head's signature with the given public keys: no database involved.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .heads import HeadError, TreeHead, head_from_json, head_to_json, verify_signature
from .leaf import LEAF_FORMAT, LeafError, leaf_bytes_from_csv
from .merkle import HASH_SIZE, SubtreeHash, leaf_hash, node_hash, split_point

__all__ = [
    "BUNDLE_FORMAT",
    "BundleError",
    "Problem",
    "build_bundle",
    "multiproof_nodes",
    "root_from_multiproof",
    "verify_bundle",
]

BUNDLE_FORMAT: Final = "audit-proof-bundle-v1"


class BundleError(ValueError):
    """A bundle file that is not a proof bundle at all (bad input, not tampering)."""


@dataclass(frozen=True)
class Problem:
    kind: str  # content changed | not in bundle | row count | digest | root | signature ...
    message: str
    row: int | None = None  # 1-based data row of the CSV
    seq: int | None = None
    event_id: str | None = None

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.seq is not None:
            where.append(f"seq {self.seq}")
        if self.event_id:
            where.append(f"event {self.event_id}")
        return (", ".join(where) + ": " if where else "") + f"{self.kind}: {self.message}"


def _key(start: int, end: int) -> str:
    return f"{start}-{end}"


def multiproof_nodes(indices: Sequence[int], size: int, subtree: SubtreeHash) -> dict[str, bytes]:
    """The hashes of the maximal subtrees of the tree of ``size`` leaves holding none of
    the (sorted, distinct) leaf ``indices``."""
    nodes: dict[str, bytes] = {}
    if size == 0:
        return nodes
    stack = [(0, size)]
    while stack:
        start, end = stack.pop()
        first = bisect.bisect_left(indices, start)
        if first == len(indices) or indices[first] >= end:
            nodes[_key(start, end)] = subtree(start, end)
        elif end - start > 1:
            k = split_point(end - start)
            stack.append((start + k, end))
            stack.append((start, start + k))
    return nodes


def root_from_multiproof(
    leaves: Mapping[int, bytes], size: int, nodes: Mapping[str, bytes]
) -> bytes | None:
    """The root of the tree of ``size`` leaves from leaf hashes by index and the
    multiproof ``nodes``; None when a needed hash is missing. Post-order, iterative."""
    if size == 0:
        return None
    indices = sorted(leaves)
    if indices and not 0 <= indices[0] <= indices[-1] < size:
        return None
    results: list[bytes] = []
    stack: list[tuple[int, int, bool]] = [(0, size, False)]
    while stack:
        start, end, children_done = stack.pop()
        if children_done:
            right = results.pop()
            left = results.pop()
            results.append(node_hash(left, right))
            continue
        first = bisect.bisect_left(indices, start)
        if first == len(indices) or indices[first] >= end:
            node = nodes.get(_key(start, end))
            if node is None:
                return None
            results.append(node)
        elif end - start == 1:
            results.append(leaves[start])
        else:
            k = split_point(end - start)
            stack.append((start, end, True))
            stack.append((start + k, end, False))
            stack.append((start, start + k, False))
    return results[0]


def build_bundle(
    head: TreeHead,
    rows: Sequence[tuple[int, int, bytes]],
    subtree: SubtreeHash,
    csv_sha256: str,
) -> dict[str, Any]:
    """The bundle for an export whose rows are ``(seq, leaf_index, leaf_hash)`` in CSV order,
    every one sealed in ``head``; ``subtree`` answers for ``head``'s tree."""
    indices = sorted({index for _seq, index, _hash in rows})
    if indices and indices[-1] >= head.tree_size:
        raise ValueError(f"leaf {indices[-1]} is not in head #{head.number}")
    nodes = multiproof_nodes(indices, head.tree_size, subtree)
    return {
        "format": BUNDLE_FORMAT,
        "leaf_format": LEAF_FORMAT,
        "csv_sha256": csv_sha256,
        "rows": len(rows),
        "head": head_to_json(head),
        "leaves": [[str(seq), index, digest.hex()] for seq, index, digest in rows],
        "nodes": {key: value.hex() for key, value in nodes.items()},
    }


def _parse(bundle: Mapping[str, Any]) -> tuple[TreeHead, list[tuple[int, int, bytes]], dict]:
    if not isinstance(bundle, Mapping) or bundle.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"not a proof bundle of format {BUNDLE_FORMAT}")
    if bundle.get("leaf_format") != LEAF_FORMAT:
        raise BundleError(f"leaf format {bundle.get('leaf_format')!r} is not {LEAF_FORMAT}")
    try:
        head = head_from_json(bundle["head"])
        leaves = []
        for seq, index, digest in bundle["leaves"]:
            value = bytes.fromhex(digest)
            if len(value) != HASH_SIZE or isinstance(index, bool) or not isinstance(index, int):
                raise ValueError(f"bad leaf entry for seq {seq}")
            leaves.append((int(seq), index, value))
        nodes = {}
        for key, digest in bundle["nodes"].items():
            value = bytes.fromhex(digest)
            if len(value) != HASH_SIZE:
                raise ValueError(f"node {key} is not a SHA-256 hash")
            nodes[str(key)] = value
    except (HeadError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BundleError(f"malformed proof bundle: {exc}") from None
    return head, leaves, nodes


def verify_bundle(
    csv_rows: Iterable[Mapping[str, str | None]],
    bundle: Mapping[str, Any],
    public_keys: Mapping[str, Ed25519PublicKey],
    *,
    csv_sha256: str | None = None,
) -> list[Problem]:
    """Every problem found; an empty list means the export is the sealed events, unchanged.

    ``csv_sha256`` is the digest of the CSV file's bytes, when the caller has it (the
    ``verify-export`` command does). Raises :class:`BundleError` for a file that is no
    bundle at all (bad input).
    """
    head, leaves, nodes = _parse(bundle)
    problems: list[Problem] = []
    if not verify_signature(head, public_keys):
        known = head.key_id in public_keys
        problems.append(
            Problem(
                "head signature invalid",
                f"head #{head.number} (key {head.key_id}) "
                + (
                    "does not carry a valid signature"
                    if known
                    else "was signed by a key that was not given"
                ),
            )
        )
    if csv_sha256 is not None and csv_sha256 != bundle.get("csv_sha256"):
        problems.append(
            Problem(
                "digest",
                "the CSV's SHA-256 is not the one this proof was made for "
                "(the file was changed, or the proof belongs to another export)",
            )
        )
    count = 0
    for count, row in enumerate(csv_rows, start=1):
        seq_text = row.get("seq")
        event_id = row.get("event_id")
        if count > len(leaves):
            problems.append(
                Problem(
                    "not in bundle", "the proof has no entry for this row", count, None, event_id
                )
            )
            continue
        seq, _index, sealed = leaves[count - 1]
        if seq_text != str(seq):
            problems.append(
                Problem(
                    "not in bundle",
                    f"the proof's row {count} is seq {seq}, the CSV's is {seq_text!r} "
                    "(rows reordered, or the proof belongs to another export)",
                    count,
                    seq,
                    event_id,
                )
            )
            continue
        try:
            recomputed = leaf_hash(leaf_bytes_from_csv(row))
        except LeafError as exc:
            problems.append(Problem("unreadable row", str(exc), count, seq, event_id))
            continue
        if recomputed != sealed:
            problems.append(
                Problem(
                    "content changed",
                    "this row differs from the event that was sealed",
                    count,
                    seq,
                    event_id,
                )
            )
    if count != len(leaves) or count != bundle.get("rows"):
        problems.append(
            Problem(
                "row count",
                f"the CSV has {count} rows, the proof covers {len(leaves)} "
                f"(rows removed or added, or the proof belongs to another export)",
            )
        )
    root = root_from_multiproof(
        {index: digest for _seq, index, digest in leaves}, head.tree_size, nodes
    )
    if root is None or root != head.root:
        problems.append(
            Problem(
                "root",
                f"the proof's leaves and nodes do not give the root of head #{head.number}",
            )
        )
    return problems
