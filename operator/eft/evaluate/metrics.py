"""Dense retrieval with FAISS and BEIR's metrics (nDCG, MAP, Recall, Precision at k) as flat `name@k` dicts."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np


def retrieve(query_emb: np.ndarray, passage_emb: np.ndarray, query_ids: list[str], doc_ids: list[str],
             top_k: int) -> dict[str, dict[str, float]]:
    """BEIR-style results `{query_id: {doc_id: score}}` of an exact inner-product search."""
    from eft.prep.mining import build_index

    k = min(top_k, len(doc_ids))
    index = build_index(passage_emb)
    scores, idx = index.search(np.ascontiguousarray(query_emb, dtype=np.float32), k)
    return {
        qid: {doc_ids[j]: float(s) for j, s in zip(row_idx, row_sc) if j >= 0}
        for qid, row_idx, row_sc in zip(query_ids, idx, scores)
    }


def beir_metrics(qrels: dict[str, dict[str, int]], results: dict[str, dict[str, float]],
                 k_values: list[int]) -> dict[str, float]:
    """BEIR's EvaluateRetrieval.evaluate, flattened to lower-case keys like `ndcg@10`, `map@10`, `recall@100`."""
    from beir.retrieval.evaluation import EvaluateRetrieval

    ndcg, _map, recall, precision = EvaluateRetrieval.evaluate(qrels, results, k_values, ignore_identical_ids=False)
    out: dict[str, float] = {}
    for table, prefix in ((ndcg, "ndcg"), (_map, "map"), (recall, "recall"), (precision, "precision")):
        for key, value in table.items():
            out[f"{prefix}@{key.split('@')[1]}"] = float(value)
    return out


def per_query_ndcg(qrels: dict[str, dict[str, int]], results: dict[str, dict[str, float]], k: int) -> dict[str, float]:
    """nDCG@k of each query (pytrec_eval, the evaluator BEIR uses), for paired comparisons."""
    import pytrec_eval

    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {f"ndcg_cut.{k}"})
    scores = evaluator.evaluate(results)
    return {qid: s[f"ndcg_cut_{k}"] for qid, s in scores.items()}


def paired_bootstrap(base: dict[str, float], tuned: dict[str, float], samples: int = 2000, seed: int = 0) -> dict:
    """Mean per-query difference (tuned - base) with a 95% bootstrap interval."""
    ids = sorted(set(base) & set(tuned))
    if not ids:
        return {"meanDelta": 0.0, "ci95": [0.0, 0.0], "queries": 0}
    d = np.array([tuned[i] - base[i] for i in ids])
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(samples, len(d)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"meanDelta": round(float(d.mean()), 5), "ci95": [round(float(lo), 5), round(float(hi), 5)],
            "queries": len(ids), "better": int((d > 0).sum()), "worse": int((d < 0).sum())}


#: encode(texts, kind) -> L2-normalised float32 [n, dim]; kind is "query" or "passage".
EncodeFn = Callable[[list[str], str], np.ndarray]


def evaluate_encoder(encode: EncodeFn, beir_dir: str | Path, k_values: list[int], top_k: int = 100,
                     split: str = "test") -> dict:
    """Encode a BEIR split with any encoder (a model, an ONNX graph, a live endpoint) and score it:
    `{"queries", "corpus", "metrics": {...}, "results": {...}}`. Used by eval, export (int8 check) and verify."""
    from eft.prep.beir_io import load_beir, passage_text

    corpus, queries, qrels = load_beir(Path(beir_dir), split)
    doc_ids = list(corpus)
    qids = [q for q in queries if q in qrels]
    p_emb = encode([passage_text(corpus[d]) for d in doc_ids], "passage")
    q_emb = encode([queries[q] for q in qids], "query")
    results = retrieve(q_emb, p_emb, qids, doc_ids, max(top_k, max(k_values)))
    qrels = {q: qrels[q] for q in qids}
    return {"queries": len(qids), "corpus": len(doc_ids), "metrics": beir_metrics(qrels, results, k_values),
            "results": results, "qrels": qrels}
