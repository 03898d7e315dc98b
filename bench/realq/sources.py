"""Where each Debian package's FAQ and documentation are, and how to take the questions out of its pages.

A `Source` knows one package: its documentation root, its FAQ pages, the pool of other pages, the element that
holds a page's content, and how its FAQ marks questions (Sphinx section headings for Django and SQLAlchemy,
AsciiDoc definition-list terms for git's gitfaq(7), bold numbered paragraphs for SQLite). `extract_entries`
removes the question elements from a parsed FAQ page in place and returns the (question, answer element) pairs;
what remains of the page is the FAQ without its questions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bs4 import BeautifulSoup, Tag

from realq.leakage import TOC_SELECTORS

#: Elements that are never content: scripts, page chrome, search boxes, sidebars, permalink markers.
CHROME_SELECTORS = ("script", "style", "noscript", "form", "div.nav", "div#hd", "div#ft", "div.sphinxsidebar",
                    "div#global-nav", "div.nosearch", "div#footer", "a.headerlink", "div.searchmenu",
                    "div.menu", "div.related", "div.clearer")


@dataclass
class Entry:
    """One FAQ entry: its question, the element(s) holding its answer, and the anchors that point at it."""

    question: str
    answer: list[Tag]
    page: str
    anchors: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Source:
    name: str
    package: str
    root: Path
    faq_pages: tuple[str, ...]
    pool: Callable[[Path], list[str]]
    main: Callable[[BeautifulSoup], Tag]
    extract: Callable[[BeautifulSoup, Tag, str], list[Entry]]
    #: Words of documentation (besides the FAQ pages; the pages they link to count) to aim for.
    words: int = 60000
    #: Stop taking the pages the answers link to (in link order) once they hold this many words (None: take all;
    #: the page that crosses the mark is kept). SQLAlchemy's answers link to 41 long pages, 400,000 words, where
    #: the other sets' linked pages hold 60,000-80,000.
    linked_words: int | None = None


def text_of(el: Tag) -> str:
    """An element's text on one line, without the space `get_text(" ")` leaves before punctuation."""
    return re.sub(r"\s+([?.!,:;])", r"\1", re.sub(r"\s+", " ", el.get_text(" "))).strip()


def answer_blocks(title: str, answer: list[Tag]) -> list[str]:
    """The text blocks of an answer's elements as the project's HTML reader keeps them (headings are not blocks;
    a list of bare links is dropped as navigation)."""
    from eft.corpus.documents import parse_html

    html = "<html><body>" + "".join(str(el) for el in answer) + "</body></html>"
    return [b for s in parse_html(html, title) for b in s.blocks]


def _ids_around(el: Tag) -> set[str]:
    """Anchor ids on an element, its descendants and the empty <span id>/<a name> markers just before it."""
    ids = {el.get("id")} | {t.get("id") for t in el.find_all(id=True)}
    prev = el.find_previous_sibling()
    while prev is not None and prev.name in ("span", "a") and not prev.get_text(strip=True):
        ids |= {prev.get("id"), prev.get("name")}
        prev = prev.find_previous_sibling()
    return {i for i in ids if i}


# ----------------------------------------------------------------------------- Django (Sphinx)
def _django_main(soup: BeautifulSoup) -> Tag:
    return soup.select_one("div#yui-main div.yui-g") or soup.select_one("div.document") or soup.body


def _django_extract(soup: BeautifulSoup, main: Tag, page: str) -> list[Entry]:
    """Every leaf section below the page title is an entry; its heading is the question."""
    out = []
    for sec in main.find_all("div", class_="section"):
        if sec.find("div", class_="section") is not None:
            continue
        head = sec.find(re.compile(r"^h[2-6]$"), recursive=False)
        if head is None:
            continue
        for a in head.find_all("a", class_="headerlink"):
            a.decompose()
        anchors = _ids_around(head) | {sec.get("id", ""), sec.get("id", "").removeprefix("s-")}
        question = text_of(head)
        head.decompose()
        out.append(Entry(question, [sec], page, {a for a in anchors if a}))
    return out


def _sphinx_pool(root: Path, skip: tuple[str, ...], top: set[str]) -> list[str]:
    """Every page of a Sphinx build but those under `skip`, the `top` pages and the section indexes."""
    return sorted(r for r in (p.relative_to(root).as_posix() for p in root.rglob("*.html"))
                  if not r.startswith(skip) and r not in top and not r.endswith("/index.html"))


def _django_pool(root: Path) -> list[str]:
    return _sphinx_pool(root, ("releases/", "faq/", "_modules/", "_sources/", "_images/", "_static/"),
                        {"index.html", "contents.html", "genindex.html", "search.html", "py-modindex.html"})


# ----------------------------------------------------------------------------- git (AsciiDoc)
def _git_main(soup: BeautifulSoup) -> Tag:
    return soup.body


def _git_extract(soup: BeautifulSoup, main: Tag, page: str) -> list[Entry]:
    """gitfaq(7): each top-level definition-list term is a question, its definition the answer."""
    out = []
    for dt in main.select("div.sectionbody > div.dlist > dl > dt.hdlist1"):
        dd = dt.find_next_sibling("dd")
        if dd is None:
            continue
        anchors = {dd.get("id")} | {t.get("id") for t in dd.find_all(id=True, recursive=False)}
        first_p = dd.find(["p", "div"], recursive=False)
        if first_p is not None and first_p.get("id"):
            anchors.add(first_p["id"])
        if dt.find_previous_sibling("dt") is None:
            anchors.add(dt.find_parent("div", class_="dlist").get("id"))
        question = text_of(dt)
        dt.decompose()
        out.append(Entry(question, [dd], page, {a for a in anchors if a}))
    return out


