-- The access-log page's other way in: one person's entries, newest first ("what did this
-- user look at?"). Without it the page walks the log's primary key backwards and tests
-- every newer entry's username until it has a page: the whole log for anyone with fewer
-- entries than a page holds (dashboard/access_log/browsing.py, browse_statement). With
-- it, a page is read from this index's end for that name, however long the log.
CREATE INDEX IF NOT EXISTS audit_access_log_user_idx
    ON public.audit_access_log (username, id);
