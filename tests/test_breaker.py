"""The client's own bound on waiting for the database, and the breaker that remembers a
database that stopped answering. (The real thing, a stopped server under gunicorn, is in
test_faults.py.)"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from dashboard import db
from dashboard.breaker import Breaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_closed_breaker_lets_everyone_through():
    breaker = Breaker(2.0, Clock())
    assert breaker.allow() and breaker.allow()
    assert not breaker.is_open and breaker.down_for() == 0


def test_an_open_breaker_refuses_until_the_cooldown_then_lets_one_trial_through():
    clock = Clock()
    breaker = Breaker(2.0, clock)
    breaker.failed()
    assert breaker.is_open
    assert not breaker.allow()
    clock.now += 1.9
    assert not breaker.allow()
    assert breaker.down_for() == pytest.approx(1.9)
    clock.now += 0.2
    assert breaker.allow() and breaker.is_trial()  # the one trial ...
    assert not breaker.allow() and not breaker.is_trial()  # ... and nobody else
    breaker.failed()  # the trial failed: another cooldown
    clock.now += 1.0
    assert not breaker.allow()
    clock.now += 1.1
    assert breaker.allow()
    breaker.succeeded()
    assert not breaker.is_open and breaker.allow() and breaker.allow()


def test_the_trial_is_per_thread():
    import threading

    clock = Clock()
    breaker = Breaker(1.0, clock)
    breaker.failed()
    clock.now += 1.5
    assert breaker.allow() and breaker.is_trial()
    seen = []
    thread = threading.Thread(target=lambda: seen.append(breaker.is_trial()))
    thread.start()
    thread.join()
    assert seen == [False]


def test_a_statement_the_server_does_not_end_is_ended_by_the_client(seeded_db):
    """With the server's own limit switched off, pg_sleep stands for a server that went
    silent: the client gives up at its bound, closes the connection, opens the breaker,
    and the next connect is refused at once."""
    engine = db.make_engine(seeded_db.reader, pool_size=1, statement_timeout_ms=200)
    try:
        with db.connect(engine) as conn:
            conn.execute(sa.text("SET statement_timeout = 0"))
            with pytest.raises(sa.exc.OperationalError) as caught:
                conn.execute(sa.text("SELECT pg_sleep(60)"))
            assert isinstance(caught.value.orig, db.DatabaseNotAnswering)
            assert db.is_connection_problem(caught.value)
            assert "did not answer within 1.2 s" in str(caught.value.orig)
            assert conn.invalidated
        with pytest.raises(db.DatabaseUnavailable, match="has not answered"):
            db.connect(engine)
    finally:
        engine.dispose()


def test_a_transactions_own_limit_moves_the_clients_bound_and_ends_with_it(seeded_db):
    engine = db.make_engine(seeded_db.reader, pool_size=1, statement_timeout_ms=200)
    try:
        with db.connect(engine) as conn, conn.begin():
            db.set_timeout(conn, 5000)
            driver = conn.connection.driver_connection
            assert driver.wait_limit_s == pytest.approx(6.0)
            # A statement longer than the default bound but inside the transaction's own.
            conn.execute(sa.text("SELECT pg_sleep(1.5)"))
        with db.connect(engine) as conn:
            assert conn.connection.driver_connection.wait_limit_s == pytest.approx(1.2)
    finally:
        engine.dispose()


def test_the_cli_engines_keep_waiting(seeded_db):
    """Seeding and init-db run long statements: no client bound without a timeout."""
    engine = db.make_engine(seeded_db.admin, pool_size=1)
    try:
        with engine.connect() as conn:
            assert not isinstance(conn.connection.driver_connection, db.BoundedConnection)
    finally:
        engine.dispose()
