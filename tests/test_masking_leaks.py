"""Personal data in hostile shapes stays masked on every output a support agent can reach:
an actor given as an object, key names dressed up (look-alike letters, full-width letters,
zero-width characters, case and separators), and the common personal keys of the widened
default list. Auditors (view_pii) still see everything.

Every value to hide is a sentinel ``zqNN`` (two digits: no sentinel contains another, and
UUIDs never contain ``z`` or ``q``), so one search of a page, a JSON body, a CSV or a PDF's
text finds any leak.
"""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import psycopg
import pytest
from bs4 import BeautifulSoup
from click.testing import CliRunner
from conftest import sign_in
from pypdf import PdfReader

from dashboard import permissions
from dashboard.cli import main
from dashboard.db import libpq_url
from dashboard.masking import MASK

RECORD = str(uuid.UUID("7e57da7a-0000-4000-8000-00000000beef"))
OTHER_RECORD = str(uuid.UUID("7e57da7a-0000-4000-8000-00000000cafe"))

# Payload keys dressed up so that their spelling no longer matches the default list.
DRESSED = {
    "\u0435mail": "zq10",  # Cyrillic ie
    "\uff50\uff48\uff4f\uff4e\uff45": "zq11",  # full-width "phone"
    "e\u200bmail": "zq12",  # zero-width space
    "E_Mail": "zq13",  # case and separator
    "Home-Phone": "zq14",
    "emailAddress": "zq15",
    "\u039d\u0391\u039c\u0395": "zq16",  # Greek capitals
    "pass\u00adword": "zq17",  # soft hyphen
}
# One of each kind of key the widened default list adds.
NEW_DEFAULTS = {
    "mobileNumber": "zq20",
    "birthday": "zq21",
    "card_number": "zq22",
    "pan": "zq23",
    "cvv": "zq24",
    "password": "zq25",
    "client_secret": "zq26",
    "access_token": "zq27",
    "api_key": "zq28",
    "payout_iban": "zq29",
    "ssn": "zq30",
    "national_id": "zq31",
    "tax_id": "zq32",
    "passport": "zq33",
    "drivers_license": "zq34",
    "account_number": "zq35",
    "gender": "zq36",
    "private_key": "zq37",
    "credit_card": {"holder": "zq38", "last4": "zq39"},
}
ACTOR_OBJECT = {"email": "zq01@example.com", "ip": "zq02", "team": "billing"}
ACTOR_OBJECT_2 = {"email": "zq03@example.com", "name": "zq04", "team": "billing"}
ACTOR_EMAIL = "zq05@example.com"
ACTOR_PHONE = "+44 20 7946 0599"
SENTINELS = sorted(
    {"zq01", "zq02", "zq03", "zq04", "zq05", *DRESSED.values()} | {f"zq{n}" for n in range(20, 40)}
)
PHONE_DIGITS = "7946 0599"

EVENTS = [
    # (seq order, type, payload, metadata)
    (
        "USER_CREATED",
        {"plan": "pro", **DRESSED, **NEW_DEFAULTS},
        {"actor": ACTOR_OBJECT, "aggregate_type": "USER", "request_id": "req-zz-1"},
    ),
    ("USER_UPDATED", {"plan": "max", "\u0435mail": "zq10"}, {"actor": ACTOR_OBJECT_2}),
    ("USER_UPDATED", {"plan": "team"}, {"actor": ACTOR_EMAIL}),
    ("USER_UPDATED", {"plan": "solo"}, {"actor": ACTOR_PHONE}),
    ("USER_UPDATED", {"visits": 1}, {"actor": "ops"}),
]


@pytest.fixture(scope="module")
def hostile_db(make_database):
    """A database holding one USER record written with hostile shapes, and one other."""
    urls = make_database("audit_masking")
    with psycopg.connect(libpq_url(urls.admin)) as conn:
        for day, (event_type, payload, metadata) in enumerate(EVENTS, start=2):
            conn.execute(
                "INSERT INTO audit_events (aggregate_id, event_type, payload, metadata, "
                "created_at) VALUES (%s, %s, %s, %s, %s)",
                (
                    RECORD,
                    event_type,
                    json.dumps(payload),
                    json.dumps(metadata),
                    f"2025-09-{day:02d}T10:00:00Z",
                ),
            )
        conn.execute(
            "INSERT INTO audit_events (aggregate_id, event_type, payload, metadata, created_at) "
            'VALUES (%s, \'USER_CREATED\', \'{"plan": "x"}\', \'{"actor": "ops"}\', '
            "'2025-09-20T10:00:00Z')",
            (OTHER_RECORD,),
        )
        conn.commit()
        event_ids = [
            row[0]
            for row in conn.execute(
                "SELECT event_id::text FROM audit_events WHERE aggregate_id = %s ORDER BY seq",
                (RECORD,),
            )
        ]
        other_event = conn.execute(
            "SELECT event_id::text FROM audit_events WHERE aggregate_id = %s", (OTHER_RECORD,)
        ).fetchone()[0]
    return urls, event_ids, other_event


