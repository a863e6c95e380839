"""Masking of personal data: pure, no Flask, no database."""

from __future__ import annotations

import copy
import re
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dashboard.jsonpointer import MISSING
from dashboard.masking import (
    DEFAULT_MASK_PATTERNS,
    MASK,
    NO_MASKING,
    Masker,
    MaskPatternError,
    masker_for,
)

DEFAULTS = Masker(DEFAULT_MASK_PATTERNS)

CUSTOMER = {
    "id": "c-1",
    "email": "ann@example.com",
    "contact_email": "ann.work@example.com",
    "emailAddress": "a@b.example",
    "firstName": "Ann",
    "last_name": "Smith",
    "Full-Name": "Ann Smith",
    "phone_number": "+44 20 7946 0000",
    "address": {"street": "1 High St", "city": "Leeds", "postcode": "LS1 1AA"},
    "plan": "pro",
    "tags": ["vip", "beta"],
    "orders": [{"id": 1, "total": 12.5, "shipping_address": {"city": "York"}}],
    "active": True,
    "nickname": None,
}


def test_default_patterns_mask_personal_fields_and_keep_the_rest():
    masked = DEFAULTS.mask_document(CUSTOMER)
    for key in (
        "email",
        "contact_email",
        "emailAddress",
        "firstName",
        "last_name",
        "Full-Name",
        "phone_number",
        "address",
        "nickname",
    ):
        assert masked[key] == MASK, key
    assert masked["orders"][0]["shipping_address"] == MASK
    for key in ("id", "plan", "tags", "active"):
        assert masked[key] == CUSTOMER[key]
    assert masked["orders"][0]["total"] == 12.5


def test_masking_keeps_keys_so_the_field_is_still_visible():
    masked = DEFAULTS.mask_document(CUSTOMER)
    assert masked.keys() == CUSTOMER.keys()


def test_masking_does_not_change_its_input():
    before = copy.deepcopy(CUSTOMER)
    DEFAULTS.mask_document(CUSTOMER)
    assert before == CUSTOMER


@pytest.mark.parametrize(
    "key", ["ip", "IP", "ip_address", "ipAddress", "client_ip", "user_agent", "userAgent"]
)
def test_network_identity_in_metadata_is_masked(key):
    event = {"payload": {"plan": "pro"}, "metadata": {key: "x", "actor": "ops", "request_id": "r"}}
    masked = DEFAULTS.mask_event_json(event)
    assert masked["metadata"][key] == MASK
    assert masked["metadata"]["actor"] == "ops"
    assert masked["metadata"]["request_id"] == "r"
    assert masked["payload"] == {"plan": "pro"}


@pytest.mark.parametrize("key", ["zip_code", "zip", "Postal-Code", "date_of_birth", "IBAN"])
def test_other_direct_identifiers_are_masked(key):
    assert DEFAULTS.mask_document({key: "x"}) == {key: MASK}


@pytest.mark.parametrize(
    "key",
    [
        "file_name",
        "hostname",
        "event_name",
        "membership",
        "zipper",
        "email_verified",
        "phone_opt_in",
    ],
)
def test_words_that_only_contain_a_pattern_are_not_masked(key):
    assert DEFAULTS.mask_document({key: "x"}) == {key: "x"}


def test_plain_name_matches_exactly_and_glob_matches_within():
    exact = Masker(["email"])
    assert exact.mask_document({"email": 1, "contact_email": 2}) == {
        "email": MASK,
        "contact_email": 2,
    }
    glob = Masker(["*email"])
    assert glob.mask_document({"email": 1, "contact_email": 2}) == {
        "email": MASK,
        "contact_email": MASK,
    }


def test_pointer_patterns_mask_a_subtree_by_position():
    masker = Masker(["/profile/secret", "/accounts/*/number", "/deep/**/pin"])
    document = {
        "secret": "top-level stays",
        "profile": {"secret": "s", "colour": "blue"},
        "accounts": [{"number": "1", "bank": "x"}, {"number": "2", "bank": "y"}],
        "deep": {"a": {"b": {"pin": 1234, "ok": 1}}, "pin": 99},
    }
    masked = masker.mask_document(document)
    assert masked["secret"] == "top-level stays"
    assert masked["profile"] == {"secret": MASK, "colour": "blue"}
    assert masked["accounts"] == [{"number": MASK, "bank": "x"}, {"number": MASK, "bank": "y"}]
    assert masked["deep"] == {"a": {"b": {"pin": MASK, "ok": 1}}, "pin": MASK}


