"""PDF reports drawn with ReportLab from plain values: no database, no Flask, no I/O but
the file object it writes to.

Scale: a compliance report may list 100,000 events. Measured on this project's 2-core
machines, one big ``LongTable`` took 18.7 s for 10,000 rows and did not finish 50,000 in
ten minutes (its layout cost grows faster than linearly), while ~200-row tables with fixed
column widths and the column header drawn by the page template built 10,000 events in
7.3 s. The listing here goes one step further: blocks of :data:`ROWS_PER_TABLE` rows
(:class:`_ListingBlock`, split between rows like ``LongTable(splitByRow=1)``) with fixed
column widths, the header drawn by the page template, text wrapped once with per-character
widths (:func:`wrap_text`) and drawn straight into one text object per block — no cell
styles, no ``Paragraph`` per cell. Blocks are pulled lazily from the caller's iterator
(:class:`_LazyStory`), so the listing never sits in memory whole. Measured: 10,000 seeded
events (replay included) in about 7 s (``benchmarks/bench_reports.py``).

"Page X of Y" needs Y before the last page exists: every footer draws a reference to a
PDF form XObject that :class:`_NumberedCanvas` fills in when the document is saved, which
costs one pass instead of ReportLab's usual two-pass ``multiBuild``.

Every string that came from data or from a user goes through :func:`.fonts.markup`
(escaped, then font runs), :func:`.fonts.font_runs` or :func:`.fonts.plain` (control
characters replaced) before it reaches ReportLab; no user text is ever ReportLab markup.
"""

from __future__ import annotations

import bisect
import itertools
import json
import tempfile
import types
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import IO, Any, Final

from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.shapes import Drawing
from reportlab.lib import colors
from reportlab.lib.enums import TA_LEFT
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.rl_accel import escapePDF, fp_str
from reportlab.lib.styles import ParagraphStyle
from reportlab.pdfbase import pdfdoc, pdfmetrics
from reportlab.pdfbase.pdfdoc import PDFArray, PDFName, PDFStream
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    BaseDocTemplate,
    Flowable,
    Frame,
    KeepTogether,
    NextPageTemplate,
    PageBreak,
    PageTemplate,
    Paragraph,
    Spacer,
    Table,
    TableStyle,
)

from ..budget import check_budget
from ..jsonlimits import TooDeep
from ..jsonpointer import MISSING
from .fonts import covered, font_runs, fonts, markup, plain

__all__ = [
    "ROWS_PER_TABLE",
    "ListingRow",
    "ReportFacts",
    "Summary",
    "change_lines",
    "change_text",
    "render_events_report",
    "render_record_report",
    "state_lines",
]

PAGE_SIZE: Final = landscape(A4)
MARGIN: Final = 30.0
HEADER_BAND: Final = 16.0
FOOTER_BAND: Final = 22.0
ROWS_PER_TABLE: Final = 200
LISTING_FONT_SIZE: Final = 7.0
LISTING_LEADING: Final = 8.4
MAX_CHANGE_LINES: Final = 8  # per event; the CSV has every change
MAX_WRAPPED_LINES: Final = 3  # per change
MAX_VALUE_CHARS: Final = 120
MAX_CREATED_VALUE_CHARS: Final = 48
MAX_CREATED_FIELDS: Final = 20  # of a created record's one-line summary
# The final state of a record report: at most this many lines of indented JSON, each cut
# to this many characters, and containers shortened to what those lines can show.
MAX_STATE_LINES: Final = 400
MAX_STATE_LINE_CHARS: Final = 160
STATE_LINES_PER_PARAGRAPH: Final = 40
# Wider than any line of the listing can hold at its font size (about 4.5 pt per
# character at the narrowest): text past max_lines * this is never measured.
MAX_LINE_CHARS: Final = 400
MAX_CELL_LINES: Final = 9  # of the "fields changed" cell, after wrapping
MAX_ACTORS: Final = 25
MAX_TYPES: Final = 60
MAX_CHART_BARS: Final = 62

_INK: Final = colors.HexColor("#1f2933")
_MUTED: Final = colors.HexColor("#52606d")
_RULE: Final = colors.HexColor("#cbd2d9")
_BAND: Final = colors.HexColor("#e4e7eb")
_ACCENT: Final = colors.HexColor("#2f5d8a")


# --- What the caller gives ---------------------------------------------------------------


@dataclass(frozen=True)
class ReportFacts:
    """The cover and integrity facts of one report, already in words.

    ``facts`` are ``(label, value)`` rows for the cover (period, filter, generated at/by,
    high-water mark...); ``reproduce`` are ``(how, text)`` rows telling a reader how to get
    the same CSV again; ``notes`` are sentences shown under the facts (masking, cap).
    """

    title: str
    organisation: str
    facts: Sequence[tuple[str, str]]
    event_count: int
    csv_sha256: str
    csv_filename: str
    reproduce: Sequence[tuple[str, str]] = ()
    notes: Sequence[str] = ()
    subject: str = ""
    # The signed tree head and the check made at export time (builder.tamper_evidence_rows).
    tamper_evidence: Sequence[tuple[str, str]] = ()


