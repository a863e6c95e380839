"""Exports and reports: streamed CSV downloads and the PDF reports.

Two blueprints:

- ``exports``: ``/export/events.csv`` (any search), ``/export/as-of.csv`` (the as-of page),
  ``/export/aggregates/<id>.csv`` and ``.pdf`` (one record's history, for support and
  data-subject requests). They answer JSON errors, like the API.
- ``reports``: ``/reports``, the compliance report form, and ``/reports/events.pdf``.

Streaming contract of the CSV downloads (the point of this module):

- arguments are parsed and the database is asked for the high-water mark *before* the
  response starts, so a bad filter or an unreachable database is a proper 400/503;
- the export is recorded as ``started`` in the access log before anything is read (503 when
  the log cannot take it), and its outcome after the last byte;
- the query runs up to its first chunk before the response starts, so a database that fails
  then is a 503 with a message (nothing sent), never a 500;
- the body comes from a dedicated export connection (:func:`open_export_connection`), not
  the page's; it is closed when the stream ends, however it ends;
- a database error mid-stream is raised inside the response iterator, so the WSGI server
  aborts the chunked response without its terminating chunk: browsers and curl report a
  failed download instead of saving a file that looks complete. The access log records
  the failure (in the spool first, when the database that died holds the log too);
- a client that goes away closes the iterator: the COPY is cancelled on the server and the
  connection discarded at once (:class:`dashboard.reports.csv_export.CsvStream`).

The headers carry the file name (filter and time) and the high-water mark, so the same
file can be made again: ``through_seq=<mark>`` with the same filter gives the same bytes.
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, g, render_template, request, stream_with_context

from .. import access_log, auth, budget, context, freshness, queries, replica
from ..errors import error_response
from ..filters import (
    EventFilter,
    FilterError,
    Problems,
    check_arg_names,
    parse_aggregate_id,
    parse_event_filter,
    parse_time,
    parse_timezone,
)
from ..integrity import store as integrity_store
from ..reports import builder
from ..reports.csv_export import HighWaterMark, high_water_mark, open_export_connection
from ..reports.csv_format import content_disposition, export_filename
from . import present

log = logging.getLogger(__name__)

exports = Blueprint("exports", __name__)
reports = Blueprint("reports", __name__)

CSV_MIMETYPE = "text/csv; charset=utf-8"
PDF_MIMETYPE = "application/pdf"
MAX_SEQ_DIGITS = 19  # a bigint


def _scope() -> builder.ReportScope:
    ctx = context.app_context()
    user = g.user
    return builder.ReportScope(
        settings=ctx.settings,
        table=ctx.probe(),
        rules=ctx.rules,
        masker=auth.masker(),
        generated_by=f"{user.name} ({user.role})",
        key_config=context.integrity_keys(),
    )


def _through_seq(text: str | None) -> int | None:
    """``through_seq``: an earlier high-water mark, to make the same file again."""
    if text is None or text.strip() == "":
        return None
    text = text.strip()
    if not text.isdigit() or len(text) > MAX_SEQ_DIGITS:
        raise FilterError(
            "through_seq must be a whole number: the high-water mark printed on a report.",
            "through_seq",
        )
    return int(text)


# The mark of an export that is not of audit_events (the access log's): none.
NO_MARK = HighWaterMark(None, None)


def _parse_export_args() -> tuple[EventFilter, int | None]:
    """The filter and ``through_seq`` of an export, every bad argument reported at once."""
    problems = Problems()
    f = problems.check(parse_event_filter, request.args, allowed_extra=("through_seq",))
    through_seq = problems.check(_through_seq, request.args.get("through_seq"))
    problems.raise_any()
    return f, through_seq


def _open(through_seq: int | None, *, with_mark: bool = True):
    """The export connection and its high-water mark (FilterError for a bad through_seq)."""
    ctx = context.app_context()
    table = ctx.probe()
    conn = open_export_connection(ctx.engine, ctx.settings.export_timeout_ms)
    if not with_mark:
        return conn, NO_MARK
    try:
        mark = high_water_mark(conn, table, seq=through_seq)
        # Read from a hot standby: the export says how far it had replayed (a header).
        g.audit_export_position = freshness.report_position(replica.read_status(conn))
    except ValueError as exc:
        conn.close()
        raise FilterError(str(exc), "through_seq") from None
    except BaseException:
        conn.close()
        raise
    return conn, mark


def _headers(filename: str, mark: HighWaterMark) -> dict[str, str]:
    headers = {
        "Content-Disposition": content_disposition(filename),
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }
    if mark.seq is not None:
        headers["X-Audit-High-Water-Mark"] = str(mark.seq)
    if mark.created_at is not None:
        headers["X-Audit-High-Water-Time"] = mark.created_at.isoformat()
    position = g.get("audit_export_position")
    if position:
        headers["X-Audit-Replica-Position"] = position
    return headers


def _stream_csv(conn, stream) -> Iterator[bytes]:
    """Yield the CSV; write its outcome at the end; on any failure close the connection and
    let the error end the response without its final chunk."""
    outcome = "failed"
    try:
        # The export's own time budget, not the page's (the stream outlives the view).
        yield from budget.budgeted(stream, context.settings().export_timeout_ms / 1000)
        outcome = "ok"
    except GeneratorExit:  # the client went away; CsvStream has cancelled the COPY
        log.info("Export abandoned by the client after %s rows", stream.rows)
        raise
    except Exception:
        log.exception("Export failed mid-stream; the download is aborted")
        raise
    finally:
        try:
            if outcome != "ok":
                conn.invalidate()  # never pool a connection an export broke off
            conn.close()
        finally:
            # Bytes may have left: an outcome the log cannot take waits in the spool.
            access_log.finish_export(
                outcome,
                row_count=stream.rows if stream.complete else None,
                export_digest=stream.sha256 if stream.complete else None,
                may_withhold=False,
            )


def _primed(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    """``first`` then the rest; closing this closes ``rest`` (a client that went away)."""
    try:
        yield first
        yield from rest
    finally:
        rest.close()  # type: ignore[attr-defined]  # a generator


def _opened_export(through_seq: int | None, *, with_mark: bool = True, **log_values: Any):
    """Record the export as started (503 when the log cannot take it), then open its
    connection; a failure to open is recorded as the export's outcome."""
    access_log.start_export(**log_values)
    try:
        return _open(through_seq, with_mark=with_mark)
    except BaseException:
        access_log.finish_export("failed", may_withhold=False)
        raise


