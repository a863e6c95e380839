"""sql/: immutability, least-privilege roles and idempotent init-db, on a real PostgreSQL."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest
from psycopg import errors as pg_errors

from dashboard.db import libpq_url
from dashboard.schema import apply_schema

INSERT_EVENT = (
    "INSERT INTO audit_events (aggregate_id, event_type, payload) VALUES (%s, 'X_CREATED', '{}')"
)


def connect(url: str, **kwargs) -> psycopg.Connection:
    return psycopg.connect(libpq_url(url), **kwargs)


@pytest.fixture(scope="module")
def db(make_database):
    urls = make_database("audit_schema")
    with connect(urls.admin) as conn:
        conn.execute(INSERT_EVENT, (uuid.uuid4(),))
    return urls


def sqlstate_of(url: str, statement: str, params=(), *, read_write: bool = False) -> str | None:
    """Run one statement as the URL's role; return the SQLSTATE it failed with, or None."""
    with connect(url) as conn:
        if read_write:
            # The reader starts read-only (25006); switch that off to reach the privilege check.
            conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
            conn.commit()
        try:
            conn.execute(statement, params)
        except psycopg.Error as exc:
            return exc.sqlstate
        finally:
            conn.rollback()
    return None


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET event_type = 'CHANGED'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
    ],
)
def test_events_cannot_be_changed_even_by_the_superuser(db, statement):
    with connect(db.admin) as conn:
        with pytest.raises(psycopg.Error, match="append-only") as caught:
            conn.execute(statement)
        assert caught.value.sqlstate == "42501"
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM audit_events").fetchone()[0] >= 1


def test_owner_role_is_bound_by_the_triggers_too(db):
    with connect(db.admin) as conn:
        conn.execute("SET ROLE audit_owner")
        with pytest.raises(pg_errors.InsufficientPrivilege, match="append-only"):
            conn.execute("DELETE FROM audit_events")


def test_reader_sessions_start_read_only(db):
    assert sqlstate_of(db.reader, INSERT_EVENT, (uuid.uuid4(),)) == "25006"


@pytest.mark.parametrize(
    "statement",
    [
        INSERT_EVENT,
        "UPDATE audit_events SET event_type = 'CHANGED'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
        "COPY audit_events (aggregate_id, event_type, payload) FROM STDIN",
        "CREATE TABLE public.sneaky (id int)",
        "SELECT insert_audit_event(gen_random_uuid(), 'X_CREATED', '{}', NULL)",
    ],
)
def test_reader_lacks_every_write_privilege(db, statement):
    params = (uuid.uuid4(),) if "%s" in statement else ()
    assert sqlstate_of(db.reader, statement, params, read_write=True) == "42501"


def test_reader_settings_are_on_the_role(db):
    with connect(db.reader) as conn:
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('default_transaction_read_only', 'statement_timeout', "
                "'idle_in_transaction_session_timeout')"
            ).fetchall()
        )
        limit = conn.execute(
            "SELECT rolconnlimit FROM pg_roles WHERE rolname = 'audit_reader'"
        ).fetchone()[0]
    assert settings["default_transaction_read_only"] == "on"
    assert int(settings["statement_timeout"]) > 0
    assert int(settings["idle_in_transaction_session_timeout"]) > 0
    assert limit > 0


@pytest.mark.parametrize(
    "statement",
    [
        INSERT_EVENT,
        "SELECT * FROM audit_events",
        "UPDATE audit_events SET event_type = 'CHANGED'",
        "CREATE TABLE public.sneaky (id int)",
    ],
)
def test_writer_has_no_direct_table_access(db, statement):
    params = (uuid.uuid4(),) if "%s" in statement else ()
    assert sqlstate_of(db.writer, statement, params) == "42501"


