"""Who is asking, and may they: sign-in, the permission check, and web hardening.

``init_app`` installs, in this order of a request:

1. a WSGI wrapper that applies ``X-Forwarded-For``/``-Proto`` only when the connection comes
   from an address in AUDIT_TRUSTED_PROXIES (anyone else could write those headers);
2. the sign-in rate limit on ``POST /login`` (AUDIT_LOGIN_RATE_LIMIT failed sign-ins per
   client address, counted from the access log on the primary, so every worker and host
   shares it; see :mod:`dashboard.sign_in_limit`);
3. ``_authenticate``: identifies the user and enforces ``permissions.permission_for``:

   * ``Authorization: Bearer <token>`` — an API token from the users file. When the header
     is present it is the only credential considered, and such requests need no CSRF token
     (a browser never adds that header by itself, so another site cannot forge one);
   * else the AUDIT_PROXY_USER_HEADER (single sign-on in front of the app), honoured only
     on a connection from a trusted proxy; from any other address the request is refused
     with 403 and a warning is logged. The proxy's AUDIT_PROXY_ROLE_HEADER names the role,
     else the users file does;
   * else the session cookie of a password sign-in. It ends after AUDIT_SESSION_MINUTES
     from sign-in (however active), as soon as the user's password or role changes or
     the user is removed, and at sign-out: the cookie carries a random session id, the
     sign-out's access-log entry names its SHA-256 (``revokes_session``), and every request
     checks that no sign-out named it — in the database (through the read-only role), so a
     copy of the cookie stops working in every worker, process and host at once;

   Deny by default: an endpoint missing from ENDPOINT_PERMISSIONS is closed to everyone;
   anonymous pages are sent to ``/login?next=...``, anonymous API/export calls get 401 JSON,
   a role without the permission gets 403 with the permission named;
4. CSRF (Flask-WTF) on every state-changing request that is not token-authenticated;
5. after the view: the access-log entry (a response whose entry cannot be written is
   replaced by a 503) and then the security headers, on every response (errors, static
   files and /healthz included).

Views read ``g.user`` (a :class:`CurrentUser`, or None on public pages when anonymous) and
ask ``g.user.can(permissions.VIEW_PII)``, or call :func:`masker` for the right Masker.
Templates see ``current_user``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from flask import (
    Flask,
    current_app,
    flash,
    g,
    has_request_context,
    jsonify,
    redirect,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from flask_wtf.csrf import CSRFError, CSRFProtect
from itsdangerous import BadSignature
from werkzeug.middleware.proxy_fix import ProxyFix

from . import access_log, context, masking, permissions
from .config import ConfigError
from .errors import error_response, wants_json
from .sign_in_limit import SignInLimit
from .users import (
    UserError,
    UserRecord,
    UsersFileError,
    UserStore,
    is_well_formed_token,
    normalise_name,
)

__all__ = [
    "CurrentUser",
    "init_app",
    "masker",
    "safe_next",
    "sign_in",
    "sign_out",
    "user_store",
]

log = logging.getLogger(__name__)
security_log = logging.getLogger("dashboard.security")

USERS_KEY = "audit_users"
SIGN_IN_LIMIT_KEY = "audit_sign_in_limit"
PROXY_ENVIRON_KEY = "audit.trusted_proxy"  # set by the WSGI wrapper: the proxy's own address
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# Requests that are not "using the dashboard": no identification, no access-log entry.
UNAUTHENTICATED_ENDPOINTS = frozenset({"static", "health.healthz"})

# No inline script or style anywhere: templates load /static files only (OWASP CSP cheat
# sheet). frame-ancestors replaces X-Frame-Options, which is kept for old browsers.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # same-origin: URLs hold record ids and filters, which must not leak to other sites;
    # Flask-WTF's strict HTTPS check needs the Referer on our own form posts.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
HSTS = "max-age=31536000; includeSubDomains"
_COOKIE_GRACE = 60  # minutes the cookie outlives the sign-in, to say "your session expired"

WRONG_CREDENTIALS = "Wrong user name or password."
USERS_FILE_BROKEN = (
    "Sign-in is unavailable because the users file is invalid; the administrator can see "
    "why in the server log."
)


@dataclass(frozen=True)
class CurrentUser:
    """The signed-in user of this request. ``via``: password, token or proxy."""

    name: str
    role: str
    via: str

    def can(self, permission: str) -> bool:
        return permissions.role_can(self.role, permission)

    def can_open(self, endpoint: str) -> bool:
        """May this user follow a link to ``endpoint``? Templates ask this before showing
        a link, so that no page offers one that answers 403."""
        return permissions.endpoint_allowed(self.role, endpoint)


class _Refused(Exception):
    """Identification failed in a way the client must be told about (bad token, forged
    header); carries the response status and message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# --- set-up --------------------------------------------------------------------------------


