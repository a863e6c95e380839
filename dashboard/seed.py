"""Realistic, deterministic demo events: ``audit-dashboard seed`` and the embedded demo.

The data exercises what the dashboard has to get right, not a uniform sample:

* three kinds of record, USER, ORDER and ACCOUNT, with eleven event types under the default
  replay rules (``*_CREATED`` create, ``*_DELETED`` delete, ``*_SNAPSHOT`` snapshot, the
  rest RFC 7396 merge patches, including ``null`` removals and wholesale array replacement);
* personal data with non-ASCII names and addresses (Zoë, Łukasz, 東京), orders whose
  ``items`` arrays of ``{"id", "sku", "name", "qty", "price"}`` objects are replaced by later
  events, account snapshots that drop keys the previous state had;
* staff and system-job actors with ``ip``, ``user_agent``, sometimes a ``reason``, and one
  ``request_id`` shared by the events that one request wrote to several records (placing
  an order writes ORDER_CREATED, ACCOUNT_BALANCE_ADJUSTED and USER_UPDATED at one instant);
* ``metadata.aggregate_type`` on most events, but a share of "legacy" records never carry
  it (a few of them have no metadata at all), so the kind must come from the create type;
* a skewed load: growth over 18 months, quiet weekends and nights, a few records with
  hundreds of events and one USER with far more than any other
  (``SeedResult.busiest_aggregate_id``; :func:`busiest_event_count`: 10,000 events when
  ``events >= 20,000``, else a tenth), plus exactly one deliberate anomaly (an update after
  a delete, with a ``reason`` saying so) once ``events >= 1,000``. Everything else is
  clean: no record is touched after its delete, every record starts with its create.

Determinism: ``random.Random`` streams seeded from ``seed`` drive everything, ids included,
and time is synthetic: 18 months ending at ``until`` (by default the moment of seeding, so the
newest events are minutes old and "the last hour" shows some; ``seed --until`` pins it), so
a seed and an ``until`` reproduce the same rows byte for byte. The last general request
always falls in the hour before ``until``. Events are generated lazily in time order, a few
days at a time, and only a bounded pool of "active" records is kept in memory, so memory
stays flat at any size. Two ways in:

* ``copy`` streams rows with ``COPY ... FROM STDIN`` in one transaction (needs INSERT, that
  is the owner/admin URL), then runs ANALYZE. seq follows COPY order, which is time order.
  Triggers and indexes stay in place. Sized for the 1,000,000-event demo on two cores: per
  event about 75 µs of Python CPU (generating, encoding, sending) and 90 µs of server CPU
  (parsing, seven indexes, WAL), which overlap because a worker thread sends one batch
  while Python builds the next; memory stays near 120 MB.
* ``function`` calls :func:`dashboard.writer.record_event` as ``audit_writer``, one
  transaction per request, so the events of a request share ``created_at`` (which is then
  the real ``now()``). For small data sets and for roles that may only call the function.
"""

from __future__ import annotations

import heapq
import json
import random
import re
import time
import unicodedata
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, NamedTuple
from uuid import UUID

import psycopg
from psycopg.copy import QueuedLibpqWriter

from .db import libpq_url, redact
from .writer import record_event

# The period the data covers ends at ``until`` (exclusive) and starts PERIOD before it.
PERIOD = timedelta(days=549)  # 18 months
# A fixed ``until`` for reproducible data: the test suite's seeded database uses it.
REFERENCE_UNTIL = datetime(2026, 11, 1, tzinfo=UTC)
BUSIEST_EVENTS = 10_000  # the busiest USER's events once events >= BUSIEST_THRESHOLD
BUSIEST_THRESHOLD = 20_000
ANOMALY_THRESHOLD = 1_000  # below this the data is entirely clean
METHODS = ("auto", "copy", "function")

# Records kept in memory to receive further events. Older ones go dormant (they simply get
# no more events), which bounds memory independently of the number of events.
MAX_ACTIVE_USERS = 5_000
MAX_OPEN_ORDERS = 3_000
MIN_ACTIVE_USERS = 100  # below this, half of all requests are sign-ups
MIN_BUCKET_EVENTS = 60  # general events per time bucket (of one or more days), at least
PROGRESS_EVERY = 10_000
_MAX_REQUEST_EVENTS = 3  # placing an order writes ORDER, ACCOUNT and USER events at once

_DAY_US = 86_400_000_000
_HOUR_US = 3_600_000_000
_DAYS = PERIOD.days

_COPY_SQL = (
    "COPY public.audit_events (event_id, aggregate_id, event_type, payload, metadata, "
    "created_at) FROM STDIN"
)


def _json_encoder() -> Callable[[Any], str]:
    """Compact JSON with non-ASCII kept as UTF-8.

    Encoding is a large share of the generator's time, and ``JSONEncoder.encode`` builds a
    new C encoder on every call; building it once halves that cost. ``c_make_encoder`` is
    CPython's internal API, so it is checked against the public encoder and dropped in
    favour of it if it ever behaves differently.
    """
    public = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return public

    def refuse(value: Any) -> Any:
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")

    try:
        chunks = make(
            None, refuse, json.encoder.encode_basestring, None, ":", ",", False, False, True
        )

        def fast(value: Any) -> str:
            return "".join(chunks(value, 0))

        sample = {"a": [1, 2.5, None, True], "ü": {"東京": 'x"y\n'}}
        if fast(sample) == public(sample):
            return fast
    except (TypeError, ValueError):
        pass
    return public


_ENCODE = _json_encoder()


class SeedError(RuntimeError):
    """Seeding cannot start; the message says what to change."""


class DemoEvent(NamedTuple):
    """One generated event as COPY-ready text, in the column order of the COPY statement."""

    event_id: str
    aggregate_id: str
    event_type: str
    payload: str  # JSON text
    metadata: str | None  # JSON text, or None for the few legacy events without metadata
    created_at: str  # ISO 8601, UTC, microsecond precision


# tuple.__new__ without NamedTuple's Python-level __new__: a million rows, a measurable saving.
_new_event = partial(tuple.__new__, DemoEvent)


@dataclass(frozen=True)
class SeedResult:
    """What ``seed_events`` wrote."""

    events: int
    counts: Mapping[str, int]  # events per event_type
    records: Mapping[str, int]  # records created per kind
    method: str  # "copy" or "function"
    seconds: float
    busiest_aggregate_id: UUID
    busiest_events: int
    anomaly_aggregate_id: UUID | None


# --------------------------------------------------------------------------------------
# Vocabulary. Reserved documentation ranges only: example.com/.net/.org addresses,
# 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24 and 2001:db8::/32 for IPs.

