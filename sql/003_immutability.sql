-- Append-only, enforced by triggers: REVOKE alone does not bind the table owner, a trigger
-- does (for superusers too, unless they deliberately turn triggers off).
CREATE OR REPLACE FUNCTION public.audit_events_reject_change() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION '% is not allowed on %: audit events are append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Record a new event instead of changing an old one.';
END
$$;
ALTER FUNCTION public.audit_events_reject_change() OWNER TO audit_owner;

CREATE OR REPLACE TRIGGER audit_events_no_update_delete
    BEFORE UPDATE OR DELETE ON public.audit_events
    FOR EACH ROW EXECUTE FUNCTION public.audit_events_reject_change();

CREATE OR REPLACE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON public.audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION public.audit_events_reject_change();
