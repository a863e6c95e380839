"""The pure core of tamper evidence: RFC 9162 Merkle tree, leaf encoding, heads, keys and
the offline proof bundle. The tree is checked against the published vectors of
transparency-dev/merkle (tests/data/rfc6962_probes.json, Apache-2.0)."""

from __future__ import annotations

import base64
import csv
import io
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from dashboard.integrity import bundle, heads, keys, leaf, merkle
from dashboard.reports.csv_format import FORMULA_ESCAPE, csv_record, neutralise_formula

PROBES = json.loads((Path(__file__).parent / "data" / "rfc6962_probes.json").read_text())

# transparency-dev/merkle testonly/constants.go: leaf inputs and the root of every prefix.
LEAF_INPUTS = [
    bytes.fromhex(h)
    for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
              "606162636465666768696a6b6c6d6e6f"]
]  # fmt: skip
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def _b64(values):
    return [base64.b64decode(v) for v in values or []]


def _subtree_of(leaf_hashes):
    return lambda start, end: merkle.root_of(leaf_hashes[start:end])


# --- Merkle tree ------------------------------------------------------------------------------


def test_roots_match_the_published_vectors():
    hashes = [merkle.leaf_hash(data) for data in LEAF_INPUTS]
    frontier = merkle.Frontier()
    assert frontier.root().hex() == ROOTS[0]
    for size in range(1, len(hashes) + 1):
        frontier.append(hashes[size - 1])
        assert frontier.root().hex() == ROOTS[size]
        assert merkle.root_of(hashes[:size]).hex() == ROOTS[size]


@pytest.mark.parametrize("probe", PROBES["inclusion"], ids=lambda p: p["file"])
def test_inclusion_verification_matches_the_published_probes(probe):
    ok = merkle.verify_inclusion(
        base64.b64decode(probe["leafHash"] or ""),
        probe["leafIdx"],
        probe["treeSize"],
        _b64(probe["proof"]),
        base64.b64decode(probe["root"] or ""),
    )
    assert ok is not probe["wantErr"]


@pytest.mark.parametrize("probe", PROBES["consistency"], ids=lambda p: p["file"])
def test_consistency_verification_matches_the_published_probes(probe):
    ok = merkle.verify_consistency(
        probe["size1"],
        probe["size2"],
        base64.b64decode(probe["root1"] or ""),
        base64.b64decode(probe["root2"] or ""),
        _b64(probe["proof"]),
    )
    assert ok is not probe["wantErr"]


def test_generated_proofs_are_the_published_ones():
    happy = [p for p in PROBES["inclusion"] if p["desc"] == "happy path"]
    happy += [p for p in PROBES["consistency"] if p["desc"] == "happy path"]
    assert len(happy) >= 8
    hashes = [merkle.leaf_hash(data) for data in LEAF_INPUTS]
    subtree = _subtree_of(hashes)
    for probe in happy:
        if "leafIdx" in probe:
            proof = merkle.inclusion_proof(probe["leafIdx"], probe["treeSize"], subtree)
        else:
            proof = merkle.consistency_proof(probe["size1"], probe["size2"], subtree)
        assert proof == _b64(probe["proof"]), probe["file"]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 70), st.data())
def test_every_proof_verifies_and_a_changed_one_does_not(size, data):
    hashes = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    subtree = _subtree_of(hashes)
    root = merkle.root_of(hashes)
    index = data.draw(st.integers(0, size - 1))
    proof = merkle.inclusion_proof(index, size, subtree)
    assert merkle.verify_inclusion(hashes[index], index, size, proof, root)
    assert not merkle.verify_inclusion(merkle.leaf_hash(b"other"), index, size, proof, root)
    if size > 1:
        assert not merkle.verify_inclusion(hashes[index], (index + 1) % size, size, proof, root)
    old = data.draw(st.integers(1, size))
    old_root = merkle.root_of(hashes[:old])
    consistency = merkle.consistency_proof(old, size, subtree)
    assert merkle.verify_consistency(old, size, old_root, root, consistency)
    if old < size:
        rewritten = merkle.root_of([merkle.leaf_hash(b"x"), *hashes[1:old]])
        assert not merkle.verify_consistency(old, size, rewritten, root, consistency)