def _git_pool(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob("*.html") if p.name != "gitfaq.html" and not p.name.startswith("RelNotes"))


# ----------------------------------------------------------------------------- SQLite
_SQLITE_NUMBER = re.compile(r"^\(\d+\)\s*")


def _sqlite_main(soup: BeautifulSoup) -> Tag:
    return soup.body


def _sqlite_extract(soup: BeautifulSoup, main: Tag, page: str) -> list[Entry]:
    """faq.html: `<a name=qN>`, then `<p><b>(N) question</b></p>`, then the answer in a blockquote."""
    out = []
    for mark in main.find_all("a", attrs={"name": re.compile(r"^q\d+$")}):
        para = mark.find_next_sibling("p")
        answer = para.find_next_sibling("blockquote") if para is not None else None
        if para is None or answer is None or para.find("b") is None:
            continue
        question = _SQLITE_NUMBER.sub("", text_of(para))
        para.decompose()
        out.append(Entry(question, [answer], page, {mark["name"]}))
    return out


def _sqlite_pool(root: Path) -> list[str]:
    skip = {"index.html", "docs.html", "sitemap.html", "toc.html", "doclist.html", "changes.html", "chronology.html",
            "news.html", "keyword_index.html", "sitemap.html", "faq.html", "search.html", "capi3ref.html",
            "fileformat2.html", "mostdeployed.html", "famous.html", "copyright-release.html"}
    return sorted(p.name for p in root.glob("*.html") if p.name not in skip and not p.name.startswith("releaselog"))


# ----------------------------------------------------------------------------- SQLAlchemy (Sphinx, <section>)
#: An answer of fewer words than this outside its links is a pointer elsewhere ("See Configuring Logging.", "This
#: is covered in the section <a>Using Connection Pools with Multiprocessing or os.fork()</a>."): its passage would
#: hold nothing to retrieve it by, so the entry is left out (its answer stays on the page).
MIN_ANSWER_WORDS = 12


def _sqlalchemy_main(soup: BeautifulSoup) -> Tag:
    return soup.select_one("div#docs-body") or soup.body


def _sqlalchemy_extract(soup: BeautifulSoup, main: Tag, page: str) -> list[Entry]:
    """faq/*.html: every second-level section (its `<h2>`) is an entry, the rest of the section (with its
    subsections) the answer. A heading that opens with a quoted error message ("“MySQL Server has gone away”")
    is left out: the documentation quotes the message itself, so it is not a question asked in the user's own
    words (and the leakage checks find it in the text); so is a pointer answer (`MIN_ANSWER_WORDS`).

    A question heading is replaced by the page's title rather than removed: the project's reader ignores
    `<section>` bounds, so without a heading there the answer would be read as part of the previous answer's
    last subsection ("I'm on SQL Server - how do I turn those ROLLBACKs into COMMITs?")."""
    h1 = main.find("h1")
    title = text_of(h1).rstrip("\u00b6 ") if h1 is not None else page
    out = []
    for sec in main.find_all("section"):
        head = sec.find("h2", recursive=False)
        if head is None:
            continue
        for a in head.find_all("a", class_="headerlink"):
            a.decompose()
        question = text_of(head)
        outside_links = len(text_of(sec).split()) - sum(len(text_of(a).split()) for a in sec.find_all("a"))
        if (question.startswith(("\u201c", '"')) or outside_links - len(question.split()) < MIN_ANSWER_WORDS
                or sum(len(b.split()) for b in answer_blocks(title, [sec])) < MIN_ANSWER_WORDS):
            continue
        anchors = _ids_around(sec)
        head.clear()
        head.append(title)
        out.append(Entry(question, [sec], page, anchors))
    return out


def _sqlalchemy_pool(root: Path) -> list[str]:
    return _sphinx_pool(root, ("faq/", "changelog/", "_modules/", "_static/", "_images/"),
                        {"index.html", "contents.html", "genindex.html", "search.html", "copyright.html"})


SOURCES: dict[str, Source] = {
    "django": Source("django", "python-django-doc", Path("/usr/share/doc/python-django-doc/html"),
                     tuple(f"faq/{n}.html" for n in ("admin", "contributing", "general", "help", "install",
                                                     "models", "troubleshooting", "usage")),
                     _django_pool, _django_main, _django_extract),
    "git": Source("git", "git-doc", Path("/usr/share/doc/git-doc"), ("gitfaq.html",), _git_pool, _git_main,
                  _git_extract),
    "sqlite": Source("sqlite", "sqlite3-doc", Path("/usr/share/doc/sqlite3"), ("faq.html",), _sqlite_pool,
                     _sqlite_main, _sqlite_extract),
    "sqlalchemy": Source("sqlalchemy", "python-sqlalchemy-doc", Path("/usr/share/doc/python-sqlalchemy-doc/html"),
                         tuple(f"faq/{n}.html" for n in ("connections", "installation", "metadata_schema",
                                                         "ormconfiguration", "performance", "sessions",
                                                         "sqlexpressions", "thirdparty")),
                         _sqlalchemy_pool, _sqlalchemy_main, _sqlalchemy_extract, words=80000, linked_words=60000),
}


def strip_page(soup: BeautifulSoup, main: Tag) -> Tag:
    """Remove page chrome and tables of contents inside `main` (in place) and return it."""
    for sel in CHROME_SELECTORS + TOC_SELECTORS:
        for el in main.select(sel):
            el.decompose()
    return main