def init_app(app: Flask) -> None:
    settings = context.app_context(app).settings
    _check_settings(settings)
    _configure_session(app, settings)

    store = UserStore(settings.users_file) if settings.users_file else None
    app.extensions[USERS_KEY] = store
    if store is None:
        log.warning(
            "AUDIT_USERS_FILE is not set: nobody can sign in with a password or a token. "
            "Create users with `audit-dashboard users add NAME --role ROLE`."
        )
    else:
        users = store.list()  # UsersFileError stops the start with the file and line
        _warn_if_readable_by_others(store)
        if not users and not settings.trusted_proxies:
            log.warning(
                "The users file %s has no users yet; add one with "
                "`audit-dashboard users add NAME --role ROLE`.",
                store.path,
            )

    networks = _trusted_networks(settings.trusted_proxies)
    if networks:
        app.wsgi_app = TrustedProxies(app.wsgi_app, networks)  # type: ignore[method-assign]

    csrf = CSRFProtect()
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False  # checked in _authenticate, after the user
    app.config["WTF_CSRF_TIME_LIMIT"] = settings.session_minutes * 60
    csrf.init_app(app)

    # After-request hooks run in reverse order: the security headers go on whatever the
    # access log lets out (a withheld page's 503 included). The access log's own
    # before-request hook writes spooled sign-outs before any session is checked.
    app.after_request(_security_headers)
    access_log.init_app(app)
    app.after_request(_session_checked)  # runs before the access log's hook
    app.register_error_handler(access_log.SessionSignedOut, _signed_out)
    app.extensions[SIGN_IN_LIMIT_KEY] = SignInLimit(
        settings.login_rate_limit, app.extensions[access_log.EXTENSION_KEY].sink
    )
    app.before_request(_authenticate)
    app.context_processor(_template_context)
    app.register_error_handler(CSRFError, _csrf_failed)


def _warn_if_readable_by_others(store: UserStore) -> None:
    """Password hashes and token digests are secrets too: say so when others can read them."""
    try:
        mode = store.path.stat().st_mode
    except FileNotFoundError:
        return
    if mode & 0o077:
        log.warning(
            "The users file %s can be read by other users of this machine (mode %o); "
            "run: chmod 600 %s",
            store.path,
            mode & 0o777,
            store.path,
        )


def _check_settings(settings) -> None:
    """Settings this module reads, checked at start-up so a typo stops the app."""
    try:
        masking.masker_for(settings)
    except masking.MaskPatternError as exc:
        raise ConfigError(f"AUDIT_MASK_FIELDS: {exc}") from None
    try:
        from limits import parse_many

        if not parse_many(settings.login_rate_limit):
            raise ValueError("no limit given")
    except ValueError as exc:
        raise ConfigError(
            f"AUDIT_LOGIN_RATE_LIMIT={settings.login_rate_limit!r} is not a rate limit ({exc}); "
            "write it like '10 per minute' or '5/minute;50/hour'."
        ) from None
    for header in (settings.proxy_user_header, settings.proxy_role_header):
        if not header or not header.replace("-", "").isalnum():
            raise ConfigError(f"{header!r} is not an HTTP header name (AUDIT_PROXY_*_HEADER).")


