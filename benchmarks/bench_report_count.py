"""What the report form's count costs (``queries.count_events``), against the planner's
estimate alone and the search page's outline (facets and chart in one scan) on the same
periods: the last 7, 30 and 90 days before the newest event, and the whole table.

``count_events`` counts exactly when the period is closed and the planner expects at most
``COUNT_MAX_ROWS`` rows, within the facet time limit (800 ms by default); this shows how
far below that limit an exact count stays as the period grows. The database must hold
``audit-dashboard seed`` events::

    python benchmarks/bench_report_count.py --admin-url postgresql://postgres@/audit_bench?host=/run
    python benchmarks/bench_report_count.py --embedded /work/bench-pg/pgdata --database audit_bench

This is a script, not a test: it prints figures (median of 5 runs, warm cache).
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import timedelta

import sqlalchemy as sa
from _database import add_database_arguments, admin_url_of

from dashboard import queries, shape
from dashboard.filters import EventFilter

RUNS = 5
TIMEOUT_MS = 60_000  # measure the work itself, not the page's limit


def _median_ms(action) -> tuple[float, object]:
    times, result = [], None
    for _ in range(RUNS):
        start = time.perf_counter()
        result = action()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_database_arguments(parser)
    args = parser.parse_args()
    with admin_url_of(args) as url:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            conn.begin()
            oldest, newest = queries.time_bounds(conn)
            if newest is None:
                raise SystemExit("The database holds no events; seed it first.")
            total = conn.execute(sa.text("SELECT count(*) FROM audit_events")).scalar()
            print(f"{total:,} events, {oldest:%Y-%m-%d} .. {newest:%Y-%m-%d}")
            end = newest + timedelta(microseconds=1)
            periods = [(f"{days} days", end - timedelta(days=days)) for days in (7, 30, 90)]
            periods.append(("whole table", oldest))
            print(
                f"{'period':>12} {'rows':>10} {'estimate':>10} {'EXPLAIN':>9} "
                f"{'count':>9} {'how':>9} {'outline':>9}"
            )
            for label, start in periods:
                f = EventFilter(time_from=start, time_to=end)
                explain_ms, estimate = _median_ms(lambda f=f: queries.estimated_rows(conn, f))
                count_ms, counted = _median_ms(
                    lambda f=f, e=estimate: queries.count_events(
                        conn, f, timeout_ms=TIMEOUT_MS, restore_timeout_ms=TIMEOUT_MS, estimate=e
                    )
                )
                _, width = shape.choose_bucket(start, end)
                outline_ms, _ = _median_ms(
                    lambda f=f, e=estimate, w=width: queries.count_search_shape(
                        conn,
                        f,
                        width=w,
                        timeout_ms=TIMEOUT_MS,
                        restore_timeout_ms=TIMEOUT_MS,
                        estimate=e,
                    )
                )
                rows = conn.execute(
                    sa.text("SELECT count(*) FROM audit_events WHERE created_at >= :s"),
                    {"s": start},
                ).scalar()
                print(
                    f"{label:>12} {rows:>10,} {estimate:>10,} {explain_ms:>7.1f}ms "
                    f"{count_ms:>7.1f}ms {counted.how:>9} {outline_ms:>7.1f}ms"
                )
        engine.dispose()


if __name__ == "__main__":
    main()
