"""Identical questions merged before the split: positives united, the union masked in mining, one query in the
BEIR test split with all its relevant passages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model_workspace import FACTS, QUESTIONS, resource
from eft.prep.merge import merge_identical_questions
from eft.prep.mining import mine_hard_negatives
from eft.records import Chunk, QuestionRecord, write_jsonl


def q(qid: str, text: str, *segs: str, hops: int = 1) -> QuestionRecord:
    return QuestionRecord(question_id=qid, question=text, segment_ids=list(segs), hop_count=hops)


# ----------------------------------------------------------------------------- identical questions
def test_identical_questions_are_merged_with_their_positives_united():
    qs = [q("q1", "How do I create an index?", "c1"), q("q2", "what is a view", "c2"),
          q("q3", "how do I create an  INDEX", "c3"), q("q4", "How do I create an index", "c1", "c4", hops=2)]
    merged, stats = merge_identical_questions(qs)
    assert [(m.question_id, m.segment_ids, m.hop_count) for m in merged] == [
        ("q1", ["c1", "c3", "c4"], 2), ("q2", ["c2"], 1)]
    assert stats == {"identicalQuestionsMerged": 2, "positivesAddedByMerging": 2}


def test_mining_masks_the_union_of_a_merged_questions_positives():
    # Query 0 sits between passages 0 and 1; without merging, its twin's positive (1) is its best "negative".
    rng = np.random.default_rng(0)
    p = rng.normal(size=(40, 16)).astype(np.float32)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    q0 = p[0] + p[1]
    q0 /= np.linalg.norm(q0)
    apart = mine_hard_negatives(q0[None], p, [[0]], n_negatives=5, max_score_ratio=1.5)
    assert 1 in apart.negatives[0]
    merged, _ = merge_identical_questions([q("a", "same question", "0"), q("b", "Same question?", "1")])
    positives = [[int(s) for s in merged[0].segment_ids]]
    together = mine_hard_negatives(q0[None], p, positives, n_negatives=5, max_score_ratio=1.5)
    assert not {0, 1} & set(together.negatives[0]) and len(together.negatives[0]) == 5


def _sdg_outputs(root: Path) -> list[QuestionRecord]:
    """An sdg folder over the FACTS passages, with identical questions about different passages."""
    chunks = [Chunk(id=f"c{i}", text=f"{t} {x}.", source="facts.txt", headings=[t], doc_id="facts", position=i)
              for i, (t, x) in enumerate(FACTS)]
    questions = [q(f"q{i}", text, f"c{i}") for i, text in enumerate(QUESTIONS)]
    # Twins: the same question generated from two passages (the second copy under another id).
    questions += [q("t1", "Which animal lives in the desert?", "c2"), q("t2", "which animal lives in the desert", "c9"),
                  q("t3", "WHICH animal lives in the desert!", "c1")]
    (root / "sdg").mkdir(parents=True)
    write_jsonl(root / "sdg" / "chunks.jsonl", chunks)
    write_jsonl(root / "sdg" / "questions.jsonl", questions)
    return questions


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_prep_merges_twins_before_the_split_and_never_mines_their_positives(tmp_path, seed):
    from eft.hashing import plan_hashes
    from eft.prep.stage import run
    from eft.stages.contract import StageContext, execute_stage

    _sdg_outputs(tmp_path)
    # One document ("facts"): the question-level split is the one under test here.
    res = resource(tmp_path, prep={"seed": seed, "testFraction": 0.2, "splitBy": "question"})
    hashes = plan_hashes(res.spec)
    (tmp_path / "sdg" / "_SUCCESS.json").write_text(json.dumps({"stage": "sdg", "configHash": hashes["sdg"],
                                                                "summary": {}}))
    ctx = StageContext(resource=res, workdir=tmp_path, name="prep", config_hash=hashes["prep"], hashes=hashes)
    outcome = execute_stage(run, ctx)
    assert outcome.summary["identicalQuestionsMerged"] == 2
    union = {"c2", "c9", "c1"}
    train = [json.loads(x) for x in (tmp_path / "prep" / "train_questions.jsonl").read_text().splitlines()]
    test = [json.loads(x) for x in (tmp_path / "prep" / "test_questions.jsonl").read_text().splitlines()]
    twins = [r for r in train + test if r["question"].lower().startswith("which animal lives in the desert")]
    assert len(twins) == 1 and set(twins[0]["segment_ids"]) == union
    if twins[0] in test:  # one query in the BEIR split, all three passages relevant
        qrels = (tmp_path / "prep" / "beir" / "qrels" / "test.tsv").read_text().splitlines()[1:]
        assert {line.split("\t")[1] for line in qrels if line.startswith(twins[0]["question_id"] + "\t")} == union
    else:
        examples = json.loads((tmp_path / "prep" / "train.json").read_text())
        mine = [e for e in examples if e["question"] == twins[0]["question"]]
        assert {e["pos_doc"][0]["id"] for e in mine} == union
        assert all(not union & {n["id"] for n in e["neg_doc"]} for e in mine)
