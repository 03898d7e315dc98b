"""Reading an HTML page into sections: the main content found by landmarks, roles and link density, then walked
in document order into a heading path and its text blocks.

What counts as navigation is decided the way well-kept main-content extractors do it (Mozilla Readability, the
WAI-ARIA landmark model, boilerplate removal by link density), never by guessing from class names (a theme's
`wy-nav-content` holds the page's text, not its menu):

1. The main region: the `<main>` element or `role="main"` (the one with the most text when there are several);
   the `<body>` when the page has none.
2. Landmarks that are not content are removed inside it: `<nav>`, elements whose `role` is navigation, banner,
   contentinfo, complementary, search, menu/menubar/toolbar/tablist, and `<header>`/`<footer>`/`<aside>` that
   belong to the page rather than to an article or section (HTML's own rule for banner/contentinfo); also
   hidden elements (`hidden`, `aria-hidden="true"`, `display:none`), and blocks whose `aria-label` or table
   `summary` declares them navigation (DocBook's "Navigation header" tables, Sphinx's breadcrumbs).
3. Link density: a block without a heading whose text is mostly link text (a menu, a table of contents, a row of
   "Prev | Up | Next") is dropped. Headings are never dropped, including a heading whose text is a link.
4. Permalink markers (an in-page link whose text has no letter or digit, such as Sphinx's and MkDocs' `¶`/`#`)
   are removed so they do not end up in heading paths.
"""

from __future__ import annotations

import re
import warnings

from eft.corpus.sections import Section, clean_heading, normalise_block

HEADING_TAGS = ("h1", "h2", "h3", "h4", "h5", "h6")
_DROP_TAGS = ["script", "style", "noscript", "template", "svg", "iframe", "form", "button", "input", "select",
              "textarea", "link", "meta", "object", "embed", "canvas", "dialog"]
_NON_CONTENT_ROLES = {"navigation", "banner", "contentinfo", "complementary", "search", "menu", "menubar",
                      "toolbar", "tablist", "tree", "directory"}
#: Elements whose `header`/`footer` children are that element's own, not the page's (HTML's sectioning content).
_SECTIONING = ("article", "section", "main", "aside", "nav")
_NAV_LABEL = re.compile(r"\b(navigation|breadcrumbs?|table of contents|pagination)\b", re.I)
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)
_INLINE_TAGS = {"a", "abbr", "b", "bdi", "bdo", "big", "cite", "code", "data", "del", "dfn", "em", "font", "i",
                "img", "ins", "kbd", "label", "mark", "q", "s", "samp", "small", "span", "strong", "sub", "sup",
                "time", "tt", "u", "var", "wbr", "br", "acronym", "strike", "nobr"}
#: Above this share of link text (and with at least MIN_NAV_LINKS links) a heading-less block is navigation
#: (Readability's cut-off for blocks without other evidence).
MAX_LINK_DENSITY = 0.5
MIN_NAV_LINKS = 2
_DENSITY_CANDIDATES = ["div", "ul", "ol", "dl", "table", "p", "section", "menu", "center"]


def _text_len(el) -> int:
    return len(" ".join(el.get_text(" ").split()))


def _role(el) -> str:
    return (el.get("role") or "").strip().lower()


def _is_hidden(el) -> bool:
    return (el.has_attr("hidden") or (el.get("aria-hidden") or "").lower() == "true"
            or bool(_HIDDEN_STYLE.search(el.get("style") or "")))


def _declared_navigation(el) -> bool:
    label = " ".join(str(el.get(a) or "") for a in ("aria-label", "summary"))
    return bool(label and _NAV_LABEL.search(label))


def _is_page_landmark(el, root) -> bool:
    """A <header>/<footer>/<aside> is the page's banner/contentinfo/complementary region unless it sits in an
    article, section, main, ... (then it is that content's own: a byline, a note)."""
    if el.name not in ("header", "footer", "aside"):
        return False
    for parent in el.parents:
        if parent is root:
            return root.name not in _SECTIONING and _role(root) != "main"
        if parent.name in _SECTIONING or _role(parent) == "main":
            return False
    return True


def main_region(soup):
    """The page's main content element: `<main>`/`role="main"` (most text wins), else `<body>`."""
    candidates = soup.find_all("main") + soup.find_all(attrs={"role": re.compile(r"^\s*main\s*$", re.I)})
    candidates = [c for c in candidates if _text_len(c) > 0]
    if candidates:
        return max(candidates, key=_text_len)  # of nested candidates, the outer one holds the most text
    return soup.body or soup


