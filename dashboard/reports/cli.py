"""``audit-dashboard report``: the compliance report for cron.

Contract (DESIGN.md, "Command line"):

- exit 0 only when the whole file is in place; 2 for input or configuration a person must
  fix (a bad date, ``--to`` before ``--from``, no database URL), 1 when the report failed
  while being made (database error, full disk). Either way a one-paragraph message on
  stderr, never a traceback;
- the report is written to a temporary file beside ``--output`` (same directory, so the
  rename is atomic on POSIX), flushed and fsynced, then renamed over the final name; any
  failure deletes the temporary file. A reader of ``--output`` therefore sees the old file
  or the complete new one, never a truncated report that looks finished;
- progress goes to stderr (a line every few seconds, or a live line on a terminal);
  stdout gets one summary line: file, events, SHA-256 of the CSV, high-water mark;
- the run is written to the access log like a download from the dashboard.
"""

from __future__ import annotations

import gc
import getpass
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import click
import sqlalchemy as sa

from .. import db
from ..spool import fsync_directory

log = logging.getLogger(__name__)

STDERR_EVERY_SECONDS = 5.0
TTY_EVERY_SECONDS = 0.3


class ReportFailed(click.ClickException):
    """The report could not be made (exit 1); the output file was left untouched."""

    exit_code = 1

    def show(self, file=None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


class _Progress:
    """Throttled progress on stderr: a live line on a terminal, a line every few seconds
    otherwise (cron mails or logs it)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.pending = False

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        finished = total is not None and done >= total
        every = TTY_EVERY_SECONDS if self.tty else STDERR_EVERY_SECONDS
        if not finished and now - self.last < every:
            return
        self.last = now
        label = {
            "digest": "CSV digest",
            "csv": "CSV",
            "replay": "replaying records",
            "listing": "listing",
        }.get(stage, stage)
        text = f"{label}: {done:,}" + (f" / {total:,}" if total is not None else "")
        if self.tty:
            click.echo(f"\r{text:<60}", nl=False, err=True)
            self.pending = True
        else:
            click.echo(text, err=True)

    def end(self) -> None:
        if self.pending:
            click.echo("", err=True)
            self.pending = False


def _filter_args(
    time_from: str, time_to: str, types: tuple[str, ...], optional: dict[str, str | None]
) -> dict[str, Any]:
    """The options as the arguments of a search URL, for :func:`parse_event_filter`."""
    args: dict[str, Any] = {"from": time_from, "to": time_to, "type": list(types)}
    args.update({name: value for name, value in optional.items() if value is not None})
    return args


_FLAG_OF = {
    "from": "--from",
    "to": "--to",
    "type": "--type",
    "actor": "--actor",
    "kind": "--kind",
    "tz": "--tz",
    "aggregate_id": "--aggregate-id",
    "request_id": "--request-id",
    "field": "--field",
    "value": "--value",
}


@click.command("report")
@click.option("--from", "time_from", required=True, help="Start, inclusive (ISO 8601).")
@click.option("--to", "time_to", required=True, help="End, exclusive (ISO 8601).")
@click.option("--type", "types", multiple=True, help="Event type; repeat for several.")
@click.option("--actor", help="metadata.actor, matched exactly.")
@click.option("--kind", help="Record kind (USER, ORDER ...).")
@click.option("--tz", help="Zone for --from/--to without an offset (default UTC).")
@click.option("--aggregate-id", help="One record's id.")
@click.option("--request-id", help="metadata.request_id (or correlation_id).")
@click.option("--field", help="Dotted payload path, with --value (profile.email).")
@click.option("--value", help='JSON value the payload holds at --field ("a@b.example", 42).')
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["pdf", "csv"]),
    required=True,
    help="pdf: the compliance report; csv: every matching event.",
)
@click.option(
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="File to write; replaced atomically, only when the report is complete.",
)
@click.option(
    "--through-seq",
    type=click.IntRange(min=0),
    help="High-water mark (seq) of an earlier report, to make the same file again.",
)
@click.option("--masked", is_flag=True, help="Mask personal data as for roles without view_pii.")
@click.option(
    "--proof",
    "proof_output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="With --format csv: also write the proof bundle (JSON) that `verify-export` checks "
    "offline. Without --through-seq the export stops at the newest sealed event.",
)
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
def report(
    time_from,
    time_to,
    types,
    actor,
    kind,
    tz,
    aggregate_id,
    request_id,
    field,
    value,
    output_format,
    output,
    through_seq,
    masked,
    proof_output,
    quiet,
) -> None:
    """Write a compliance report (PDF) or export (CSV) of a period, for cron."""
    from ..cli_base import fail
    from ..cli_base import settings_or_fail as _settings
    from ..filters import FilterError, parse_event_filter

    settings = _settings()
    try:
        optional = {
            "actor": actor,
            "kind": kind,
            "tz": tz,
            "aggregate_id": aggregate_id,
            "request_id": request_id,
            "field": field,
            "value": value,
        }
        f = parse_event_filter(_filter_args(time_from, time_to, types, optional))
    except FilterError as exc:
        said = []  # every bad option at once, each named by its flag
        for problem in exc.problems:
            flag = _FLAG_OF.get(problem.field or "", problem.field or "")
            said.append(f"{flag}: {problem.message}" if flag else problem.message)
        raise fail(" ".join(said)) from None
    if not settings.database_url:
        raise fail(
            "AUDIT_DATABASE_URL is not set. Set it to the audit_reader role's URL "
            "(postgresql://audit_reader:PASSWORD@HOST/DB)."
        )
    if settings.access_log_url:
        from ..access_log.sinks import AccessLogOnStandby, refuse_standby

        try:
            refuse_standby(settings.access_log_url)
        except AccessLogOnStandby as exc:
            raise fail(str(exc)) from None
    output = output.expanduser()
    if not output.parent.is_dir():
        raise fail(f"The directory of --output ({output.parent}) does not exist.")
    if output.exists() and output.is_dir():
        raise fail(f"--output {output} is a directory; give a file name.")
    if proof_output is not None:
        proof_output = proof_output.expanduser()
        if output_format != "csv" or masked:
            raise fail(
                "--proof goes with --format csv and without --masked: the proof is checked "
                "against the sealed events, which a PDF or masked values cannot be."
            )
        if not proof_output.parent.is_dir():
            raise fail(f"The directory of --proof ({proof_output.parent}) does not exist.")

    progress = _Progress(enabled=not quiet)
    started = time.monotonic()
    engine = _engine_or_fail(settings.database_url, fail)
    try:
        scope, table = _scope(engine, settings, masked, fail)
        if proof_output is not None and through_seq is None:
            through_seq = _sealed_through(engine, settings, fail)
        result = _write_atomically(
            output,
            lambda out: _make(out, engine, scope, table, f, output_format, through_seq, progress),
            fail,
        )
    except ReportFailed:
        progress.end()
        _log_access(settings, f, output_format, None, "failed")
        raise
    else:
        progress.end()
        if proof_output is not None:
            proof_line = _write_proof(engine, settings, output, proof_output, result, fail)
    finally:
        progress.end()
        engine.dispose()
    seconds = time.monotonic() - started
    _log_access(settings, f, output_format, result, "ok")
    mark = f"seq {result.mark.seq}" if result.mark.seq is not None else result.mark.describe()
    click.echo(
        f"Wrote {output}: {result.rows:,} events, CSV SHA-256 {result.sha256}, "
        f"high-water mark {mark}, in {seconds:.1f} s."
    )
    if proof_output is not None:
        click.echo(proof_line)


def _sealed_through(engine, settings, fail) -> int:
    """The newest sealed event's seq: an export with a proof stops there."""
    from ..integrity import store

    with db.bounded(engine, settings.statement_timeout_ms) as conn:
        through = store.sealed_through(conn)
    if through is None:
        raise fail("--proof: nothing is sealed yet; run `audit-dashboard seal` first.")
    return through


def _write_proof(engine, settings, csv_path: Path, proof_path: Path, result, fail) -> str:
    """The proof bundle of the CSV just written, from the seqs of its rows."""
    import csv
    import json

    from ..integrity import store

    with csv_path.open(encoding="utf-8", newline="") as handle:
        seqs = [int(row["seq"]) for row in csv.DictReader(handle)]
    try:
        with db.bounded(engine, settings.export_timeout_ms) as conn:
            bundle = store.proof_bundle(conn, seqs, result.sha256)
    except store.NotSealed as exc:
        raise fail(f"--proof: {exc}. {csv_path} was written; the proof was not.") from None
    except store.TreeDataMissing as exc:
        raise ReportFailed(f"--proof: {exc}; run `audit-dashboard verify`.") from None
    data = json.dumps(bundle, separators=(",", ":")).encode("utf-8")
    _write_atomically(proof_path, lambda out: out.write(data), fail)
    head = bundle["head"]
    return (
        f"Wrote {proof_path}: proof of {len(seqs):,} rows against head #{head['number']} "
        f"(key {head['key_id']})."
    )


def _engine_or_fail(url: str, fail: Callable[[str], Exception]):
    try:
        engine = db.make_engine(url, pool_size=1)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except db.DatabaseUnavailable as exc:
        raise fail(str(exc)) from None
    except sa.exc.OperationalError as exc:
        raise fail(db.explain_connection_error(exc, url)) from None
    return engine


def _scope(engine, settings, masked: bool, fail):
    from ..integrity.check import load_key_config
    from ..masking import NO_MASKING, masker_for
    from ..rules import DEFAULT_RULES, load_rules
    from .builder import ReportScope

    try:
        with db.bounded(engine, settings.statement_timeout_ms) as conn:
            table = db.inspect_table(conn)
        db.refuse_writable(table, allow=settings.allow_writable_role)
        rules = load_rules(settings.rules_file) if settings.rules_file else DEFAULT_RULES
        masker = masker_for(settings) if masked else NO_MASKING
    except (db.TableMissing, db.WritableRole) as exc:
        raise fail(str(exc)) from None
    except ValueError as exc:  # a bad rules file or mask pattern names itself
        raise fail(str(exc)) from None
    user = _os_user()
    scope = ReportScope(
        settings=settings,
        table=table,
        rules=rules,
        masker=masker,
        generated_by=f"{user} (audit-dashboard report)",
        key_config=load_key_config(settings.public_key_files),
    )
    return scope, table


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def _make(out: IO[bytes], engine, scope, table, f, output_format, through_seq, progress):
    from . import builder

    # Everything loaded by now (modules, ReportLab) outlives the report, so the cycle
    # collector is told not to walk it at every full collection while the report is made
    # (measured: 9% of a 10,000-event PDF's CPU went to those walks, 5% with this).
    gc.freeze()
    try:
        return _make_report(
            builder, out, engine, scope, table, f, output_format, through_seq, progress
        )
    finally:
        gc.unfreeze()


def _make_report(builder, out, engine, scope, table, f, output_format, through_seq, progress):
    from .csv_export import export_connection, high_water_mark

    with export_connection(engine, scope.settings.export_timeout_ms) as conn:
        try:
            mark = high_water_mark(conn, table, seq=through_seq)
        except ValueError as exc:
            raise _InputProblem(f"--through-seq: {exc}") from None
        now = datetime.now(UTC)
        if output_format == "pdf":
            return builder.build_events_pdf(
                out, conn, scope, f, mark, generated_at=now, progress=progress
            )
        stream = builder.events_csv(conn, scope, f, mark)
        for chunk in stream:
            out.write(chunk)
            progress("csv", stream.rows, None)
        assert stream.sha256 is not None
        return builder.ReportResult(
            stream.rows, stream.sha256, mark, builder.events_filename(f, now, "csv")
        )


class _InputProblem(Exception):
    """Found only once connected (a --through-seq beyond the data): exit 2."""


def _write_atomically(output: Path, make, fail):
    """Write through a temporary file in the same directory, then rename over ``output``."""
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed and renamed below
        mode="wb", dir=output.parent, prefix=f".{output.name}.", suffix=".partial", delete=False
    )
    temporary = Path(handle.name)
    try:
        with handle:
            result = make(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o640)
        os.replace(temporary, output)
        fsync_directory(output.parent)
        return result
    except _InputProblem as exc:
        temporary.unlink(missing_ok=True)
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        temporary.unlink(missing_ok=True)
        raise
    except Exception as exc:
        temporary.unlink(missing_ok=True)
        log.debug("The report failed", exc_info=True)  # `audit-dashboard -v report` shows it
        raise ReportFailed(
            f"The report failed and was not written ({_reason(exc)}). {output} was left as it was."
        ) from None