def test_a_frontier_survives_its_json_form():
    hashes = [merkle.leaf_hash(bytes([i])) for i in range(13)]
    frontier = merkle.Frontier()
    frontier.extend(hashes[:11])
    again = merkle.Frontier.from_json(frontier.size, frontier.to_json())
    again.extend(hashes[11:])
    assert again.root() == merkle.root_of(hashes)
    with pytest.raises(ValueError, match="frontier"):
        merkle.Frontier.from_json(11, frontier.to_json()[:-1])


# --- Leaf encoding ----------------------------------------------------------------------------

EVENT = {
    "event_id": "00000000-0000-4000-8000-000000000001",
    "aggregate_id": "aaaaaaaa-0000-4000-8000-000000000001",
    "event_type": "USER_CREATED",
    "payload": '{"a": 1, "b": [true, null, "x"]}',
    "metadata": '{"actor": "ann"}',
    "created_at": datetime(2024, 5, 1, 10, 0, 0, 250000, tzinfo=UTC),
    "seq": 7,
}


def test_the_leaf_is_rfc8785_json_of_every_column():
    data = leaf.leaf_bytes(**EVENT)
    assert data == (
        b'{"aggregate_id":"aaaaaaaa-0000-4000-8000-000000000001",'
        b'"created_at":"2024-05-01T10:00:00.250000Z",'
        b'"event_id":"00000000-0000-4000-8000-000000000001","event_type":"USER_CREATED",'
        b'"format":"audit-leaf-v1","metadata":{"actor":"ann"},'
        b'"payload":{"a":1,"b":[true,null,"x"]},"seq":"7"}'
    )


@pytest.mark.parametrize(
    "column, other",
    [
        ("event_id", "00000000-0000-4000-8000-000000000002"),
        ("aggregate_id", "aaaaaaaa-0000-4000-8000-000000000002"),
        ("event_type", "USER_UPDATED"),
        ("payload", '{"a": 2, "b": [true, null, "x"]}'),
        ("metadata", None),
        ("metadata", "null"),
        ("created_at", datetime(2024, 5, 1, 10, 0, 0, 250001, tzinfo=UTC)),
        ("seq", 8),
    ],
)
def test_every_column_changes_the_leaf(column, other):
    assert leaf.leaf_bytes(**EVENT) != leaf.leaf_bytes(**{**EVENT, column: other})


@pytest.mark.parametrize(
    "text, other",
    [
        # digits a double would round away
        ('{"n": 0.1000000000000000000001}', '{"n": 0.1000000000000000000002}'),
        ('{"n": 12345678901234567890123}', '{"n": 12345678901234567890124}'),
        ("9007199254740993", "9007199254740992"),
    ],
)
def test_a_tamper_cannot_hide_in_digits_a_double_loses(text, other):
    one = leaf.leaf_bytes(**{**EVENT, "payload": text})
    two = leaf.leaf_bytes(**{**EVENT, "payload": other})
    assert one != two
    assert b"payload_text" in one


def test_numbers_are_compared_by_value_in_the_json_form():
    assert leaf.leaf_bytes(**{**EVENT, "payload": '{"n": 1.0, "f": 0.5}'}) == leaf.leaf_bytes(
        **{**EVENT, "payload": '{"f": 0.50, "n": 1}'}
    )


def test_deep_documents_use_the_text_form_without_recursing():
    deep = "[" * 5000 + "]" * 5000
    data = leaf.leaf_bytes(**{**EVENT, "payload": deep})
    assert json.loads(data)["payload_text"] == deep


