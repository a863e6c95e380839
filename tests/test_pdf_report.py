"""PDF reports, read back with pypdf: layout from plain data, and the reports the dashboard
serves (counts, filter text, the CSV digest, masking, the cap, empty selections)."""

from __future__ import annotations

import hashlib
import io
import re
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest
from pypdf import PdfReader

from dashboard.db import libpq_url
from dashboard.diff import Change
from dashboard.jsonpointer import MISSING
from dashboard.masking import MASK
from dashboard.reports import pdf
from dashboard.reports.fonts import font_runs, markup

DIGEST = "0123456789abcdef" * 4


def _text(data: bytes) -> tuple[int, str]:
    reader = PdfReader(io.BytesIO(data))
    return len(reader.pages), "\n".join(page.extract_text() for page in reader.pages)


def _flat(text: str) -> str:
    """Extracted text with line breaks and repeated spaces folded (wrapping moves them)."""
    return re.sub(r"\s+", " ", text)


def _facts(**overrides) -> pdf.ReportFacts:
    values = {
        "title": "Audit events report",
        "organisation": "Zoë Łukasz 東京 GmbH",
        "facts": [
            ("Period", "2024-05-01 to 2024-06-01"),
            ("Filter", 'events by <img src="http://example.com/x.png"> & <b>bold</b>'),
            ("Generated at", "2024-06-02T00:00:00+00:00"),
        ],
        "event_count": 3,
        "csv_sha256": DIGEST,
        "csv_filename": "audit-events_all.csv",
        "reproduce": [("Same CSV from the web", "/export/events.csv?through_seq=3")],
    }
    values.update(overrides)
    return pdf.ReportFacts(**values)


def _rows(count: int) -> list[pdf.ListingRow]:
    start = datetime(2024, 5, 1, tzinfo=UTC)
    return [
        pdf.ListingRow(
            created_at=start + timedelta(minutes=index),
            seq=index + 1,
            aggregate_id=f"00000000-0000-4000-8000-{index:012d}",
            event_type="USER_UPDATED",
            actor="Zoë Łukasz 東京" if index % 2 else "<script>alert(1)</script>",
            kind="USER",
            changes=[
                Change("/email", "replace", "old@example.com", "new@example.com"),
                Change("/city", "add", MISSING, "東京タワー"),
            ],
        )
        for index in range(count)
    ]


def _summary() -> pdf.Summary:
    return pdf.Summary(
        by_type=[("USER_UPDATED", 3)],
        by_actor=[("Zoë Łukasz 東京", 2), (None, 1)],
        by_day=[(date(2024, 5, 1), 3)],
    )


def test_non_latin_text_renders_and_markup_is_escaped():
    out = io.BytesIO()
    pdf.render_events_report(out, _facts(), _summary(), _rows(3), cap=100)
    pages, text = _text(out.getvalue())
    assert pages >= 3
    assert "Zoë Łukasz 東京 GmbH" in text
    assert "東京タワー" in text
    assert '<img src="http://example.com/x.png"> & <b>bold</b>' in _flat(text)
    assert "<script>alert(1)</script>" in text
    assert re.search(rf"Page 1 of\s*{pages}\b", text)
    assert text.count(f"CSV SHA-256 {DIGEST}") == pages  # every footer
    assert "(no actor)" in text


def test_markup_never_lets_a_tag_through():
    assert markup("<a href='x'>&amp;</a>") == "&lt;a href='x'&gt;&amp;amp;&lt;/a&gt;"
    assert markup("Zoë 東京") == 'Zoë <font name="STSong-Light">東京</font>'
    assert markup("東京タワー") == '<font name="HeiseiKakuGo-W5">東京タワー</font>'
    assert markup("서울") == '<font name="HYGothic-Medium">서울</font>'
    assert markup("a\x00b\nc") == "a\ufffdb c"
    assert [face for face, _run in font_runs("Ελλάδα Москва")] == ["AuditSans"]


def test_wrap_text_breaks_words_cjk_and_long_values():
    lines = pdf.wrap_text("word " * 60, 100, 3)
    assert len(lines) == 3 and lines[-1][-1][1] == "…"
    joined = ["".join(run for _face, run in line) for line in pdf.wrap_text("x" * 400, 100, 50)]
    assert "".join(joined) == "x" * 400
    assert all(pdf._width(line, "AuditSans") <= 100 for line in joined)
    cjk = pdf.wrap_text("東京" * 50, 100, 50)
    assert len(cjk) > 1 and cjk[0][0][0] == "STSong-Light"


