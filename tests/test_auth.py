"""Sign-in, tokens, the proxy header, sessions, CSRF, rate limit and security headers."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from bs4 import BeautifulSoup
from conftest import TEST_USERS, a_busy_record, csrf_token_from, sign_in
from itsdangerous import URLSafeTimedSerializer

from dashboard import access_log, db
from dashboard.db import libpq_url
from dashboard.users import UsersFileError, UserStore


def _message(response) -> str:
    soup = BeautifulSoup(response.text, "html.parser")
    alert = soup.find(attrs={"role": "alert"}) or soup.find(class_="error-message")
    return alert.get_text(" ", strip=True) if alert else ""


def _signed_in(client) -> bool:
    """Whether the client's next request is treated as signed in (not sent to /login)."""
    response = client.get("/")
    location = response.headers.get("Location", "")
    return response.status_code < 400 and not location.startswith("/login")


def _signed_in_as(client) -> str:
    """The "signed in as" notice of the login page (empty when anonymous)."""
    notice = BeautifulSoup(client.get("/login").text, "html.parser").find(attrs={"role": "status"})
    return notice.get_text(" ", strip=True) if notice else ""


def _post_login(client, username, password, **extra):
    page = client.get("/login")
    data = {"username": username, "password": password, "csrf_token": csrf_token_from(page.text)}
    data.update(extra)
    return client.post("/login", data=data)


# --- deny by default ----------------------------------------------------------------------


def test_anonymous_page_goes_to_login_with_next(client):
    response = client.get("/?x=1")
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == "/login"
    assert parse_qs(location.query)["next"] == ["/?x=1"]


