-- Sign-in state every app server shares, read on the primary.
--
-- Several dashboard processes and hosts behind a load balancer must agree on two things:
-- which sessions were signed out (`revokes_session`, 009) and how many sign-ins failed
-- from an address lately (the sign-in rate limit). Both are in the access log, which is
-- written on the primary. The reader may be a hot standby a few seconds (or, when it lags,
-- minutes) behind, so these are asked of the primary, through audit_access_logger — which
-- may still not read the log: each function answers one narrow question.
--
-- access_session_revoked(digest): whether a sign-out named that SHA-256 of a session id
-- (a holder of the digest learns only what the digest's owner already knows).
-- access_failed_sign_ins(client_ip, window_s, max_rows): how many seconds ago each of the
-- latest failed sign-ins from that address happened, newest first, within the window.

CREATE INDEX IF NOT EXISTS audit_access_log_failed_sign_in_idx
    ON public.audit_access_log (client_ip, at)
    WHERE action = 'sign_in' AND outcome = 'failed';

CREATE OR REPLACE FUNCTION public.access_session_revoked(p_digest TEXT) RETURNS BOOLEAN
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT 1 FROM public.audit_access_log WHERE revokes_session = p_digest)
$$;
ALTER FUNCTION public.access_session_revoked(TEXT) OWNER TO audit_owner;
REVOKE ALL ON FUNCTION public.access_session_revoked(TEXT) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.access_session_revoked(TEXT) TO audit_access_logger;

CREATE OR REPLACE FUNCTION public.access_failed_sign_ins(
    p_client_ip TEXT,
    p_window_s  INTEGER,
    p_max_rows  INTEGER
) RETURNS SETOF DOUBLE PRECISION
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    -- audit_access_log_failed_sign_in_idx: a few index entries per address.
    SELECT extract(epoch FROM clock_timestamp() - at)::double precision
    FROM public.audit_access_log
    WHERE action = 'sign_in' AND outcome = 'failed'
      AND client_ip = p_client_ip
      AND at > clock_timestamp() - make_interval(secs => least(greatest(p_window_s, 0), 86400 * 7))
    ORDER BY at DESC
    LIMIT least(greatest(p_max_rows, 0), 10000)
$$;
ALTER FUNCTION public.access_failed_sign_ins(TEXT, INTEGER, INTEGER) OWNER TO audit_owner;
REVOKE ALL ON FUNCTION public.access_failed_sign_ins(TEXT, INTEGER, INTEGER) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.access_failed_sign_ins(TEXT, INTEGER, INTEGER)
    TO audit_access_logger;
