"""Bounded work: big values are cut (with a link to the full JSON), big states and long
field histories are paged, the PDF's layout does not grow with a value's size, the pages'
folding and rendering stop at the work budget, and a streamed export stops working when
its client leaves. Sizes come from the README's "Limits"; no timed assertions here
(benchmarks/ prints the times)."""

from __future__ import annotations

import io
import json
import re
import time
import uuid

import psycopg
import pytest
from bs4 import BeautifulSoup
from conftest import sign_in
from pypdf import PdfReader

from dashboard.budget import check_budget
from dashboard.db import libpq_url
from dashboard.diff import Change
from dashboard.jsonpointer import MISSING
from dashboard.reports import builder, pdf
from dashboard.views import present, records

MEGABYTE_STRING = "ab" * 500_000
ARRAY_ITEMS = 100_000
WIDE_FIELDS = 450  # more than two pages of state fields
HISTORY_EVENTS = 2_000


class Big:
    def __init__(self, urls):
        self.urls = urls
        self.string = str(uuid.uuid4())
        self.array = str(uuid.uuid4())
        self.history = str(uuid.uuid4())
        self.wide = str(uuid.uuid4())
        self.events: dict[str, list[str]] = {}


@pytest.fixture(scope="module")
def big(make_database) -> Big:
    data = Big(make_database("audit_bounded"))

    def write(conn, record, event_type, payload):
        event_id = conn.execute(
            "SELECT insert_audit_event(%s, %s, %s::jsonb, %s::jsonb)::text",
            (record, event_type, json.dumps(payload), '{"actor": "big@example.com"}'),
        ).fetchone()[0]
        data.events.setdefault(record, []).append(event_id)

    with psycopg.connect(libpq_url(data.urls.writer)) as conn:
        write(conn, data.string, "USER_CREATED", {"plan": "basic", "bio": MEGABYTE_STRING})
    with psycopg.connect(libpq_url(data.urls.writer)) as conn:
        write(conn, data.array, "USER_CREATED", {"items": list(range(ARRAY_ITEMS))})
    with psycopg.connect(libpq_url(data.urls.writer)) as conn:
        write(conn, data.array, "USER_UPDATED", {"items": list(range(1, ARRAY_ITEMS + 1))})
    with psycopg.connect(libpq_url(data.urls.writer)) as conn:
        write(conn, data.wide, "USER_CREATED", {f"k{n:05d}": n for n in range(WIDE_FIELDS)})
    with psycopg.connect(libpq_url(data.urls.writer)) as conn:
        write(conn, data.history, "USER_CREATED", {"n": -1, "email": "h@example.com"})
    with psycopg.connect(libpq_url(data.urls.writer)) as conn:  # one transaction: fast
        for number in range(HISTORY_EVENTS - 1):
            write(conn, data.history, "USER_UPDATED", {"n": number})
    return data


@pytest.fixture
def big_app(make_app, big):
    return make_app(database_url=big.urls.reader, access_log_url=big.urls.logger)


@pytest.fixture
def auditor(big_app):
    return sign_in(big_app.test_client(), "auditor")


def soup(response):
    return BeautifulSoup(response.text, "html.parser")


def pdf_text(data: bytes) -> tuple[int, str]:
    reader = PdfReader(io.BytesIO(data))
    text = "\n".join(page.extract_text() for page in reader.pages)
    return len(reader.pages), re.sub(r"\s+", " ", text)


# --- values are cut, with a link to the whole ----------------------------------------------


def test_a_megabyte_value_is_cut_on_the_record_page_and_linked_in_full(auditor, big) -> None:
    page = auditor.get(f"/aggregates/{big.string}")
    assert page.status_code == 200
    assert len(page.data) < 60_000  # the value alone is 1,000,000 characters
    event_id = big.events[big.string][0]
    html = soup(page)
    note = html.select_one("details.payload .cut-note")
    assert note is not None and "Cut at 5,000 characters" in note.get_text(" ")
    full = note.select_one("a.full-json")["href"]
    assert full == f"/api/events/{event_id}"
    whole = auditor.get(full)
    assert whole.status_code == 200 and whole.json["payload"]["bio"] == MEGABYTE_STRING
    assert whole.json["event_id"] == event_id