@pytest.fixture
def hostile_app(make_app, hostile_db):
    urls, _, _ = hostile_db
    return make_app(database_url=urls.reader, access_log_url=urls.logger)


@pytest.fixture
def support(hostile_app):
    return sign_in(hostile_app.test_client(), "support")


@pytest.fixture
def auditor(hostile_app):
    return sign_in(hostile_app.test_client(), "auditor")


def _leaks(text: str) -> list[str]:
    found = [sentinel for sentinel in SENTINELS if sentinel in text]
    if PHONE_DIGITS in text:
        found.append(PHONE_DIGITS)
    return found


def _pdf_text(data: bytes) -> str:
    reader = PdfReader(io.BytesIO(data))
    return re.sub(r"\s+", " ", " ".join(page.extract_text() for page in reader.pages))


def _body(response) -> str:
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    if response.mimetype == "application/pdf":
        return _pdf_text(response.get_data())
    return response.get_data(as_text=True)


def _soup(response) -> BeautifulSoup:
    return BeautifulSoup(_body(response), "html.parser")


def _field(pointer_key: str) -> str:
    return quote("/" + pointer_key, safe="")


# --- The actor as an object, on each output ----------------------------------------------------


def test_record_page_set_by_masks_an_actor_object(support, auditor):
    url = f"/aggregates/{RECORD}"
    cells = [cell.get_text(" ") for cell in _soup(support.get(url)).select("td.provenance")]
    assert cells, "the state table shows who set each field"
    set_by = " ".join(cells)
    assert "zq01" not in set_by and "zq03" not in set_by and "zq05" not in set_by
    assert MASK in set_by
    assert "billing" in set_by  # the rest of the actor object stays visible
    assert "ops" in set_by  # a service's name is not personal data
    plain = " ".join(cell.get_text(" ") for cell in _soup(auditor.get(url)).select("td.provenance"))
    assert "zq01@example.com" in plain and ACTOR_PHONE in plain


def test_field_history_masks_an_actor_object(support, auditor):
    url = f"/aggregates/{RECORD}?field=/plan"
    rows = _soup(support.get(url)).select("table.field-changes tbody tr")
    assert len(rows) == 4
    actors = [row.find_all("td")[2].get_text() for row in rows]
    assert _leaks(" ".join(actors)) == []
    assert all(MASK in actor for actor in actors)
    assert [row.find_all("td")[5].get_text() for row in rows][-1] == '"solo"'  # values shown
    plain = _soup(auditor.get(url)).select("table.field-changes tbody tr")
    assert "zq01@example.com" in " ".join(row.get_text() for row in plain)


def test_state_api_provenance_masks_an_actor_object(support, auditor):
    body = support.get(f"/api/aggregates/{RECORD}/state").get_json()
    assert body["provenance"]["/plan"]["actor"] == MASK  # a phone number
    sources = {source["event_id"]: source["actor"] for source in body["provenance"].values()}
    assert {"email": MASK, "ip": MASK, "team": "billing"} in sources.values()
    assert "ops" in sources.values()
    assert _leaks(json.dumps(body, ensure_ascii=False)) == []
    plain = auditor.get(f"/api/aggregates/{RECORD}/state").get_json()
    assert ACTOR_OBJECT in [source["actor"] for source in plain["provenance"].values()]


def test_events_api_masks_an_actor_object(support, auditor):
    events = support.get(f"/api/aggregates/{RECORD}/events").get_json()["events"]
    assert [event["metadata"]["actor"] for event in events] == [
        {"email": MASK, "ip": MASK, "team": "billing"},
        {"email": MASK, "name": MASK, "team": "billing"},
        MASK,
        MASK,
        "ops",
    ]
    plain = auditor.get(f"/api/aggregates/{RECORD}/events").get_json()["events"]
    assert [event["metadata"]["actor"] for event in plain] == [
        ACTOR_OBJECT,
        ACTOR_OBJECT_2,
        ACTOR_EMAIL,
        ACTOR_PHONE,
        "ops",
    ]


def test_record_csv_masks_an_actor_object(support, auditor):
    rows = list(csv.DictReader(io.StringIO(_body(support.get(f"/export/aggregates/{RECORD}.csv")))))
    assert [row["actor"] for row in rows][2:] == [MASK, MASK, "ops"]
    assert json.loads(rows[0]["actor"]) == {"email": MASK, "ip": MASK, "team": "billing"}
    assert _leaks(json.dumps(rows, ensure_ascii=False)) == []
    plain = _body(auditor.get(f"/export/aggregates/{RECORD}.csv"))
    assert _leaks(plain) == [*SENTINELS, PHONE_DIGITS]


def test_record_pdf_masks_an_actor_object(support, auditor):
    text = _body(support.get(f"/export/aggregates/{RECORD}.pdf"))
    assert "Record history" in text
    assert _leaks(text) == []
    assert MASK in text and "billing" in text
    plain = _body(auditor.get(f"/export/aggregates/{RECORD}.pdf"))
    assert "zq01@example.com" in plain and "zq05@example.com" in plain


