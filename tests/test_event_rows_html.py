"""present.event_rows_html writes the rows of an event table as the template loop it
replaced did, byte for byte, with every value escaped as autoescaping escapes it.

The reference is that loop, kept here as it stood in _partials/events.html, rendered by
Jinja with autoescaping: any value, hostile or not, must come out the same both ways.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2 import Environment
from markupsafe import Markup

from dashboard.views.present import EventRow, event_rows_html

REFERENCE_LOOP = """\
  {% for row in rows %}{% set iso, record = row.iso, row.aggregate_id %}
    <tr class="event-row" data-event-id="{{ row.event_id }}">
      <td class="when"><time datetime="{{ iso }}" title="{{ iso }}">{{ row.time }}</time>
      {%- if row.relative %} <span class="relative" data-relative="{{ iso }}">{{ row.relative }}</span>{% endif %}<br><a class="event-link" href="{{ row.event_url }}">event</a></td>
      <td><span class="event-type action-{{ row.action }}">{{ row.event_type }}</span></td>
      <td>{{ row.kind or "" }}</td>
      {% if show_record %}<td><a class="record-link" href="{{ row.record_url }}" title="{{ record }}"><code>{{ record[:8] }}…</code></a> <button type="button" class="copy-button" data-copy="{{ record }}" aria-label="Copy the full record id" hidden>Copy id</button></td>{% endif %}
      <td>{{ row.actor or "—" }}</td>
      <td><ul class="changed-fields">
  {% for name in row.changed %}<li>{{ name }}</li>{% endfor %}
</ul></td>
    </tr>
  {% endfor %}"""  # noqa: E501

REFERENCE = Environment(autoescape=True).from_string(REFERENCE_LOOP)

HOSTILE = [
    "",
    "plain",
    "<script>alert('x')</script>",
    "a \"quoted\" & <tagged> 'value'",
    "&amp; already an entity",
    "ünïcödé — ✓ 𝔘",
    "line\nbreak\ttab",
    "}}{{ jinja {% raw %}",
]


def make_row(n: int, text: str, **changes) -> EventRow:
    values = dict(
        event_id=f"00000000-0000-4000-8000-{n:012d}",
        seq=n,
        aggregate_id=f"{n:08x}-aaaa-4bbb-8ccc-{text[:2].encode().hex():0>12}"[:36],
        event_type=f"TYPE_{text}",
        kind=text or None,
        action="update",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        time=f"2026-01-01 00:00 {text}",
        iso="2026-01-01T00:00:00Z",
        relative=text,
        actor=text or None,
        ip=None,
        user_agent=None,
        reason=None,
        request_id=None,
        other_metadata=[],
        changed=[text, "email", "<b>"] if text else [],
        record_url=f"/records/x?q={text}&a=1",
        event_url=f"/events/{text}",
    )
    values.update(changes)
    return EventRow(**values)


def reference(rows: list[EventRow], show_record: bool) -> str:
    return REFERENCE.render(rows=rows, show_record=show_record).removeprefix("  ")


@pytest.mark.parametrize("show_record", [True, False])
def test_hostile_values_come_out_as_the_template_loop_wrote_them(show_record):
    rows = [make_row(n, text) for n, text in enumerate(HOSTILE)]
    rows.append(make_row(99, "markup", actor=Markup("<em>trusted</em>"), kind=Markup("k&amp;")))
    written = event_rows_html(rows, show_record)
    assert isinstance(written, Markup)
    assert str(written) == reference(rows, show_record)
    # What a browser would run or parse as markup is escaped, never passed through.
    assert "<script>" not in written
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in written
    assert "<li>&lt;b&gt;</li>" in written
    # Markup (already-safe HTML) stays as it is, as {{ }} leaves it.
    assert "<td><em>trusted</em></td>" in written


def test_no_rows_write_nothing():
    assert event_rows_html([], True) == Markup("")
    assert reference([], True) == ""


@settings(max_examples=300, deadline=None)
@given(
    texts=st.lists(st.text(max_size=12), min_size=1, max_size=4),
    show_record=st.booleans(),
)
def test_any_text_comes_out_as_the_template_loop_wrote_it(texts, show_record):
    counter = itertools.count()
    rows = [
        make_row(next(counter), text, relative="" if i % 2 else text)
        for i, text in enumerate(texts)
    ]
    assert str(event_rows_html(rows, show_record)) == reference(rows, show_record)
