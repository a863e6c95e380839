"""What the dashboard says about integrity: each shown event checked against the newest
signed tree head, and the state of the log for the integrity page. No Flask: the record
page, the JSON API, the PDF reports and the proof download all call this module, so they
never disagree.

The check of a page of events (:func:`check_events`), for each event:

1. re-read the row from ``audit_events`` by its primary key, with the payload and metadata
   as jsonb text (what the leaf is defined on, :mod:`.leaf`), and recompute its leaf hash.
   Nothing cached is used: the row the database holds now is what is checked;
2. find the stored leaf of its ``seq`` (one query for the page, unique index on seq);
3. verify the *recomputed* hash's inclusion proof (built by :class:`.store.TreeReader`,
   a few primary-key probes for the whole page) against the newest head's root, whose
   Ed25519 signature is checked first with the configured public keys.

Only a proof that reaches a signed root counts: nothing the database says about itself is
believed on its own. So the result is one of: *sealed* (the proof holds), *not yet sealed*
(a seq above the newest head), or a finding that names the event — its content differs
from what was sealed, it is missing from the sealed log (a row at a seq the heads account
for without it: inserted later), the head's signature is invalid, or the tree data is
altered. Anything that stops the check (a table the role cannot read, a statement that
times out, a missing stored hash) makes the whole result *unavailable*, said as such:
the check fails closed, it never answers "ok" by default.

Cost, whatever the table's size: one query for the rows, one for the leaves with the first
heads that sealed them, one for the newest head, and one per stored tree level (at most 6
at 10,000,000 events) for the proofs of the whole page; then the hashing in Python
(benchmarks/bench_integrity.py, "page check").
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.engine import Connection

from . import bundle, heads_file, keys, merkle, results_file, store
from .heads import TreeHead, head_hash, head_to_json, verify_signature

__all__ = [
    "CONTENT_DIFFERS",
    "DELETED",
    "HEAD_ROLLED_BACK",
    "MISSING_FROM_LOG",
    "SIGNATURE_INVALID",
    "TREE_ALTERED",
    "EventProof",
    "EventsCheck",
    "Finding",
    "IntegrityStatus",
    "KeyConfig",
    "Seal",
    "check_events",
    "check_selection",
    "event_proof",
    "integrity_status",
    "load_key_config",
]

# What a finding says, in the words the pages show.
CONTENT_DIFFERS: Final = "content differs from what was sealed"
MISSING_FROM_LOG: Final = "missing from the sealed log"
DELETED: Final = "sealed, but deleted from audit_events"
SIGNATURE_INVALID: Final = "head signature invalid"
TREE_ALTERED: Final = "tree data altered"
HEAD_ROLLED_BACK: Final = "head missing or rolled back"
HEADS_DIFFER: Final = "heads differ from the file copy"
CHAIN_BROKEN: Final = "head chain broken"

RECENT_HEADS: Final = 10
"""The integrity page re-checks this many of the newest heads (signature, chain,
consistency proof between neighbours) on every view."""
UNSEALED_CAP: Final = 100_000
"""Unsealed events are counted up to this many (an index range scan on seq)."""
SKIPPED_SHOWN: Final = 100
"""Skipped seq ranges listed on the integrity page, newest first."""
CHECK_BATCH: Final = store.EVENT_BATCH


# --- Keys -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyConfig:
    """The configured public keys, or why there are none usable."""

    public_keys: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)
    error: str | None = None  # a configured key file that cannot be used
    # Subtree hashes proven against a root signed by these keys, for later page checks.
    proven: store.ProvenHashes = field(default_factory=store.ProvenHashes, compare=False)

    @property
    def configured(self) -> bool:
        return bool(self.public_keys) or self.error is not None


def load_key_config(paths: Sequence[str | os.PathLike[str]]) -> KeyConfig:
    """Load AUDIT_PUBLIC_KEY_FILES; a bad file is a message, never an exception."""
    if not paths:
        return KeyConfig()
    try:
        return KeyConfig(keys.load_public_keys(paths))
    except keys.KeyFileError as exc:
        return KeyConfig(error=f"{exc} (AUDIT_PUBLIC_KEY_FILES)")


# --- Results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    kind: str  # one of the phrases above
    detail: str
    seq: int | None = None
    event_id: str | None = None

    def __str__(self) -> str:
        where = []
        if self.event_id:
            where.append(f"event {self.event_id}")
        if self.seq is not None:
            where.append(f"seq {self.seq}")
        return (", ".join(where) + ": " if where else "") + f"{self.kind} ({self.detail})"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "detail": self.detail,
            "seq": self.seq,
            "event_id": self.event_id,
        }


@dataclass(frozen=True)
class Seal:
    """One event's seal, as a badge says it."""

    status: str  # "sealed" | "unsealed" | "problem" | "unverified"
    head_number: int | None = None  # the first head that sealed it
    sealed_at: datetime | None = None
    leaf_index: int | None = None


