"""Seeded train/test split by question with duplicate questions ("twins") kept on one side."""

from __future__ import annotations

import pytest

from eft.prep.split import normalise_question, split_questions, twin_groups
from eft.records import QuestionRecord


def q(i: int, text: str, seg: str | None = None) -> QuestionRecord:
    return QuestionRecord(question_id=f"q{i}", question=text, segment_ids=[seg or f"c{i}"])


def questions_with_twins(n: int = 200) -> list[QuestionRecord]:
    out = [q(i, f"how do I configure feature {i} in the server") for i in range(n)]
    # Twins of every 7th question: case, punctuation and spacing variants, with other ids (and chunks).
    k = n
    for i in range(0, n, 7):
        for variant in (f"How do I configure Feature {i} in the server?", f"how  do I configure feature {i}, in the SERVER!"):
            out.append(q(k, variant, f"c{i}"))
            k += 1
    return out


def test_normalise_question_ignores_case_punctuation_spacing():
    assert normalise_question("What's  the MAX_SIZE, exactly?") == normalise_question("what s the max size exactly")
    assert normalise_question("a b") != normalise_question("ab")
    # Letters of other scripts are letters: two different Japanese questions are not twins, two spellings of one are.
    assert normalise_question("データベースを作成するには？") != normalise_question("テーブルを削除するには？")
    assert normalise_question("Как создать индекс?") == normalise_question("как  создать ИНДЕКС")


def test_twin_groups():
    qs = [q(0, "Ab cd?"), q(1, "efg"), q(2, "ab  CD"), q(3, "EFG!")]
    assert twin_groups(qs) == [[0, 2], [1, 3]]


def test_split_is_seeded_and_about_test_fraction():
    qs = [q(i, f"question number {i}") for i in range(500)]
    train, test = split_questions(qs, 0.2, seed=1)
    assert len(test) == 100 and len(train) == 400
    again = split_questions(qs, 0.2, seed=1)
    assert [x.question_id for x in again[1]] == [x.question_id for x in test]
    other = split_questions(qs, 0.2, seed=2)
    assert {x.question_id for x in other[1]} != {x.question_id for x in test}
    # Train keeps the input order.
    assert [x.question_id for x in train] == [x.question_id for x in qs if x not in test]


def test_split_stays_put_when_questions_are_added():
    """Groups are ranked by their own seeded hash: three new questions move at most a few old ones across
    (one shuffle of the whole list would re-draw about a third of them)."""
    qs = [q(i, f"question number {i}") for i in range(300)]
    more = qs + [q(300 + i, f"another question {i}") for i in range(3)]
    for seed in range(5):
        before = {x.question_id for x in split_questions(qs, 0.2, seed)[1]}
        after = {x.question_id for x in split_questions(more, 0.2, seed)[1]} - {f"q{300 + i}" for i in range(3)}
        assert len(before ^ after) <= 4, seed


@pytest.mark.parametrize("fraction", [0.05, 0.2, 0.5])
def test_twins_never_straddle_the_split(fraction):
    qs = questions_with_twins()
    groups = twin_groups(qs)
    assert sum(len(g) > 1 for g in groups) == 29
    for seed in range(60):
        train, test = split_questions(qs, fraction, seed)
        train_ids = {x.question_id for x in train}
        test_ids = {x.question_id for x in test}
        assert not train_ids & test_ids
        assert len(train_ids) + len(test_ids) == len(qs)
        for g in groups:
            sides = {qs[i].question_id in test_ids for i in g}
            assert len(sides) == 1, (seed, [qs[i].question for i in g])
        # The normalised texts of the two sides are disjoint: no test query has a training twin.
        assert not {normalise_question(x.question) for x in train} & {normalise_question(x.question) for x in test}
        assert abs(len(test) - fraction * len(qs)) <= 3


def test_small_and_degenerate_inputs():
    train, test = split_questions([q(0, "alpha question"), q(1, "beta question")], 0.2, 0)
    assert len(test) == 1 and len(train) == 1
    with pytest.raises(ValueError, match="at least 2"):
        split_questions([q(0, "alpha")], 0.2, 0)
    with pytest.raises(ValueError, match="no training questions"):
        split_questions([q(0, "same thing"), q(1, "Same thing!")], 0.2, 0)


# ----------------------------------------------------------------------------- by document
from eft.prep.split import document_groups, split_by_document  # noqa: E402


def corpus_questions(n_docs: int = 20, per_doc: int = 10) -> tuple[list[QuestionRecord], dict[str, str]]:
    """`per_doc` single-hop questions on each of `n_docs` documents (chunk c<d>_<k> belongs to document d<d>)."""
    qs, doc_of = [], {}
    for d in range(n_docs):
        for k in range(per_doc):
            cid = f"c{d}_{k}"
            doc_of[cid] = f"d{d}"
            qs.append(q(d * per_doc + k, f"question {k} about topic {d}", cid))
    return qs, doc_of


def sized_documents(sizes: list[int]) -> tuple[list[QuestionRecord], dict[str, str]]:
    """One document per entry of `sizes`, with that many single-hop questions (chunk c<d>_<k> in document d<d>)."""
    qs, doc_of = [], {}
    for d, size in enumerate(sizes):
        for k in range(size):
            doc_of[f"c{d}_{k}"] = f"d{d}"
            qs.append(q(len(qs), f"question {k} about topic {d}", f"c{d}_{k}"))
    return qs, doc_of


