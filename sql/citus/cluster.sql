-- What a Citus cluster changes in the roles and the writer's door, after sql/*.sql.
--
-- audit_owner LOGIN: the coordinator reaches the workers as the current role, and inside
-- insert_audit_event() (SECURITY DEFINER) that is audit_owner. It still has no password,
-- so it cannot sign in with one anywhere; let pg_hba.conf admit it only on the workers,
-- only from the coordinator (the README's "Deploying on a Citus cluster").
ALTER ROLE audit_owner LOGIN;

-- The writer's door, on the coordinator only. seq comes from the coordinator's identity
-- sequence (Citus evaluates nextval() there before it routes the row), which is the one
-- sequence the notary's horizon rule reads. A worker has a sequence of its own for the
-- same column, in another range (its group id << 48): an event written there would get a
-- seq far outside the global order. So the function refuses to run anywhere else.
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
    IF NOT pg_catalog.citus_is_coordinator() THEN
        RAISE EXCEPTION 'insert_audit_event() runs on the Citus coordinator only'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Point the writer at the coordinator: seq is drawn there.';
    END IF;
    IF p_aggregate_id IS NULL OR p_event_type IS NULL OR p_payload IS NULL THEN
        RAISE EXCEPTION 'aggregate_id, event_type and payload are required'
            USING ERRCODE = 'not_null_violation';
    END IF;
    -- As in sql/004: an xid before the seq is drawn (the notary's horizon rule).
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

-- The lists of the search and report forms: the distinct event types and declared kinds.
-- On one server a loose index scan (a recursive CTE, dashboard/queries.py) reads one index
-- entry per distinct value; Citus cannot run a recursive CTE over a distributed table, and a
-- plain DISTINCT would read every row of every shard. So the same loose scan runs on each
-- shard, on its own worker (run_command_on_shards, as the calling role: the reader), and
-- the coordinator merges the few values each returns. A shard that cannot be read (its
-- worker is down) is an error naming the node (SQLSTATE 08006, as Citus's own).
CREATE OR REPLACE FUNCTION public.audit_events_distinct_values(p_what TEXT, p_limit INTEGER)
RETURNS SETOF TEXT
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    value_of TEXT;
    condition TEXT;
    failed TEXT;
    results TEXT[];
    command TEXT;
BEGIN
    IF p_what = 'event_type' THEN
        value_of := 'event_type::text';  -- audit_events_type_time_idx
        condition := 'true';
    ELSIF p_what = 'aggregate_type' THEN
        value_of := $v$metadata ->> 'aggregate_type'$v$;  -- audit_events_aggregate_type_idx
        condition := $v$metadata ? 'aggregate_type'$v$;
    ELSE
        RAISE EXCEPTION 'audit_events_distinct_values: unknown %', p_what;
    END IF;
    -- run_command_on_shards format()s each shard's name in where %1$s stands.
    command := replace(replace(replace(replace(
        'WITH RECURSIVE v(value) AS ('
        ' SELECT min(VALUE) FROM SHARD WHERE COND'
        ' UNION ALL SELECT (SELECT min(VALUE) FROM SHARD WHERE COND AND VALUE > v.value)'
        ' FROM v WHERE v.value IS NOT NULL)'
        ' SELECT coalesce(json_agg(value), ''[]'') FROM'
        ' (SELECT value FROM v WHERE value IS NOT NULL LIMIT LIMIT_N) AS found',
        'VALUE', value_of), 'COND', condition), 'SHARD', '%1$s'),
        'LIMIT_N', greatest(least(p_limit, 100000), 0)::text);
    SELECT array_agg(r.result) FILTER (WHERE r.success),
           min(r.result) FILTER (WHERE NOT r.success)
      INTO results, failed
      FROM run_command_on_shards('public.audit_events', command) AS r;
    IF failed IS NOT NULL THEN
        RAISE EXCEPTION '%', failed USING ERRCODE = 'connection_failure';
    END IF;
    RETURN QUERY
        SELECT DISTINCT found.value
        FROM unnest(results) AS shard(result),
             LATERAL json_array_elements_text(shard.result::json) AS found(value)
        ORDER BY found.value
        LIMIT p_limit;
END
$$;
ALTER FUNCTION public.audit_events_distinct_values(TEXT, INTEGER) OWNER TO audit_owner;
REVOKE ALL ON FUNCTION public.audit_events_distinct_values(TEXT, INTEGER) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.audit_events_distinct_values(TEXT, INTEGER) TO audit_reader;