def _configure_session(app: Flask, settings) -> None:
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = secrets.token_urlsafe(48)
        log.warning(
            "AUDIT_SECRET_KEY is not set: using a random key, so sessions end when the app "
            "restarts and do not work across several workers."
        )
    app.session_interface = _SessionInterface()
    app.config.update(
        SESSION_COOKIE_NAME="audit_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        # The sign-in itself ends after session_minutes (checked in _session_user, with a
        # message); the cookie lives a little longer so that message can still be shown.
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=settings.session_minutes + _COOKIE_GRACE),
        # The sign-in's end is fixed when it starts, so the cookie is signed and sent only
        # when the session changes, not again with every response.
        SESSION_REFRESH_EACH_REQUEST=False,
    )


class _SessionInterface(SecureCookieSessionInterface):
    """Marks the cookie Secure whenever the request came over HTTPS (directly, or through a
    trusted proxy that said so), without a setting to forget.

    Keeps the cookies it verified, so the next request with the same cookie is not checked
    and decoded again (a fifth of a JSON page's own Python): a cookie is remembered only
    once its signature held, until its signature's age passes the session lifetime (as
    verifying it would say), and only when its values are immutable (a session holding
    flash messages, a list that views append to, is decoded every time).
    """

    KEEP = 1024  # cookies remembered per app; the whole set is dropped when full

    def __init__(self) -> None:
        super().__init__()
        self._verified: dict[str, tuple[dict, float]] = {}

    def get_cookie_secure(self, app: Flask) -> bool:
        if app.config.get("SESSION_COOKIE_SECURE"):
            return True
        return has_request_context() and request.is_secure

    def open_session(self, app: Flask, request) -> SecureCookieSession | None:
        cookie = request.cookies.get(self.get_cookie_name(app))
        serializer = self.get_signing_serializer(app) if cookie else None
        if serializer is None:
            return super().open_session(app, request)
        known = self._verified.get(cookie)
        if known is not None and time.time() < known[1]:
            return self.session_class(known[0])
        max_age = int(app.permanent_session_lifetime.total_seconds())
        try:
            data, signed_at = serializer.loads(cookie, max_age=max_age, return_timestamp=True)
        except BadSignature:
            return self.session_class()
        if isinstance(data, dict) and all(
            value is None or isinstance(value, str | int | float | bool) for value in data.values()
        ):
            if len(self._verified) >= self.KEEP:
                self._verified = {}
            self._verified[cookie] = (dict(data), signed_at.timestamp() + max_age)
        return self.session_class(data)


def _trusted_networks(entries) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ConfigError(
                f"AUDIT_TRUSTED_PROXIES: {entry!r} is not an IP address or network "
                "(for example 10.0.0.5 or 10.0.0.0/24)."
            ) from None
    return tuple(networks)


def _address_in(address: str | None, networks) -> bool:
    try:
        ip = ipaddress.ip_address((address or "").strip())
    except ValueError:
        return False
    return any(ip in network for network in networks)


class TrustedProxies:
    """Applies ProxyFix (X-Forwarded-For/-Proto, one hop) only for connections from a
    trusted proxy, and marks them so the sign-in header is believed only for them."""

    def __init__(self, wsgi_app, networks):
        self.wsgi_app = wsgi_app
        self.networks = networks
        self.fixed = ProxyFix(wsgi_app, x_for=1, x_proto=1, x_host=0, x_port=0, x_prefix=0)

    def __call__(self, environ, start_response):
        peer = environ.get("REMOTE_ADDR")
        if _address_in(peer, self.networks):
            environ[PROXY_ENVIRON_KEY] = peer
            return self.fixed(environ, start_response)
        environ.pop(PROXY_ENVIRON_KEY, None)
        return self.wsgi_app(environ, start_response)