def csv_response(
    make_stream: Callable[[Any, HighWaterMark], Any],
    filename: str,
    through_seq: int | None,
    *,
    with_mark: bool = True,
    **log_values: Any,
) -> Response:
    """A streamed CSV download under the contract of this module's docstring.

    ``make_stream(conn, mark)`` gives the CSV stream (``rows``, ``sha256``, ``complete``,
    as :class:`~dashboard.reports.csv_format.EncodedCsv`) read from the export's own
    connection; ``log_values`` are the access-log entry's (``action``, ``filters``...).
    ``with_mark=False`` for a CSV that is not of audit_events: no high-water mark.
    """
    conn, mark = _opened_export(through_seq, with_mark=with_mark, **log_values)
    try:
        stream = make_stream(conn, mark)
    except BaseException:
        conn.invalidate()
        conn.close()
        access_log.finish_export("failed", may_withhold=False)
        raise
    body = _stream_csv(conn, stream)
    # Run the query up to its first chunk before answering: a database that fails now (a
    # timeout, a server shutting down) is an honest 503 with a message, not a 500 from the
    # WSGI server or a "200" that ends at once. Past this point a failure cuts the transfer.
    first = next(body, b"")
    response = Response(
        stream_with_context(_primed(first, body)),
        mimetype=CSV_MIMETYPE,
        headers=_headers(filename, mark),
    )
    response.call_on_close(conn.close)  # a response never iterated still frees it
    return response


