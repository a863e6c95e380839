"""How fast the tamper-evidence log is: sealing, full verification, one record's proofs.

Measures, on a fresh database of ``--events`` seeded events (created here, dropped after):

* **seal**: one ``seal_once`` pass over every event, as audit_notary: events per second
  (target: at least 5,000 inserted events/s, so the notary keeps up);
* **raw scan**: the same rows ``verify`` reads (seq order, payload and metadata as text),
  fetched through psycopg and thrown away: what the database and the driver alone cost;
* **verify**: ``verify_log`` over every event and head, beside the raw scan (target: 10M
  events in under 3 minutes);
* **record proofs**: a record page's work for one record of ~50 events: seal status,
  inclusion proofs from the stored tree, and each proof checked against the signed root
  with the leaf recomputed from the row (target: under 20 ms);
* **page check**: the same through :func:`dashboard.integrity.check.check_events`, what the
  record page runs (rows re-read by id, the head's signature checked, badges) for a page of
  such a record, up to 50 events (target: under 20 ms).

Run::

    python benchmarks/bench_integrity.py --embedded /tmp/pg --database postgres --events 1000000
    python benchmarks/bench_integrity.py --admin-url postgresql://postgres@/postgres --events N

This is a script, not a test: it prints figures and exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import sqlalchemy as sa
from _database import add_database_arguments, admin_url_of
from psycopg import sql

from dashboard import db
from dashboard.integrity import check, keys, merkle, store
from dashboard.integrity.notary import seal_once
from dashboard.integrity.verify import verify_log
from dashboard.schema import apply_schema
from dashboard.seed import seed_events

SEAL_TARGET = 5_000  # events/s
VERIFY_TARGET_PER_10M = 180.0  # s
PROOF_TARGET_MS = 20.0


def _database_url(admin_url: str, name: str, user: str | None = None, password: str = "") -> str:
    url = sa.engine.make_url(admin_url).set(database=name, drivername="postgresql+psycopg")
    if user:
        url = url.set(username=user, password=password)
    return url.render_as_string(hide_password=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_database_arguments(parser)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="verify's worker processes"
    )
    args = parser.parse_args(argv)
    name = f"audit_bench_integrity_{secrets.token_hex(3)}"
    with admin_url_of(args) as admin_url:
        with psycopg.connect(db.libpq_url(admin_url), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            return _run(admin_url, name, args.events, args.jobs)
        finally:
            with psycopg.connect(db.libpq_url(admin_url), autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _run(admin_url: str, name: str, events: int, jobs: int) -> int:
    passwords = {"audit_reader": secrets.token_hex(8), "audit_notary": secrets.token_hex(8)}
    admin = _database_url(admin_url, name)
    apply_schema(admin, passwords=passwords)
    started = time.perf_counter()
    seed_events(admin, events=events, seed=1, method="copy")
    print(f"seeded {events:,} events in {time.perf_counter() - started:.1f} s", flush=True)
    with psycopg.connect(db.libpq_url(admin), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE audit_events")
    notary_url = _database_url(admin_url, name, "audit_notary", passwords["audit_notary"])
    reader_url = _database_url(admin_url, name, "audit_reader", passwords["audit_reader"])
    missed = []
    with tempfile.TemporaryDirectory() as tmp:
        keys.generate_keypair(Path(tmp) / "k.pem", Path(tmp) / "k.pub.pem")
        private = keys.load_private_key(Path(tmp) / "k.pem")
        public = keys.load_public_keys([Path(tmp) / "k.pub.pem"])
        heads_path = Path(tmp) / "heads.jsonl"

        engine = db.make_engine(notary_url, pool_size=1)
        started = time.perf_counter()
        result = seal_once(engine, private, heads_path, settle=0, wait=0)
        seal_s = time.perf_counter() - started
        engine.dispose()
        rate = result.events / seal_s
        print(f"seal:    {result.events:,} events in {seal_s:.1f} s = {rate:,.0f} events/s "
              f"(target >= {SEAL_TARGET:,})")  # fmt: skip
        if rate < SEAL_TARGET:
            missed.append("seal")

        scan_s = _raw_scan(reader_url)
        reader = db.make_engine(reader_url, pool_size=1)
        repeatable = reader.connect().execution_options(isolation_level="REPEATABLE READ")
        with repeatable as conn, conn.begin():
            conn.execute(sa.text("SET LOCAL statement_timeout = 0"))
            started = time.perf_counter()
            report = verify_log(conn, public, heads_path=heads_path, jobs=jobs)
            verify_s = time.perf_counter() - started
        assert report.clean, report.problems[:5]
        per_10m = verify_s * 10_000_000 / events
        print(f"raw scan of the same rows: {scan_s:.1f} s")
        print(f"verify:  {report.events:,} events in {verify_s:.1f} s with {jobs} job(s) "
              f"({per_10m:,.0f} s per 10M; target < {VERIFY_TARGET_PER_10M:.0f} s)")  # fmt: skip
        if per_10m > VERIFY_TARGET_PER_10M:
            missed.append("verify")

        aggregates = _records_of_30_to_80_events(reader)
        if not aggregates:
            print("record proofs, page check: no record of 30-80 events at this size; not "
                  "measured (give --events 300000 or more)")  # fmt: skip
        else:
            timings = _record_proofs(reader, aggregates)
            median = statistics.median(timings)
            print(f"record proofs (~50 events): median {median:.1f} ms, max {max(timings):.1f} "
                  f"ms (target < {PROOF_TARGET_MS:.0f} ms)")  # fmt: skip
            if median > PROOF_TARGET_MS:
                missed.append("proofs")
            timings = _page_checks(reader, check.KeyConfig(public), aggregates)
            median = statistics.median(timings)
            print(f"page check (check_events, 50 events): median {median:.1f} ms, "
                  f"max {max(timings):.1f} ms (target < {PROOF_TARGET_MS:.0f} ms)")  # fmt: skip
            if median > PROOF_TARGET_MS:
                missed.append("page check")
        reader.dispose()
    if missed:
        print("missed: " + ", ".join(missed))
        return 1
    return 0


def _raw_scan(reader_url: str) -> float:
    with psycopg.connect(db.libpq_url(reader_url)) as conn:
        conn.execute("SET statement_timeout = 0")
        started = time.perf_counter()
        with conn.cursor(name="scan") as cursor:
            cursor.itersize = 5000
            cursor.execute(
                "SELECT seq, event_id, aggregate_id, event_type, payload::text, "
                "metadata::text, created_at FROM audit_events ORDER BY seq"
            )
            for _row in cursor:
                pass
        return time.perf_counter() - started


def _records_of_30_to_80_events(reader) -> list:
    """Up to 20 records of 30-80 events: what a record page typically shows."""
    e = store.queries.audit_events.c
    with reader.connect() as conn:
        return (
            conn.execute(
                sa.select(e.aggregate_id)
                .group_by(e.aggregate_id)
                .having(sa.func.count().between(30, 80))
                .limit(20)
            )
            .scalars()
            .all()
        )


def _record_proofs(reader, aggregates) -> list[float]:
    """Seal status and checked inclusion proofs for records of about 50 events."""
    e = store.queries.audit_events.c
    timings = []
    for aggregate in aggregates:
        with reader.connect() as conn:
            rows = conn.execute(
                sa.select(*store.EVENT_LEAF_COLUMNS)
                .where(e.aggregate_id == aggregate)
                .order_by(e.created_at, e.seq)
            ).all()
            started = time.perf_counter()
            head = store.latest_head(conn)
            store.seal_status(conn, [row[0] for row in rows])
            proofs = store.inclusion_proofs(conn, [row[0] for row in rows], head)
            for row in rows:
                index, _stored, proof = proofs[row[0]]
                leaf = store.event_leaf_hash(row)
                assert merkle.verify_inclusion(leaf, index, head.tree_size, proof, head.root)
            timings.append((time.perf_counter() - started) * 1000)
    return timings


def _page_checks(reader, key_config, aggregates) -> list[float]:
    """check_events for the events of records of 30-80 events (at most 50: the record page's
    default page), as the record page runs it: scattered leaves, few shared proof nodes."""
    e = store.queries.audit_events.c
    with reader.connect() as conn:
        pages = [
            conn.execute(
                sa.select(e.event_id)
                .where(e.aggregate_id == aggregate)
                .order_by(e.created_at.desc(), e.seq.desc())
                .limit(50)
            )
            .scalars()
            .all()
            for aggregate in aggregates
        ]
    timings = []
    for ids in pages:
        with reader.connect() as conn, conn.begin():
            started = time.perf_counter()
            result = check.check_events(conn, [str(i) for i in ids], key_config)
            timings.append((time.perf_counter() - started) * 1000)
            assert result.status == check.OK and result.verified == len(ids), result
    return timings


if __name__ == "__main__":
    sys.exit(main())
