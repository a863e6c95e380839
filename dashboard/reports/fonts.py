"""Fonts for the PDF reports, and the one function that turns user text into safe markup.

Audit data holds names in every script ("Zoë Łukasz 東京"), and the PDF's core fonts
(Helvetica and friends) have Latin-1 glyphs only: anything else prints as black boxes. So:

- Latin, Greek, Cyrillic and Vietnamese use **Noto Sans**, a TrueType font shipped by the
  ``fontpkg-noto-sans`` wheel (a dependency in pyproject.toml, OFL-licensed). It is
  embedded (subset) in every PDF, so the document shows the same on any machine. When the
  wheel is missing, Debian's DejaVu Sans is used if present.
- Chinese, Japanese and Korean use ReportLab's built-in CID fonts (``STSong-Light``,
  ``HeiseiKakuGo-W5``, ``HYGothic-Medium``): the standard Adobe CJK fonts every PDF reader
  supplies, which need no file here. (Free CJK fonts on PyPI are OpenType/CFF, which
  ReportLab cannot embed.) Text extraction (pdftotext, pypdf) works for them as for Latin.

ReportLab does not fall back from font to font by itself, so :func:`markup` splits text
into runs and wraps the CJK runs in ``<font name=...>``. Before that it escapes ``&``, ``<``
and ``>``: a user string can never become a ReportLab tag (``<img src=...>``, ``<a>``), so
the renderer reads no file and fetches no URL whatever the data says. Control characters
become spaces (newlines, tabs) or U+FFFD.

This module is pure: no Flask, no database (ReportLab only).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final

from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfbase.ttfonts import TTFont

__all__ = ["BASE_FONT", "FontSet", "covered", "font_runs", "fonts", "markup", "plain"]

BASE_FONT: Final = "AuditSans"
CHINESE: Final = "STSong-Light"
JAPANESE: Final = "HeiseiKakuGo-W5"
KOREAN: Final = "HYGothic-Medium"

_DEBIAN_DEJAVU: Final = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
_lock = threading.Lock()


@dataclass(frozen=True)
class FontSet:
    base: str
    source: str  # the file the base font came from, for the report's colophon
    glyphs: frozenset[int]

    @property
    def arrow(self) -> str:
        """ "becomes", as the base font can draw it (Noto Sans has no arrows, DejaVu has)."""
        return "→" if ord("→") in self.glyphs else "->"


def _base_font_file() -> Path:
    try:
        import fontpkg_noto_sans

        candidate = Path(fontpkg_noto_sans.ROOT) / "files" / "NotoSans[wdth,wght].ttf"
        if candidate.is_file():
            return candidate
    except ImportError:
        pass
    if _DEBIAN_DEJAVU.is_file():
        return _DEBIAN_DEJAVU
    raise RuntimeError(
        "No font for PDF reports: install the fontpkg-noto-sans package "
        "(pip install fontpkg-noto-sans, a dependency of audit-dashboard) or Debian's "
        "fonts-dejavu-core."
    )


@cache
def fonts() -> FontSet:
    """Register the report fonts once per process and describe them."""
    with _lock:
        path = _base_font_file()
        font = TTFont(BASE_FONT, str(path))
        pdfmetrics.registerFont(font)
        for name in (CHINESE, JAPANESE, KOREAN):
            pdfmetrics.registerFont(UnicodeCIDFont(name))
        return FontSet(base=BASE_FONT, source=path.name, glyphs=frozenset(font.face.charToGlyph))


def _is_kana(code: int) -> bool:
    return 0x3040 <= code <= 0x30FF or 0x31F0 <= code <= 0x31FF or 0xFF65 <= code <= 0xFF9F


def _is_hangul(code: int) -> bool:
    return 0x1100 <= code <= 0x11FF or 0x3130 <= code <= 0x318F or 0xAC00 <= code <= 0xD7AF


def _is_cjk(code: int) -> bool:
    return (
        0x2E80 <= code <= 0x9FFF  # radicals, CJK punctuation, kana, unified ideographs
        or 0xAC00 <= code <= 0xD7AF
        or 0xF900 <= code <= 0xFAFF  # compatibility ideographs
        or 0xFE30 <= code <= 0xFE4F
        or 0xFF00 <= code <= 0xFFEF  # full- and half-width forms
        or 0x1100 <= code <= 0x11FF
        or 0x20000 <= code <= 0x2FA1F
    )


# Newlines and tabs become spaces; other C0/C1 controls (which ReportLab would print as
# boxes or choke on) become U+FFFD. str.translate does it in C, once per string.
_CONTROLS: Final = {
    code: (" " if chr(code) in "\r\n\t" else "\ufffd")
    for code in (*range(0x20), *range(0x7F, 0xA0))
}


def _clean(text: str) -> str:
    return text.translate(_CONTROLS)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def covered(text: str) -> bool:
    """True when the base font has a glyph for every character (then no markup is needed)."""
    return fonts().glyphs.issuperset(map(ord, text))


def plain(text: object) -> str:
    """``text`` as a string safe to draw directly with the base font (controls removed)."""
    return _clean("" if text is None else str(text))


def font_runs(text: object) -> list[tuple[str, str]]:
    """``text`` (controls removed) as ``(font name, text)`` runs, for drawing on a canvas.

    Han characters use the Japanese font when the text contains kana, else the Chinese one
    (Adobe-GB1 covers every CJK Unified Ideograph of the basic block); Hangul uses Korean.
    Characters no font has stay in the base font (drawn as its missing-glyph box).
    """
    value = _clean("" if text is None else str(text))
    state = fonts()
    glyphs = state.glyphs
    if glyphs.issuperset(map(ord, value)):
        return [(state.base, value)] if value else []
    han_font = JAPANESE if any(_is_kana(ord(char)) for char in value) else CHINESE
    runs: list[tuple[str, list[str]]] = []
    for char in value:
        code = ord(char)
        if code in glyphs or not _is_cjk(code):
            face = state.base
        elif _is_hangul(code):
            face = KOREAN
        elif _is_kana(code):
            face = JAPANESE
        else:
            face = han_font
        if runs and runs[-1][0] == face:
            runs[-1][1].append(char)
        else:
            runs.append((face, [char]))
    return [(face, "".join(chars)) for face, chars in runs]


def markup(text: object) -> str:
    """``text`` as ReportLab paragraph markup: escaped, with CJK runs in a CJK font
    (see :func:`font_runs`)."""
    base = fonts().base
    return "".join(
        _escape(run) if face == base else f'<font name="{face}">{_escape(run)}</font>'
        for face, run in font_runs(text)
    )
