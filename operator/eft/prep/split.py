"""Seeded train/test splits: by document (the recipe's, and the default) or by question.

- **by document**: every question belongs to the documents of its positive chunks; documents linked by a
  multi-hop question, or by twin questions, form one group, and each group goes wholly to train or to test. A
  test question is then about documents the model never trained on, which is what a user's new questions are
  like; a question-level split lets the model train on other questions about the very passage a test question
  asks for, and flatters it (on the real-question benchmark, `bench/realq_run.py`, it overstated the gain by
  tens of points).
- **by question**: twins (questions whose normalised text is equal: case, punctuation and spacing ignored) go
  to the same side, so a test question is never answered by having trained on its own copy under another id.
"""

from __future__ import annotations

from collections import defaultdict

from eft.api.spec import PrepSpec
from eft.records import QuestionRecord, normalise_question
from eft.seeding import keyed_order


def twin_groups(questions: list[QuestionRecord]) -> list[list[int]]:
    """Indices of questions grouped by normalised text, in first-seen order."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, q in enumerate(questions):
        groups[normalise_question(q.question)].append(i)
    return list(groups.values())


def _assign(groups: list[list[int]], keys: list[str], n: int, test_fraction: float, seed: int) -> set[int]:
    """Indices sent to test: whole groups in seeded order until about `test_fraction` of `n`; a group that would
    overshoot the target is passed over, the first one included, so one large group (documents linked by
    multi-hop questions) never takes the test side far past the target. When that fill stops short, the first
    passed-over group that overshoots by less than the shortfall, and by at most a quarter of the target, is
    added (a corpus of a few large documents: groups of 2, 21, 119, 40, 19 and 3 questions for a target of 41
    give 45, not 26), so the test side ends nearer the target, never more than 25% past it. Only when every
    group is larger than the target does the smallest one go to test alone (at least one group always does).

    The order is that of each group's own seeded hash of its `keys` entry (`eft.seeding.keyed_order`), not one
    shuffle of the list, so questions or documents added or removed keep the others' relative ranks: a group
    ranked well inside the test share stays in test. Groups near its edge move as the target
    (`round(n x test_fraction)`) moves with `n`, and so can the one group that tops a short fill up (removing
    one of the quickstart's 93 documents moves 1.2 others across on average, 11 at most)."""
    order = [g for g, _ in keyed_order(zip(groups, keys), seed, key=lambda gk: gk[1])]
    target = max(1, round(n * test_fraction))
    if all(len(g) > target for g in order):
        return set(min(order, key=len))
    test_idx: set[int] = set()
    passed_over = []
    for g in order:
        if len(test_idx) >= target:
            break
        if len(test_idx) + len(g) > target:
            passed_over.append(g)
            continue
        test_idx.update(g)
    short = target - len(test_idx)
    for g in passed_over:
        if len(g) - short < short and len(g) - short <= target // 4:  # nearer, and at most 25% past the target
            test_idx.update(g)
            break
    return test_idx


def _sides(questions: list[QuestionRecord], test_idx: set[int]) -> tuple[list[QuestionRecord], list[QuestionRecord]]:
    train = [q for i, q in enumerate(questions) if i not in test_idx]
    test = [q for i, q in enumerate(questions) if i in test_idx]
    return train, test


def split_questions(questions: list[QuestionRecord], test_fraction: float, seed: int
                    ) -> tuple[list[QuestionRecord], list[QuestionRecord]]:
    """(train, test) by question. The test side gets about `test_fraction` of the questions, never fewer than one.
    Raises ValueError for fewer than 2 questions or when nothing would be left to train on."""
    if len(questions) < 2:
        raise ValueError("at least 2 questions are needed for a train/test split")
    groups = twin_groups(questions)
    keys = [normalise_question(questions[g[0]].question) for g in groups]
    train, test = _sides(questions, _assign(groups, keys, len(questions), test_fraction, seed))
    if not train:
        raise ValueError("the split left no training questions (all questions are duplicates of one another)")
    return train, test


def document_groups(questions: list[QuestionRecord], doc_of_chunk: dict[str, str]) -> list[list[int]]:
    """Indices of questions grouped so that no document, and no twin pair, spans two groups (union-find over
    documents: the documents of one question's positives are joined, and so are the documents of twins)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        parent[find(a)] = find(b)

    docs_of = [[doc_of_chunk[s] for s in q.segment_ids] for q in questions]
    for docs in docs_of:
        for d in docs[1:]:
            union(docs[0], d)
    for twins in twin_groups(questions):
        for i in twins[1:]:
            union(docs_of[twins[0]][0], docs_of[i][0])
    groups: dict[str, list[int]] = defaultdict(list)
    for i, docs in enumerate(docs_of):
        groups[find(docs[0])].append(i)
    return list(groups.values())


def split_by_document(questions: list[QuestionRecord], doc_of_chunk: dict[str, str], test_fraction: float,
                      seed: int) -> tuple[list[QuestionRecord], list[QuestionRecord]]:
    """(train, test) with whole documents on each side; `doc_of_chunk` maps every positive chunk id to its
    document id. About `test_fraction` of the questions go to test (as near as whole documents allow).
    Raises ValueError when the questions come from fewer than 2 document groups, or a chunk id is unknown."""
    if len(questions) < 2:
        raise ValueError("at least 2 questions are needed for a train/test split")
    missing = sorted({s for q in questions for s in q.segment_ids if s not in doc_of_chunk})
    if missing:
        raise ValueError(f"{len(missing)} positive chunk id(s) have no document (e.g. {missing[0]})")
    groups = document_groups(questions, doc_of_chunk)
    if len(groups) < 2:
        raise ValueError("every question comes from one document (group), so a document split is impossible; "
                         "add documents or set prep.splitBy to 'question'")
    keys = [min(doc_of_chunk[s] for i in g for s in questions[i].segment_ids) for g in groups]
    return _sides(questions, _assign(groups, keys, len(questions), test_fraction, seed))


def split_for_spec(questions: list[QuestionRecord], doc_of_chunk: dict[str, str], prep: PrepSpec
                   ) -> tuple[list[QuestionRecord], list[QuestionRecord]]:
    """(train, test) as `prep` asks: `split_by_document` or `split_questions`, at `prep.test_fraction` and
    `prep.seed`. Raises ValueError as they do."""
    if prep.split_by == "document":
        return split_by_document(questions, doc_of_chunk, prep.test_fraction, prep.seed)
    return split_questions(questions, prep.test_fraction, prep.seed)
