"""Bounded work on hostile values, without a database: how long the record PDF, the
record page's state panel and the JSON loader take as one value grows.

Before the bounds (issue 9): a record PDF of one 1 MB string took 67 s (0.5 MB: 17 s,
quadratic) and 10 MB never finished; a 100,000-item array made a 140 MB record page.
Now each figure should stay flat as the value grows::

    python benchmarks/bench_bounded.py

This is a script, not a test: it prints figures.
"""

from __future__ import annotations

import io
import json
import time
from datetime import UTC, datetime

from dashboard.diff import Change
from dashboard.events import Event
from dashboard.jsonlimits import loads_within_depth
from dashboard.jsonpointer import MISSING
from dashboard.masking import NO_MASKING
from dashboard.replay import fold_events
from dashboard.reports import pdf
from dashboard.views import present


def _timed(action) -> tuple[float, object]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def record_pdf(size: int) -> tuple[float, int]:
    value = "x" * size
    facts = pdf.ReportFacts(
        title="Record history",
        organisation="Example",
        facts=[("Record", "r")],
        event_count=1,
        csv_sha256="0" * 64,
        csv_filename="r.csv",
    )
    row = pdf.ListingRow(
        created_at=datetime(2024, 1, 1, tzinfo=UTC),
        seq=1,
        aggregate_id="r",
        event_type="USER_CREATED",
        actor="a@example.com",
        changes=(Change("", "add", MISSING, {"bio": value}),),
    )
    out = io.BytesIO()
    seconds, _ = _timed(
        lambda: pdf.render_record_report(out, facts, [row], {"bio": value}, state_label="Now")
    )
    return seconds, len(out.getvalue())


def state_page(items: int) -> float:
    event = Event("e", 1, "r", "USER_CREATED", {"items": list(range(items))}, {}, datetime.now(UTC))
    (step,) = fold_events([event])
    seconds, _ = _timed(lambda: present.state_fields(step, NO_MASKING, "UTC", 0, 201))
    return seconds


def main() -> None:
    print("record PDF of one string value (render only)")
    for size in (500_000, 1_000_000, 10_000_000):
        seconds, length = record_pdf(size)
        print(f"  {size / 1e6:>5.1f} MB: {seconds:6.2f} s, {length:,} bytes of PDF")
    print("record page state panel, first page of 200 fields")
    for items in (1_000, 100_000, 1_000_000):
        print(f"  {items:>9,} items: {state_page(items) * 1000:7.1f} ms")
    print("JSON loader (depth check + decode)")
    for label, text in (
        ("1,200 deep", '{"a": ' * 1200 + "1" + "}" * 1200),
        ("10,000 deep", "[" * 10_000 + "]" * 10_000),
        ("100,000 small objects", "[" + ", ".join('{"id": 1}' for _ in range(100_000)) + "]"),
    ):
        seconds, _ = _timed(lambda text=text: loads_within_depth(text))
        try:
            plain, _ = _timed(lambda text=text: json.loads(text))
            versus = f"(json.loads: {plain * 1000:.1f} ms)"
        except RecursionError:
            versus = "(json.loads: RecursionError)"
        print(f"  {label:>22}: {seconds * 1000:7.1f} ms {versus}")


if __name__ == "__main__":
    main()
