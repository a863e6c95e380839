-- Least privilege on the table: the reader may SELECT, nobody else gets anything directly.
REVOKE ALL ON public.audit_events FROM PUBLIC;
REVOKE ALL ON public.audit_events FROM audit_writer, audit_access_logger;
REVOKE ALL ON public.audit_events FROM audit_reader;
GRANT SELECT ON public.audit_events TO audit_reader;
