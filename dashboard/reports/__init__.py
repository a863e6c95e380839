"""Reports: the streamed CSV export, the PDF compliance report and the record history report.

The modules split along what they may touch, so the rules that make a report trustworthy
can be tested without a database or Flask:

- :mod:`.csv_format` (pure): the CSV columns, RFC 4180 cells, OWASP CSV-injection
  neutralisation, file names. It is also the reference the SQL projection is tested against.
- :mod:`.fonts` and :mod:`.pdf` (pure, ReportLab only): PDF layout from plain values.
- :mod:`.csv_export` (database, no Flask): the ``COPY (SELECT ...) TO STDOUT`` projection and
  the constant-memory stream with its running SHA-256.
- :mod:`.builder` (database, no Flask): one consistent snapshot per report (high-water mark,
  digest, summary, listing), shared by the web views and the ``report`` command.
- :mod:`.cli`: ``audit-dashboard report`` for cron (atomic output, exit codes, progress).
"""