@exports.get("/export/events.csv")
def events_csv():
    """Every event matching the search filter, oldest first, streamed through COPY."""
    f, through_seq = _parse_export_args()
    scope = _scope()
    now = datetime.now(UTC)
    filename = builder.events_filename(f, now, "csv")
    return csv_response(
        lambda conn, mark: builder.events_csv(conn, scope, f, mark),
        filename,
        through_seq,
        action="export_csv",
        filters=present.filters_for_log(f),
    )


@exports.get("/export/events.proof.json")
def events_proof():
    """The proof bundle of ``/export/events.csv`` with the same filter and ``through_seq``:
    each row's leaf hash and a Merkle multiproof against the newest signed head, checked
    offline by ``audit-dashboard verify-export``.

    The CSV is made again here in the same way (same builder, same high-water mark, so the
    same bytes) to take its SHA-256, which the bundle binds. Without ``through_seq`` the mark
    is the newest event, as for the CSV; when rows above the newest head are in the export
    the answer is 409 naming the seq to export through. A masked export holds values that
    were never sealed: 409 too, saying so.
    """
    f, through_seq = _parse_export_args()
    scope = _scope()
    log_values = {"action": "export_proof", "filters": present.filters_for_log(f)}
    if scope.masked:
        access_log.note(**log_values, row_count=0)
        return error_response(
            409,
            "A masked export cannot be proven: its values are not the sealed ones. Ask a user "
            "with the view_pii permission for the export and its proof.",
        )
    conn, mark = _open(through_seq)
    try:
        with budget.work_budget(context.settings().export_timeout_ms / 1000):
            stream = builder.events_csv(conn, scope, f, mark)
            builder.drain(stream)
            seqs = builder.events_seqs(conn, scope, f, mark)
            bundle = integrity_store.proof_bundle(conn, seqs, stream.sha256)
    except integrity_store.NotSealed:
        through = integrity_store.sealed_through(conn)
        conn.invalidate()
        access_log.note(**log_values, row_count=0)
        return error_response(
            409,
            "No proof for this export: some of its events are not sealed yet (the notary "
            "seals new events every minute or so). "
            + (
                f"Export with through_seq={through}, the newest sealed event, for a CSV and a "
                "proof that match."
                if through is not None
                else "Nothing is sealed yet."
            ),
        )
    except integrity_store.TreeDataMissing as exc:
        conn.invalidate()
        access_log.note(**log_values, row_count=0)
        return error_response(
            503, f"No proof for this export: {exc}. Run `audit-dashboard verify`."
        )
    except BaseException:
        conn.invalidate()
        access_log.record(**log_values, outcome="failed")
        raise
    finally:
        conn.close()
    access_log.note(**log_values, row_count=len(seqs), export_digest=stream.sha256)
    headers = _headers(builder.events_filename(f, datetime.now(UTC), "proof.json"), mark)
    headers["X-Audit-CSV-SHA256"] = stream.sha256
    return Response(
        json.dumps(bundle, separators=(",", ":")),
        mimetype="application/json",
        headers=headers,
    )