NOT_CONFIGURED: Final = "not_configured"
UNAVAILABLE: Final = "unavailable"
NOTHING_SEALED: Final = "nothing_sealed"
OK: Final = "ok"
FAILED: Final = "failed"


@dataclass(frozen=True)
class EventsCheck:
    """The check of some events against the newest head (module docstring).

    ``status``: ``not_configured`` (no public key set: no badge is shown), ``unavailable``
    (the check could not be made; ``message`` says why), ``nothing_sealed`` (no head yet),
    ``ok`` (every sealed event proven) or ``failed`` (``findings`` name each problem).
    """

    status: str
    message: str = ""
    head: TreeHead | None = None
    seals: Mapping[str, Seal] = field(default_factory=dict)
    findings: tuple[Finding, ...] = ()
    verified: int = 0
    unsealed: int = 0

    @property
    def ok(self) -> bool:
        return self.status in (OK, NOTHING_SEALED)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "message": self.message,
            "head": None if self.head is None else head_to_json(self.head),
            "verified": self.verified,
            "unsealed": self.unsealed,
            "problems": [finding.to_json() for finding in self.findings],
        }


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def _signature_finding(head: TreeHead, public_keys: Mapping[str, Ed25519PublicKey]) -> Finding:
    reason = (
        "its signature does not verify with the configured key"
        if head.key_id in public_keys
        else f"it is signed by key {head.key_id}, which is not among the configured public keys"
    )
    return Finding(SIGNATURE_INVALID, f"head #{head.number}: {reason}")


_e = store.queries.audit_events.c


def _rows_by_id(conn: Connection, event_ids: Sequence[str]) -> list[Any]:
    ids = [uuid.UUID(str(value)) for value in event_ids]
    return conn.execute(
        sa.select(*store.EVENT_LEAF_COLUMNS).where(
            _e.event_id == sa.any_(sa.bindparam("ids", ids, ARRAY(UUID(as_uuid=True))))
        )
    ).all()


def check_events(conn: Connection, event_ids: Iterable[str], key_config: KeyConfig) -> EventsCheck:
    """Check the events ``event_ids`` (a page's worth) against the newest signed head.

    Runs in a savepoint of the caller's transaction, so a failed statement (a role that
    cannot read the tree tables, a time-out) leaves the page's transaction usable.
    """
    event_ids = [str(value) for value in event_ids]
    if not key_config.configured:
        return EventsCheck(NOT_CONFIGURED, "integrity not configured (AUDIT_PUBLIC_KEY_FILES)")
    if key_config.error:
        return EventsCheck(UNAVAILABLE, key_config.error)
    try:
        with conn.begin_nested():
            return _check_events(conn, event_ids, key_config)
    except sa.exc.DBAPIError as exc:
        return EventsCheck(UNAVAILABLE, f"the sealed log could not be read: {_first_line(exc)}")
    except store.TreeDataMissing as exc:
        return EventsCheck(UNAVAILABLE, f"the proofs could not be built: {exc}")