def test_a_megabyte_value_is_cut_in_the_record_pdf(auditor, big) -> None:
    response = auditor.get(f"/export/aggregates/{big.string}.pdf")
    assert response.status_code == 200
    pages, text = pdf_text(response.data)
    assert pages <= 4
    assert "Values were cut here" in text
    assert f"/api/aggregates/{big.string}/state" in text
    assert "abababab" in text and "ab" * 200 not in text.replace(" ", "")


def test_pdf_layout_does_not_grow_with_a_values_size() -> None:
    """Ten megabytes of one value make the same small document as one kilobyte: the
    layout only sees what it shows (it used to wrap the whole value, quadratically)."""
    facts = pdf.ReportFacts(
        title="Record history",
        organisation="Example",
        facts=[("Record", "r")],
        event_count=1,
        csv_sha256="0" * 64,
        csv_filename="r.csv",
    )
    sizes = {}
    for size in (1_000, 10_000_000):
        value = "x" * size
        row = pdf.ListingRow(
            created_at=__import__("datetime").datetime(
                2024, 1, 1, tzinfo=__import__("datetime").UTC
            ),
            seq=1,
            aggregate_id="r",
            event_type="USER_CREATED",
            actor={"name": value},
            changes=(
                Change("", "add", MISSING, {"bio": value, **{f"k{i}": i for i in range(5000)}}),
            ),
        )
        out = io.BytesIO()
        pdf.render_record_report(
            out, facts, [row], {"bio": value, "items": list(range(50_000))}, state_label="Now"
        )
        pages, text = pdf_text(out.getvalue())
        sizes[size] = pages
        assert "… and 4,981 more fields" in text
        assert "more items" in text or "more lines" in text
    assert sizes[1_000] == sizes[10_000_000]


def test_wrap_text_measures_only_what_fits() -> None:
    lines = pdf.wrap_text("y" * 5_000_000, 100.0, 2)
    assert len(lines) == 2 and lines[-1][-1][1] == "…"


# --- big arrays and long histories are paged -----------------------------------------------


def test_a_hundred_thousand_item_array_makes_a_small_record_page(auditor, big) -> None:
    page = auditor.get(f"/aggregates/{big.array}")
    assert page.status_code == 200
    assert len(page.data) < 250_000  # was 140 MB
    html = soup(page)
    # The array is one row of the state, summarised; it unfolds to its first items only.
    rows = html.select("table.state tbody tr")
    assert len(rows) == 1
    assert rows[0].select_one("th code")["title"] == "/items"
    summary = rows[0].select_one("details.array-items")
    assert summary.select_one("summary").get_text() == f"array of {ARRAY_ITEMS:,} items"
    items = [item.get_text() for item in summary.select("ol li code")]
    assert items == [str(n) for n in range(1, present.ARRAY_ITEMS_SHOWN + 1)]
    note = summary.select_one(".cut-note")
    shown = f"First {present.ARRAY_ITEMS_SHOWN:,} of {ARRAY_ITEMS:,} items"
    assert shown in note.get_text(" ")
    assert note.select_one("a")["href"].startswith(f"/api/aggregates/{big.array}/state?at=")
    update = html.select_one(f"#event-{big.events[big.array][1]}")
    assert len(update.select("table.changes tbody tr")) == present.CHANGES_SHOWN
    note = update.select_one(".cut-note")
    assert f"{ARRAY_ITEMS - present.CHANGES_SHOWN:,} more changes" in note.get_text(" ")
    assert note.select_one("a")["href"] == f"/api/events/{big.events[big.array][1]}/changes"


def test_a_state_with_many_fields_is_paged(auditor, big) -> None:
    html = soup(auditor.get(f"/aggregates/{big.wide}"))
    rows = html.select("table.state tbody tr")
    assert len(rows) == records.STATE_FIELDS_PAGE
    assert rows[0].select_one("th code")["title"] == "/k00000"
    # The first rows are open; the rest of the page folds behind "Show N more fields".
    folded = html.select("details.more-fields table.state tbody tr")
    assert len(folded) == records.STATE_FIELDS_PAGE - records.STATE_ROWS_OPEN
    more = html.select_one("details.more-fields > summary").get_text()
    assert more == f"Show {records.STATE_FIELDS_PAGE - records.STATE_ROWS_OPEN} more fields"
    following = html.select_one("nav[aria-label='State field pages'] a.older")["href"]
    assert "fields_from=200" in following
    second = soup(auditor.get(following))
    paths = [row.select_one("th code")["title"] for row in second.select("table.state tbody tr")]
    assert paths[0] == "/k00200" and len(paths) == records.STATE_FIELDS_PAGE
    last = auditor.get(f"/aggregates/{big.wide}?fields_from={WIDE_FIELDS - 50}")
    assert len(soup(last).select("table.state tbody tr")) == 50
    assert not soup(last).select("nav[aria-label='State field pages'] a.older")