@dataclass(frozen=True)
class Summary:
    """Counts over the whole selection (never capped). ``other_actors`` is ``(actors,
    events)`` beyond the listed ones; ``by_day`` is ``(day, events)`` in date order."""

    by_type: Sequence[tuple[str, int]]
    by_actor: Sequence[tuple[str | None, int]]
    by_day: Sequence[tuple[date, int]]
    other_actors: tuple[int, int] = (0, 0)
    other_types: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class ListingRow:
    """One event of the listing; ``changes`` are :class:`dashboard.diff.Change`-like values
    (``path``, ``op``, ``old``, ``new``; an absent side is ``MISSING``), already masked.

    ``change_text``, when given, is the "fields changed" cell already in words
    (:func:`change_text` of the changes and anomalies) and ``changes``/``anomalies`` are not
    read: a long listing keeps these few short lines per event instead of the changes,
    whose values may be whole records.
    """

    created_at: datetime
    seq: int | None
    aggregate_id: str
    event_type: str
    actor: Any
    kind: str | None = None
    changes: Sequence[Any] = ()
    anomalies: Sequence[str] = ()
    change_text: Sequence[str] | None = None


# --- Changes in words --------------------------------------------------------------------


_COMPACT_JSON: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _value_text(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    """A value as compact JSON, cut to ``limit`` characters (ending in "…")."""
    if value is MISSING:
        return "(none)"
    if isinstance(value, TooDeep):
        return value.message
    if isinstance(value, str) and len(value) > limit:
        value = value[:limit]  # never encode a megabyte to print a hundred characters
    return _cut(_COMPACT_JSON.encode(value), limit)


def change_lines(changes: Sequence[Any], limit: int = MAX_CHANGE_LINES) -> list[str]:
    """``/email: "a@x" -> "b@x"`` per change (``→`` where the font has it).

    A created record is one line of its top-level fields (``created: name="Zoë", ...``),
    a deleted one says so; past ``limit`` lines a last line counts the rest (the CSV has
    every change in full).
    """
    arrow = fonts().arrow
    lines: list[str] = []
    for change in itertools.islice(changes, limit):  # the rest are only counted
        path, op, old, new = change.path, change.op, change.old, change.new
        if path == "" and op == "add" and isinstance(new, TooDeep):
            lines.append(f"created: {new.message}")
        elif path == "" and op == "add" and isinstance(new, dict):
            shown = itertools.islice(new.items(), MAX_CREATED_FIELDS)
            fields = ", ".join(
                f"{_cut(str(key), MAX_CREATED_VALUE_CHARS)}="
                f"{_value_text(value, MAX_CREATED_VALUE_CHARS)}"
                for key, value in shown
            )
            if len(new) > MAX_CREATED_FIELDS:
                fields += f", … and {len(new) - MAX_CREATED_FIELDS:,} more fields"
            lines.append(f"created: {fields}" if fields else "created (empty)")
        elif path == "" and op == "remove":
            lines.append("deleted (its last state is kept)")
        elif op == "add":
            lines.append(f"{path or '/'}: (none) {arrow} {_value_text(new)}")
        elif op == "remove":
            lines.append(f"{path or '/'}: {_value_text(old)} {arrow} (removed)")
        else:
            lines.append(f"{path or '/'}: {_value_text(old)} {arrow} {_value_text(new)}")
    if len(changes) > limit:
        rest = len(changes) - (limit - 1)
        lines = [*lines[: limit - 1], f"… and {rest:,} more (every change is in the CSV)"]
    return lines


def change_text(changes: Sequence[Any], anomalies: Sequence[str] = ()) -> tuple[str, ...]:
    """The "fields changed" cell of a listing row before wrapping: one line per anomaly,
    then :func:`change_lines` (or "(no field changed)"), each cut to what
    :func:`wrap_text` reads of it, so that keeping it costs at most a few hundred
    characters a line whatever the values hold."""
    room = MAX_WRAPPED_LINES * MAX_LINE_CHARS + 1  # wrap_text never reads further
    lines = change_lines(changes) or ["(no field changed)"]
    return tuple(line[:room] for line in (*(f"anomaly: {a}" for a in anomalies), *lines))


def state_lines(state: Any) -> tuple[list[str], bool]:
    """A state as indented JSON lines for the record report, and whether anything was cut.

    Strings (and keys) longer than :data:`MAX_STATE_LINE_CHARS` end in "…"; containers are
    shortened to about :data:`MAX_STATE_LINES` members in all, the rest counted ("… 99,600
    more items"): the work is bounded by what is shown, whatever the state's size.
    """
    cut = [False]
    shrunk = _shrink(state, [MAX_STATE_LINES], cut)
    text = json.dumps(shrunk, ensure_ascii=False, indent=2, default=str)
    lines = [_cut(line, 2 * MAX_STATE_LINE_CHARS + 40) for line in text.splitlines()]
    if len(lines) > MAX_STATE_LINES:
        cut[0] = True
        rest = len(lines) - (MAX_STATE_LINES - 1)
        lines = [*lines[: MAX_STATE_LINES - 1], f"… ({rest:,} more lines)"]
    return lines, cut[0]


def _shrink(value: Any, room: list[int], cut: list[bool]) -> Any:
    """``value`` with long strings cut and containers shortened; ``room`` counts the
    members still to show (shared by the whole walk, so the result is small)."""
    room[0] -= 1
    if isinstance(value, TooDeep):
        return value.message
    if isinstance(value, str):
        if len(value) > MAX_STATE_LINE_CHARS:
            cut[0] = True
            return value[: MAX_STATE_LINE_CHARS - 1] + "…"
        return value
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, child in value.items():
            if room[0] <= 0:
                cut[0] = True
                out["…"] = f"{len(value) - len(out):,} more fields"
                break
            name = str(key)
            if len(name) > MAX_STATE_LINE_CHARS:
                cut[0] = True
                name = name[: MAX_STATE_LINE_CHARS - 1] + "…"
            out[name] = _shrink(child, room, cut)
        return out
    if isinstance(value, list):
        items: list[Any] = []
        for child in value:
            if room[0] <= 0:
                cut[0] = True
                items.append(f"… {len(value) - len(items):,} more items")
                break
            items.append(_shrink(child, room, cut))
        return items
    return value


# --- Styles ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Styles:
    title: ParagraphStyle
    organisation: ParagraphStyle
    heading: ParagraphStyle
    body: ParagraphStyle
    small: ParagraphStyle
    cell: ParagraphStyle
    mono: ParagraphStyle


def _styles() -> _Styles:
    base = fonts().base

    def style(name: str, size: float, leading: float, **extra: Any) -> ParagraphStyle:
        options = {"textColor": _INK, "alignment": TA_LEFT, **extra}
        return ParagraphStyle(name, fontName=base, fontSize=size, leading=leading, **options)

    return _Styles(
        title=style("title", 22, 27, spaceAfter=6, textColor=_ACCENT),
        organisation=style("organisation", 13, 17, spaceAfter=14, textColor=_MUTED),
        heading=style("heading", 14, 18, spaceBefore=10, spaceAfter=6, textColor=_ACCENT),
        body=style("body", 9, 12, spaceAfter=4),
        small=style("small", 7.5, 9.5, textColor=_MUTED),
        cell=style("cell", LISTING_FONT_SIZE, LISTING_LEADING),
        mono=style("mono", 7.5, 9.5),
    )


# --- Document machinery ------------------------------------------------------------------


class _NumberedCanvas(Canvas):
    """Defines the ``pagecount`` form, drawn by every footer, once the last page is done;
    keeps finished pages out of memory; writes the file as it is formatted.

    So memory does not grow with the pages a listing has:

    - ReportLab keeps every finished page's content stream as uncompressed text until
      ``save``. Here the stream is compressed (FlateDecode, as ``pageCompression`` asks)
      when the page ends and parked in a temporary file (:class:`_ParkedStream`), read back
      only when ``save`` writes it.
    - ``save`` normally formats the whole file into one list of byte strings and joins
      them: the document twice over, at the very end. Here every object is written to the
      output as soon as it is formatted (:func:`_streaming_format`), with the same bytes.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Closed when the document is saved (or with the canvas).
        self._parked = tempfile.SpooledTemporaryFile(  # noqa: SIM115
            max_size=_ParkedStream.IN_MEMORY, prefix="audit-pdf-pages-"
        )

    def showPage(self) -> None:
        super().showPage()
        pages = self._doc.Pages.pages
        page = pages[-1] if pages else None
        if page is None or page.Contents is not None or not page.stream or not page.compression:
            return
        stream = page.stream
        data = stream.encode("utf-8") if isinstance(stream, str) else stream
        contents = _ParkedStream(self._parked, zlib.compress(data))
        contents.dictionary["Filter"] = PDFArray([PDFName("FlateDecode")])
        contents.__Comment__ = "page stream"
        page.Contents = contents  # what PDFPage.check_format would make at save time
        page.stream = None

    def save(self) -> None:
        total = self.getPageNumber() - 1
        self.beginForm("pagecount", lowerx=0, lowery=0, upperx=60, uppery=12)
        self.setFont(fonts().base, 7)
        self.setFillColor(_MUTED)
        self.drawString(0, 0, str(total))
        self.endForm()
        out = self._filename
        if callable(getattr(out, "write", None)):
            self._doc.format = types.MethodType(_streaming_format(out), self._doc)
        try:
            super().save()
        finally:
            self._parked.close()


class _ParkedStream(PDFStream):
    """A page's compressed content stream kept in a temporary file, not in memory: its
    ``content`` is written there when set and read back when ``save`` formats it."""

    IN_MEMORY: Final = 1 << 20  # bytes of pages kept in memory before the file goes to disk

    def __init__(self, parked: IO[bytes], content: bytes) -> None:
        self._parked = parked
        super().__init__(content=content)

    @property
    def content(self) -> bytes | None:
        if self._spot is None:
            return None
        self._parked.seek(self._spot[0])
        return self._parked.read(self._spot[1])

    @content.setter
    def content(self, data: bytes | None) -> None:
        if data is None:
            self._spot = None
            return
        self._parked.seek(0, 2)
        self._spot = (self._parked.tell(), len(data))
        self._parked.write(data)


class _StreamingPDFFile(pdfdoc.PDFFile):
    """ReportLab's output collector, writing each piece to ``out`` instead of keeping it:
    offsets are counted the same way, so the cross-reference table is the same."""

    def __init__(self, pdf_version: Any, out: IO[bytes]) -> None:
        super().__init__(pdf_version)  # collects the header
        for piece in self.strings:
            out.write(piece)
        self.strings = []
        self.write = out.write

    def format(self, document: Any) -> bytes:
        return b""  # everything is already written


def _streaming_format(out: IO[bytes]) -> Callable[[Any], bytes]:
    """``PDFDocument.format`` itself (ReportLab's code, not a copy), run with
    :class:`_StreamingPDFFile` as the ``PDFFile`` it collects the document in, so the file
    is written object by object; ``SaveToFile`` then writes the empty rest. Were ReportLab
    to stop using that name, the document would simply be built in memory as before."""
    original = pdfdoc.PDFDocument.format
    names = {**original.__globals__, "PDFFile": lambda version: _StreamingPDFFile(version, out)}
    return types.FunctionType(
        original.__code__, names, original.__name__, original.__defaults__, original.__closure__
    )


class _LazyStory(list):
    """A story list that pulls flowables from an iterator as ReportLab consumes it.

    ``BaseDocTemplate.build`` checks ``len(story)`` before every flowable and only ever
    looks at the first few; keeping two in hand means a 100,000-event listing never sits
    in memory as flowables at once.
    """

    def __init__(self, head: Iterable[Any], tail: Iterator[Any]):
        super().__init__(head)
        self._tail = tail

    def __len__(self) -> int:
        while super().__len__() < 2:
            nxt = next(self._tail, None)
            if nxt is None:
                break
            self.append(nxt)
        return super().__len__()


@dataclass
class _Layout:
    facts: ReportFacts
    generated_line: str
    columns: Sequence[tuple[str, float]] = ()
    listing_pages: bool = False
    styles: _Styles = field(default_factory=_styles)


def _frame_width() -> float:
    return PAGE_SIZE[0] - 2 * MARGIN


def _draw_markup(canvas: Canvas, text: str, x: float, y: float, width: float, style) -> None:
    paragraph = Paragraph(text, style)
    _w, h = paragraph.wrapOn(canvas, width, 40)
    paragraph.drawOn(canvas, x, y - h)


def _footer(layout: _Layout) -> Callable[[Canvas, BaseDocTemplate], None]:
    def draw(canvas: Canvas, doc: BaseDocTemplate) -> None:
        base = fonts().base
        width, _height = PAGE_SIZE
        canvas.saveState()
        canvas.setStrokeColor(_RULE)
        canvas.setLineWidth(0.5)
        canvas.line(MARGIN, MARGIN + FOOTER_BAND - 6, width - MARGIN, MARGIN + FOOTER_BAND - 6)
        left = plain(
            f"{layout.facts.organisation} · {layout.facts.title} · {layout.generated_line}"
        )
        canvas.setFont(base, 7)
        canvas.setFillColor(_MUTED)
        if covered(left) and canvas.stringWidth(left, base, 7) <= _frame_width() * 0.55:
            canvas.drawString(MARGIN, MARGIN + 2, left)  # the usual case: no Paragraph per page
        else:
            small = ParagraphStyle(
                "footer", fontName=base, fontSize=7, leading=8.5, textColor=_MUTED
            )
            _draw_markup(
                canvas, markup(left), MARGIN, MARGIN + FOOTER_BAND - 8, _frame_width() * 0.55, small
            )
        digest = f"CSV SHA-256 {layout.facts.csv_sha256}"
        page = f"Page {doc.page} of "
        page_width = canvas.stringWidth(page, base, 7) + 22
        canvas.drawRightString(width - MARGIN - page_width - 10, MARGIN + 2, digest)
        canvas.drawString(width - MARGIN - page_width, MARGIN + 2, page)
        canvas.translate(width - MARGIN - 22, MARGIN + 2)
        canvas.doForm("pagecount")
        canvas.restoreState()

    return draw


def _listing_header(layout: _Layout) -> Callable[[Canvas, BaseDocTemplate], None]:
    footer = _footer(layout)

    def draw(canvas: Canvas, doc: BaseDocTemplate) -> None:
        footer(canvas, doc)
        base = fonts().base
        top = PAGE_SIZE[1] - MARGIN
        canvas.saveState()
        canvas.setFillColor(_BAND)
        canvas.rect(MARGIN, top - HEADER_BAND, _frame_width(), HEADER_BAND, stroke=0, fill=1)
        canvas.setFillColor(_INK)
        canvas.setFont(base, 7.5)
        x = MARGIN
        for title, width in layout.columns:
            canvas.drawString(x + 3, top - HEADER_BAND + 5, title)
            x += width
        canvas.restoreState()

    return draw


def _document(out: IO[bytes], layout: _Layout) -> BaseDocTemplate:
    body_height = PAGE_SIZE[1] - 2 * MARGIN - FOOTER_BAND
    front = Frame(
        MARGIN,
        MARGIN + FOOTER_BAND,
        _frame_width(),
        body_height,
        id="front",
        leftPadding=0,
        rightPadding=0,
        topPadding=0,
        bottomPadding=0,
    )
    listing = Frame(
        MARGIN,
        MARGIN + FOOTER_BAND,
        _frame_width(),
        body_height - HEADER_BAND - 2,
        id="listing",
        leftPadding=0,
        rightPadding=0,
        topPadding=0,
        bottomPadding=0,
    )
    doc = BaseDocTemplate(
        out,
        pagesize=PAGE_SIZE,
        title=layout.facts.title,
        author=layout.facts.organisation,
        subject=layout.facts.subject,
        keywords=f"csv-sha256:{layout.facts.csv_sha256}",
        creator="audit-dashboard",
        pageCompression=1,
        allowSplitting=1,
    )
    doc.addPageTemplates(
        [
            PageTemplate(id="front", frames=[front], onPage=_footer(layout)),
            PageTemplate(id="listing", frames=[listing], onPage=_listing_header(layout)),
        ]
    )
    return doc


# --- Sections ----------------------------------------------------------------------------


def _fact_table(rows: Sequence[tuple[str, str]], styles: _Styles, label_width: float = 150):
    data = [
        [Paragraph(markup(label), styles.body), Paragraph(markup(value), styles.body)]
        for label, value in rows
    ]
    table = Table(data, colWidths=[label_width, _frame_width() - label_width], hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("TEXTCOLOR", (0, 0), (0, -1), _MUTED),
                ("LINEBELOW", (0, 0), (-1, -1), 0.25, _RULE),
                ("TOPPADDING", (0, 0), (-1, -1), 3),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
            ]
        )
    )
    return table


def _cover(layout: _Layout) -> list[Any]:
    facts, styles = layout.facts, layout.styles
    story: list[Any] = [
        Paragraph(markup(facts.title), styles.title),
        Paragraph(markup(facts.organisation), styles.organisation),
        _fact_table(
            [
                *facts.facts,
                ("Events", f"{facts.event_count:,}"),
                ("SHA-256 of the CSV", facts.csv_sha256),
                ("CSV file", facts.csv_filename),
            ],
            styles,
        ),
    ]
    for note in facts.notes:
        story += [Spacer(1, 6), Paragraph(markup(note), styles.body)]
    if facts.tamper_evidence:
        story += [
            Paragraph("Tamper evidence", styles.heading),
            Paragraph(
                "The events of this report, re-read when it was made, checked against the "
                "newest signed tree head of the audit log (RFC 9162 Merkle tree, Ed25519 "
                "signature): each event's leaf recomputed from its row and proven to be in "
                "the signed root. <i>audit-dashboard verify-export</i> checks the CSV offline "
                "with its .proof.json.",
                styles.body,
            ),
            _fact_table([_breakable(row) for row in facts.tamper_evidence], styles, 150),
        ]
    return story


def _breakable(row: tuple[str, str]) -> tuple[str, str]:
    """Long unbroken values (a base64 signature) wrap in the cell: a space every 64
    characters of a word longer than that (a SHA-256 in hex stays whole)."""
    label, value = row
    words = [
        " ".join(word[i : i + 64] for i in range(0, len(word), 64)) if len(word) > 64 else word
        for word in value.split(" ")
    ]
    return label, " ".join(words)


def _count_table(
    title: str, rows: Sequence[tuple[str, int]], total: int, styles: _Styles, width: float
) -> Table:
    data: list[list[Any]] = [[title, "Events", "Share"]]
    for label, count in rows:
        share = f"{100 * count / total:.1f} %" if total else "–"
        cell = plain(label) if covered(label) else Paragraph(markup(label), styles.cell)
        data.append([cell, f"{count:,}", share])
    table = Table(data, colWidths=[width - 110, 60, 50], hAlign="LEFT", repeatRows=1)
    table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), fonts().base, 8),
                ("BACKGROUND", (0, 0), (-1, 0), _BAND),
                ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
                ("LINEBELOW", (0, 0), (-1, -1), 0.25, _RULE),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("TOPPADDING", (0, 0), (-1, -1), 2),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
            ]
        )
    )
    return table


def _bucketed_days(by_day: Sequence[tuple[date, int]]) -> tuple[str, list[tuple[str, int]]]:
    """Days, or weeks or months when there are too many days for a readable chart."""
    if len(by_day) <= MAX_CHART_BARS:
        return "day", [(day.isoformat(), count) for day, count in by_day]
    span = (by_day[-1][0] - by_day[0][0]).days + 1
    if span <= MAX_CHART_BARS * 7:
        unit, key = "week", (lambda day: "{:04d}-W{:02d}".format(*day.isocalendar()[:2]))
    else:
        unit, key = "month", (lambda day: day.strftime("%Y-%m"))
    buckets: dict[str, int] = {}
    for day, count in by_day:
        label = key(day)
        buckets[label] = buckets.get(label, 0) + count
    return unit, list(buckets.items())


def _day_chart(buckets: list[tuple[str, int]], unit: str) -> Drawing:
    width, height = _frame_width(), 170
    drawing = Drawing(width, height)
    chart = VerticalBarChart()
    chart.x, chart.y, chart.width, chart.height = 40, 35, width - 60, height - 50
    chart.data = [[count for _label, count in buckets]]
    chart.categoryAxis.categoryNames = [label for label, _count in buckets]
    chart.categoryAxis.labels.fontName = fonts().base
    chart.categoryAxis.labels.fontSize = 6
    chart.categoryAxis.labels.angle = 60 if len(buckets) > 12 else 0
    chart.categoryAxis.labels.boxAnchor = "ne" if len(buckets) > 12 else "n"
    chart.valueAxis.labels.fontName = fonts().base
    chart.valueAxis.labels.fontSize = 6
    chart.valueAxis.valueMin = 0
    chart.bars[0].fillColor = _ACCENT
    chart.bars[0].strokeColor = None
    drawing.add(chart)
    return drawing


def _summary(summary: Summary, total: int, styles: _Styles) -> list[Any]:
    story: list[Any] = [PageBreak(), Paragraph("Summary", styles.heading)]
    if total == 0:
        story.append(Paragraph("No events match this filter.", styles.body))
        return story
    half = (_frame_width() - 20) / 2
    types = [(label, count) for label, count in summary.by_type]
    if summary.other_types[0]:
        types.append((f"({summary.other_types[0]:,} other types)", summary.other_types[1]))
    actors = [(label if label is not None else "(no actor)", n) for label, n in summary.by_actor]
    if summary.other_actors[0]:
        actors.append((f"({summary.other_actors[0]:,} other actors)", summary.other_actors[1]))
    pair = Table(
        [
            [
                _count_table("Event type", types, total, styles, half),
                _count_table("Actor", actors, total, styles, half),
            ]
        ],
        colWidths=[half + 20, half],
        hAlign="LEFT",
    )
    pair.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LEFTPADDING", (0, 0), (-1, -1), 0),
                ("RIGHTPADDING", (0, 0), (-1, -1), 0),
            ]
        )
    )
    story.append(pair)
    unit, buckets = _bucketed_days(summary.by_day)
    heading = Paragraph(f"Events by {unit} (UTC)", styles.heading)
    chart = [_day_chart(buckets, unit)] if len(buckets) > 1 else []
    story.append(KeepTogether([heading, *chart]))
    story.append(_count_table(unit.capitalize(), buckets, total, styles, min(_frame_width(), 300)))
    return story


def _integrity(facts: ReportFacts, styles: _Styles) -> list[Any]:
    rows = [
        ("Events in the selection", f"{facts.event_count:,}"),
        ("SHA-256 of the CSV export", facts.csv_sha256),
        ("CSV file name", facts.csv_filename),
        *facts.reproduce,
    ]
    return [
        KeepTogether(
            [
                Paragraph("Integrity", styles.heading),
                Paragraph(
                    "The CSV export of exactly this selection (same filter, same high-water "
                    "mark) has the SHA-256 digest below; it is printed in every footer of "
                    "this report too. Compare it with <i>sha256sum</i> of the CSV file to "
                    "match the two files. The same filter and high-water mark always give "
                    "the same CSV bytes.",
                    styles.body,
                ),
                _fact_table(rows, styles, 170),
            ]
        )
    ]


# --- Listing -----------------------------------------------------------------------------

Run = tuple[str, str]  # (font name, text)
Line = list[Run]


class _WidthTable(dict):
    """Advance width of each character at the listing's size, measured once per character.

    Wrapping then costs one C-level ``map`` over the text instead of a ReportLab width call
    per word (which dominated the listing's time when measured).
    """

    def __init__(self, face: str):
        super().__init__()
        self.font = pdfmetrics.getFont(face)

    def __missing__(self, char: str) -> float:
        width = self.font.stringWidth(char, LISTING_FONT_SIZE)
        self[char] = width
        return width


_WIDTHS: dict[str, _WidthTable] = {}


def _table(face: str) -> _WidthTable:
    table = _WIDTHS.get(face)
    if table is None:
        table = _WIDTHS[face] = _WidthTable(face)
    return table


def _width(text: str, face: str) -> float:
    return sum(map(_table(face).__getitem__, text))


def _is_cjk_char(char: str) -> bool:
    code = ord(char)
    return 0x2E80 <= code <= 0x9FFF or 0xAC00 <= code <= 0xD7AF or 0xF900 <= code <= 0xFFEF


def wrap_text(text: object, width: float, max_lines: int) -> list[Line]:
    """Greedy line breaking of mixed-font text into at most ``max_lines`` lines.

    Latin text breaks after the last space that fits, CJK text between any two characters,
    and a word wider than the column (a long JSON value, a UUID) is cut where the column
    ends. When text is left out the last line ends with "…". Each line is a list of font
    runs ``(font, text)``.
    """
    text = "" if text is None else str(text)
    room = max_lines * MAX_LINE_CHARS + 1
    if len(text) > room:
        # What cannot fit in max_lines is never measured: the wrapping stays linear in
        # what is shown, and the cut still ends in "…" (the text still overflows).
        text = text[:room]
    runs = font_runs(text)
    if not runs:
        return [[]]
    value = "".join(run for _face, run in runs)
    widths: list[float] = []
    for face, run in runs:
        widths.extend(map(_table(face).__getitem__, run))
    cumulative = list(itertools.accumulate(widths, initial=0.0))
    total = len(value)
    if cumulative[-1] <= width:
        return [runs]
    spans: list[tuple[int, int]] = []
    start = 0
    while start < total and len(spans) <= max_lines:
        end = bisect.bisect_right(cumulative, cumulative[start] + width) - 1
        if end >= total:
            spans.append((start, total))
            break
        end = max(end, start + 1)  # at least one character per line
        cut = end
        if not (_is_cjk_char(value[end]) or _is_cjk_char(value[end - 1])):
            space = value.rfind(" ", start, end)
            if space > start:
                cut = space + 1
        spans.append((start, cut))
        start = cut
        while start < total and value[start] == " ":
            start += 1
    truncated = len(spans) > max_lines or (spans and spans[-1][1] < total and start < total)
    spans = spans[:max_lines]
    if truncated and spans:
        first, last = spans[-1]
        ellipsis = _table(fonts().base)["…"]
        while last > first and cumulative[last] - cumulative[first] + ellipsis > width:
            last -= 1
        spans[-1] = (first, last)
    lines = [_slice_runs(runs, first, last) for first, last in spans]
    if truncated and lines:
        lines[-1].append((fonts().base, "…"))
    return lines


def _slice_runs(runs: list[Run], start: int, end: int) -> Line:
    """The runs covering characters ``[start, end)`` of their joined text."""
    if len(runs) == 1:
        face, run = runs[0]
        return [(face, run[start:end].rstrip(" "))]
    line: Line = []
    offset = 0
    for face, run in runs:
        low, high = max(start, offset), min(end, offset + len(run))
        if low < high:
            line.append((face, run[low - offset : high - offset]))
        offset += len(run)
    return line


@dataclass(frozen=True)
class _PreparedRow:
    cells: list[list[Line]]
    height: float


class _ListingBlock(Flowable):
    """Rows of the listing drawn straight onto the canvas: one text object per block.

    A ``Table`` computes styles and geometry per cell and makes a text object per line;
    for a listing whose every cell is a few lines of text, drawing the text directly is
    several times faster and the layout is just as fixed (column widths never depend on
    content). Splits between rows, like ``LongTable(splitByRow=1)``.
    """

    def __init__(self, rows: list[_PreparedRow], widths: Sequence[float]):
        super().__init__()
        self.rows = rows
        self.widths = list(widths)
        self.total_width = sum(self.widths)

    def wrap(self, available_width: float, available_height: float) -> tuple[float, float]:
        self.height = sum(row.height for row in self.rows)
        return self.total_width, self.height

    def split(self, available_width: float, available_height: float) -> list[Flowable]:
        used, count = 0.0, 0
        for row in self.rows:
            if used + row.height > available_height:
                break
            used += row.height
            count += 1
        if count == 0:
            return []
        if count == len(self.rows):
            return [self]
        return [
            _ListingBlock(self.rows[:count], self.widths),
            _ListingBlock(self.rows[count:], self.widths),
        ]

    def draw(self) -> None:
        canvas = self.canv
        text = canvas.beginText()
        ascii_runs = _AsciiRuns.of(canvas)
        current_face = None
        rules = canvas.beginPath()
        top = self.height
        for row in self.rows:
            x = 0.0
            for lines, width in zip(row.cells, self.widths, strict=True):
                y = top - CELL_PADDING - LISTING_FONT_SIZE
                for line in lines:
                    text.setTextOrigin(x + CELL_PADDING, y)
                    single = len(line) == 1
                    for face, run in line:
                        if face != current_face:
                            text.setFont(face, LISTING_FONT_SIZE, LISTING_LEADING)
                            current_face = face
                        if single:
                            # _textOut skips measuring the run again to advance the cursor,
                            # which a line of one run (the usual case) does not need.
                            if not ascii_runs.write(text, face, run):
                                text._textOut(run)
                        else:
                            text.textOut(run)
                    y -= LISTING_LEADING
                x += width
            top -= row.height
            rules.moveTo(0, top)
            rules.lineTo(self.total_width, top)
        canvas.saveState()
        canvas.setFillColor(_INK)
        canvas.drawText(text)
        canvas.setStrokeColor(_RULE)
        canvas.setLineWidth(0.25)
        canvas.drawPath(rules, stroke=1, fill=0)
        canvas.restoreState()


class _AsciiRuns:
    """Writes a run of printable ASCII in the base TrueType font as ReportLab would, fast.

    ReportLab's ``PDFTextObject._formatText`` maps each character of a TrueType run to a
    font subset through ``TTFont.splitString``, a Python loop per character: the largest
    cost of drawing the listing when measured. With ReportLab's ``ttfAsciiReadable`` (the
    default) printable ASCII sits in subset 0 under its own code, so such a run's bytes
    are the run itself, and this appends exactly the operators ``_formatText`` would. That
    is checked once per document; any other run (or font) is left to ReportLab.
    """

    def __init__(self, canvas: Canvas):
        self.doc = canvas._doc
        self.face = fonts().base
        self.font = pdfmetrics.getFont(self.face)
        self.usable = bool(getattr(self.font, "_dynamicFont", False))
        if self.usable:
            self.font.splitString(" ", self.doc)  # the document's subset state, as ReportLab
            assignments = self.font.state[self.doc].assignments
            self.usable = all(assignments.get(code) == code for code in range(32, 127))
        self.select: str | None = None  # the "use subset 0" operators, made on first use

    @classmethod
    def of(cls, canvas: Canvas) -> _AsciiRuns:
        writer = getattr(canvas, "_audit_ascii_runs", None)
        if writer is None or writer.doc is not canvas._doc:
            writer = cls(canvas)
            canvas._audit_ascii_runs = writer
        return writer

    def write(self, text: Any, face: str, run: str) -> bool:
        """Append ``run`` to the text object ``text`` and say True, or say False (and do
        nothing) when ReportLab must write it."""
        if not (self.usable and face == self.face and run.isascii() and run.isprintable()):
            return False
        shown = f"({escapePDF(run.encode('ascii'))}) Tj"
        if text._curSubset != 0:
            if self.select is None:
                self.select = self.font.getSubsetInternalName(0, self.doc)
            size, leading = fp_str(text._fontsize), fp_str(text._leading)
            shown = f"{self.select} {size} Tf {leading} TL {shown}"
            text._curSubset = 0
        text._code.append(shown)
        return True


CELL_PADDING: Final = 2.5

_EVENT_COLUMNS: Final = (
    ("Time (UTC) · seq", 108.0),
    ("Record · kind", 142.0),
    ("Event type", 108.0),
    ("Actor", 110.0),
)
_RECORD_COLUMNS: Final = (("Time (UTC) · seq", 108.0), ("Event type", 120.0), ("Actor", 120.0))


def _columns(fixed: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
    rest = _frame_width() - sum(width for _title, width in fixed)
    return [*fixed, (f"Fields changed (old {fonts().arrow} new)", rest)]


class _WrapCache:
    """:func:`wrap_text` remembering its answers for short texts: a listing repeats its
    event types, kinds, actors and many change lines thousands of times. Bounded (cleared
    when full); the answers are shared between rows, so nothing may change them."""

    MAX_TEXT: Final = 200
    SIZE: Final = 4096

    def __init__(self) -> None:
        self.answers: dict[tuple[object, float, int], list[Line]] = {}

    def __call__(self, text: object, width: float, max_lines: int) -> list[Line]:
        if isinstance(text, str) and len(text) > self.MAX_TEXT:
            return wrap_text(text, width, max_lines)
        key = (text, width, max_lines)
        answer = self.answers.get(key)
        if answer is None:
            answer = wrap_text(text, width, max_lines)
            if len(self.answers) >= self.SIZE:
                self.answers.clear()
            self.answers[key] = answer
        return answer


def _prepare(
    row: ListingRow,
    widths: Sequence[float],
    with_record: bool,
    wrap: Callable[[object, float, int], list[Line]] = wrap_text,
) -> _PreparedRow:
    room = [width - 2 * CELL_PADDING for width in widths]
    moment = row.created_at.astimezone(UTC).isoformat(sep=" ", timespec="microseconds")[:26]
    base = fonts().base
    # Fixed-format text that fits its column by construction needs no measuring.
    cells: list[list[Line]] = [
        [[(base, moment)], [(base, f"seq {row.seq}")]]
        if row.seq is not None
        else [[(base, moment)]]
    ]
    index = 1
    if with_record:
        cells.append([[(base, row.aggregate_id)], *wrap(row.kind, room[1], 1)])
        index = 2
    actor = row.actor if isinstance(row.actor, str) else _value_text(row.actor, MAX_VALUE_CHARS)
    if row.actor is None:
        actor = ""
    cells.append(wrap(row.event_type, room[index], 2))
    cells.append(wrap(actor, room[index + 1], 2))
    text = row.change_text
    if text is None:
        text = change_text(row.changes, row.anomalies)
    lines: list[Line] = []
    for change in text:
        lines.extend(wrap(change, room[index + 2], MAX_WRAPPED_LINES))
    if len(lines) > MAX_CELL_LINES:
        lines = [*lines[: MAX_CELL_LINES - 1], [(base, "… (every change is in the CSV)")]]
    cells.append(lines)
    tallest = max(len(cell) for cell in cells)
    return _PreparedRow(cells, tallest * LISTING_LEADING + 2 * CELL_PADDING)


def _listing_blocks(
    rows: Iterable[ListingRow],
    columns: Sequence[tuple[str, float]],
    with_record: bool,
    progress: Callable[[int], None] | None,
) -> Iterator[Flowable]:
    widths = [width for _title, width in columns]
    wrap = _WrapCache()
    batch: list[_PreparedRow] = []
    done = 0
    for row in rows:
        check_budget()
        batch.append(_prepare(row, widths, with_record, wrap))
        if len(batch) == ROWS_PER_TABLE:
            done += len(batch)
            yield _ListingBlock(batch, widths)
            batch = []
            if progress:
                progress(done)
    if batch:
        done += len(batch)
        yield _ListingBlock(batch, widths)
        if progress:
            progress(done)


# --- Entry points ------------------------------------------------------------------------


def _generated_line(facts: ReportFacts) -> str:
    for label, value in facts.facts:
        if label.lower().startswith("generated at"):
            return f"generated {value}"
    return ""


def render_events_report(
    out: IO[bytes],
    facts: ReportFacts,
    summary: Summary,
    rows: Iterable[ListingRow] | None,
    *,
    cap: int,
    progress: Callable[[int], None] | None = None,
) -> None:
    """The compliance report: cover, summary, integrity, then the listing.

    ``rows`` is None when the selection is over ``cap`` events: the report then keeps the
    summary and says the full listing is in the CSV with the printed digest.
    """
    layout = _Layout(facts=facts, generated_line=_generated_line(facts))
    layout.columns = _columns(_EVENT_COLUMNS)
    styles = layout.styles
    head: list[Any] = [*_cover(layout), *_summary(summary, facts.event_count, styles)]
    head += _integrity(facts, styles)
    tail: Iterator[Any] = iter(())
    if facts.event_count == 0:
        head += [Paragraph("Listing", styles.heading), Paragraph("No events.", styles.body)]
    elif rows is None:
        head += [
            Paragraph("Listing", styles.heading),
            Paragraph(
                markup(
                    f"This selection holds {facts.event_count:,} events, more than the "
                    f"{cap:,} a PDF report lists. The full listing is in the CSV export "
                    f"{facts.csv_filename} with SHA-256 {facts.csv_sha256}."
                ),
                styles.body,
            ),
        ]
    else:
        head += [NextPageTemplate("listing"), PageBreak()]
        tail = _listing_blocks(rows, layout.columns, True, progress)
    _document(out, layout).build(_LazyStory(head, tail), canvasmaker=_NumberedCanvas)


def render_record_report(
    out: IO[bytes],
    facts: ReportFacts,
    rows: Iterable[ListingRow],
    final_state: Any,
    *,
    state_label: str,
    full_state_url: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> None:
    """One record's history: cover, final state, integrity, then the timeline of changes.

    The final state is shown cut (:func:`state_lines`); ``full_state_url`` is where the
    reader finds it whole, named under it when something was cut.
    """
    layout = _Layout(facts=facts, generated_line=_generated_line(facts))
    layout.columns = _columns(_RECORD_COLUMNS)
    styles = layout.styles
    head: list[Any] = [*_cover(layout), Paragraph("Final state", styles.heading)]
    head.append(Paragraph(markup(state_label), styles.body))
    if final_state is not None:
        lines, cut = state_lines(final_state)
        # Paragraphs of a few dozen lines: one long Paragraph is re-wrapped whole at every
        # page it spans.
        for start in range(0, len(lines), STATE_LINES_PER_PARAGRAPH):
            shown = lines[start : start + STATE_LINES_PER_PARAGRAPH]
            head.append(
                Paragraph(
                    "<br/>".join(markup(line).replace("  ", "&nbsp;&nbsp;") for line in shown),
                    styles.mono,
                )
            )
        if cut:
            where = f" The full state as JSON: {full_state_url}" if full_state_url else ""
            head.append(
                Paragraph(
                    markup(
                        f"Values were cut here: text longer than {MAX_STATE_LINE_CHARS} "
                        f"characters ends in “…”, and past {MAX_STATE_LINES} lines the rest "
                        f"is counted.{where}"
                    ),
                    styles.small,
                )
            )
    head += _integrity(facts, styles)
    tail: Iterator[Any] = iter(())
    if facts.event_count == 0:
        head += [Paragraph("Timeline", styles.heading), Paragraph("No events.", styles.body)]
    else:
        head += [NextPageTemplate("listing"), PageBreak()]
        tail = _listing_blocks(rows, layout.columns, False, progress)
    _document(out, layout).build(_LazyStory(head, tail), canvasmaker=_NumberedCanvas)