def _check_events(conn: Connection, event_ids: Sequence[str], key_config: KeyConfig) -> EventsCheck:
    public_keys = key_config.public_keys
    newest = store.latest_head(conn)
    rows = _rows_by_id(conn, event_ids) if event_ids else []
    present = {str(row[1]) for row in rows}
    findings: list[Finding] = [
        Finding(DELETED, "the event is no longer in audit_events", event_id=event_id)
        for event_id in event_ids
        if event_id not in present
    ]
    if newest is None:
        seals = {str(row[1]): Seal("unsealed") for row in rows}
        return EventsCheck(
            FAILED if findings else NOTHING_SEALED,
            "nothing is sealed yet",
            None,
            seals,
            tuple(findings),
            unsealed=len(rows),
        )
    if not verify_signature(newest, public_keys):
        # Fail closed: no event is called sealed on the word of an unsigned head.
        findings.insert(0, _signature_finding(newest, public_keys))
        seals = {str(row[1]): Seal("unverified") for row in rows}
        return EventsCheck(FAILED, "", newest, seals, tuple(findings))
    return _prove_rows(conn, rows, newest, findings, key_config.proven)


def _prove_rows(
    conn: Connection,
    rows: Sequence[Any],
    newest: TreeHead,
    findings: list[Finding],
    proven: store.ProvenHashes | None = None,
) -> EventsCheck:
    sealed = store.sealed_leaves(conn, [int(row[0]) for row in rows])
    leaves = {seq: stored for seq, (stored, _first) in sealed.items()}
    first_heads = {seq: first for seq, (_stored, first) in sealed.items()}
    seals: dict[str, Seal] = {}
    to_prove: list[tuple[Any, bytes, store.StoredLeaf]] = []
    unsealed = 0
    last_seq = newest.last_seq if newest.last_seq is not None else 0
    for row in rows:
        seq, event_id = int(row[0]), str(row[1])
        stored = leaves.get(seq)
        if stored is None:
            if seq <= last_seq:
                findings.append(
                    Finding(
                        MISSING_FROM_LOG,
                        f"seq {seq} is within the sealed range (up to {last_seq}, head "
                        f"#{newest.number}) but no event was sealed there: the row was "
                        "added later",
                        seq,
                        event_id,
                    )
                )
                seals[event_id] = Seal("problem")
            else:
                unsealed += 1
                seals[event_id] = Seal("unsealed")
        elif stored.leaf_index >= newest.tree_size:
            findings.append(
                Finding(
                    HEAD_ROLLED_BACK,
                    f"sealed as leaf {stored.leaf_index}, beyond the newest head #"
                    f"{newest.number} (tree size {newest.tree_size}): heads were removed",
                    seq,
                    event_id,
                )
            )
            seals[event_id] = Seal("problem")
        else:
            to_prove.append((row, store.event_leaf_hash(row), stored))
    reader = store.TreeReader(conn, proven)
    proofs = reader.inclusion_proofs(
        [stored.leaf_index for _row, _hash, stored in to_prove], newest.tree_size
    )
    verified = 0
    for row, recomputed, stored in to_prove:
        seq, event_id = int(row[0]), str(row[1])
        proof = proofs[stored.leaf_index]
        if merkle.verify_inclusion(
            recomputed, stored.leaf_index, newest.tree_size, proof, newest.root
        ):
            reader.remember(stored.leaf_index, proof)
            verified += 1
            first = first_heads.get(seq)
            seals[event_id] = Seal(
                "sealed",
                first.head_number if first else newest.number,
                first.sealed_at if first else newest.sealed_at,
                stored.leaf_index,
            )
            continue
        seals[event_id] = Seal("problem")
        if recomputed != stored.leaf_hash or str(stored.event_id) != event_id:
            detail = f"its leaf no longer matches leaf {stored.leaf_index} of head #{newest.number}"
            if str(stored.event_id) != event_id:
                detail += f" (sealed there as event {stored.event_id})"
            findings.append(Finding(CONTENT_DIFFERS, detail, seq, event_id))
        else:
            findings.append(
                Finding(
                    TREE_ALTERED,
                    f"its proof from the stored tree does not reach the signed root of head "
                    f"#{newest.number} (audit_tree_leaves or audit_tree_nodes was altered)",
                    seq,
                    event_id,
                )
            )
    return EventsCheck(
        FAILED if findings else OK,
        "",
        newest,
        seals,
        tuple(findings),
        verified=verified,
        unsealed=unsealed,
    )


