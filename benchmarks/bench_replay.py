"""How long replaying one busy record takes: fold 10,000 events and diff every step.

This is the work behind a record's history page and ``/api/events/<id>/changes``: rebuild
the state after each event and compute what each event changed. The record is an order
with a customer, a nested address and preferences, and an ``items`` array of objects with
ids; after the create, events are RFC 7396 merges touching nested fields, and a quarter of
them replace ``items`` (an item added, removed or its quantity changed), as a shop
back-office would write them. Payloads are decoded from JSON text, like rows from
PostgreSQL, so they share nothing with each other.

Run: ``python benchmarks/bench_replay.py [--events N] [--runs R]``. Prints the median of
the runs in milliseconds; the target is well under 100 ms for 10,000 events.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
import timeit
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from dashboard.diff import to_json_patch
from dashboard.events import Event
from dashboard.replay import changes_by_event, fold_events

CITIES = ["Paris", "Lyon", "Lille", "Nantes", "Bordeaux", "Toulouse"]
ACTORS = ["alice@example.com", "bob@example.com", "svc-billing", "svc-shipping"]
STATUSES = ["pending", "paid", "packed", "shipped", "delivered", "returned"]


def build_events(count: int, seed: int = 7) -> list[Event]:
    """A create followed by ``count - 1`` merges for one aggregate, one second apart."""
    rng = random.Random(seed)
    aggregate_id = str(uuid.uuid4())
    start = datetime(2024, 1, 1, tzinfo=UTC)
    items = [_item(rng, number) for number in range(1, 6)]
    next_item = 6
    initial = {
        "customer": {"name": "Ada Lovelace", "email": "ada@example.com", "phone": "+33 1 23"},
        "status": "pending",
        "address": {"street": "1 rue de la Paix", "city": "Paris", "zip": "75002", "country": "FR"},
        "preferences": {"language": "fr", "notifications": {"email": True, "sms": False}},
        "items": items,
        "total": _total(items),
        "notes": None,
    }
    payloads: list[tuple[str, Any]] = [("ORDER_CREATED", initial)]
    for _ in range(count - 1):
        roll = rng.random()
        if roll < 0.25:
            items = [dict(item) for item in items]
            change = rng.random()
            if change < 0.4 and len(items) < 12:
                items.insert(rng.randrange(len(items) + 1), _item(rng, next_item))
                next_item += 1
            elif change < 0.6 and len(items) > 2:
                items.pop(rng.randrange(len(items)))
            else:
                items[rng.randrange(len(items))]["qty"] = rng.randint(1, 9)
            payloads.append(("ORDER_ITEMS_CHANGED", {"items": items, "total": _total(items)}))
        elif roll < 0.45:
            payloads.append(("ORDER_STATUS_CHANGED", {"status": rng.choice(STATUSES)}))
        elif roll < 0.65:
            payloads.append(
                (
                    "ORDER_ADDRESS_CHANGED",
                    {
                        "address": {
                            "city": rng.choice(CITIES),
                            "zip": f"{rng.randint(1, 95):02d}000",
                        }
                    },
                )
            )
        elif roll < 0.8:
            flag = rng.choice(["email", "sms", "push"])
            payloads.append(
                (
                    "ORDER_PREFERENCES_CHANGED",
                    {"preferences": {"notifications": {flag: rng.random() < 0.5}}},
                )
            )
        elif roll < 0.9:
            payloads.append(("CUSTOMER_EMAIL_CHANGED", {"customer": {"email": _email(rng)}}))
        else:
            note = None if rng.random() < 0.3 else f"call before delivery #{rng.randint(1, 99)}"
            payloads.append(("ORDER_NOTE_SET", {"notes": note}))
    return [
        Event(
            event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            seq=number + 1,
            aggregate_id=aggregate_id,
            event_type=event_type,
            payload=json.loads(json.dumps(payload)),  # fresh objects, as from the database
            metadata={"actor": rng.choice(ACTORS), "ip": "203.0.113.7"},
            created_at=start + timedelta(seconds=number),
        )
        for number, (event_type, payload) in enumerate(payloads)
    ]


def _item(rng: random.Random, number: int) -> dict[str, Any]:
    return {
        "id": f"line-{number}",
        "sku": f"SKU-{rng.randint(1000, 9999)}",
        "qty": rng.randint(1, 5),
        "price": round(rng.uniform(2, 200), 2),
        "options": {"gift_wrap": rng.random() < 0.2, "color": rng.choice(["red", "blue"])},
    }


def _total(items: list[dict[str, Any]]) -> float:
    return round(sum(item["qty"] * item["price"] for item in items), 2)


def _email(rng: random.Random) -> str:
    return f"ada+{rng.randint(1, 9999)}@example.com"


def fold_and_diff(events: list[Event]) -> int:
    """The measured work: the state after each event and the changes each event made."""
    changed = 0
    for _step, changes in changes_by_event(events):
        changed += len(changes)
    return changed


def fold_and_diff_lean(events: list[Event]) -> int:
    """The same without provenance, as the reports fold (the record PDF's timeline)."""
    changed = 0
    for _step, changes in changes_by_event(events, provenance=False):
        changed += len(changes)
    return changed


def fold_only(events: list[Event]) -> int:
    return sum(1 for _step in fold_events(events))


def fold_diff_and_patch(events: list[Event]) -> int:
    return sum(len(to_json_patch(changes)) for _step, changes in changes_by_event(events))


def median_ms(work, events: list[Event], runs: int) -> tuple[float, float]:
    """Median wall-clock and CPU milliseconds of ``runs`` runs.

    CPU time is printed too because on a shared machine the wall clock also counts the
    time other processes held the CPU.
    """
    wall, cpu = [], []
    for _ in range(runs):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        work(events)
        wall.append((time.perf_counter() - wall_start) * 1000)
        cpu.append((time.process_time() - cpu_start) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    events = build_events(args.events)
    changes = fold_and_diff(events)
    final_state = list(fold_events(events))[-1]
    print(
        f"{len(events)} events, {changes} field changes, "
        f"{len(final_state.state['items'])} items and "
        f"{len(final_state.provenance)} attributed leaves at the end"
    )
    calibration = min(timeit.repeat("sum(range(100))", number=20_000, repeat=5)) / 20_000
    print(
        f"this machine runs sum(range(100)) in {calibration * 1e6:.2f} µs "
        "(a current desktop CPU: about 0.5 µs); scale the figures below accordingly"
    )
    print(f"median of {args.runs} runs          wall ms    CPU ms")
    for label, work in [
        ("fold only", fold_only),
        ("fold + diff each event", fold_and_diff),
        ("same, no provenance", fold_and_diff_lean),
        ("fold + diff + JSON Patch", fold_diff_and_patch),
    ]:
        wall, cpu = median_ms(work, events, args.runs)
        print(f"{label:<28}{wall:9.1f}{cpu:10.1f}")


if __name__ == "__main__":
    main()