_FIRST_NAMES = (
    "Zoë", "Łukasz", "José", "Søren", "François", "Ana", "Mei", "Björn", "Chloé", "Mateus",
    "Olivia", "Noah", "Emma", "Liam", "Fatima", "Omar", "Priya", "Arjun", "Ingrid",
    "Małgorzata", "Jürgen", "Siobhán", "Đorđe", "Zsófia", "Ömer", "Ayşe", "Kateřina", "Raúl",
    "Leilani", "Yusuf", "Amélie", "Nikolaj", "Håkon", "Grace", "Wei", "Thabo",
)  # fmt: skip
_LAST_NAMES = (
    "Müller", "Ørsted", "Kowalski", "García", "Dubois", "Nguyễn", "Andersson", "O'Brien",
    "Smith", "Rossi", "Novák", "Şahin", "Silva", "Jensen", "Schröder", "Fernández", "Horváth",
    "Kim", "Żuraw", "Brontë", "Ní Bhriain", "Lefèvre", "Okafor", "Patel", "Łęcka", "Åberg",
)  # fmt: skip
_JAPANESE_NAMES = (
    ("山田 太郎", "taro.yamada"), ("佐藤 花子", "hanako.sato"), ("鈴木 一郎", "ichiro.suzuki"),
    ("高橋 美咲", "misaki.takahashi"), ("田中 健", "ken.tanaka"),
)  # fmt: skip
# country, locale, currency, phone prefix, ((city, postcode), ...), streets
_COUNTRIES = (
    ("DE", "de-DE", "EUR", "+49", (("Berlin", "10115"), ("München", "80331"),
     ("Köln", "50667"), ("Düsseldorf", "40213")), ("Hauptstraße", "Schloßallee",
     "Königstraße", "Müllerstraße", "Friedrichstraße")),
    ("PL", "pl-PL", "PLN", "+48", (("Kraków", "31-042"), ("Łódź", "90-001"),
     ("Gdańsk", "80-831"), ("Warszawa", "00-001")), ("ul. Świętokrzyska", "ul. Długa",
     "ul. Żółkiewskiego", "ul. Piotrkowska")),
    ("DK", "da-DK", "DKK", "+45", (("København", "1050"), ("Aarhus", "8000"),
     ("Odense", "5000")), ("Nørregade", "Østerbrogade", "Vesterbrogade")),
    ("JP", "ja-JP", "JPY", "+81", (("東京", "100-0005"), ("大阪", "530-0001"),
     ("京都", "600-8216")), ("千代田区丸の内", "港区六本木", "渋谷区神南", "中央区銀座")),
    ("FR", "fr-FR", "EUR", "+33", (("Paris", "75001"), ("Lyon", "69002"),
     ("Besançon", "25000")), ("rue de Rivoli", "boulevard Saint-Germain",
     "rue de la Pépinière")),
    ("ES", "es-ES", "EUR", "+34", (("Madrid", "28014"), ("Málaga", "29015"),
     ("A Coruña", "15001")), ("Calle de Alcalá", "Avenida de la Constitución",
     "Calle de Núñez de Balboa")),
    ("GB", "en-GB", "GBP", "+44", (("London", "EC1A 1BB"), ("Manchester", "M1 1AE"),
     ("Edinburgh", "EH1 1YZ")), ("Baker Street", "High Street", "Queen's Road")),
    ("US", "en-US", "USD", "+1", (("New York", "10001"), ("San José", "95113"),
     ("Austin", "78701")), ("Main Street", "Market Street", "Elm Avenue")),
    ("BR", "pt-BR", "BRL", "+55", (("São Paulo", "01310-100"), ("Florianópolis", "88010-000")),
     ("Avenida Paulista", "Rua Augusta", "Rua da Conceição")),
    ("CH", "de-CH", "CHF", "+41", (("Zürich", "8001"), ("Genève", "1204")),
     ("Bahnhofstrasse", "Rue du Rhône")),
)  # fmt: skip
_PRODUCTS = (
    ("SKU-10023", "Espresso cups (set of 4)", 2490), ("SKU-10417", "Merino scarf", 5900),
    ("SKU-11008", "Crème brûlée torch", 3450), ("SKU-12011", "Smørrebrød board", 2899),
    ("SKU-13002", "抹茶 matcha, 100 g", 1850), ("SKU-14090", "Łódka wooden toy boat", 1999),
    ("SKU-15333", "Café au lait bowl", 1200), ("SKU-16120", "Rain jacket, size M", 8900),
    ("SKU-17001", "USB-C cable, 2 m", 990), ("SKU-18210", "Notebook A5, dotted", 650),
    ("SKU-19044", "Kaffeemühle „Präzision“", 7450), ("SKU-20002", "Olive oil, 500 ml", 1575),
    ("SKU-21077", "Headphones ANC", 19900), ("SKU-22150", "Yoga mat", 3500),
    ("SKU-23099", "Desk lamp", 4990), ("SKU-24018", "Ceramic teapot", 3990),
)  # fmt: skip
_STAFF = (
    "alice.martin@example.com", "bob.nguyen@example.com", "chloe.dubois@example.com",
    "dmitri.ivanov@example.com", "ewa.kowalska@example.com", "farid.haddad@example.com",
)  # fmt: skip
_BROWSERS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/128.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:129.0) Gecko/20100101 Firefox/129.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148",
    "ShopApp/5.3.1 (Android 14; Pixel 8)",
)
# System jobs and the one client version each runs.
_JOB_AGENTS = {
    "system:billing-job": "billing-job/3.2.0 (python-httpx/0.27)",
    "system:carrier-webhook": "carrier-gateway/1.9.4 (Go-http-client/2.0)",
    "system:crm-sync": "crm-sync/2.7.1 (python-httpx/0.27)",
    "system:email-verification": "mailer/5.0.2 (Java/21)",
    "system:fulfilment-job": "fulfilment/4.1.0 (python-httpx/0.27)",
    "system:gdpr-eraser": "gdpr-eraser/1.0.3 (python-httpx/0.27)",
    "system:legacy-import": "legacy-import/0.9 (Perl/5.36)",
    "system:payment-webhook": "psp-gateway/7.3.0 (Go-http-client/2.0)",
    "system:reconciliation-job": "reconciliation/2.0.0 (python-httpx/0.27)",
}
_CARRIERS = ("DHL", "UPS", "PostNL", "La Poste", "Royal Mail", "ヤマト運輸")
_WAREHOUSES = ("DE-BER-1", "PL-WAW-2", "NL-AMS-1", "JP-TYO-1")
_STAFF_REASONS = (
    "customer called support, ticket #{n}",
    "address correction requested by customer (ticket #{n})",
    "duplicate charge, refund approved (ticket #{n})",
    "fraud review cleared, case {n}",
    "customer asked us to update their details by e-mail",
)
_CANCEL_REASONS = (
    "customer changed their mind",
    "item out of stock",
    "payment failed",
    "suspected fraud",
    "delivery address outside service area",
)
# Relative load by hour of day (UTC): quiet nights, a long European/American working day.
_HOUR_WEIGHTS = (2, 1, 1, 1, 1, 2, 4, 7, 10, 12, 12, 12, 11, 12, 12, 12, 11, 10, 9, 8, 7, 5, 4, 3)
_HOURS = tuple(range(24))
_WEEKDAY_WEIGHTS = (100, 105, 105, 100, 95, 60, 50)  # Monday first