# --- A whole selection (the PDF cover) ----------------------------------------------------------


@dataclass(frozen=True)
class SelectionCheck:
    """The check of an export's events against the newest head, for the PDF cover."""

    status: str
    message: str = ""
    head: TreeHead | None = None
    events: int = 0
    verified: int = 0
    unsealed: int = 0
    findings: tuple[Finding, ...] = ()
    more_findings: int = 0


MAX_SELECTION_FINDINGS: Final = 20


def check_selection(
    conn: Connection, statement: sa.Select, key_config: KeyConfig, *, cap: int
) -> SelectionCheck:
    """Check every event of ``statement`` (a selection over audit_events; only its WHERE
    matters) against the newest head: each row's leaf recomputed and compared with its
    stored leaf, then all stored leaves at once against the signed root with one Merkle
    multiproof (:func:`.bundle.multiproof_nodes`). Selections over ``cap`` events are not
    checked (the proof bundle of the CSV is the way to prove those)."""
    if not key_config.configured:
        return SelectionCheck(NOT_CONFIGURED, "integrity not configured (AUDIT_PUBLIC_KEY_FILES)")
    if key_config.error:
        return SelectionCheck(UNAVAILABLE, key_config.error)
    try:
        with conn.begin_nested():
            return _check_selection(conn, statement, key_config.public_keys, cap)
    except sa.exc.DBAPIError as exc:
        return SelectionCheck(UNAVAILABLE, f"the sealed log could not be read: {_first_line(exc)}")
    except store.TreeDataMissing as exc:
        return SelectionCheck(UNAVAILABLE, f"the proofs could not be built: {exc}")


def _check_selection(
    conn: Connection,
    statement: sa.Select,
    public_keys: Mapping[str, Ed25519PublicKey],
    cap: int,
) -> SelectionCheck:
    newest = store.latest_head(conn)
    if newest is None:
        return SelectionCheck(NOTHING_SEALED, "nothing is sealed yet")
    if not verify_signature(newest, public_keys):
        return SelectionCheck(
            FAILED, "", newest, findings=(_signature_finding(newest, public_keys),)
        )
    rows_statement = statement.with_only_columns(*store.EVENT_LEAF_COLUMNS).order_by(None)
    count = conn.execute(
        sa.select(sa.func.count()).select_from(rows_statement.limit(cap + 1).subquery())
    ).scalar_one()
    if count > cap:
        return SelectionCheck(
            "not_checked",
            f"more than {cap:,} events: not checked here; prove the CSV with its .proof.json",
            newest,
            events=count,
        )
    last_seq = newest.last_seq if newest.last_seq is not None else 0
    findings: list[Finding] = []
    more = 0
    leaf_hashes: dict[int, bytes] = {}
    events = unsealed = 0

    def add(finding: Finding) -> None:
        nonlocal more
        if len(findings) < MAX_SELECTION_FINDINGS:
            findings.append(finding)
        else:
            more += 1

    rows = conn.execute(rows_statement).all()
    for start in range(0, len(rows), CHECK_BATCH):
        batch = rows[start : start + CHECK_BATCH]
        leaves = store.stored_leaves(conn, [int(row[0]) for row in batch])
        for row in batch:
            events += 1
            seq, event_id = int(row[0]), str(row[1])
            stored = leaves.get(seq)
            if stored is None or stored.leaf_index >= newest.tree_size:
                if seq <= last_seq:
                    add(Finding(MISSING_FROM_LOG, "not sealed at its seq", seq, event_id))
                else:
                    unsealed += 1
                continue
            if store.event_leaf_hash(row) != stored.leaf_hash:
                add(Finding(CONTENT_DIFFERS, f"leaf {stored.leaf_index}", seq, event_id))
                continue
            leaf_hashes[stored.leaf_index] = stored.leaf_hash
    if leaf_hashes:
        indices = sorted(leaf_hashes)
        reader = store.TreeReader(conn)
        reader.prefetch_multiproof(indices, newest.tree_size)
        nodes = bundle.multiproof_nodes(indices, newest.tree_size, reader.subtree_hash)
        if bundle.root_from_multiproof(leaf_hashes, newest.tree_size, nodes) != newest.root:
            add(
                Finding(
                    TREE_ALTERED,
                    f"the stored leaves of these events do not give the signed root of head "
                    f"#{newest.number}",
                )
            )
            leaf_hashes.clear()
    return SelectionCheck(
        FAILED if findings or more else OK,
        "",
        newest,
        events=events,
        verified=len(leaf_hashes),
        unsealed=unsealed,
        findings=tuple(findings),
        more_findings=more,
    )