def test_anonymous_api_gets_401_json(client):
    response = client.get("/api/events")
    assert response.status_code == 401
    assert "Sign in" in response.get_json()["error"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_unknown_url_does_not_reveal_anything_to_anonymous(client, login):
    assert client.get("/no-such-page").status_code == 302
    login("auditor")
    assert client.get("/no-such-page").status_code == 404


def test_public_endpoints_need_no_sign_in(client):
    assert client.get("/login").status_code == 200
    assert client.get("/healthz").status_code == 200


def test_endpoint_without_rule_is_closed(make_app, monkeypatch):
    from dashboard import permissions

    app = make_app()
    app.add_url_rule("/unruled", "unruled", lambda: "open?")
    client = app.test_client()
    assert client.get("/unruled").status_code == 302
    sign_in(client, "auditor")
    response = client.get("/unruled")
    assert response.status_code == 403
    assert "no access rule" in response.text
    monkeypatch.setitem(permissions.ENDPOINT_PERMISSIONS, "unruled", permissions.SIGNED_IN)
    assert client.get("/unruled").status_code == 200


def test_role_without_permission_gets_403_naming_it(client, login):
    login("support")
    response = client.get("/access-log")
    assert response.status_code == 403
    assert "view_access_log" in response.text
    assert "Traceback" not in response.text


# --- password sign-in ---------------------------------------------------------------------


def test_sign_in_and_out(client):
    response = _post_login(client, *TEST_USERS["auditor"])
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    assert _signed_in(client)
    assert "ann.auditor (auditor)" in _signed_in_as(client)
    token = csrf_token_from(client.get("/login").text)
    out = client.post("/logout", data={"csrf_token": token})
    assert out.status_code == 303
    assert not _signed_in(client)


@pytest.mark.parametrize("backend", ["postgres", "file"])
def test_a_cookie_saved_before_sign_out_does_not_work_after_it(make_app, tmp_path, backend):
    """Sign-out ends the session for every worker and process, not only in this browser:
    ``other`` is another process with the same secret key and none of this one's memory."""
    extra = {}
    if backend == "file":
        extra = {"access_log_url": None, "access_log_file": tmp_path / "access.jsonl"}
    secret = "shared-secret-" + tmp_path.name
    browser_app = make_app(secret_key=secret, **extra)
    other = make_app(secret_key=secret, **extra)
    browser = sign_in(browser_app.test_client(), "auditor")
    saved = browser.get_cookie("audit_session").value
    thief = other.test_client()
    thief.set_cookie("audit_session", saved)
    assert thief.get("/search").status_code == 200  # the copy works while signed in

    token = csrf_token_from(browser.get("/login").text)
    assert browser.post("/logout", data={"csrf_token": token}).status_code == 303

    for app in (browser_app, other):
        replay = app.test_client()
        replay.set_cookie("audit_session", saved)
        page = replay.get("/search")
        assert page.status_code == 302
        assert page.headers["Location"].startswith("/login")
        assert replay.get("/api/events?limit=1").status_code == 401
    signed_out = other.test_client()
    signed_out.set_cookie("audit_session", saved)
    assert "signed out" in signed_out.get("/search", follow_redirects=True).text


def test_a_session_from_before_revocable_sessions_must_sign_in_again(app):
    """A cookie without a session id could never be revoked: it is not accepted."""
    client = sign_in(app.test_client(), "auditor")
    with client.session_transaction() as session:
        del session["sid"]
    assert not _signed_in(client)


def test_sign_in_follows_a_local_next_only(client):
    name, password = TEST_USERS["compliance"]
    assert _post_login(client, name, password, next="/?a=1").headers["Location"] == "/?a=1"
    for evil in ("//evil.example/", "https://evil.example/", "/\\evil.example", "javascript:x"):
        assert _post_login(client, name, password, next=evil).headers["Location"] == "/"


def test_wrong_password_and_unknown_user_look_the_same(client):
    name, password = TEST_USERS["auditor"]
    wrong = _post_login(client, name, password + "x")
    unknown = _post_login(client, "no.such.user", password)
    assert wrong.status_code == unknown.status_code == 401
    assert _message(wrong) == _message(unknown) == "Wrong user name or password."
    assert not _signed_in(client)


@pytest.mark.parametrize(
    "data",
    [
        {"username": "", "password": ""},
        {"username": "x" * 5000, "password": "y" * 5000},
        {"username": "ann.auditor\x00", "password": "\x00"},
        {},
    ],
)
def test_garbage_sign_in_is_a_clear_refusal(client, data):
    page = client.get("/login")
    response = client.post("/login", data={**data, "csrf_token": csrf_token_from(page.text)})
    assert response.status_code == 401
    assert _message(response) == "Wrong user name or password."


def test_session_cookie_flags(client):
    response = _post_login(client, *TEST_USERS["support"])
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Expires=" in cookie  # bounded lifetime, not a forever cookie
    assert "Secure" not in cookie  # plain http: a Secure cookie would never come back


def test_session_cookie_is_secure_and_hsts_sent_over_https(app):
    client = app.test_client()
    page = client.get("/login", base_url="https://dash.example")
    assert page.headers["Strict-Transport-Security"].startswith("max-age=")
    name, password = TEST_USERS["support"]
    response = client.post(
        "/login",
        base_url="https://dash.example",
        headers={"Referer": "https://dash.example/login"},
        data={"username": name, "password": password, "csrf_token": csrf_token_from(page.text)},
    )
    assert response.status_code == 303
    assert "Secure" in response.headers["Set-Cookie"]


def test_no_hsts_over_http(client):
    assert "Strict-Transport-Security" not in client.get("/login").headers


def test_session_expires(client, login, monkeypatch):
    import time

    login("auditor")
    assert _signed_in(client)
    later = time.time() + 481 * 60  # the default AUDIT_SESSION_MINUTES is 480
    monkeypatch.setattr("dashboard.auth.time.time", lambda: later)
    response = client.get("/")
    assert response.status_code == 302
    login_page = client.get(response.headers["Location"])
    assert "expired after 480 minutes" in login_page.text


def test_password_change_and_removal_end_sessions(make_app, tmp_path):
    path = tmp_path / "users.toml"
    store = UserStore(path)
    store.add("dora", "auditor", "first password 1")
    store.add("eve", "support", "first password 2")
    client = make_app(users_file=path).test_client()
    assert _post_login(client, "dora", "first password 1").status_code == 303
    assert _signed_in(client)
    store.set_password("dora", "second password 1")
    assert not _signed_in(client)

    other = make_app(users_file=path).test_client()
    assert _post_login(other, "eve", "first password 2").status_code == 303
    store.remove("eve")
    assert not _signed_in(other)


def test_role_change_takes_effect_at_once(make_app, tmp_path):
    path = tmp_path / "users.toml"
    store = UserStore(path)
    store.add("fay", "auditor", "first password 1")
    client = make_app(users_file=path).test_client()
    _post_login(client, "fay", "first password 1")
    assert client.get("/access-log").status_code == 200
    store.set_role("fay", "support")
    assert client.get("/access-log").status_code == 302  # signed out: sign in as support


def test_login_is_rate_limited_with_a_message(make_app):
    # Failed sign-ins are counted in the (shared) access log: an address of this test's own.
    client = make_app(login_rate_limit="3 per minute").test_client()
    client.environ_base["REMOTE_ADDR"] = "192.0.2.31"
    statuses = [_post_login(client, "ann.auditor", "wrong").status_code for _ in range(3)]
    assert statuses == [401, 401, 401]
    limited = _post_login(client, *TEST_USERS["auditor"])
    assert limited.status_code == 429
    assert "Too many sign-in attempts" in limited.text
    assert client.get("/login").status_code == 200  # only the POST is limited


def test_bad_rate_limit_setting_stops_the_start(make_app):
    from dashboard.config import ConfigError

    with pytest.raises(ConfigError, match="AUDIT_LOGIN_RATE_LIMIT"):
        make_app(login_rate_limit="lots")


# --- CSRF ---------------------------------------------------------------------------------


def test_login_without_csrf_token_is_400(client):
    name, password = TEST_USERS["auditor"]
    client.get("/login")
    response = client.post("/login", data={"username": name, "password": password})
    assert response.status_code == 400
    assert "security token" in _message(response)
    assert not _signed_in(client)


def test_logout_without_csrf_token_is_400(client, login):
    login("auditor")
    assert client.post("/logout").status_code == 400
    assert client.post("/logout", data={"csrf_token": "forged"}).status_code == 400
    assert _signed_in(client)  # the forged sign-out did nothing


def test_csrf_token_of_another_session_is_refused(app, login):
    other = app.test_client()
    foreign_token = csrf_token_from(other.get("/login").text)
    client = sign_in(app.test_client(), "auditor")
    assert client.post("/logout", data={"csrf_token": foreign_token}).status_code == 400


# --- API tokens ---------------------------------------------------------------------------


@pytest.fixture
def token_app(make_app, tmp_path):
    path = tmp_path / "users.toml"
    store = UserStore(path)
    store.add("ci.bot", "compliance", None)
    store.add("helpdesk.bot", "support", None)
    return make_app(users_file=path), store


def test_bearer_token_signs_in_and_revocation_ends_it(token_app):
    app, store = token_app
    token = store.issue_token("ci.bot")
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    response = client.get("/login", headers=headers)
    assert response.status_code == 200
    assert "ci.bot (compliance)" in response.text
    assert client.get("/", headers=headers).status_code == 303  # to the search page
    store.revoke_token("ci.bot", token.split("_")[1])
    revoked = client.get("/api/events", headers=headers)
    assert revoked.status_code == 401
    assert "revoked" in revoked.get_json()["error"]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("Bearer not-a-token", "malformed"),
        ("Bearer adt_0123456789ab_" + "A" * 43, "not valid"),
        ("Basic YW5uOnB3", "must read 'Bearer"),
        ("Bearer", "must read 'Bearer"),
    ],
)
def test_bad_tokens_get_401_with_a_message(client, header, message):
    response = client.get("/", headers={"Authorization": header})
    assert response.status_code == 401
    assert message in response.get_json()["error"]
    assert "Traceback" not in response.text


