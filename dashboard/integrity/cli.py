"""Tamper-evidence commands: ``keygen``, ``seal``, ``notary``, ``verify``, ``verify-export``.

Exit codes, as AWS CloudTrail's ``validate-logs`` and the ``report`` command use them: 0
clean (or nothing to seal), 1 tampering found (or the notary refused to extend a tree that
does not add up), 2 input or configuration a person must fix (a missing or wrong key file,
a public key that signed no head, an unreachable database). Always a one-paragraph message,
never a traceback. Registered on the root group by ``dashboard/cli.py``; imports only
downwards (``cli_base``), never the root.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import signal
import sys
import threading
from pathlib import Path

import click
import sqlalchemy as sa

from .. import db
from ..cli_base import connect_check, fail, settings_or_fail
from . import heads_file, keys, notary, results_file, scan
from . import verify as verify_module
from .bundle import BundleError, verify_bundle


class Tampered(click.ClickException):
    """Verification found problems, or the notary refused: exit 1."""

    exit_code = 1

    def show(self, file=None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


_DURATION = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class Duration(click.ParamType):
    """``60s``, ``5m``, ``1h``, ``500ms`` or plain seconds."""

    name = "duration"

    def convert(self, value, param, ctx):
        if isinstance(value, int | float):
            return float(value)
        match = _DURATION.fullmatch(str(value).strip())
        if match is None or float(match["number"]) <= 0:
            self.fail(f"{value!r} is not a duration such as 60s, 5m or 1h", param, ctx)
        return float(match["number"]) * _UNIT_SECONDS[match["unit"]]


def _load_private_key(path: Path | None):
    if path is None:
        raise fail(
            "AUDIT_NOTARY_KEY_FILE is not set. Point it at the notary's Ed25519 private key "
            "(make one with `audit-dashboard keygen --private notary.pem --public notary.pub.pem`)."
        )
    try:
        return keys.load_private_key(path)
    except keys.KeyFileError as exc:
        raise fail(str(exc)) from None


def _public_keys(paths):
    if not paths:
        raise fail(
            "No public key given: pass --public-key FILE or set AUDIT_PUBLIC_KEY_FILES "
            "(the notary's public key, and the old ones after a rotation)."
        )
    try:
        return keys.load_public_keys(paths)
    except keys.KeyFileError as exc:
        raise fail(str(exc)) from None


def _notary_setup(settle: float, wait: float):
    settings = settings_or_fail()
    if not settings.notary_url:
        raise fail(
            "AUDIT_NOTARY_URL is not set. Set it to the audit_notary role's URL "
            "(postgresql://audit_notary:PASSWORD@HOST/DB; `init-db --notary-password`)."
        )
    if settings.notary_heads_file is None:
        raise fail(
            "AUDIT_NOTARY_HEADS_FILE is not set. Point it at the JSON-lines file that keeps a "
            "copy of every head outside the database (on WORM storage, see the README)."
        )
    heads_path = settings.notary_heads_file
    if not heads_path.parent.is_dir():
        raise fail(
            f"The directory of AUDIT_NOTARY_HEADS_FILE ({heads_path.parent}) does not exist."
        )
    private_key = _load_private_key(settings.notary_key_file)
    connect_check(settings.notary_url)
    engine = db.make_engine(settings.notary_url, pool_size=1)

    def one_pass() -> notary.SealResult:
        try:
            return notary.seal_once(engine, private_key, heads_path, settle=settle, wait=wait)
        except notary.NotaryError as exc:
            raise Tampered(str(exc)) from None
        except heads_file.HeadsFileError as exc:
            raise Tampered(
                f"{exc}. The head is in the database; the next pass copies it."
            ) from None
        except sa.exc.DBAPIError as exc:
            raise Tampered(
                f"The sealing pass failed and wrote nothing: {_first_line(exc)}"
            ) from None

    return engine, one_pass


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


_SETTLE = click.option(
    "--settle",
    type=click.FloatRange(min=0),
    default=notary.DEFAULT_SETTLE_SECONDS,
    show_default=True,
    help="Seconds to wait between reading the sequence and the writers' locks (optional).",
)
_WAIT = click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=notary.DEFAULT_WAIT_SECONDS,
    show_default=True,
    help="Seconds to wait for open transactions before sealing only up to the first gap.",
)


@click.command("keygen")
@click.option(
    "--private",
    "private_path",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="Where to write the private key (PEM, mode 0600; never overwritten).",
)
@click.option(
    "--public",
    "public_path",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="Where to write the public key (PEM) for verify and the dashboard.",
)
def keygen(private_path: Path, public_path: Path) -> None:
    """Make the notary's Ed25519 key pair."""
    try:
        ident = keys.generate_keypair(private_path, public_path)
    except keys.KeyFileError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"{public_path} cannot be written: {exc.strerror or exc}") from None
    click.echo(
        f"Wrote key {ident}: private {private_path} (keep it off the database host's "
        f"backups), public {public_path}."
    )


