"""Paired comparison of the base and fine-tuned models on the same queries: per-query nDCG@k and a bootstrap
interval of the mean difference (the eval report's significance figures)."""

from __future__ import annotations

import numpy as np


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