def test_token_request_needs_no_csrf_but_a_session_one_does(token_app):
    app, store = token_app
    token = store.issue_token("helpdesk.bot")
    client = app.test_client()
    aggregate = "00000000-0000-4000-8000-000000000001"
    response = client.post(
        f"/access-reason?aggregate_id={aggregate}&next=/",
        headers={"Authorization": f"Bearer {token}"},
        data={"reason": "SUP-42"},
    )
    assert response.status_code == 303


def test_bearer_header_is_the_only_credential_when_present(client, login):
    login("auditor")
    assert client.get("/", headers={"Authorization": "Bearer junk"}).status_code == 401


# --- trusted proxy sign-in ----------------------------------------------------------------


def test_forged_proxy_header_is_refused(client):
    response = client.get("/", headers={"X-Forwarded-User": "ann.auditor"})
    assert response.status_code == 403
    assert "only accepted from the single sign-on proxy" in response.text
    assert "ann.auditor (auditor)" not in response.text


def test_forged_proxy_header_from_an_untrusted_address(make_app):
    app = make_app(trusted_proxies=("10.0.0.5",))
    client = app.test_client()
    forged = client.get(
        "/",
        headers={"X-Forwarded-User": "ann.auditor", "X-Forwarded-For": "10.0.0.5"},
        environ_base={"REMOTE_ADDR": "192.0.2.7"},
    )
    assert forged.status_code == 403


