-- Roles of the audit trail. Idempotent: each role is created only when missing, and its
-- attributes are (re)asserted every run, so running this file twice changes nothing.
--   audit_owner          NOLOGIN; owns the table, the functions and the triggers.
--   audit_writer         may only EXECUTE insert_audit_event(); no table privilege at all.
--   audit_reader         the dashboard's role: SELECT only, read-only by default, bounded.
--   audit_access_logger  may only EXECUTE log_access() (see 007_access_log.sql).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'audit_owner') THEN
        CREATE ROLE audit_owner NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'audit_writer') THEN
        CREATE ROLE audit_writer LOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'audit_reader') THEN
        CREATE ROLE audit_reader LOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'audit_access_logger') THEN
        CREATE ROLE audit_access_logger LOGIN;
    END IF;
END
$$;

ALTER ROLE audit_owner NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
-- NOLOGIN, except in a database of a Citus cluster: there the coordinator reaches the
-- workers as audit_owner (sql/citus/cluster.sql gives it LOGIN), and Citus would carry a
-- NOLOGIN from any database of the cluster to every worker.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        ALTER ROLE audit_owner NOLOGIN;
    END IF;
END
$$;
ALTER ROLE audit_writer NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS CONNECTION LIMIT 50;
ALTER ROLE audit_reader NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS CONNECTION LIMIT 20;
ALTER ROLE audit_access_logger NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS CONNECTION LIMIT 10;

-- The reader cannot write even if a grant slips through: every transaction starts read-only,
-- and no statement or idle transaction can hold the big table for long.
ALTER ROLE audit_reader SET default_transaction_read_only = on;
ALTER ROLE audit_reader SET statement_timeout = '30s';
ALTER ROLE audit_reader SET idle_in_transaction_session_timeout = '60s';
ALTER ROLE audit_access_logger SET statement_timeout = '5s';
ALTER ROLE audit_access_logger SET idle_in_transaction_session_timeout = '10s';

-- Nobody but the owner may create objects in the schema (PostgreSQL < 15 let PUBLIC do it).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