@exports.get("/export/as-of.csv")
def as_of_csv():
    """Every record of a kind as it was at a time (the as-of page), one row per record."""
    problems = Problems()
    problems.check(check_arg_names, request.args, ("kind", "at", "tz", "through_seq"))
    zone = request.args.get("tz") or context.settings().display_timezone
    tz = problems.check(parse_timezone, zone) or "UTC"
    kind = (request.args.get("kind") or "").strip()
    if not kind:
        problems.add(FilterError("Choose the kind of record to export.", "kind"))
    at = problems.check(parse_time, request.args.get("at"), "at", tz=tz) or datetime.now(UTC)
    through_seq = problems.check(_through_seq, request.args.get("through_seq"))
    problems.raise_any()
    scope = _scope()
    conn = context.connection()
    event_types = list(conn.execute(queries.select_event_types(table=scope.table)).scalars())
    declared = set(conn.execute(queries.select_declared_kinds(table=scope.table)).scalars())
    # The same rule as the as-of page: records declaring the kind, plus those created by
    # one of its create types without declaring it.
    create_types = queries.create_types_for_kind(kind, event_types, scope.rules)
    if kind not in declared and not create_types:
        raise FilterError(f"There are no records of kind {kind!r}.", "kind")
    filename = export_filename(
        "audit-as-of", [("kind", kind), ("at", at.isoformat())], datetime.now(UTC), "csv"
    )
    return csv_response(
        lambda export_conn, mark: builder.as_of_csv(
            export_conn, scope, kind, at, mark, create_types
        ),
        filename,
        through_seq,
        action="export_as_of_csv",
        filters={"kind": kind, "at": at.isoformat()},
    )


def _record_id(aggregate_id: str) -> uuid.UUID:
    record_id = parse_aggregate_id(aggregate_id)
    if record_id is None:
        raise FilterError("Give the record id.", "aggregate_id")
    return record_id


@exports.get("/export/aggregates/<aggregate_id>.csv")
def record_csv(aggregate_id: str):
    """One record's complete history as CSV, with what each event changed."""
    record_id = _record_id(aggregate_id)
    check_arg_names(request.args, ("through_seq", "reason"))
    refused = access_log.require_reason(record_id)
    if refused is not None:
        return refused
    through_seq = _through_seq(request.args.get("through_seq"))
    scope = _scope()
    filename = builder.record_filename(record_id, datetime.now(UTC), "csv")
    return csv_response(
        lambda conn, mark: builder.record_csv(conn, scope, record_id, mark),
        filename,
        through_seq,
        action="export_record_csv",
        filters={"aggregate_id": str(record_id)},
        aggregate_ids=[str(record_id)],
    )


@exports.get("/export/aggregates/<aggregate_id>.pdf")
def record_pdf(aggregate_id: str):
    """One record's complete history as PDF: final state, then the timeline with diffs."""
    record_id = _record_id(aggregate_id)
    check_arg_names(request.args, ("through_seq", "reason"))
    refused = access_log.require_reason(record_id)
    if refused is not None:
        return refused
    through_seq = _through_seq(request.args.get("through_seq"))
    scope = _scope()
    now = datetime.now(UTC)

    def build(out, conn, mark):
        return builder.build_record_pdf(out, conn, scope, record_id, mark, generated_at=now)

    return _pdf_response(
        build,
        builder.record_filename(record_id, now, "pdf"),
        through_seq,
        action="export_record_pdf",
        filters={"aggregate_id": str(record_id)},
        aggregate_ids=[str(record_id)],
    )


def _pdf_response(build, filename: str, through_seq: int | None, **log_values: Any):
    """Build the whole PDF first (ReportLab writes it at the end anyway), then send it with
    a Content-Length: a PDF that failed half-way is an error page, never a broken file.
    Nothing has left when its outcome is written, so an outcome the log cannot take
    withholds the PDF (503) like a page."""
    conn, mark = _opened_export(through_seq, **log_values)
    out = io.BytesIO()
    try:
        # Built whole before the first byte, so a client that leaves does not stop it: the
        # export's time budget does (AUDIT_EXPORT_TIMEOUT_MS), as its statements' limit.
        with budget.work_budget(context.settings().export_timeout_ms / 1000):
            result = build(out, conn, mark)
    except BaseException:
        conn.invalidate()  # whatever state the failure left it in, it is not pooled again
        access_log.finish_export("failed", may_withhold=False)
        raise
    finally:
        conn.close()
    access_log.finish_export("ok", result.rows, result.sha256, may_withhold=True)
    headers = _headers(filename, mark)
    headers["X-Audit-CSV-SHA256"] = result.sha256
    return Response(out.getvalue(), mimetype=PDF_MIMETYPE, headers=headers)