def test_pointer_pattern_for_a_whole_object():
    masked = Masker(["/address/*"]).mask_document({"address": {"street": "x", "city": "y"}})
    assert masked == {"address": {"street": MASK, "city": MASK}}


def test_mask_pointer_checks_every_step_of_the_path():
    assert DEFAULTS.mask_pointer("/address/city")
    assert DEFAULTS.mask_pointer("/contacts/0/email")
    assert DEFAULTS.mask_pointer("/billing~1home_address")  # key "billing/home_address"
    assert not DEFAULTS.mask_pointer("/plan")
    assert not DEFAULTS.mask_pointer("")
    assert DEFAULTS.mask_pointer("/broken~pointer")  # unreadable: hide


def test_mask_change_keeps_path_and_op_and_hides_values():
    change = {"path": "/email", "op": "replace", "old": "a@x.example", "new": "b@x.example"}
    assert DEFAULTS.mask_change(change) == {
        "path": "/email",
        "op": "replace",
        "old": MASK,
        "new": MASK,
    }


def test_mask_change_leaves_the_absent_side_alone():
    added = DEFAULTS.mask_change({"path": "/phone", "op": "add", "old": None, "new": "123"})
    assert added == {"path": "/phone", "op": "add", "old": None, "new": MASK}
    removed = DEFAULTS.mask_change({"path": "/phone", "op": "remove", "old": "1", "new": MISSING})
    assert removed["old"] == MASK and removed["new"] is MISSING


def test_mask_change_masks_inside_a_replaced_object():
    change = {
        "path": "/contact",
        "op": "replace",
        "old": {"email": "a", "preferred": "email"},
        "new": {"email": "b", "preferred": "phone"},
    }
    masked = DEFAULTS.mask_change(change)
    assert masked["old"] == {"email": MASK, "preferred": "email"}
    assert masked["new"] == {"email": MASK, "preferred": "phone"}


def test_mask_change_applies_pointer_patterns_relative_to_the_change():
    masker = Masker(["/profile/secret"])
    change = {"path": "/profile", "op": "add", "old": None, "new": {"secret": 1, "x": 2}}
    assert masker.mask_change(change)["new"] == {"secret": MASK, "x": 2}


def test_mask_patch_masks_values_only():
    ops = [
        {"op": "replace", "path": "/email", "value": "x"},
        {"op": "add", "path": "/plan", "value": "pro"},
        {"op": "remove", "path": "/phone"},
    ]
    assert DEFAULTS.mask_patch(ops) == [
        {"op": "replace", "path": "/email", "value": MASK},
        {"op": "add", "path": "/plan", "value": "pro"},
        {"op": "remove", "path": "/phone"},
    ]


def test_mask_value_at():
    assert DEFAULTS.mask_value_at("/address/city", "Leeds") == MASK
    assert DEFAULTS.mask_value_at("/plan", "pro") == "pro"
    assert DEFAULTS.mask_value_at("/contact", {"email": "x"}) == {"email": MASK}


def test_no_masking_changes_nothing():
    assert not NO_MASKING.active
    assert NO_MASKING.mask_document(CUSTOMER) == CUSTOMER
    change = {"path": "/email", "op": "replace", "old": "a", "new": "b"}
    assert NO_MASKING.mask_change(change) == change
    assert not NO_MASKING.mask_pointer("/email")


def test_masker_for_adds_configured_patterns_to_the_defaults():
    masker = masker_for(SimpleNamespace(mask_fields=("actor", "/notes")))
    masked = masker.mask_event_json(
        {"payload": {"notes": "call Ann", "email": "x", "plan": 1}, "metadata": {"actor": "bob"}}
    )
    assert masked["payload"] == {"notes": MASK, "email": MASK, "plan": 1}
    assert masked["metadata"] == {"actor": MASK}


@pytest.mark.parametrize("pattern", ["", "/bad~2escape", "___"])
def test_bad_patterns_are_refused_with_their_name(pattern):
    with pytest.raises(MaskPatternError):
        Masker([pattern])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["email", "id", "name", "x", "address", "plan"]), children
        )
    ),
    max_leaves=20,
)


@given(JSON)
def test_masking_is_idempotent_and_keeps_shape(document):
    once = DEFAULTS.mask_document(document)
    assert DEFAULTS.mask_document(once) == once
    assert _shape(once) == _shape(document, masked=True)


