"""Leakage checks for a real-question set: the pipeline's `docs/` must not give the questions away.

Checked on the files exactly as the pipeline reads them (the project's own HTML reader):
- no FAQ question appears in `docs/` as a heading, nor (for questions of 4+ words) anywhere in the text;
- no table of contents survives (Sphinx toctrees and local contents, AsciiDoc/SQLite TOCs, FAQ index lists);
- no cross-reference keeps a question as its link text (links into the FAQ are rewritten to the page title);
- no answer passage in the BEIR corpus contains its question.
Every failure is collected and raised at once as `LeakageError`, so a build never writes a leaky set silently.
"""

from __future__ import annotations

import re
from pathlib import Path

from eft.corpus.documents import parse_document
from eft.corpus.reader import read_text

_NON_WORD = re.compile(r"[^a-z0-9]+")

#: CSS selectors of tables of contents in the generators we read (Sphinx, AsciiDoc, SQLite's docs).
TOC_SELECTORS = ("div.toctree-wrapper", "div.contents", "nav.contents", "div.topic.contents", "div#toc",
                 "div.fancy_toc", "div#fancy_toc", "ol.nounderline", "div.sphinxsidebar", "ul.toc")


class LeakageError(RuntimeError):
    """The set would leak its questions to the pipeline; `problems` lists every finding."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{len(problems)} leakage problem(s):\n  {shown}{more}")


def normalise(text: str) -> str:
    """Lower case, typographic quotes folded, every run of non-alphanumerics one space."""
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("'", "")
    return _NON_WORD.sub(" ", text.lower()).strip()


def is_question_like(text: str) -> bool:
    """Link text that reads as a question (ends with '?')."""
    return text.strip().rstrip("\u00b6 ").endswith("?")


def check_text(name: str, headings: list[str], text: str, questions: list[str]) -> list[str]:
    """Problems for one document's headings and text (both as the reader gives them)."""
    problems = []
    norm_text = f" {normalise(text)} "
    heads = {normalise(h) for h in headings}
    for q in questions:
        nq = normalise(q)
        if not nq:
            continue
        if nq in heads:
            problems.append(f"{name}: question used as a heading: {q!r}")
        elif len(nq.split()) >= 4 and f" {nq} " in norm_text:
            problems.append(f"{name}: question text appears in the document: {q!r}")
    return problems


def check_html_structure(name: str, html: str, questions: list[str]) -> list[str]:
    """TOCs and question-shaped cross-references left in one HTML file."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "lxml")
    problems = [f"{name}: table of contents left ({sel})" for sel in TOC_SELECTORS if soup.select_one(sel)]
    qset = {normalise(q) for q in questions}
    for a in soup.find_all("a"):
        text = a.get_text(" ", strip=True)
        if is_question_like(text) or (text and normalise(text) in qset):
            problems.append(f"{name}: cross-reference with a question as link text: {text!r}")
    return problems


def check_docs(docs_dir: Path, questions: list[str]) -> list[str]:
    """Every leakage problem in `docs_dir` (empty when clean)."""
    problems: list[str] = []
    files = sorted(p for p in docs_dir.rglob("*") if p.is_file())
    if not files:
        return [f"{docs_dir}: no documents"]
    for path in files:
        name = path.relative_to(docs_dir).as_posix()
        raw = read_text(path)
        sections = parse_document(path, raw)
        headings = [h for s in sections for h in s.headings]
        text = "\n".join(b for s in sections for b in s.blocks)
        problems += check_text(name, headings, text, questions)
        if path.suffix.lower() in (".html", ".htm"):
            problems += check_html_structure(name, raw, questions)
    return problems


def check_answers(entries: list[tuple[str, str]]) -> list[str]:
    """(question, answer passage) pairs: an answer must not contain its own question."""
    out = []
    for q, a in entries:
        nq = normalise(q)
        if nq and f" {nq} " in f" {normalise(a)} ":
            out.append(f"answer passage contains its question: {q!r}")
    return out


def assert_no_leakage(docs_dir: Path, questions: list[str], entries: list[tuple[str, str]] | None = None) -> None:
    """Raise `LeakageError` listing every problem found by `check_docs` and `check_answers`."""
    problems = check_docs(docs_dir, questions) + check_answers(entries or [])
    if problems:
        raise LeakageError(problems)
