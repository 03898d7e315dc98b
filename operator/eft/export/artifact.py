"""The exported model folder and how to run it: metadata, tokenizer and an onnxruntime encoder.

An export folder (`DIR/export/onnx/`, `DIR/export/onnx-int8/`) holds:
- `model.onnx`: inputs `input_ids`, `attention_mask` (and `token_type_ids` where the model has them), int64
  `[batch, sequence]`; output `sentence_embedding` float32 `[batch, dim]`, pooled and L2-normalised in the graph;
- the tokenizer (`tokenizer.json` and its Hugging Face companions);
- `eft_model.json`: the metadata below (prefixes, sequence limit, dimension, input names).

This module needs only numpy, tokenizers and onnxruntime, so the server and the export stage share it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

METADATA_FILE = "eft_model.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
FORMAT = "eft-embedding/v1"

Truncate = Literal["NONE", "START", "END"]


@dataclass
class ModelMetadata:
    """What the server needs to know about an exported model, written as `eft_model.json`."""

    name: str
    dimension: int
    max_seq_length: int
    query_prefix: str = ""
    passage_prefix: str = ""
    input_names: list[str] = field(default_factory=lambda: ["input_ids", "attention_mask"])
    output_name: str = "sentence_embedding"
    pad_token_id: int = 0
    precision: str = "fp32"
    opset: int | None = None
    pooling: str | None = None
    normalized: bool = True
    format: str = FORMAT

    def to_json(self) -> dict:
        d = asdict(self)
        return {
            "format": d.pop("format"),
            "name": d.pop("name"),
            "dimension": d.pop("dimension"),
            "maxSeqLength": d.pop("max_seq_length"),
            "prefixes": {"query": d.pop("query_prefix"), "passage": d.pop("passage_prefix")},
            "inputNames": d.pop("input_names"),
            "outputName": d.pop("output_name"),
            "padTokenId": d.pop("pad_token_id"),
            **d,
        }

    @classmethod
    def from_json(cls, d: dict) -> "ModelMetadata":
        prefixes = d.get("prefixes") or {}
        return cls(
            name=d["name"], dimension=int(d["dimension"]), max_seq_length=int(d["maxSeqLength"]),
            query_prefix=prefixes.get("query") or "", passage_prefix=prefixes.get("passage") or "",
            input_names=list(d.get("inputNames") or ["input_ids", "attention_mask"]),
            output_name=d.get("outputName", "sentence_embedding"), pad_token_id=int(d.get("padTokenId", 0)),
            precision=d.get("precision", "fp32"), opset=d.get("opset"), pooling=d.get("pooling"),
            normalized=bool(d.get("normalized", True)), format=d.get("format", FORMAT),
        )

    def save(self, folder: Path) -> None:
        (Path(folder) / METADATA_FILE).write_text(json.dumps(self.to_json(), indent=2), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> "ModelMetadata":
        return cls.from_json(json.loads((Path(folder) / METADATA_FILE).read_text(encoding="utf-8")))


class InputTooLong(ValueError):
    """An input exceeds the model's sequence limit and truncation is NONE."""

    def __init__(self, index: int, tokens: int, limit: int):
        self.index, self.tokens, self.limit = index, tokens, limit
        super().__init__(f"input[{index}] has {tokens} tokens, more than the model's limit of {limit} "
                         f"(send truncate=END or START to cut it)")


@dataclass
class Batch:
    input_ids: np.ndarray
    attention_mask: np.ndarray

    def feed(self, input_names: Sequence[str]) -> dict[str, np.ndarray]:
        out = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if "token_type_ids" in input_names:
            out["token_type_ids"] = np.zeros_like(self.input_ids)
        return {k: out[k] for k in input_names}


class TextTokenizer:
    """A fast (Rust) tokenizer with the three truncation modes of the NIM API and padding to numpy."""

    def __init__(self, path: str | Path, max_length: int, pad_token_id: int = 0):
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(path))
        self.tok.no_truncation()
        self.tok.no_padding()
        self.max_length = int(max_length)
        self.pad_token_id = int(pad_token_id)
        self.n_special = self.tok.num_special_tokens_to_add(False)
        self.budget = max(1, self.max_length - self.n_special)

    def encode(self, texts: Sequence[str], truncate: Truncate = "END") -> list[list[int]]:
        """Token ids (with special tokens) of each text, cut to the sequence limit as `truncate` says.

        Raises `InputTooLong` for the first text over the limit when `truncate` is NONE.
        """
        encs = self.tok.encode_batch(list(texts), add_special_tokens=False)
        out: list[list[int]] = []
        for i, enc in enumerate(encs):
            if len(enc.ids) > self.budget:
                if truncate == "NONE":
                    raise InputTooLong(i, len(enc.ids) + self.n_special, self.max_length)
                enc.truncate(self.budget, 0, "left" if truncate == "START" else "right")
            out.append(self.tok.post_process(enc).ids)
        return out

    def pad(self, seqs: Sequence[Sequence[int]]) -> Batch:
        width = max(len(s) for s in seqs)
        ids = np.full((len(seqs), width), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(seqs), width), dtype=np.int64)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = s
            mask[i, : len(s)] = 1
        return Batch(ids, mask)


def cpu_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def ort_providers(prefer_gpu: bool = True) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if prefer_gpu and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def ort_session(model_path: str | Path, threads: int | None = None, prefer_gpu: bool = True):
    """An inference session tuned for serving: all graph optimisations, intra-op threads = cores, no spinning."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or cpu_threads()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Spinning threads would take the CPU from the event loop between batches.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return ort.InferenceSession(str(model_path), so, providers=ort_providers(prefer_gpu))


class OnnxEncoder:
    """Tokenise and run an exported ONNX model; embeddings come back L2-normalised (pooling is in the graph)."""

    def __init__(self, folder: str | Path, threads: int | None = None, prefer_gpu: bool = True):
        self.folder = Path(folder)
        self.meta = ModelMetadata.load(self.folder)
        self.tokenizer = TextTokenizer(self.folder / TOKENIZER_FILE, self.meta.max_seq_length, self.meta.pad_token_id)
        self.session = ort_session(self.folder / MODEL_FILE, threads, prefer_gpu)
        self.providers = self.session.get_providers()

    def run_batch(self, batch: Batch) -> np.ndarray:
        out = self.session.run([self.meta.output_name], batch.feed(self.meta.input_names))[0]
        return np.asarray(out, dtype=np.float32)

    def encode(self, texts: Sequence[str], prefix: str = "", batch_size: int = 32,
               truncate: Truncate = "END") -> np.ndarray:
        """Embeddings of `prefix + text`, in batches sorted by length (order restored)."""
        if not texts:
            return np.zeros((0, self.meta.dimension), dtype=np.float32)
        seqs = self.tokenizer.encode([prefix + t for t in texts], truncate=truncate)
        order = np.argsort([len(s) for s in seqs], kind="stable")
        out = np.empty((len(seqs), self.meta.dimension), dtype=np.float32)
        for start in range(0, len(seqs), batch_size):
            sel = order[start:start + batch_size]
            out[sel] = self.run_batch(self.tokenizer.pad([seqs[i] for i in sel]))
        return out
