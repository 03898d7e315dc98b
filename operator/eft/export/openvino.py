"""OpenVINO on the CPU: a statically quantised int8 variant of the exported model, and an encoder that runs it.

`quantize_static_int8` turns the fp32 export (`onnx/model.onnx`) into `openvino-int8/model.xml` + `model.bin`
with NNCF's post-training quantisation (`nncf.quantize`, `ModelType.TRANSFORMER`: activations and weights in
int8 with ranges calibrated on the corpus, the transformer preset's ignored patterns, SmoothQuant and fast bias
correction;
https://docs.openvino.ai/ "Post-training Quantization"), and copies the tokenizer and `eft_model.json` beside
it. `OpenVinoEncoder` runs such a folder (or any exported `model.onnx`, which OpenVINO reads directly) with the
same interface as `OnnxEncoder`.

Why, measured on the benchmark's 2-core CPU (AVX-512 VNNI; quickstart MiniLM export, graph alone, two
single-threaded calls at once, median of 5, 4 texts of 128 tokens or 16 of 16 a call): onnxruntime fp32 76.3
and 732 sentences/s, onnxruntime dynamic int8 158.9 and 1,801, this int8 221.6 and 2,122, with a closer match to
the fp32 vectors (mean cosine 0.998 against 0.995). Dynamic quantisation leaves every operator between the
GEMMs in fp32 and quantises activations at run time; here the ranges are fixed and OpenVINO's oneDNN kernels
keep the tensors in int8 between them.

The embeddings are computed in fp32 wherever they are not int8 (`INFERENCE_PRECISION_HINT` f32), so a CPU that
would otherwise pick bf16 (AMX) gives the vectors the export stage measured.
"""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Sequence

import numpy as np

from eft.export.artifact import MODEL_FILE, Batch, ExportedEncoder, ModelMetadata, cpu_threads

#: The OpenVINO IR of an `openvino-int8/` folder (its weights are `model.bin` beside it).
OV_MODEL_FILE = "model.xml"
#: Texts a calibration call holds (padded to the longest), and texts used in all.
CALIBRATION_BATCH = 8
CALIBRATION_TEXTS = 256


def availability() -> tuple[bool, str]:
    """(True, "") when OpenVINO and NNCF import, else (False, why)."""
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
    except ImportError as err:  # the `serve`/`pipeline` extras install both
        return False, f"not available (OpenVINO or NNCF cannot be imported: {err})"
    return True, ""


def _nncf():
    """NNCF with its usage telemetry off. NNCF sends usage events to Google Analytics unless a consent file of
    openvino-telemetry says no; a pipeline pod has no business sending them, so NNCF's own no-op stub (what it
    uses under pytest and in CI) replaces it for this process. Importing NNCF may still write openvino-telemetry's
    client-id file under $HOME; nothing is sent."""
    import nncf
    from nncf.telemetry import decorator, wrapper

    stub = wrapper.NNCFTelemetryStub()
    wrapper.telemetry = decorator.telemetry = nncf.telemetry.telemetry = stub
    return nncf


def model_path(folder: Path) -> Path:
    """The graph OpenVINO reads in an export folder: `model.xml` (an IR) where present, else `model.onnx`."""
    folder = Path(folder)
    return folder / OV_MODEL_FILE if (folder / OV_MODEL_FILE).is_file() else folder / MODEL_FILE


def quantize_static_int8(src_dir: Path, dst_dir: Path, calibration_texts: Sequence[str]) -> ModelMetadata:
    """Post-training static int8 quantisation (NNCF, OpenVINO backend) of the fp32 export folder `src_dir` into
    `dst_dir` (`model.xml`, `model.bin`, the tokenizer and `eft_model.json` with precision int8).

    `calibration_texts`: texts with their prefixes, as the model will see them (corpus passages and training
    questions, never the test queries); they are cut at the model's limit and fed `CALIBRATION_BATCH` at a time.
    Raises ValueError when there is no calibration text."""
    import openvino as ov

    nncf = _nncf()
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    texts = [t for t in calibration_texts if t and t.strip()]
    if not texts:
        raise ValueError("no calibration text for int8 quantisation")
    enc = ExportedEncoder(src_dir)
    seqs = enc.tokenizer.encode(texts, truncate="END")
    order = sorted(range(len(seqs)), key=lambda i: (len(seqs[i]), seqs[i]))
    feeds = [enc.tokenizer.pad([seqs[i] for i in order[s:s + CALIBRATION_BATCH]]).feed(enc.meta.input_names)
             for s in range(0, len(order), CALIBRATION_BATCH)]
    model = ov.Core().read_model(str(src_dir / MODEL_FILE))
    quantized = nncf.quantize(model, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(feeds))
    from eft.export.onnx_export import copy_companion_files

    copy_companion_files(src_dir, dst_dir)
    # fp32 constants stay fp32 (the default would store them as fp16 and move the vectors)
    ov.save_model(quantized, str(dst_dir / OV_MODEL_FILE), compress_to_fp16=False)
    meta = ModelMetadata.load(src_dir)
    meta.precision = "int8"
    meta.save(dst_dir)
    return meta


def compile_model(path: Path, threads: int, streams: int, perf_count: bool = False):
    """An OpenVINO CPU `CompiledModel` of `path` running `streams` inference calls at once on `threads` threads
    in all, in fp32 wherever the graph is not int8. `perf_count`: also time every node of every call
    (`InferRequest.profiling_info`; the benchmark's profile, never the server)."""
    import openvino as ov

    hint = "THROUGHPUT" if streams > 1 else "LATENCY"
    config = {"INFERENCE_NUM_THREADS": int(threads), "NUM_STREAMS": int(streams), "PERFORMANCE_HINT": hint,
              "INFERENCE_PRECISION_HINT": "f32"}
    if perf_count:  # the server's compilation stays exactly as it was without the benchmark's profile
        config["PERF_COUNT"] = True
    return ov.Core().compile_model(str(path), "CPU", config)


class OpenVinoEncoder(ExportedEncoder):
    """An export folder on OpenVINO's CPU plugin: `openvino-int8/model.xml`, or an fp32 `model.onnx`.

    `streams` calls of `run_batch` may run at once (each on its own infer request; `threads` / `streams` threads
    each); more wait for a free request."""

    def __init__(self, folder: str | Path, threads: int | None = None, streams: int = 1):
        import openvino as ov

        super().__init__(folder)
        threads = int(threads or cpu_threads())
        streams = max(1, min(int(streams), threads))
        self.compiled = compile_model(model_path(self.folder), threads, streams)
        names = {n for out in self.compiled.outputs for n in out.get_names()}
        self._output = self.compiled.output(self.meta.output_name if self.meta.output_name in names else 0)
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(streams):
            self._requests.put(self.compiled.create_infer_request())
        self.streams = streams
        self.providers = [f"OpenVINO-CPU-{self.meta.precision}"]
        self.runtime = f"openvino {ov.__version__}"

    def run_batch(self, batch: Batch) -> np.ndarray:
        request = self._requests.get()
        try:
            out = request.infer(batch.feed(self.meta.input_names))[self._output]
            return np.array(out, dtype=np.float32)
        finally:
            self._requests.put(request)
