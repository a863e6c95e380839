-- Distribute audit_events by aggregate_id (a record's whole history on one shard), after
-- sql/*.sql made it complete: create_distributed_table copies the table's indexes, grants,
-- owner and triggers onto every shard, the TRUNCATE statement trigger included (Citus
-- propagates a row trigger created later, but not a statement trigger: so the triggers
-- must be on the table before it is distributed). Needs citus.enable_unsafe_triggers (set
-- by dashboard/citus.py for the transaction). A no-op when it is distributed already.
SELECT create_distributed_table('public.audit_events', 'aggregate_id')
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition
                  WHERE logicalrelid = 'public.audit_events'::regclass);
