"""Encoding queries and passages with a SentenceTransformer, applying prefixes and per-side length limits,
through the workdir's embedding cache (`eft.embedding_cache`) so a corpus is encoded once per model."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np

from eft.embedding_cache import EmbeddingCache, EncodeSettings, sentence_transformer_identity, truncation_side
from eft.models import Prefixes


def encode_texts(model, texts: list[str], prefix: str, max_length: int, batch_size: int = 64,
                 progress=None, description: str = "texts encoded") -> np.ndarray:
    """L2-normalised float32 embeddings [len(texts), dim] of `prefix + text`, cut at `max_length` tokens
    (on the side the tokenizer cuts, its `truncation_side`: the end by default), encoded in batches with
    progress.

    Texts are batched longest first, ties broken by the text itself, so the batches (and so the padding, which
    moves float results in the last bits) depend only on the set of texts, not on their order: the same set
    encoded by two stages gives identical vectors. Row i is for texts[i]; an empty list gives `[0, dim]`.
    """
    if not texts:
        dim = model.get_sentence_embedding_dimension() if hasattr(model, "get_sentence_embedding_dimension") else 0
        return np.zeros((0, dim or 0), dtype=np.float32)
    saved = model.max_seq_length
    model.max_seq_length = max_length
    try:
        inputs = [prefix + t for t in texts]
        order = np.array(sorted(range(len(inputs)), key=lambda i: (-len(inputs[i]), inputs[i])), dtype=np.int64)
        parts = []
        step = batch_size * 8
        with progress.task(description, total=len(inputs)) if progress is not None else nullcontext() as task:
            for start in range(0, len(inputs), step):
                sel = order[start:start + step]
                emb = model.encode([inputs[i] for i in sel], batch_size=batch_size, normalize_embeddings=True,
                                   convert_to_numpy=True, show_progress_bar=False)
                parts.append(np.asarray(emb, dtype=np.float32))
                if task is not None:
                    task.advance(len(sel))
        sorted_emb = np.concatenate(parts)
        out = np.empty_like(sorted_emb)
        out[order] = sorted_emb
        return out
    finally:
        model.max_seq_length = saved


class ModelEncoder:
    """A SentenceTransformer with the base model's prefixes and per-side length limits, behind the cache.

    `encoder(texts, kind)` (kind "query" or "passage") is an `eft.retrieval.scoring.EncodeFn`; `label` names the
    model in the cache's counts ("base", "finetuned"). With `cache=None` every call encodes.
    """

    def __init__(self, model, prefixes: Prefixes, max_query_length: int, max_passage_length: int,
                 batch_size: int = 64, cache: EmbeddingCache | None = None, progress=None, label: str = "model"):
        self.model, self.prefixes, self.batch_size = model, prefixes, batch_size
        self.max_length = {"query": max_query_length, "passage": max_passage_length}
        self.cache = cache or EmbeddingCache(None)
        self.progress, self.label = progress, label
        self._identity = sentence_transformer_identity(model) if self.cache.enabled else ("-", "-")

    def settings(self, kind: str) -> EncodeSettings:
        prefix = self.prefixes.query if kind == "query" else self.prefixes.passage
        return EncodeSettings(model=self._identity[0], pooling=self._identity[1], prefix=prefix,
                              max_length=self.max_length[kind], truncation=truncation_side(self.model))

    def __call__(self, texts: list[str], kind: str) -> np.ndarray:
        if kind not in self.max_length:
            raise ValueError(f"kind must be 'query' or 'passage', not {kind!r}")
        s = self.settings(kind)

        def compute(missing: list[str]) -> np.ndarray:
            return encode_texts(self.model, missing, s.prefix, s.max_length, self.batch_size, self.progress,
                                f"{self.label}: {'queries' if kind == 'query' else 'passages'} encoded")

        return self.cache.encode(s, texts, compute, f"{self.label}/{kind}")


def encode_queries(model, texts: list[str], prefixes: Prefixes, max_length: int, batch_size: int = 64,
                   progress=None) -> np.ndarray:
    """Query embeddings with the query prefix: float32 `[len(texts), dim]`, L2-normalised."""
    return encode_texts(model, texts, prefixes.query, max_length, batch_size, progress, "queries encoded")


def encode_passages(model, texts: list[str], prefixes: Prefixes, max_length: int, batch_size: int = 64,
                    progress=None) -> np.ndarray:
    """Passage embeddings with the passage prefix: float32 `[len(texts), dim]`, L2-normalised."""
    return encode_texts(model, texts, prefixes.passage, max_length, batch_size, progress, "passages encoded")
