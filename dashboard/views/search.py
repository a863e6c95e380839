"""The search page: every event matching a filter, newest first, paged by keyset.

The URL holds the whole state (filters, order, page position), so a link pasted into a
ticket opens the same page; the "permalink" pins a preset like "last hour" to absolute
times. The query is :func:`dashboard.queries.select_events`, the same one /api/events and
the CSV export run. Facet counts (by type, by actor) have their own, shorter time limit
and say "not counted" rather than fail the page.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple
from urllib.parse import urlencode

import sqlalchemy as sa
from flask import Blueprint, current_app, g, redirect, render_template, request, url_for
from jinja2.environment import TemplateModule
from psycopg.errors import InsufficientPrivilege
from werkzeug.datastructures import MultiDict

from .. import access_log, background, context, db, queries, shape
from ..errors import TOO_BROAD
from ..filters import (
    DEFAULT_LIMIT,
    RANGE_PRESETS,
    EventFilter,
    FilterError,
    IdPrefix,
    parse_id_prefix,
    parse_search,
)
from ..integrity import check as integrity_check
from ..permissions import EXPORT
from . import present

bp = Blueprint("search", __name__)

PAGE_SIZES = (25, 50, 100, 200, 500)


@dataclass(frozen=True)
class FormValues:
    """What the search form shows: the parsed filter when valid, else what was typed."""

    aggregate_id: str = ""
    types: tuple[str, ...] = ()
    actor: str = ""
    range: str = ""
    time_from: str = ""
    time_to: str = ""
    tz: str = "UTC"
    request_id: str = ""
    field: str = ""
    value: str = ""
    kind: str = ""
    order: str = "desc"
    limit: str = str(DEFAULT_LIMIT)

    @classmethod
    def from_args(cls, args: MultiDict, default_tz: str) -> FormValues:
        return cls(
            aggregate_id=args.get("aggregate_id", ""),
            types=tuple(args.getlist("type")),
            actor=args.get("actor", ""),
            range=args.get("range", ""),
            time_from=args.get("from", ""),
            time_to=args.get("to", ""),
            tz=args.get("tz") or default_tz,
            request_id=args.get("request_id", ""),
            field=args.get("field", ""),
            value=args.get("value", ""),
            kind=args.get("kind", ""),
            order=args.get("order", "desc"),
            limit=args.get("limit", str(DEFAULT_LIMIT)),
        )

    @classmethod
    def from_filter(cls, f: EventFilter, args: MultiDict, limit: int) -> FormValues:
        """Times are shown in the filter's zone; a preset stays selected as a preset."""
        values = dict(f.to_args())
        preset = args.get("range", "")
        custom = preset not in RANGE_PRESETS
        return cls(
            aggregate_id=values.get("aggregate_id", ""),
            types=f.types,
            actor=f.actor or "",
            range=preset if not custom else ("custom" if f.time_from or f.time_to else ""),
            time_from=present.input_time(f.time_from, f.tz) if custom else "",
            time_to=present.input_time(f.time_to, f.tz) if custom else "",
            tz=f.tz,
            request_id=f.request_id or "",
            field=values.get("field", ""),
            value=values.get("value", ""),
            kind=f.kind or "",
            order=f.order,
            limit=str(limit),
        )


