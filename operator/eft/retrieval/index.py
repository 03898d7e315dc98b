"""The exact inner-product index every retrieval in the project searches (FAISS `IndexFlatIP`): mining in
prep, BEIR scoring in eval, export and verify. With L2-normalised embeddings, inner product = cosine."""

from __future__ import annotations

import numpy as np


def build_index(passage_emb: np.ndarray, use_gpu: bool | None = None):
    """An exact inner-product FAISS index (`IndexFlatIP`) over `passage_emb`, float32 `[n_passages, dim]`
    (copied to float32, C order). Search it with float32 `[n_queries, dim]`: `index.search(q, k)` returns scores
    float32 `[n_queries, k]` (inner products; cosine for unit vectors) and row indices int64 `[n_queries, k]`,
    best first, -1 where fewer than k rows exist. `use_gpu` None: on the GPU when faiss-gpu sees one."""
    import faiss

    emb = np.ascontiguousarray(passage_emb, dtype=np.float32)
    index = faiss.IndexFlatIP(emb.shape[1])
    if use_gpu is None:
        use_gpu = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    if use_gpu:
        res = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(res, 0, index)
    index.add(emb)
    return index
