"""Local users of the dashboard: a small TOML file of names, roles, password hashes and tokens.

The file is the whole user database, so it is treated like one:

* passwords are stored as argon2id hashes with OWASP's parameters (Password Storage Cheat
  Sheet: m=19 MiB, t=2, p=1) and re-hashed on the next sign-in when the parameters change;
* API tokens are shown once and stored only as a SHA-256 digest — a token is 256 random
  bits, so a fast hash is enough (unlike a password, it cannot be guessed from a list);
  each carries a short public id so it can be listed and revoked on its own;
* every change is a read-modify-write under an exclusive lock (a ``.lock`` file beside it),
  written to a temporary file, fsynced and swapped in with ``os.replace``, mode 0600, so a
  crash or a second ``audit-dashboard users`` never leaves half a file; the running app
  re-reads the file when it changes, so a revoked token or removed user stops working on
  the next request;
* a bad file raises :class:`UsersFileError` naming the file and line at fault.

User names are compared in lower case (``Ann`` and ``ann`` are one person, as e-mail
addresses used by single sign-on are) and limited to letters, digits and ``. _ @ + -``.
This module imports neither Flask nor the database, so the CLI and tests use it alone.

File format (written by this module; hand edits are fine and are validated)::

    [users."ann.auditor"]
    role = "auditor"
    password_hash = "$argon2id$v=19$m=19456,t=2,p=1$..."
    created_at = 2026-01-01T12:00:00Z

    [[users."ann.auditor".tokens]]
    id = "3f9a0c1b2d4e"
    sha256 = "..."
    created_at = 2026-01-02T09:30:00Z
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import logging
import os
import re
import secrets
import tempfile
import threading
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from .permissions import ROLES

__all__ = [
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "TOKEN_PREFIX",
    "TokenRecord",
    "UserError",
    "UserRecord",
    "UserStore",
    "UsersFileError",
    "ensure_demo_users",
    "is_well_formed_token",
    "normalise_name",
]

log = logging.getLogger(__name__)

# OWASP Password Storage Cheat Sheet, argon2id: "a minimum configuration of 19 MiB of memory,
# an iteration count of 2, and 1 degree of parallelism". About 20-40 ms per hash here.
PASSWORD_HASHER = PasswordHasher(
    time_cost=2, memory_cost=19_456, parallelism=1, hash_len=32, salt_len=16, type=Type.ID
)
# NIST SP 800-63B / OWASP ASVS 2.1.1: at least 12 characters; long pass phrases allowed, but
# bounded so a megabyte "password" cannot be used to make the server hash for nothing.
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024

# "audit dashboard token": lets secret scanners and people recognise one. Not a secret.
TOKEN_PREFIX = "adt"  # noqa: S105
_TOKEN_ID_BYTES = 6  # 12 hex digits: public, only has to be unique within one file
_TOKEN_SECRET_BYTES = 32  # 256 bits
_TOKEN_RE = re.compile(rf"{TOKEN_PREFIX}_([0-9a-f]{{{_TOKEN_ID_BYTES * 2}}})_([A-Za-z0-9_-]{{43}})")

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._@+-]{0,63}")
_USER_KEYS = {"role", "password_hash", "created_at", "tokens"}
_TOKEN_KEYS = {"id", "sha256", "created_at"}
_HEADER = (
    "# Users of the audit dashboard. Managed by `audit-dashboard users ...`; hand edits are\n"
    "# validated when the file is read. Passwords are argon2id hashes, tokens SHA-256 digests.\n"
)


class UserError(ValueError):
    """A request about users that cannot be done (unknown user, bad role, short password)."""


class UsersFileError(UserError):
    """The users file cannot be read or is malformed; the message names the file and line."""

    def __init__(self, path: Path, message: str, line: int | None = None):
        where = f"{path}, line {line}" if line else str(path)
        super().__init__(f"Users file {where}: {message}")
        self.path = path
        self.line = line


@dataclass(frozen=True)
class TokenRecord:
    id: str
    sha256: str = field(repr=False)
    created_at: datetime | None = None


@dataclass(frozen=True)
class UserRecord:
    name: str
    role: str
    password_hash: str | None = field(default=None, repr=False)
    created_at: datetime | None = None
    tokens: tuple[TokenRecord, ...] = ()

    @property
    def has_password(self) -> bool:
        return bool(self.password_hash)

    @property
    def session_fingerprint(self) -> str:
        """Changes whenever the password or role changes, so old sessions stop working."""
        material = f"{self.name}\0{self.role}\0{self.password_hash or ''}".encode()
        return hashlib.sha256(material).hexdigest()[:24]


def normalise_name(name: str) -> str:
    """The stored form of a user name; UserError when it is not a valid one."""
    cleaned = (name or "").strip().lower()
    if not _NAME_RE.fullmatch(cleaned):
        raise UserError(
            f"{name!r} is not a valid user name: use 1-64 letters, digits and . _ @ + - "
            "(starting with a letter or digit)."
        )
    return cleaned


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UserError(f"{role!r} is not a role; the roles are: {', '.join(ROLES)}.")
    return role


def check_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"The password must be at least {MIN_PASSWORD_LENGTH} characters long.")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise UserError(f"The password must be at most {MAX_PASSWORD_LENGTH} characters long.")
    return password


def is_well_formed_token(token: str) -> bool:
    """Whether ``token`` has the shape ``users token`` prints (says nothing of validity)."""
    return bool(_TOKEN_RE.fullmatch(token or ""))


def _token_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class UserStore:
    """The users file at ``path``. A missing file is an empty store; writes create it."""

    def __init__(self, path: Path | str):
        self.path = Path(path).expanduser()
        self._cache: tuple[tuple[int, int, int], dict[str, UserRecord]] | None = None
        self._cache_lock = threading.Lock()
        # Hashed up front, so even the first unknown name costs what a real check costs.
        self._dummy_hash = PASSWORD_HASHER.hash(secrets.token_hex(16))

    # --- reading ---------------------------------------------------------------------------

    def list(self) -> list[UserRecord]:
        return sorted(self._users().values(), key=lambda user: user.name)

    def get(self, name: str) -> UserRecord | None:
        try:
            key = normalise_name(name)
        except UserError:
            return None
        return self._users().get(key)

    def verify(self, name: str, password: str) -> UserRecord | None:
        """The user when ``password`` is theirs, else None — for any reason, in about the same
        time: an unknown user or one without a password is checked against a dummy hash, so
        the response time does not tell "no such user" from "wrong password".
        """
        user = self.get(name) if isinstance(name, str) else None
        if not isinstance(password, str) or len(password) > MAX_PASSWORD_LENGTH:
            password = ""
        if user is None or not user.password_hash:
            with contextlib.suppress(VerificationError, InvalidHashError):
                PASSWORD_HASHER.verify(self._dummy_hash, password)
            return None
        try:
            PASSWORD_HASHER.verify(user.password_hash, password)
        except VerifyMismatchError:
            return None
        except (VerificationError, InvalidHashError):
            log.error(
                "User %s in %s has an unusable password hash; reset it.", user.name, self.path
            )
            return None
        if PASSWORD_HASHER.check_needs_rehash(user.password_hash):
            try:
                self.set_password(user.name, password, check_policy=False)
                user = self.get(user.name) or user
            except OSError as exc:  # a read-only file must not stop the sign-in
                log.warning("Could not upgrade the password hash of %s: %s", user.name, exc)
        return user

    def user_for_token(self, token: str) -> UserRecord | None:
        """The user an API token belongs to, or None (malformed, unknown or revoked)."""
        match = _TOKEN_RE.fullmatch(token or "")
        if not match:
            return None
        token_id, secret = match.groups()
        digest = _token_digest(secret)
        for user in self._users().values():
            for record in user.tokens:
                if record.id == token_id and hmac.compare_digest(record.sha256, digest):
                    return user
        return None

    # --- changing --------------------------------------------------------------------------

    def add(
        self, name: str, role: str, password: str | None, *, check_policy: bool = True
    ) -> UserRecord:
        """Add a user. ``password=None`` makes a user who can only come in through the
        single sign-on proxy or an API token."""
        key = normalise_name(name)
        check_role(role)
        if password is not None and check_policy:
            check_password(password)
        password_hash = PASSWORD_HASHER.hash(password) if password is not None else None
        with self._locked() as users:
            if key in users:
                raise UserError(f"User {key} already exists (change the password with `passwd`).")
            users[key] = UserRecord(key, role, password_hash, _now(), ())
        return users[key]

    def remove(self, name: str) -> None:
        key = normalise_name(name)
        with self._locked() as users:
            if users.pop(key, None) is None:
                raise UserError(f"There is no user {key} in {self.path}.")

    def set_password(self, name: str, password: str, *, check_policy: bool = True) -> None:
        """Set a new password; every session signed in with the old one ends."""
        key = normalise_name(name)
        if check_policy:
            check_password(password)
        password_hash = PASSWORD_HASHER.hash(password)
        with self._locked() as users:
            user = self._existing(users, key)
            users[key] = replace(user, password_hash=password_hash)

    def set_role(self, name: str, role: str) -> None:
        key = normalise_name(name)
        check_role(role)
        with self._locked() as users:
            users[key] = replace(self._existing(users, key), role=role)

    def issue_token(self, name: str) -> str:
        """A new API token for ``name``; returned once, stored only as a digest."""
        key = normalise_name(name)
        secret = secrets.token_urlsafe(_TOKEN_SECRET_BYTES)
        with self._locked() as users:
            user = self._existing(users, key)
            taken = {token.id for other in users.values() for token in other.tokens}
            token_id = secrets.token_hex(_TOKEN_ID_BYTES)
            while token_id in taken:  # pragma: no cover - 48 random bits
                token_id = secrets.token_hex(_TOKEN_ID_BYTES)
            record = TokenRecord(token_id, _token_digest(secret), _now())
            users[key] = replace(user, tokens=(*user.tokens, record))
        return f"{TOKEN_PREFIX}_{token_id}_{secret}"

    def revoke_token(
        self, name: str, token_id: str | None = None, *, all_tokens: bool = False
    ) -> int:
        """Revoke one token (by id, or the whole token) or all of a user's; returns how many."""
        key = normalise_name(name)
        if (token_id is None) == (not all_tokens):
            raise UserError("Name one token id, or ask for all of the user's tokens.")
        if token_id is not None:
            match = _TOKEN_RE.fullmatch(token_id)
            token_id = match.group(1) if match else token_id.strip().lower()
        with self._locked() as users:
            user = self._existing(users, key)
            kept = () if all_tokens else tuple(t for t in user.tokens if t.id != token_id)
            revoked = len(user.tokens) - len(kept)
            if token_id is not None and not revoked:
                raise UserError(f"User {key} has no token with id {token_id}.")
            users[key] = replace(user, tokens=kept)
        return revoked

    # --- internals -------------------------------------------------------------------------

    def _existing(self, users: Mapping[str, UserRecord], key: str) -> UserRecord:
        user = users.get(key)
        if user is None:
            raise UserError(f"There is no user {key} in {self.path}.")
        return user

    def _users(self) -> dict[str, UserRecord]:
        """The file's users, re-read whenever the file was replaced or changed."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise UsersFileError(self.path, f"cannot be read: {exc.strerror}") from None
        signature = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        with self._cache_lock:
            if self._cache is not None and self._cache[0] == signature:
                return self._cache[1]
            users = self._read()
            self._cache = (signature, users)
            return users

    def _read(self) -> dict[str, UserRecord]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except UnicodeDecodeError:
            raise UsersFileError(self.path, "is not UTF-8 text") from None
        except OSError as exc:
            raise UsersFileError(self.path, f"cannot be read: {exc.strerror}") from None
        return parse_users(text, self.path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, UserRecord]]:
        """Read-modify-write under an exclusive lock; the body changes the dict in place."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            users = dict(self._read())
            yield users
            self._write(users)
        finally:
            os.close(fd)  # closing releases the lock

    def _write(self, users: Mapping[str, UserRecord]) -> None:
        text = format_users(users)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):  # make the rename itself durable
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        with self._cache_lock:
            self._cache = None


