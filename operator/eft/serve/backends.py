"""Inference backends of the server: TensorRT (engine + GPU), onnxruntime (CUDA or CPU, fp32 or int8), OpenVINO
(CPU: the fp32 ONNX export, or the statically quantised `openvino-int8/` export), PyTorch.

`locate(path, backend)` turns what the user gave to `eft serve --model` (an export folder, one variant folder,
a workspace, or a SentenceTransformer directory) into a `ModelSource`; `ModelSource.describe()` reads only
metadata (cheap, for the API schema before the model is loaded); `ModelSource.load()` builds the backend.
Every backend takes padded token ids and returns L2-normalised float32 embeddings.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eft.api.serving import BACKENDS, EXPORT_SUMMARY_FILE
from eft.errors import InvalidInput
from eft.export.artifact import (METADATA_FILE, MODEL_FILE, TOKENIZER_FILE, Batch, ModelMetadata, TextTokenizer,
                                 max_positions)
from eft.export.openvino import OV_MODEL_FILE
from eft.models import inference_dtype, trained_dimensions, trained_inference_precision

log = logging.getLogger("eft.serve")

FIELD = "--model"


@dataclass
class ModelSource:
    backend: str  # onnx | onnx-int8 | openvino | openvino-int8 | tensorrt | torch
    folder: Path

    def describe(self) -> ModelMetadata:
        if self.backend == "torch":
            return _torch_metadata(self.folder)
        return ModelMetadata.load(self.folder)

    def load(self, threads: int | None = None):
        if self.backend == "torch":
            return TorchBackend(self.folder, threads)
        if self.backend == "tensorrt":
            return TensorRTBackend(self.folder)
        if self.backend.startswith("openvino"):
            return OpenVinoBackend(self.folder, self.backend, threads)
        return OnnxBackend(self.folder, self.backend, threads)


def _is_artifact(folder: Path) -> bool:
    return (folder / METADATA_FILE).is_file() and (folder / TOKENIZER_FILE).is_file()


def _is_sentence_transformer(folder: Path) -> bool:
    return (folder / "modules.json").is_file() or (folder / "config_sentence_transformers.json").is_file()


def _tensorrt_ready(folder: Path) -> bool:
    from eft.export.tensorrt import ENGINE_FILE, availability

    return (folder / ENGINE_FILE).is_file() and availability()[0]


def locate(path: str | Path, backend: str = "auto") -> ModelSource:
    """Find the artifact to serve. `auto`: TensorRT when an engine and a GPU exist, else the first present of ONNX
    fp32, ONNX int8 and an OpenVINO IR (a folder given directly), else PyTorch.
    `openvino` runs the fp32 ONNX export (`onnx/`) on OpenVINO, `openvino-int8` the `openvino-int8/` export."""
    if backend not in BACKENDS:
        raise InvalidInput(f"unknown backend '{backend}' (expected one of: {', '.join(BACKENDS)})", "--backend")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise InvalidInput(f"model folder does not exist: {root}", FIELD)
    # A workspace (DIR) -> its export folder, keeping DIR/train/model as the PyTorch fallback.
    export_root = root / "export" if (root / "export").is_dir() else root
    st_dir = next((d for d in (root / "train" / "model", root / "model", root) if _is_sentence_transformer(d)), None)
    variants = {"onnx": export_root / "onnx", "onnx-int8": export_root / "onnx-int8",
                "openvino": export_root / "onnx", "openvino-int8": export_root / "openvino-int8",
                "tensorrt": export_root / "tensorrt"}
    if _is_artifact(root):  # one variant folder given directly
        int8 = ModelMetadata.load(root).precision == "int8"
        if (root / "model.plan").is_file():
            variants = {"tensorrt": root}
        elif (root / OV_MODEL_FILE).is_file():
            variants = {"openvino-int8" if int8 else "openvino": root}
        else:
            variants = {"onnx-int8": root} if int8 else {"onnx": root, "openvino": root}
    if backend == "auto":
        if "tensorrt" in variants and _is_artifact(variants["tensorrt"]) and _tensorrt_ready(variants["tensorrt"]):
            return ModelSource("tensorrt", variants["tensorrt"])
        for kind, graph in (("onnx", MODEL_FILE), ("onnx-int8", MODEL_FILE), ("openvino", OV_MODEL_FILE),
                            ("openvino-int8", OV_MODEL_FILE)):
            if kind in variants and (variants[kind] / graph).is_file() and _is_artifact(variants[kind]):
                return ModelSource(kind, variants[kind])
        if st_dir is not None:
            return ModelSource("torch", st_dir)
        raise InvalidInput(f"no exported model (eft_model.json + model.onnx or model.xml) or SentenceTransformer "
                           f"in {root}", FIELD)
    if backend == "torch":
        if st_dir is None:
            raise InvalidInput(f"backend torch needs a SentenceTransformer folder; none in {root}", FIELD)
        return ModelSource("torch", st_dir)
    folder = variants.get(backend)
    if folder is None or not _is_artifact(folder):
        raise InvalidInput(f"no '{backend}' export in {root}{_why_not_built(export_root, backend)}", FIELD)
    if backend == "tensorrt":
        from eft.export.tensorrt import availability

        ok, why = availability()
        if not ok:
            raise InvalidInput(f"backend tensorrt {why}", "--backend")
    if backend.startswith("openvino"):
        try:
            import openvino  # noqa: F401
        except ImportError as err:
            raise InvalidInput(f"backend {backend} needs OpenVINO (the `serve` extra): {err}", "--backend") from err
    return ModelSource(backend, folder)


def _why_not_built(export_root: Path, backend: str) -> str:
    """The export stage's reason for not writing the `backend` variant (its summary), as a message suffix."""
    key = {"openvino-int8": "openvinoInt8", "tensorrt": "tensorrt"}.get(backend)
    try:
        reason = json.loads((export_root / EXPORT_SUMMARY_FILE).read_text(encoding="utf-8"))[key]["reason"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    return f": the export stage did not keep it ({reason})"


# ----------------------------------------------------------------------------- onnxruntime
#: Padded tokens per model call for onnxruntime on CPU, where calls run one per lane on one thread each
#: (`OnnxBackend`). Measured on the quickstart's MiniLM export (2 cores, AVX-512 VNNI), 32 waiting texts of ~128
#: tokens: through our server (interleaved A/B, c=32, median of 3) 512 tokens a call (4 texts) gave fp32 75.6
#: against 70.4 sentences/s at 1,024, int8 155.9 against 154.6; the graph alone, two lanes, 4 texts a call
#: against 8: fp32 74.9 against 64.9, int8 161.4 against 145.6. (Before lanes, one two-thread call at a time: 1,024
#: tokens beat 4,096, 139.6 and 80.1 against 113.7 and 69.3 sentences/s int8 and fp32.) Short texts are not held
#: back by it (28 texts of 16 tokens fit a call, and lanes split a batch anyway). GPUs keep the batcher's larger
#: default.
CPU_BATCH_TOKENS = 512


#: Lanes need a second copy of the weights; above this size (bytes of the model files) an onnxruntime CPU backend
#: keeps one all-threads session. Lanes were measured on MiniLM (90 MB in fp32), whose small GEMMs leave
#: intra-op threads idle at every operator; a 1B model (about 5 GB in fp32) has GEMMs large enough for them,
#: and its second copy would cost gigabytes.
LANES_MAX_MODEL_BYTES = 1 << 30


def cpu_lanes(folder: Path, threads: int | None = None) -> int:
    """Lanes of an onnxruntime CPU backend (`OnnxBackend`) on the export folder `folder`: one per inference
    thread (`threads`, default the CPUs this process may use), or 1 for a model whose files pass
    `LANES_MAX_MODEL_BYTES`."""
    from eft.export.artifact import cpu_threads

    weights = sum(f.stat().st_size for f in Path(folder).glob("model.*") if f.is_file())
    if weights > LANES_MAX_MODEL_BYTES:
        return 1
    return max(1, int(threads or cpu_threads()))


class _LanedBackend:
    """An exported-graph encoder for `run_batch` (all threads) and, with `lanes` > 1, a second copy whose calls
    (`run_lane`, one thread or stream each) may run `lanes` at once; `batch_tokens` is the batcher's padded
    tokens per call (None: its default). `make_lane()` builds the second copy."""

    def __init__(self, encoder, name: str, lanes: int, batch_tokens: int | None, make_lane):
        self.encoder = encoder
        self.meta = encoder.meta
        self.tokenizer = encoder.tokenizer
        self.name = name
        self.providers = list(encoder.providers)
        #: padded tokens per call for the batcher (None: its default)
        self.batch_tokens = batch_tokens
        #: texts per call for the batcher (None: no limit of the graph's own; see `OnnxEncoder.rows_per_call`)
        self.rows_per_call = encoder.rows_per_call
        #: model calls that may run at once, each on one thread (1: only `run_batch`)
        self.lanes = lanes
        self._lane = make_lane() if lanes > 1 else None

    def run_batch(self, batch: Batch) -> np.ndarray:
        return self.encoder.run_batch(batch)

    def run_lane(self, batch: Batch) -> np.ndarray:
        """One single-threaded call; up to `lanes` of these may run at once."""
        return (self._lane or self.encoder).run_batch(batch)


class OnnxBackend(_LanedBackend):
    """onnxruntime on an exported folder. On the CPU with more than one thread it also has `lanes` (= threads)
    single-threaded calls that may run at once (`run_lane`, one session shared by the lanes; onnxruntime's
    `Run` is thread-safe), beside the all-threads session of `run_batch`; the batcher gives a lone request all
    threads and spreads anything more over the lanes. The weights are then loaded twice, so a model over
    `LANES_MAX_MODEL_BYTES` gets no lanes.

    Why lanes: on the benchmark's 2-core CPU, onnxruntime's two intra-op threads meet at every operator, which
    costs more than it gains on small calls. The quickstart's MiniLM export, graph alone, two single-threaded
    calls at once against one two-thread call (median of 5): int8 ~16-token texts 1,476-1,548 against 963-973
    sentences/s, ~128 tokens 146-161 against 139; fp32 517 against 467 and 65-75 against 60. A lone text
    is faster on both threads (fp32 ~128 tokens 20.3 against 27.1 ms, int8 7.6 against 11.8 ms), hence the
    whole-model session for it.
    """

    def __init__(self, folder: Path, name: str = "onnx", threads: int | None = None):
        from eft.export.artifact import OnnxEncoder

        encoder = OnnxEncoder(folder, threads=threads)
        on_cpu = list(encoder.providers)[:1] == ["CPUExecutionProvider"]
        super().__init__(encoder, name, cpu_lanes(folder, threads) if on_cpu else 1,
                         CPU_BATCH_TOKENS if on_cpu else None,
                         lambda: OnnxEncoder(folder, threads=1, prefer_gpu=False))


class OpenVinoBackend(_LanedBackend):
    """OpenVINO's CPU plugin on an export folder (`openvino-int8/`, or the fp32 `onnx/`), shaped like a CPU
    `OnnxBackend`: a whole-model compilation (one stream on all threads) for a lone request, and `lanes` calls
    that may run at once through a second compilation with one stream per thread (`run_lane`); the batcher gets
    `CPU_BATCH_TOKENS`. Figures: `eft.export.openvino`."""

    def __init__(self, folder: Path, name: str = "openvino-int8", threads: int | None = None):
        from eft.export.artifact import cpu_threads
        from eft.export.openvino import OpenVinoEncoder

        threads = int(threads or cpu_threads())
        lanes = cpu_lanes(folder, threads)
        super().__init__(OpenVinoEncoder(folder, threads=threads, streams=1), name, lanes, CPU_BATCH_TOKENS,
                         lambda: OpenVinoEncoder(folder, threads=lanes, streams=lanes))


class TensorRTBackend:
    def __init__(self, folder: Path):
        from eft.export.tensorrt import TensorRTEncoder

        self.encoder = TensorRTEncoder(folder)
        self.meta = self.encoder.meta
        self.tokenizer = self.encoder.tokenizer
        self.name = "tensorrt"
        self.providers = ["TensorRT"]

    def run_batch(self, batch: Batch) -> np.ndarray:
        return self.encoder.run_batch(batch)


# ----------------------------------------------------------------------------- PyTorch fallback
def _torch_model_name(folder: Path) -> str:
    """The name a SentenceTransformer folder is served under by default: in a workspace (`DIR/train/model`) the
    name its export carries (the resource's name, so the fallback to PyTorch answers to the same name as the
    ONNX export would), else DIR's name; any other folder by its own name."""
    if folder.name != "model":
        return folder.name
    workspace = folder.parent.parent
    for meta_file in sorted((workspace / "export").glob(f"*/{METADATA_FILE}")):
        try:
            name = ModelMetadata.load(meta_file.parent).name
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(name, str) and name:
            return name
    return workspace.name or "model"


def _torch_metadata(folder: Path) -> ModelMetadata:
    """Metadata of a SentenceTransformer folder from its config files, without loading weights."""

    def read(name):
        try:
            return json.loads((folder / name).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    st_cfg = read("config_sentence_transformers.json")
    prompts = st_cfg.get("prompts") or {}
    hf_cfg = read("config.json")
    max_len = read("sentence_bert_config.json").get("max_seq_length") or hf_cfg.get("max_position_embeddings") or 512
    dim = 0
    for mod in read("modules.json") or []:
        cfg = read(f"{mod.get('path', '')}/config.json") if mod.get("path") else {}
        dim = cfg.get("out_features") or cfg.get("word_embedding_dimension") or cfg.get("embedding_dimension") or dim
    dim = dim or hf_cfg.get("hidden_size") or 0
    return ModelMetadata(name=_torch_model_name(folder),
                         dimension=int(dim), max_seq_length=int(max_len), query_prefix=prompts.get("query", ""),
                         passage_prefix=prompts.get("passage", prompts.get("document", "")), precision="fp32",
                         supported_dimensions=trained_dimensions(folder), max_positions=max_positions(hf_cfg))


class TorchBackend:
    """sentence-transformers on CUDA when present, else CPU; tokenisation stays with the fast tokenizer."""

    def __init__(self, folder: Path, threads: int | None = None):
        import torch
        from sentence_transformers import SentenceTransformer

        if threads:
            torch.set_num_threads(threads)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = SentenceTransformer(str(folder), device=device)
        # the precision eval scored the model in (bf16 on a GPU by default; see BaseModelSpec.inference_precision)
        self.dtype = inference_dtype(trained_inference_precision(folder), device)
        self.model.to(self.dtype)
        self.meta = _torch_metadata(folder)
        self.meta.dimension = int((getattr(self.model, "get_embedding_dimension", None)
                                   or self.model.get_sentence_embedding_dimension)() or self.meta.dimension)
        self.meta.supported_dimensions = trained_dimensions(folder)
        self.meta.__post_init__()  # the full width is always supported
        self.meta.max_seq_length = int(self.model.max_seq_length or self.meta.max_seq_length)
        tok = self.model.tokenizer
        tok_file = folder / TOKENIZER_FILE
        if not tok_file.is_file():
            raise InvalidInput(f"{folder} has no tokenizer.json (a fast tokenizer is needed)", FIELD)
        self.meta.pad_token_id = int(tok.pad_token_id or 0)
        self.meta.input_names = [n for n in ("input_ids", "attention_mask", "token_type_ids")
                                 if n in ("input_ids", "attention_mask") or n in tok.model_input_names]
        self.meta.max_positions = max_positions(self.model[0].auto_model.config.to_dict()) or self.meta.max_positions
        self.tokenizer = TextTokenizer(tok_file, self.meta.max_seq_length, self.meta.pad_token_id,
                                       self.meta.max_positions)
        self.device = device
        self.name = "torch"
        self.providers = [f"torch-{device}-{str(self.dtype).removeprefix('torch.')}"]
        self._torch = torch

    def run_batch(self, batch: Batch) -> np.ndarray:
        torch = self._torch
        feed = {k: torch.from_numpy(v).to(self.device) for k, v in batch.feed(self.meta.input_names).items()}
        with torch.inference_mode():
            out = self.model(feed)["sentence_embedding"]
            out = torch.nn.functional.normalize(out.float(), p=2, dim=-1)
        return out.cpu().numpy()
