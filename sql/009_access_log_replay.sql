-- Entries written late, exactly once, and sessions ended at sign-out.
--
-- When the access log cannot be reached, the dashboard keeps what it could not write in a
-- local spool and writes it when the database is back. Each entry carries a UUID made by
-- the dashboard, so an entry sent twice (a write whose answer was lost, a crash between a
-- replay and the spool's truncation) is stored once; it keeps the time it happened (`at`)
-- and the database adds the time it arrived (`logged_at`: equal to `at` for an entry
-- written at once, NULL for rows older than this file). A sign-out names the session it
-- ends (`revokes_session`, a SHA-256 of the session id, never the id); the reader checks
-- it on every request of a password session.
ALTER TABLE public.audit_access_log ADD COLUMN IF NOT EXISTS entry_uuid UUID;
ALTER TABLE public.audit_access_log ADD COLUMN IF NOT EXISTS logged_at TIMESTAMPTZ;
ALTER TABLE public.audit_access_log ALTER COLUMN logged_at SET DEFAULT clock_timestamp();
ALTER TABLE public.audit_access_log ADD COLUMN IF NOT EXISTS revokes_session TEXT;

CREATE UNIQUE INDEX IF NOT EXISTS audit_access_log_entry_uuid_key
    ON public.audit_access_log (entry_uuid);
CREATE INDEX IF NOT EXISTS audit_access_log_revokes_session_idx
    ON public.audit_access_log (revokes_session) WHERE revokes_session IS NOT NULL;

CREATE OR REPLACE FUNCTION public.log_access(
    p_username        TEXT,
    p_role            TEXT,
    p_action          TEXT,
    p_route           TEXT,
    p_filters         JSONB,
    p_aggregate_ids   TEXT[],
    p_row_count       BIGINT,
    p_export_digest   TEXT,
    p_outcome         TEXT,
    p_client_ip       TEXT,
    p_reason          TEXT,
    p_entry_uuid      UUID,
    p_at              TIMESTAMPTZ,
    p_revokes_session TEXT
) RETURNS BIGINT
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_id BIGINT;
    arrived TIMESTAMPTZ := clock_timestamp();
BEGIN
    IF p_entry_uuid IS NULL THEN
        RAISE EXCEPTION 'log_access: every entry needs its entry_uuid';
    END IF;
    IF p_revokes_session IS NOT NULL AND p_revokes_session !~ '^[0-9a-f]{64}$' THEN
        RAISE EXCEPTION 'log_access: revokes_session must be a SHA-256 in hex';
    END IF;
    -- A late entry keeps its own time, but never one in the future.
    INSERT INTO public.audit_access_log (username, role, action, route, filters, aggregate_ids,
                                         row_count, export_digest, outcome, client_ip, reason,
                                         entry_uuid, at, logged_at, revokes_session)
    VALUES (p_username, p_role, p_action, p_route, p_filters, p_aggregate_ids,
            p_row_count, p_export_digest, coalesce(p_outcome, 'ok'), p_client_ip, p_reason,
            p_entry_uuid, least(coalesce(p_at, arrived), arrived), arrived, p_revokes_session)
    ON CONFLICT (entry_uuid) DO NOTHING
    RETURNING id INTO new_id;
    RETURN new_id;  -- NULL: this entry was already stored
END
$$;
ALTER FUNCTION public.log_access(TEXT, TEXT, TEXT, TEXT, JSONB, TEXT[], BIGINT, TEXT, TEXT, TEXT,
                                 TEXT, UUID, TIMESTAMPTZ, TEXT)
    OWNER TO audit_owner;
REVOKE ALL ON FUNCTION public.log_access(TEXT, TEXT, TEXT, TEXT, JSONB, TEXT[], BIGINT, TEXT,
                                         TEXT, TEXT, TEXT, UUID, TIMESTAMPTZ, TEXT)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.log_access(TEXT, TEXT, TEXT, TEXT, JSONB, TEXT[], BIGINT, TEXT,
                                            TEXT, TEXT, TEXT, UUID, TIMESTAMPTZ, TEXT)
    TO audit_access_logger;
