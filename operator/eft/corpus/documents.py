"""Parsing one document into sections: a heading path and its text blocks (paragraphs, list items, code).

HTML goes through BeautifulSoup (lxml) with navigation, scripts and tables of contents removed; Markdown is split
on ATX/setext headings; plain text on blank lines with the file name as the title.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
MARKDOWN_SUFFIXES = {".md", ".markdown", ".mdx"}
TEXT_SUFFIXES = {".txt", ".text", ".rst"}
SUPPORTED_SUFFIXES = HTML_SUFFIXES | MARKDOWN_SUFFIXES | TEXT_SUFFIXES

_WS = re.compile(r"[ \t\r\f\v]+")
_NUMBERING = re.compile(r"^\s*(?:[A-Z]?\d+(?:\.\d+)*\.?|[IVXLC]+\.)\s+")


@dataclass
class Section:
    headings: list[str]
    blocks: list[str] = field(default_factory=list)


def clean_heading(text: str) -> str:
    """Collapse whitespace and drop section numbering ("11.3. Multicolumn Indexes" -> "Multicolumn Indexes")."""
    text = _WS.sub(" ", text.replace("\n", " ")).strip()
    return _NUMBERING.sub("", text).strip() or text


def normalise_block(text: str, keep_lines: bool = False) -> str:
    if keep_lines:
        lines = [ln.rstrip() for ln in text.strip("\n").splitlines()]
        return "\n".join(lines).strip()
    return _WS.sub(" ", text.replace("\n", " ")).strip()


# ----------------------------------------------------------------------------- HTML
_HTML_DROP = ["script", "style", "noscript", "nav", "header", "footer", "form", "button", "iframe", "svg"]
_HTML_DROP_CLASSES = re.compile(r"\b(navheader|navfooter|toc|breadcrumb|sidebar|menu|nav)\b", re.I)
_HEADING_TAGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_BLOCK_TAGS = {"p", "pre", "li", "dt", "dd", "blockquote", "tr", "caption", "figcaption", "td", "th"}


def parse_html(html: str, fallback_title: str) -> list[Section]:
    import warnings

    from bs4 import BeautifulSoup, XMLParsedAsHTMLWarning

    with warnings.catch_warnings():
        # XHTML (e.g. DocBook output) parses fine as HTML; lxml's XML mode would drop the HTML semantics.
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(html, "lxml")
    for tag in soup(_HTML_DROP):
        tag.decompose()
    for tag in soup.find_all(class_=_HTML_DROP_CLASSES):
        tag.decompose()
    body = soup.body or soup
    title = clean_heading(soup.title.get_text()) if soup.title and soup.title.get_text(strip=True) else fallback_title
    sections: list[Section] = [Section([title])]
    stack: list[tuple[int, str]] = []
    for el in body.find_all(list(_HEADING_TAGS | _BLOCK_TAGS)):
        # Only the innermost block counts: skip blocks nested inside another block we take whole.
        if el.name in _BLOCK_TAGS and el.find_parent(["pre", "li", "dd", "blockquote", "tr", "p"]) is not None:
            continue
        if el.name in ("td", "th") and el.find_parent("tr") is not None:
            continue
        if el.name in _HEADING_TAGS:
            text = clean_heading(el.get_text(" "))
            if not text:
                continue
            level = int(el.name[1])
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, text))
            sections.append(Section([h for _, h in stack]))
            continue
        if el.name == "pre":
            text = normalise_block(el.get_text(), keep_lines=True)
        elif el.name == "tr":
            text = " | ".join(normalise_block(c.get_text(" ")) for c in el.find_all(["td", "th"]))
        else:
            text = normalise_block(el.get_text(" "))
        if text and len(text) > 1:
            sections[-1].blocks.append(text)
    # The page title repeats the first heading in most generated docs; keep one of them.
    for s in sections:
        if len(s.headings) > 1 and s.headings[0] == s.headings[1]:
            s.headings = s.headings[1:]
    return [s for s in sections if s.blocks]


# ----------------------------------------------------------------------------- Markdown / text
_ATX = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^(```|~~~)")


def parse_markdown(text: str, fallback_title: str) -> list[Section]:
    sections = [Section([fallback_title])]
    stack: list[tuple[int, str]] = []
    para: list[str] = []
    in_fence = False
    lines = text.splitlines()

    def flush(keep_lines: bool = False) -> None:
        if para:
            block = normalise_block("\n".join(para), keep_lines=keep_lines)
            if block:
                sections[-1].blocks.append(block)
            para.clear()

    for i, line in enumerate(lines):
        if _FENCE.match(line.strip()):
            if in_fence:
                para.append(line)
                flush(keep_lines=True)
                in_fence = False
            else:
                flush()
                in_fence = True
                para.append(line)
            continue
        if in_fence:
            para.append(line)
            continue
        m = _ATX.match(line)
        setext = i + 1 < len(lines) and line.strip() and re.fullmatch(r"(=+|-+)\s*", lines[i + 1] or "x")
        if m or setext:
            flush()
            level = len(m.group(1)) if m else (1 if lines[i + 1].strip().startswith("=") else 2)
            heading = clean_heading(m.group(2) if m else line)
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, heading))
            sections.append(Section([h for _, h in stack]))
            continue
        if re.fullmatch(r"(=+|-+)\s*", line) and i > 0 and lines[i - 1].strip():
            continue  # setext underline, consumed above
        if not line.strip():
            flush()
        elif re.match(r"^\s*([-*+]|\d+[.)])\s+", line) and para:
            flush()
            para.append(line)
        else:
            para.append(line)
    flush(keep_lines=in_fence)
    if sections[0].blocks == [] and len(sections) > 1:
        sections = sections[1:]
    return [s for s in sections if s.blocks]


def parse_text(text: str, fallback_title: str) -> list[Section]:
    blocks = [normalise_block(b) for b in re.split(r"\n\s*\n", text)]
    blocks = [b for b in blocks if b]
    return [Section([fallback_title], blocks)] if blocks else []


def title_from_path(path: Path) -> str:
    return re.sub(r"[-_]+", " ", path.stem).strip() or path.name


def parse_document(path: Path, text: str) -> list[Section]:
    suffix = path.suffix.lower()
    title = title_from_path(path)
    if suffix in HTML_SUFFIXES:
        return parse_html(text, title)
    if suffix in MARKDOWN_SUFFIXES:
        return parse_markdown(text, title)
    return parse_text(text, title)
