"""audit_events range-partitioned by month on ``created_at`` (issue 13).

``plan`` is pure (month ranges, partition names, which months are missing); ``store`` does
the database work (create the partitioned table, convert a plain one, ensure partitions);
``cli`` is ``audit-dashboard partitions ...``.
"""
