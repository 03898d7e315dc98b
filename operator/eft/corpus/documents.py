"""Parsing one document into sections: a heading path and its text blocks (paragraphs, list items, code).

HTML goes through `eft.corpus.html` (main content by landmarks, roles and link density); Markdown is split on
ATX/setext headings after its front matter is set aside; plain text on blank lines with the file name as the title.
"""

from __future__ import annotations

import re
from pathlib import Path

from eft.corpus.html import parse_html
from eft.corpus.sections import Section, clean_heading, normalise_block

__all__ = ["Section", "parse_document", "parse_html", "parse_markdown", "parse_text", "SUPPORTED_SUFFIXES"]

HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
MARKDOWN_SUFFIXES = {".md", ".markdown", ".mdx"}
TEXT_SUFFIXES = {".txt", ".text", ".rst"}
SUPPORTED_SUFFIXES = HTML_SUFFIXES | MARKDOWN_SUFFIXES | TEXT_SUFFIXES

# ----------------------------------------------------------------------------- Markdown / text
_ATX = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^(```|~~~)")
#: YAML (`---`) or TOML (`+++`) front matter at the very start of a Markdown file (Jekyll, Hugo, MkDocs).
_FRONT_MATTER = re.compile(r"\A(---|\+\+\+)[ \t]*\r?\n(.*?)\r?\n\1[ \t]*(?:\r?\n|\Z)", re.S)


def split_front_matter(text: str) -> tuple[dict, str]:
    """(front-matter fields, the Markdown body). Fields that do not parse give `{}`; the block is still removed."""
    m = _FRONT_MATTER.match(text)
    if not m:
        return {}, text
    fields: object = None
    try:
        if m.group(1) == "---":
            import yaml

            fields = yaml.safe_load(m.group(2))
        else:
            import tomllib

            fields = tomllib.loads(m.group(2))
    except Exception:  # noqa: BLE001 - malformed metadata must not lose the document
        fields = None
    return (fields if isinstance(fields, dict) else {}), text[m.end():]


def parse_markdown(text: str, fallback_title: str) -> list[Section]:
    """Sections split on ATX/setext headings; fenced code kept whole. Front matter is not text: its `title`
    (when given) replaces the file-name title."""
    meta, text = split_front_matter(text)
    title = meta.get("title")
    if isinstance(title, str) and title.strip():
        fallback_title = clean_heading(title)
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
