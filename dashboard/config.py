"""Settings: every ``AUDIT_*`` environment variable, read, typed and checked in one place.

A misspelt or malformed setting fails at start-up with a message naming the variable,
rather than silently falling back to a default in production. The README's configuration
table lists the same settings as ``SETTINGS`` below.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PREFIX = "AUDIT_"
# Variables the test suite and CI read; they are not settings of the app.
_NON_SETTING_PREFIXES = ("AUDIT_TEST_",)


class ConfigError(ValueError):
    """A setting is unknown or malformed; the message names it and says how to fix it."""


def _text(value: str) -> str:
    return value


def _optional_text(value: str) -> str | None:
    return value or None


def _path(value: str) -> Path | None:
    return Path(value).expanduser() if value else None


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("expected a whole number above zero")
    return number


def _csv_list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _path_list(value: str) -> tuple[Path, ...]:
    return tuple(Path(item).expanduser() for item in _csv_list(value))


@dataclass(frozen=True)
class Setting:
    name: str  # without the AUDIT_ prefix, lower case: the Settings attribute
    parse: Callable[[str], Any]
    default: Any
    help: str

    @property
    def env_name(self) -> str:
        return PREFIX + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "database_url",
        _optional_text,
        None,
        "PostgreSQL URL of the read-only role (audit_reader); `demo` uses the embedded server.",
    ),
    Setting(
        "secret_key",
        _optional_text,
        None,
        "Key that signs session cookies and CSRF tokens. Required by `serve`; `demo` makes one.",
    ),
    Setting("users_file", _path, None, "TOML file of local users (`audit-dashboard users ...`)."),
    Setting(
        "access_log_url",
        _optional_text,
        None,
        "PostgreSQL URL of audit_access_logger, which may only call log_access().",
    ),
    Setting(
        "access_log_file",
        _path,
        None,
        "JSON-lines file for the access log when AUDIT_ACCESS_LOG_URL is unset.",
    ),
    Setting(
        "access_log_spool_dir",
        _path,
        None,
        "Directory of the spool that keeps access-log entries the log could not take, until "
        "it can (default: access-log-spool/ beside the users file).",
    ),
    Setting(
        "access_log_fail_open",
        _bool,
        False,
        "Serve pages and exports even when their access-log entry cannot be written (logs a "
        "warning each start); by default they answer 503.",
    ),
    Setting("rules_file", _path, None, "TOML file of event_type glob -> action rules."),
    Setting(
        "statement_timeout_ms",
        _positive_int,
        5000,
        "Time limit of one page's queries (transaction-local statement_timeout).",
    ),
    Setting(
        "facet_timeout_ms",
        _positive_int,
        800,
        "Time limit of the optional facet counts; past it they show as 'not counted'.",
    ),
    Setting(
        "export_timeout_ms",
        _positive_int,
        600_000,
        "Time limit of one CSV/PDF export's query.",
    ),
    Setting(
        "work_budget_ms",
        _positive_int,
        15_000,
        "Time budget of one page's or API answer's folding, diffing and rendering; past it "
        "the answer is a 503 'too much to show at once'. (Exports use AUDIT_EXPORT_TIMEOUT_MS.)",
    ),
    Setting(
        "allow_writable_role",
        _bool,
        False,
        "Serve even when the database role can write to audit_events (logs a warning each start).",
    ),
    Setting(
        "replica_max_lag_s",
        _positive_int,
        300,
        "When AUDIT_DATABASE_URL is a hot standby: how many seconds behind the primary it may "
        "be before every page flags its data as stale.",
    ),
    Setting("org_name", _text, "Example Corp", "Organisation name on report covers."),
    Setting(
        "pdf_max_events",
        _positive_int,
        100_000,
        "Above this many events a PDF report keeps the summary and points to the CSV.",
    ),
    Setting(
        "mask_fields",
        _csv_list,
        (),
        "Key names or JSON Pointer globs masked without view_pii, added to the defaults "
        '(comma-separated; see the README, "Masking personal data").',
    ),
    Setting(
        "trusted_proxies",
        _csv_list,
        (),
        "Addresses of reverse proxies whose sign-in header is trusted (comma-separated).",
    ),
    Setting(
        "proxy_user_header",
        _text,
        "X-Forwarded-User",
        "Header carrying the signed-in user name from a trusted proxy.",
    ),
    Setting(
        "proxy_role_header",
        _text,
        "X-Forwarded-Role",
        "Header carrying the user's role from a trusted proxy (else the users file decides).",
    ),
    Setting(
        "require_access_reason",
        _bool,
        False,
        "Support staff must give a reason or ticket number before opening a record.",
    ),
    Setting(
        "session_minutes",
        _positive_int,
        480,
        "Lifetime of a signed-in session, in minutes.",
    ),
    Setting(
        "login_rate_limit",
        _text,
        "10 per minute",
        "Failed sign-in attempts allowed per client address, counted across every app process "
        "and host (limits syntax, e.g. '10 per minute' or '5/minute;50/hour').",
    ),
    Setting(
        "identity_key",
        _text,
        "id",
        "Key that identifies objects inside arrays, for matching them in diffs.",
    ),
    Setting(
        "display_timezone",
        _text,
        "UTC",
        "IANA time zone the pages show times in (stored and exchanged times stay UTC).",
    ),
    Setting(
        "notary_url",
        _optional_text,
        None,
        "PostgreSQL URL of audit_notary, the role `seal` and `notary` extend the Merkle tree as.",
    ),
    Setting(
        "notary_key_file",
        _path,
        None,
        "Ed25519 private key (PEM) that signs tree heads; it never enters the database.",
    ),
    Setting(
        "notary_heads_file",
        _path,
        None,
        "JSON-lines copy of every signed tree head, outside the database (put it on WORM storage).",
    ),
    Setting(
        "public_key_files",
        _path_list,
        (),
        "Ed25519 public keys (PEM) that tree heads may be signed with (comma-separated; "
        "keep old ones after a rotation).",
    ),
    Setting(
        "verify_results_file",
        _path,
        None,
        "JSON-lines file `verify` appends each run's result to; the integrity page shows the "
        "last one.",
    ),
)

_BY_ENV_NAME = {setting.env_name: setting for setting in SETTINGS}


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    secret_key: str | None = None
    users_file: Path | None = None
    access_log_url: str | None = None
    access_log_file: Path | None = None
    access_log_spool_dir: Path | None = None
    access_log_fail_open: bool = False
    rules_file: Path | None = None
    statement_timeout_ms: int = 5000
    facet_timeout_ms: int = 800
    export_timeout_ms: int = 600_000
    work_budget_ms: int = 15_000
    allow_writable_role: bool = False
    replica_max_lag_s: int = 300
    org_name: str = "Example Corp"
    pdf_max_events: int = 100_000
    mask_fields: tuple[str, ...] = ()
    trusted_proxies: tuple[str, ...] = ()
    proxy_user_header: str = "X-Forwarded-User"
    proxy_role_header: str = "X-Forwarded-Role"
    require_access_reason: bool = False
    session_minutes: int = 480
    login_rate_limit: str = "10 per minute"
    identity_key: str = "id"
    display_timezone: str = "UTC"
    notary_url: str | None = None
    notary_key_file: Path | None = None
    notary_heads_file: Path | None = None
    public_key_files: tuple[Path, ...] = ()
    verify_results_file: Path | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read every AUDIT_* variable; raise ConfigError naming the first bad one."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(PREFIX) or name.startswith(_NON_SETTING_PREFIXES):
            continue
        setting = _BY_ENV_NAME.get(name)
        if setting is None:
            known = ", ".join(sorted(_BY_ENV_NAME))
            raise ConfigError(
                f"{name} is not a setting of the audit dashboard (misspelt?). "
                f"Remove it or use one of: {known}."
            )
        try:
            values[setting.name] = setting.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{name}={raw!r} is not valid: {exc}. {setting.help}") from None
    settings = Settings(**values)
    _check_timezone(settings.display_timezone)
    return settings


def _check_timezone(name: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"AUDIT_DISPLAY_TIMEZONE={name!r} is not a known IANA time zone "
            "(for example UTC or Europe/Berlin)."
        ) from None