# --- each request --------------------------------------------------------------------------


def user_store() -> UserStore | None:
    return current_app.extensions[USERS_KEY]


def masker() -> masking.Masker:
    """The Masker for this request's user: none for view_pii, else the configured one."""
    user = g.get("user")
    if user is not None and user.can(permissions.VIEW_PII):
        return masking.NO_MASKING
    return masking.masker_for(context.settings())


def _authenticate():
    g.user = None
    if request.endpoint in UNAUTHENTICATED_ENDPOINTS:
        return None
    try:
        g.user = _identify()
    except _Refused as refused:
        if refused.status == 401:
            response = jsonify({"error": refused.message})
            response.status_code = 401
            response.headers["WWW-Authenticate"] = (
                'Bearer realm="audit-dashboard", error="invalid_token"'
            )
            return response
        return error_response(refused.status, refused.message, "Not allowed")
    except UsersFileError as exc:
        log.error("%s", exc)
        return error_response(503, USERS_FILE_BROKEN, "Sign-in unavailable")
    denied = _authorise(g.user)
    if denied is not None:
        return denied
    if request.method not in SAFE_METHODS and (g.user is None or g.user.via != "token"):
        current_app.extensions["csrf"].protect()
    return None


def _identify() -> CurrentUser | None:
    settings = context.settings()
    authorization = request.headers.get("Authorization")
    if authorization is not None:
        return _token_user(authorization)
    proxy_name = request.headers.get(settings.proxy_user_header)
    if proxy_name is not None:
        return _proxy_user(proxy_name, request.headers.get(settings.proxy_role_header), settings)
    return _session_user(settings)


def _token_user(authorization: str) -> CurrentUser:
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _Refused(
            401,
            "The Authorization header must read 'Bearer <token>' with a token from "
            "`audit-dashboard users token NAME`.",
        )
    if not is_well_formed_token(token):
        raise _Refused(
            401,
            "The API token is malformed: it should look like adt_<12 hex digits>_<43 "
            "characters>, exactly as `audit-dashboard users token NAME` printed it.",
        )
    store = user_store()
    user = store.user_for_token(token) if store is not None else None
    if user is None:
        security_log.warning(
            "Rejected an unknown or revoked API token from %s", request.remote_addr
        )
        raise _Refused(
            401,
            "The API token is not valid: it was revoked or never issued here. Ask an "
            "administrator for a new one.",
        )
    return CurrentUser(user.name, user.role, "token")


def _proxy_user(raw_name: str, raw_role: str | None, settings) -> CurrentUser:
    proxy = request.environ.get(PROXY_ENVIRON_KEY)
    header = settings.proxy_user_header
    if proxy is None:
        security_log.warning(
            "Refused a %s header from %s, which is not a trusted proxy (AUDIT_TRUSTED_PROXIES)",
            header,
            request.remote_addr,
        )
        raise _Refused(
            403,
            f"The {header} sign-in header is only accepted from the single sign-on proxy; "
            "this request did not come through it and is refused.",
        )
    store = user_store()
    try:
        name = normalise_name(raw_name)
    except UserError:
        raise _Refused(
            403, f"The proxy's user name {raw_name[:80]!r} is not a valid user name."
        ) from None
    if raw_role:
        role = raw_role.strip().lower()
        if role not in permissions.ROLES:
            raise _Refused(
                403,
                f"The proxy says {name} has the role {role[:40]!r}, which this dashboard "
                f"does not know (roles: {', '.join(permissions.ROLES)}).",
            )
        return CurrentUser(name, role, "proxy")
    user = store.get(name) if store is not None else None
    if user is None:
        raise _Refused(
            403,
            f"You are signed in as {name}, but {name} has no role in this dashboard. "
            "Ask an administrator to add you.",
        )
    return CurrentUser(user.name, user.role, "proxy")


