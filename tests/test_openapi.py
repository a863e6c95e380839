"""The OpenAPI document is true: it matches the URL map, validates as OpenAPI 3.1, and the
API answers what it says — checked by schemathesis fuzzing every operation as every role.

The fuzzing is bounded and deterministic (a fixed seed, derandomized Hypothesis, no
example database), so it finds the same cases on every run and stays quick: it runs in
process against the Flask app (WSGI, no network) on the seeded test database.
"""

from __future__ import annotations

import re
import secrets

import psycopg
import pytest
import schemathesis
from conftest import TEST_USERS
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from dashboard import openapi
from dashboard.db import libpq_url
from dashboard.users import UserStore

ROLES = tuple(TEST_USERS)
EXAMPLES_PER_OPERATION = 12
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Values the random generator would hardly ever find, mixed into its own: real ids (so the
# fuzzing reaches the 200 answers, not only 404s) and input PostgreSQL cannot hold.
HOSTILE_JSON = [
    "1e999",  # a JSON number beyond a double
    "-1e999",
    "1e-999",
    '"\\u0000"',  # NUL, which text and jsonb refuse
    '{"k\\u0000": 1}',
    '"\\ud800"',  # a lone surrogate, which is no UTF-8
    "123456789012345678901234567890",
    '"Kraków"',
    "[1, 2]",
    "null",
]
HOSTILE_TEXT = ["\x00", "a\x00b", "USER", "ORDER", "profile.email", "address.city", "Kraków"]
# Stand-ins for ids of the seeded database, which exists only once the session runs: the
# fuzz test swaps them for the real ids (see _with_real_ids) before sending.
STAND_INS = {
    "aggregate_id": "00000000-0000-4000-8000-00000000000a",
    "deleted": "00000000-0000-4000-8000-00000000000b",
    "first": "00000000-0000-4000-8000-00000000000c",
    "last": "00000000-0000-4000-8000-00000000000d",
}
RECORDS = [STAND_INS["aggregate_id"], STAND_INS["deleted"]]
EVENTS = [STAND_INS["first"], STAND_INS["last"]]
SCHEMA = schemathesis.openapi.from_dict(openapi.document())


def _with_examples(document: dict) -> dict:
    """The document plus parameter examples the "examples" phase sends one by one (so each
    hostile value arrives with otherwise valid arguments)."""
    examples = {"value": HOSTILE_JSON, "field": ["profile.email", "a\x00b"], "kind": HOSTILE_TEXT}
    for item in document["paths"].values():
        for parameter in item["get"].get("parameters", []):
            if parameter["name"] in examples:
                parameter["examples"] = {
                    f"example{index}": {"value": value}
                    for index, value in enumerate(examples[parameter["name"]])
                }
    return document


FUZZ = schemathesis.openapi.from_dict(
    _with_examples(openapi.document()),
    config=schemathesis.Config.from_dict(
        {
            "seed": 20240501,
            "generation": {
                "mode": "all",  # valid and invalid input: both must get a documented answer
                "max-examples": EXAMPLES_PER_OPERATION,
                "deterministic": True,
                "database": "none",
                "with-security-parameters": False,  # the test sends each role's own token
            },
            "phases": {"stateful": {"enabled": False}},
            "dictionaries": {
                "records": {"values": RECORDS},
                "events": {"values": EVENTS},
                "json": {"values": HOSTILE_JSON},
                "text": {"values": HOSTILE_TEXT},
                "events_or_text": {"values": [*EVENTS, *HOSTILE_TEXT]},
            },
            "parameters": {
                "path.aggregate_id": {"dictionary": "records", "probability": 0.5},
                "query.aggregate_id": {"dictionary": "records", "probability": 0.3},
                "path.event_id": {"dictionary": "events", "probability": 0.5},
                "query.from": {"dictionary": "events_or_text", "probability": 0.4},
                "query.to": {"dictionary": "events_or_text", "probability": 0.4},
                "query.value": {"dictionary": "json", "probability": 0.5},
                "query.field": {"dictionary": "text", "probability": 0.5},
                "query.kind": {"dictionary": "text", "probability": 0.4},
                "query.actor": {"dictionary": "text", "probability": 0.3},
                "query.reason": {"dictionary": "text", "probability": 0.3},
            },
        }
    ),
)


def _flask_path(rule) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)


def _documented_rules(app) -> dict[str, set[str]]:
    rules: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        path = _flask_path(rule)
        if path.startswith(openapi.PATH_PREFIXES):
            rules.setdefault(path, set()).update(rule.methods - {"HEAD", "OPTIONS"})
    return rules


def test_every_api_rule_has_a_path_and_every_path_a_rule(app):
    paths = openapi.document()["paths"]
    in_app = _documented_rules(app)
    assert set(in_app) == set(paths)
    for path, methods in in_app.items():
        assert {method.lower() for method in methods} == set(paths[path]), path


