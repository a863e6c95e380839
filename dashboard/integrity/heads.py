"""Signed tree heads, pure.

A head says: "the first ``tree_size`` events in ``seq`` order, up to ``last_seq``, hash to
``root``; the ``seq`` values in ``skipped_seqs`` (inclusive ranges) had no committed event
when this was sealed". It is signed with the notary's Ed25519 key over its RFC 8785 form
(:func:`signed_bytes`) and chained to its predecessor by ``previous_hash``
(:func:`head_hash` of the previous head, signature included), so a head deleted, replaced
or replayed from the past breaks the chain.

``skipped_seqs`` lists only the seqs between the previous head's ``last_seq`` and this
one's: together the heads account for every seq, so a row deleted later ("missing") is
told apart from a seq that never had a committed row, and a row inserted later with an old
seq ("inserted") is caught too.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any, Final

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .keys import key_id as key_id_of

__all__ = [
    "HEAD_FORMAT",
    "HeadError",
    "TreeHead",
    "head_from_json",
    "head_hash",
    "head_to_json",
    "sign_head",
    "signed_bytes",
    "verify_signature",
]

HEAD_FORMAT: Final = "audit-tree-head-v1"

SeqRange = tuple[int, int]


class HeadError(ValueError):
    """A head in the JSON-lines copy (or a bundle) that cannot be read."""


@dataclass(frozen=True)
class TreeHead:
    number: int
    tree_size: int
    root: bytes
    last_seq: int | None
    skipped_seqs: tuple[SeqRange, ...]
    sealed_at: datetime
    previous_hash: bytes | None
    key_id: str
    signature: bytes = b""

    def skipped(self, seq: int) -> bool:
        return any(low <= seq <= high for low, high in self.skipped_seqs)


def _time_text(moment: datetime) -> str:
    if moment.utcoffset() is None:
        raise HeadError("sealed_at has no time zone")
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond:06d}Z"


def _unsigned(head: TreeHead) -> dict[str, Any]:
    return {
        "format": HEAD_FORMAT,
        "number": head.number,
        "tree_size": head.tree_size,
        "root": head.root.hex(),
        "last_seq": None if head.last_seq is None else str(head.last_seq),
        "skipped_seqs": [[str(low), str(high)] for low, high in head.skipped_seqs],
        "sealed_at": _time_text(head.sealed_at),
        "previous_hash": None if head.previous_hash is None else head.previous_hash.hex(),
        "key_id": head.key_id,
    }


def signed_bytes(head: TreeHead) -> bytes:
    """What the signature covers: every field but the signature, RFC 8785."""
    return rfc8785.dumps(_unsigned(head))


def head_to_json(head: TreeHead) -> dict[str, Any]:
    document = _unsigned(head)
    document["signature"] = base64.b64encode(head.signature).decode("ascii")
    return document


def head_hash(head: TreeHead) -> bytes:
    """SHA-256 of the head's canonical JSON, signature included: what the next head chains."""
    return hashlib.sha256(rfc8785.dumps(head_to_json(head))).digest()


def sign_head(private_key: Ed25519PrivateKey, **values: Any) -> TreeHead:
    """A head of ``values`` (every field but ``key_id`` and ``signature``), signed."""
    head = TreeHead(**values, key_id=key_id_of(private_key.public_key()), signature=b"")
    _unsigned(head)  # validates sealed_at before signing
    return replace(head, signature=private_key.sign(signed_bytes(head)))


def verify_signature(head: TreeHead, public_keys: Mapping[str, Ed25519PublicKey]) -> bool:
    key = public_keys.get(head.key_id)
    if key is None:
        return False
    try:
        key.verify(head.signature, signed_bytes(head))
    except InvalidSignature:
        return False
    return True


_FIELDS: Final = tuple(f.name for f in fields(TreeHead))


def head_from_json(document: Mapping[str, Any]) -> TreeHead:
    """Read one head of the JSON-lines copy; raises :class:`HeadError` naming the problem."""
    try:
        if document.get("format") != HEAD_FORMAT:
            raise HeadError(f"not a tree head of format {HEAD_FORMAT}")
        missing = [name for name in _FIELDS if name not in document]
        if missing:
            raise HeadError("missing " + ", ".join(missing))
        root = bytes.fromhex(document["root"])
        previous = document["previous_hash"]
        sealed_at = datetime.fromisoformat(document["sealed_at"].replace("Z", "+00:00"))
        return TreeHead(
            number=_int(document["number"]),
            tree_size=_int(document["tree_size"]),
            root=root,
            last_seq=None if document["last_seq"] is None else int(document["last_seq"]),
            skipped_seqs=tuple(_range(item) for item in document["skipped_seqs"]),
            sealed_at=sealed_at,
            previous_hash=None if previous is None else bytes.fromhex(previous),
            key_id=str(document["key_id"]),
            signature=base64.b64decode(document["signature"], validate=True),
        )
    except HeadError:
        raise
    except (TypeError, ValueError, AttributeError) as exc:
        raise HeadError(f"malformed tree head: {exc}") from None


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise HeadError(f"{value!r} is not an integer")
    return value


def _range(item: Sequence[Any]) -> SeqRange:
    low, high = (int(part) for part in item)
    if low > high:
        raise HeadError(f"skipped range {low}..{high} is empty")
    return low, high