def test_trusted_proxy_header_signs_in(make_app, seeded_db):
    app = make_app(trusted_proxies=("10.0.0.0/24",))
    client = app.test_client()
    proxied = {"REMOTE_ADDR": "10.0.0.5"}
    # a user of the users file: role from the file
    response = client.get(
        "/access-log",
        headers={"X-Forwarded-User": "Ann.Auditor", "X-Forwarded-For": "198.51.100.9"},
        environ_base=proxied,
    )
    assert response.status_code == 200
    response = client.get(
        "/login", headers={"X-Forwarded-User": "Ann.Auditor"}, environ_base=proxied
    )
    assert "ann.auditor (auditor)" in response.text
    # someone only the proxy knows: role from the role header
    response = client.get(
        "/access-log",
        headers={"X-Forwarded-User": "sso.person@example.com", "X-Forwarded-Role": "support"},
        environ_base=proxied,
    )
    assert response.status_code == 403  # support may not browse the access log
    # unknown to both: refused with a message
    response = client.get("/", headers={"X-Forwarded-User": "stranger"}, environ_base=proxied)
    assert response.status_code == 403
    assert "no role" in response.text
    bad_role = client.get(
        "/",
        headers={"X-Forwarded-User": "x", "X-Forwarded-Role": "root"},
        environ_base=proxied,
    )
    assert bad_role.status_code == 403


def test_client_address_comes_from_the_trusted_proxy_only(make_app, seeded_db):
    import psycopg

    from dashboard.db import libpq_url

    app = make_app(trusted_proxies=("10.0.0.5",))
    client = app.test_client()
    client.get(
        "/login?probe=client-address",
        headers={"X-Forwarded-User": "carl.compliance", "X-Forwarded-For": "198.51.100.9"},
        environ_base={"REMOTE_ADDR": "10.0.0.5"},
    )
    with psycopg.connect(libpq_url(seeded_db.admin)) as conn:
        client_ip = conn.execute(
            "SELECT client_ip FROM audit_access_log WHERE username = %s "
            "AND filters->>'probe' = %s ORDER BY id DESC LIMIT 1",
            ("carl.compliance", "client-address"),
        ).fetchone()[0]
    assert client_ip == "198.51.100.9"


def test_bad_trusted_proxy_setting_stops_the_start(make_app):
    from dashboard.config import ConfigError

    with pytest.raises(ConfigError, match="AUDIT_TRUSTED_PROXIES"):
        make_app(trusted_proxies=("not-an-address",))


# --- the users file -----------------------------------------------------------------------


def test_bad_users_file_stops_the_start_naming_the_line(make_app, tmp_path):
    path = tmp_path / "users.toml"
    path.write_text('[users.ann]\nrole = "auditor"\nrole = "support"\n')
    with pytest.raises(UsersFileError, match=r"line 3"):
        make_app(users_file=path)


def test_users_file_broken_while_running_is_a_clear_503(make_app, tmp_path):
    path = tmp_path / "users.toml"
    UserStore(path).add("gus", "auditor", "first password 1")
    client = make_app(users_file=path).test_client()
    assert _post_login(client, "gus", "first password 1").status_code == 303
    path.write_text("this is = not [toml\n")
    response = client.get("/")
    assert response.status_code == 503
    assert "users file is invalid" in response.text
    assert str(path) not in response.text  # the detail is in the server log only


# --- security headers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "role"),
    [
        ("/login", None),
        ("/healthz", None),
        ("/", None),  # redirect
        ("/static/nothing-here.css", None),  # 404 from the static route
        ("/api/events", None),  # 401 JSON
        ("/no-such-page", "auditor"),  # 404 page
        ("/access-log", "support"),  # 403 page
        ("/access-log?from=yesterday", "auditor"),  # 400 page
        ("/", "auditor"),
    ],
)
def test_security_headers_on_every_response(client, login, path, role):
    if role:
        login(role)
    response = client.get(path)
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_pages_are_not_cached(client, login):
    login("auditor")
    assert client.get("/access-log").headers["Cache-Control"] == "no-store"


def test_templates_have_no_inline_script():
    from dashboard.paths import TEMPLATES_DIR

    for template in TEMPLATES_DIR.rglob("*.html"):
        soup = BeautifulSoup(template.read_text(), "html.parser")
        for script in soup.find_all("script"):
            assert script.get("src"), f"inline <script> in {template}"
            assert not script.get_text(strip=True), f"inline <script> in {template}"
        for tag in soup.find_all(True):
            handlers = [attr for attr in tag.attrs if attr.lower().startswith("on")]
            assert not handlers, f"inline event handler {handlers} in {template}"


