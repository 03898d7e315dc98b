"""The exported model folder and how to run it: metadata, tokenizer and an onnxruntime encoder.

An export folder (`DIR/export/onnx/`, `DIR/export/onnx-int8/`; `DIR/export/openvino-int8/` holds an OpenVINO
`model.xml` + `model.bin` in place of `model.onnx`, see `eft.export.openvino`) holds:
- `model.onnx`: inputs `input_ids`, `attention_mask` (and `token_type_ids` where the model has them), int64
  `[batch, sequence]`; output `sentence_embedding` float32 `[batch, dim]`, pooled and L2-normalised in the graph;
- the tokenizer (`tokenizer.json` and its Hugging Face companions);
- `eft_model.json`: the metadata below (prefixes, sequence limit, dimension and the Matryoshka widths it was
  trained for, input names).

This module needs only numpy, tokenizers and onnxruntime, so the server and the export stage share it.
"""

from __future__ import annotations

import json
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
    #: The longest sequence the network itself can read (position embeddings); None = `max_seq_length`. The
    #: query/passage prefix may go beyond `max_seq_length` up to this, so users keep the whole text limit.
    max_positions: int | None = None
    #: Widths the model was trained to serve (Matryoshka); always includes `dimension`. Empty = only `dimension`.
    supported_dimensions: list[int] = field(default_factory=list)
    format: str = FORMAT

    def __post_init__(self) -> None:
        self.supported_dimensions = sorted({int(d) for d in self.supported_dimensions if 0 < int(d) <= self.dimension}
                                           | {int(self.dimension)})

    @property
    def asymmetric(self) -> bool:
        """True when queries and passages are encoded differently (distinct prefixes)."""
        return self.query_prefix != self.passage_prefix

    def prefix_for(self, input_type: str | None) -> str:
        """The instruction put before a text: the query or passage prefix for that `input_type`; without one,
        the prefix both share when they are the same (a symmetric model with one instruction, as in training and
        eval), else none."""
        if input_type == "query":
            return self.query_prefix
        if input_type == "passage":
            return self.passage_prefix
        return "" if self.asymmetric else self.query_prefix

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
            "supportedDimensions": d.pop("supported_dimensions"),
            "maxPositions": d.pop("max_positions"),
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
            supported_dimensions=[int(x) for x in d.get("supportedDimensions") or []],
            max_positions=int(d["maxPositions"]) if d.get("maxPositions") else None,
        )

    def save(self, folder: Path) -> None:
        (Path(folder) / METADATA_FILE).write_text(json.dumps(self.to_json(), indent=2), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> "ModelMetadata":
        return cls.from_json(json.loads((Path(folder) / METADATA_FILE).read_text(encoding="utf-8")))


#: Architectures whose position ids start after the padding index (2 positions unusable).
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "longformer", "bart", "mbart", "xlm-roberta-xl"}


def max_positions(hf_config: dict) -> int | None:
    """The longest sequence a transformer can read: its position embeddings, less RoBERTa's padding offset; None
    when the config does not say (the tokenizer's `model_max_length` is no guide: sentence-transformers sets it to
    the model's `max_seq_length`)."""
    n = hf_config.get("max_position_embeddings")
    if not isinstance(n, int) or n <= 0:
        return None
    return n - (2 if hf_config.get("model_type") in _OFFSET_POSITIONS else 0)


