"""The report pages and links: the compliance form, download links on the search, as-of and
record pages, the as-of and record-history CSVs, and both downloads in a real browser."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from bs4 import BeautifulSoup

from dashboard.db import libpq_url
from dashboard.masking import MASK
from dashboard.reports.builder import AS_OF_COLUMNS, RECORD_COLUMNS


def _soup(response) -> BeautifulSoup:
    return BeautifulSoup(response.text, "html.parser")


def test_report_form_offers_period_filters_and_both_formats(login):
    response = login("compliance").get("/reports")
    assert response.status_code == 200
    form = _soup(response).find("form", id="report-form")
    assert form["action"] == "/reports/events.pdf"
    names = {field["name"] for field in form.find_all(["input", "select"]) if field.get("name")}
    assert {"from", "to", "tz", "type", "actor", "kind"} <= names
    assert form.find("button", id="report-csv")["formaction"] == "/export/events.csv"
    assert "USER_CREATED" in {option["value"] for option in form.find_all("option")}
    assert "100,000 events" in response.text  # the cap, said up front


def test_nav_offers_reports_only_to_exporters(login, app):
    from conftest import sign_in

    assert _soup(login("auditor").get("/search")).find("a", string="Reports") is not None
    support = sign_in(app.test_client(), "support").get("/lookup")
    assert support.status_code == 200
    assert _soup(support).find("a", string="Reports") is None


def test_search_results_link_to_both_exports_of_the_same_filter(login):
    page = login("auditor").get("/search?type=USER_CREATED&range=&from=2025-06-01&to=2025-07-01")
    soup = _soup(page)
    csv_link = soup.find("a", class_="export-csv")["href"]
    pdf_link = soup.find("a", class_="export-pdf")["href"]
    assert urlsplit(csv_link).path == "/export/events.csv"
    assert urlsplit(pdf_link).path == "/reports/events.pdf"
    args = parse_qs(urlsplit(csv_link).query)
    assert args["type"] == ["USER_CREATED"] and args["from"][0].startswith("2025-06-01T00:00")
    assert parse_qs(urlsplit(pdf_link).query) == args


def test_as_of_csv_lists_every_record_of_the_kind(login, seeded_db):
    client = login("auditor")
    page = client.get("/as-of?kind=ORDER&at=2026-01-01T00:00:00")
    link = _soup(page).find("a", class_="export-csv")["href"]
    response = client.get(link)
    assert response.status_code == 200
    assert "audit-as-of_kind-ORDER_at-20260101T000000Z_" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text, newline="")))
    assert list(rows[0]) == list(AS_OF_COLUMNS)
    with psycopg.connect(libpq_url(seeded_db.admin)) as conn:
        # The same records as the as-of page lists: those declaring the kind in
        # metadata.aggregate_type, plus those created by ORDER_CREATED without declaring one.
        expected = conn.execute(
            "SELECT count(DISTINCT aggregate_id) FROM audit_events WHERE "
            "created_at <= '2026-01-01Z' AND (metadata->>'aggregate_type' = 'ORDER' OR "
            "(event_type = 'ORDER_CREATED' AND NOT coalesce(metadata ? 'aggregate_type', false)))"
        ).fetchone()[0]
    assert len(rows) == expected > 0
    assert {row["kind"] for row in rows} == {"ORDER"}
    assert all(json.loads(row["state"]) is not None for row in rows)


@pytest.fixture(scope="module")
def busy_user(seeded_db) -> tuple[str, int]:
    with psycopg.connect(libpq_url(seeded_db.admin)) as conn:
        return conn.execute(
            "SELECT aggregate_id::text, count(*) FROM audit_events WHERE aggregate_id IN "
            "(SELECT aggregate_id FROM audit_events WHERE event_type = 'USER_CREATED') "
            "GROUP BY 1 ORDER BY 2 DESC LIMIT 1"
        ).fetchone()


def test_record_history_csv_has_every_event_and_its_changes(login, busy_user):
    aggregate_id, count = busy_user
    client = login("auditor")
    record_page = _soup(client.get(f"/aggregates/{aggregate_id}"))
    link = record_page.find("a", class_="export-csv")["href"]
    response = client.get(link)
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(response.text, newline="")))
    assert list(rows[0]) == list(RECORD_COLUMNS)
    assert len(rows) == count
    assert {row["aggregate_id"] for row in rows} == {aggregate_id}
    first = json.loads(rows[0]["changes"])
    assert first[0]["op"] == "add" and first[0]["path"] == ""
    assert all(isinstance(json.loads(row["changes"]), list) for row in rows)
    assert record_page.find("a", class_="export-pdf") is not None


def test_record_history_csv_is_masked_for_support(login, busy_user, seeded_db):
    aggregate_id, _count = busy_user
    response = login("support").get(f"/export/aggregates/{aggregate_id}.csv")
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(response.text, newline="")))
    created = json.loads(rows[0]["changes"])[0]["new"]
    assert created["email"] == MASK
    assert "@example" not in rows[0]["payload"]
    with psycopg.connect(libpq_url(seeded_db.admin)) as conn:
        entry = conn.execute(
            "SELECT action, aggregate_ids, export_digest FROM audit_access_log "
            "WHERE action = 'export_record_csv' ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert entry == (
        "export_record_csv",
        [aggregate_id],
        hashlib.sha256(response.data).hexdigest(),
    )


def test_record_export_needs_a_reason_when_configured(make_app, busy_user):
    from conftest import sign_in

    aggregate_id, _count = busy_user
    client = sign_in(make_app(require_access_reason=True).test_client(), "support")
    refused = client.get(f"/export/aggregates/{aggregate_id}.csv")
    assert refused.status_code == 400 and "reason" in refused.json["error"]
    allowed = client.get(f"/export/aggregates/{aggregate_id}.csv?reason=TICKET-42")
    assert allowed.status_code == 200


def test_bad_record_id_is_a_400(login):
    response = login("auditor").get("/export/aggregates/not-a-uuid.pdf")
    assert response.status_code == 400 and "UUID" in response.json["error"]


# --- In a browser ----------------------------------------------------------------------------


@pytest.mark.browser
def test_browser_downloads_the_csv_and_the_pdf(page, live_server, browser_login, tmp_path):
    browser_login("compliance")
    page.goto(live_server + "/search?type=USER_CREATED&range=custom&from=2025-06-01&to=2025-09-01")
    with page.expect_download() as csv_download:
        page.click("a.export-csv")
    csv_file = tmp_path / csv_download.value.suggested_filename
    csv_download.value.save_as(csv_file)
    assert csv_download.value.failure() is None
    assert csv_file.name.startswith("audit-events_type-USER_CREATED_from-20250601T000000Z")
    data = csv_file.read_bytes()
    assert data.startswith(b"created_at,seq,event_id,aggregate_id,kind,event_type,")
    assert data.count(b"\r\n") > 1

    page.goto(live_server + "/reports")
    page.fill("#r-from", "2025-06-01T00:00:00")
    page.fill("#r-to", "2025-09-01T00:00:00")
    page.select_option("#r-type", ["USER_CREATED"])
    with page.expect_download() as pdf_download:
        page.click("#report-pdf")
    pdf_file = tmp_path / pdf_download.value.suggested_filename
    pdf_download.value.save_as(pdf_file)
    assert pdf_download.value.failure() is None
    assert pdf_file.suffix == ".pdf" and pdf_file.read_bytes().startswith(b"%PDF-")

    from pypdf import PdfReader

    text = " ".join(page_.extract_text() for page_ in PdfReader(pdf_file).pages)
    assert hashlib.sha256(data).hexdigest() in text  # the same selection, the same digest