def _remove_boilerplate(root) -> None:
    for el in root.find_all(True):
        if el.decomposed:
            continue
        if (el.name == "nav" or _role(el) in _NON_CONTENT_ROLES or _is_hidden(el)
                or _declared_navigation(el) or _is_page_landmark(el, root)):
            if el.name in HEADING_TAGS:
                continue
            el.decompose()
    # Permalink markers: in-page links without a letter or digit ("¶", "#", "§", "🔗").
    for a in root.find_all("a", href=True):
        if a["href"].startswith("#") and not any(ch.isalnum() for ch in a.get_text()):
            a.decompose()
    for el in root.find_all(_DENSITY_CANDIDATES):
        if el.decomposed or el.find(HEADING_TAGS) is not None:
            continue
        links = el.find_all("a")
        if len(links) < MIN_NAV_LINKS:
            continue
        total = _text_len(el)
        if total and sum(_text_len(a) for a in links) / total > MAX_LINK_DENSITY:
            el.decompose()


def _has_block(el) -> bool:
    return any(getattr(d, "name", None) and d.name not in _INLINE_TAGS for d in el.descendants)


class _Walker:
    """Walks the main region in document order, building sections from headings and leaf blocks."""

    def __init__(self, title: str):
        self.sections: list[Section] = [Section([title])]
        self.stack: list[tuple[int, str]] = []
        self.inline: list[str] = []

    def block(self, text: str) -> None:
        if text and len(text) > 1:
            self.sections[-1].blocks.append(text)

    def flush(self) -> None:
        if self.inline:
            self.block(normalise_block(" ".join(self.inline)))
            self.inline.clear()

    def heading(self, el) -> None:
        self.flush()
        text = clean_heading(el.get_text(" "))
        if not text:
            return
        level = int(el.name[1])
        while self.stack and self.stack[-1][0] >= level:
            self.stack.pop()
        self.stack.append((level, text))
        self.sections.append(Section([h for _, h in self.stack]))

    def table(self, el) -> None:
        self.flush()
        caption = el.find("caption")
        if caption is not None:
            self.block(normalise_block(caption.get_text(" ")))
        for tr in el.find_all("tr"):
            if tr.find_parent("table") is not el:
                continue
            cells = [normalise_block(c.get_text(" ")) for c in tr.find_all(["td", "th"]) if c.find_parent("tr") is tr]
            self.block(" | ".join(c for c in cells if c))

    def walk(self, el) -> None:
        from bs4 import NavigableString
        from bs4.element import Comment, Declaration, Doctype, ProcessingInstruction

        for child in el.children:
            if isinstance(child, NavigableString):
                if not isinstance(child, (Comment, Declaration, Doctype, ProcessingInstruction)):
                    self.inline.append(str(child))
                continue
            name = child.name
            if name in HEADING_TAGS:
                self.heading(child)
            elif name == "pre":
                self.flush()
                self.block(normalise_block(child.get_text(), keep_lines=True))
            elif name == "table":
                self.table(child)
            elif name == "br":
                self.inline.append(" ")
            elif name in _INLINE_TAGS and not _has_block(child):
                self.inline.append(child.get_text(" "))
            elif not _has_block(child):
                self.flush()  # a leaf block: a paragraph, list item, definition, ...
                self.block(normalise_block(child.get_text(" ")))
            else:
                self.flush()
                self.walk(child)
                self.flush()


def parse_html(html: str | bytes, fallback_title: str) -> list[Section]:
    """Sections of an HTML page (see the module docstring). `html` may be bytes: BeautifulSoup then decodes it
    by its byte-order mark or declared encoding, then by detection."""
    from bs4 import BeautifulSoup, XMLParsedAsHTMLWarning

    with warnings.catch_warnings():
        # XHTML (e.g. DocBook output) parses fine as HTML; lxml's XML mode would drop the HTML semantics.
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(html, "lxml")
    for tag in soup(_DROP_TAGS):
        tag.decompose()
    title = clean_heading(soup.title.get_text()) if soup.title and soup.title.get_text(strip=True) else fallback_title
    root = main_region(soup)
    _remove_boilerplate(root)
    walker = _Walker(title)
    walker.walk(root)
    walker.flush()
    sections = walker.sections
    # The page title repeats the first heading in most generated docs; keep one of them.
    for s in sections:
        if len(s.headings) > 1 and s.headings[0] == s.headings[1]:
            s.headings = s.headings[1:]
    return [s for s in sections if s.blocks]
