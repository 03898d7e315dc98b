"""Small BEIR helpers shared by the export stage (int8 quality check) and `eft verify` (live re-evaluation).

They follow the eval stage's conventions (`eft.evaluate`): passages are `title + " " + text`, search is exact
inner product over L2-normalised embeddings (top-100), metrics are BEIR's `EvaluateRetrieval.evaluate`
flattened to lower-case `name@k` keys (`ndcg@10`, `map@100`, `recall@5`, `precision@1`).
Candidates for merging with `eft.evaluate.metrics` once both exist.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Callable

import numpy as np

#: encode(texts, kind) -> L2-normalised float32 [n, dim]; kind is "query" or "passage".
EncodeFn = Callable[[list[str], str], np.ndarray]


def load_beir(folder: str | Path, split: str = "test") -> tuple[dict[str, dict], dict[str, str], dict[str, dict[str, int]]]:
    """(corpus, queries, qrels) of a BEIR folder; only queries that have relevance judgements are kept."""
    folder = Path(folder)
    corpus: dict[str, dict] = {}
    with (folder / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                corpus[str(d["_id"])] = {"title": d.get("title") or "", "text": d.get("text") or ""}
    all_queries: dict[str, str] = {}
    with (folder / "queries.jsonl").open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                all_queries[str(d["_id"])] = d["text"]
    qrels: dict[str, dict[str, int]] = {}
    with (folder / "qrels" / f"{split}.tsv").open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        next(reader, None)  # header: query-id corpus-id score
        for row in reader:
            if len(row) >= 3:
                qrels.setdefault(row[0], {})[row[1]] = int(float(row[2]))
    queries = {q: all_queries[q] for q in qrels if q in all_queries}
    return corpus, queries, qrels


def passage_text(doc: dict) -> str:
    title = (doc.get("title") or "").strip()
    return f"{title} {doc['text']}".strip() if title else doc["text"]


def search(query_emb: np.ndarray, passage_emb: np.ndarray, query_ids: list[str], doc_ids: list[str],
           top_k: int = 100, block: int = 1024) -> dict[str, dict[str, float]]:
    """Exact inner-product top-k, BEIR results format `{qid: {doc_id: score}}`."""
    k = min(top_k, len(doc_ids))
    results: dict[str, dict[str, float]] = {}
    p = np.ascontiguousarray(passage_emb, dtype=np.float32)
    for start in range(0, len(query_ids), block):
        scores = np.asarray(query_emb[start:start + block], dtype=np.float32) @ p.T
        if k < scores.shape[1]:
            idx = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        else:
            idx = np.tile(np.arange(scores.shape[1]), (scores.shape[0], 1))
        for row, qid in enumerate(query_ids[start:start + block]):
            results[qid] = {doc_ids[j]: float(scores[row, j]) for j in idx[row]}
    return results


def beir_metrics(qrels: dict[str, dict[str, int]], results: dict[str, dict[str, float]],
                 k_values: list[int]) -> dict[str, float]:
    """BEIR's metrics as `{"ndcg@10": ..., "map@10": ..., "recall@10": ..., "precision@10": ...}`."""
    from beir.retrieval.evaluation import EvaluateRetrieval

    ndcg, _map, recall, precision = EvaluateRetrieval.evaluate(qrels, results, sorted(set(k_values)),
                                                               ignore_identical_ids=False)
    out: dict[str, float] = {}
    for table, prefix in ((ndcg, "ndcg"), (_map, "map"), (recall, "recall"), (precision, "precision")):
        for key, value in table.items():
            out[f"{prefix}@{key.split('@')[1]}"] = float(value)
    return out


def evaluate_encoder(encode: EncodeFn, beir_dir: str | Path, k_values: list[int], top_k: int = 100,
                     split: str = "test") -> dict:
    """Encode a BEIR split with `encode` and score it: `{"queries", "corpus", "metrics": {...}}`."""
    corpus, queries, qrels = load_beir(beir_dir, split)
    doc_ids = list(corpus)
    qids = list(queries)
    p_emb = encode([passage_text(corpus[d]) for d in doc_ids], "passage")
    q_emb = encode([queries[q] for q in qids], "query")
    results = search(q_emb, p_emb, qids, doc_ids, max(top_k, max(k_values)))
    return {"queries": len(qids), "corpus": len(doc_ids), "metrics": beir_metrics(qrels, results, k_values)}
