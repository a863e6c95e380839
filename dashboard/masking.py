"""Masking personal data for roles without the ``view_pii`` permission.

One :class:`Masker` serves every output — HTML, JSON, CSV and PDF — so the four cannot
disagree about what a support agent sees. It never hides *that* something changed: a
masked field keeps its key, a masked change keeps its path and operation, and only the
values become :data:`MASK`.

Patterns come in two kinds (``DEFAULT_MASK_PATTERNS`` plus ``AUDIT_MASK_FIELDS``):

* **key names** such as ``email`` or ``*phone*`` mask the value of a matching object key
  anywhere in the document, whole subtree included. Keys are compared case-insensitively
  and ignoring ``_``, ``-``, ``.`` and spaces, so ``first_name`` also covers ``firstName``
  and ``First-Name``. A plain name matches that key only (``email`` does not match
  ``contact_email``); a glob matches more: the defaults use ``*email``, ``*phone`` and
  ``*address``, which cover compound keys ending in the word (``billing_email``,
  ``mobile_phone``, ``ip_address``) but leave flags such as ``email_verified`` visible.
* **JSON Pointer globs** (they start with ``/``, RFC 6901 escaping) such as
  ``/address/*`` or ``/customer/**/iban``: each token is a shell-style glob for one path
  token, ``**`` stands for any number of tokens, and a match masks that node with its whole
  subtree. Pointers are relative to the document being masked (an event's payload or its
  metadata, a reconstructed state) and match case-insensitively.

Masking errs towards hiding: ``name`` also hides a product's ``name`` — a few fields too
many on a support screen is cheaper than one leaked address. Free text (a ``note`` that
contains an e-mail address) is not inspected; add such keys to ``AUDIT_MASK_FIELDS``.

This module is pure: no Flask, no database.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any, Final

from .budget import check_budget
from .jsonlimits import TooDeep
from .jsonpointer import MISSING, PointerError, split_pointer

__all__ = [
    "DEFAULT_MASK_PATTERNS",
    "MASK",
    "NO_MASKING",
    "MaskPatternError",
    "Masker",
    "masker_for",
]

MASK: Final = "•••masked•••"

DEFAULT_MASK_PATTERNS: Final[tuple[str, ...]] = (
    # Compound keys end in the personal word (contact_email, home_phone, billing_address),
    # so "*email" masks those but leaves flags such as email_verified or phone_opt_in visible.
    # e-mail: email, contact_email, billingEmail, e-mail, emails
    "*email",
    "*emails",
    # phone: phone, mobile_phone, phone_number, phoneNumbers; and other words for it
    "*phone",
    "*phones",
    "*phone_number",
    "*phone_numbers",
    "mobile",
    "fax",
    # names of people (not "*name", which would hide file_name, host_name, event_name ...)
    "name",
    "first_name",
    "last_name",
    "full_name",
    "middle_name",
    "given_name",
    "family_name",
    "display_name",
    "maiden_name",
    "birth_name",
    "legal_name",
    "preferred_name",
    "nickname",
    "surname",
    # addresses, whole subtree: address, home_address, shipping_address, ip_address, addresses
    "*address",
    "*addresses",
    "address_line*",
    "street*",
    "postcode",
    "postal_code",
    "zip",
    "zip_code",
    # network identity: metadata.ip and friends; a user agent fingerprints a device
    "ip",
    "client_ip",
    "remote_ip",
    "source_ip",
    "remote_addr",
    "x_forwarded_for",
    "user_agent",
    # other direct identifiers commonly found in customer records
    "date_of_birth",
    "birth_date",
    "dob",
    "ssn",
    "national_id",
    "passport_number",
    "iban",
)

# Characters people use to join words in keys: first_name, first-name, first.name, first name.
_SEPARATORS = re.compile(r"[_\-. ]+")
_KEY_CACHE_SIZE = 4096
_ANY_DEPTH = "**"


class MaskPatternError(ValueError):
    """A mask pattern that cannot be understood; the message names it."""


def _normalise_key(key: str) -> str:
    return _SEPARATORS.sub("", key.casefold())


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
                normalised = _normalise_key(pattern)
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
        return bool(self._keys and self._keys.fullmatch(_normalise_key(key)))

    def masks_key(self, key: str) -> bool:
        """Whether an object member named ``key`` is masked wherever it appears."""
        return isinstance(key, str) and self._key_matches(key)

    def _pointer_matches(self, tokens: Sequence[str]) -> bool:
        """Whether some pointer glob matches exactly ``tokens`` (not a prefix of them)."""
        folded = [token.casefold() for token in tokens]
        return any(_glob_match(glob, folded) for glob in self._pointers)

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

    def mask_event_json(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of an event in its JSON shape with ``payload`` and ``metadata`` masked."""
        masked = dict(event)
        if not self.active:
            return masked
        for key in ("payload", "metadata"):
            if masked.get(key) is not None:
                masked[key] = self.mask_document(masked[key])
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


def _token_glob(token: str) -> re.Pattern[str] | None:
    """One pointer-pattern token as a regex; None for ``**`` (any number of tokens)."""
    if token == _ANY_DEPTH:
        return None
    return re.compile(fnmatch.translate(token.casefold()), re.DOTALL)


def _glob_match(glob: tuple[re.Pattern[str] | None, ...], tokens: Sequence[str]) -> bool:
    """Match path tokens against pointer-glob tokens; None (``**``) spans 0+ tokens."""
    if not glob:
        return not tokens
    head, rest = glob[0], glob[1:]
    if head is None:
        return any(_glob_match(rest, tokens[skip:]) for skip in range(len(tokens) + 1))
    return bool(tokens) and bool(head.fullmatch(tokens[0])) and _glob_match(rest, tokens[1:])


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
