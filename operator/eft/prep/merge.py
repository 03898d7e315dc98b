"""Merging identical questions before the split: one question, the union of its labelled positives.

Generators ask the same question about different chunks ("how do I create an index" from two pages). Kept apart,
each copy is mined, trained and evaluated against its own positives only: one copy's hard negative is the
other's positive, and in the test split two copies with disjoint relevant sets cannot both score at rank 1. So
questions whose normalised text is equal (case, punctuation and spacing ignored: `normalise_question`) become
one record: the first copy's id, text and metadata, the positives of all copies in first-seen order, the
largest hop count and quality score.
"""

from __future__ import annotations

from eft.prep.split import twin_groups
from eft.records import QuestionRecord


def merge_identical_questions(questions: list[QuestionRecord]) -> tuple[list[QuestionRecord], dict]:
    """(merged questions in first-seen order, counts for the stage summary)."""
    merged: list[QuestionRecord] = []
    twins = 0
    gained = 0
    for group in twin_groups(questions):
        first = questions[group[0]]
        if len(group) == 1:
            merged.append(first)
            continue
        copies = [questions[i] for i in group]
        positives = list(dict.fromkeys(s for q in copies for s in q.segment_ids))
        twins += len(group) - 1
        gained += len(positives) - len(first.segment_ids)
        merged.append(first.model_copy(update={
            "segment_ids": positives,
            "hop_count": max(q.hop_count for q in copies),
            "quality_score": max(q.quality_score for q in copies),
        }))
    return merged, {"identicalQuestionsMerged": twins, "positivesAddedByMerging": gained}