@bp.get("/search")
def search():
    """Search events. First visit (no arguments) shows what to do instead of results."""
    settings = context.settings()
    conn = context.connection(single_statements=True)
    table = context.table_info()
    rules = context.app_context().rules
    lists = present.form_lists(conn)
    event_types, kinds = lists.event_types, lists.kinds
    base = {
        "event_types": event_types,
        "kinds": kinds,
        "presets": RANGE_PRESETS,
        "page_sizes": PAGE_SIZES,
        "audit_table": table,
    }
    default_tz = settings.display_timezone
    if not request.args:
        form = FormValues(tz=default_tz)
        return render_template(
            "search/search.html",
            form=form,
            zones=present.zone_choices(default_tz),
            first_visit=True,
            **base,
        )
    prefix = parse_id_prefix(request.args.get("aggregate_id"))
    if prefix is not None:
        return _record_prefix(conn, prefix, base, default_tz)
    try:
        f, paging = parse_search(request.args)
    except FilterError as exc:
        form = FormValues.from_args(request.args, default_tz)
        access_log.note(action="search", row_count=0)
        return (
            render_template(
                "search/search.html",
                form=form,
                zones=present.zone_choices(default_tz, form.tz),
                error=exc.message,
                error_field=exc.field,
                field_errors=exc.by_field,
                **base,
            ),
            400,
        )
    form = FormValues.from_filter(f, request.args, paging.limit)
    render = dict(base, form=form, zones=present.zone_choices(default_tz, f.tz), filter=f)
    create_types = queries.create_types_for_kind(f.kind, event_types, rules) if f.kind else None
    # The counts start now, on their own connection, and run beside the page's query.
    outline_of = _start_outline(f, create_types, queries.all_create_types(event_types, rules))
    # The page's rows, the kinds of their records and how far a proof can go in one
    # statement.
    statement = queries.with_first_event(
        queries.select_events(
            f, table, cursor=paging.cursor, backward=paging.backward, create_types=create_types
        ),
        table,
    )
    through_column = integrity_check.provable_through_column(table) if _offers_proof() else None
    tree_refused = False  # the rows query was refused its proof column (a REVOKE since)

    def fetch(statement: sa.Select) -> queries.Page:
        return queries.fetch_page(
            conn,
            statement,
            paging.limit,
            backward=paging.backward,
            has_previous=paging.cursor is not None,
        )

    try:
        try:
            page = fetch(
                statement if through_column is None else statement.add_columns(through_column)
            )
        except sa.exc.ProgrammingError as exc:
            # The tree tables readable at start-up are not any more (a REVOKE since): the
            # rows without the offer's column (autocommit: nothing to roll back first).
            if through_column is None or not isinstance(exc.orig, InsufficientPrivilege):
                raise
            through_column = None
            tree_refused = True
            page = fetch(statement)
    except sa.exc.DBAPIError as exc:
        if not db.is_query_canceled(exc):
            raise
        access_log.note(action="search", row_count=0, filters=present.filters_for_log(f))
        return render_template("search/search.html", error=TOO_BROAD, **render), 503
    events = page.events
    # The entry is complete: it is written while the page waits for its counts and renders.
    access_log.write_ahead(
        action="search",
        aggregate_ids=sorted({event.aggregate_id for event in events}),
        row_count=len(events),
        filters=present.filters_for_log(f),
    )
    outline = outline_of()
    mask = present.masker()
    kinds_of = present.page_record_kinds(page.rows, rules, conn, table)
    now = datetime.now(UTC)  # one "now" for the whole page's "3 minutes ago"
    rows = [
        present.event_row(event, mask, rules, f.tz, kind=kinds_of.get(event.aggregate_id), now=now)
        for event in events
    ]
    args = f.to_args()
    limit_args = [("limit", str(paging.limit))] if paging.limit != DEFAULT_LIMIT else []
    newer, older = (page.prev_cursor, page.next_cursor)
    if f.order == "asc":
        newer, older = older, newer
    return render_template(
        "search/search.html",
        rows=rows,
        shape=outline,
        chips=_chips(args),
        permalink=present.page_url(
            "search.search",
            args
            + limit_args
            + (
                [("before" if paging.backward else "cursor", paging.cursor.encode())]
                if paging.cursor
                else []
            ),
        ),
        flip_order_url=present.page_url(
            "search.search",
            [pair for pair in args if pair[0] != "order"]
            + ([("order", "asc")] if f.order == "desc" else [])
            + limit_args,
        ),
        newer_url=_page_link(args + limit_args, newer, forward=f.order == "asc"),
        older_url=_page_link(args + limit_args, older, forward=f.order == "desc"),
        proof=_proof_offer(
            f, page.rows, carried=through_column is not None, tree_refused=tree_refused
        ),
        **render,
    )


def _offers_proof() -> bool:
    """Whether this user's search page offers a proven CSV (they may export, unmasked)."""
    return g.user.can(EXPORT) and not present.masker().active


def _proof_offer(
    f: EventFilter, rows: Sequence[Any], *, carried: bool, tree_refused: bool = False
) -> dict[str, Any] | None:
    """Beside "Download CSV": the CSV up to the newest sealed event and its .proof.json
    (same filter, same high-water mark, so the proof binds that file), or why there is none.
    ``carried``: the page's ``rows`` carry the high-water mark (each the same); otherwise,
    or with no rows, it is looked up here. ``tree_refused``: the rows query was refused
    the tree tables (their reason is that, not "nothing is sealed")."""
    if not _offers_proof():
        if not g.user.can(EXPORT):
            return None
        return {"reason": "masked exports cannot be proven (their values are not the sealed ones)"}
    if tree_refused:
        return {"reason": integrity_check.TREE_UNREADABLE}
    if carried and rows:
        through = rows[0].provable_through
    else:
        try:
            through = integrity_check.provable_through(
                context.connection(single_statements=True), context.table_info()
            )
        except integrity_check.TreeUnreadable:
            return {"reason": integrity_check.TREE_UNREADABLE}
    if through is None:
        return {"reason": "nothing is sealed yet"}
    pairs = [*f.to_args(), ("through_seq", str(through))]
    query = urlencode(pairs)
    return {
        "through": through,
        "csv_url": url_for("exports.events_csv") + "?" + query,
        "proof_url": url_for("exports.events_proof") + "?" + query,
    }