def _reason(exc: BaseException) -> str:
    if db.is_query_canceled(exc):
        return (
            "the database query hit its time limit, AUDIT_EXPORT_TIMEOUT_MS; narrow the "
            "period or raise the limit"
        )
    text = str(getattr(exc, "orig", None) or exc).strip()
    first = text.splitlines()[0] if text else exc.__class__.__name__
    return f"{exc.__class__.__name__}: {first}"


def _log_access(settings, f, output_format: str, result, outcome: str) -> None:
    """One access-log entry per run, as a download from the dashboard would write."""
    from ..access_log import AccessEntry, AccessLogger

    filters: dict[str, Any] = {}
    for name, value in f.to_args():
        if name in filters:
            existing = filters[name]
            filters[name] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            filters[name] = value
    entry = AccessEntry(
        id=None,
        at=datetime.now(UTC),
        username=f"cli:{_os_user()}",
        role=None,
        action=f"report_{output_format}",
        route="audit-dashboard report",
        filters=filters,
        row_count=result.rows if result is not None else None,
        export_digest=result.sha256 if result is not None else None,
        outcome=outcome,
    )
    logger = AccessLogger(settings)
    try:
        if not logger.write(entry):
            click.echo(
                "Warning: the access log entry could not be written (see above); it is kept in "
                f"{logger.spool.path} and written when the log is back.",
                err=True,
            )
    finally:
        logger.dispose()