def test_a_long_field_history_is_paged(auditor, big) -> None:
    first = soup(auditor.get(f"/aggregates/{big.history}?field=/n"))
    rows = first.select("table.field-changes tbody tr")
    assert len(rows) == records.FIELD_HISTORY_PAGE
    position = first.select_one("#field-history .panel-position").get_text(" ")
    assert f"1–100 of {HISTORY_EVENTS:,}" in position
    later = first.select_one("nav[aria-label='Field history pages'] a.older")["href"]
    assert "history_from=100" in later and "field=%2Fn" in later
    last = soup(auditor.get(f"/aggregates/{big.history}?field=/n&history_from=1900"))
    cells = [
        row.select("td code")[-1].get_text() for row in last.select("table.field-changes tbody tr")
    ]
    assert cells[-1] == str(HISTORY_EVENTS - 2) and len(cells) == 100
    assert not last.select("nav[aria-label='Field history pages'] a.older")


def test_bad_panel_offsets_are_a_400(auditor, big) -> None:
    for query in ("fields_from=-1", "history_from=x", "fields_from=12345678901"):
        response = auditor.get(f"/aggregates/{big.history}?{query}")
        assert response.status_code == 400, query


# --- the work budget ---------------------------------------------------------------------------


def test_work_past_the_budget_is_a_503_saying_so(make_app, big) -> None:
    app = make_app(database_url=big.urls.reader, access_log_url=big.urls.logger, work_budget_ms=1)
    client = sign_in(app.test_client(), "auditor")
    page = client.get(f"/aggregates/{big.array}")
    assert page.status_code == 503
    assert "too much to show at once" in soup(page).get_text(" ")
    api = client.get(f"/api/aggregates/{big.array}/state")
    assert api.status_code == 503 and "too much to show at once" in api.json["error"]
    # Pages that stay small still answer under the same budget.
    assert client.get("/healthz").status_code in (200, 503)
    # No request's deadline stays behind in the thread that served it: the next work of
    # this thread (here the test's own) runs without one. It did stay, and failed every
    # pure test after this one in the same run.
    time.sleep(0.01)
    check_budget()


# --- a stream stops when its client leaves -------------------------------------------------


def test_a_record_export_stops_folding_when_the_client_leaves(make_app, big, monkeypatch) -> None:
    folded = []
    original = builder._ChangeStepper.changes_of

    def counting(self, event):
        folded.append(event.event_id)
        return original(self, event)

    monkeypatch.setattr(builder._ChangeStepper, "changes_of", counting)
    app = make_app(database_url=big.urls.reader, access_log_url=big.urls.logger)
    support = sign_in(app.test_client(), "support")  # masked: written by Python, folding
    response = support.get(f"/export/aggregates/{big.history}.csv", buffered=False)
    assert response.status_code == 200
    chunks = iter(response.response)
    first = next(chunks)
    assert first.startswith(b"created_at,")
    response.close()  # what the WSGI server does when the client disconnects
    read = len(folded)
    assert 0 < read < HISTORY_EVENTS
    whole = support.get(f"/export/aggregates/{big.history}.csv")
    assert whole.data.count(b"\r\n") == HISTORY_EVENTS + 1
    assert len(folded) == read + HISTORY_EVENTS


def test_a_streams_budget_never_stays_in_the_consumers_context() -> None:
    """A streamed export's deadline holds while its chunks are made, not between them: the
    consumer (a WSGI server thread, a test) must not carry it. A ``with work_budget()``
    around the ``yield`` left it set, and every pure test after a test-client export failed
    once it expired."""
    from dashboard import budget

    def chunks():
        for _ in range(3):
            budget.check_budget()  # inside the stream: the budget applies
            yield b"x"

    stream = budget.budgeted(chunks(), 0.01)
    assert next(stream) == b"x"
    time.sleep(0.02)
    check_budget()  # between chunks, in the consumer: no deadline
    with pytest.raises(budget.WorkBudgetExceeded):
        next(stream)  # but the stream's own work is past it