def provable_through_column(table: Any) -> sa.ColumnElement[Any] | None:
    """:func:`provable_through` as a column a page's own rows query carries (labelled
    ``provable_through``), or None where it cannot: tree tables the role cannot read, or a
    distributed table (Citus plans a coordinator's table in a distributed statement apart;
    the look-up stays its own statement there)."""
    if not getattr(table, "has_tree", False) or getattr(table, "distributed", False):
        return None
    return store.sealed_through_column().label("provable_through")


TREE_UNREADABLE: Final = (
    "the tamper-evidence tables cannot be read by the dashboard's database role "
    "(an administrator runs audit-dashboard init-db)"
)


class TreeUnreadable(Exception):
    """The tree tables cannot be read by this role (missing, or a REVOKE): no proof."""


def provable_through(conn: Connection, table: Any = None) -> int | None:
    """The seq an export with a proof can go up to (:func:`.store.sealed_through`), or None
    when nothing is sealed. Raises :class:`TreeUnreadable` when the tree tables cannot be
    read (no proof offered then, and the page says why); any other failure (a cancelled
    statement, a lost connection) is raised as it is, like the page's other reads.

    With the :class:`dashboard.db.TableInfo` found at start-up (``table``), tree tables the
    role cannot read are known and not tried, and the look-up is one statement with no
    SAVEPOINT around it: call it after the request's other reads (a refusal despite the
    start-up check, say a REVOKE since, leaves the transaction aborted). Without it, a
    SAVEPOINT keeps a refusal from spoiling the transaction.
    """
    if table is not None:
        if not getattr(table, "has_tree", False):
            raise TreeUnreadable
        try:
            return store.sealed_through(conn)
        except sa.exc.ProgrammingError as exc:  # permission denied, or no such table
            raise TreeUnreadable from exc
    try:
        with conn.begin_nested():
            return store.sealed_through(conn)
    except sa.exc.ProgrammingError as exc:
        raise TreeUnreadable from exc


# --- One event's proof (the JSON API) --------------------------------------------------------


@dataclass(frozen=True)
class EventProof:
    """Everything an outsider needs to check one event with the pure core."""

    event_id: str
    status: str  # "sealed" | "unsealed" | "deleted" | "not_found" | "problem"
    check: EventsCheck | None = None
    seq: int | None = None
    leaf_index: int | None = None
    leaf_hash: bytes | None = None
    proof: Sequence[bytes] = ()
    head: TreeHead | None = None
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "status": self.status,
            "message": self.message,
            "seq": self.seq,
            "leaf_format": "audit-leaf-v1",
            "leaf_index": self.leaf_index,
            "leaf_hash": None if self.leaf_hash is None else self.leaf_hash.hex(),
            "tree_size": None if self.head is None else self.head.tree_size,
            "inclusion_proof": [node.hex() for node in self.proof],
            "head": None if self.head is None else head_to_json(self.head),
            "check": None if self.check is None else self.check.to_json(),
        }