def test_a_time_from_text_is_the_time_from_a_datetime():
    texts = ["2024-05-01T10:00:00.25+00:00", "2024-05-01 10:00:00.25+00", "2024-05-01T10:00:00.25Z"]
    for text in texts:
        assert leaf.canonical_time(text) == "2024-05-01T10:00:00.250000Z"
    assert leaf.canonical_time("12024-05-01T10:00:00+00:00") == "12024-05-01T10:00:00.000000Z"
    with pytest.raises(leaf.LeafError, match="UTC"):
        leaf.canonical_time("2024-05-01T10:00:00+02:00")


@pytest.mark.parametrize("year", [1, 999, 2024])
def test_years_before_1000_print_four_digits_from_a_datetime_as_from_the_csv(year):
    """PostgreSQL (and so the CSV) prints the year 999 as 0999; strftime's %Y printed 999,
    so the sealed leaf of such a row did not match its exported row."""
    from_row = leaf.canonical_time(datetime(year, 3, 4, 5, 6, 7, 8, tzinfo=UTC))
    assert from_row == leaf.canonical_time(f"{year:04d}-03-04 05:06:07.000008+00")
    assert from_row == f"{year:04d}-03-04T05:06:07.000008Z"


def test_the_csv_escape_is_the_one_the_export_uses():
    assert leaf.CSV_FORMULA_ESCAPE == FORMULA_ESCAPE
    for text in ["=x", "'=x", "''", "-5", "'", "plain", "@a", "\tx"]:
        assert leaf.restore_cell(neutralise_formula(text)) == text


def _csv_row(event: dict) -> dict:
    from dashboard.reports.csv_format import format_created_at

    cells = {
        "created_at": format_created_at(event["created_at"]),
        "seq": str(event["seq"]),
        "event_id": event["event_id"],
        "aggregate_id": event["aggregate_id"],
        "event_type": neutralise_formula(event["event_type"]),
        "payload": neutralise_formula(event["payload"]),
        "metadata": neutralise_formula(event["metadata"]),
    }
    raw = csv_record(list(cells)) + csv_record(list(cells.values()))
    return next(csv.DictReader(io.StringIO(raw.decode())))


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"event_type": "'=HYPERLINK(x)", "payload": "-5", "metadata": None},
        {"event_type": "=cmd", "metadata": '{"actor": "-1"}', "payload": '"\\n,\\""'},
    ],
)
def test_the_leaf_from_a_csv_row_is_the_leaf_from_the_row(changes):
    event = {**EVENT, **changes}
    assert leaf.leaf_bytes_from_csv(_csv_row(event)) == leaf.leaf_bytes(**event)


def test_a_broken_csv_row_is_a_leaf_error():
    row = _csv_row(EVENT)
    with pytest.raises(leaf.LeafError, match="seq"):
        leaf.leaf_bytes_from_csv({k: v for k, v in row.items() if k != "seq"})
    with pytest.raises(leaf.LeafError, match="UUID"):
        leaf.leaf_bytes_from_csv({**row, "event_id": "nope"})
    with pytest.raises(leaf.LeafError, match="not JSON"):
        leaf.leaf_bytes_from_csv({**row, "payload": "{"})


# --- Keys and heads ---------------------------------------------------------------------------


@pytest.fixture()
def keypair(tmp_path):
    private, public = tmp_path / "notary.pem", tmp_path / "notary.pub"
    kid = keys.generate_keypair(private, public)
    return keys.load_private_key(private), keys.load_public_keys([public]), kid, private, public


def test_key_files_round_trip_and_the_private_one_is_private(keypair):
    private_key, public_keys, kid, private, _public = keypair
    assert list(public_keys) == [kid] == [keys.key_id(private_key.public_key())]
    assert private.stat().st_mode & 0o077 == 0
    with pytest.raises(keys.KeyFileError, match="exists already"):
        keys.generate_keypair(private, private.with_suffix(".other"))


