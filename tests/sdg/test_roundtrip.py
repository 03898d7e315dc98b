"""Round-trip consistency filtering: ranks of a question's own passages, and the keep mask."""

from __future__ import annotations

import numpy as np
import pytest

from eft.sdg.roundtrip import round_trip_keep, source_ranks


def unit(rows):
    a = np.asarray(rows, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_ranks_and_mask():
    p = unit([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])
    q = unit([[1, 0.1, 0],    # passage 0 first
              [1, 0.9, 0],    # passage 3 first, passage 1 third
              [0, 0, 1]])     # passage 2 first
    ranks = source_ranks(q, p, [[0], [1], [0, 2]])
    assert ranks.tolist() == [0, 2, 0]  # the best rank over the positives: passage 2 is first for the third
    assert source_ranks(q, p, [[0], [1], [0]]).tolist() == [0, 2, 1]
    assert round_trip_keep(q, p, [[0], [1], [0, 2]], top_k=1).tolist() == [True, False, True]
    assert round_trip_keep(q, p, [[0], [1], [0, 2]], top_k=3).tolist() == [True, True, True]
    with pytest.raises(ValueError, match="top_k"):
        round_trip_keep(q, p, [[0]], top_k=0)


def test_blocks_give_the_same_ranks():
    rng = np.random.default_rng(0)
    p, q = unit(rng.normal(size=(50, 8))), unit(rng.normal(size=(30, 8)))
    pos = [[int(i) % 50] for i in range(30)]
    assert source_ranks(q, p, pos, block=7).tolist() == source_ranks(q, p, pos, block=1024).tolist()
    rows = q @ p.T
    brute = [int((rows[i] > rows[i][pos[i][0]]).sum()) for i in range(30)]
    assert source_ranks(q, p, pos).tolist() == brute
