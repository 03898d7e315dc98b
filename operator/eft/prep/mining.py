"""Hard-negative mining with the base model's embeddings and a FAISS inner-product index (the recipe's rule).

For each query: score all passages, mask the labelled positives, drop every candidate scoring above
`max_score_ratio` x the query's *lowest* positive score (likely unlabelled positives), keep the `n_negatives`
best of the rest. The search is exact (flat IP index; embeddings are L2-normalised so IP = cosine), batched,
and deepened only for the queries whose first window did not yield enough negatives. The GPU index is used
where faiss-gpu and a GPU exist.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eft.retrieval.index import build_index


@dataclass
class MiningResult:
    """What `mine_hard_negatives` found for `n_queries` queries (scores are inner products = cosines)."""

    negatives: list[list[int]]        # passage row indices per query, best first, at most n_negatives each
    negative_scores: list[list[float]]  # their scores, same shape
    positive_min_scores: np.ndarray   # float32 [n_queries]: the lowest positive score of each query
    dropped_as_false_negative: int    # candidates removed by the margin rule (first search window only)
    short: int                        # queries that ended with fewer than n_negatives


def positive_scores(query_emb: np.ndarray, passage_emb: np.ndarray, positives: list[list[int]]) -> np.ndarray:
    """Lowest positive score of each query (exact dot products): float32 `[n_queries]`.

    `query_emb` float32 `[n_queries, dim]`, `passage_emb` float32 `[n_passages, dim]`, `positives[i]` the
    passage row indices of query i (at least one each).
    """
    out = np.empty(len(positives), dtype=np.float32)
    for i, pos in enumerate(positives):
        out[i] = float(np.min(passage_emb[pos] @ query_emb[i]))
    return out


def select_negatives(cand_idx: np.ndarray, cand_scores: np.ndarray, positives: list[list[int]],
                     thresholds: np.ndarray, n_negatives: int) -> tuple[list[list[int]], list[list[float]], int, list[bool]]:
    """Apply the rule to one window of candidates (rows sorted by score, descending).

    `cand_idx` int64 `[rows, width]` passage indices (-1 = no candidate) and `cand_scores` float32 `[rows, width]`
    from an index search; `positives[r]` the positive passage indices of row r; `thresholds` float32 `[rows]`:
    candidates scoring above it are taken for unlabelled positives and dropped.

    Returns negatives, their scores, how many candidates the margin dropped, and per row whether the window
    was exhausted before `n_negatives` were found (so a deeper search is needed).
    """
    rows, width = cand_idx.shape
    max_pos = max((len(p) for p in positives), default=0)
    pos = np.full((rows, max(1, max_pos)), -2, dtype=np.int64)
    for r, p in enumerate(positives):
        pos[r, :len(p)] = p
    present = cand_idx >= 0
    is_pos = (cand_idx[:, :, None] == pos[:, None, :]).any(axis=2)
    above = cand_scores > thresholds[:, None]
    valid = present & ~is_pos & ~above
    # Candidates are sorted by score, so everything above the threshold ranks before any kept negative.
    dropped = int((present & ~is_pos & above).sum())
    keep = valid & (np.cumsum(valid, axis=1) <= n_negatives)
    counts = keep.sum(axis=1)
    exhausted = ((counts < n_negatives) & present.all(axis=1)).tolist()
    negatives = [cand_idx[r, keep[r]].tolist() for r in range(rows)]
    scores = [cand_scores[r, keep[r]].tolist() for r in range(rows)]
    return negatives, scores, dropped, exhausted


def mine_hard_negatives(query_emb: np.ndarray, passage_emb: np.ndarray, positives: list[list[int]],
                        n_negatives: int = 5, max_score_ratio: float = 0.95, batch_size: int = 4096,
                        index=None, window: int | None = None) -> MiningResult:
    """Hard negatives for every query by the recipe's rule (module docstring).

    `query_emb` float32 `[n_queries, dim]` and `passage_emb` float32 `[n_passages, dim]`, L2-normalised;
    `positives[i]` the passage row indices labelled relevant for query i. A candidate is dropped when its
    score exceeds the query's lowest positive score minus `(1 - max_score_ratio)` x its magnitude (0.95 x the
    score for positive scores). Queries are searched `batch_size` at a time in a window of `window` (default
    `n_negatives + most positives + 32`) candidates, widened 4x for the queries it left short. `index`: a
    prebuilt `build_index(passage_emb)` to reuse.
    """
    n_passages = passage_emb.shape[0]
    index = index if index is not None else build_index(passage_emb)
    q = np.ascontiguousarray(query_emb, dtype=np.float32)
    pos_min = positive_scores(q, passage_emb, positives)
    # ratio x score for positive scores; for a negative positive score that would sit *above* the positive, so
    # take the same relative margin below it instead (as sentence-transformers' relative_margin does).
    thresholds = pos_min - np.abs(pos_min) * np.float32(1.0 - max_score_ratio)
    max_pos = max((len(p) for p in positives), default=1)
    base_window = window or min(n_passages, n_negatives + max_pos + 32)
    negatives: list[list[int]] = [[] for _ in positives]
    neg_scores: list[list[float]] = [[] for _ in positives]
    dropped_total = 0
    todo = np.arange(len(positives))
    k = base_window
    while len(todo):
        again: list[int] = []
        for start in range(0, len(todo), batch_size):
            rows = todo[start:start + batch_size]
            scores, idx = index.search(q[rows], k)
            sub_pos = [positives[r] for r in rows]
            negs, sc, dropped, exhausted = select_negatives(idx, scores, sub_pos, thresholds[rows], n_negatives)
            for r, n, s, ex in zip(rows, negs, sc, exhausted):
                negatives[r], neg_scores[r] = n, s
                if ex and k < n_passages:
                    again.append(r)
            if k == base_window:
                dropped_total += dropped
        if not again:
            break
        todo = np.array(again)
        k = min(n_passages, k * 4)
    short = sum(1 for n in negatives if len(n) < n_negatives)
    return MiningResult(negatives, neg_scores, pos_min, dropped_total, short)
