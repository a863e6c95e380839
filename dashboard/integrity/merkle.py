"""The Merkle tree of RFC 9162 section 2.1 (the hashing of RFC 6962), pure.

Leaves are hashed as ``SHA-256(0x00 || leaf)``, inner nodes as ``SHA-256(0x01 || left ||
right)``; a tree of ``n`` leaves splits at the largest power of two below ``n``. So the
roots, inclusion proofs and consistency proofs here are the standard ones, checked in the
tests against the published vectors of transparency-dev/merkle.

Proof *generation* takes a callback ``subtree(start, end)`` that returns the hash of the
leaves ``[start, end)``: the database layer answers it from stored hashes, the tests from a
list. Everything is iterative or recursion bounded by the tree height (at most 64).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Final

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "Frontier",
    "SubtreeHash",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_of",
    "split_point",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE: Final = 32
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
"""The root of the empty tree (RFC 9162: the hash of the empty string)."""

SubtreeHash = Callable[[int, int], bytes]
"""``subtree(start, end)``: the Merkle tree hash of the leaves ``[start, end)``."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n`` >= 2): where a tree splits."""
    if n < 2:
        raise ValueError(f"a tree of {n} leaves does not split")
    return 1 << ((n - 1).bit_length() - 1)


class Frontier:
    """The compact range ``[0, size)``: one hash per set bit of ``size``, biggest first.

    Appending a leaf costs O(1) amortised and the state is at most 64 hashes, so a notary
    can extend a tree of billions of leaves without reading them again; it keeps this in
    each tree head (:meth:`to_json`).
    """

    __slots__ = ("_hashes", "size")

    def __init__(self) -> None:
        self.size = 0
        self._hashes: list[bytes] = []

    def append(self, leaf: bytes) -> None:
        """Add one leaf *hash* (see :func:`leaf_hash`)."""
        hashes = self._hashes
        hashes.append(leaf)
        carry = self.size
        while carry & 1:
            right = hashes.pop()
            hashes[-1] = node_hash(hashes[-1], right)
            carry >>= 1
        self.size += 1

    def extend(self, leaves: Iterable[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        if not self._hashes:
            return EMPTY_ROOT
        it = reversed(self._hashes)
        result = next(it)
        for left in it:
            result = node_hash(left, result)
        return result

    def to_json(self) -> list[str]:
        return [h.hex() for h in self._hashes]

    @classmethod
    def from_json(cls, size: int, hashes: Sequence[str]) -> Frontier:
        """Rebuild from :meth:`to_json`; raises ValueError when the two do not fit."""
        if size < 0 or len(hashes) != bin(size).count("1"):
            raise ValueError(f"a frontier of size {size} has {bin(size).count('1')} hashes")
        frontier = cls()
        frontier.size = size
        frontier._hashes = [_hash_from_hex(h) for h in hashes]
        return frontier

    def copy(self) -> Frontier:
        other = Frontier()
        other.size = self.size
        other._hashes = list(self._hashes)
        return other


def _hash_from_hex(text: str) -> bytes:
    value = bytes.fromhex(text)
    if len(value) != HASH_SIZE:
        raise ValueError(f"a hash has {HASH_SIZE} bytes, not {len(value)}")
    return value


def root_of(leaf_hashes: Iterable[bytes]) -> bytes:
    """The Merkle tree hash (MTH) of a list of leaf hashes."""
    frontier = Frontier()
    frontier.extend(leaf_hashes)
    return frontier.root()


def inclusion_proof(index: int, size: int, subtree: SubtreeHash) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``size`` leaves (RFC 6962 PATH)."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = split_point(end - start)
        if index < start + k:
            path.append(subtree(start + k, end))
            end = start + k
        else:
            path.append(subtree(start, start + k))
            start += k
    path.reverse()  # PATH lists the deepest sibling first
    return path


def consistency_proof(old_size: int, new_size: int, subtree: SubtreeHash) -> list[bytes]:
    """The proof that the tree of ``new_size`` leaves extends that of ``old_size``
    (RFC 6962 PROOF / SUBPROOF), for ``0 < old_size <= new_size``."""
    if not 0 < old_size <= new_size:
        raise ValueError(f"no consistency proof from {old_size} to {new_size} leaves")
    proof: list[bytes] = []
    start, end, m, whole = 0, new_size, old_size, True
    while m != end - start:
        k = split_point(end - start)
        if m <= k:
            proof.append(subtree(start + k, end))
            end = start + k
        else:
            proof.append(subtree(start, start + k))
            start, m, whole = start + k, m - k, False
    if not whole:
        proof.append(subtree(start, end))
    proof.reverse()
    return proof


def _valid(*hashes: bytes) -> bool:
    return all(isinstance(h, bytes | bytearray) and len(h) == HASH_SIZE for h in hashes)


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 section 2.1.3.2: does ``proof`` put leaf hash ``leaf`` at ``index``?"""
    if not 0 <= index < size or not _valid(leaf, root, *proof):
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 section 2.1.4.2: is the tree (``new_size``, ``new_root``) an append-only
    extension of (``old_size``, ``old_root``)? A proof from the empty tree proves nothing
    and is refused, as transparency-dev/merkle does."""
    if not 0 < old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof or not _valid(old_root, new_root, *proof):
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of two: its root is a node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