def ensure_demo_users(path: Path | str, passwords: Mapping[str, str]) -> None:
    """For each role in ``passwords``, make sure a user named after it has it and that password.

    ``audit-dashboard demo`` prints these credentials; running the demo again keeps them.
    """
    store = UserStore(path)
    for role, password in passwords.items():
        check_role(role)
        user = store.get(role)
        if user is None:
            store.add(role, role, password, check_policy=False)
            continue
        if user.role != role:
            store.set_role(role, role)
        if store.verify(role, password) is None:
            store.set_password(role, password, check_policy=False)


# --- the file format ----------------------------------------------------------------------

_LINE_RE = re.compile(r"\(at line (\d+), column \d+\)")


def parse_users(text: str, path: Path) -> dict[str, UserRecord]:
    """Parse and validate the file's text; UsersFileError names the line at fault."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = _LINE_RE.search(str(exc))
        reason = _LINE_RE.sub("", str(exc)).strip()
        raise UsersFileError(
            path, f"is not valid TOML ({reason})", int(match.group(1)) if match else None
        ) from None
    lines = _HeaderLines(text)
    for key in data:
        if key != "users":
            raise UsersFileError(
                path, f"unknown key {key!r} (only [users.NAME] tables)", lines.key(None, key)
            )
    table = data.get("users", {})
    if not isinstance(table, dict):
        raise UsersFileError(path, "'users' must be a table", lines.key(None, "users"))
    users: dict[str, UserRecord] = {}
    for raw_name, entry in table.items():
        line = lines.user(raw_name)
        users_key = _parse_name(raw_name, path, line)
        if users_key in users:
            raise UsersFileError(path, f"user {users_key} appears twice", line)
        if not isinstance(entry, dict):
            raise UsersFileError(path, f"user {raw_name!r} must be a table", line)
        users[users_key] = _parse_user(users_key, raw_name, entry, path, lines)
    return users


def _parse_name(raw_name: str, path: Path, line: int | None) -> str:
    try:
        return normalise_name(raw_name)
    except UserError as exc:
        raise UsersFileError(path, str(exc), line) from None


def _parse_user(
    key: str, raw_name: str, entry: dict[str, Any], path: Path, lines: _HeaderLines
) -> UserRecord:
    def fail(message: str, field_name: str | None = None) -> UsersFileError:
        line = lines.key(raw_name, field_name) if field_name else lines.user(raw_name)
        return UsersFileError(path, f"user {key}: {message}", line)

    unknown = sorted(set(entry) - _USER_KEYS)
    if unknown:
        raise fail(
            f"unknown key {unknown[0]!r} (known: {', '.join(sorted(_USER_KEYS))})", unknown[0]
        )
    role = entry.get("role")
    if role not in ROLES:
        raise fail(f"role {role!r} is not one of {', '.join(ROLES)}", "role")
    password_hash = entry.get("password_hash")
    if password_hash is not None and not (
        isinstance(password_hash, str) and password_hash.startswith("$argon2")
    ):
        raise fail(
            "password_hash must be an argon2 hash (set it with `users passwd`)", "password_hash"
        )
    created_at = entry.get("created_at")
    if created_at is not None and not isinstance(created_at, datetime):
        raise fail("created_at must be a date-time", "created_at")
    tokens_raw = entry.get("tokens", [])
    if not isinstance(tokens_raw, list):
        raise fail("tokens must be an array of tables ([[users.NAME.tokens]])", "tokens")
    tokens = []
    for index, token in enumerate(tokens_raw):
        where = lines.token(raw_name, index)
        if not isinstance(token, dict) or set(token) - _TOKEN_KEYS:
            raise UsersFileError(
                path, f"user {key}: token entries hold only {', '.join(sorted(_TOKEN_KEYS))}", where
            )
        token_id, digest = token.get("id"), token.get("sha256")
        if not (isinstance(token_id, str) and re.fullmatch(r"[0-9a-f]{12}", token_id)):
            raise UsersFileError(path, f"user {key}: token id must be 12 hex digits", where)
        if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
            raise UsersFileError(path, f"user {key}: token sha256 must be 64 hex digits", where)
        token_created = token.get("created_at")
        if token_created is not None and not isinstance(token_created, datetime):
            raise UsersFileError(path, f"user {key}: token created_at must be a date-time", where)
        tokens.append(TokenRecord(token_id, digest, token_created))
    return UserRecord(key, role, password_hash, created_at, tuple(tokens))


class _HeaderLines:
    """Finds the line of a user's table, a key inside it, or its n-th token, for messages.

    tomllib reports no positions for valid-but-wrong values, so table headers are re-parsed
    one line at a time (with tomllib, so quoting rules are TOML's own).
    """

    def __init__(self, text: str):
        self.tables: list[tuple[tuple[str, ...], bool, int]] = []  # (path, is_array, line)
        self.lines = text.splitlines()
        for number, line in enumerate(self.lines, start=1):
            if not line.strip().startswith("["):
                continue
            try:  # a header line (with any trailing comment) is a TOML document by itself
                parsed = tomllib.loads(line + "\n")
            except tomllib.TOMLDecodeError:
                continue
            path: list[str] = []
            node: Any = parsed
            is_array = False
            while isinstance(node, dict) and len(node) == 1:
                ((name, node),) = node.items()
                path.append(name)
                if isinstance(node, list) and len(node) == 1:
                    node, is_array = node[0], True
            self.tables.append((tuple(path), is_array, number))

    def user(self, raw_name: str) -> int | None:
        for path, _is_array, number in self.tables:
            if path[:2] == ("users", raw_name):
                return number
        return None

    def token(self, raw_name: str, index: int) -> int | None:
        found = [
            n
            for path, is_array, n in self.tables
            if is_array and path == ("users", raw_name, "tokens")
        ]
        return found[index] if index < len(found) else self.user(raw_name)

    def key(self, raw_name: str | None, key: str) -> int | None:
        """The line assigning ``key`` in the user's table (top level when ``raw_name`` is
        None), else the table's header line."""
        if raw_name is None:
            for path, _is_array, number in self.tables:
                if path[:1] == (key,):
                    return number
            header = None
        else:
            header = self.user(raw_name)
            if header is None:
                return None
        assignment = re.compile(rf'\s*("?){re.escape(key)}\1\s*=')
        for number in range((header or 0) + 1, len(self.lines) + 1):
            line = self.lines[number - 1]
            if line.strip().startswith("["):
                break
            if assignment.match(line):
                return number
        return header