@click.command("seal")
@_SETTLE
@_WAIT
def seal(settle: float, wait: float) -> None:
    """One sealing pass (for cron): extend the tree and sign a head, as audit_notary."""
    engine, one_pass = _notary_setup(settle, wait)
    try:
        click.echo(one_pass().message)
    finally:
        engine.dispose()


@click.command("notary")
@click.option(
    "--every",
    type=Duration(),
    default="60s",
    show_default=True,
    help="Time between passes (60s, 5m ...).",
)
@_SETTLE
@_WAIT
def notary_command(every: float, settle: float, wait: float) -> None:
    """Seal every --every until SIGTERM or Ctrl+C (a pass in progress finishes first)."""
    engine, one_pass = _notary_setup(settle, wait)
    stop = threading.Event()
    previous = {}

    def request_stop(signum, frame) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, request_stop)
    try:
        click.echo(f"Notary: sealing every {every:g} s (SIGTERM or Ctrl+C stops).", err=True)
        notary.run_notary(one_pass, every, stop, lambda message: click.echo(message))
        click.echo("Notary stopped.", err=True)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        engine.dispose()


@click.command("verify")
@click.option("--database-url", help="Reader URL (default: AUDIT_DATABASE_URL).")
@click.option(
    "--public-key",
    "public_key_files",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Public key file (repeat; default: AUDIT_PUBLIC_KEY_FILES).",
)
@click.option(
    "--heads-file",
    "heads_file_option",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The JSON-lines copy of the heads (default: AUDIT_NOTARY_HEADS_FILE).",
)
@click.option(
    "--since-head", type=click.IntRange(min=1), help="Check from this head on only (incremental)."
)
@click.option("--quiet", is_flag=True, help="No progress bar on stderr.")
@click.option(
    "--jobs",
    type=click.IntRange(min=1, max=64),
    default=lambda: os.cpu_count() or 1,
    show_default="the number of CPUs",
    help="Worker processes recomputing the leaves (each opens one database connection).",
)
def verify(database_url, public_key_files, heads_file_option, since_head, quiet, jobs) -> None:
    """Check every event and head against the signed tree heads and the heads file."""
    settings = settings_or_fail()
    url = database_url or settings.database_url
    if not url:
        raise fail("AUDIT_DATABASE_URL is not set; pass --database-url (the reader's URL).")
    public_keys = _public_keys(public_key_files or settings.public_key_files)
    heads_path = heads_file_option or settings.notary_heads_file
    if heads_path is None:
        click.echo(
            "Warning: no heads file given (--heads-file or AUDIT_NOTARY_HEADS_FILE): heads "
            "deleted from the end of the table cannot be noticed.",
            err=True,
        )
    elif not heads_path.is_file():
        raise fail(f"The heads file {heads_path} does not exist or is not a file.")
    connect_check(url)
    engine = db.make_engine(url, pool_size=1)
    bar = None
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                conn.execute(sa.text("SET TRANSACTION READ ONLY"))
                total = _expected_events(conn, since_head)
                if not quiet and total:
                    bar = click.progressbar(length=total, label="Verifying", file=sys.stderr)
                    bar.__enter__()
                seen = [0]

                def progress(done: int) -> None:
                    if bar is not None:
                        bar.update(done - seen[0])
                        seen[0] = done

                report = verify_module.verify_log(
                    conn,
                    public_keys,
                    heads_path=heads_path,
                    since_head=since_head,
                    progress=progress,
                    jobs=jobs,
                )
    except verify_module.VerifyInputError as exc:
        raise fail(str(exc)) from None
    except heads_file.HeadsFileError as exc:
        raise fail(str(exc)) from None
    except (sa.exc.DBAPIError, scan.ScanError) as exc:
        raise fail(
            f"Verification could not finish: {_first_line(exc)}. Nothing was concluded."
        ) from None
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
        engine.dispose()
    _record_result(settings.verify_results_file, report, since_head)
    for problem in report.problems:
        click.echo(str(problem))
    if report.more_problems:
        click.echo(f"... and {report.more_problems:,} more problems.")
    if report.clean:
        click.echo(report.summary())
        return
    raise Tampered(report.summary())