def _shape(value, masked=False):
    """Keys of every object down to a masked key (where the subtree is gone)."""
    if isinstance(value, dict):
        return {
            key: ("masked" if masked and DEFAULTS.masks_key(key) else _shape(child, masked))
            for key, child in value.items()
        }
    if isinstance(value, list):
        return [_shape(child, masked) for child in value]
    return "masked" if value == MASK else "leaf"


@given(JSON)
def test_no_masked_key_survives(document):
    def masked_values(value):
        if isinstance(value, dict):
            for key, child in value.items():
                if DEFAULTS.masks_key(key):
                    yield child
                else:
                    yield from masked_values(child)
        elif isinstance(value, list):
            for child in value:
                yield from masked_values(child)

    assert all(value == MASK for value in masked_values(DEFAULTS.mask_document(document)))


# --- Keys read by meaning, not by spelling ----------------------------------------------------

DRESSED_EMAIL_KEYS = [
    "\u0435mail",  # Cyrillic small ie for e
    "\u0415MAIL",  # Cyrillic capital ie, rest Latin capitals
    "\u0415\u041c\u0410\u0406L",  # Cyrillic E, M, A, I (U+0406, filed under "l" by UTS #39)
    "\uff45\uff4d\uff41\uff49\uff4c",  # full-width
    "\U0001d41e\U0001d426\U0001d41a\U0001d422\U0001d425",  # mathematical bold
    "e\u200bmail",  # zero-width space
    "em\u200dail",  # zero-width joiner
    "e\u00admail",  # soft hyphen
    "\ufeffemail",  # byte-order mark
    "e\u2060mail",  # word joiner
    "e\u3164mail",  # Hangul filler, a letter that prints as nothing
    "e\u0301mail",  # combining accent
    "\u00e9mail",  # precomposed accent
    "EMAIL",
    "E_Mail",
    "e-mail",
    "e.mail",
    "e mail",
    "e\u2013mail",  # en dash
    "e\u00a0mail",  # no-break space
    "emailAddress",
    "contact\u200b_\u0435mail",
]


@pytest.mark.parametrize("key", DRESSED_EMAIL_KEYS)
def test_dressed_up_keys_are_masked(key):
    assert DEFAULTS.mask_document({key: "ann@example.com", "plan": "pro"}) == {
        key: MASK,
        "plan": "pro",
    }
    assert DEFAULTS.mask_pointer("/" + key.replace("~", "~0").replace("/", "~1"))


@pytest.mark.parametrize(
    ("key", "reads_as"),
    [
        ("\u0435mail", "email"),
        ("\u0440\u0430ssw\u043erd", "password"),  # Cyrillic er, a, o
        ("\u0440hone", "phone"),  # Cyrillic er
        ("\u03c1hone", "phone"),  # Greek rho
        ("\u039d\u0391\u039c\u0395", "name"),  # Greek capitals
        ("\u0456p", "ip"),  # Cyrillic small i
        ("\u0131ban", "iban"),  # dotless i
        ("\u0455\u0455n", "ssn"),  # Cyrillic dze
        ("First-Name", "firstname"),
    ],
)
def test_key_meaning_reads_look_alikes_as_latin(key, reads_as):
    from dashboard.masking import key_meaning

    assert reads_as in key_meaning(key)
    assert DEFAULTS.masks_key(key)


def test_configured_patterns_are_read_by_meaning_too():
    masker = Masker(["Loyalty-Number", "/Profile/*"])
    document = {"loyalty_number": 1, "profile": {"x": 2}, "\u0440rofile": {"y": 3}, "ok": 4}
    assert masker.mask_document(document) == {
        "loyalty_number": MASK,
        "profile": {"x": MASK},
        "\u0440rofile": {"y": MASK},
        "ok": 4,
    }