def _record_prefix(conn, prefix: IdPrefix, base: dict[str, Any], default_tz: str):
    """A short record id typed or pasted: one match searches its full id (a redirect, so
    the URL and permalink name the record for good); several are listed to choose from;
    none says so. Pages only: the API takes full ids, whose meaning cannot change as
    records are added."""
    found = queries.ids_with_prefix(conn, "record", prefix, table=context.table_info())
    rest = [(k, v) for k, v in request.args.items(multi=True) if k not in ("aggregate_id",)]
    rest = [(k, v) for k, v in rest if k not in ("cursor", "before")]

    def search_for(record_id) -> str:
        return present.page_url("search.search", [("aggregate_id", str(record_id)), *rest])

    if len(found) == 1:
        return redirect(search_for(found[0]), 303)
    form = FormValues.from_args(request.args, default_tz)
    zones = present.zone_choices(default_tz, form.tz)
    access_log.note(action="search_id_prefix", aggregate_ids=found, row_count=len(found))
    if not found:
        message = (
            f"No record id starts with {prefix.text}. Check the digits, or search by actor "
            "or time instead."
        )
        return (
            render_template(
                "search/search.html",
                form=form,
                zones=zones,
                error=message,
                error_field="aggregate_id",
                field_errors={"aggregate_id": message},
                **base,
            ),
            404,
        )
    more = len(found) > queries.ID_PREFIX_CANDIDATES
    candidates = [(str(record_id), search_for(record_id)) for record_id in found]
    return render_template(
        "search/search.html",
        form=form,
        zones=zones,
        prefix=prefix.text,
        candidates=candidates[: queries.ID_PREFIX_CANDIDATES],
        more_candidates=more,
        **base,
    )


FACET_CACHE_SECONDS = 60.0
FACET_CACHE_SIZE = 256
TOO_SLOW = queries.NOT_COUNTED


class BarLink(NamedTuple):
    """A bar of the activity chart as the page draws it (SVG and table): its search and
    its figures as text, made once with the outline (the template only prints them)."""

    url: str  # the search of its interval
    interval: str  # "start – end" in the search's zone
    count: int
    count_text: str  # "1,234"
    title: str  # "1,234 events"
    x: str
    width: str
    fill_y: str  # top of the filled part: CHART_HEIGHT - height
    height: str


def _bar_link(bar: shape.Bar, url: str, interval: str) -> BarLink:
    count = bar.count
    count_text = f"{count:,}"
    return BarLink(
        url=url,
        interval=interval,
        count=count,
        count_text=count_text,
        title=f"{count_text} event{'' if count == 1 else 's'}",
        x=str(bar.x),
        width=str(bar.width),
        fill_y=str(shape.CHART_HEIGHT - bar.height),
        height=str(bar.height),
    )


@dataclass(frozen=True)
class Outline:
    """The shape of a search: how many events, of what, and when they happened."""

    total: int | None  # exact, when counted
    estimate: int  # the planner's, always
    facets: queries.Facets
    chart: shape.Chart | None
    estimated: bool = False  # facets and chart scaled up from a sample of the table
    bars: tuple[BarLink, ...] = ()
    description: str = ""
    reason: str | None = None  # why there is no chart
    # The page's activity section and facet lists, rendered once with the rest (_drawn): a
    # template module prints as its rendered (autoescaped) body.
    activity_html: TemplateModule | str = ""
    facets_html: TemplateModule | str = ""