# --- Dressed-up and newly listed keys -----------------------------------------------------------


@pytest.mark.parametrize("key", [*DRESSED, *NEW_DEFAULTS])
def test_each_hostile_key_is_masked_in_the_state_and_its_history(support, key):
    state = support.get(f"/api/aggregates/{RECORD}/state").get_json()["state"]
    assert state[key] == MASK
    history = _soup(support.get(f"/aggregates/{RECORD}?field={_field(key)}"))
    table = history.find("table", class_="field-changes")
    assert table is not None and MASK in table.get_text()
    assert _leaks(table.get_text()) == []


def test_auditors_see_every_hostile_value(auditor):
    state = auditor.get(f"/api/aggregates/{RECORD}/state").get_json()["state"]
    assert {key: state[key] for key in DRESSED} == {**DRESSED, "\u0435mail": "zq10"}
    assert {key: state[key] for key in NEW_DEFAULTS} == NEW_DEFAULTS
    page = _body(auditor.get(f"/aggregates/{RECORD}"))
    assert _leaks(page) == [*SENTINELS, PHONE_DIGITS]


# --- Every output support can reach ---------------------------------------------------------


def _support_urls(app, event_ids: list[str]) -> Iterator[str]:
    """A URL for every GET endpoint a support agent may open, filled in with the record."""
    first, second = event_ids[0], event_ids[-1]
    values = {"aggregate_id": RECORD, "event_id": first}
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or rule.endpoint == "static":
            continue
        permission = permissions.permission_for(rule.endpoint)
        if not permissions.role_can("support", permission) or permission == permissions.PUBLIC:
            continue
        missing = set(rule.arguments) - set(values)
        assert not missing, f"{rule.rule}: teach this test to fill in {missing}"
        with app.test_request_context():
            from flask import url_for

            url = url_for(rule.endpoint, **{name: values[name] for name in rule.arguments})
        yield url
        if rule.endpoint in ("records.diff", "api.diff"):
            yield f"{url}?from={first}&to={second}"
        if rule.endpoint == "records.record":
            yield f"{url}?field=/plan"
            yield f"{url}?field={_field(chr(0x435) + 'mail')}"
            yield f"{url}?at=2025-09-03T12:00:00Z"
        if rule.endpoint == "api.event_changes":
            yield from (url.replace(first, event_id) for event_id in event_ids[1:])
        if rule.endpoint == "records.lookup":
            yield f"{url}?aggregate_id={RECORD}"


def test_no_output_open_to_support_leaks_personal_data(hostile_app, support, hostile_db):
    """A sweep over the URL map: a new page, API or export open to support is checked here
    without anyone having to remember masking for it."""
    _, event_ids, _ = hostile_db
    urls = list(_support_urls(hostile_app, event_ids))
    assert len(urls) >= 15
    for url in urls:
        response = support.get(url, follow_redirects=True)
        assert response.status_code < 500, url
        body = _body(response) if response.status_code == 200 else response.get_data(as_text=True)
        assert _leaks(body) == [], url


# --- Reports made for a masked reader (audit-dashboard report --masked) -----------------------


@pytest.mark.parametrize("output_format", ["csv", "pdf"])
def test_masked_events_report_hides_actor_objects_and_hostile_keys(
    hostile_db, tmp_path, output_format
):
    urls, _, _ = hostile_db
    env = {
        "AUDIT_DATABASE_URL": urls.reader,
        "AUDIT_ACCESS_LOG_URL": urls.logger,
        "AUDIT_USERS_FILE": str(tmp_path / "users.toml"),
    }
    output = tmp_path / f"report.{output_format}"
    period = ["--from", "2025-09-01", "--to", "2025-10-01", "--format", output_format]
    result = CliRunner().invoke(
        main, ["report", *period, "--masked", "--output", str(output)], env=env
    )
    assert result.exit_code == 0, result.output
    data = output.read_bytes()
    text = _pdf_text(data) if output_format == "pdf" else data.decode()
    assert _leaks(text) == []
    assert MASK in text and "billing" in text and "ops" in text
    plain = tmp_path / f"plain.{output_format}"
    result = CliRunner().invoke(main, ["report", *period, "--output", str(plain)], env=env)
    assert result.exit_code == 0, result.output
    data = plain.read_bytes()
    text = _pdf_text(data) if output_format == "pdf" else data.decode()
    assert "zq01@example.com" in text and "zq05@example.com" in text


# --- /api/diff across records -------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/diff", "/diff"])
def test_a_cross_record_diff_does_not_name_the_other_record(support, hostile_db, path):
    _, event_ids, other_event = hostile_db
    for first, second in ((event_ids[0], other_event), (other_event, event_ids[0])):
        response = support.get(path, query_string={"from": first, "to": second})
        assert response.status_code == 400
        body = response.get_data(as_text=True)
        assert "different records" in body
        assert OTHER_RECORD not in body and RECORD not in body
