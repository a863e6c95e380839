"""Every route has an access rule, and every role gets exactly what the matrix says.

The URL map is walked at run time, so a page added tomorrow is covered without touching
this file: if it has no entry in ENDPOINT_PERMISSIONS the first test fails, and the role
tests check its answer for anonymous visitors and each role against ``role_can``.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
import pytest
from conftest import sign_in

from dashboard import permissions
from dashboard.db import libpq_url

VISITORS = (None, *permissions.ROLES)
JSON_PREFIXES = ("/api/", "/export/")


@dataclass(frozen=True)
class SampleIds:
    aggregate_id: str
    event_id: str
    request_id: str


@pytest.fixture(scope="module")
def sample(seeded_db) -> SampleIds:
    """Real ids from the seeded database, so allowed requests reach the view proper."""
    with psycopg.connect(libpq_url(seeded_db.admin)) as conn:
        event_id, aggregate_id = conn.execute(
            "SELECT event_id::text, aggregate_id::text FROM audit_events "
            "ORDER BY created_at, seq LIMIT 1"
        ).fetchone()
        row = conn.execute(
            "SELECT metadata->>'request_id' FROM audit_events WHERE metadata ? 'request_id' LIMIT 1"
        ).fetchone()
    return SampleIds(aggregate_id, event_id, row[0] if row else "req-1")


def _argument(name: str, sample: SampleIds) -> str:
    if "aggregate" in name or name == "record_id":
        return sample.aggregate_id
    if "event" in name:
        return sample.event_id
    if "request" in name:
        return sample.request_id
    if name == "filename":
        return "style.css"
    return "x"


def _requests(app, sample: SampleIds):
    """(endpoint, method, url) for every rule of the app."""
    with app.test_request_context():
        for rule in sorted(app.url_map.iter_rules(), key=lambda rule: rule.endpoint):
            values = {name: _argument(name, sample) for name in rule.arguments}
            path = app.url_map.bind("localhost").build(rule.endpoint, values)
            method = "GET" if "GET" in rule.methods else sorted(rule.methods - {"OPTIONS"})[0]
            yield rule.endpoint, method, path


def test_every_endpoint_has_a_rule(app):
    missing = sorted(
        {rule.endpoint for rule in app.url_map.iter_rules()} - set(permissions.ENDPOINT_PERMISSIONS)
    )
    assert not missing, f"endpoints without an entry in ENDPOINT_PERMISSIONS: {missing}"


def test_rules_name_real_permissions():
    known = permissions.ALL_PERMISSIONS | {permissions.PUBLIC}
    unknown = {e: p for e, p in permissions.ENDPOINT_PERMISSIONS.items() if p not in known}
    assert not unknown


def test_roles_hold_only_real_permissions():
    for role, held in permissions.ROLE_PERMISSIONS.items():
        assert held <= permissions.ALL_PERMISSIONS, role
    assert permissions.ROLE_PERMISSIONS["auditor"] == permissions.ALL_PERMISSIONS
    support = permissions.ROLE_PERMISSIONS["support"]
    assert permissions.SEARCH not in support and permissions.VIEW_PII not in support


@pytest.mark.parametrize("role", VISITORS, ids=lambda role: role or "anonymous")
def test_each_visitor_gets_what_the_matrix_says(app, sample, role):
    client = app.test_client()
    if role is not None:
        sign_in(client, role)
    wrong = []
    for endpoint, method, path in _requests(app, sample):
        permission = permissions.permission_for(endpoint)
        response = client.open(path, method=method)
        status = response.status_code
        location = response.headers.get("Location", "")
        response.get_data()  # run a streamed export to its end, in its own request context
        response.close()
        sent_to_login = status in (301, 302, 303) and location.startswith("/login")
        allowed = permission is not None and permissions.role_can(role, permission)
        if allowed:
            ok = status not in (401, 403) and not sent_to_login and status < 500
            expected = "allowed (not 401/403/login, not 5xx)"
        elif role is None:
            ok = status == 401 if path.startswith(JSON_PREFIXES) else sent_to_login
            expected = "401" if path.startswith(JSON_PREFIXES) else "redirect to /login"
        else:
            ok = status == 403
            expected = "403"
        if not ok:
            wrong.append(f"{method} {path} ({endpoint}, needs {permission}): {status}, {expected}")
    assert not wrong, f"{role or 'anonymous'}:\n" + "\n".join(wrong)


def test_matrix_includes_post_endpoints_without_side_effects(app, sample):
    """POSTs in the walk carry no CSRF token: allowed ones answer 400 and change nothing."""
    client = sign_in(app.test_client(), "auditor")
    assert client.post("/logout").status_code == 400
    response = client.get("/access-log")
    assert response.status_code == 200  # still signed in
