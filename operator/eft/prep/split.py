"""Seeded train/test split by question, keeping duplicate questions ("twins") on the same side.

Two questions are twins when their normalised text is equal (case, punctuation and spacing ignored). Twins are
grouped with union-find and each group goes wholly to train or to test, so a test question can never be answered
by having trained on its own copy (with its positives) under another id.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict

from eft.records import QuestionRecord

_NON_WORD = re.compile(r"[^a-z0-9]+")


def normalise_question(text: str) -> str:
    return _NON_WORD.sub(" ", text.lower()).strip()


def twin_groups(questions: list[QuestionRecord]) -> list[list[int]]:
    """Indices of questions grouped by normalised text, in first-seen order."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, q in enumerate(questions):
        groups[normalise_question(q.question)].append(i)
    return list(groups.values())


def split_questions(questions: list[QuestionRecord], test_fraction: float, seed: int
                    ) -> tuple[list[QuestionRecord], list[QuestionRecord]]:
    """(train, test). The test side gets about `test_fraction` of the questions, never fewer than one."""
    if len(questions) < 2:
        raise ValueError("at least 2 questions are needed for a train/test split")
    groups = twin_groups(questions)
    rng = random.Random(seed)
    rng.shuffle(groups)
    target = max(1, round(len(questions) * test_fraction))
    test_idx: set[int] = set()
    for g in groups:
        if len(test_idx) >= target:
            break
        if len(test_idx) + len(g) > target and test_idx and len(groups) > 1:
            continue
        test_idx.update(g)
    train = [q for i, q in enumerate(questions) if i not in test_idx]
    test = [q for i, q in enumerate(questions) if i in test_idx]
    if not train:
        raise ValueError("the split left no training questions (all questions are duplicates of one another)")
    return train, test
