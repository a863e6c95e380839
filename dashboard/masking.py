"""Masking personal data for roles without the ``view_pii`` permission.

One :class:`Masker` serves every output — HTML, JSON, CSV and PDF — so the four cannot
disagree about what a support agent sees. It never hides *that* something changed: a
masked field keeps its key, a masked change keeps its path and operation, and only the
values become :data:`MASK`.

**An event as a role sees it** is :meth:`Masker.mask_event`: payload masked, metadata
masked, the actor masked (:meth:`Masker.mask_actor`). Every output that shows an event,
or names the event that set a field (provenance, field history, report listings), takes
its fields from there. States and diffs are masked *after* replay and diffing
(:meth:`Masker.mask_document`, :meth:`Masker.mask_change`): masking the events before the
fold would turn a changed e-mail address into ``MASK`` → ``MASK``, which is no change.

Patterns come in two kinds (``DEFAULT_MASK_PATTERNS`` plus ``AUDIT_MASK_FIELDS``):

* **key names** such as ``email`` or ``*phone*`` mask the value of a matching object key
  anywhere in the document, whole subtree included. Keys are matched **by meaning, not by
  spelling** (:func:`key_meaning`): Unicode NFKC (full-width and mathematical letters
  become plain ones), invisible characters and accents dropped (zero-width spaces, soft
  hyphens, joiners, combining marks), case folded, look-alike letters from other scripts
  read as the Latin letter they imitate (``email`` spelt with Cyrillic U+0435 for ``e``;
  Unicode's confusables data, UTS #39, through ``confusable_homoglyphs``), and everything
  that is not a letter or a digit dropped, so ``first_name``, ``firstName``,
  ``First-Name`` and ``first.name`` are one key. A plain name matches that key only
  (``email`` does not match ``contact_email``); a glob matches more: the defaults use
  ``*email``, ``*phone`` and ``*address``, which cover compound keys ending in the word
  (``billing_email``, ``mobile_phone``, ``ip_address``) but leave flags such as
  ``email_verified`` visible.
* **JSON Pointer globs** (they start with ``/``, RFC 6901 escaping) such as
  ``/address/*`` or ``/customer/**/iban``: each token is a shell-style glob for one path
  token, ``**`` stands for any number of tokens, and a match masks that node with its whole
  subtree. Pointers are relative to the document being masked (an event's payload or its
  metadata, a reconstructed state); their tokens are read by meaning like key names.

**The actor** (``metadata.actor``) says who acted. An actor object
(``{"email": …, "ip": …}``) is masked key by key like the rest of the metadata; an actor
string — or a string inside an actor object — that is an e-mail address, a phone number or
an IP address is masked as what it is, while names of services and pseudonymous ids
(``ops``, ``system:payment-webhook``, ``user:4f…``) stay visible: support still sees which
job or customer acted. ``actor`` in ``AUDIT_MASK_FIELDS`` masks every actor.

Masking errs towards hiding: ``name`` also hides a product's ``name`` — a few fields too
many on a support screen is cheaper than one leaked address. Free text (a ``note`` that
contains an e-mail address) is not inspected; add such keys to ``AUDIT_MASK_FIELDS``.

This module is pure: no Flask, no database.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import ipaddress
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any, Final

from confusable_homoglyphs.confusables import confusables_data

from .budget import check_budget
from .events import Event
from .jsonlimits import TooDeep
from .jsonpointer import MISSING, PointerError, split_pointer

__all__ = [
    "DEFAULT_MASK_PATTERNS",
    "MASK",
    "NO_MASKING",
    "MaskPatternError",
    "Masker",
    "key_meaning",
    "masker_for",
]

MASK: Final = "•••masked•••"

DEFAULT_MASK_PATTERNS: Final[tuple[str, ...]] = (
    # Compound keys end in the personal word (contact_email, home_phone, billing_address),
    # so "*email" masks those but leaves flags such as email_verified or phone_opt_in visible.
    # e-mail: email, contact_email, billingEmail, e-mail, emails
    "*email",
    "*emails",
    # phone: phone, mobile_phone, phone_number, phoneNumbers, telephone; other words for it
    "*phone",
    "*phones",
    "*phone_number",
    "*phone_numbers",
    "*phone_no",
    "*mobile",
    "*mobile_number",
    "*mobile_no",
    "cell",
    "tel",
    "msisdn",
    "fax",
    # names of people (not "*name", which would hide file_name, host_name, event_name ...)
    "name",
    "*first_name",
    "*last_name",
    "*full_name",
    "*middle_name",
    "*given_name",
    "*family_name",
    "*display_name",
    "maiden_name",
    "birth_name",
    "legal_name",
    "preferred_name",
    "nickname",
    "*surname",
    # addresses, whole subtree: address, home_address, shipping_address, ip_address, addresses
    "*address",
    "*addresses",
    "address_line*",
    "street*",
    "postcode",
    "postal_code",
    "zip",
    "zip_code",
    "latitude",
    "longitude",
    "geolocation",
    # network and device identity: metadata.ip and friends; a user agent fingerprints a device
    "ip",
    "ipv4",
    "ipv6",
    "client_ip",
    "remote_ip",
    "source_ip",
    "real_ip",
    "x_real_ip",
    "remote_addr",
    "x_forwarded_for",
    "user_agent",
    "device_id",
    "imei",
    # birth
    "*date_of_birth",
    "*birth_date",
    "birthday",
    "dob",
    "place_of_birth",
    # government identifiers
    "*ssn",
    "social_security_number",
    "*national_id",
    "national_id_number",
    "national_insurance_number",
    "nino",
    "*tax_id",
    "tax_number",
    "tin",
    "passport",
    "passport_number",
    "passport_no",
    "driv*licen*",  # driver_license, driving_licence, drivers_license_number
    "id_card_number",
    "personal_id_number",
    # payment cards (PCI DSS cardholder data) and bank accounts
    "*card_number",
    "*card_no",
    "*card_num",
    "credit_card",
    "debit_card",
    "pan",
    "primary_account_number",
    "cvv",
    "cvv2",
    "cvc",
    "cvc2",
    "card_security_code",
    "card_expiry",
    "card_expiration",
    "*iban",
    "*account_number",
    "bank_account",
    "sort_code",
    "routing_number",
    # credentials: a password or token in an audit trail is a leak whoever reads it
    "*password",
    "*passwords",
    "*passwd",
    "*passphrase",
    "pwd",
    "*secret",
    "*secrets",
    "*token",
    "*tokens",
    "*api_key",
    "*secret_key",
    "*private_key",
    "*access_key",
    "*credentials",
    "credential",
    "authorization",
    "cookie",
    "set_cookie",
    "pin",
    "pin_code",
    "pin_number",
    "card_pin",
    "otp",
    "security_answer",
    # special categories of personal data (GDPR article 9) that records commonly carry
    "gender",
    "nationality",
    "ethnicity",
    "religion",
)

_KEY_CACHE_SIZE = 4096
_ANY_DEPTH = "**"
_GLOB_CHARACTERS = frozenset("*?[]!")

# Characters that print as nothing (Unicode's Default_Ignorable_Code_Point) and are not
# format characters (Cf) or marks (Mn, Me), which are dropped by category: Hangul fillers.
_INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")
_DROPPED_CATEGORIES = frozenset({"Cf", "Mn", "Me", "Cn", "Co", "Cs"})
# A look-alike may take two steps through Unicode's confusables data to reach ASCII
# (Cyrillic т → small capital ᴛ → T); more steps drift away from what the key looks like.
_LOOKALIKE_STEPS = 2


class MaskPatternError(ValueError):
    """A mask pattern that cannot be understood; the message names it."""


@lru_cache(maxsize=1024)
def _ascii_lookalike(char: str) -> str | None:
    """The ASCII letter or digit ``char`` imitates (UTS #39 confusables), or None."""
    frontier = [char]
    seen = {char}
    for _ in range(_LOOKALIKE_STEPS):
        following = []
        for current in frontier:
            for glyph in confusables_data.get(current, ()):
                candidate = glyph["c"]
                folded = candidate.casefold()
                if folded.isascii() and folded.isalnum():
                    return folded
                if candidate not in seen:
                    seen.add(candidate)
                    following.append(candidate)
        frontier = following
    return None


def _plain(text: str) -> str:
    """NFKC, then invisible characters and accents dropped (NFD without its marks)."""
    text = unicodedata.normalize("NFKC", text)
    return "".join(
        char
        for char in unicodedata.normalize("NFD", text)
        if unicodedata.category(char) not in _DROPPED_CATEGORIES and char not in _INVISIBLE_LETTERS
    )


def _readings(text: str) -> tuple[str, ...]:
    """The ways ``text`` reads in ASCII once look-alikes are replaced.

    Case matters to look-alikes: Cyrillic U+0406 imitates a capital I, which Unicode's data
    files under ``l``, while its lower case U+0456 imitates ``i``; Greek capital nu (U+039D)
    imitates N but small nu (U+03BD) imitates v. So each character is read both ways —
    its lower case's look-alike first, and its own first — and a key matches when either
    reading does (hiding is the safe side). ASCII text has one reading, itself folded.
    """
    if text.isascii():
        return (text.casefold(),)
    lower_first, own_first = [], []
    for char in text:
        if char.isascii():
            lower_first.append(char.casefold())
            own_first.append(char.casefold())
            continue
        folded = char.casefold()
        from_lower = _ascii_lookalike(folded) if len(folded) == 1 else None
        from_own = _ascii_lookalike(char) if folded != char else from_lower
        lower_first.append(from_lower or from_own or folded)
        own_first.append(from_own or from_lower or folded)
    return tuple(dict.fromkeys(("".join(lower_first), "".join(own_first))))


@lru_cache(maxsize=_KEY_CACHE_SIZE)
def key_meaning(key: str) -> tuple[str, ...]:
    r"""What a key name says, for matching: its readings as lower-case letters and digits.

    ``"E-Mail"``, full-width ``"\uff45\uff4d\uff41\uff49\uff4c"``, ``"e\u200bmail"``
    and ``"\u0435mail"`` (Cyrillic e) all give ``("email",)``. See the module docstring.
    """
    return tuple(
        dict.fromkeys(
            "".join(char for char in reading if char.isalnum())
            for reading in _readings(_plain(key))
        )
    )


def _pattern_meaning(pattern: str) -> str:
    """A key-name pattern read like a key, keeping its glob characters."""
    reading = _readings(_plain(pattern))[0]
    return "".join(char for char in reading if char.isalnum() or char in _GLOB_CHARACTERS)


# Value shapes that identify a person when they stand for *who acted* (see mask_actor).
_EMAIL: Final = re.compile(r"[^@\s]+@[^@\s]+")
_PHONE: Final = re.compile(r"\+?[0-9(][0-9 ()./\-]*[0-9]")
_PHONE_DIGITS: Final = range(7, 16)  # E.164: at most 15 digits; fewer than 7 is no number
_DATE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\b.*")


def _names_a_person(text: str) -> bool:
    """Whether an actor string is an e-mail address, a phone number or an IP address."""
    value = unicodedata.normalize("NFKC", text).strip()
    if _EMAIL.fullmatch(value):
        return True
    if (
        _PHONE.fullmatch(value)
        and sum(char.isdigit() for char in value) in _PHONE_DIGITS
        and not _DATE.fullmatch(value)
    ):
        return True
    try:
        ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        return False
    return True


class Masker:
    """Masks documents, events and changes by ``patterns`` (see the module docstring)."""

    def __init__(self, patterns: Iterable[str]):
        key_globs: list[str] = []
        pointer_globs: list[tuple[re.Pattern[str] | None, ...]] = []
        self.patterns: tuple[str, ...] = tuple(dict.fromkeys(p.strip() for p in patterns))
        for pattern in self.patterns:
            if not pattern:
                raise MaskPatternError("an empty mask pattern masks nothing; remove it")
            if pattern.startswith("/"):
                try:
                    tokens = split_pointer(pattern)
                except PointerError as exc:
                    raise MaskPatternError(f"mask pattern {pattern!r}: {exc.reason}") from None
                # None stands for "**": any number of tokens.
                pointer_globs.append(tuple(_token_glob(token) for token in tokens))
            else:
                normalised = _pattern_meaning(pattern)
                if not normalised:
                    raise MaskPatternError(f"mask pattern {pattern!r} has no letters to match")
                key_globs.append(fnmatch.translate(normalised))
        self._keys = re.compile("|".join(key_globs), re.DOTALL) if key_globs else None
        self._pointers = tuple(pointer_globs)
        self._key_matches = lru_cache(maxsize=_KEY_CACHE_SIZE)(self._key_matches_uncached)

    def __repr__(self) -> str:
        return f"Masker({list(self.patterns)!r})"

    @property
    def active(self) -> bool:
        """Whether this masker can hide anything (``NO_MASKING`` cannot)."""
        return bool(self._keys or self._pointers)

    # --- deciding --------------------------------------------------------------------------

    def _key_matches_uncached(self, key: str) -> bool:
        keys = self._keys
        return keys is not None and any(keys.fullmatch(reading) for reading in key_meaning(key))

    def masks_key(self, key: str) -> bool:
        """Whether an object member named ``key`` is masked wherever it appears."""
        return isinstance(key, str) and self._key_matches(key)

    def _pointer_matches(self, tokens: Sequence[str]) -> bool:
        """Whether some pointer glob matches exactly ``tokens`` (not a prefix of them)."""
        readings = [key_meaning(token) for token in tokens]
        return any(_glob_match(glob, readings) for glob in self._pointers)

    def mask_pointer(self, path: str) -> bool:
        """Whether the value at JSON Pointer ``path`` is masked: a token on the way is a
        masked key, or a pointer pattern matches the path or one of its ancestors.

        A malformed pointer counts as masked: hiding is the safe answer to a path we cannot
        read.
        """
        try:
            tokens = split_pointer(path)
        except (PointerError, TypeError):
            return self.active
        for depth, token in enumerate(tokens, start=1):
            if self.masks_key(token) or (self._pointers and self._pointer_matches(tokens[:depth])):
                return True
        return False

    # --- masking ---------------------------------------------------------------------------

    def mask_document(self, value: Any, base: str = "") -> Any:
        """A copy of the JSON ``value`` with masked members replaced by :data:`MASK`.

        ``base`` is the pointer of ``value`` inside a larger document (a change at
        ``/contact`` carries only the ``contact`` object), so pointer patterns still apply.
        Structure is kept: a masked object or array becomes the marker itself.
        """
        if not self.active:
            return value
        check_budget()
        if base and self.mask_pointer(base):
            return MASK
        try:
            tokens = split_pointer(base)
        except PointerError:
            return MASK
        return self._mask(value, tokens)

    def _mask(self, value: Any, tokens: list[str]) -> Any:
        if isinstance(value, TooDeep):
            return value  # says only how deep the unread document was
        if isinstance(value, Mapping):
            out = {}
            for key, child in value.items():
                child_tokens = [*tokens, str(key)]
                if self.masks_key(str(key)) or (
                    self._pointers and self._pointer_matches(child_tokens)
                ):
                    out[key] = MASK
                else:
                    out[key] = self._mask(child, child_tokens)
            return out
        if isinstance(value, list | tuple):
            out_list = []
            for index, child in enumerate(value):
                child_tokens = [*tokens, str(index)]
                if self._pointers and self._pointer_matches(child_tokens):
                    out_list.append(MASK)
                else:
                    out_list.append(self._mask(child, child_tokens))
            return out_list
        return value

    def mask_metadata(self, metadata: Any) -> Any:
        """An event's metadata as a role without ``view_pii`` sees it: masked like any
        document, and the actor masked as :meth:`mask_actor` says."""
        if not self.active or metadata is None:
            return metadata
        masked = self.mask_document(metadata)
        if isinstance(masked, dict):
            for key, value in masked.items():
                if value != MASK and _ACTOR in key_meaning(str(key)):
                    masked[key] = _mask_identities(value)
        return masked

    def mask_actor(self, actor: Any) -> Any:
        """``metadata.actor`` as it is shown wherever an event is named (provenance, field
        history, report listings): exactly what :meth:`mask_metadata` leaves of it."""
        if not self.active or actor is None:
            return actor
        return self.mask_metadata({"actor": actor})["actor"]

    def mask_event(self, event: Event) -> Event:
        """The event as a role without ``view_pii`` sees it: payload and metadata (actor
        included) masked. Ids, type and time stay."""
        if not self.active:
            return event
        return dataclasses.replace(
            event,
            payload=self.mask_document(event.payload),
            metadata=self.mask_metadata(event.metadata),
        )

    def mask_event_json(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of an event in its JSON shape with ``payload`` and ``metadata`` masked
        as :meth:`mask_event` masks them."""
        masked = dict(event)
        if not self.active:
            return masked
        if masked.get("payload") is not None:
            masked["payload"] = self.mask_document(masked["payload"])
        if masked.get("metadata") is not None:
            masked["metadata"] = self.mask_metadata(masked["metadata"])
        return masked

    def mask_change(self, change: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of a diff change ``{"path", "op", "old", "new"}``: path and op stay, so the
        page still shows that the field changed; values under a masked path become
        :data:`MASK`, and values above one (a whole object replaced) are masked inside.

        The absent side of an ``add`` or ``remove`` (``null`` or MISSING) stays as it is.
        """
        masked = dict(change)
        if not self.active:
            return masked
        path = str(change.get("path", ""))
        op = change.get("op")
        hidden = self.mask_pointer(path) if path else False
        for side, absent_when in (("old", "add"), ("new", "remove")):
            if side not in masked or op == absent_when or masked[side] is MISSING:
                continue
            masked[side] = MASK if hidden else self.mask_document(masked[side], path)
        return masked

    def mask_patch(self, operations: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """RFC 6902 operations with their ``value`` masked the same way as a change's."""
        out = []
        for operation in operations:
            masked = dict(operation)
            if self.active and "value" in masked:
                path = str(masked.get("path", ""))
                masked["value"] = (
                    MASK if self.mask_pointer(path) else self.mask_document(masked["value"], path)
                )
            out.append(masked)
        return out

    def mask_value_at(self, path: str, value: Any) -> Any:
        """The value found at ``path`` (field history, provenance), masked as it would be
        inside its document."""
        if not self.active:
            return value
        return MASK if self.mask_pointer(path) else self.mask_document(value, path)


_ACTOR: Final = "actor"


def _mask_identities(actor: Any) -> Any:
    """The actor with every string that names a person (e-mail, phone, IP) masked."""
    if isinstance(actor, str):
        return MASK if _names_a_person(actor) else actor
    if isinstance(actor, Mapping):
        return {key: _mask_identities(value) for key, value in actor.items()}
    if isinstance(actor, list | tuple):
        return [_mask_identities(value) for value in actor]
    return actor


def _token_glob(token: str) -> re.Pattern[str] | None:
    """One pointer-pattern token as a regex; None for ``**`` (any number of tokens)."""
    if token == _ANY_DEPTH:
        return None
    return re.compile(fnmatch.translate(_pattern_meaning(token)), re.DOTALL)


def _glob_match(
    glob: tuple[re.Pattern[str] | None, ...], tokens: Sequence[tuple[str, ...]]
) -> bool:
    """Match path tokens (each given as its readings, :func:`key_meaning`) against
    pointer-glob tokens; None (``**``) spans 0+ tokens."""
    if not glob:
        return not tokens
    head, rest = glob[0], glob[1:]
    if head is None:
        return any(_glob_match(rest, tokens[skip:]) for skip in range(len(tokens) + 1))
    return (
        bool(tokens)
        and any(head.fullmatch(reading) for reading in tokens[0])
        and _glob_match(rest, tokens[1:])
    )


NO_MASKING: Final = Masker(())
"""The masker of a role with ``view_pii``: documents come back as they are, unmasked."""


@lru_cache(maxsize=16)
def _cached_masker(patterns: tuple[str, ...]) -> Masker:
    return Masker(patterns)


def masker_for(settings: Any) -> Masker:
    """The masker for these settings: the defaults plus ``settings.mask_fields``.

    Raises MaskPatternError for a pattern that cannot be understood; the app checks this at
    start-up, so a typo in AUDIT_MASK_FIELDS stops it rather than leaking data.
    """
    extra = tuple(getattr(settings, "mask_fields", ()) or ())
    return _cached_masker(DEFAULT_MASK_PATTERNS + extra)
