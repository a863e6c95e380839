"""Tamper evidence: a verifiable log over ``audit_events``.

The events, in ``seq`` order, are the leaves of an RFC 9162 Merkle tree. A notary (role
``audit_notary``) extends the tree with newly committed events and signs each *tree head*
with an Ed25519 key that never enters the database; the heads are kept in the append-only
``audit_tree_heads`` table and in a JSON-lines file outside it. Anyone holding the public
key can then check that an event, a page or an export is what was sealed.

Pure modules (no Flask, no database): :mod:`.leaf` (the canonical leaf bytes of one row),
:mod:`.merkle` (tree hashes, inclusion and consistency proofs), :mod:`.heads` (signed
heads), :mod:`.keys` (key files), :mod:`.bundle` (the offline proof of a CSV export).
"""
