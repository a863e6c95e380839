-- The event table of the original write-up, plus `seq`: now() is the transaction start
-- time, so events written in one transaction share created_at; (created_at, seq) is the
-- total order every query and the replay use.
CREATE TABLE IF NOT EXISTS public.audit_events (
    event_id     UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    aggregate_id UUID NOT NULL,
    event_type   VARCHAR(50) NOT NULL,
    payload      JSONB NOT NULL,
    metadata     JSONB,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A table created by an older deployment gets seq added; existing rows are numbered in
-- their physical order, which is the best order a table without seq can offer.
-- (Only when missing: Citus refuses even a no-op ADD COLUMN IF NOT EXISTS of an identity
-- column on a distributed table, see sql/citus/.)
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute
                   WHERE attrelid = 'public.audit_events'::regclass AND attname = 'seq'
                     AND NOT attisdropped) THEN
        ALTER TABLE public.audit_events ADD COLUMN seq BIGINT GENERATED ALWAYS AS IDENTITY;
    END IF;
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'audit_events_seq_key') THEN
        ALTER TABLE public.audit_events ADD CONSTRAINT audit_events_seq_key UNIQUE (seq);
    END IF;
END
$$;

ALTER TABLE public.audit_events OWNER TO audit_owner;
