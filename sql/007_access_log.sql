-- Who looked at what: append-only like the events themselves. The dashboard writes it only
-- through log_access(), which audit_access_logger may EXECUTE and do nothing else with.
CREATE TABLE IF NOT EXISTS public.audit_access_log (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    username       TEXT NOT NULL,
    role           TEXT,
    action         TEXT NOT NULL,
    route          TEXT,
    filters        JSONB,
    aggregate_ids  TEXT[],
    row_count      BIGINT,
    export_digest  TEXT,
    outcome        TEXT NOT NULL DEFAULT 'ok',
    client_ip      TEXT,
    reason         TEXT
);
ALTER TABLE public.audit_access_log OWNER TO audit_owner;

CREATE INDEX IF NOT EXISTS audit_access_log_at_idx ON public.audit_access_log (at);
CREATE INDEX IF NOT EXISTS audit_access_log_aggregate_idx
    ON public.audit_access_log USING gin (aggregate_ids);

CREATE OR REPLACE TRIGGER audit_access_log_no_update_delete
    BEFORE UPDATE OR DELETE ON public.audit_access_log
    FOR EACH ROW EXECUTE FUNCTION public.audit_events_reject_change();
CREATE OR REPLACE TRIGGER audit_access_log_no_truncate
    BEFORE TRUNCATE ON public.audit_access_log
    FOR EACH STATEMENT EXECUTE FUNCTION public.audit_events_reject_change();

CREATE OR REPLACE FUNCTION public.log_access(
    p_username      TEXT,
    p_role          TEXT,
    p_action        TEXT,
    p_route         TEXT,
    p_filters       JSONB,
    p_aggregate_ids TEXT[],
    p_row_count     BIGINT,
    p_export_digest TEXT,
    p_outcome       TEXT,
    p_client_ip     TEXT,
    p_reason        TEXT
) RETURNS BIGINT
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_id BIGINT;
BEGIN
    INSERT INTO public.audit_access_log (username, role, action, route, filters, aggregate_ids,
                                         row_count, export_digest, outcome, client_ip, reason)
    VALUES (p_username, p_role, p_action, p_route, p_filters, p_aggregate_ids,
            p_row_count, p_export_digest, coalesce(p_outcome, 'ok'), p_client_ip, p_reason)
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;
ALTER FUNCTION public.log_access(TEXT, TEXT, TEXT, TEXT, JSONB, TEXT[], BIGINT, TEXT, TEXT, TEXT, TEXT)
    OWNER TO audit_owner;
REVOKE ALL ON FUNCTION public.log_access(TEXT, TEXT, TEXT, TEXT, JSONB, TEXT[], BIGINT, TEXT, TEXT, TEXT, TEXT)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.log_access(TEXT, TEXT, TEXT, TEXT, JSONB, TEXT[], BIGINT, TEXT, TEXT, TEXT, TEXT)
    TO audit_access_logger;

REVOKE ALL ON public.audit_access_log FROM PUBLIC;
REVOKE ALL ON public.audit_access_log FROM audit_writer, audit_access_logger, audit_reader;
-- Auditors browse the access log through the dashboard's read-only connection.
GRANT SELECT ON public.audit_access_log TO audit_reader;
