"""Hard-negative mining: the recipe's margin rule on crafted scores, and exact agreement with a brute-force
numpy reference on random data (including the deepening path)."""

from __future__ import annotations

import numpy as np
import pytest

from eft.prep.mining import mine_hard_negatives, positive_scores, select_negatives


def crafted(scores: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """A query e0 and one passage per score s: s*e0 + sqrt(1-s^2)*e_k (each on its own axis), so q.p == s."""
    dim = len(scores) + 1
    q = np.zeros((1, dim), dtype=np.float32)
    q[0, 0] = 1.0
    p = np.zeros((len(scores), dim), dtype=np.float32)
    for k, s in enumerate(scores):
        p[k, 0] = s
        p[k, k + 1] = np.sqrt(1.0 - s * s)
    return q, p


def test_crafted_margin_case():
    # 0: positive 0.80; 1: near-copy 0.79 (> 0.95 x 0.80 = 0.76, a likely unlabelled positive); 2: 0.74 (kept)
    scores = [0.80, 0.79, 0.74, 0.50, 0.45, 0.30, 0.20, 0.10, 0.05, 0.77, 0.7601]
    q, p = crafted(scores)
    res = mine_hard_negatives(q, p, [[0]], n_negatives=5, max_score_ratio=0.95)
    assert res.negatives == [[2, 3, 4, 5, 6]]
    assert res.negative_scores[0] == pytest.approx([0.74, 0.50, 0.45, 0.30, 0.20], abs=1e-6)
    assert res.positive_min_scores[0] == pytest.approx(0.80, abs=1e-6)
    assert res.dropped_as_false_negative == 3  # 0.79, 0.77, 0.7601
    assert res.short == 0


def test_positives_are_never_negatives_and_order_is_by_score():
    # The positive is not the top-scoring passage here; it must still be skipped.
    scores = [0.30, 0.20, 0.25, 0.10, 0.27, 0.15, 0.05]
    q, p = crafted(scores)
    res = mine_hard_negatives(q, p, [[2]], n_negatives=3, max_score_ratio=1.0)
    assert 2 not in res.negatives[0]
    # ratio 1.0: threshold 0.25, so 0.30 and 0.27 are dropped as possible false negatives.
    assert res.negatives == [[1, 5, 3]]  # 0.20, 0.15, 0.10
    assert res.negative_scores[0] == sorted(res.negative_scores[0], reverse=True)


def test_multi_positive_uses_the_lowest_positive_score():
    # positives 0.90 and 0.60: threshold 0.95 x 0.60 = 0.57, not 0.95 x 0.90 = 0.855
    scores = [0.90, 0.60, 0.80, 0.58, 0.56, 0.40, 0.30, 0.20]
    q, p = crafted(scores)
    res = mine_hard_negatives(q, p, [[0, 1]], n_negatives=3, max_score_ratio=0.95)
    assert res.negatives == [[4, 5, 6]]
    assert res.positive_min_scores[0] == pytest.approx(0.60, abs=1e-6)
    assert positive_scores(q, p, [[1, 0]])[0] == pytest.approx(0.60, abs=1e-6)


def test_deepening_finds_negatives_behind_many_dropped_candidates():
    # 150 near-copies of the positive above the threshold: the first window (n + positives + 32) holds only
    # dropped candidates, so the search must go deeper.
    near = list(np.linspace(0.795, 0.77, 150))
    scores = [0.80] + near + [0.70, 0.65, 0.60, 0.55, 0.50, 0.45, 0.40]
    q, p = crafted(scores)
    res = mine_hard_negatives(q, p, [[0]], n_negatives=5, max_score_ratio=0.95)
    assert res.negatives == [[151, 152, 153, 154, 155]]
    assert res.short == 0
    # Without enough candidates under the threshold, the query ends short instead of taking near-copies.
    res = mine_hard_negatives(q[:, :], p[:153], [[0]], n_negatives=5, max_score_ratio=0.95)
    assert res.negatives == [[151, 152]] and res.short == 1


def test_negative_positive_score_keeps_the_margin_below_the_positive():
    # positive -0.20: 0.95 x -0.20 = -0.19 would admit a candidate at -0.195 that outscores the positive.
    scores = [-0.20, -0.195, -0.205, -0.215, -0.30]
    q, p = crafted(scores)
    res = mine_hard_negatives(q, p, [[0]], n_negatives=2, max_score_ratio=0.95)
    assert res.negatives == [[3, 4]]  # threshold -0.21: -0.195 and -0.205 are too close
    assert max(res.negative_scores[0]) < -0.20


def test_select_negatives_marks_exhausted_windows():
    idx = np.array([[0, 1, 2, 3], [4, 5, 6, -1]])
    sc = np.array([[0.9, 0.8, 0.5, 0.4], [0.7, 0.6, 0.5, -1.0]], dtype=np.float32)
    negs, scores, dropped, exhausted = select_negatives(idx, sc, [[0], [4]], np.array([0.6, 0.9]), 3)
    assert negs == [[2, 3], [5, 6]]
    assert dropped == 1
    # Row 0 filled the window with real candidates and still lacks one: search deeper. Row 1 ran out of passages.
    assert exhausted == [True, False]


def brute_force(q: np.ndarray, p: np.ndarray, positives: list[list[int]], n: int, ratio: float) -> list[list[int]]:
    s = q.astype(np.float64) @ p.astype(np.float64).T
    out = []
    for i, pos in enumerate(positives):
        pmin = s[i, pos].min()
        thr = pmin - abs(pmin) * (1.0 - ratio)
        order = np.argsort(-s[i], kind="stable")
        out.append([int(j) for j in order if j not in pos and s[i, j] <= thr][:n])
    return out


def clustered_data(n_queries=200, n_passages=3000, dim=32, seed=0):
    """Passages in clusters of 10 with varying noise; each query is a noisy cluster centre whose positives are
    1-3 members of its cluster, so other members often fall above the margin and must be dropped."""
    rng = np.random.default_rng(seed)
    n_clusters = n_passages // 10
    centres = rng.normal(size=(n_clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    noise = rng.uniform(0.05, 0.6, size=(n_passages, 1))
    p = np.repeat(centres, 10, axis=0) + noise * rng.normal(size=(n_passages, dim)) / np.sqrt(dim)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    cl = rng.integers(0, n_clusters, size=n_queries)
    q = centres[cl] + 0.3 * rng.normal(size=(n_queries, dim)) / np.sqrt(dim)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    positives = [sorted(rng.choice(10, size=rng.integers(1, 4), replace=False) + 10 * c) for c in cl]
    positives = [[int(j) for j in pos] for pos in positives]
    return q.astype(np.float32), p.astype(np.float32), positives


@pytest.mark.parametrize("window", [None, 6])
def test_matches_brute_force_reference(window):
    q, p, positives = clustered_data()
    ref = brute_force(q, p, positives, 5, 0.95)
    res = mine_hard_negatives(q, p, positives, n_negatives=5, max_score_ratio=0.95, batch_size=64, window=window)
    assert res.negatives == ref
    assert res.short == 0
    assert res.dropped_as_false_negative > 50  # the data really exercises the margin rule
    for i, (negs, sc) in enumerate(zip(res.negatives, res.negative_scores)):
        assert sc == sorted(sc, reverse=True)
        assert not set(negs) & set(positives[i])
        assert max(sc) <= 0.95 * res.positive_min_scores[i] + 1e-6
        np.testing.assert_allclose(sc, p[negs] @ q[i], atol=1e-5)


def test_brute_force_agreement_with_other_settings():
    q, p, positives = clustered_data(n_queries=100, n_passages=2000, seed=3)
    for n, ratio in ((1, 0.9), (10, 0.99), (3, 0.5)):
        res = mine_hard_negatives(q, p, positives, n_negatives=n, max_score_ratio=ratio, window=4)
        assert res.negatives == brute_force(q, p, positives, n, ratio), (n, ratio)
