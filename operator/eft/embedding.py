"""Encoding queries and passages with a SentenceTransformer, applying prefixes and per-side length limits."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np

from eft.models import Prefixes


def encode_texts(model, texts: list[str], prefix: str, max_length: int, batch_size: int = 64,
                 progress=None, description: str = "texts encoded") -> np.ndarray:
    """L2-normalised embeddings of `prefix + text`: float32 `[len(texts), dim]`, row i for texts[i].

    Texts are truncated to `max_length` tokens of the model's tokenizer (the model's own limit is restored
    afterwards); `batch_size` texts go through the model at once, longest first so batches pad little.
    An empty list gives `[0, dim]`.
    """
    if not texts:
        dim = model.get_sentence_embedding_dimension() if hasattr(model, "get_sentence_embedding_dimension") else 0
        return np.zeros((0, dim or 0), dtype=np.float32)
    saved = model.max_seq_length
    model.max_seq_length = max_length
    try:
        inputs = [prefix + t for t in texts]
        # Sort by length so batches pad little; restore order afterwards.
        order = np.argsort([-len(t) for t in inputs], kind="stable")
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


def encode_queries(model, texts: list[str], prefixes: Prefixes, max_length: int, batch_size: int = 64,
                   progress=None) -> np.ndarray:
    """Query embeddings with the query prefix: float32 `[len(texts), dim]`, L2-normalised."""
    return encode_texts(model, texts, prefixes.query, max_length, batch_size, progress, "queries encoded")


def encode_passages(model, texts: list[str], prefixes: Prefixes, max_length: int, batch_size: int = 64,
                    progress=None) -> np.ndarray:
    """Passage embeddings with the passage prefix: float32 `[len(texts), dim]`, L2-normalised."""
    return encode_texts(model, texts, prefixes.passage, max_length, batch_size, progress, "passages encoded")