def test_change_lines_describe_old_and_new():
    lines = pdf.change_lines(
        [
            Change("", "add", MISSING, {"name": "Zoë", "tags": ["a"]}),
            Change("/email", "replace", "a@x", "b@x"),
            Change("/phone", "remove", "+1", MISSING),
            Change("", "remove", {"name": "Zoë"}, MISSING),
        ]
    )
    arrow = pdf.fonts().arrow
    assert lines == [
        'created: name="Zoë", tags=["a"]',
        f'/email: "a@x" {arrow} "b@x"',
        f'/phone: "+1" {arrow} (removed)',
        "deleted (its last state is kept)",
    ]
    many = pdf.change_lines([Change(f"/f{i}", "replace", 1, 2) for i in range(20)], limit=5)
    assert len(many) == 5 and "16 more" in many[-1]


def test_listing_spans_pages_with_the_header_on_each():
    out = io.BytesIO()
    pdf.render_events_report(out, _facts(event_count=600), _summary(), _rows(600), cap=1000)
    reader = PdfReader(io.BytesIO(out.getvalue()))
    listing_pages = [page.extract_text() for page in reader.pages[3:]]
    assert len(listing_pages) > 5
    assert all("Fields changed" in text for text in listing_pages)
    assert "seq 600" in listing_pages[-1]


def test_over_the_cap_keeps_the_summary_and_points_to_the_csv():
    out = io.BytesIO()
    facts = _facts(event_count=250_000)
    pdf.render_events_report(out, facts, _summary(), None, cap=100_000)
    pages, text = _text(out.getvalue())
    flat = _flat(text)
    assert "more than the 100,000 a PDF report lists" in flat
    assert f"SHA-256 {DIGEST}" in flat
    assert "Events by day" in flat and pages < 6


def test_empty_selection_says_no_events():
    out = io.BytesIO()
    pdf.render_events_report(out, _facts(event_count=0), pdf.Summary([], [], []), iter(()), cap=100)
    _pages, text = _text(out.getvalue())
    assert "No events match this filter." in text and "No events." in text


# --- Reports served by the dashboard ---------------------------------------------------------

PERIOD = "from=2025-09-01&to=2025-10-01"


def _count(seeded_db, sql: str, *params) -> int:
    with psycopg.connect(libpq_url(seeded_db.admin)) as conn:
        return conn.execute(sql, params).fetchone()[0]


def test_compliance_report_matches_its_csv(login, seeded_db):
    client = login("compliance")
    response = client.get(f"/reports/events.pdf?{PERIOD}&type=USER_UPDATED&type=USER_CREATED")
    assert response.status_code == 200, response.text[:500]
    assert response.mimetype == "application/pdf"
    mark = response.headers["X-Audit-High-Water-Mark"]
    pages, text = _text(response.data)
    flat = _flat(text)
    expected = _count(
        seeded_db,
        "SELECT count(*) FROM audit_events WHERE event_type IN ('USER_UPDATED', 'USER_CREATED') "
        "AND created_at >= '2025-09-01Z' AND created_at < '2025-10-01Z'",
    )
    assert expected > 0
    assert pages > 2
    assert f"Events {expected:,}" in flat
    assert "events of type USER_UPDATED or USER_CREATED from 2025-09-01 00:00:00+00:00 to " in flat
    assert f"seq {mark}" in flat
    created = _count(
        seeded_db,
        "SELECT count(*) FROM audit_events WHERE event_type = 'USER_CREATED' "
        "AND created_at >= '2025-09-01Z' AND created_at < '2025-10-01Z'",
    )
    assert re.search(rf"USER_CREATED {created:,} ", flat)
    csv = client.get(
        f"/export/events.csv?{PERIOD}&type=USER_CREATED&type=USER_UPDATED&through_seq={mark}"
    )
    digest = hashlib.sha256(csv.data).hexdigest()
    assert response.headers["X-Audit-CSV-SHA256"] == digest
    assert f"SHA-256 of the CSV {digest}" in flat
    assert text.count(f"CSV SHA-256 {digest}") == pages
    assert re.search(rf"Page {pages} of\s*{pages}\b", text)


def test_report_lists_changes_and_non_latin_names(login):
    response = login("auditor").get("/reports/events.pdf?from=2025-05-01&to=2025-07-01")
    assert response.status_code == 200
    _pages, text = _text(response.data)
    assert "Fields changed" in text
    assert "created: " in text
    assert re.search("[Zz]o[ëe]|Łukasz|東京|Jürgen", text)