def test_document_split_keeps_documents_whole_and_is_seeded():
    qs, doc_of = corpus_questions()
    train, test = split_by_document(qs, doc_of, 0.2, seed=3)
    train_docs = {doc_of[s] for x in train for s in x.segment_ids}
    test_docs = {doc_of[s] for x in test for s in x.segment_ids}
    assert not train_docs & test_docs
    assert len(test) == 40 and len(train) == 160
    assert [x.question_id for x in split_by_document(qs, doc_of, 0.2, seed=3)[1]] == [x.question_id for x in test]
    assert {x.question_id for x in split_by_document(qs, doc_of, 0.2, seed=4)[1]} != {x.question_id for x in test}


def test_document_split_stays_put_when_documents_are_added():
    qs, doc_of = corpus_questions(n_docs=40, per_doc=5)
    more, more_doc_of = corpus_questions(n_docs=41, per_doc=5)  # one more document, d40
    for seed in range(5):
        before = {doc_of[x.segment_ids[0]] for x in split_by_document(qs, doc_of, 0.2, seed)[1]}
        after = {more_doc_of[x.segment_ids[0]] for x in split_by_document(more, more_doc_of, 0.2, seed)[1]}
        assert len(before ^ (after - {"d40"})) <= 1, seed


def test_a_few_large_documents_still_give_a_test_side_near_its_target():
    # the git set of the real-question benchmark: 6 document groups of these sizes, a 20% target of 41 questions;
    # never overshooting gave 24 or 26 for most seeds (too few for promotion.minTestQueries)
    qs, doc_of = sized_documents([2, 21, 119, 40, 19, 3])
    for seed in range(40):
        assert abs(len(split_by_document(qs, doc_of, 0.2, seed)[1]) - 41) <= 4, seed


def test_topping_up_never_takes_the_test_side_more_than_a_quarter_past_its_target():
    # groups of 27, 51, 6 and 20 questions, half to test (target 52): adding the group of 51 to a fill of 26 would
    # end 25 past the target (nearer than 26 short, but it would leave 27 questions to train on)
    qs, doc_of = sized_documents([27, 51, 6, 20])
    for seed in range(60):
        train, test = split_by_document(qs, doc_of, 0.5, seed)
        assert len(test) <= 52 + 52 // 4 and train, (seed, len(test))


def test_multi_hop_questions_and_twins_join_their_documents():
    qs, doc_of = corpus_questions(n_docs=6, per_doc=3)
    # A comparison over documents 0 and 1, and a twin pair on documents 2 and 3: each pair must stay together.
    qs.append(QuestionRecord(question_id="mh", question="difference between topic 0 and 1", segment_ids=["c0_0", "c1_0"],
                             hop_count=2))
    qs.append(q(100, "How do I do the shared thing?", "c2_1"))
    qs.append(q(101, "how do i do the shared thing", "c3_2"))
    groups = document_groups(qs, doc_of)
    assert len(groups) == 4
    for seed in range(30):
        train, test = split_by_document(qs, doc_of, 0.3, seed)
        test_docs = {doc_of[s] for x in test for s in x.segment_ids}
        assert {"d0", "d1"} <= test_docs or not {"d0", "d1"} & test_docs
        assert {"d2", "d3"} <= test_docs or not {"d2", "d3"} & test_docs
        assert test and train


def test_one_large_linked_group_never_takes_the_test_side_past_its_target():
    # 6 single documents of 1 question each, and 6 documents linked into one group of 23 questions by multi-hop
    # questions: a 20% target is 6 of 29, so the group of 23 must never be the test side while small ones fit
    qs, doc_of = corpus_questions(n_docs=12, per_doc=1)
    for i in range(17):
        qs.append(QuestionRecord(question_id=f"mh{i}", question=f"compare topics {i}",
                                 segment_ids=[f"c{6 + i % 6}_0", f"c{6 + (i + 1) % 6}_0"], hop_count=2))
    assert sorted(len(g) for g in document_groups(qs, doc_of)) == [1] * 6 + [23]
    for seed in range(20):
        train, test = split_by_document(qs, doc_of, 0.2, seed)
        assert len(test) == 6 and len(train) == 23, seed
    # every group larger than the target: the smallest goes to test alone
    big, doc_big = corpus_questions(n_docs=3, per_doc=10)
    big = big[:25]  # groups of 10, 10 and 5; a 10% target is 2
    for seed in range(10):
        assert len(split_by_document(big, doc_big, 0.1, seed)[1]) == 5


def test_document_split_refuses_a_single_document_and_unknown_chunks():
    qs, doc_of = corpus_questions(n_docs=1)
    with pytest.raises(ValueError, match="one document"):
        split_by_document(qs, doc_of, 0.2, 0)
    qs, doc_of = corpus_questions(n_docs=3)
    with pytest.raises(ValueError, match="no document"):
        split_by_document(qs + [q(999, "lost question", "nowhere")], doc_of, 0.2, 0)