NEW_DEFAULT_KEYS = [
    # phones
    "mobile",
    "mobileNumber",
    "mobile_no",
    "telephone",
    "cell",
    "tel",
    "msisdn",
    # birth
    "birthday",
    "birthdate",
    "customer_date_of_birth",
    "place_of_birth",
    # payment cards and banks
    "card_number",
    "cardNumber",
    "credit_card",
    "pan",
    "primary_account_number",
    "cvv",
    "cvc",
    "card_expiry",
    "payout_iban",
    "account_number",
    "bank_account",
    "sort_code",
    "routing_number",
    # credentials
    "password",
    "new_password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "refreshToken",
    "api_key",
    "apiKey",
    "x-api-key",
    "secret_key",
    "private_key",
    "aws_access_key",
    "credentials",
    "authorization",
    "cookie",
    "pin",
    "otp",
    "security_answer",
    # government identifiers
    "ssn",
    "customer_ssn",
    "social_security_number",
    "national_id",
    "national_insurance_number",
    "tax_id",
    "tin",
    "passport",
    "passport_no",
    "drivers_license",
    "driving_licence_number",
    # names, network, location, special categories
    "billing_first_name",
    "customer_full_name",
    "surname",
    "ipv6",
    "device_id",
    "imei",
    "latitude",
    "gender",
    "nationality",
]


@pytest.mark.parametrize("key", NEW_DEFAULT_KEYS)
def test_common_personal_keys_are_masked_by_default(key):
    assert DEFAULTS.mask_document({key: "x"}) == {key: MASK}


@pytest.mark.parametrize(
    "key", ["token_count", "shipping", "spin", "pinned", "card_type", "password_changed_at"]
)
def test_words_near_the_new_defaults_stay_visible(key):
    assert DEFAULTS.mask_document({key: "x"}) == {key: "x"}


# --- The actor ----------------------------------------------------------------------------------


def test_an_actor_object_is_masked_key_by_key():
    actor = {"email": "ann@example.com", "ip": "10.0.0.1", "team": "billing"}
    masked = DEFAULTS.mask_actor(actor)
    assert masked == {"email": MASK, "ip": MASK, "team": "billing"}
    event = {"payload": {}, "metadata": {"actor": actor, "request_id": "r"}}
    assert DEFAULTS.mask_event_json(event)["metadata"]["actor"] == masked


@pytest.mark.parametrize(
    "actor",
    [
        "alice.martin@example.com",
        "user:alice@example.com",
        "\uff41\uff4c\uff49\uff43\uff45\uff20example.com",  # full-width
        "+44 20 7946 0000",
        "(555) 123-4567",
        "07700900123",
        "203.0.113.9",
        "2001:db8::1",
    ],
)
def test_an_actor_that_is_an_email_phone_or_ip_is_masked(actor):
    assert DEFAULTS.mask_actor(actor) == MASK
    assert DEFAULTS.mask_actor({"id": actor, "kind": "staff"}) == {"id": MASK, "kind": "staff"}
    masked = DEFAULTS.mask_event_json({"payload": {}, "metadata": {"actor": actor}})
    assert masked["metadata"] == {"actor": MASK}


@pytest.mark.parametrize(
    "actor",
    [
        "ops",
        "system:payment-webhook",
        "user:4f1c2d9e-0000-4000-8000-000000000000",
        "2025-09-01",
        "42",
    ],
)
def test_service_names_and_pseudonymous_actors_stay_visible(actor):
    assert DEFAULTS.mask_actor(actor) == actor


def test_mask_event_masks_payload_metadata_and_actor_and_keeps_the_rest():
    from datetime import UTC, datetime

    from dashboard.events import Event

    event = Event(
        event_id="e",
        seq=1,
        aggregate_id="a",
        event_type="USER_UPDATED",
        payload={"\u0435mail": "x", "plan": "pro"},
        metadata={"actor": {"email": "y"}, "ip": "1.2.3.4", "request_id": "r"},
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
    )
    masked = DEFAULTS.mask_event(event)
    assert masked.payload == {"\u0435mail": MASK, "plan": "pro"}
    assert masked.metadata == {"actor": {"email": MASK}, "ip": MASK, "request_id": "r"}
    assert masked.actor == {"email": MASK}
    assert (masked.event_id, masked.seq, masked.event_type) == ("e", 1, "USER_UPDATED")
    assert NO_MASKING.mask_event(event) is event
    assert NO_MASKING.mask_actor({"email": "y"}) == {"email": "y"}


def test_the_readme_lists_every_default_pattern():
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Masking personal data")[1].split("\n## ")[0]
    listed = set(re.findall(r"`([^`]+)`", section.split("- **Default keys**")[1]))
    assert set(DEFAULT_MASK_PATTERNS) <= listed, set(DEFAULT_MASK_PATTERNS) - listed
    assert "AUDIT_MASK_FIELDS` adds to this list" in section


def test_a_lone_star_pattern_still_masks_every_key():
    assert Masker(["*"]).mask_document({"a": 1, "b": {"c": 2}}) == {"a": MASK, "b": MASK}
