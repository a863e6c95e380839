-- audit_events for a Citus coordinator (`init-db --citus`). Applied by dashboard/citus.py
-- before sql/*.sql, and only while no audit_events exists; the numbered files then add
-- the triggers, grants, indexes and functions exactly as on the plain table (002's
-- IF NOT EXISTS finds this table), and sql/citus/distribute.sql distributes it at the end,
-- so that create_distributed_table copies all of them onto every shard.
--
-- Keys: Citus enforces a unique constraint of a distributed table per shard, so it must
-- contain the distribution column, aggregate_id. Enforced: (aggregate_id, event_id) and
-- (aggregate_id, seq). Not enforced by an index: event_id alone and seq alone (see README,
-- "Deploying on a Citus cluster", for why that is safe).
CREATE TABLE public.audit_events (
    event_id     UUID NOT NULL DEFAULT gen_random_uuid(),
    aggregate_id UUID NOT NULL,
    event_type   VARCHAR(50) NOT NULL,
    payload      JSONB NOT NULL,
    metadata     JSONB,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    seq          BIGINT GENERATED ALWAYS AS IDENTITY,
    CONSTRAINT audit_events_pkey PRIMARY KEY (aggregate_id, event_id),
    CONSTRAINT audit_events_seq_key UNIQUE (aggregate_id, seq)
);