def event_proof(conn: Connection, event_id: uuid.UUID, key_config: KeyConfig) -> EventProof:
    """The inclusion proof of one event in the newest head, with the dashboard's own check
    of it. An event id that is not in audit_events but was sealed is named deleted."""
    check = check_events(conn, [str(event_id)], key_config)
    ident = str(event_id)
    try:
        with conn.begin_nested():
            newest = store.latest_head(conn)
            row = conn.execute(sa.select(_e.seq).where(_e.event_id == event_id)).first()
            if row is None:
                return _deleted_or_unknown(conn, event_id, newest, check)
            seq = int(row.seq)
            if newest is None:
                return EventProof(ident, "unsealed", check, seq, message="nothing is sealed yet")
            found = store.inclusion_proofs(conn, [seq], newest).get(seq)
    except sa.exc.DBAPIError as exc:
        return EventProof(
            ident, "problem", check, message=f"the sealed log could not be read: {_first_line(exc)}"
        )
    except store.TreeDataMissing as exc:
        return EventProof(ident, "problem", check, message=f"the proof could not be built: {exc}")
    if found is None:
        status = "problem" if check.findings else "unsealed"
        return EventProof(
            ident, status, check, seq, head=newest, message=_check_message(check, ident)
        )
    index, leaf_hash, proof = found
    seal = check.seals.get(ident)
    status = "sealed" if seal is not None and seal.status == "sealed" else "problem"
    return EventProof(
        ident,
        status,
        check,
        seq,
        index,
        leaf_hash,
        proof,
        newest,
        _check_message(check, ident),
    )


def _check_message(check: EventsCheck, event_id: str) -> str:
    named = [str(finding) for finding in check.findings if finding.event_id in (None, event_id)]
    if named:
        return "; ".join(named)
    return check.message


def _deleted_or_unknown(
    conn: Connection, event_id: uuid.UUID, newest: TreeHead | None, check: EventsCheck
) -> EventProof:
    # audit_tree_leaves has no index on event_id (the notary's writes stay lean); this look-up
    # is bounded by the statement timeout and only runs for an id audit_events lacks.
    leaf_row = conn.execute(
        sa.select(
            store.tree_leaves.c.seq, store.tree_leaves.c.leaf_index, store.tree_leaves.c.leaf_hash
        )
        .where(store.tree_leaves.c.event_id == event_id)
        .limit(1)
    ).first()
    ident = str(event_id)
    if leaf_row is None:
        return EventProof(ident, "not_found", None, message=f"No event with id {ident}.")
    return EventProof(
        ident,
        "deleted",
        check,
        int(leaf_row.seq),
        int(leaf_row.leaf_index),
        bytes(leaf_row.leaf_hash),
        head=newest,
        message=f"event {ident}, seq {leaf_row.seq}: {DELETED} "
        f"(sealed as leaf {leaf_row.leaf_index})",
    )


# --- The integrity page --------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadFacts:
    head: TreeHead
    signature_ok: bool


@dataclass(frozen=True)
class IntegrityStatus:
    status: str  # not_configured | unavailable | nothing_sealed | ok | failed
    message: str = ""
    newest: HeadFacts | None = None
    heads_checked: int = 0
    unsealed: int = 0
    unsealed_capped: bool = False
    oldest_unsealed_at: datetime | None = None
    oldest_unsealed_seq: int | None = None
    skipped: tuple[tuple[int, int, int], ...] = ()  # (head number, low, high)
    findings: tuple[Finding, ...] = ()
    last_verification: results_file.VerificationResult | None = None
    verification_note: str = ""
    heads_file_note: str = ""
    key_ids: tuple[str, ...] = ()


