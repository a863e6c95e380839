"""Several dashboard processes behind a load balancer behave as one.

Two apps (two ``create_app()``, as two gunicorn workers or two hosts would be) over the same
database and the same secret key: a sign-in on one works on the other, a sign-out on one
ends the session on the other, and failed sign-ins on one count toward the limit on the
other — nothing of it lives only in one process's memory.
"""

from __future__ import annotations

import secrets

import pytest
from conftest import TEST_USERS, csrf_token_from

PAGE = "/search?from=2025-01-01"


@pytest.fixture
def two_apps(make_app):
    secret = "shared-secret-" + secrets.token_hex(8)

    def make(**overrides):
        return make_app(secret_key=secret, **overrides), make_app(secret_key=secret, **overrides)

    return make


def _post_login(client, username, password):
    page = client.get("/login")
    data = {"username": username, "password": password, "csrf_token": csrf_token_from(page.text)}
    return client.post("/login", data=data)


def _same_browser(client, app):
    """A client of ``app`` holding ``client``'s session cookie (the balancer's next pick)."""
    other = app.test_client()
    other.set_cookie("audit_session", client.get_cookie("audit_session").value)
    return other


def test_a_sign_in_on_one_app_works_on_another(two_apps):
    first, second = two_apps()
    client = first.test_client()
    assert _post_login(client, *TEST_USERS["auditor"]).status_code == 303
    assert _same_browser(client, second).get(PAGE).status_code == 200


def test_a_sign_out_on_one_app_ends_the_session_on_another(two_apps):
    first, second = two_apps()
    client = first.test_client()
    assert _post_login(client, *TEST_USERS["auditor"]).status_code == 303
    other = _same_browser(client, second)
    assert other.get(PAGE).status_code == 200
    token = csrf_token_from(client.get(PAGE).text)
    assert client.post("/logout", data={"csrf_token": token}).status_code == 303
    refused = other.get(PAGE)
    assert refused.status_code == 302 and "/login" in refused.headers["Location"]


def test_failed_sign_ins_on_one_app_count_on_another(two_apps):
    first, second = two_apps(login_rate_limit="3 per minute")
    address = "192.0.2.77"  # this test's own: the count lives in the shared access log
    one, two = first.test_client(), second.test_client()
    one.environ_base["REMOTE_ADDR"] = two.environ_base["REMOTE_ADDR"] = address
    name, password = TEST_USERS["auditor"]
    assert [_post_login(one, name, "wrong").status_code for _ in range(3)] == [401] * 3
    refused = _post_login(two, name, password)
    assert refused.status_code == 429
    assert "Too many sign-in attempts" in refused.text
    # Another address is not affected.
    two.environ_base["REMOTE_ADDR"] = "192.0.2.78"
    assert _post_login(two, name, password).status_code == 303


def test_a_successful_sign_in_does_not_count_toward_the_limit(make_app):
    client = make_app(login_rate_limit="2 per minute").test_client()
    client.environ_base["REMOTE_ADDR"] = "192.0.2.79"
    for _ in range(3):
        assert _post_login(client, *TEST_USERS["auditor"]).status_code == 303


def test_the_file_access_log_limits_sign_ins_in_this_process(make_app, tmp_path):
    app = make_app(
        access_log_url=None,
        access_log_file=tmp_path / "access.jsonl",
        login_rate_limit="2 per minute",
    )
    client = app.test_client()
    name, password = TEST_USERS["auditor"]
    assert [_post_login(client, name, "wrong").status_code for _ in range(2)] == [401, 401]
    assert _post_login(client, name, password).status_code == 429
