"""Dense retrieval with FAISS and BEIR's metrics (nDCG, MAP, Recall, Precision at k) as flat `name@k` dicts:
the one scoring path of eval, export's int8 check and verify."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np


def retrieve(query_emb: np.ndarray, passage_emb: np.ndarray, query_ids: list[str], doc_ids: list[str],
             top_k: int) -> dict[str, dict[str, float]]:
    """BEIR-style results `{query_id: {doc_id: score}}` of an exact inner-product search.

    `query_emb` float32 `[n_queries, dim]` in the order of `query_ids`, `passage_emb` float32 `[n_passages, dim]`
    in the order of `doc_ids`, both L2-normalised (scores are then cosines in [-1, 1]); each query keeps its
    `min(top_k, n_passages)` best passages.
    """
    from eft.retrieval.index import build_index

    k = min(top_k, len(doc_ids))
    index = build_index(passage_emb)
    scores, idx = index.search(np.ascontiguousarray(query_emb, dtype=np.float32), k)
    return {
        qid: {doc_ids[j]: float(s) for j, s in zip(row_idx, row_sc) if j >= 0}
        for qid, row_idx, row_sc in zip(query_ids, idx, scores)
    }


def beir_metrics(qrels: dict[str, dict[str, int]], results: dict[str, dict[str, float]],
                 k_values: list[int], ignore_identical_ids: bool = False) -> dict[str, float]:
    """BEIR's EvaluateRetrieval.evaluate, flattened to lower-case keys like `ndcg@10`, `map@10`, `recall@100`.

    `qrels` `{query_id: {doc_id: relevance}}` (relevance > 0 counts), `results` `{query_id: {doc_id: score}}`;
    every value in the output is a mean over the queries in [0, 1] (Thakur et al., BEIR, 2021).
    `ignore_identical_ids`: BEIR's switch that discards a retrieved document whose id is the query's own id.
    """
    from beir.retrieval.evaluation import EvaluateRetrieval

    ndcg, _map, recall, precision = EvaluateRetrieval.evaluate(qrels, results, k_values,
                                                               ignore_identical_ids=ignore_identical_ids)
    out: dict[str, float] = {}
    for table, prefix in ((ndcg, "ndcg"), (_map, "map"), (recall, "recall"), (precision, "precision")):
        for key, value in table.items():
            out[f"{prefix}@{key.split('@')[1]}"] = float(value)
    return out


#: encode(texts, kind) -> L2-normalised float32 [n, dim]; kind is "query" or "passage".
EncodeFn = Callable[[list[str], str], np.ndarray]


def _retrieve_excluding_self(q_emb: np.ndarray, p_emb: np.ndarray, qids: list[str], doc_ids: list[str], k: int,
                             ignore_identical_ids: bool) -> dict[str, dict[str, float]]:
    """Top-k per query; with `ignore_identical_ids` one extra is searched and the query's own id dropped
    (as BEIR's exact search does), so every query still gets k candidates."""
    if not ignore_identical_ids:
        return retrieve(q_emb, p_emb, qids, doc_ids, k)
    results = retrieve(q_emb, p_emb, qids, doc_ids, k + 1)
    return {q: dict(list((d, s) for d, s in hits.items() if d != q)[:k]) for q, hits in results.items()}


def _truncated(emb: np.ndarray, dim: int) -> np.ndarray:
    out = np.ascontiguousarray(emb[:, :dim], dtype=np.float32)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def evaluate_encoder(encode: EncodeFn, beir_dir: str | Path, k_values: list[int], top_k: int = 100,
                     split: str = "test", ignore_identical_ids: bool = False,
                     dimensions: list[int] | None = None) -> dict:
    """Encode a BEIR split with any encoder (a model, an ONNX graph, a live endpoint) and score it:
    `{"queries", "corpus", "metrics": {...}, "results": {...}, "qrels": {...}}`, plus `"byDimension":
    {width: nDCG@10}` for each of `dimensions` (embeddings cut to that width and re-normalised, as a Matryoshka
    model is served). Used by eval, export (int8 check) and verify."""
    from eft.retrieval.beir import load_beir, passage_text

    corpus, queries, qrels = load_beir(Path(beir_dir), split)
    doc_ids = list(corpus)
    qids = [q for q in queries if q in qrels]
    p_emb = encode([passage_text(corpus[d]) for d in doc_ids], "passage")
    q_emb = encode([queries[q] for q in qids], "query")
    k = max(top_k, max(k_values))
    results = _retrieve_excluding_self(q_emb, p_emb, qids, doc_ids, k, ignore_identical_ids)
    qrels = {q: qrels[q] for q in qids}
    out = {"queries": len(qids), "corpus": len(doc_ids),
           "metrics": beir_metrics(qrels, results, k_values, ignore_identical_ids),
           "results": results, "qrels": qrels}
    if dimensions:
        out["byDimension"] = {}
        for dim in sorted(d for d in dimensions if d < q_emb.shape[1]):
            cut = _retrieve_excluding_self(_truncated(q_emb, dim), _truncated(p_emb, dim), qids, doc_ids, 10,
                                           ignore_identical_ids)
            out["byDimension"][dim] = beir_metrics(qrels, cut, [10], ignore_identical_ids)["ndcg@10"]
        full = out["metrics"].get("ndcg@10")
        if full is None:
            full = beir_metrics(qrels, results, [10], ignore_identical_ids)["ndcg@10"]
        out["byDimension"][int(q_emb.shape[1])] = full
    return out