class InputTooLong(ValueError):
    """An input exceeds what the model takes and truncation is NONE. `tokens` and `limit` count the user's text
    only: the prefix and special tokens the model's input format adds are never the user's to count."""

    def __init__(self, index: int, tokens: int, limit: int, model_limit: int | None = None,
                 special_tokens: int = 0, prefix_tokens: int = 0):
        self.index, self.tokens, self.limit = index, tokens, limit
        why = ""
        if model_limit and prefix_tokens:
            why = (f" (the model reads at most {model_limit} tokens, and its {special_tokens} special tokens and the "
                   f"input type's {prefix_tokens}-token prefix come first)")
        elif model_limit:
            why = f" (the model's {model_limit} tokens less {special_tokens} special tokens)"
        super().__init__(f"input[{index}] has {tokens} tokens, more than the limit of {limit}{why}; "
                         f"send truncate=END or START to cut it")


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
    """A fast (Rust) tokenizer with the three truncation modes of the NIM API and padding to numpy.

    A prefix (the model's query/passage instruction) is part of the model's input format: it is tokenised together
    with the text, exactly as in training, but it is never truncated and never counted as the user's tokens.
    The user's text may have `max_length` tokens less the special tokens, whatever the input type; the prefix goes
    on top as long as the whole fits `hard_limit` (what the network or engine can read: its position embeddings,
    a TensorRT profile). Where it does not, the prefix's room comes out of the user's limit, and the error says so.
    """

    def __init__(self, path: str | Path, max_length: int, pad_token_id: int = 0, hard_limit: int | None = None):
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(path))
        self.tok.no_truncation()
        self.tok.no_padding()
        self.max_length = int(max_length)
        self.hard_limit = max(self.max_length, int(hard_limit or 0))
        self.pad_token_id = int(pad_token_id)
        self.n_special = self.tok.num_special_tokens_to_add(False)
        self.budget = max(1, self.max_length - self.n_special)
        # Where the special tokens go: post-process one known token and see what surrounds it.
        probe = self.tok.encode("a", add_special_tokens=False).ids
        framed = self.tok.post_process(self.tok.encode("a", add_special_tokens=False)).ids
        at = next((i for i in range(len(framed)) if framed[i:i + len(probe)] == probe), 0)
        self._head, self._tail = framed[:at], framed[at + len(probe):]

    @staticmethod
    def _prefix_tokens(offsets: Sequence[tuple[int, int]], prefix: str) -> int:
        """How many leading tokens (character `offsets` of prefix + text tokenised together) are the prefix's:
        those that start in its text before any trailing whitespace. Byte-level BPE (Llama 3) and SentencePiece
        tokenizers fold the space that ends a prefix like "query: " into the text's first token ('Ġhello' and
        '▁hello' start at that space); that token is the user's."""
        cut = len(prefix.rstrip())
        return sum(1 for start, _ in offsets if start < cut) if cut else 0

    def prefix_length(self, prefix: str) -> int:
        """Tokens a prefix takes in front of a text (tokenised together with one, as in `encode_counted`)."""
        if not prefix:
            return 0
        return self._prefix_tokens(self.tok.encode(prefix + " x", add_special_tokens=False).offsets, prefix)

    def user_limit(self, n_prefix: int) -> int:
        """The most tokens of user text one input may have after a prefix of `n_prefix` tokens."""
        return max(0, min(self.budget, self.hard_limit - self.n_special - n_prefix))

    def encode_counted(self, texts: Sequence[str], truncate: Truncate = "END", prefix: str = "",
                       max_length: int | None = None) -> tuple[list[list[int]], list[int]]:
        """(token ids with prefix and special tokens, the user's token count after truncation) per text.
        `max_length` (optional) caps the whole sequence (prefix and special tokens included) below the
        model's limit, as sentence-transformers' `max_seq_length` does (eval's query length).

        Raises `InputTooLong` for the first text over the limit when `truncate` is NONE.
        """
        encs = self.tok.encode_batch([prefix + t for t in texts], add_special_tokens=False)
        seqs: list[list[int]] = []
        counts: list[int] = []
        for i, enc in enumerate(encs):
            ids = enc.ids
            # the tokenizer saw prefix and text together; the leading tokens from the prefix's text are its own
            n_prefix = self._prefix_tokens(enc.offsets, prefix) if prefix else 0
            allowed = self.user_limit(n_prefix)
            if max_length:
                allowed = min(allowed, max(0, max_length - self.n_special - n_prefix))
            user = ids[n_prefix:]
            if len(user) > allowed:
                if truncate == "NONE":
                    squeezed = allowed < self.budget  # the prefix does not fit on top of the user's limit
                    raise InputTooLong(i, len(user), allowed, self.hard_limit if squeezed else self.max_length,
                                       self.n_special, n_prefix if squeezed else 0)
                user = user[len(user) - allowed:] if truncate == "START" else user[:allowed]
            seqs.append(self._head + ids[:n_prefix] + user + self._tail)
            counts.append(len(user))
        return seqs, counts

    def encode(self, texts: Sequence[str], truncate: Truncate = "END", prefix: str = "",
               max_length: int | None = None) -> list[list[int]]:
        """Token ids (with prefix and special tokens) of each text; see `encode_counted`."""
        return self.encode_counted(texts, truncate, prefix, max_length)[0]

    def pad(self, seqs: Sequence[Sequence[int]]) -> Batch:
        width = max(len(s) for s in seqs)
        ids = np.full((len(seqs), width), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(seqs), width), dtype=np.int64)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = s
            mask[i, : len(s)] = 1
        return Batch(ids, mask)