def test_path_parameters_match_the_rules(app):
    for path, item in openapi.document()["paths"].items():
        for operation in item.values():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"{([^}]+)}", path)), path


def test_the_document_is_valid_openapi_3_1():
    document = openapi.document()
    assert document["openapi"].startswith("3.1.")
    validate(document)  # raises OpenAPIValidationError naming the fault


def test_the_document_is_served_to_signed_in_users_only(client, login):
    anonymous = client.get("/api/openapi.json")
    assert anonymous.status_code == 401
    assert "error" in anonymous.json
    signed_in = login("support")
    served = signed_in.get("/api/openapi.json")
    assert served.status_code == 200
    assert served.json == openapi.document()


# --- answers for real records match the document -----------------------------------------


@pytest.fixture(scope="module")
def tokens(users_file) -> dict[str, str]:
    """A fresh API token per test user (the users file is the session's)."""
    store = UserStore(users_file)
    return {role: store.issue_token(name) for role, (name, _) in TEST_USERS.items()}


@pytest.fixture(scope="module")
def known(seeded_db) -> dict[str, str]:
    """Ids of a real record and two of its events, and a record that was deleted."""
    with psycopg.connect(libpq_url(seeded_db.admin)) as conn:
        aggregate_id, first, last = conn.execute(
            "SELECT aggregate_id::text, (array_agg(event_id::text ORDER BY created_at, seq))[1], "
            "(array_agg(event_id::text ORDER BY created_at, seq DESC))[1] FROM audit_events "
            "GROUP BY aggregate_id HAVING count(*) BETWEEN 3 AND 30 ORDER BY 1 LIMIT 1"
        ).fetchone()
        deleted = conn.execute(
            "SELECT aggregate_id::text FROM audit_events WHERE event_type LIKE '%%_DELETED' "
            "ORDER BY 1 LIMIT 1"
        ).fetchone()[0]
    return {"aggregate_id": aggregate_id, "first": first, "last": last, "deleted": deleted}


def _real_cases(known: dict[str, str]):
    record = {"aggregate_id": known["aggregate_id"]}
    return [
        ("/api/events", {}, {"limit": 5}),
        ("/api/events", {}, {"aggregate_id": known["aggregate_id"], "order": "asc"}),
        ("/api/aggregates/{aggregate_id}/events", record, {"limit": 2}),
        ("/api/aggregates/{aggregate_id}/state", record, {}),
        ("/api/aggregates/{aggregate_id}/state", {"aggregate_id": known["deleted"]}, {}),
        ("/api/events/{event_id}/changes", {"event_id": known["last"]}, {}),
        ("/api/diff", {}, {"from": known["first"], "to": known["last"]}),
        ("/api/as-of", {}, {"kind": "USER", "limit": 3}),
        ("/export/events.csv", {}, {"aggregate_id": known["aggregate_id"]}),
    ]


@pytest.mark.parametrize("role", ROLES)
def test_answers_about_real_records_match_the_document(app, tokens, known, role):
    statuses = []
    for path, path_parameters, query in _real_cases(known):
        case = SCHEMA[path]["GET"].Case(path_parameters=path_parameters, query=query)
        headers = {"Authorization": f"Bearer {tokens[role]}"}
        response = case.call(app=app, headers=headers)
        case.validate_response(response, checks=CHECKS, headers=headers)
        statuses.append(response.status_code)
    # Not a vacuous pass: the roles that may read these get 200s, support gets 403 for search.
    expected_ok = 9 if role != "support" else 5
    assert statuses.count(200) == expected_ok, statuses


# --- fuzzing -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_app(seeded_db, users_file):
    from dashboard import create_app
    from dashboard.config import Settings

    app = create_app(
        Settings(
            database_url=seeded_db.reader,
            access_log_url=seeded_db.logger,
            secret_key=secrets.token_hex(16),
            users_file=users_file,
        )
    )
    app.config["TESTING"] = True
    yield app
    app.extensions["audit"].dispose()
    app.extensions["audit_access_log"].dispose()


@FUZZ.parametrize()
@settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_fuzzed_requests_get_documented_answers_for_every_role(case, fuzz_app, tokens, known):
    """No 5xx, and every answer (status, content type, body) as the document says."""
    _with_real_ids(case, known)
    for role in ROLES:
        headers = {"Authorization": f"Bearer {tokens[role]}"}
        response = case.call(app=fuzz_app, headers=headers)
        case.validate_response(response, checks=CHECKS, headers=headers)


def _with_real_ids(case, known: dict[str, str]) -> None:
    real = {stand_in: known[name] for name, stand_in in STAND_INS.items()}
    for container in (case.path_parameters, case.query):
        for name, value in list((container or {}).items()):
            if isinstance(value, str) and value in real:
                container[name] = real[value]
