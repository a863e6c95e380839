-- The access-log page's other ways in, each newest first: one person's entries ("what did
-- this user look at?"), one kind of access ("who exported?"), one outcome ("who was
-- refused?"). Without them the page walks the log's primary key backwards, testing every
-- newer entry until it has a page: the whole log when fewer entries match than a page
-- holds, as exports and refusals usually are among page views
-- (dashboard/access_log/browsing.py, browse_statement). With them, a page is read from the
-- end of the matching index entries, however long the log.
CREATE INDEX IF NOT EXISTS audit_access_log_user_idx
    ON public.audit_access_log (username, id);
CREATE INDEX IF NOT EXISTS audit_access_log_action_idx
    ON public.audit_access_log (action, id);
CREATE INDEX IF NOT EXISTS audit_access_log_outcome_idx
    ON public.audit_access_log (outcome, id);
