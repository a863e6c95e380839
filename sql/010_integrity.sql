-- Tamper evidence (issue 10): a Merkle tree (RFC 9162) over audit_events in seq order,
-- extended by the notary, whose signed tree heads are checked by `audit-dashboard verify`.
-- Idempotent like every file here.
--
--   audit_notary  LOGIN. SELECT on audit_events and on its seq sequence (the horizon rule
--                 reads the sequence's last value, see dashboard/integrity/notary.py);
--                 SELECT and INSERT on the three append-only tables below; nothing else.
--
-- Why the notary also writes the leaves and nodes (and not only the heads): an inclusion
-- proof at 10,000,000 events needs ~24 subtree hashes, which cannot be recomputed from the
-- events on every page view. A Certificate Transparency log stores its leaves for the same
-- reason. Widening the notary's grants costs nothing in trust: nothing in these tables is
-- believed on its own. `verify` rebuilds the tree from the stored leaf hashes and compares
-- it with every signed root, then compares each event's recomputed leaf with the stored one;
-- a changed leaf, node or frontier gives a root that no signature covers.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'audit_notary') THEN
        CREATE ROLE audit_notary LOGIN;
    END IF;
END
$$;
ALTER ROLE audit_notary NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS CONNECTION LIMIT 5;
-- One pass reads the new events in keyset batches (each one short) and holds its
-- transaction while it hashes them between batches.
ALTER ROLE audit_notary SET statement_timeout = '60s';
ALTER ROLE audit_notary SET idle_in_transaction_session_timeout = '5min';
ALTER ROLE audit_notary SET lock_timeout = '60s';

-- One row per signed tree head. Every column but `frontier` is covered by the signature
-- (dashboard/integrity/heads.py signed_bytes); the frontier (the compact range of the tree
-- at tree_size, RFC 9162 2.1.1-style) lets the next run extend the tree without reading it
-- again, and is checked against the signed root before it is used.
CREATE TABLE IF NOT EXISTS public.audit_tree_heads (
    number        BIGINT PRIMARY KEY CHECK (number >= 1),
    tree_size     BIGINT NOT NULL CHECK (tree_size >= 0),
    root          BYTEA NOT NULL,
    last_seq      BIGINT,
    skipped_seqs  JSONB NOT NULL DEFAULT '[]',  -- [[low, high], ...] inclusive ranges
    sealed_at     TIMESTAMPTZ NOT NULL,
    previous_hash BYTEA,
    key_id        TEXT NOT NULL,
    signature     BYTEA NOT NULL,
    frontier      JSONB NOT NULL
);
-- Heads only grow: "which head first covers leaf i" is the smallest tree_size above i.
CREATE UNIQUE INDEX IF NOT EXISTS audit_tree_heads_tree_size_idx
    ON public.audit_tree_heads (tree_size);

-- The tree's leaves, in seq order: leaf_index 0, 1, 2 ... Unique seq: one leaf per event.
-- event_id is kept so that `verify` can name an event that was deleted or moved.
CREATE TABLE IF NOT EXISTS public.audit_tree_leaves (
    leaf_index BIGINT PRIMARY KEY CHECK (leaf_index >= 0),
    seq        BIGINT NOT NULL UNIQUE,
    event_id   UUID NOT NULL,
    leaf_hash  BYTEA NOT NULL
);

-- Complete, aligned subtree hashes: the node at (level, node_index) covers leaves
-- [node_index * 2^level, (node_index + 1) * 2^level). Only every fourth level is stored
-- (4, 8, 12 ...; level 0 is audit_tree_leaves): any subtree hash then needs at most 8 stored
-- hashes, for 1/15 of the leaves' rows (dashboard/integrity/store.py NODE_LEVEL_STRIDE).
CREATE TABLE IF NOT EXISTS public.audit_tree_nodes (
    level      SMALLINT NOT NULL CHECK (level > 0),
    node_index BIGINT NOT NULL CHECK (node_index >= 0),
    hash       BYTEA NOT NULL,
    PRIMARY KEY (level, node_index)
);

ALTER TABLE public.audit_tree_heads OWNER TO audit_owner;
ALTER TABLE public.audit_tree_leaves OWNER TO audit_owner;
ALTER TABLE public.audit_tree_nodes OWNER TO audit_owner;

-- Append-only, like the events (sql/003): the triggers bind the owner and superusers too.
CREATE OR REPLACE TRIGGER audit_tree_heads_no_update_delete
    BEFORE UPDATE OR DELETE ON public.audit_tree_heads
    FOR EACH ROW EXECUTE FUNCTION public.audit_events_reject_change();
CREATE OR REPLACE TRIGGER audit_tree_heads_no_truncate
    BEFORE TRUNCATE ON public.audit_tree_heads
    FOR EACH STATEMENT EXECUTE FUNCTION public.audit_events_reject_change();
CREATE OR REPLACE TRIGGER audit_tree_leaves_no_update_delete
    BEFORE UPDATE OR DELETE ON public.audit_tree_leaves
    FOR EACH ROW EXECUTE FUNCTION public.audit_events_reject_change();
CREATE OR REPLACE TRIGGER audit_tree_leaves_no_truncate
    BEFORE TRUNCATE ON public.audit_tree_leaves
    FOR EACH STATEMENT EXECUTE FUNCTION public.audit_events_reject_change();
CREATE OR REPLACE TRIGGER audit_tree_nodes_no_update_delete
    BEFORE UPDATE OR DELETE ON public.audit_tree_nodes
    FOR EACH ROW EXECUTE FUNCTION public.audit_events_reject_change();
CREATE OR REPLACE TRIGGER audit_tree_nodes_no_truncate
    BEFORE TRUNCATE ON public.audit_tree_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION public.audit_events_reject_change();

REVOKE ALL ON public.audit_tree_heads, public.audit_tree_leaves, public.audit_tree_nodes
    FROM PUBLIC;
REVOKE ALL ON public.audit_tree_heads, public.audit_tree_leaves, public.audit_tree_nodes
    FROM audit_writer, audit_access_logger, audit_reader, audit_notary;
GRANT SELECT, INSERT ON public.audit_tree_heads, public.audit_tree_leaves, public.audit_tree_nodes
    TO audit_notary;
GRANT SELECT ON public.audit_tree_heads, public.audit_tree_leaves, public.audit_tree_nodes
    TO audit_reader;

REVOKE ALL ON public.audit_events FROM audit_notary;
GRANT SELECT ON public.audit_events TO audit_notary;
-- pg_sequence_last_value() needs SELECT on the sequence; SELECT does not allow nextval().
DO $$
BEGIN
    EXECUTE format(
        'GRANT SELECT ON SEQUENCE %s TO audit_notary',
        pg_get_serial_sequence('public.audit_events', 'seq')
    );
END
$$;
