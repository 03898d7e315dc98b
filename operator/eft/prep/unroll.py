"""Turning mined questions into training examples in the recipe's `train.json` format.

A multi-hop question with n positives becomes n examples (one per positive, same hard negatives), since the
contrastive loss takes one positive per row; the question id gets a `_<i>` suffix per positive.
"""

from __future__ import annotations

from eft.records import QuestionRecord


def unroll(questions: list[QuestionRecord], negatives: list[list[str]]) -> list[dict]:
    """`{question_id, question, pos_doc: [{id}], neg_doc: [{id}, ...]}` per (question, positive)."""
    examples = []
    for q, negs in zip(questions, negatives):
        for i, pos in enumerate(q.segment_ids):
            qid = q.question_id if len(q.segment_ids) == 1 else f"{q.question_id}_{i}"
            examples.append({
                "question_id": qid,
                "question": q.question,
                "pos_doc": [{"id": pos}],
                "neg_doc": [{"id": n} for n in negs],
            })
    return examples