# --- what templates and views see ---------------------------------------------------------


def test_current_user_and_masker(app):
    from flask import g

    from dashboard import auth, masking

    with app.test_request_context("/"):
        g.user = auth.CurrentUser("sue.support", "support", "password")
        assert not g.user.can("view_pii")
        assert auth.masker().active
        g.user = auth.CurrentUser("carl.compliance", "compliance", "password")
        assert auth.masker() is masking.NO_MASKING


def test_pages_do_not_send_the_session_cookie_again(client):
    """The sign-in ends at a time fixed when it starts, so pages that do not change the
    session do not sign and send its cookie again; signing in and out do."""
    name, password = TEST_USERS["auditor"]
    assert "audit_session=" in _post_login(client, name, password).headers["Set-Cookie"]
    client.get("/search")  # its forms' CSRF token joins the session: sent once
    for page in ("/search?order=desc", "/api/events?limit=1", "/search?order=asc"):
        shown = client.get(page)
        assert shown.status_code == 200 and "Set-Cookie" not in shown.headers, page
    assert _signed_in(client)
    token = csrf_token_from(client.get("/login").text)
    assert "audit_session=" in client.post("/logout", data={"csrf_token": token}).headers.get(
        "Set-Cookie", ""
    )


def _cookie_signed_at(app, data: dict, signed_at: float, monkeypatch) -> str:
    """``data`` signed as the app signs its session cookie, as if at ``signed_at``."""
    serializer = app.session_interface.get_signing_serializer(app)
    with monkeypatch.context() as clock:
        clock.setattr(time, "time", lambda: signed_at)
        return serializer.dumps(data)


def test_a_verified_cookie_is_not_verified_again_until_its_signature_expires(app, monkeypatch):
    """The session cookie is checked and decoded once; the same cookie again is taken as
    it was, a changed one is checked anew, and one whose signature outlived the session
    lifetime is refused even though it was taken before."""
    client = sign_in(app.test_client(), "auditor")
    with client.session_transaction() as session:
        data = dict(session)
    lifetime = app.permanent_session_lifetime.total_seconds()
    started = time.time()
    cookie = _cookie_signed_at(app, data, started - lifetime + 30, monkeypatch)
    verified = []
    real_loads = URLSafeTimedSerializer.loads
    monkeypatch.setattr(
        URLSafeTimedSerializer,
        "loads",
        lambda self, *args, **kwargs: verified.append(1) or real_loads(self, *args, **kwargs),
    )
    replay = app.test_client()
    for _ in range(3):
        replay.set_cookie("audit_session", cookie)
        assert replay.get("/api/events?limit=1").status_code == 200
    assert len(verified) == 1
    replay.set_cookie("audit_session", cookie[:-2] + ("AA" if cookie[-2:] != "AA" else "BB"))
    assert replay.get("/api/events?limit=1").status_code == 401  # forged: checked, refused
    later = started + 60  # the signature is now older than the lifetime
    monkeypatch.setattr(time, "time", lambda: later)
    replay.set_cookie("audit_session", cookie)
    assert replay.get("/api/events?limit=1").status_code == 401


def test_a_session_holding_flash_messages_is_decoded_each_time(app, monkeypatch):
    """A session with a list in it (flash messages, which views append to) is never taken
    from the remembered cookies: a later request must not see another's additions."""
    client = sign_in(app.test_client(), "auditor")
    with client.session_transaction() as session:
        session["_flashes"] = [("info", "hello")]
    interface = app.session_interface
    assert client.get("/api/events?limit=1").status_code == 200
    cookie = client.get_cookie("audit_session").value
    assert cookie not in interface._verified