def test_bad_key_files_give_a_clear_message(tmp_path, keypair):
    _key, _public_keys, _kid, private, public = keypair
    with pytest.raises(keys.KeyFileError, match="does not exist"):
        keys.load_private_key(tmp_path / "missing.pem")
    with pytest.raises(keys.KeyFileError, match="directory"):
        keys.load_public_key(tmp_path)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello")
    with pytest.raises(keys.KeyFileError, match="not a PEM"):
        keys.load_private_key(garbage)
    with pytest.raises(keys.KeyFileError, match="private key"):
        keys.load_public_key(private)
    with pytest.raises(keys.KeyFileError, match="not a PEM private key"):
        keys.load_private_key(public)
    other = tmp_path / "ec.pem"
    other.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(keys.KeyFileError, match="not an Ed25519 key"):
        keys.load_private_key(other)
    with pytest.raises(keys.KeyFileError, match="No public key"):
        keys.load_public_keys([])


def _head(private_key, **changes):
    values = {
        "number": 1,
        "tree_size": 3,
        "root": merkle.root_of([merkle.leaf_hash(b"a")]),
        "last_seq": 4,
        "skipped_seqs": ((2, 2),),
        "sealed_at": datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
        "previous_hash": None,
    }
    values.update(changes)
    return heads.sign_head(private_key, **values)


def test_a_head_is_signed_chained_and_survives_its_json_form(keypair):
    private_key, public_keys, kid, *_ = keypair
    head = _head(private_key)
    assert head.key_id == kid and heads.verify_signature(head, public_keys)
    again = heads.head_from_json(json.loads(json.dumps(heads.head_to_json(head))))
    assert again == head and heads.head_hash(again) == heads.head_hash(head)
    assert head.skipped(2) and not head.skipped(3)
    second = _head(private_key, number=2, previous_hash=heads.head_hash(head))
    assert heads.verify_signature(second, public_keys)


@pytest.mark.parametrize(
    "field, value",
    [("tree_size", 4), ("root", b"\x00" * 32), ("last_seq", 5), ("skipped_seqs", ()),
     ("number", 2), ("previous_hash", b"\x01" * 32)],
)  # fmt: skip
def test_a_head_changed_without_the_key_fails_its_signature(keypair, field, value):
    private_key, public_keys, *_ = keypair
    assert not heads.verify_signature(replace(_head(private_key), **{field: value}), public_keys)


def test_a_head_by_an_unknown_key_fails(keypair, tmp_path):
    private_key, _public_keys, *_ = keypair
    keys.generate_keypair(tmp_path / "b.pem", tmp_path / "b.pub")
    assert not heads.verify_signature(
        _head(private_key), keys.load_public_keys([tmp_path / "b.pub"])
    )


def test_a_malformed_head_is_a_head_error():
    with pytest.raises(heads.HeadError, match="format"):
        heads.head_from_json({"number": 1})
    with pytest.raises(heads.HeadError):
        heads.head_from_json({"format": heads.HEAD_FORMAT, "number": "x"})


# --- The proof bundle -------------------------------------------------------------------------


def _events(count):
    return [
        {
            **EVENT,
            "event_id": f"00000000-0000-4000-8000-{index:012d}",
            "seq": index * 2,  # gaps: leaf index and seq differ
            "payload": json.dumps({"n": index}),
        }
        for index in range(1, count + 1)
    ]


def _export(events, picked):
    rows = [_csv_row(events[i]) for i in picked]
    return rows


def _bundle_for(private_key, events, picked, digest="d" * 64):
    hashes = [merkle.leaf_hash(leaf.leaf_bytes(**event)) for event in events]
    head = _head(private_key, tree_size=len(hashes), root=merkle.root_of(hashes), last_seq=None)
    rows = [(events[i]["seq"], i, hashes[i]) for i in picked]
    return bundle.build_bundle(head, rows, _subtree_of(hashes), digest)