# --- The compliance report form ---------------------------------------------------------------

# The form's own argument: "count the events first" (the Count button, the period presets).
COUNT_ARG = "count"


def _form_context(
    error: FilterError | None = None,
    f: EventFilter | None = None,
    count: queries.EventCount | None = None,
) -> dict[str, Any]:
    settings = context.settings()
    conn = context.connection()
    rules = context.app_context().rules
    event_types = list(
        conn.execute(queries.select_event_types(table=context.table_info())).scalars()
    )
    tz = request.args.get("tz") or settings.display_timezone
    try:
        tz = parse_timezone(tz)
    except FilterError:
        tz = settings.display_timezone  # the presets need a zone; the error says what is wrong
    # Presets keep the other fields of the form (and count at once).
    keep = [
        (name, value)
        for name, value in request.args.items(multi=True)
        if name in ("type", "actor", "kind") and value
    ]
    keep.append(("tz", tz))
    return {
        "event_types": event_types,
        "kinds": queries.known_kinds(conn, event_types, rules, context.table_info()),
        "zones": present.zone_choices(settings.display_timezone, request.args.get("tz", "")),
        "form": {
            "from": request.args.get("from", ""),
            "to": request.args.get("to", ""),
            "types": request.args.getlist("type"),
            "actor": request.args.get("actor", ""),
            "kind": request.args.get("kind", ""),
            "tz": request.args.get("tz") or settings.display_timezone,
        },
        "periods": present.period_links(
            "reports.form",
            keep,
            tz,
            chosen=(f.time_from, f.time_to) if f is not None else (None, None),
            extra=[(COUNT_ARG, "1")],
        ),
        "count": count,
        "count_scope": f.describe().removesuffix(", newest first") if f is not None else None,
        "cap": settings.pdf_max_events,
        "org_name": settings.org_name,
        "error": error.message if error else None,
        "error_field": error.field if error else None,
        "field_errors": error.by_field if error else {},
    }


@reports.get("/reports")
def form():
    """The compliance report form: period and filters, then PDF or CSV.

    With ``count=1`` (the Count button, or a period preset) the form comes back with how
    many events the report would hold: exact when that is cheap, else the planner's
    estimate, labelled (:func:`dashboard.queries.count_events`).
    """
    if not request.args.get(COUNT_ARG):
        return render_template("reports/form.html", **_form_context())
    try:
        f = parse_event_filter(request.args, allowed_extra=(COUNT_ARG,))
    except FilterError as exc:
        access_log.note(action="report_count", row_count=0)
        return render_template("reports/form.html", **_form_context(exc)), 400
    settings = context.settings()
    conn = context.connection()
    create_types = None
    if f.kind:
        event_types = list(
            conn.execute(queries.select_event_types(table=context.table_info())).scalars()
        )
        rules = context.app_context().rules
        create_types = queries.create_types_for_kind(f.kind, event_types, rules)
    count = queries.count_events(
        conn,
        f,
        timeout_ms=settings.facet_timeout_ms,
        restore_timeout_ms=settings.statement_timeout_ms,
        create_types=create_types,
    )
    access_log.note(action="report_count", filters=present.filters_for_log(f), row_count=0)
    return render_template("reports/form.html", **_form_context(None, f, count))


@reports.get("/reports/events.pdf")
def events_pdf():
    """The compliance PDF of a filter; a bad filter shows the form again with the reason."""
    try:
        f, through_seq = _parse_export_args()
        scope = _scope()
        now = datetime.now(UTC)

        def build(out, conn, mark):
            return builder.build_events_pdf(out, conn, scope, f, mark, generated_at=now)

        return _pdf_response(
            build,
            builder.events_filename(f, now, "pdf"),
            through_seq,
            action="export_pdf",
            filters=present.filters_for_log(f),
        )
    except FilterError as exc:
        access_log.note(action="export_pdf", row_count=0)
        return render_template("reports/form.html", **_form_context(exc)), 400