def integrity_status(
    conn: Connection,
    key_config: KeyConfig,
    *,
    heads_path: Path | None = None,
    results_path: Path | None = None,
) -> IntegrityStatus:
    """The facts of the integrity page: the newest head and what re-checking the newest
    :data:`RECENT_HEADS` heads finds, notary lag, skipped seqs, the heads file's last head
    against the table, and the last full ``verify`` (from its results file)."""
    verification, verification_note = _last_verification(results_path)
    if not key_config.configured:
        return IntegrityStatus(
            NOT_CONFIGURED,
            "integrity not configured: set AUDIT_PUBLIC_KEY_FILES to the notary's public key",
            last_verification=verification,
            verification_note=verification_note,
        )
    if key_config.error:
        return IntegrityStatus(
            UNAVAILABLE,
            key_config.error,
            last_verification=verification,
            verification_note=verification_note,
        )
    public_keys = key_config.public_keys
    try:
        with conn.begin_nested():
            return _integrity_status(conn, public_keys, heads_path, verification, verification_note)
    except sa.exc.DBAPIError as exc:
        return IntegrityStatus(
            UNAVAILABLE,
            f"the sealed log could not be read: {_first_line(exc)}",
            last_verification=verification,
            verification_note=verification_note,
            key_ids=tuple(sorted(public_keys)),
        )
    except store.TreeDataMissing as exc:
        return IntegrityStatus(
            UNAVAILABLE,
            f"the consistency proofs could not be built: {exc}",
            last_verification=verification,
            verification_note=verification_note,
            key_ids=tuple(sorted(public_keys)),
        )


def _last_verification(path: Path | None) -> tuple[results_file.VerificationResult | None, str]:
    if path is None:
        return None, (
            "no verification results file configured (AUDIT_VERIFY_RESULTS_FILE): run "
            "`audit-dashboard verify` with it set to see its result here"
        )
    try:
        result = results_file.last_result(path)
    except results_file.ResultsFileError as exc:
        return None, str(exc)
    if result is None:
        return None, f"no verification recorded in {path} yet"
    return result, ""


def _integrity_status(
    conn: Connection,
    public_keys: Mapping[str, Ed25519PublicKey],
    heads_path: Path | None,
    verification: results_file.VerificationResult | None,
    verification_note: str,
) -> IntegrityStatus:
    findings: list[Finding] = []
    recent = list(
        reversed(
            [
                store.head_from_row(row)
                for row in conn.execute(
                    sa.select(*store._HEAD_COLUMNS)
                    .order_by(store.tree_heads.c.number.desc())
                    .limit(RECENT_HEADS + 1)
                ).all()
            ]
        )
    )
    heads_note, file_findings = _compare_heads_file(
        conn, heads_path, recent[-1] if recent else None
    )
    findings += file_findings
    if not recent:
        return IntegrityStatus(
            FAILED if findings else NOTHING_SEALED,
            "nothing is sealed yet: run `audit-dashboard seal` or the notary",
            findings=tuple(findings),
            last_verification=verification,
            verification_note=verification_note,
            heads_file_note=heads_note,
            key_ids=tuple(sorted(public_keys)),
        )
    newest = recent[-1]
    checked = recent[1:] if len(recent) > RECENT_HEADS else recent
    reader = store.TreeReader(conn)
    previous = recent[0] if len(recent) > RECENT_HEADS else None
    for current in checked:
        if not verify_signature(current, public_keys):
            findings.append(_signature_finding(current, public_keys))
        if previous is not None:
            findings += _chain_findings(previous, current, reader)
        elif current.number == 1 and current.previous_hash is not None:
            findings.append(Finding(CHAIN_BROKEN, "head #1 claims a predecessor"))
        previous = current
    unsealed, capped, oldest_seq, oldest_at = _notary_lag(conn, newest)
    return IntegrityStatus(
        FAILED if findings else OK,
        "",
        HeadFacts(newest, verify_signature(newest, public_keys)),
        heads_checked=len(checked),
        unsealed=unsealed,
        unsealed_capped=capped,
        oldest_unsealed_at=oldest_at,
        oldest_unsealed_seq=oldest_seq,
        skipped=_skipped_ranges(conn),
        findings=tuple(findings),
        last_verification=verification,
        verification_note=verification_note,
        heads_file_note=heads_note,
        key_ids=tuple(sorted(public_keys)),
    )