def test_an_untouched_export_verifies(keypair):
    private_key, public_keys, *_ = keypair
    events = _events(37)
    picked = [3, 4, 5, 20, 36, 0]
    proof = _bundle_for(private_key, events, picked)
    assert len(proof["nodes"]) < 37
    rows = _export(events, picked)
    assert bundle.verify_bundle(rows, proof, public_keys, csv_sha256="d" * 64) == []


def test_one_edited_cell_is_named_by_row(keypair):
    private_key, public_keys, *_ = keypair
    events = _events(10)
    rows = _export(events, [1, 2, 3])
    rows[1]["payload"] = '{"n": 999}'
    problems = bundle.verify_bundle(rows, _bundle_for(private_key, events, [1, 2, 3]), public_keys)
    assert [(p.kind, p.row, p.seq) for p in problems] == [("content changed", 2, 6)]
    assert "row 2, seq 6" in str(problems[0])


def test_a_proof_for_another_export_is_caught(keypair):
    private_key, public_keys, *_ = keypair
    events = _events(10)
    proof = _bundle_for(private_key, events, [1, 2, 3], digest="a" * 64)
    problems = bundle.verify_bundle(
        _export(events, [4, 5]), proof, public_keys, csv_sha256="b" * 64
    )
    kinds = {p.kind for p in problems}
    assert {"digest", "not in bundle", "row count"} <= kinds


def test_a_rewritten_bundle_does_not_give_the_signed_root(keypair):
    private_key, public_keys, *_ = keypair
    events = _events(10)
    rows = _export(events, [1, 2])
    rows[0]["event_type"] = "FORGED"
    proof = _bundle_for(private_key, events, [1, 2])
    proof["leaves"][0][2] = merkle.leaf_hash(leaf.leaf_bytes_from_csv(rows[0])).hex()
    assert [p.kind for p in bundle.verify_bundle(rows, proof, public_keys)] == ["root"]


def test_a_bundle_signed_by_another_key_is_caught(keypair, tmp_path):
    private_key, _public_keys, *_ = keypair
    keys.generate_keypair(tmp_path / "b.pem", tmp_path / "b.pub")
    events = _events(4)
    problems = bundle.verify_bundle(
        _export(events, [0]),
        _bundle_for(private_key, events, [0]),
        keys.load_public_keys([tmp_path / "b.pub"]),
    )
    assert [p.kind for p in problems] == ["head signature invalid"]


def test_a_file_that_is_no_bundle_is_bad_input(keypair):
    _key, public_keys, *_ = keypair
    with pytest.raises(bundle.BundleError):
        bundle.verify_bundle([], {"format": "x"}, public_keys)
    with pytest.raises(bundle.BundleError):
        bundle.verify_bundle(
            [], {"format": bundle.BUNDLE_FORMAT, "leaf_format": leaf.LEAF_FORMAT}, public_keys
        )


@dataclass(frozen=True)
class _NumberLiteral:
    """A number's JSON text as written (a float's repr), not a JSON string. Not a str
    subclass: hypothesis replays generated values by their type, and a str subclass made
    its replay fail with a KeyError."""

    text: str


# JSON as jsonb can hold it: any text, numbers of every size and shape, nesting.
_numbers = (
    st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False).map(lambda f: _NumberLiteral(repr(f)))
    | st.decimals(allow_nan=False, allow_infinity=False).filter(lambda d: abs(d.adjusted()) < 300)
)
_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
_json_values = st.recursive(
    st.none() | st.booleans() | _numbers | _text,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(_text.filter(lambda k: len(k) < 6), children, max_size=4)
    ),
    max_leaves=12,
)