def _toml_string(value: str) -> str:
    """A TOML basic string: escape what TOML 1.0 requires (quote, backslash, controls)."""
    out = ['"']
    for char in value:
        code = ord(char)
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif char == "\t":
            out.append("\\t")
        elif char == "\n":
            out.append("\\n")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        elif 0xD800 <= code <= 0xDFFF:
            raise UserError("text with unpaired surrogate characters cannot be stored")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _toml_datetime(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def format_users(users: Mapping[str, UserRecord]) -> str:
    """The file text for ``users`` (sorted by name, so diffs of the file stay small)."""
    parts = [_HEADER]
    for name in sorted(users):
        user = users[name]
        header = f"users.{_toml_string(name)}"
        parts.append(f"\n[{header}]\nrole = {_toml_string(user.role)}\n")
        if user.password_hash:
            parts.append(f"password_hash = {_toml_string(user.password_hash)}\n")
        if user.created_at:
            parts.append(f"created_at = {_toml_datetime(user.created_at)}\n")
        for token in user.tokens:
            parts.append(f"\n[[{header}.tokens]]\nid = {_toml_string(token.id)}\n")
            parts.append(f"sha256 = {_toml_string(token.sha256)}\n")
            if token.created_at:
                parts.append(f"created_at = {_toml_datetime(token.created_at)}\n")
    return "".join(parts)