def test_writer_inserts_through_the_function_only(db):
    aggregate = uuid.uuid4()
    with connect(db.writer) as conn:
        event_id = conn.execute(
            "SELECT insert_audit_event(%s, %s, %s::jsonb, %s::jsonb)",
            (aggregate, "USER_CREATED", json.dumps({"name": "Zoë"}), json.dumps({"actor": "t"})),
        ).fetchone()[0]
    with connect(db.admin) as conn:
        row = conn.execute(
            "SELECT aggregate_id, event_type, payload, seq FROM audit_events WHERE event_id = %s",
            (event_id,),
        ).fetchone()
    assert row[0] == aggregate
    assert row[1] == "USER_CREATED"
    assert row[2] == {"name": "Zoë"}
    assert row[3] is not None


def test_function_rejects_a_missing_payload(db):
    with connect(db.writer) as conn, pytest.raises(pg_errors.NotNullViolation):
        conn.execute("SELECT insert_audit_event(%s, 'USER_CREATED', NULL, NULL)", (uuid.uuid4(),))


def test_events_in_one_transaction_share_created_at_and_order_by_seq(db):
    aggregate = uuid.uuid4()
    with connect(db.writer) as conn:
        for event_type in ("USER_CREATED", "USER_UPDATED", "USER_UPDATED"):
            conn.execute(
                "SELECT insert_audit_event(%s, %s, '{}'::jsonb, NULL)", (aggregate, event_type)
            )
    with connect(db.admin) as conn:
        rows = conn.execute(
            "SELECT created_at, seq FROM audit_events WHERE aggregate_id = %s ORDER BY seq",
            (aggregate,),
        ).fetchall()
    assert len({created_at for created_at, _ in rows}) == 1
    seqs = [seq for _, seq in rows]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3


def schema_fingerprint(url: str) -> dict:
    """Everything init-db defines, as catalog rows, so two runs can be compared."""
    queries = {
        "relations": "SELECT relname, relkind, relacl::text, pg_get_userbyid(relowner) "
        "FROM pg_class WHERE relnamespace = 'public'::regnamespace ORDER BY relname",
        "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
        "ORDER BY indexname",
        "triggers": "SELECT tgname, tgrelid::regclass::text, tgfoid::regprocedure::text, tgtype "
        "FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2",
        "functions": "SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid), "
        "p.proacl::text FROM pg_proc p WHERE pronamespace = 'public'::regnamespace "
        "ORDER BY 1",
        "roles": "SELECT rolname, rolcanlogin, rolconnlimit, rolconfig::text FROM pg_roles "
        "WHERE rolname LIKE 'audit%' ORDER BY rolname",
        "columns": "SELECT table_name, column_name, data_type, is_identity "
        "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2",
        "schema_acl": "SELECT nspacl::text FROM pg_namespace WHERE nspname = 'public'",
    }
    with connect(url) as conn:
        return {name: conn.execute(sql).fetchall() for name, sql in queries.items()}


def test_init_db_twice_changes_nothing(make_database):
    urls = make_database("audit_idempotent")
    before = schema_fingerprint(urls.admin)
    apply_schema(urls.admin)
    apply_schema(urls.admin)
    assert schema_fingerprint(urls.admin) == before
    assert {row[0] for row in before["relations"]} >= {"audit_events", "audit_access_log"}


def test_init_db_adds_seq_to_a_table_from_before(cluster):
    name = "audit_legacy_" + uuid.uuid4().hex[:8]
    with connect(cluster.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        legacy = cluster.url(name)
        with connect(legacy) as conn:
            conn.execute(
                "CREATE TABLE audit_events (event_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),"
                " aggregate_id UUID NOT NULL, event_type VARCHAR(50) NOT NULL,"
                " payload JSONB NOT NULL, metadata JSONB,"
                " created_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            for _ in range(3):
                conn.execute(INSERT_EVENT, (uuid.uuid4(),))
        apply_schema(legacy)
        with connect(legacy) as conn:
            seqs = [row[0] for row in conn.execute("SELECT seq FROM audit_events ORDER BY seq")]
        assert seqs == [1, 2, 3]
    finally:
        cluster.drop_database(name)