def _record_result(path: Path | None, report, since_head: int | None) -> None:
    """Append the run's result to AUDIT_VERIFY_RESULTS_FILE, for the integrity page."""
    if path is None:
        return
    result = results_file.result_of(
        clean=report.clean,
        summary=report.summary(),
        first_head=report.first_head,
        last_head=report.last_head,
        events=report.events,
        since_head=since_head,
        problems=report.problems,
        more_problems=report.more_problems,
    )
    try:
        results_file.append_result(path, result)
    except results_file.ResultsFileError as exc:
        click.echo(f"Warning: {exc}", err=True)


def _expected_events(conn, since_head: int | None) -> int:
    from . import store

    newest = store.latest_head(conn)
    if newest is None:
        return 0
    base = store.head(conn, since_head - 1) if since_head and since_head > 1 else None
    return max(0, newest.tree_size - (base.tree_size if base else 0))


@click.command("verify-export")
@click.argument("csv_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--proof",
    "proof_file",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="The export's .proof.json.",
)
@click.option(
    "--public-key",
    "public_key_files",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Public key file (repeat; default: AUDIT_PUBLIC_KEY_FILES).",
)
def verify_export(csv_file: Path, proof_file: Path, public_key_files) -> None:
    """Check a CSV export against its proof bundle, offline (no database)."""
    settings = settings_or_fail()
    public_keys = _public_keys(public_key_files or settings.public_key_files)
    try:
        bundle = json.loads(proof_file.read_bytes())
    except FileNotFoundError:
        raise fail(f"The proof file {proof_file} does not exist.") from None
    except OSError as exc:
        raise fail(f"The proof file {proof_file} cannot be read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise fail(f"The proof file {proof_file} is not JSON: {exc}") from None
    try:
        digest = hashlib.sha256()
        with csv_file.open("rb") as raw:
            for chunk in iter(lambda: raw.read(1 << 16), b""):
                digest.update(chunk)
        with csv_file.open(encoding="utf-8", newline="") as text:
            problems = verify_bundle(
                csv.DictReader(text), bundle, public_keys, csv_sha256=digest.hexdigest()
            )
    except FileNotFoundError:
        raise fail(f"The CSV file {csv_file} does not exist.") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise fail(f"The CSV file {csv_file} cannot be read: {exc}") from None
    except BundleError as exc:
        raise fail(f"{proof_file}: {exc}") from None
    for problem in problems:
        click.echo(str(problem))
    head = bundle.get("head", {})
    if not problems:
        click.echo(
            f"{bundle.get('rows', 0):,} rows of {csv_file.name} verified against head "
            f"#{head.get('number')} (key {head.get('key_id')})."
        )
        return
    raise Tampered(
        f"{len(problems):,} problem{'s' if len(problems) != 1 else ''} found in {csv_file.name}."
    )
