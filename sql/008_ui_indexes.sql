-- Indexes the investigation pages add to 006 (dashboard/queries.py names each one where it
-- is used). Checked with EXPLAIN on 10,000,000 events (benchmarks/bench_pages.py).

-- Records whose events never declare metadata.aggregate_type ("legacy" records) get their
-- kind from their create event's type (USER_CREATED -> USER). This finds them by create
-- type in record-id order, for the as-of list (keyset on the id) and the kind filter of a
-- search, without reading the create events of every record that does declare its kind.
-- Partial: only events without a declared kind (a small share where most events carry it).
CREATE INDEX IF NOT EXISTS audit_events_undeclared_kind_idx
    ON public.audit_events (event_type, aggregate_id)
    WHERE NOT coalesce(metadata ? 'aggregate_type', false);