def test_cap_reached_keeps_summary(make_app):
    from conftest import sign_in

    client = sign_in(make_app(pdf_max_events=10).test_client(), "auditor")
    response = client.get(f"/reports/events.pdf?{PERIOD}")
    assert response.status_code == 200
    _pages, text = _text(response.data)
    flat = _flat(text)
    assert "more than the 10 a PDF report lists" in flat
    assert "Fields changed" not in flat


def test_empty_selection_is_a_report_not_an_error(login):
    response = login("auditor").get("/reports/events.pdf?from=2001-01-01&to=2001-02-01")
    assert response.status_code == 200
    _pages, text = _text(response.data)
    assert "No events match this filter." in text
    assert f"SHA-256 of the CSV {hashlib.sha256(b'').hexdigest()}" not in _flat(text)


def test_reversed_dates_show_the_form_with_the_reason(login):
    response = login("auditor").get("/reports/events.pdf?from=2025-10-01&to=2025-09-01")
    assert response.status_code == 400
    assert "must be later" in response.text and "<form" in response.text


def test_support_cannot_report_on_searches(login):
    client = login("support")
    assert client.get(f"/reports/events.pdf?{PERIOD}").status_code == 403
    assert client.get("/reports").status_code == 403


@pytest.fixture(scope="module")
def person(seeded_db) -> tuple[str, str]:
    """A USER record with an e-mail address, and that address."""
    with psycopg.connect(libpq_url(seeded_db.admin)) as conn:
        row = conn.execute(
            "SELECT aggregate_id::text, payload->>'email' FROM audit_events "
            "WHERE event_type = 'USER_CREATED' AND payload ? 'email' ORDER BY seq LIMIT 1"
        ).fetchone()
    return row[0], row[1]


def test_record_history_pdf_masks_personal_data_for_support(login, person):
    aggregate_id, email = person
    response = login("support").get(f"/export/aggregates/{aggregate_id}.pdf")
    assert response.status_code == 200
    _pages, text = _text(response.data)
    flat = _flat(text)
    assert aggregate_id in flat and "Record history" in flat
    assert MASK in text
    assert email not in flat
    assert "masked (no view_pii permission)" in flat
    csv = login("support").get(f"/export/aggregates/{aggregate_id}.csv")
    assert response.headers["X-Audit-CSV-SHA256"] == hashlib.sha256(csv.data).hexdigest()
    assert email.encode() not in csv.data


def test_record_history_pdf_shows_data_to_auditors(login, person):
    aggregate_id, email = person
    response = login("auditor").get(f"/export/aggregates/{aggregate_id}.pdf")
    _pages, text = _text(response.data)
    assert email in _flat(text)
    assert "Final state" in text


# --- Streaming: what a long listing keeps in memory ------------------------------------------


def test_finished_pages_are_kept_compressed_not_as_text():
    """ReportLab keeps each finished page's content as text until save; a 4,500-page
    listing held most of the worker's memory that way. The report's canvas compresses a
    page when it ends, and the saved PDF still reads back."""
    out = io.BytesIO()
    canvas = pdf._NumberedCanvas(out, pagesize=pdf.PAGE_SIZE)
    for number in range(3):
        canvas.setFont(pdf.fonts().base, 9)
        canvas.drawString(50, 50, f"page {number} " + "x" * 500)
        canvas.showPage()
        page = canvas._doc.Pages.pages[-1]
        assert page.stream is None  # the text is gone...
        assert len(page.Contents.content) < 200  # ...kept as FlateDecode bytes
    canvas.save()
    pages, text = _text(out.getvalue())
    assert pages == 3 and "page 2 xxx" in text


def test_pages_parked_on_disk_and_streamed_out_make_the_same_bytes(monkeypatch):
    """Pages wait in a temporary file (on disk past its first MB) and save writes each
    object as it is formatted: the file is byte for byte what ReportLab's own save makes
    from pages kept in memory (invariant mode: no time or random id in the file)."""
    from reportlab import rl_config

    monkeypatch.setattr(rl_config, "invariant", 1)
    monkeypatch.setattr(pdf._ParkedStream, "IN_MEMORY", 1)

    def render() -> bytes:
        out = io.BytesIO()
        pdf.render_events_report(out, _facts(event_count=600), _summary(), _rows(600), cap=1000)
        return out.getvalue()

    ours = render()

    class InMemory(pdf.PDFStream):  # a page stream as ReportLab keeps it
        IN_MEMORY = 1

        def __init__(self, _parked, data: bytes):
            super().__init__(content=data)

    monkeypatch.setattr(pdf, "_ParkedStream", InMemory)
    monkeypatch.setattr(pdf, "_streaming_format", lambda out: pdf.pdfdoc.PDFDocument.format)
    theirs = render()

    assert ours == theirs
    assert _text(ours)[0] > 10