# General requests and their relative frequency. Status changes outnumber orders so that
# most orders run their course (placed, paid, packed, shipped, delivered).
_REQUEST_WEIGHTS = (
    ("signup", 9), ("place_order", 12), ("order_status", 34), ("order_update", 5),
    ("order_cancel", 2), ("user_update", 12), ("email_change", 2), ("user_delete", 1),
    ("account_adjust", 6), ("account_snapshot", 2), ("account_open", 1),
)  # fmt: skip
_REQUEST_KINDS = tuple(kind for kind, _ in _REQUEST_WEIGHTS)
_REQUEST_CUM = tuple(
    sum(w for _, w in _REQUEST_WEIGHTS[: i + 1]) for i in range(len(_REQUEST_WEIGHTS))
)
_ORDER_FLOW = {"placed": "paid", "paid": "packed", "packed": "shipped", "shipped": "delivered"}

_COUNTRY_BY_CODE = {country[0]: country for country in _COUNTRIES}
# Letters NFKD does not decompose into a base letter plus accents.
_ASCII_FOLD = str.maketrans(
    {
        "ł": "l",
        "Ł": "L",
        "ø": "o",
        "Ø": "O",
        "đ": "d",
        "Đ": "D",
        "ß": "ss",
        "æ": "ae",
        "Æ": "AE",
        "ı": "i",
    }
)


# --------------------------------------------------------------------------------------
# The public entry point.


def seed_events(
    url: str,
    *,
    events: int,
    seed: int = 1,
    method: str = "auto",
    progress: Callable[[int, int], None] | None = None,
    until: datetime | None = None,
) -> SeedResult:
    """Write ``events`` demo events (exactly that many) to the database at ``url``.

    The data covers the 18 months before ``until`` (an aware datetime; default: now).

    ``method`` is ``"copy"`` (fast; the role needs INSERT on audit_events), ``"function"``
    (through ``insert_audit_event()``, as audit_writer) or ``"auto"``: copy when the role
    may INSERT, else function. ``progress(done, total)`` is called every
    ``PROGRESS_EVERY`` events and at the end. Raises ``SeedError`` when the role can do
    neither, or when this seed is already in the database (its ids would collide).
    """
    if isinstance(events, bool) or not isinstance(events, int) or events < 1:
        raise ValueError(f"events must be a positive integer, got {events!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    data = DemoData(events, seed, until=until)
    started = time.perf_counter()
    try:
        # Autocommit: the checks below need no transaction, and each write path opens
        # exactly the transactions it means to (one for COPY, one per request otherwise).
        conn = psycopg.connect(
            libpq_url(url),
            autocommit=True,
            connect_timeout=10,
            application_name="audit-dashboard seed",
        )
    except psycopg.OperationalError as exc:
        raise SeedError(f"Cannot connect to {redact(url)}: {exc}") from exc
    with conn:
        method = _choose_method(conn, method)
        _refuse_reseed(conn, data)
        if method == "copy":
            counts = _write_by_copy(conn, data, progress)
        else:
            counts = _write_by_function(conn, data, progress)
    return SeedResult(
        events=events,
        counts=dict(sorted(counts.items())),
        records=dict(sorted(data.records.items())),
        method=method,
        seconds=time.perf_counter() - started,
        busiest_aggregate_id=UUID(data.busiest_aggregate_id),
        busiest_events=data.busiest_events,
        anomaly_aggregate_id=UUID(data.anomaly_aggregate_id) if data.anomaly_aggregate_id else None,
    )


def _choose_method(conn: psycopg.Connection, method: str) -> str:
    row = conn.execute(
        "SELECT current_user, to_regclass('public.audit_events') IS NOT NULL"
    ).fetchone()
    role, has_table = row if row else ("?", False)
    if not has_table:
        raise SeedError(
            "The table audit_events does not exist here; run `audit-dashboard init-db` first."
        )
    can_insert, can_call = conn.execute(
        "SELECT has_table_privilege('public.audit_events', 'INSERT'), "
        "has_function_privilege('public.insert_audit_event(uuid, varchar, jsonb, jsonb)', "
        "'EXECUTE')"
    ).fetchone() or (False, False)
    if method == "auto":
        method = "copy" if can_insert else "function"
    if method == "copy" and not can_insert:
        raise SeedError(
            f"Role {role!r} may not INSERT into audit_events, which COPY needs. Seed with the "
            "admin (owner) URL, or use the function method with the writer URL."
        )
    if method == "function" and not can_call:
        raise SeedError(
            f"Role {role!r} may not EXECUTE insert_audit_event(). Seed with the writer URL "
            "(audit_writer) or the admin URL."
        )
    return method


def _refuse_reseed(conn: psycopg.Connection, data: DemoData) -> None:
    """Fail early when this seed's records already exist.

    A second COPY of one seed would hit duplicate event_ids halfway through; a second
    function run would silently give every record two create events. The writer cannot
    SELECT, so for it the check is skipped (and the data would be duplicated, not lost).
    """
    can_read = conn.execute(
        "SELECT has_table_privilege('public.audit_events', 'SELECT')"
    ).fetchone()
    if can_read and can_read[0]:
        found = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM public.audit_events WHERE aggregate_id = %s)",
            (data.busiest_aggregate_id,),
        ).fetchone()
        if found and found[0]:
            raise SeedError(
                f"Seed {data.seed} is already in this database (record "
                f"{data.busiest_aggregate_id} exists); choose another --seed or a fresh database."
            )


def _write_by_copy(
    conn: psycopg.Connection, data: DemoData, progress: Callable[[int, int], None] | None
) -> Counter[str]:
    counts: Counter[str] = Counter()
    total = data.events
    with conn.transaction(), conn.cursor() as cur:
        # A role-level statement_timeout must not cancel a minutes-long COPY halfway.
        cur.execute("SELECT set_config('statement_timeout', '0', true)")
        done = 0
        # The queued writer sends on a worker thread while this one generates and formats
        # rows, so the server indexes one batch while Python builds the next.
        with cur.copy(_COPY_SQL, writer=QueuedLibpqWriter(cur)) as copy:
            write_row = copy.write_row
            for event in data:
                write_row(event)
                counts[event.event_type] += 1
                done += 1
                if progress is not None and done % PROGRESS_EVERY == 0:
                    progress(done, total)
    # Fresh statistics, so the dashboard's first queries get the plans the indexes were
    # built for instead of the ones an empty table suggests.
    conn.execute("ANALYZE public.audit_events")
    if progress is not None:
        progress(total, total)
    return counts


def _write_by_function(
    conn: psycopg.Connection, data: DemoData, progress: Callable[[int, int], None] | None
) -> Counter[str]:
    counts: Counter[str] = Counter()
    total = data.events
    done = 0
    next_report = PROGRESS_EVERY
    for request in data.requests():
        # One transaction per request: its events commit together and share now().
        with conn.transaction():
            for event in request:
                record_event(
                    conn,
                    event.aggregate_id,
                    event.event_type,
                    json.loads(event.payload),
                    None if event.metadata is None else json.loads(event.metadata),
                )
                counts[event.event_type] += 1
        done += len(request)
        if progress is not None and done >= next_report:
            progress(done, total)
            next_report += PROGRESS_EVERY
    if progress is not None:
        progress(total, total)
    return counts


