"""TensorRT engine build from the exported ONNX graph, where a GPU and the `tensorrt` package exist.

Optimisation profile: every input `[batch, sequence]` from (minBatch, minSequence) to (maxBatch, maxSequence),
optimised for the middle. FP16 by default; FP8 on request needs explicit Q/DQ scales, which NVIDIA's Model
Optimizer (`nvidia-modelopt`) inserts after a calibration pass on sample texts; without it the build falls back to
FP16 and says so. On TensorRT versions without the weakly typed FP16 flag the graph is converted to FP16 first and
built as a strongly typed network.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from eft.export.artifact import MODEL_FILE, ModelMetadata

log = logging.getLogger("eft.export.tensorrt")

ENGINE_FILE = "model.plan"
ENGINE_INFO = "engine.json"


def availability() -> tuple[bool, str]:
    """(available, reason): TensorRT needs its Python package and a CUDA GPU."""
    try:
        import tensorrt as trt  # noqa: F401
    except Exception as err:  # noqa: BLE001 - ImportError or a broken CUDA install
        return False, f"not available: the tensorrt Python package cannot be imported ({type(err).__name__})"
    try:
        import torch

        if not torch.cuda.is_available():
            return False, "not available: no CUDA GPU"
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[import-not-found]

            err, count = cudart.cudaGetDeviceCount()
            if int(err) != 0 or count < 1:
                return False, "not available: no CUDA GPU"
        except Exception:  # noqa: BLE001
            return False, "not available: neither torch nor cuda-python can see a GPU"
    return True, "available"


def _fp8_onnx(onnx_path: Path, work: Path, calibration: dict[str, np.ndarray]) -> Path | None:
    """An FP8 Q/DQ copy of the graph made by nvidia-modelopt, or None when modelopt is not installed."""
    try:
        from modelopt.onnx.quantization import quantize  # type: ignore[import-not-found]
    except ImportError:
        return None
    out = work / "model.fp8.onnx"
    quantize(onnx_path=str(onnx_path), quantize_mode="fp8", calibration_data=calibration,
             output_path=str(out), high_precision_dtype="fp16")
    return out


def _fp16_onnx(onnx_path: Path, work: Path) -> Path:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from eft.export.onnx_export import save_onnx

    model = convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True)
    out = work / "model.fp16.onnx"
    save_onnx(model, out)
    return out


def build_engine(onnx_dir: Path, out_dir: Path, precision: str = "fp16", min_batch: int = 1, max_batch: int = 64,
                 min_sequence: int = 3, max_sequence: int = 256, workspace_gib: float = 4.0,
                 calibration_texts: Sequence[str] = ()) -> dict:
    """Build `out_dir/model.plan` (+ tokenizer and metadata); returns what was built for the stage summary."""
    import tensorrt as trt

    onnx_dir, out_dir = Path(onnx_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / "_work"
    work.mkdir(exist_ok=True)
    meta = ModelMetadata.load(onnx_dir)
    max_sequence = min(max_sequence, meta.max_seq_length)
    # Room for the query/passage prefix on top of the user's limit (the server never cuts the prefix).
    from eft.export.artifact import TextTokenizer

    tok = TextTokenizer(onnx_dir / "tokenizer.json", max_sequence)
    prefix_room = max(tok.prefix_length(meta.query_prefix), tok.prefix_length(meta.passage_prefix))
    max_sequence = min(max_sequence + prefix_room, meta.max_positions or max_sequence + prefix_room)
    min_sequence = min(min_sequence, max_sequence)
    opt = (max(min_batch, max_batch // 2), max(min_sequence, max_sequence // 2))
    started = time.monotonic()
    notes: list[str] = []

    source = onnx_dir / MODEL_FILE
    built_precision = precision
    if precision == "fp8":
        calib = {}
        if calibration_texts:
            from eft.export.artifact import TextTokenizer

            tok = TextTokenizer(onnx_dir / "tokenizer.json", max_sequence, meta.pad_token_id)
            batch = tok.pad(tok.encode(list(calibration_texts)[:64]))
            calib = batch.feed(meta.input_names)
        fp8 = _fp8_onnx(source, work, calib) if calib else None
        if fp8 is None:
            notes.append("fp8 requested but nvidia-modelopt (or calibration texts) missing: built fp16")
            built_precision = "fp16"
        else:
            source = fp8

    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    has_weak_fp16 = hasattr(trt.BuilderFlag, "FP16")
    flags = 0
    if not has_weak_fp16:
        # TensorRT without weak typing: precision comes from the graph's own types.
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        if built_precision == "fp16":
            source = _fp16_onnx(source, work)
    elif hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(source)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse the ONNX graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if has_weak_fp16:
        config.set_flag(trt.BuilderFlag.FP16)
        if built_precision == "fp8" and hasattr(trt.BuilderFlag, "FP8"):
            config.set_flag(trt.BuilderFlag.FP8)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        name = network.get_input(i).name
        profile.set_shape(name, (min_batch, min_sequence), opt, (max_batch, max_sequence))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT engine build failed (see the TensorRT log above)")
    (out_dir / ENGINE_FILE).write_bytes(bytes(serialized))
    for f in onnx_dir.iterdir():
        if f.is_file() and f.name != MODEL_FILE:
            shutil.copy2(f, out_dir / f.name)
    meta.precision = built_precision
    meta.save(out_dir)
    shutil.rmtree(work, ignore_errors=True)
    gpu = None
    try:
        import torch

        gpu = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001
        pass
    info = {
        "built": True, "path": f"tensorrt/{ENGINE_FILE}", "precision": built_precision, "requested": precision,
        "tensorrtVersion": trt.__version__, "gpu": gpu,
        "profile": {"minBatch": min_batch, "optBatch": opt[0], "maxBatch": max_batch,
                    "minSequence": min_sequence, "optSequence": opt[1], "maxSequence": max_sequence},
        "bytes": (out_dir / ENGINE_FILE).stat().st_size, "seconds": round(time.monotonic() - started, 1),
    }
    if notes:
        info["notes"] = notes
    (out_dir / ENGINE_INFO).write_text(json.dumps(info, indent=2), encoding="utf-8")
    return info


class TensorRTEncoder:
    """Runs a built engine on the GPU with torch CUDA tensors as I/O buffers (TensorRT 10+ tensor API)."""

    def __init__(self, folder: str | Path):
        import tensorrt as trt
        import torch

        from eft.export.artifact import TOKENIZER_FILE, TextTokenizer

        self.folder = Path(folder)
        self.meta = ModelMetadata.load(self.folder)
        info = json.loads((self.folder / ENGINE_INFO).read_text(encoding="utf-8"))
        self.profile = info["profile"]
        self.max_batch = int(self.profile["maxBatch"])
        max_len = min(self.meta.max_seq_length, int(self.profile["maxSequence"]))
        self.tokenizer = TextTokenizer(self.folder / TOKENIZER_FILE, max_len, self.meta.pad_token_id,
                                       int(self.profile["maxSequence"]))
        self._torch = torch
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine((self.folder / ENGINE_FILE).read_bytes())
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        self.providers = ["TensorRT"]

    def run_batch(self, batch) -> np.ndarray:
        torch = self._torch
        feeds = batch.feed(self.meta.input_names)
        parts = []
        n = feeds["input_ids"].shape[0]
        min_seq = int(self.profile["minSequence"])
        for start in range(0, n, self.max_batch):
            buffers = {}
            for name, arr in feeds.items():
                a = arr[start:start + self.max_batch]
                if a.shape[1] < min_seq:  # pad up to the profile's shortest sequence (mask 0)
                    a = np.pad(a, ((0, 0), (0, min_seq - a.shape[1])),
                               constant_values=self.meta.pad_token_id if name == "input_ids" else 0)
                t = torch.from_numpy(np.ascontiguousarray(a)).cuda()
                buffers[name] = t
                self.context.set_input_shape(name, tuple(t.shape))
                self.context.set_tensor_address(name, t.data_ptr())
            out_shape = tuple(self.context.get_tensor_shape(self.meta.output_name))
            out = torch.empty(out_shape, dtype=torch.float32, device="cuda")
            self.context.set_tensor_address(self.meta.output_name, out.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            self.stream.synchronize()
            parts.append(out.cpu().numpy())
        emb = np.concatenate(parts).astype(np.float32)
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