def test_change_text_is_what_the_listing_draws_from_the_changes():
    """A listing row may carry its "fields changed" cell already in words (what the
    streamed report keeps per event); it is drawn exactly as from the changes."""
    long_value = "z" * 5000
    changes = [
        Change("", "add", MISSING, {f"field{i}": long_value for i in range(30)}),
        Change("/email", "replace", "old@example.com", "東京 " * 900),
        *(Change(f"/f{i}", "replace", i, i + 1) for i in range(12)),
    ]
    anomalies = ("update after delete",)
    [template] = _rows(1)
    from_changes = pdf.ListingRow(
        **{**template.__dict__, "changes": changes, "anomalies": anomalies}
    )
    text = pdf.change_text(changes, anomalies)
    from_text = pdf.ListingRow(**{**template.__dict__, "changes": (), "change_text": text})
    widths = [width for _title, width in pdf._columns(pdf._EVENT_COLUMNS)]
    assert pdf._prepare(from_text, widths, True) == pdf._prepare(from_changes, widths, True)
    wrap = pdf._WrapCache()  # what the listing wraps with: same rows, the second time too
    for _ in range(2):
        assert pdf._prepare(from_text, widths, True, wrap) == pdf._prepare(from_text, widths, True)
    assert text[0] == "anomaly: update after delete"
    assert max(map(len, text)) <= pdf.MAX_WRAPPED_LINES * pdf.MAX_LINE_CHARS + 1
    assert pdf.change_text(()) == ("(no field changed)",)


def test_ascii_runs_are_written_as_reportlab_writes_them():
    """The listing's fast path for printable ASCII writes the very operators ReportLab's
    own text output does, subset switches included, and leaves every other run to it."""
    from reportlab.pdfgen.canvas import Canvas

    canvas = Canvas(io.BytesIO())
    base = pdf.fonts().base
    theirs, ours = canvas.beginText(), canvas.beginText()
    theirs.setFont(base, pdf.LISTING_FONT_SIZE, pdf.LISTING_LEADING)
    ours.setFont(base, pdf.LISTING_FONT_SIZE, pdf.LISTING_LEADING)
    writer = pdf._AsciiRuns.of(canvas)
    runs = ["2024-05-01 00:00:00.000000", "seq 7", "a (b) \\ c)", "Zoë", "tab\there", "é", "x"]
    taken = []
    for run in runs:
        theirs._textOut(run)
        wrote = writer.write(ours, base, run)
        taken.append(wrote)
        if not wrote:
            ours._textOut(run)
    assert ours._code == theirs._code
    assert taken == [True, True, True, False, False, False, True]
    assert not writer.write(ours, "STSong-Light", "abc")


def test_the_lines_kept_per_listed_event_come_back_as_they_went_in():
    """The replay spools each listed event's lines (past 1 MB on disk); the listing reads
    each back once, in another order."""
    from dashboard.reports.builder import _ChangeSpool

    spool = _ChangeSpool(in_memory=1)  # on disk from the first entry
    kept = {
        7: ("one",),
        "3f0c": ("anomaly: x", "/a: 1 → 2", ""),
        9: ("a key with \x00 in it", "b"),
        **{n: (f"/n: {n} → {n + 1}", "é" * n) for n in range(100, 400)},
    }
    for key, lines in kept.items():
        spool.put(key, lines)
    for key in reversed(list(kept)):
        assert spool.pop(key) == kept[key]
    assert spool.file._rolled  # it was on disk
    assert spool.pop(7) is None  # read once
    spool.close()


def test_the_listed_seqs_are_found_in_any_order_they_come():
    """The listing's seqs come in (created_at, seq) order, which need not be seq order
    (an event's time is its transaction's start): membership holds either way."""
    from array import array

    from dashboard.reports.builder import _SortedSeqs

    sparse = [3, 5000, 70, 900_000]  # a bitmap of its span would be larger than 8 bytes each
    for seqs in ([5, 9, 12, 40], [40, 5, 12, 9], [], sparse, sorted(sparse), [7]):
        listed = _SortedSeqs(array("q", seqs))
        assert (listed.bits is None) == (seqs in (sparse, sorted(sparse)))
        assert [n for n in range(-3, 45) if n in listed] == sorted(n for n in seqs if n < 45)
        assert all(n in listed for n in seqs)
        assert 899_999 not in listed and 900_001 not in listed