# --------------------------------------------------------------------------------------
# The generator.


def busiest_event_count(events: int) -> int:
    """How many of ``events`` go to the busiest record (a USER).

    10,000 once there are 20,000 events, the size that shows whether a record's timeline
    and replay stay fast; below that a tenth of the events, but at least 20 (all of them
    when there are fewer), so that it stays the busiest record even in a tiny data set.
    """
    if events >= BUSIEST_THRESHOLD:
        return BUSIEST_EVENTS
    return max(events // 10, min(events, 20))


class DemoData:
    """The demo event stream for ``(events, seed)``: iterate for rows in time order.

    Nothing is generated until iterated, and each iteration starts afresh from the seed,
    so iterating twice yields the same rows. ``requests()`` yields the same events grouped
    by the request (and so the transaction) that wrote them.
    """

    def __init__(self, events: int, seed: int = 1, until: datetime | None = None):
        if events < 1:
            raise ValueError("events must be at least 1")
        self.events = events
        self.seed = seed
        self.until = _aware(until) if until is not None else datetime.now(UTC)
        self.start = self.until - PERIOD
        self.busiest_events = busiest_event_count(events)
        # Ids of the special records come from their own stream so they are known up front.
        ids = random.Random(f"audit-dashboard demo ids {seed}")
        self.busiest_aggregate_id = _uuid4(ids)
        self.anomaly_aggregate_id = _uuid4(ids) if events >= ANOMALY_THRESHOLD else None
        heavy_count = 0 if events < 2_000 else min(6, 1 + events // 50_000)
        self.heavy_events = min(800, max(100, events // 200))
        # Alternate ACCOUNT and ORDER so "hundreds of events" covers both kinds.
        self.heavy = tuple(
            ("ACCOUNT" if i % 2 == 0 else "ORDER", _uuid4(ids)) for i in range(heavy_count)
        )
        anomaly_events = 3 if self.anomaly_aggregate_id else 0
        self.general_events = (
            events - self.busiest_events - heavy_count * self.heavy_events - anomaly_events
        )
        self.records: Counter[str] = Counter()  # records created per kind, by the last pass

    def __iter__(self) -> Iterator[DemoEvent]:
        for request in self.requests():
            yield from request

    def requests(self) -> Iterator[list[DemoEvent]]:
        """The events grouped by request, in time order; each group shares created_at."""
        world = _World(self)
        self.records = world.records
        yield from world.run()


class _Record:
    """A record that may still receive events; ``state`` mirrors its replayed state."""

    __slots__ = ("account", "id", "kind", "legacy", "lines", "owner", "slot", "spelling", "state")

    def __init__(self, record_id: str, kind: str, state: dict[str, Any], legacy: bool = False):
        self.id = record_id
        self.kind = kind
        self.state = state
        self.legacy = legacy  # written by an old client: no aggregate_type in metadata
        self.slot = -1  # index in its pool, for O(1) removal
        self.account: _Record | None = None  # a user's or an order's account
        self.owner: _Record | None = None  # an order's or an account's user
        self.lines = 0  # an order's last line-item number, so removed ids are never reused
        self.spelling: str | None = None  # a user's real name, when signed up without accents


class _Pool:
    """Records eligible for more events, with O(1) random choice, removal and eviction."""

    def __init__(self, capacity: int, rng: random.Random):
        self.items: list[_Record] = []
        self.capacity = capacity
        self.rng = rng

    def add(self, record: _Record) -> None:
        if len(self.items) >= self.capacity:
            self.remove(self.items[_between(self.rng, 0, len(self.items))])  # goes dormant
        record.slot = len(self.items)
        self.items.append(record)

    def remove(self, record: _Record) -> None:
        if record.slot < 0:
            return
        last = self.items.pop()
        if last is not record:
            last.slot = record.slot
            self.items[record.slot] = last
        record.slot = -1

    def choice(self) -> _Record | None:
        return self.items[_between(self.rng, 0, len(self.items))] if self.items else None


class _Scheduled(NamedTuple):
    """A reserved event (busiest, heavy or anomaly record) at a fixed time."""

    at: int  # microseconds since the start of the period
    order: int  # tie-breaker, so equal times keep a fixed order
    make: Callable[[int], list]


class _World:
    """The simulation: requests in time order against a bounded pool of active records."""

    def __init__(self, plan: DemoData):
        self.plan = plan
        self.rng = random.Random(plan.seed)
        self.ids = random.Random(f"audit-dashboard demo event ids {plan.seed}")
        self.users = _Pool(MAX_ACTIVE_USERS, self.rng)
        self.orders = _Pool(MAX_OPEN_ORDERS, self.rng)
        self.records: Counter[str] = Counter()
        self.start = plan.start
        self.day_weights = _day_weights(plan.start)
        # Hour weights relative to the period's start, so nights stay quiet on the UTC clock
        # whatever time of day ``until`` is.
        shift = plan.start.hour
        self.hour_cum = tuple(
            sum(_HOUR_WEIGHTS[(shift + h) % 24] for h in range(i + 1)) for i in range(24)
        )
        self.weight_cum = [0]
        for weight in self.day_weights:
            self.weight_cum.append(self.weight_cum[-1] + weight)
        self.busiest: _Record | None = None
        self.heavy: list[_Record] = []
        self.anomaly: _Record | None = None
        self.now = 0  # microseconds since self.start of the request being generated
        self.handlers = {kind: getattr(self, "_request_" + kind) for kind in _REQUEST_KINDS}

    # -- driver ---------------------------------------------------------------------------

    def run(self) -> Iterator[list[DemoEvent]]:
        plan = self.plan
        first = self._scheduled_creates()
        yield from (self._emit(0, events) for events in first)
        # Buckets of whole days, long enough to hold a few dozen general events: a day of a
        # small data set holds too few for requests that write three events at once.
        span = max(1, -(-MIN_BUCKET_EVENTS * _DAYS // max(1, plan.general_events)))
        for first_day in range(0, _DAYS, span):
            days = (first_day, min(first_day + span, _DAYS))
            general = self._general_requests(days, self._allocate(plan.general_events, days))
            reserved = self._reserved_requests(days)
            # Both streams are in time order and touch disjoint records, so merging them
            # lazily keeps the whole output in time order (COPY order becomes seq order).
            for at, events in heapq.merge(general, reserved, key=_first):
                yield self._emit(at, events)

    def _allocate(self, total: int, days: tuple[int, int]) -> int:
        """The share of ``total`` due to ``days``, by integer cumulative rounding, so the
        shares of all buckets add up to exactly ``total``."""
        whole, cum = self.weight_cum[-1], self.weight_cum
        return total * cum[days[1]] // whole - total * cum[days[0]] // whole

    def _slot_times(self, days: tuple[int, int], count: int) -> list[int]:
        """``count`` sorted times within ``days``, busier on busy days and by day than night.

        Never a day's first microsecond, so nothing precedes the reserved creates at the start.
        """
        rng = self.rng
        first, last = days
        if last - first == 1:
            starts = [first * _DAY_US + 1] * count
        else:
            base = self.weight_cum[first]
            cum = [weight - base for weight in self.weight_cum[first + 1 : last + 1]]
            picked = rng.choices(range(first, last), cum_weights=cum, k=count)
            starts = [day * _DAY_US + 1 for day in picked]
        hours = rng.choices(_HOURS, cum_weights=self.hour_cum, k=count)
        random_ = rng.random
        times = [
            start + hour * _HOUR_US + int(random_() * (_HOUR_US - 1))
            for start, hour in zip(starts, hours, strict=True)
        ]
        times.sort()
        return times

    def _general_requests(self, days: tuple[int, int], budget: int) -> Iterator[tuple[int, list]]:
        slots = self._slot_times(days, budget)
        if days[1] == _DAYS:
            # The newest request lands in the hour before ``until``, so the data visibly
            # ends when it was seeded. A request takes up to _MAX_REQUEST_EVENTS slots, so
            # that many last slots move there (no extra random draw: the rest stays as was).
            end = _DAYS * _DAY_US
            for i in range(max(0, budget - _MAX_REQUEST_EVENTS), budget):
                slots[i] = max(slots[i], end - _HOUR_US + slots[i] % (_HOUR_US - 1))
            slots.sort()
        index = 0
        while index < budget:
            self.now = slots[index]
            events = self._random_request(budget - index)
            yield slots[index], events
            index += len(events)  # the request's events share its first slot's time

    def _reserved_requests(self, days: tuple[int, int]) -> Iterator[tuple[int, list]]:
        plan = self.plan
        scheduled: list[_Scheduled] = []
        if self.busiest is not None:
            for at in self._slot_times(days, self._allocate(plan.busiest_events - 1, days)):
                scheduled.append(_Scheduled(at, len(scheduled), self._busiest_event))
        for record in self.heavy:
            maker = (
                self._heavy_account_event if record.kind == "ACCOUNT" else self._heavy_order_event
            )
            for at in self._slot_times(days, self._allocate(plan.heavy_events - 1, days)):
                scheduled.append(_Scheduled(at, len(scheduled), _bind(maker, record)))
        if plan.anomaly_aggregate_id is not None:
            for day in range(*days):
                scheduled.extend(self._anomaly_events(day, len(scheduled)))
        scheduled.sort(key=lambda item: (item.at, item.order))  # never compares ``make``
        for item in scheduled:
            self.now = item.at
            yield item.at, item.make(item.at)

    def _emit(self, at: int, events: list) -> list[DemoEvent]:
        created_at = (self.start + timedelta(microseconds=at)).isoformat()
        rows = []
        shared: dict[int, str] = {}  # a request's events share one metadata dict
        for record, event_type, payload, metadata in events:
            if metadata is None:
                metadata_text = None
            else:
                metadata_text = shared.get(id(metadata))
                if metadata_text is None:
                    metadata_text = shared[id(metadata)] = _ENCODE(metadata)
                if not record.legacy:  # splice the kind in rather than encode again
                    metadata_text = f'{metadata_text[:-1]},"aggregate_type":"{record.kind}"}}'
            rows.append(
                _new_event(
                    (
                        _uuid4(self.ids),
                        record.id,
                        event_type,
                        _ENCODE(payload),
                        metadata_text,
                        created_at,
                    )
                )
            )
        return rows

    def _iso(self, at: int) -> str:
        return (self.start + timedelta(microseconds=at)).isoformat(timespec="seconds")

    # -- reserved records: the busiest user, the heavy records, the one anomaly -------------

    def _scheduled_creates(self) -> list[list]:
        """The special records' create events, all at the start, before anything else."""
        plan = self.plan
        busiest = self._new_user(legacy=False, country=_COUNTRIES[2])
        busiest.id = plan.busiest_aggregate_id
        self.busiest = busiest
        creates = [
            [
                (
                    busiest,
                    "USER_CREATED",
                    busiest.state,
                    self._ctx("staff", reason="key account onboarding (ticket #10001)"),
                )
            ]
        ]
        for kind, record_id in plan.heavy:
            if kind == "ACCOUNT":
                record = self._new_account(busiest, record_id)
                creates.append([(record, "ACCOUNT_CREATED", record.state, self._ctx("staff"))])
            else:
                record = self._new_order(busiest, record_id, standing=True)
                creates.append([(record, "ORDER_CREATED", record.state, self._ctx("staff"))])
            self.heavy.append(record)
        return creates

    def _busiest_event(self, at: int) -> list:
        """The busiest user is a key account whose profile a CRM job syncs all day long."""
        user = self.busiest
        assert user is not None
        roll = self.rng.random()
        if roll < 0.03:
            return self._user_update_events(user)
        if roll < 0.035:
            return self._email_change_events(user)
        loyalty = user.state.get("loyalty", {})
        points = loyalty.get("points", 0) + _between(self.rng, 1, 40)
        patch: dict[str, Any] = {"loyalty": {"points": points}, "last_seen_at": self._iso(at)}
        tier = "gold" if points > 100_000 else "silver" if points > 20_000 else "bronze"
        if tier != loyalty.get("tier"):
            patch["loyalty"]["tier"] = tier
        return [self._change(user, "USER_UPDATED", patch, self._ctx("system:crm-sync"))]

    def _heavy_account_event(self, account: _Record, at: int) -> list:
        if self.rng.random() < 0.04:
            return self._snapshot_events(account, at)
        amount = _between(self.rng, -250_000, 300_000)
        reason = f"invoice INV-{2025 + at // (_DAY_US * 365)}-{_between(self.rng, 0, 10**6):06d}"
        return [self._adjust(account, amount, "invoice", self._ctx("system:billing-job", reason))]

    def _heavy_order_event(self, order: _Record, at: int) -> list:
        """A standing B2B order: its item list is edited again and again."""
        if self.rng.random() < 0.08:
            status = "on_hold" if order.state.get("status") == "active" else "active"
            patch = {"status": status}
            return [self._change(order, "ORDER_STATUS_CHANGED", patch, self._ctx("staff"))]
        return self._order_update_events(order, max_items=12)

    def _anomaly_events(self, day: int, order: int) -> list[_Scheduled]:
        """One user updated after deletion: a late CRM webhook, labelled as the anomaly."""
        created, deleted = _DAYS * 3 // 10, _DAYS * 6 // 10
        at = day * _DAY_US + 13 * _HOUR_US
        if day == created:
            return [_Scheduled(at, order, self._anomaly_create)]
        if day == deleted:
            return [_Scheduled(at, order, self._anomaly_delete)]
        if day == deleted + 2:
            return [_Scheduled(at, order, self._anomaly_late_update)]
        return []

    def _anomaly_create(self, at: int) -> list:
        user = self._new_user(legacy=False)
        user.id = self.plan.anomaly_aggregate_id or user.id
        self.anomaly = user
        return [(user, "USER_CREATED", user.state, self._ctx("customer", user=user))]

    def _anomaly_delete(self, at: int) -> list:
        user = self.anomaly
        assert user is not None
        ctx = self._ctx("system:gdpr-eraser", "GDPR Art. 17 erasure request")
        return [(user, "USER_DELETED", {"erased": True, "legal_basis": "GDPR Art. 17"}, ctx)]

    def _anomaly_late_update(self, at: int) -> list:
        user = self.anomaly
        assert user is not None
        ctx = self._ctx(
            "system:crm-sync",
            "KNOWN ANOMALY: CRM webhook delivered after the erasure (incident INC-2291)",
        )
        event = (user, "USER_UPDATED", {"loyalty": {"points": 120}}, ctx)
        self.anomaly = None  # no further events
        return [event]

    # -- general requests ----------------------------------------------------------------

    def _random_request(self, room: int) -> list:
        """One request of at most ``room`` events; falls back to ones that always fit."""
        if len(self.users.items) < MIN_ACTIVE_USERS and self.rng.random() < 0.5:
            # A young shop is mostly sign-ups; without this the first few customers would
            # soak up the early traffic and, in a small data set, outdo the busiest record.
            return self._request_signup(room)
        kind = _REQUEST_KINDS[bisect_right(_REQUEST_CUM, self.rng.random() * _REQUEST_CUM[-1])]
        events = self.handlers[kind](room)
        if not events:
            events = self._request_user_update(room) or self._request_signup(room)
        return events

    def _request_signup(self, room: int) -> list:
        legacy = self.rng.random() < 0.1
        user = self._new_user(legacy=legacy)
        if legacy:
            # Imported from the old shop system; a third arrived with no metadata at all.
            ctx = None if self.rng.random() < 0.33 else self._ctx("system:legacy-import")
        else:
            ctx = self._ctx("customer", user=user)
        events = [(user, "USER_CREATED", user.state, ctx)]
        if room >= 2 and self.rng.random() < 0.75:
            account = self._new_account(user)
            events.append((account, "ACCOUNT_CREATED", account.state, ctx))
        self.users.add(user)
        return events

    def _request_place_order(self, room: int) -> list:
        user = self.users.choice()
        if user is None or room < (3 if user.account else 2):
            return []
        order = self._new_order(user)
        ctx = self._ctx("customer", user=user)
        events = [(order, "ORDER_CREATED", order.state, ctx)]
        if user.account is not None:
            total = -_cents(order.state["total"])
            events.append(self._adjust(user.account, total, "order", ctx, order_id=order.id))
        count = user.state.get("order_count", 0) + 1
        patch = {"order_count": count, "last_order_at": self._iso(self.now)}
        events.append(self._change(user, "USER_UPDATED", patch, ctx))
        self.orders.add(order)
        return events

    def _request_order_status(self, room: int) -> list:
        order = self.orders.choice()
        if order is None:
            return []
        status = order.state["status"]
        new_status = _ORDER_FLOW.get(status)
        if new_status is None:  # a state that does not advance; retire the order
            self.orders.remove(order)
            return []
        rng = self.rng
        patch: dict[str, Any] = {"status": new_status}
        if new_status == "paid":
            actor = "system:payment-webhook"
            patch["payment"] = {
                "method": _pick(rng, ("card", "paypal", "invoice", "blik")),
                "psp_reference": f"PSP{_between(rng, 0, 10**10):010d}",
            }
        elif new_status == "packed":
            actor = "system:fulfilment-job"
            patch["warehouse"] = _pick(rng, _WAREHOUSES)
        elif new_status == "shipped":
            actor = "system:fulfilment-job"
            patch["tracking"] = {
                "carrier": _pick(rng, _CARRIERS),
                "number": f"JJD{_between(rng, 0, 10**12):012d}",
            }
            patch["warehouse"] = None  # no longer in a warehouse: merge patch removes the key
        else:
            actor = "system:carrier-webhook"
            patch["tracking"] = {"delivered_to": _pick(rng, ("recipient", "neighbour", "locker"))}
            self.orders.remove(order)
        return [self._change(order, "ORDER_STATUS_CHANGED", patch, self._ctx(actor))]

    def _request_order_update(self, room: int) -> list:
        order = self.orders.choice()
        if order is None or order.state["status"] not in ("placed", "paid"):
            return []
        return self._order_update_events(order, max_items=8)

    def _request_order_cancel(self, room: int) -> list:
        order = self.orders.choice()
        if order is None or order.state["status"] not in ("placed", "paid", "packed"):
            return []
        account = order.account
        paid = order.state["status"] != "placed"
        refund = paid and account is not None and account.state.get("status") == "active"
        if refund and room < 2:
            return []
        rng = self.rng
        by_staff = rng.random() < 0.5
        reason = _pick(rng, _CANCEL_REASONS)
        ctx = (
            self._ctx("staff", reason=reason)
            if by_staff
            else self._ctx("customer", user=order.owner)
        )
        patch = {
            "status": "cancelled",
            "cancellation": {"reason": reason, "by": "staff" if by_staff else "customer"},
        }
        events = [self._change(order, "ORDER_CANCELLED", patch, ctx)]
        if refund and account is not None:
            amount = _cents(order.state["total"])
            events.append(self._adjust(account, amount, "refund", ctx, order_id=order.id))
        self.orders.remove(order)
        return events

    def _request_user_update(self, room: int) -> list:
        user = self.users.choice()
        return self._user_update_events(user) if user is not None else []

    def _request_email_change(self, room: int) -> list:
        user = self.users.choice()
        return self._email_change_events(user) if user is not None else []

    def _request_user_delete(self, room: int) -> list:
        user = self.users.choice()
        if user is None:
            return []
        account = user.account
        closing = account is not None and account.state.get("status") == "active"
        if closing and room < 2:
            return []
        if self.rng.random() < 0.5:
            ctx = self._ctx("system:gdpr-eraser", "GDPR Art. 17 erasure request")
            payload = {"erased": True, "legal_basis": "GDPR Art. 17"}
        else:
            ctx = self._ctx("staff", reason="customer closed their account")
            payload = {"erased": False, "closed_by": "support"}
        events = [(user, "USER_DELETED", payload, ctx)]
        if closing:
            assert account is not None
            # A snapshot of the closed account: credit_limit, billing_email and
            # last_adjustment are not in it, so replay must drop them.
            keep = ("owner_user_id", "number", "currency", "balance")
            state = {key: account.state[key] for key in keep if key in account.state}
            state.update(status="closed", closed_at=self._iso(self.now))
            account.state = state
            events.append((account, "ACCOUNT_SNAPSHOT", state, ctx))
        self.users.remove(user)
        return events

    def _request_account_adjust(self, room: int) -> list:
        user = self.users.choice()
        account = user.account if user is not None else None
        if account is None or account.state.get("status") != "active":
            return []
        rng = self.rng
        kind = _pick(rng, ("invoice_payment", "monthly_fee", "goodwill_credit", "chargeback"))
        amount = {
            "invoice_payment": _between(rng, 1_000, 50_000),
            "monthly_fee": -499,
            "goodwill_credit": _pick(rng, (500, 1_000, 2_500)),
            "chargeback": -_between(rng, 1_000, 20_000),
        }[kind]
        if kind in ("goodwill_credit", "chargeback"):
            ctx = self._ctx("staff", reason=self._staff_reason())
        else:
            ctx = self._ctx("system:billing-job")
        return [self._adjust(account, amount, kind, ctx)]

    def _request_account_snapshot(self, room: int) -> list:
        user = self.users.choice()
        account = user.account if user is not None else None
        if account is None or account.state.get("status") != "active":
            return []
        return self._snapshot_events(account, self.now)

    def _request_account_open(self, room: int) -> list:
        user = self.users.choice()
        if user is None or user.account is not None:
            return []
        account = self._new_account(user)
        return [(account, "ACCOUNT_CREATED", account.state, self._ctx("customer", user=user))]

    # -- event builders shared by general and reserved records ----------------------------

    def _user_update_events(self, user: _Record) -> list:
        rng, state = self.rng, user.state
        choices = ["move", "street", "preferences", "marketing", "phone"]
        if "phone" in state:
            choices.append("remove_phone")
        if state.get("email_verified") is False:
            choices += ["verify", "verify"]
        if user.spelling is not None:
            choices.append("fix_name")
        if "preferences" in state:
            choices.append("drop_preferences")
        change = _pick(rng, choices)
        ctx = None  # the customer themselves, unless a branch below says otherwise
        if change == "move":
            country = state["address"]["country"]
            city, postcode = _pick(rng, _country(country)[4])
            street = self._street(country)
            patch = {"address": {"street": street, "city": city, "postcode": postcode}}
        elif change == "street":
            patch = {"address": {"street": self._street(state["address"]["country"])}}
            ctx = self._ctx("staff", reason=self._staff_reason())
        elif change == "preferences":
            patch = {
                "preferences": {
                    "newsletter": rng.random() < 0.5,
                    "language": _pick(rng, ("en", "de", "pl", "ja", "fr")),
                }
            }
        elif change == "drop_preferences":
            patch = {"preferences": None}
        elif change == "marketing":
            patch = {"marketing_opt_in": not state.get("marketing_opt_in", False)}
        elif change == "phone":
            prefix = _country(state["address"]["country"])[3]
            patch = {"phone": self._phone(prefix)}
        elif change == "remove_phone":
            patch = {"phone": None}
            ctx = self._ctx("staff", reason="customer asked us to delete their phone number")
        elif change == "verify":
            patch = {"email_verified": True}
            ctx = self._ctx("system:email-verification")
        else:  # fix_name: the account was opened with the name typed without its accents
            patch = {"name": user.spelling}
            user.spelling = None
            ctx = self._ctx("staff", reason="name spelling corrected at the customer's request")
        if ctx is None:
            ctx = self._ctx("customer", user=user)
        return [self._change(user, "USER_UPDATED", patch, ctx)]

    def _email_change_events(self, user: _Record) -> list:
        email = self._email(user.state["name"])
        if self.rng.random() < 0.7:
            ctx = self._ctx("customer", user=user)
        else:
            ctx = self._ctx("staff", reason="customer lost access to their old mailbox")
        patch = {"email": email, "email_verified": False}
        return [self._change(user, "USER_EMAIL_CHANGED", patch, ctx)]

    def _order_update_events(self, order: _Record, max_items: int) -> list:
        """Edit the item list; the patch carries the whole new array, as RFC 7396 demands."""
        rng = self.rng
        items = list(order.state["items"])
        roll = rng.random()
        if (roll < 0.4 and len(items) < max_items) or not items:
            items.append(self._line_item(order))
        elif roll < 0.7 and len(items) > 1:
            items.pop(_between(rng, 0, len(items)))
        else:
            index = _between(rng, 0, len(items))
            items[index] = {**items[index], "qty": _between(rng, 1, 6)}
        patch: dict[str, Any] = {"items": items, "total": _total(items)}
        if "gift_note" in order.state and rng.random() < 0.3:
            patch["gift_note"] = None
        elif rng.random() < 0.1:
            country = order.state["shipping_address"]["country"]
            patch["shipping_address"] = {"street": self._street(country)}
        if order.owner is not None and rng.random() < 0.6:
            ctx = self._ctx("customer", user=order.owner)
        else:
            ctx = self._ctx("staff", reason=self._staff_reason())
        return [self._change(order, "ORDER_UPDATED", patch, ctx)]

    def _snapshot_events(self, account: _Record, at: int) -> list:
        """The reconciliation job writes the full state; transient keys are left out."""
        state = {k: v for k, v in account.state.items() if k not in ("last_adjustment", "hold")}
        state["reconciled_at"] = self._iso(at)
        if self.rng.random() < 0.2:
            state["hold"] = {
                "amount": _between(self.rng, 5, 200),
                "until": self._iso(at + 7 * _DAY_US)[:10],
            }
        account.state = state
        return [(account, "ACCOUNT_SNAPSHOT", state, self._ctx("system:reconciliation-job"))]

    def _adjust(
        self, account: _Record, amount_cents: int, kind: str, ctx: Any, order_id: str | None = None
    ) -> tuple:
        """A balance change. The previous ``last_adjustment`` is merged into, not replaced,
        so keys it had that the new one lacks are removed explicitly with null."""
        balance = _cents(account.state.get("balance", 0)) + amount_cents
        adjustment: dict[str, Any] = {"amount": amount_cents / 100, "kind": kind}
        if order_id is not None:
            adjustment["order_id"] = order_id
        previous = account.state.get("last_adjustment") or {}
        for key in previous:
            adjustment.setdefault(key, None)
        return self._change(
            account,
            "ACCOUNT_BALANCE_ADJUSTED",
            {"balance": balance / 100, "last_adjustment": adjustment},
            ctx,
        )

    def _change(self, record: _Record, event_type: str, patch: dict, ctx: Any) -> tuple:
        record.state = _merge_patch(record.state, patch)
        return (record, event_type, patch, ctx)

    # -- new records -------------------------------------------------------------------------

    def _new_user(self, legacy: bool, country: tuple | None = None) -> _Record:
        rng = self.rng
        code, locale, _, prefix, cities, _ = country or _pick(rng, _COUNTRIES)
        if code == "JP" and rng.random() < 0.7:
            name, romaji = _pick(rng, _JAPANESE_NAMES)
        else:
            name, romaji = f"{_pick(rng, _FIRST_NAMES)} {_pick(rng, _LAST_NAMES)}", None
        city, postcode = _pick(rng, cities)
        state: dict[str, Any] = {"name": name, "email": self._email(romaji or name)}
        if rng.random() < 0.8:
            state["phone"] = self._phone(prefix)
        state["address"] = {
            "street": self._street(code),
            "city": city,
            "postcode": postcode,
            "country": code,
        }
        state["locale"] = locale
        state["marketing_opt_in"] = rng.random() < 0.4
        state["email_verified"] = rng.random() < 0.5
        user = _Record(_uuid4(rng), "USER", state, legacy)
        folded = _ascii_fold(name)
        if folded != name and romaji is None and rng.random() < 0.15:
            # Typed without accents at signup; a later USER_UPDATED corrects the spelling.
            state["name"], user.spelling = folded, name
        self.records["USER"] += 1
        return user

    def _new_account(self, user: _Record, record_id: str | None = None) -> _Record:
        rng = self.rng
        currency = _country(user.state["address"]["country"])[2]
        state = {
            "owner_user_id": user.id,
            "number": f"ACC-{_between(rng, 0, 10**8):08d}",
            "currency": currency,
            "balance": 0,
            "credit_limit": _pick(rng, (0, 500, 1000, 2500)),
            "status": "active",
            "billing_email": user.state["email"],
        }
        account = _Record(record_id or _uuid4(rng), "ACCOUNT", state, user.legacy)
        account.owner = user
        user.account = account
        self.records["ACCOUNT"] += 1
        return account

    def _new_order(
        self, user: _Record, record_id: str | None = None, standing: bool = False
    ) -> _Record:
        rng = self.rng
        order = _Record(record_id or _uuid4(rng), "ORDER", {}, user.legacy)
        order.owner, order.account = user, user.account
        items = [self._line_item(order) for _ in range(_pick(rng, (1, 1, 2, 2, 3, 4)))]
        state: dict[str, Any] = {
            "user_id": user.id,
            "status": "active" if standing else "placed",
            "currency": _country(user.state["address"]["country"])[2],
            "items": items,
            "total": _total(items),
            "shipping_address": dict(user.state["address"]),
        }
        if user.account is not None:
            state["account_id"] = user.account.id
        if standing:
            state["standing_order"] = True
        elif rng.random() < 0.15:
            state["gift_note"] = _pick(
                rng,
                (
                    "Alles Gute zum Geburtstag!",
                    "Wesołych Świąt!",
                    "お誕生日おめでとう",
                    "Joyeux anniversaire ❤",
                ),
            )
        order.state = state
        self.records["ORDER"] += 1
        return order

    def _line_item(self, order: _Record) -> dict[str, Any]:
        sku, name, price = _pick(self.rng, _PRODUCTS)
        order.lines += 1
        return {
            "id": f"L{order.lines}",
            "sku": sku,
            "name": name,
            "qty": _between(self.rng, 1, 4),
            "price": price / 100,
        }

    # -- small value generators -------------------------------------------------------------

    def _ctx(self, actor: str, reason: str | None = None, user: _Record | None = None) -> dict:
        """Request metadata; ``actor`` is "staff", "customer" or a system job's name."""
        rng = self.rng
        if actor == "staff":
            who, ip = _pick(rng, _STAFF), f"198.51.100.{_between(rng, 10, 40)}"
            agent = _pick(rng, _BROWSERS[:3])
        elif actor == "customer":
            who = f"user:{user.id}" if user is not None else "anonymous"
            agent = _pick(rng, _BROWSERS)
            if rng.random() < 0.2:
                group, host = _between(rng, 0, 65536), _between(rng, 1, 65536)
                ip = f"2001:db8:{group:x}::{host:x}"
            else:
                ip = f"{_pick(rng, ('192.0.2', '203.0.113'))}.{_between(rng, 1, 255)}"
        else:  # a system job, from a handful of internal hosts
            who, ip = actor, f"10.20.0.{_between(rng, 2, 6)}"
            agent = _JOB_AGENTS[actor]
        # A few old services still send correlation_id; the dashboard accepts both.
        key = "correlation_id" if rng.random() < 0.04 else "request_id"
        ctx = {"actor": who, "ip": ip, "user_agent": agent, key: _uuid4(rng)}
        if reason is not None:
            ctx["reason"] = reason
        elif actor == "staff" and rng.random() < 0.5:
            ctx["reason"] = self._staff_reason()
        return ctx

    def _staff_reason(self) -> str:
        return _pick(self.rng, _STAFF_REASONS).format(n=_between(self.rng, 10_000, 99_999))

    def _email(self, name: str) -> str:
        """An ASCII address from a name ("Zoë Ørsted" -> zoe.orsted42@example.net)."""
        parts = (re.sub(r"[^a-z0-9]", "", part) for part in _ascii_fold(name).lower().split())
        local = ".".join(part for part in parts if part)
        if not local:  # a name in a script that has no ASCII folding, such as kanji
            local = f"customer{_between(self.rng, 0, 10**6):06d}"
        elif self.rng.random() < 0.5:
            local += str(_between(self.rng, 1, 100))
        return f"{local}@{_pick(self.rng, ('example.com', 'example.net', 'example.org'))}"

    def _phone(self, prefix: str) -> str:
        digits = f"{_between(self.rng, 10**8, 10**9)}"
        return f"{prefix} {digits[:3]} {digits[3:6]} {digits[6:]}"

    def _street(self, country: str) -> str:
        street = _pick(self.rng, _COUNTRY_BY_CODE[country][5])
        number = _between(self.rng, 1, 120)
        if country == "JP":  # block and building numbers follow the district: 丸の内1-9
            return f"{street}{number % 9 + 1}-{_between(self.rng, 1, 20)}"
        return f"{street} {number}"


# --------------------------------------------------------------------------------------
# Pure helpers.


def _country(code: str) -> tuple:
    return _COUNTRY_BY_CODE[code]


def _pick(rng: random.Random, options: Sequence[Any]) -> Any:
    """``rng.choice``, about twice as fast; the generator calls it millions of times."""
    return options[int(rng.random() * len(options))]


def _between(rng: random.Random, low: int, high: int) -> int:
    """An int in ``[low, high)``; ``rng.randrange`` is a profile hot spot here."""
    return low + int(rng.random() * (high - low))


def _first(item: tuple) -> Any:
    return item[0]


def _bind(maker: Callable[[_Record, int], list], record: _Record) -> Callable[[int], list]:
    return lambda at: maker(record, at)


def _aware(until: datetime) -> datetime:
    if not isinstance(until, datetime):
        raise ValueError(f"until must be a datetime, got {until!r}")
    return until.replace(tzinfo=UTC) if until.tzinfo is None else until.astimezone(UTC)


def _day_weights(start: datetime) -> list[int]:
    """Relative load per day: growth over the period, quiet weekends, a Black Friday peak."""
    weights = []
    for day in range(_DAYS):
        date = start + timedelta(days=day, hours=12)  # the calendar day most of it falls on
        growth = 60 + 80 * day // _DAYS
        peak = (date.month == 11 and date.day >= 20) or (date.month == 12 and date.day <= 20)
        weights.append(growth * _WEEKDAY_WEIGHTS[date.weekday()] * (16 if peak else 10))
    return weights


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 on our mirror of the state; copies along the patch path, mutates nothing."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _uuid4(rng: random.Random) -> str:
    """A version-4 UUID from ``rng``, so ids are reproducible from the seed."""
    value = (rng.getrandbits(128) & ~(0xF000 << 64) | (0x4000 << 64)) & ~(0xC << 60) | (0x8 << 60)
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _cents(amount: float) -> int:
    return round(amount * 100)


def _total(items: list[dict[str, Any]]) -> float:
    return sum(item["qty"] * _cents(item["price"]) for item in items) / 100


def _ascii_fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.translate(_ASCII_FOLD))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))