def _session_user(settings) -> CurrentUser | None:
    name = session.get("user")
    if not name:
        return None
    store = user_store()
    user = store.get(name) if store is not None else None
    signed_in_at = session.get("signed_in_at")
    if user is None or session.get("fingerprint") != user.session_fingerprint:
        session.clear()
        g.session_ended = "Your account changed since you signed in; please sign in again."
        return None
    if not isinstance(signed_in_at, int | float) or (
        time.time() - signed_in_at > settings.session_minutes * 60
    ):
        session.clear()
        g.session_ended = (
            f"Your session expired after {settings.session_minutes} minutes; please sign in again."
        )
        return None
    digest = session_digest()
    public = permissions.permission_for(request.endpoint) == permissions.PUBLIC
    if digest is not None and request.method in SAFE_METHODS and not public:
        # Whether a sign-out ended it is asked beside the page's own reads; the answer is
        # awaited before anything is recorded or served (_session_checked).
        access_log.check_session_beside(digest)
        return CurrentUser(user.name, user.role, "password")
    try:
        # A session without an id (made before sign-out could revoke it) counts as ended.
        revoked = digest is None or access_log.session_revoked(digest)
    except Exception:  # the database could not say: a 503, except on public pages
        if not public:
            raise
        log.warning("Could not check whether this session was signed out", exc_info=True)
        return None  # the sign-in form shows, as to a visitor; the cookie stays
    if revoked:
        _end_session(SIGNED_OUT)
        return None
    return CurrentUser(user.name, user.role, "password")


SIGNED_OUT = "This session was signed out; please sign in again."


def _end_session(why: str) -> None:
    session.clear()
    g.user = None
    g.session_ended = why


def _signed_out(exc: access_log.SessionSignedOut | None = None):
    """The answer to a request whose session turned out to be signed out (checked beside
    it): what a visitor gets, as when the check is made first."""
    _end_session(SIGNED_OUT)
    g._signed_out_answered = True
    return _sign_in_first()


def _session_checked(response):
    """The session checked beside this request (access_log.check_session_beside): wait for
    its answer before the response leaves, and answer as to a visitor when it was signed
    out, or with the database's error when that could not be asked (fail closed)."""
    if not access_log.session_check_started():
        return response
    try:
        access_log.confirm_session()
    except access_log.SessionSignedOut:
        if g.get("_signed_out_answered"):
            return response  # the view met it first and this is already that answer
        response.close()
        return current_app.make_response(_signed_out())
    except Exception as exc:  # answered by the app's own handler, as in a view
        if response.status_code >= 400:
            return response  # an error answer (the view met this one too) shows nothing
        response.close()
        return current_app.make_response(current_app.handle_user_exception(exc))
    return response


def session_digest() -> str | None:
    """SHA-256 (hex) of this session's id: what a sign-out records, never the id itself."""
    sid = session.get("sid")
    if not isinstance(sid, str) or not sid:
        return None
    return hashlib.sha256(sid.encode("utf-8")).hexdigest()


def _authorise(user: CurrentUser | None):
    """None to go on, else the response that refuses the request."""
    permission = permissions.permission_for(request.endpoint)
    if permission == permissions.PUBLIC:
        return None
    if user is None:
        return _sign_in_first()
    if request.routing_exception is not None:
        return None  # a signed-in user may learn that a URL does not exist (404/405)
    if permission is None:
        log.error(
            "Endpoint %r has no entry in permissions.ENDPOINT_PERMISSIONS; it is closed to "
            "everyone until it gets one.",
            request.endpoint,
        )
        return error_response(
            403,
            "This page has no access rule yet, so it is closed to everyone (deny by default). "
            "Please tell the administrator.",
            "Not allowed",
        )
    if not user.can(permission):
        security_log.info(
            "Denied %s (%s) %s %s: needs %s",
            user.name,
            user.role,
            request.method,
            request.path,
            permission,
        )
        return error_response(
            403,
            f"Your role ({user.role}) may not open this page: it needs the "
            f"'{permission}' permission. Ask an auditor if your work needs it.",
            "Not allowed",
        )
    return None


