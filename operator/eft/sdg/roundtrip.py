"""Round-trip consistency filtering of generated questions (Promptagator, Dai et al. 2022, section 3.2; InPars,
Bonifacio et al. 2022): keep a question only when a retriever, given the question, ranks its own source passage
among its top `k` over the whole corpus. Questions that fail are ambiguous ("how does it work"), answered
elsewhere just as well, or not answerable from their passage: training on them teaches noise.

The retriever here is the base embedding model (the one being fine-tuned), so the filter needs no extra model.
"""

from __future__ import annotations

import numpy as np


def source_ranks(q_emb: np.ndarray, p_emb: np.ndarray, positives: list[list[int]], block: int = 1024) -> np.ndarray:
    """Best (lowest, 0-based) rank among all passages of each question's positives by inner product.

    Shapes: q_emb [n, d], p_emb [m, d] (L2-normalised float32), positives: n lists of passage indices.
    Ties count in the question's favour (a passage scoring exactly as the positive does not push it down)."""
    ranks = np.empty(len(positives), dtype=np.int64)
    for start in range(0, len(positives), block):
        scores = q_emb[start:start + block] @ p_emb.T
        for i, row in enumerate(scores):
            best = row[positives[start + i]].max()
            ranks[start + i] = int((row > best).sum())
    return ranks


def round_trip_keep(q_emb: np.ndarray, p_emb: np.ndarray, positives: list[list[int]], top_k: int) -> np.ndarray:
    """Boolean mask [n]: True where a positive of the question ranks within the top `top_k` passages."""
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1 (got {top_k})")
    return source_ranks(q_emb, p_emb, positives) < top_k