def test_a_pages_sign_out_check_is_sent_ahead_and_a_forms_asked_first(make_app, monkeypatch):
    """A page's question "was this session signed out?" is sent to the log's database as
    the request starts and answered beside the page's own reads; a form's (POST) is asked
    and answered before anything else."""
    app = make_app()
    logger = app.extensions[access_log.EXTENSION_KEY]
    asked: list[str] = []
    for method in ("session_revoked", "session_revoked_later"):
        real = getattr(logger, method)
        monkeypatch.setattr(
            logger,
            method,
            lambda digest, _real=real, _name=method: asked.append(_name) or _real(digest),
        )
    client = sign_in(app.test_client(), "auditor")
    for page in ("/search?order=desc", "/api/events?limit=1", "/integrity"):
        asked.clear()
        assert client.get(page).status_code == 200, page
        assert asked == ["session_revoked_later"], page
    token = csrf_token_from(client.get("/login").text)
    asked.clear()
    assert client.post("/logout", data={"csrf_token": token}).status_code == 303
    assert asked == ["session_revoked"]


def test_a_signed_out_session_gets_nothing_and_nothing_is_recorded_for_it(
    make_app, seeded_db, tmp_path
):
    """Whichever way a page records its entry (ahead of rendering, after it, an export's
    "started"), a session found signed out by the check beside it is answered as a visitor
    and leaves no entry in its user's name."""
    secret = "shared-secret-" + tmp_path.name
    app = make_app(secret_key=secret)
    browser = sign_in(app.test_client(), "auditor")
    saved = browser.get_cookie("audit_session").value
    token = csrf_token_from(browser.get("/login").text)
    assert browser.post("/logout", data={"csrf_token": token}).status_code == 303
    record = a_busy_record(seeded_db.admin)
    with psycopg.connect(libpq_url(seeded_db.admin)) as conn:
        mark = conn.execute("SELECT coalesce(max(id), 0) FROM audit_access_log").fetchone()[0]
    replay = make_app(secret_key=secret).test_client()
    for page in ("/search?order=desc", f"/aggregates/{record}", "/integrity"):
        replay.set_cookie("audit_session", saved)  # each answer clears it
        refused = replay.get(page)
        assert refused.status_code == 302 and "/login" in refused.headers["Location"], page
    for path in ("/export/events.csv?order=desc", "/api/events?limit=1"):
        replay.set_cookie("audit_session", saved)
        refused = replay.get(path)
        assert refused.status_code == 401 and "signed out" in refused.json["error"], path
    with psycopg.connect(libpq_url(seeded_db.admin)) as conn:
        after = conn.execute(
            "SELECT action, outcome FROM audit_access_log WHERE id > %s AND username = %s",
            (mark, TEST_USERS["auditor"][0]),
        ).fetchall()
    assert after == []


def test_a_session_that_cannot_be_checked_is_not_served(make_app, seeded_db, monkeypatch):
    """When neither the log's database nor the reader can say whether the session was
    signed out, every page answers 503 and shows nothing (fail closed), as when the
    question is asked first."""
    app = make_app()
    client = sign_in(app.test_client(), "auditor")
    logger = app.extensions[access_log.EXTENSION_KEY]

    class CannotSay:
        def __call__(self):
            raise db.DatabaseUnavailable("the sign-out check could not be asked")

        def abandon(self):
            pass

    monkeypatch.setattr(logger, "session_revoked_later", lambda digest: CannotSay())
    record = a_busy_record(seeded_db.admin)
    for page in ("/search?order=desc", f"/aggregates/{record}", "/api/events?limit=1"):
        answer = client.get(page)
        assert answer.status_code == 503, page
        assert "the sign-out check could not be asked" in answer.text, page
    shown = client.get("/integrity")  # writes its entry after rendering: checked there
    assert shown.status_code == 503 and "the sign-out check could not be asked" in shown.text


def test_a_sign_out_check_the_log_cannot_answer_is_answered_by_the_reader(
    make_app, monkeypatch, caplog
):
    """The question sent ahead falls back as the one asked first does: a missing
    access_session_revoked() (init-db not run) or a log that cannot be reached leaves the
    answer to the reader, with a warning; the page is served when the session stands."""
    app = make_app()
    sink = app.extensions[access_log.EXTENSION_KEY].sink
    client = sign_in(app.test_client(), "auditor")
    missing = lambda digest: sink._send(b"SELECT public.no_such_function($1::text)", [digest])  # noqa: E731

    def unreachable(digest):
        raise psycopg.OperationalError("connection refused (as a test says)")

    for ask, warning in (
        (missing, "access_session_revoked() is missing"),
        (unreachable, "connection refused (as a test says)"),
    ):
        monkeypatch.setattr(sink, "ask_revoked", ask)
        caplog.clear()
        with caplog.at_level("WARNING", logger="dashboard.access_log"):
            assert client.get("/api/events?limit=1").status_code == 200
        assert warning in caplog.text
