"""Unrolling multi-hop questions into one training example per positive (the recipe's train.json format)."""

from __future__ import annotations

import json

from eft.prep.unroll import unroll
from eft.records import QuestionRecord


def test_unroll_multi_and_single_positive():
    qs = [
        QuestionRecord(question_id="qa", question="what joins A and B", segment_ids=["c1", "c2"], hop_count=2),
        QuestionRecord(question_id="qb", question="what is C", segment_ids=["c3"]),
        QuestionRecord(question_id="qc", question="three hops here", segment_ids=["c4", "c5", "c6"], hop_count=3),
    ]
    negs = [["n1", "n2", "n3", "n4"], ["n5"], []]
    ex = unroll(qs, negs)
    assert [e["question_id"] for e in ex] == ["qa_0", "qa_1", "qb", "qc_0", "qc_1", "qc_2"]
    assert ex[0] == {"question_id": "qa_0", "question": "what joins A and B", "pos_doc": [{"id": "c1"}],
                     "neg_doc": [{"id": "n1"}, {"id": "n2"}, {"id": "n3"}, {"id": "n4"}]}
    assert ex[1]["pos_doc"] == [{"id": "c2"}] and ex[1]["neg_doc"] == ex[0]["neg_doc"]
    assert ex[2] == {"question_id": "qb", "question": "what is C", "pos_doc": [{"id": "c3"}], "neg_doc": [{"id": "n5"}]}
    assert [e["pos_doc"][0]["id"] for e in ex[3:]] == ["c4", "c5", "c6"]
    assert all(e["neg_doc"] == [] for e in ex[3:])
    for e in ex:
        assert set(e) == {"question_id", "question", "pos_doc", "neg_doc"}
    assert json.loads(json.dumps(ex)) == ex  # plain JSON
    assert len({e["question_id"] for e in ex}) == len(ex)


def test_unroll_empty():
    assert unroll([], []) == []
