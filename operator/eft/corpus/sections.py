"""The parsed shape of a document (a heading path and its text blocks) and the text clean-up shared by parsers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: Spaces of every kind (no-break, thin, ...) become one plain space; zero-width characters are dropped.
_WS = re.compile(r"[ \t\r\f\v\xa0\u1680\u2000-\u200a\u202f\u205f\u3000]+")
_ZERO_WIDTH = re.compile(r"[\u200b\u2060\ufeff]")  # not ZWJ/ZWNJ: they carry meaning in some scripts
_NUMBERING = re.compile(r"^\s*(?:[A-Z]?\d+(?:\.\d+)*\.?|[IVXLC]+\.)\s+")
#: Permalink markers that themes put next to headings ("Installation¶").
_PERMALINK = re.compile(r"(?:\s*[¶🔗])+\s*$")


@dataclass
class Section:
    headings: list[str]
    blocks: list[str] = field(default_factory=list)


def clean_heading(text: str) -> str:
    """Collapse whitespace, drop permalink markers and section numbering
    ("11.3. Multicolumn Indexes¶" -> "Multicolumn Indexes")."""
    text = _PERMALINK.sub("", _WS.sub(" ", _ZERO_WIDTH.sub("", text.replace("\n", " ")))).strip()
    return _NUMBERING.sub("", text).strip() or text


def normalise_block(text: str, keep_lines: bool = False) -> str:
    """One block's text: whitespace collapsed, or (code) lines kept with trailing spaces removed."""
    text = _ZERO_WIDTH.sub("", text)
    if keep_lines:
        lines = [ln.replace("\xa0", " ").rstrip() for ln in text.strip("\n").splitlines()]
        return "\n".join(lines).strip()
    return _WS.sub(" ", text.replace("\n", " ")).strip()
