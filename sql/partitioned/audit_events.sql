-- audit_events range-partitioned by created_at (`init-db --partition monthly`). Applied by
-- dashboard/partitions.py before sql/*.sql, and only while no audit_events exists; the
-- numbered files then add the triggers, grants, indexes and functions exactly as on the
-- plain table (002's IF NOT EXISTS finds this table and changes nothing).
-- (002 also gives it to audit_owner: the roles do not exist yet on a new cluster.)
--
-- Keys: PostgreSQL enforces a unique constraint of a partitioned table per partition, so it
-- must contain the partition key. Enforced: (event_id, created_at) and (seq, created_at).
-- Not enforced by an index: event_id alone and seq alone (see README, "Partitioned table").
CREATE TABLE public.audit_events (
    event_id     UUID NOT NULL DEFAULT gen_random_uuid(),
    aggregate_id UUID NOT NULL,
    event_type   VARCHAR(50) NOT NULL,
    payload      JSONB NOT NULL,
    metadata     JSONB,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    seq          BIGINT GENERATED ALWAYS AS IDENTITY,
    CONSTRAINT audit_events_pkey PRIMARY KEY (event_id, created_at),
    CONSTRAINT audit_events_seq_key UNIQUE (seq, created_at)
) PARTITION BY RANGE (created_at);
