-- Partitions of audit_events (issue 13): the same immutability and grants on every
-- partition, present and future. A no-op on the plain table (it has no partitions).
--
-- Row triggers of a partitioned table are cloned by PostgreSQL onto every partition, also
-- onto partitions created or attached later, so sql/003's UPDATE/DELETE trigger covers them
-- all. A statement trigger is not cloned: `TRUNCATE audit_events_p2026_12` would bypass the
-- parent's TRUNCATE trigger. So every partition gets its own, here (present partitions), in
-- `audit-dashboard partitions ensure` (the partitions it makes) and, where init-db runs as a
-- superuser, in an event trigger (partitions anybody makes by hand, or pg_partman does).
--
-- Grants: nobody gets anything on a partition directly. The reader reads through the
-- parent (where partition pruning applies); the writer inserts through insert_audit_event().

-- Guard one partition: TRUNCATE trigger, owner, no direct privileges. Each step only when
-- needed, so that guarding an already guarded partition takes no lock at all.
CREATE OR REPLACE FUNCTION public.audit_events_guard_partition(part regclass) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    grantee text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgrelid = part AND tgname = 'audit_events_no_truncate') THEN
        EXECUTE format(
            'CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON %s '
            'FOR EACH STATEMENT EXECUTE FUNCTION public.audit_events_reject_change()', part);
    END IF;
    IF (SELECT relowner FROM pg_class WHERE oid = part) <> 'audit_owner'::regrole THEN
        EXECUTE format('ALTER TABLE %s OWNER TO audit_owner', part);
    END IF;
    FOR grantee IN
        SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END
        FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
        LEFT JOIN pg_roles r ON r.oid = a.grantee
        WHERE c.oid = part AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('REVOKE ALL ON %s FROM %s', part, grantee);
    END LOOP;
END
$$;

-- Guard every partition (any level) of audit_events; returns how many there are.
CREATE OR REPLACE FUNCTION public.audit_events_guard_partitions() RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    part regclass;
    n integer := 0;
BEGIN
    FOR part IN
        SELECT relid FROM pg_partition_tree('public.audit_events') WHERE level > 0
    LOOP
        PERFORM public.audit_events_guard_partition(part);
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;

-- The event trigger's function: after CREATE TABLE / ALTER TABLE, guard what became a
-- partition of audit_events. Only partitions of audit_events are touched, so the DDL of
-- other tables in this database is never slowed or refused.
CREATE OR REPLACE FUNCTION public.audit_events_guard_new_partitions() RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    root regclass := to_regclass('public.audit_events');
    command record;
BEGIN
    IF root IS NULL THEN
        RETURN;
    END IF;
    FOR command IN
        SELECT objid FROM pg_event_trigger_ddl_commands() WHERE object_type = 'table'
    LOOP
        IF command.objid = root THEN
            -- ALTER TABLE audit_events ATTACH PARTITION ...: the attached table is not named.
            PERFORM public.audit_events_guard_partitions();
        ELSIF EXISTS (SELECT 1 FROM pg_partition_tree(root)
                      WHERE relid = command.objid AND level > 0) THEN
            PERFORM public.audit_events_guard_partition(command.objid::regclass);
        END IF;
    END LOOP;
END
$$;

ALTER FUNCTION public.audit_events_guard_partition(regclass) OWNER TO audit_owner;
ALTER FUNCTION public.audit_events_guard_partitions() OWNER TO audit_owner;
ALTER FUNCTION public.audit_events_guard_new_partitions() OWNER TO audit_owner;
REVOKE ALL ON FUNCTION public.audit_events_guard_partition(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.audit_events_guard_partitions() FROM PUBLIC;
REVOKE ALL ON FUNCTION public.audit_events_guard_new_partitions() FROM PUBLIC;

-- Event triggers need a superuser; without one, `partitions ensure` (which re-guards every
-- partition each run) is what covers partitions made by other means.
DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       AND NOT EXISTS (SELECT 1 FROM pg_event_trigger
                       WHERE evtname = 'audit_events_guard_new_partitions') THEN
        CREATE EVENT TRIGGER audit_events_guard_new_partitions ON ddl_command_end
            WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE')
            EXECUTE FUNCTION public.audit_events_guard_new_partitions();
    END IF;
END
$$;

SELECT public.audit_events_guard_partitions();
