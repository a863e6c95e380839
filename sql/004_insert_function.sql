-- The writer's only door. SECURITY DEFINER runs as audit_owner; the fixed search_path stops
-- a caller from shadowing anything the function names.
CREATE OR REPLACE FUNCTION public.insert_audit_event(
    p_aggregate_id UUID,
    p_event_type   VARCHAR,
    p_payload      JSONB,
    p_metadata     JSONB
) RETURNS UUID
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_id UUID;
BEGIN
    IF p_aggregate_id IS NULL OR p_event_type IS NULL OR p_payload IS NULL THEN
        RAISE EXCEPTION 'aggregate_id, event_type and payload are required'
            USING ERRCODE = 'not_null_violation';
    END IF;
    -- Take a transaction id BEFORE the INSERT draws its seq: from then on every snapshot
    -- counts this transaction as running, so the notary (dashboard/integrity/notary.py, "the
    -- horizon rule") can tell that a seq it sees drawn may still commit. Without it the xid
    -- is only assigned when the row is written, just after nextval().
    PERFORM pg_catalog.pg_current_xact_id();
    INSERT INTO public.audit_events (aggregate_id, event_type, payload, metadata)
    VALUES (p_aggregate_id, p_event_type, p_payload, p_metadata)
    RETURNING event_id INTO new_id;
    RETURN new_id;
END
$$;
ALTER FUNCTION public.insert_audit_event(UUID, VARCHAR, JSONB, JSONB) OWNER TO audit_owner;
REVOKE ALL ON FUNCTION public.insert_audit_event(UUID, VARCHAR, JSONB, JSONB) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.insert_audit_event(UUID, VARCHAR, JSONB, JSONB) TO audit_writer;