def _sign_in_first():
    if wants_json():
        response = jsonify(
            {
                "error": "Sign in first: send 'Authorization: Bearer <token>' with a token "
                "from `audit-dashboard users token NAME`."
                + (f" {g.session_ended}" if g.get("session_ended") else "")
            }
        )
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer realm="audit-dashboard"'
        return response
    if g.get("session_ended"):
        flash(g.session_ended, "info")
    target = request.full_path.rstrip("?") if request.method in SAFE_METHODS else None
    return redirect(url_for("auth.login", next=target))


# --- sign-in and sign-out (used by views.auth) --------------------------------------------


def sign_in(user: UserRecord) -> None:
    """Start a fresh session for ``user`` (a new session id against fixation)."""
    session.clear()
    session.permanent = True
    session["user"] = user.name
    session["fingerprint"] = user.session_fingerprint
    session["signed_in_at"] = int(time.time())
    session["sid"] = secrets.token_urlsafe(24)
    g.user = CurrentUser(user.name, user.role, "password")


def sign_out() -> None:
    """End the session in this browser (the sign-out's access-log entry, written by the
    view, revokes it everywhere)."""
    session.clear()


def safe_next(target: str | None, default: str | None = None) -> str:
    """``target`` when it is a path on this site, else ``default`` (the home page).

    Refuses absolute and scheme-relative URLs (``//evil.example``), backslashes (browsers
    read ``/\\evil.example`` as another host), control characters, and the sign-in pages.
    """
    fallback = default or url_for("main.index")
    if not target:
        return fallback
    target = target.strip()
    if (
        len(target) > 2000
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or any(ord(char) < 0x20 or ord(char) == 0x7F for char in target)
    ):
        return fallback
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return fallback
    if parts.path in (url_for("auth.login"), url_for("auth.logout")):
        return fallback
    return target


# --- responses -----------------------------------------------------------------------------


def _security_headers(response):
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    if request.is_secure:
        response.headers["Strict-Transport-Security"] = HSTS
    if request.endpoint != "static" and "Cache-Control" not in response.headers:
        # Pages hold personal data: keep them out of shared and browser caches.
        response.headers["Cache-Control"] = "no-store"
    return response


def _template_context():
    return {"current_user": g.get("user")}


def _csrf_failed(exc: CSRFError):
    security_log.warning(
        "CSRF check failed for %s %s from %s: %s",
        request.method,
        request.path,
        request.remote_addr,
        exc.description,
    )
    message = (
        "This form has expired or did not come from the dashboard (its security token is "
        "missing or wrong). Go back, reload the page and try again."
    )
    if request.endpoint == "auth.login":  # show the form again, with the message
        from .views.auth import render_login  # here: views.auth imports this module

        return render_login(error=message, status=400)
    return error_response(400, message, "Please reload the page")


def sign_in_refused() -> str | None:
    """The message refusing this sign-in attempt when its address reached the rate limit
    (AUDIT_LOGIN_RATE_LIMIT), else None. Asked before the password is checked."""
    refusal = current_app.extensions[SIGN_IN_LIMIT_KEY].refused(request.remote_addr)
    if refusal is None:
        return None
    security_log.warning("Sign-in rate limit hit from %s (%s)", request.remote_addr, refusal.limit)
    return refusal.message


def sign_in_failed() -> None:
    """Count a failed sign-in toward the rate limit in this process (the PostgreSQL access
    log counts its own entries; see :mod:`dashboard.sign_in_limit`)."""
    current_app.extensions[SIGN_IN_LIMIT_KEY].failed(request.remote_addr)