def _jsonb_text(value) -> str:
    """JSON text with every number literal as given (a repr, a Decimal, an int)."""
    if isinstance(value, list):
        return "[" + ", ".join(_jsonb_text(child) for child in value) + "]"
    if isinstance(value, dict):
        members = (json.dumps(k) + ": " + _jsonb_text(v) for k, v in value.items())
        return "{" + ", ".join(members) + "}"
    if isinstance(value, _NumberLiteral):
        return value.text
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _reference_leaf(event) -> bytes:
    """The leaf as the README defines it, the slow and obvious way: the rfc8785 library on
    the whole document, numbers converted one by one."""
    import rfc8785

    class Inexact(Exception):
        pass

    def exact(value, depth):
        if isinstance(value, dict | list):
            if depth > leaf.MAX_JCS_DEPTH:
                raise Inexact
            items = value.items() if isinstance(value, dict) else enumerate(value)
            out = {} if isinstance(value, dict) else [None] * len(value)
            for key, child in items:
                out[key] = exact(child, depth + 1)
            return out
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return value
        number = Decimal(value)
        if number == number.to_integral_value() and abs(number) <= 2**53 - 1:
            return int(number)
        as_float = float(number)
        if as_float in (float("inf"), float("-inf")) or Decimal(repr(as_float)) != number:
            raise Inexact
        return as_float

    document = {
        "format": leaf.LEAF_FORMAT,
        "seq": str(event["seq"]),
        "event_id": event["event_id"],
        "aggregate_id": event["aggregate_id"],
        "event_type": event["event_type"],
        "created_at": leaf.canonical_time(event["created_at"]),
    }
    for key in ("payload", "metadata"):
        text = event[key]
        if text is None:
            continue
        try:
            document[key] = exact(json.loads(text, parse_float=Decimal, parse_int=int), 1)
        except Inexact:
            document[key + "_text"] = text
    return rfc8785.dumps(document)


@settings(max_examples=500, deadline=None)
@given(_json_values, _json_values, _text.filter(lambda t: len(t) < 10))
def test_the_leaf_is_what_the_reference_definition_gives(payload, metadata, event_type):
    """The leaf code takes shortcuts (one json.loads pass, json.dumps where it prints the
    same bytes): they must give the README's bytes on arbitrary documents and keys."""
    event = {
        **EVENT,
        "payload": _jsonb_text(payload),
        "metadata": _jsonb_text(metadata),
        "event_type": event_type,
    }
    assert leaf.leaf_bytes(**event) == _reference_leaf(event)


@pytest.mark.parametrize(
    "text",
    ["1e20", "1E+21", "123456789012345678901234567890", "[1.5e-7]", r'{"\ud83d\ude00": 1}',
     r'{"\ue000": 1, "\ud83d\ude00": 2}', "[" * 200 + "]" * 200, "[" * 201 + "]" * 201,
     r'{"a": "\u0001\u001f\u007f\u2028"}', "-0", "-0.0", "0.1", "5e-324",
     "9007199254740992.0", "[-9007199254740994.0]", "999999999999999", "-999999999999999",
     "9999999999999999", "[-9007199254740993]", "[1.0, 10, -0]", '{"a": 1E2}',
     '{"a": "1.5, 2e3", "b": [1, 2]}', "[" * 199 + "1" + "]" * 199, "1e-07", "[1e-7, 1.5e-05]",
     "[12.5, -0.25, 12.50, 1.7976931348623157e308, 2.5e-5, 100.0, 0.30000000000000004]",
     '{"ua": "mailer/5.0.2", "n": 12, "id": "1234567890123456"}',
     "[1.10, 2.000, -3.0, -0.50, 1234567890123456.0, 123456789012345.000, 0.10000000000000001]",
     "[0.1000000000000000055511151231257827, 9007199254740993.0, 1.5E3, 1.0e0, -0.0]",
     '{"é": 1.25, "😀": 2.5}', '{"é": 12.0, "ü": "\u00e9"}', '{"a": "x\\"1.5", "b": 24.0}'],
)  # fmt: skip
def test_edge_documents_match_the_reference(text):
    event = {**EVENT, "payload": text}
    assert leaf.leaf_bytes(**event) == _reference_leaf(event)