def _start_outline(f: EventFilter, create_types, kind_create_types) -> Callable[[], Outline]:
    """Total, facets and activity chart of a search: one bounded scan (exact when the
    planner expects few enough rows, else from a sample, labelled), under the facet time
    limit, reused for a minute (or its running out of time): the next pages of a search
    have the same counts.

    Counted in a background task on the facet connection (:meth:`AppContext.facet_engine`)
    while the page runs its own query; the function returned waits for it. Statements: the
    planner's estimate (EXPLAIN), the counts, and once a minute the table's bounds and size
    for a search without a range."""
    app = current_app._get_current_object()
    cache = app.extensions.setdefault("audit_facet_cache", {})
    key = (tuple(f.to_args()), tuple(create_types or ()))
    now = time.monotonic()
    cached = cache.get(key)
    if cached is not None and now - cached[0] < FACET_CACHE_SECONDS:
        return lambda: _built_outline(f, cached)
    ctx = context.app_context()
    facts = app.extensions.setdefault("audit_table_facts", {})
    task = background.submit(
        _count_outline,
        ctx.facet_engine(),
        facts,
        f,
        create_types,
        kind_create_types,
        ctx.probe().distributed,
    )
    wait_s = (
        3 * db.client_wait_limit_s(ctx.settings.facet_timeout_ms) + 2 * db.MAX_CONNECT_TIMEOUT_S
    )

    def outline() -> Outline:
        try:
            counted = task.result(timeout=wait_s)
        except FutureTimeout:  # bounded by the connection's own waits; this is a backstop
            facets = queries.not_counted().facets
            return _drawn(f, Outline(None, 0, facets, None, reason=TOO_SLOW))
        # Counted, or out of time ("not counted"): either is reused for the minute. A
        # search whose counts cannot finish in the limit would otherwise make every next
        # page wait the whole limit again (a month's search on a 10M-event Citus table:
        # 0.9 s a page, every page).
        if counted[4] is not None:
            if len(cache) >= FACET_CACHE_SIZE:
                cache.clear()
            entry = cache[key] = (now, counted, {})
            return _built_outline(f, entry)
        return _outline(f, *counted)

    return outline


def _built_outline(f: EventFilter, entry: tuple) -> Outline:
    """The outline of cached counts, built once per script root and reused with them: a
    function of the counts, the filter (the cache key) and the root its links start with
    alone, so every page of the search for that minute shows the same one without
    re-drawing its chart and re-building its hundred links."""
    built = entry[2]
    root = request.script_root
    outline = built.get(root)
    if outline is None:
        outline = built[root] = _outline(f, *entry[1])
    return outline


def _outline(f: EventFilter, *counted) -> Outline:
    return _drawn(f, _counted_outline(f, *counted))


def _drawn(f: EventFilter, outline: Outline) -> Outline:
    """``outline`` with its activity section and facet lists rendered (autoescaped, as any
    template): ~2,000 escaped values on a month's search, most of a page's rendering, done
    once per cached count (see _built_outline) instead of once per page. The partials read
    nothing but the outline and the filter's facet links: no user, no masking (the counts
    are the same for every role that searches)."""
    env = current_app.jinja_env
    return replace(
        outline,
        activity_html=env.get_template("search/_activity.html").make_module({"shape": outline}),
        facets_html=env.get_template("search/_facets.html").make_module(
            {"facets": outline.facets, "facet_values": _facet_values(f, outline.facets)}
        ),
    )


def _counted_outline(f: EventFilter, estimate, start, end, bucket, counted) -> Outline:
    if counted is None:
        empty = queries.Facets(
            *(queries.Facet(name, counted=True) for name in ("type", "actor", "kind", "day"))
        )
        return Outline(0, estimate, empty, None, reason="No events yet.")
    facets = _days_as_dates(counted.facets, f.tz)
    if counted.bars is None:
        return Outline(None, estimate, facets, None, reason=TOO_SLOW)
    chart = shape.build_chart(start, end, bucket, counted.bars)
    zone = present.zone(f.tz)
    urls = present.PageUrls(
        "search.search", [pair for pair in f.to_args() if pair[0] not in ("from", "to")]
    )
    bars = tuple(
        _bar_link(
            bar,
            urls.with_args(
                [
                    ("from", bar.start.astimezone(zone).isoformat()),
                    ("to", bar.end.astimezone(zone).isoformat()),
                ]
            ),
            f"{present.format_time(bar.start, f.tz)} – {present.format_time(bar.end, f.tz)}",
        )
        for bar in chart.bars
    )
    about = "about " if counted.estimated else ""
    description = (
        f"{len(bars)} bars, one per {chart.bucket}, from {present.format_time(start, f.tz)} "
        f"to {present.format_time(end, f.tz)}; the busiest {chart.bucket} had {about}"
        f"{chart.peak:,} events. Choose a bar to search its {chart.bucket}; the table below "
        "lists the same counts."
    )
    total = None if counted.estimated else chart.total
    return Outline(total, estimate, facets, chart, counted.estimated, bars, description)


TABLE_FACTS_SECONDS = FACET_CACHE_SECONDS