def _chain_findings(
    previous: TreeHead, current: TreeHead, reader: store.TreeReader
) -> list[Finding]:
    if current.number != previous.number + 1:
        return [
            Finding(
                HEAD_ROLLED_BACK,
                f"heads #{previous.number + 1}..#{current.number - 1} are missing from "
                "audit_tree_heads",
            )
        ]
    if current.previous_hash != head_hash(previous):
        return [
            Finding(
                CHAIN_BROKEN, f"head #{current.number} does not chain to head #{previous.number}"
            )
        ]
    if current.tree_size < previous.tree_size:
        return [
            Finding(CHAIN_BROKEN, f"head #{current.number} is smaller than head #{previous.number}")
        ]
    if previous.tree_size == 0 or previous.tree_size == current.tree_size:
        return []
    proof = merkle.consistency_proof(previous.tree_size, current.tree_size, reader.subtree_hash)
    if merkle.verify_consistency(
        previous.tree_size, current.tree_size, previous.root, current.root, proof
    ):
        return []
    return [
        Finding(
            TREE_ALTERED,
            f"the stored tree does not prove head #{current.number} consistent with head "
            f"#{previous.number} (audit_tree_leaves or audit_tree_nodes was altered, or the "
            "log was rewritten)",
        )
    ]


def _compare_heads_file(
    conn: Connection, path: Path | None, newest: TreeHead | None
) -> tuple[str, list[Finding]]:
    if path is None:
        return (
            "no heads file configured (AUDIT_NOTARY_HEADS_FILE): heads removed from the end "
            "of the table cannot be noticed here",
            [],
        )
    try:
        last = heads_file.last_head(path)
    except heads_file.HeadsFileError as exc:
        return f"the heads file cannot be read: {exc}", []
    if last is None:
        if newest is not None:
            return f"the heads file {path} is missing or empty", []
        return "", []
    if newest is None or last.number > newest.number:
        where = f"ends at #{newest.number}" if newest else "is empty"
        return "", [
            Finding(
                HEAD_ROLLED_BACK,
                f"the heads file {path} holds head #{last.number} but audit_tree_heads {where}",
            )
        ]
    kept = newest if newest.number == last.number else store.head(conn, last.number)
    if kept is None or head_hash(kept) != head_hash(last):
        return "", [
            Finding(
                HEADS_DIFFER,
                f"head #{last.number} in audit_tree_heads differs from the heads file {path}",
            )
        ]
    note = f"the heads file's last head is #{last.number}, as in the table"
    if last.number < newest.number:
        note = (
            f"the heads file's last head is #{last.number} (the table has #{newest.number}; "
            "the notary appends after each commit)"
        )
    return note, []


def _notary_lag(
    conn: Connection, newest: TreeHead
) -> tuple[int, bool, int | None, datetime | None]:
    after = newest.last_seq if newest.last_seq is not None else 0
    limited = sa.select(sa.literal(1)).where(_e.seq > after).limit(UNSEALED_CAP + 1).subquery()
    count = int(conn.execute(sa.select(sa.func.count()).select_from(limited)).scalar() or 0)
    if not count:
        return 0, False, None, None
    # audit_events_seq_key: the first unsealed event in seq order (the oldest, but for
    # out-of-order commits, which the horizon rule waits for).
    oldest = conn.execute(
        sa.select(_e.seq, _e.created_at).where(_e.seq > after).order_by(_e.seq).limit(1)
    ).first()
    return min(count, UNSEALED_CAP), count > UNSEALED_CAP, int(oldest.seq), oldest.created_at


def _skipped_ranges(conn: Connection) -> tuple[tuple[int, int, int], ...]:
    h = store.tree_heads.c
    rows = conn.execute(
        sa.select(h.number, h.skipped_seqs)
        .where(h.skipped_seqs != sa.cast(sa.literal("[]"), h.skipped_seqs.type))
        .order_by(h.number.desc())
        .limit(SKIPPED_SHOWN)
    ).all()
    ranges: list[tuple[int, int, int]] = []
    for row in rows:
        for low, high in row.skipped_seqs:
            ranges.append((int(row.number), int(low), int(high)))
    return tuple(ranges[:SKIPPED_SHOWN])