def cpu_threads() -> int:
    """CPUs this process may use: its CPU affinity, capped by a cgroup CPU quota rounded up (a container's CPU
    limit as Kubernetes sets it, cgroup v2 `cpu.max` or v1 `cpu.cfs_quota_us`), via joblib's `cpu_count`. A pod
    limited to 2 CPUs on a 64-core node gets 2 inference threads, not 64 threads throttled by the quota."""
    import joblib

    return max(1, int(joblib.cpu_count()))


def ort_providers(prefer_gpu: bool = True) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if prefer_gpu and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def ort_session_options(threads: int | None = None):
    """onnxruntime SessionOptions tuned for serving: all graph optimisations, intra-op threads = cores, and
    intra-op threads that spin for work inside a run but stop spinning as soon as the run returns
    (`session.force_spinning_stop`), so the event loop gets the cores between batches.

    Measured on the benchmark's 2-core CPU (quickstart MiniLM export, our server, interleaved A/B, c=32, median
    of 3-5): against no spinning at all, int8 ~16-token texts 636 against 556 sentences/s, fp32 373 against 335;
    ~128-token texts fp32 72.4 against 61.9, int8 115 against 111; batch-1 int8 ~16 tokens 327 against 238
    requests/s. Spinning without the stop (onnxruntime's default) was no better than none: the threads spin
    on between batches and take the CPU from request handling."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or cpu_threads()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Without spinning each operator's parallel section waits for a futex wake-up (a few microseconds, a
    # hundred-odd times a run); spinning between runs would take the CPU from the event loop.
    so.add_session_config_entry("session.intra_op.allow_spinning", "1")
    so.add_session_config_entry("session.force_spinning_stop", "1")
    so.log_severity_level = 3
    return so


#: onnxruntime graph optimisers left out when a session runs on the CPU alone. `SkipLayerNormFusion` turns a
#: residual Add + LayerNormalization into one SkipLayerNormalization node, and onnxruntime 1.32's CPU kernel for
#: it is several times slower than the two nodes it replaces: on the benchmark's 2-core CPU, one node on
#: [32, 16, 384] float32 took 648-722 us against 154-178 us for Add + LayerNormalization (2 threads). The fusion
#: fires in our dynamically quantised int8 graphs (six nodes in MiniLM), not in the fp32 ones. Leaving it out,
#: int8 graph alone, median of 5-7 interleaved: 1165-1361 against 1048-1214 sentences/s at 32 texts of ~16
#: tokens, 146-175 against 132-152 at 8 of ~128; the fp32 graph is unchanged (601 against 612, within noise);
#: the quickstart's int8 nDCG@10 0.7389 against 0.7360 (fp32 0.7277): the int8 vectors move within
#: quantisation noise (mean cosine to fp32 0.99500 against 0.99504). CUDA sessions keep the fusion.
CPU_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


def ort_session(model_path: str | Path, threads: int | None = None, prefer_gpu: bool = True, options=None):
    """An inference session on `model_path` with `options` (default `ort_session_options(threads)`), on CUDA
    when present and `prefer_gpu`; on the CPU alone without `CPU_DISABLED_OPTIMIZERS`."""
    import onnxruntime as ort

    providers = ort_providers(prefer_gpu)
    disabled = list(CPU_DISABLED_OPTIMIZERS) if providers == ["CPUExecutionProvider"] else []
    return ort.InferenceSession(str(model_path), options or ort_session_options(threads), providers=providers,
                                disabled_optimizers=disabled)


class ExportedEncoder:
    """Tokenise and run an exported model folder (metadata and tokenizer beside the graph); a subclass runs the
    graph (`run_batch`: padded `Batch` -> float32 [batch, dim], L2-normalised, pooling in the graph)."""

    #: the engine that runs the graph, with its version ("onnxruntime 1.32.0"): part of the embedding cache's key
    runtime: str = ""
    #: the most texts one `run_batch` may take for every text's vector to be its own (None: no limit); see
    #: `OnnxEncoder.rows_per_call`
    rows_per_call: int | None = None

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.meta = ModelMetadata.load(self.folder)
        self.tokenizer = TextTokenizer(self.folder / TOKENIZER_FILE, self.meta.max_seq_length, self.meta.pad_token_id,
                                       self.meta.max_positions)

    def run_batch(self, batch: Batch) -> np.ndarray:
        raise NotImplementedError

    def encode(self, texts: Sequence[str], prefix: str = "", batch_size: int = 32,
               truncate: Truncate = "END", max_length: int | None = None) -> np.ndarray:
        """Embeddings [len(texts), dim] of `prefix + text` cut at `max_length` tokens (default: the model's
        limit), in batches (at most `rows_per_call`) sorted by length, ties by token ids, so the batches depend
        only on the set of texts (order restored)."""
        if not texts:
            return np.zeros((0, self.meta.dimension), dtype=np.float32)
        batch_size = min(batch_size, self.rows_per_call or batch_size)
        seqs = self.tokenizer.encode(texts, truncate=truncate, prefix=prefix, max_length=max_length)
        order = np.array(sorted(range(len(seqs)), key=lambda i: (len(seqs[i]), seqs[i])), dtype=np.int64)
        out = np.empty((len(seqs), self.meta.dimension), dtype=np.float32)
        for start in range(0, len(seqs), batch_size):
            sel = order[start:start + batch_size]
            out[sel] = self.run_batch(self.tokenizer.pad([seqs[i] for i in sel]))
        return out


class OnnxEncoder(ExportedEncoder):
    """An exported ONNX model on onnxruntime (CUDA when present and `prefer_gpu`, else the CPU).

    An int8 graph of ours is dynamically quantised (`eft.export.onnx_export.quantize_int8`): each call quantises
    its activations with one scale over the whole batch, padding included, so a text's vector would depend on
    the texts it is batched with (cosine to itself alone down to 0.975 among a server's concurrent requests,
    more than the int8 error itself). Such a graph runs one text per call (`rows_per_call` = 1): every vector
    is the text's own, in the export stage's check, `eft verify` and the server alike. On a MiniLM int8 export,
    two single-threaded lanes, graph alone (median of 3), one text a call is no slower than several (~128 tokens
    147 against 129 sentences/s at four a call; ~16 tokens 975 against 947 at eight, 853 at 28).
    """

    def __init__(self, folder: str | Path, threads: int | None = None, prefer_gpu: bool = True):
        import onnxruntime as ort

        super().__init__(folder)
        self.session = ort_session(self.folder / MODEL_FILE, threads, prefer_gpu)
        self.providers = self.session.get_providers()
        self.runtime = f"onnxruntime {ort.__version__}"
        self.rows_per_call = 1 if self.meta.precision == "int8" else None

    def run_batch(self, batch: Batch) -> np.ndarray:
        out = self.session.run([self.meta.output_name], batch.feed(self.meta.input_names))[0]
        return np.asarray(out, dtype=np.float32)