def _count_outline(
    engine, facts: dict, f: EventFilter, create_types, kind_create_types, distributed: bool
):
    """``(estimate, start, end, bucket, counts)``; counts None when the range is empty.

    Runs in a background task (no Flask here): on ``engine``'s autocommit connection,
    whose session statement_timeout is the facet limit. ``facts`` caches the table's
    bounds and size for TABLE_FACTS_SECONDS (a search without a range charts the whole
    table; a broad one samples it): the chart of such a search may miss the events of
    the last minute, as the counts cached for a minute do anyway."""
    with db.connect(engine) as conn:
        try:
            estimate = queries.estimated_rows(conn, f, create_types=create_types)
            start, end = f.time_from, f.time_to
            table_rows = None
            if start is None or end is None:
                # A record's search charts its own life; any other, the whole table's.
                if f.aggregate_id is not None:
                    oldest, newest = queries.time_bounds(conn, f.aggregate_id)
                else:
                    oldest, newest, table_rows = _table_facts(conn, facts, distributed)
                start = start or oldest
                end = end or (newest + timedelta(microseconds=1) if newest else None)
            if start is None or end is None or end <= start:
                return estimate, start, end, None, None
            if estimate > queries.FACET_MAX_ROWS and table_rows is None:
                table_rows = _table_facts(conn, facts, distributed)[2]
            bucket, width = shape.choose_bucket(start, end)
            counted = queries.count_search_shape(
                conn,
                f,
                width=width,
                tz=f.tz,
                estimate=estimate,
                create_types=create_types,
                kind_create_types=kind_create_types,
                table_rows=table_rows,
                distributed=distributed,
            )
        except sa.exc.DBAPIError as exc:
            if not db.is_query_canceled(exc):
                raise
            return 0, None, None, None, queries.not_counted()
    return estimate, start, end, bucket, counted


def _table_facts(conn, facts: dict, distributed: bool = False):
    now = time.monotonic()
    cached = facts.get("table")
    if cached is None or now - cached[0] >= TABLE_FACTS_SECONDS:
        cached = (now, queries.table_facts(conn, distributed=distributed))
        facts["table"] = cached
    return cached[1]


def _days_as_dates(facets: queries.Facets, tz: str) -> queries.Facets:
    """The day facet's midnights as dates in the search's zone (``2026-03-02``)."""
    days = facets.days
    values = [(day.astimezone(present.zone(tz)).date().isoformat(), n) for day, n in days.values]
    return replace(facets, days=replace(days, values=values))


def _page_link(args: list[tuple[str, str]], cursor: Any, *, forward: bool) -> str | None:
    """A neighbour page: ``cursor=`` continues in the filter's order, ``before=`` goes back."""
    if cursor is None:
        return None
    return present.page_url(
        "search.search", [*args, ("cursor" if forward else "before", cursor.encode())]
    )


def _chips(args: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """``(name, value, url without it)`` for each active filter: one click removes it."""
    chips = []
    for index, (name, value) in enumerate(args):
        if name in ("order", "tz"):
            continue
        if name == "field":
            # field and value go together
            rest = [pair for pair in args if pair[0] not in ("field", "value")]
            shown = f"{value} = {dict(args).get('value', '')}"
        elif name == "value":
            continue
        else:
            rest = args[:index] + args[index + 1 :]
            shown = value
        chips.append((name, shown, present.page_url("search.search", rest)))
    return chips


def _facet_values(
    f: EventFilter, facets: queries.Facets
) -> dict[str, list[tuple[Any, str | None, str]]]:
    """Each facet's values as the page lists them: ``(value, the search narrowed to it,
    its count as text)``; no link for the value None, shown as "(none)"."""
    links = _facet_links(f, f.to_args())
    return {
        facet.name: [
            (value, None if value is None else links[facet.name](value), f"{count:,}")
            for value, count in facet.values
        ]
        for facet in facets
    }


def _facet_links(f: EventFilter, args: list[tuple[str, str]]) -> dict[str, Any]:
    """Narrow the search to one facet value (the type, actor, kind or day clicked)."""

    def with_only(name: str):
        urls = present.PageUrls("search.search", [pair for pair in args if pair[0] != name])
        return lambda value: urls.with_args([(name, value)])

    zone = present.zone(f.tz)
    day_urls = present.PageUrls(
        "search.search", [pair for pair in args if pair[0] not in ("from", "to")]
    )

    def one_day(day: str) -> str:
        # That calendar day in the search's zone: midnight to midnight, whatever its length.
        first = datetime.combine(date.fromisoformat(day), datetime.min.time(), tzinfo=zone)
        after = datetime.combine(first.date() + timedelta(days=1), first.time(), tzinfo=zone)
        return day_urls.with_args([("from", first.isoformat()), ("to", after.isoformat())])

    return {
        "type": with_only("type"),
        "actor": with_only("actor"),
        "kind": with_only("kind"),
        "day": one_day,
    }
