"""present.json_response: the event lists of the JSON API serialised by orjson, answering
the same JSON value jsonify answers, whatever the stored payloads hold (no database here:
a bare Flask app, as the function needs nothing else)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from flask import Flask, jsonify

from dashboard.jsonlimits import TooDeep
from dashboard.views.present import json_response


@dataclass
class Point:
    x: int
    y: int


def nested(levels: int):
    value = 1
    for _ in range(levels):
        value = {"a": value}
    return value


BODIES = {
    "plain": {"events": [{"b": 1, "a": "x", "c": None}], "next_cursor": None},
    "non-ASCII, line separators, control characters": {
        "text": "Kraków – Zürich 東京 😀 \u2028\u2029 \x00\x1f\x7f </script>"
    },
    "floats": {"f": [0.1, 1e16, 1e-7, -0.0, 1.5e300, 123456789.125]},
    "big integers": {"n": [2**63 - 1, -(2**63)], "beyond 64 bits": 2**70},
    "unpaired surrogate": {"s": "\ud800 alone"},
    "nested past orjson's 255 levels": nested(300),
    "a too-deep marker": {"payload": TooDeep(1200)},
    "datetime, uuid, dataclass": {
        "at": datetime(2026, 3, 1, 12, 30, tzinfo=UTC),
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "point": Point(1, 2),
    },
}


@pytest.fixture
def bare_app():
    return Flask(__name__)


@pytest.mark.parametrize("name", list(BODIES))
def test_the_same_json_value_as_jsonify(bare_app, name) -> None:
    body = BODIES[name]
    with bare_app.app_context():
        expected = jsonify(body)
        response = json_response(body)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert json.loads(response.get_data()) == json.loads(expected.get_data())
    assert response.get_data().endswith(b"\n")


def test_keys_sorted_and_compact_as_jsonify_writes_them(bare_app) -> None:
    body = {"events": [{"z": 1, "a": [1, 2], "m": {"y": True, "b": None}}], "next_cursor": "c"}
    with bare_app.app_context():
        assert json_response(body).get_data() == jsonify(body).get_data()


def test_an_app_in_debug_mode_keeps_jsonify_and_its_indentation(bare_app) -> None:
    bare_app.debug = True
    with bare_app.app_context():
        assert json_response({"a": 1}).get_data() == jsonify({"a": 1}).get_data()


def test_what_neither_can_write_fails_as_jsonify_fails(bare_app) -> None:
    with bare_app.app_context(), pytest.raises(TypeError):
        json_response({"x": object()})
